"""
What DNS publishes now against what this server needs (C{pymailer doctor},
C{/admin/dns}).

The records needed are those C{pymailer dns} prints
(L{pymailer.policy.dnsrecords.zoneRecords}); each is looked up through the
server's own resolver (L{pymailer.dns.Resolver}, so C{[dns] servers}
applies) and marked:

  - C{ok}: published as needed;
  - C{missing}: nothing of its kind is published;
  - C{wrong}: something of its kind is published, but not this (another
    MX host, another DKIM key, an SRV record with another port...);
  - C{error}: the lookup failed (timeout, SERVFAIL): unknown, so not ok.

"Of its kind": for TXT records, those with the same C{v=} tag (an SPF
record is compared with SPF records only); for the rest, the same name and
type.  A CNAME the server asks for is also ok when the name has, directly,
the addresses of the host it should point to.

Then the hostname's public addresses are checked for a PTR record naming
it back (receivers refuse or score down mail from addresses without one)
and looked up in the DNS blocklists of C{[doctor] blocklists} (C{listed}
when a list has one: much of the mail from it is refused); and whether
port 25 can be reached is explained, since the server cannot test that
from the inside (C{info}, which is not a problem).  When every listener is
bound to loopback there is no public address to check, and the report
says so.

Blocking (DNS): the CLI calls it directly, the web page in a thread.
Trust: answers are DNS's, shown escaped by the page.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from pymailer.dns import DNSError
from pymailer.policy import dnsrecords
from pymailer.policy.dnsbl import LISTED_NET, reversedName

OK, MISSING, WRONG, ERROR, LISTED, INFO = "ok", "missing", "wrong", "error", "listed", "info"
# Spamhaus answers 127.255.255.0/24 for queries it refuses (through a
# public resolver, or too many): an error, not a listing.
REFUSED_NET = ipaddress.ip_network("127.255.255.0/24")
LOOPBACK_ONLY = "every listener is bound to loopback: no public address to check"
SERVER = "this server: reverse DNS (PTR), blocklists, port 25"


@dataclass(frozen=True)
class Check:
    """One needed record (or the PTR check) and what DNS says about it."""

    name: str
    rdtype: str
    needed: str
    published: tuple
    status: str
    note: str = ""

    @property
    def good(self):
        return self.status in (OK, INFO)


def neededRecords(config, domain):
    """C{[(name, type, rdata text)]}: the records of C{pymailer dns DOMAIN}."""
    records = []
    for line in dnsrecords.zoneRecords(config, domain):
        if not line or line.startswith(";"):
            continue
        name, _, rdtype, text = line.split(None, 3)
        records.append((name, rdtype, text))
    return records


def _parse(rdtype, text):
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)


def _txt(rdata):
    return b"".join(rdata.strings).decode("utf-8", "replace")


def _txtKind(text):
    """The C{v=} tag of a TXT record (C{v=spf1}, C{v=DKIM1}...), or C{None}."""
    first = text.split(";")[0].split()[0] if text.strip() else ""
    return first.lower() if first.lower().startswith("v=") else None


def _same(rdtype, needed, published):
    if rdtype == "TXT":
        return " ".join(_txt(needed).split()) == " ".join(_txt(published).split())
    return needed == published


def _lookup(resolver, name, rdtype):
    """C{(rdatas, None)}, or C{((), error text)} for a failed lookup."""
    try:
        return resolver.lookupBlocking(name, rdtype), None
    except DNSError as e:
        if not e.temporary:
            return (), None
        return (), e.reason


def checkRecord(resolver, name, rdtype, text, hostAddresses):
    needed = _parse(rdtype, text)
    published, error = _lookup(resolver, name, rdtype)
    if rdtype == "CNAME":
        # dnspython follows the CNAME: what a CNAME lookup answers is the
        # CNAME itself; no answer may still be the host's addresses.
        published = [r for r in published if r.rdtype == dns.rdatatype.CNAME]
    shown = tuple(_txt(r) if rdtype == "TXT" else r.to_text() for r in published)
    if error is not None:
        return Check(name, rdtype, text, shown, ERROR, error)
    if rdtype == "TXT":
        kind = _txtKind(_txt(needed))
        published = [r for r in published if _txtKind(_txt(r)) == kind]
        shown = tuple(_txt(r) for r in published)
    if any(_same(rdtype, needed, r) for r in published):
        return Check(name, rdtype, text, shown, OK)
    if rdtype == "CNAME" and not published and hostAddresses:
        addresses = set()
        for family in ("A", "AAAA"):
            addresses |= {r.to_text() for r in _lookup(resolver, name, family)[0]}
        if addresses and addresses <= hostAddresses:
            return Check(name, rdtype, text, tuple(sorted(addresses)), OK,
                         "the host's addresses, directly")
        if addresses:
            return Check(name, rdtype, text, tuple(sorted(addresses)), WRONG,
                         "addresses that are not the host's")
    return Check(name, rdtype, text, shown, WRONG if published else MISSING)


def _publicListeners(config):
    """Whether any listener may be reached from outside (not bound to loopback)."""
    for endpoint in config.listen.roles().values():
        interface = dnsrecords._interface(endpoint)
        if interface is None:
            return True
        try:
            if not ipaddress.ip_address(interface).is_loopback:
                return True
        except ValueError:
            if interface != "localhost":
                return True
    return False


def hostAddresses(resolver, host):
    addresses = set()
    for family in ("A", "AAAA"):
        addresses |= {r.to_text() for r in _lookup(resolver, host + ".", family)[0]}
    return addresses


def checkPTR(config, resolver, addresses):
    """The PTR checks of the hostname's public C{addresses}."""
    host = config.hostname.rstrip(".").lower()
    if not _publicListeners(config):
        return [Check(host, "PTR", host + ".", (), OK, LOOPBACK_ONLY)]
    if not addresses:
        return [Check(host, "A/AAAA", "this server's public addresses", (), MISSING,
                      f"{host} has no address records")]
    checks = []
    for address in sorted(addresses):
        name = dns.reversename.from_address(address).to_text()
        published, error = _lookup(resolver, name, "PTR")
        shown = tuple(r.to_text() for r in published)
        if error is not None:
            status = ERROR
        elif not published:
            status = MISSING
        else:
            status = OK if host + "." in {s.lower() for s in shown} else WRONG
        checks.append(Check(name, "PTR", host + ".", shown, status,
                            error or f"reverse of {address}"))
    return checks


