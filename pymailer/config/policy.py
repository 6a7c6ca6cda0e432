"""
[policy]: the checks on a message's path, in order, and the options of the
small ones (rate limits, DMARC, greylisting, the score rules); the DNS lists
and the content scanners have modules of their own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pymailer.config.dnsbl import DNSBLConfig, parseDNSBL
from pymailer.config.reader import networks, nonNegativeInt, showValue, stringList
from pymailer.config.scanners import (
    ClamAVConfig, ClassifierConfig, RspamdConfig, parseClamAV, parseClassifier, parseRspamd)


@dataclass(frozen=True)
class RateLimitConfig:
    """
    [policy.ratelimit]: per client IP and per authenticated user; 0 turns a
    limit off.

    The defaults never slow a well-behaved peer: a stock Postfix opens one
    connection per message (500 messages = 500 connections within seconds),
    so the connection rate is only a cap on floods (Postfix's own
    smtpd_client_connection_rate_limit is off); what a peer never does is
    guess addresses, hence the tight C{unknown_recipients_per_minute}.
    Concurrent connections per IP are C{[smtp] max_connections_per_ip}.
    """

    connections_per_minute: int = 600
    unknown_recipients_per_minute: int = 20
    messages_per_hour: int = 500
    recipients_per_hour: int = 2000


@dataclass(frozen=True)
class DMARCConfig:
    """
    [policy.dmarc]: C{mark_only_domains} are local domains whose recipients
    get failing mail marked (Authentication-Results) instead of refused or
    filed into Junk.
    """

    mark_only_domains: tuple = ()


@dataclass(frozen=True)
class GreylistConfig:
    """
    [policy.greylist]: an unknown (client /24 or /64, sender, recipient)
    triplet waits C{delay} seconds; a retry within C{expire} passes and
    the triplet is remembered C{keep} seconds since its last use.
    C{allow}: IPs and networks that never wait.
    """

    delay: float = 300.0
    expire: float = 86400.0
    keep: float = 35 * 86400.0
    allow: tuple = ()


@dataclass(frozen=True)
class RulesConfig:
    """
    [policy.rules]: a message whose spam score (every check's points) is at
    least C{junk_score} is filed into Junk.
    """

    junk_score: float = 5.0


DEFAULT_CHECKS = ("ratelimit", "spf", "dkim", "arc", "dmarc")


@dataclass(frozen=True)
class PolicyConfig:
    """
    [policy]: the pieces on a message's path, in order (ours and Twisted
    plugins, by name), and their options.

    @ivar authserv_id: the RFC 8601 authserv-id of our Authentication-Results
        (the hostname when not set).
    @ivar plugins: C{{name: dict}}: the C{[policy.NAME]} tables of pieces
        that are not ours, passed to them as they are.
    """

    checks: tuple = DEFAULT_CHECKS
    authserv_id: str | None = None
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    dmarc: DMARCConfig = field(default_factory=DMARCConfig)
    dnsbl: DNSBLConfig = field(default_factory=DNSBLConfig)
    greylist: GreylistConfig = field(default_factory=GreylistConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    clamav: ClamAVConfig = field(default_factory=ClamAVConfig)
    rspamd: RspamdConfig = field(default_factory=RspamdConfig)
    plugins: dict = field(default_factory=dict)

    def options(self):
        """Every piece's options as a C{dict} of C{dict}s."""
        return dict(self.plugins, ratelimit=dataclasses.asdict(self.ratelimit),
                    dmarc=dataclasses.asdict(self.dmarc))


def parsePolicy(policyT):
    checks = stringList(policyT, "checks", DEFAULT_CHECKS)
    repeated = sorted({c for c in checks if checks.count(c) > 1})
    if repeated:
        raise policyT.error("checks", f"names {', '.join(map(repr, repeated))} twice")
    if "dmarc" in checks:
        # DMARC judges the SPF and DKIM results of the pieces before it.
        for needed in ("spf", "dkim"):
            if needed not in checks[:checks.index("dmarc")]:
                raise policyT.error(
                    "checks", f"'dmarc' needs {needed!r} before it (it judges their results)")
    authservId = policyT.string("authserv_id")
    if authservId is not None and (not authservId or any(c in authservId for c in " ;()\"\\")):
        raise policyT.error("authserv_id", f"not a valid authserv-id: {showValue(authservId)}")

    rateT = policyT.table_("ratelimit")
    d = RateLimitConfig()
    ratelimit = RateLimitConfig(**{
        key: nonNegativeInt(rateT, key, getattr(d, key))
        for key in (f.name for f in dataclasses.fields(RateLimitConfig))
    })
    rateT.checkUnknown(rateT.seen)

    dmarcT = policyT.table_("dmarc")
    dmarc = DMARCConfig(mark_only_domains=tuple(
        x.lower() for x in stringList(dmarcT, "mark_only_domains", ())))
    dmarcT.checkUnknown(dmarcT.seen)

    dnsbl = parseDNSBL(policyT.table_("dnsbl"))
    greylistT = policyT.table_("greylist")
    d = GreylistConfig()
    greylist = GreylistConfig(
        delay=greylistT.number("delay", d.delay, strict=False),
        expire=greylistT.number("expire", d.expire),
        keep=greylistT.number("keep", d.keep),
        allow=networks(greylistT, "allow"))
    greylistT.checkUnknown(greylistT.seen)
    rulesT = policyT.table_("rules")
    rules = RulesConfig(junk_score=rulesT.number("junk_score", RulesConfig.junk_score))
    rulesT.checkUnknown(rulesT.seen)
    classifier = parseClassifier(policyT.table_("classifier"))
    clamav = parseClamAV(policyT.table_("clamav"))
    rspamd = parseRspamd(policyT.table_("rspamd"))

    plugins = {}
    for key, value in policyT.table.items():
        if key in policyT.seen:
            continue
        if not isinstance(value, dict):
            raise policyT.error(key, "unknown key")
        if key not in checks:
            raise policyT.error(key, f"options for {key!r}, which policy.checks does not name")
        plugins[key] = dict(value)
    return PolicyConfig(checks=checks, authserv_id=authservId, ratelimit=ratelimit,
                        dmarc=dmarc, dnsbl=dnsbl, greylist=greylist, rules=rules,
                        classifier=classifier, clamav=clamav, rspamd=rspamd, plugins=plugins)
