"""
[policy.dnsbl]: the DNS lists (RFC 5782) client IPs and domains are looked up in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pymailer.config.reader import networks, nonNegativeInt, showValue, stringList, zoneName


@dataclass(frozen=True)
class DNSBLZone:
    """
    One DNS list: C{action} "reject" (554 at RCPT) or "score" (adds
    C{[policy.dnsbl] listing_score}); C{codes}: C{(("127.0.0.2", "SBL"),
    ...)}, the answers that mean listed and their reasons (empty: any
    127.0.0.0/8 answer lists).
    """

    name: str
    action: str = "reject"
    codes: tuple = ()


DNSBL_ACTIONS = ("reject", "score")


@dataclass(frozen=True)
class DNSBLConfig:
    """
    [policy.dnsbl]: C{zones} list client IPs, C{domain_zones} list domains
    (the sender's, and the URLs' in the body); C{allow_zones} (DNSWL) and
    C{allow} (IPs and networks) exempt a client.  A lookup that takes
    longer than C{timeout} counts as not listed; answers are kept
    C{cache_ttl} seconds, at most C{cache_size} of them.
    """

    zones: tuple = ()
    domain_zones: tuple = ()
    allow_zones: tuple = ()
    allow: tuple = ()
    listing_score: float = 3.0
    timeout: float = 5.0
    cache_ttl: float = 300.0
    cache_size: int = 10000


def parseDNSBL(reader):
    """
    [policy.dnsbl]: C{zones = ["zen.spamhaus.org=reject", "bl.test=score"]}
    (reject when no action is named), and return codes with reasons in
    C{[policy.dnsbl.zone."zen.spamhaus.org"] "127.0.0.2" = "SBL"}.
    """
    codesT = reader.table_("zone")
    codes = {}
    for zone, table in codesT.table.items():
        codesT.get(zone)
        name = zoneName(codesT, zone, zone)
        if not isinstance(table, dict):
            raise codesT.error(zone, f"expected a table, got {showValue(table)}")
        for code, reason in table.items():
            try:
                ok = ipaddress.ip_address(code).version == 4 and isinstance(reason, str)
            except ValueError:
                ok = False
            if not ok:
                raise codesT.error(
                    f"{zone}.{code}", 'expected "127.0.0.N" = "reason"')
        codes[name] = tuple(table.items())

    def zones(key):
        out = []
        for entry in stringList(reader, key, ()):
            name, _, action = entry.partition("=")
            action = action or "reject"
            if action not in DNSBL_ACTIONS:
                raise reader.error(
                    key, f"{showValue(entry)}: action must be one of {', '.join(DNSBL_ACTIONS)}")
            name = zoneName(reader, key, name)
            out.append(DNSBLZone(name, action, codes.get(name, ())))
        return tuple(out)

    d = DNSBLConfig()
    config = DNSBLConfig(
        zones=zones("zones"),
        domain_zones=zones("domain_zones"),
        allow_zones=tuple(zoneName(reader, "allow_zones", z)
                          for z in stringList(reader, "allow_zones", ())),
        allow=networks(reader, "allow"),
        listing_score=reader.number("listing_score", d.listing_score, strict=False),
        timeout=reader.number("timeout", d.timeout),
        cache_ttl=reader.number("cache_ttl", d.cache_ttl, strict=False),
        cache_size=nonNegativeInt(reader, "cache_size", d.cache_size))
    named = {z.name for z in config.zones + config.domain_zones}
    for name in codes:
        if name not in named:
            raise codesT.error(name, "return codes for a zone that zones and domain_zones do not name")
    reader.checkUnknown(reader.seen)
    return config