def checkBlocklists(config, resolver, addresses):
    """
    Each of the hostname's public C{addresses} in each C{[doctor]
    blocklists} zone: C{ok} (not listed: NXDOMAIN), C{listed} (with the
    list's TXT reason when it gives one) or C{error}.
    """
    host = config.hostname.rstrip(".").lower()
    zones = config.doctor.blocklists
    if not zones:
        return []
    if not _publicListeners(config):
        return [Check(", ".join(zones), "A", "not listed", (), OK, LOOPBACK_ONLY)]
    checks = []
    for address in sorted(addresses):
        for zone in zones:
            # RFC 5782 §2.1/§2.4: reversed octets (nibbles) under the zone.
            name = f"{reversedName(address)}.{zone}."
            published, error = _lookup(resolver, name, "A")
            answers = tuple(r.to_text() for r in published)
            note = f"{address} ({host}) on {zone}"
            if error is not None:
                checks.append(Check(name, "A", "not listed", answers, ERROR, error))
            elif any(ipaddress.ip_address(a) in REFUSED_NET for a in answers):
                checks.append(Check(name, "A", "not listed", answers, ERROR,
                                    f"{zone} refused the query (through a public resolver?"
                                    " use your own): unknown"))
            elif any(ipaddress.ip_address(a) in LISTED_NET for a in answers):
                reasons = tuple(_txt(r) for r in _lookup(resolver, name, "TXT")[0])
                checks.append(Check(name, "A", "not listed", answers + reasons, LISTED,
                                    f"{note}: much mail from it will be refused;"
                                    f" ask {zone} to delist it"))
            else:
                checks.append(Check(name, "A", "not listed", answers, OK, note))
    return checks


def checkPort25(config):
    """
    Why port 25's reachability is not checked here, and how to check it:
    a server cannot see its own port from outside (NAT, the provider's
    filter), so this is always C{info}.
    """
    host = config.hostname.rstrip(".").lower()
    endpoint = config.listen.roles().get("smtp")
    if endpoint is None:
        note = "no smtp listener: other servers cannot deliver mail here"
    else:
        interface = dnsrecords._interface(endpoint)
        try:
            loopback = interface is not None and (
                interface == "localhost" or ipaddress.ip_address(interface).is_loopback)
        except ValueError:
            loopback = False
        if loopback:
            note = (f"the smtp listener ({endpoint}) is bound to loopback: other servers"
                    " cannot reach it")
        else:
            note = (f"cannot be checked from the server itself; check from outside:"
                    f" swaks --server {host}:25 --quit-after banner (many home and cloud"
                    f" networks block port 25)")
    return Check(f"{host}:25", "TCP", "reachable by other mail servers", (), INFO, note)


def diagnose(config, resolver, domains):
    """
    C{{domain: [Check]}} for each of C{domains}, and under the key C{None}
    the host's checks (PTR, blocklists, port 25).  Blocking.
    """
    host = config.hostname.rstrip(".").lower()
    addresses = hostAddresses(resolver, host)
    report = {}
    for domain in domains:
        report[domain] = [checkRecord(resolver, name, rdtype, text, addresses)
                          for name, rdtype, text in neededRecords(config, domain)]
    report[None] = (checkPTR(config, resolver, addresses)
                    + checkBlocklists(config, resolver, addresses)
                    + [checkPort25(config)])
    return report


def allGood(report):
    return all(check.good for checks in report.values() for check in checks)


def formatReport(report):
    """Lines of text for the terminal."""
    lines = []
    for domain, checks in report.items():
        lines.append(f"== {domain if domain is not None else SERVER}")
        for c in checks:
            lines.append(f"{c.status.upper():8} {c.name} {c.rdtype} {c.needed}")
            if c.status != OK and c.published:
                lines.append(f"         published: {' | '.join(c.published)}")
            if c.note:
                lines.append(f"         ({c.note})")
    bad = sum(not c.good for checks in report.values() for c in checks)
    lines.append("all records as needed" if not bad else
                 f"{bad} record{'' if bad == 1 else 's'} not as needed")
    return lines
