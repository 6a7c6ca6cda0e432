"""
DNS blocklists and allowlists as a policy piece (C{dnsbl}).

Trusts: the answers of the configured lists, through the server's resolver.
Does not trust: anything the client says; a list that does not answer in
C{timeout} seconds (not listed, logged: a dead list must not stall or
refuse mail).

At RCPT the client IP is looked up in C{zones} (RFC 5782 §2.1: IPv4 as
reversed octets, §2.4: IPv6 as reversed nibbles) and the sender's domain in
C{domain_zones} (RFC 5782 §2.3: the name itself under the zone); at the end
of data the domains of URLs in the message too.  A listing in a zone whose
action is C{reject} refuses with 554 5.7.1 and the list's reason, in
Postfix's words; in a C{score} zone it adds C{listing_score} to the spam
score.  A client in C{allow} or listed in an C{allow_zones} list (DNSWL) is
not looked up; mail from an authenticated user is not judged.

Answers are kept C{cache_ttl} seconds (the resolver's own cache also
honours the records' TTL), at most C{cache_size} names, oldest out first.
"""

import ipaddress
import re
from collections import OrderedDict

from twisted.internet import defer
from zope.interface import implementer

from pymailer.dns import DNSError
from pymailer.interfaces import IPolicyFactory
from pymailer.policy.decision import AuthResult, Decision
from pymailer.policy.pieces import _Piece
from pymailer.policy.scanner import printable
from pymailer.policy.verdict import SpamScore, isSpamHeader, logVerdict

# RFC 5782 §2.3: a listing is an A record in 127.0.0.0/8.
LISTED_NET = ipaddress.ip_network("127.0.0.0/8")
# URLs looked at per message, and how much of it is read for them.
MAX_URL_DOMAINS = 10
URL_SCAN_LIMIT = 1024 * 1024
# Characters of a list's TXT reason that reach the SMTP reply (as clamav's
# and rspamd's reasons: L{pymailer.policy.scanner.printable}).
REASON_LIMIT = 200
_URL = re.compile(rb"(?:https?://|www\.)([a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)+)",
                  re.IGNORECASE)


