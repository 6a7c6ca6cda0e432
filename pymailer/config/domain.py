"""
[mta_sts] and [doctor]: the mail domain as other servers see it (the
MTA-STS policy served, the blocklists checked).
"""

from __future__ import annotations

from dataclasses import dataclass

from pymailer.config.reader import showValue, stringList, zoneName


MTA_STS_MODES = ("testing", "enforce", "none")


@dataclass(frozen=True)
class MTASTSConfig:
    """
    [mta_sts]: the MTA-STS policy served for every local domain (RFC 8461
    §3.2).  C{testing}: senders report TLS failures (TLS-RPT) but deliver
    anyway; C{enforce}: they refuse to deliver without valid TLS to our MX;
    C{none}: a published policy is withdrawn.  C{max_age}: how long senders
    cache it (RFC 8461 §3.2 allows up to 31557600 s).
    """

    mode: str = "testing"
    max_age: int = 604800


# Widely used lists of IPs that send spam: a listed server's mail is
# refused or scored down by many receivers.
DEFAULT_BLOCKLISTS = ("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org")


@dataclass(frozen=True)
class DoctorConfig:
    """
    [doctor]: what C{pymailer doctor} and C{/admin/dns} check beyond the
    records.  C{blocklists}: the DNS blocklist zones the server's public
    addresses are looked up in (RFC 5782).
    """

    blocklists: tuple = DEFAULT_BLOCKLISTS


def parseMTASTS(reader):
    d = MTASTSConfig()
    mode = reader.string("mode") or d.mode
    if mode not in MTA_STS_MODES:
        raise reader.error("mode", f"expected testing, enforce or none, got {showValue(mode)}")
    maxAge = reader.positiveInt("max_age", d.max_age)
    if maxAge > 31557600:
        # RFC 8461 §3.2: max_age is at most 31557600 (about a year).
        raise reader.error("max_age", f"at most 31557600 (RFC 8461), got {maxAge}")
    reader.checkUnknown(reader.seen)
    return MTASTSConfig(mode=mode, max_age=maxAge)


def parseDoctor(reader):
    doctor = DoctorConfig(blocklists=tuple(
        zoneName(reader, "blocklists", zone)
        for zone in stringList(reader, "blocklists", DEFAULT_BLOCKLISTS)))
    reader.checkUnknown(reader.seen)
    return doctor