def clientIP(address):
    """
    The L{ipaddress} object of a client address, an IPv4-mapped IPv6
    address as the IPv4 one it is; C{None} if not an IP (a UNIX socket).
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


def reversedName(address):
    """
    The DNS name of an IP under a list (without the zone): RFC 5782 §2.1
    (v4, reversed octets) and §2.4 (v6, reversed nibbles).
    """
    ip = clientIP(address)
    if ip is None:
        raise ValueError(f"not an IP address: {address!r}")
    return ip.reverse_pointer.rpartition(".in-addr.arpa")[0] if ip.version == 4 \
        else ip.reverse_pointer.rpartition(".ip6.arpa")[0]


def inNetworks(address, networks):
    """Is C{address} in one of C{networks} (strings, parsed as given)?"""
    ip = clientIP(address)
    return ip is not None and any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


class Cache:
    """Answers by name for C{ttl} seconds, at most C{size} of them."""

    def __init__(self, ttl, size, clock):
        self.ttl, self.size, self.clock = ttl, size, clock
        self._entries = OrderedDict()

    def get(self, name):
        entry = self._entries.get(name)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self.clock.seconds():
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return value

    def put(self, name, value):
        if not self.size or not self.ttl:
            return
        self._entries[name] = (self.clock.seconds() + self.ttl, value)
        self._entries.move_to_end(name)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class DNSBL(_Piece):
    name = "dnsbl"

    def __init__(self, context, config):
        _Piece.__init__(self, context)
        self.config = config
        self.clock = context.reactor
        self.cache = Cache(config.cache_ttl, config.cache_size, self.clock)

    @defer.inlineCallbacks
    def checkRecipient(self, facts, recipient):
        if facts.authenticatedAs is not None:
            return None
        # Once per transaction: every recipient gets the same answer.
        if "dnsbl" not in facts.notes:
            facts.notes["dnsbl"] = yield self._judgeEnvelope(facts)
        decision = facts.notes["dnsbl"]
        if decision is not None and decision.refuses:
            logVerdict(facts, self.name, "reject", decision.reason,
                       recipients=facts.recipients + [recipient])
        return decision

    @defer.inlineCallbacks
    def _judgeEnvelope(self, facts):
        ip = facts.clientAddress
        try:
            ipName = reversedName(ip)
        except ValueError:
            return None  # not an IP (a UNIX socket): nothing to look up
        if inNetworks(ip, self.config.allow):
            return None
        for zone in self.config.allow_zones:
            answer = yield self._lookup(facts, f"{ipName}.{zone}", zone)
            if answer:
                # RFC 8904: the registered Authentication-Results method for
                # a DNS allowlist, so the user's client can see why.
                facts.authResults.append(AuthResult(
                    "dnswl", "pass", "", (("dns.zone", zone), ("policy.ip", answer[0]))))
                return None
        for zone in self.config.zones:
            decision = yield self._listed(facts, zone, ipName, f"Client host [{ip}]")
            if decision is not None:
                return decision
        domain = (facts.sender or "").rpartition("@")[2].lower()
        if domain:
            for zone in self.config.domain_zones:
                decision = yield self._listed(facts, zone, domain,
                                              f"Sender address domain {domain}")
                if decision is not None:
                    return decision
        return None

    @defer.inlineCallbacks
    def checkData(self, facts, message):
        if facts.authenticatedAs is not None or not self.config.domain_zones:
            return None
        if "dnsbl.urls" in facts.notes:
            return None
        facts.notes["dnsbl.urls"] = True
        data = yield self._read(facts, message, URL_SCAN_LIMIT)
        domains = []
        for match in _URL.finditer(data):
            domain = match.group(1).decode("ascii").lower().rstrip(".")
            if domain not in domains:
                domains.append(domain)
            if len(domains) >= MAX_URL_DOMAINS:
                break
        queueId = getattr(message, "queueId", None)
        for domain in domains:
            for zone in self.config.domain_zones:
                decision = yield self._listed(facts, zone, domain, f"URL domain {domain}",
                                              queueId)
                if decision is not None:
                    if decision.refuses:
                        logVerdict(facts, self.name, "reject", decision.reason, queueId=queueId)
                    return decision
        return None

    @defer.inlineCallbacks
    def _listed(self, facts, zone, name, what, queueId=None):
        """A refusal, or C{None} after adding to the score, or not listed."""
        answer = yield self._lookup(facts, f"{name}.{zone.name}", zone.name)
        if not answer:
            return None
        codes = dict(zone.codes)
        reasons = [codes[a] for a in answer if a in codes] if codes else \
            [a for a in answer]
        if not reasons:
            return None  # only codes the list's operator says are no listing
        if not codes:
            txt = yield self._txtReason(f"{name}.{zone.name}")
            reasons = txt or reasons
        reason = "; ".join(reasons)
        check = f"dnsbl.{zone.name}"
        if zone.action == "score":
            SpamScore.of(facts).add(self.name, self.config.listing_score, check)
            logVerdict(facts, self.name, "score", f"{check} ({reason})",
                       self.config.listing_score, queueId)
            return None
        # Postfix's words: "Client host [192.0.2.1] blocked using zen.spamhaus.org; ..."
        return Decision.reject(554, "5.7.1", f"{what} blocked using {zone.name}; {reason}",
                               check)

    def keepHeader(self, facts, field):
        return facts.authenticatedAs is not None or not isSpamHeader(field)

    def _lookup(self, facts, qname, zone):
        """
        @return: a C{Deferred} firing with the listing's answers (C{str}
            addresses in 127/8, possibly empty); never failing.
        """
        cached = self.cache.get(qname)
        if cached is not None:
            return defer.succeed(cached)

        def answered(records):
            return [r.address for r in records
                    if ipaddress.ip_address(r.address) in LISTED_NET]

        def failed(failure):
            if failure.check(DNSError) and not failure.value.temporary:
                return []  # NXDOMAIN: not listed
            problem = "timed out" if failure.check(defer.TimeoutError, defer.CancelledError) \
                else failure.getErrorMessage()
            logVerdict(facts, self.name, "timeout", f"{zone}: {problem}; counted as not listed")
            return None

        def remember(answer):
            if answer is not None:
                self.cache.put(qname, answer)
                return answer
            return []

        d = self.context.resolver.lookup(qname, "A")
        d.addTimeout(self.config.timeout, self.clock)
        return d.addCallbacks(answered, failed).addCallback(remember)

    @defer.inlineCallbacks
    def _txtReason(self, qname):
        """The list's own words (its TXT record), if it has any."""
        d = self.context.resolver.lookup(qname, "TXT")
        d.addTimeout(self.config.timeout, self.clock)
        try:
            records = yield d
        except Exception:
            return None
        # The list's text goes into our SMTP reply: a TXT record may hold
        # CR/LF (a forged reply line), controls or 64 KB; clamp it as the
        # scanners' reasons are.
        texts = [printable(b"".join(r.strings).decode("utf-8", "replace"), REASON_LIMIT)
                 for r in records]
        return [t for t in texts if t][:1] or None


@implementer(IPolicyFactory)
class DNSBLFactory:
    name = "dnsbl"

    def build(self, context, options):
        return DNSBL(context, context.config.policy.dnsbl)
