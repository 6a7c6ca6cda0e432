"""
SPF (RFC 7208): may this client IP send mail for that domain?

L{checkHost} is the C{check_host()} function of RFC 7208 §4; L{evaluate}
picks the identity an SMTP server checks (§2.4): the MAIL FROM domain, or
the HELO name when MAIL FROM is null.  Both return a C{Deferred} firing with
an L{SPFResult}; they never block, and the Deferred never fails (DNS and
record errors are results: temperror, permerror).

Why our own evaluator rather than pyspf: pyspf does its own synchronous DNS
(through pydns or dnspython's resolver) which cannot go through our one
resolver seam, L{pymailer.dns.Resolver}, whose lookups C{[dns] servers}
points elsewhere and which runs them in a thread pool so the reactor never
blocks; and it cannot be driven through a fake resolver, so its results
could not be tested the way the rest of the server is.  Every lookup here is
C{resolver.lookup(name, rdtype)}.  The record language (parsing, macros)
lives in L{pymailer.policy.spfrecord}; this module evaluates.

Trust: the records, the PTR names and the addresses come from DNS, under
the control of the domain being checked (or of whoever runs the client's
reverse zone).  The limits of §4.6.4 (10 DNS-querying terms, 2 void
lookups, 10 MX or PTR names per term) bound the work one check can cause;
C{timeout} (with a C{clock}) bounds its time (§4.6.4: at least 20 s, then
temperror).  Macro expansions that make an invalid DNS name are not
queried.
"""

import dataclasses
import ipaddress
import re
import time
from dataclasses import dataclass

import dns.reversename
from twisted.internet import defer
from twisted.logger import Logger

from pymailer.dns import DNSError
from pymailer.policy.spfrecord import (
    EXPLANATION_LETTERS,
    SPFSyntaxError,
    expand,
    isSPFRecord,
    parseMacroString,
    parseRecord,
)

log = Logger()

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")

#: RFC 7208 §4.6.4.
MAX_DNS_TERMS = 10
MAX_VOID_LOOKUPS = 2
MAX_NAMES_PER_TERM = 10  # MX hosts of one "mx", PTR names of one "ptr"
DEFAULT_TIMEOUT = 20.0

#: §6.2: the explanation for fail when the record gives none is "locally
#: defined"; a macro-string expanded like an exp= text.
DEFAULT_EXPLANATION = "%{o} does not authorise %{c} to send its mail (SPF)"


@dataclass(frozen=True)
class SPFResult:
    """
    The outcome of one SPF check.

    @ivar result: one of L{RESULTS}.
    @ivar domain: the domain C{check_host()} started at (the identity's
        domain).
    @ivar sender: C{<sender>} as checked (with "postmaster@" filled in,
        §4.3).
    @ivar ip: the client address as checked (an IPv4-mapped IPv6 address as
        IPv4, §5).
    @ivar identity: "mailfrom" or "helo" from L{evaluate}; C{None} from
        L{checkHost}.
    @ivar mechanism: the directive that decided, as published ("-all",
        "include:_spf.example.com"); "default" when nothing matched (§4.7);
        C{None} for none, temperror and permerror.
    @ivar reason: one line saying why, for logs and the comment of an
        Authentication-Results or Received-SPF header (§9.1 wording).
    @ivar explanation: for fail only: the domain's exp= text (§6.2) or the
        default explanation; meant for the SMTP rejection text.
    """

    result: str
    domain: str
    sender: str
    ip: str
    helo: str | None = None
    identity: str | None = None
    mechanism: str | None = None
    reason: str = ""
    explanation: str | None = None

    @property
    def authResultsProperty(self):
        """
        The RFC 8601 §2.7.2 property for Authentication-Results:
        C{("smtp.mailfrom", sender)} or C{("smtp.helo", helo)}.
        """
        if self.identity == "helo":
            return ("smtp.helo", self.helo or self.domain)
        return ("smtp.mailfrom", self.sender)

    def authResults(self):
        """
        This result as one RFC 8601 resinfo: C{spf=fail (reason)
        smtp.mailfrom=alice@example.org}.
        """
        name, value = self.authResultsProperty
        comment = self.reason.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        return f"spf={self.result} ({comment}) {name}={_pvalue(value)}"


_ATEXT = "A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~"
_PVALUE = re.compile(f"(?:[{_ATEXT}.]*@)?[{_ATEXT}.]+")


def _pvalue(value):
    """RFC 8601 §2.2 pvalue: an address or domain as is, else a quoted-string."""
    if _PVALUE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _SPFError(Exception):
    result = None

    def __init__(self, reason):
        Exception.__init__(self, reason)
        self.reason = reason


class _PermError(_SPFError):
    result = "permerror"


class _TempError(_SPFError):
    result = "temperror"


@dataclass(frozen=True)
class _Outcome:
    """What one (possibly nested) check_host() returned short of an error."""

    result: str
    mechanism: str | None = None
    explanation: str | None = None


def checkHost(resolver, ip, domain, sender, helo=None, receivingHost="unknown",
              defaultExplanation=DEFAULT_EXPLANATION, now=None, clock=None,
              timeout=DEFAULT_TIMEOUT):
    """
    RFC 7208 §4: C{check_host(<ip>, <domain>, <sender>)}.

    @param resolver: a L{pymailer.dns.Resolver} (or anything with its
        C{lookup(name, rdtype)}).
    @param ip: the SMTP client's address (C{str} or C{ipaddress} object).
    @param domain: the domain to check (the MAIL FROM domain, or the HELO
        name).
    @param sender: the MAIL FROM address, or "postmaster@" + HELO name;
        an empty local-part becomes "postmaster" (§4.3).
    @param helo: the HELO/EHLO name, for %{h}.
    @param receivingHost: our host name, for %{r} in explanations.
    @param defaultExplanation: the explain-string for fail when the domain
        gives no exp= (§6.2).
    @param now: seconds since the epoch for %{t}; C{clock.seconds()} or
        the time of day when C{None}.
    @param clock: an C{IReactorTime}: with it, a check running past
        C{timeout} seconds is temperror (§4.6.4).
    @return: a C{Deferred} firing with an L{SPFResult}.
    @raise ValueError: C{ip} is not an IP address.
    """
    address = ipaddress.ip_address(str(getattr(ip, "host", ip)).split("%")[0])
    if address.version == 6 and address.ipv4_mapped is not None:
        # §5: an IPv4-mapped IPv6 address is an IPv4 address, for ip4/ip6,
        # for "a"/"mx" (A, not AAAA) and for %{i}, %{v}, %{c}.
        address = address.ipv4_mapped
    domain = _toASCII(domain or "")
    if domain.endswith(".") and len(domain) > 1:
        domain = domain[:-1]
    if sender and "@" in sender:
        local, senderDomain = sender.rsplit("@", 1)
    else:
        local, senderDomain = "", sender or domain
    if not local:
        # §4.3: "If the <sender> has no local-part, substitute the string
        # 'postmaster' for the local-part."
        local = "postmaster"
    sender = f"{local}@{senderDomain}"
    if now is None:
        now = clock.seconds() if clock is not None else time.time()
    check = _Check(resolver, address, local, senderDomain, helo, receivingHost, int(now))

    def makeResult(code, mechanism=None, explanation=None, problem=None):
        if problem is None:
            reason = _REASONS[code].format(sender=sender, ip=address)
        else:
            reason = f"{_ERROR_PREFIX[code]} {domain}: {problem}"
        return SPFResult(code, domain, sender, str(address), helo, None, mechanism, reason, explanation)

    def done(outcome):
        explanation = outcome.explanation
        if outcome.result == "fail" and explanation is None:
            explanation = check.defaultExplanation(defaultExplanation, domain)
        return makeResult(outcome.result, outcome.mechanism, explanation)

    def failed(failure):
        if failure.check(_SPFError):
            return makeResult(failure.value.result, problem=failure.value.reason)
        if failure.check(defer.CancelledError, defer.TimeoutError):
            return makeResult("temperror", problem=f"no answer within {timeout:g} s")
        log.failure("SPF check of {domain} for {ip} failed", failure, domain=domain, ip=address)
        return makeResult("temperror", problem="internal error")

    d = check.checkHost(domain, explain=True)
    d.addCallbacks(done, failed)
    if clock is not None:
        # §4.6.4: "MTAs or other processors SHOULD impose a limit on the
        # maximum amount of elapsed time to evaluate check_host() [...] at
        # least 20 seconds [...] the result of authorization SHOULD be
        # 'temperror'."  Cancelling reaches the pending lookup; failed()
        # above turns the CancelledError into the result.
        d.addTimeout(timeout, clock)
        d.addErrback(failed)
    return d


def evaluate(resolver, ip, mailFrom, helo, receivingHost="unknown", **kwargs):
    """
    RFC 7208 §2.4: check the MAIL FROM identity, or the HELO identity (as
    "postmaster@" + HELO name) when MAIL FROM is null (C{""} or C{"<>"}).
    Other keyword arguments go to L{checkHost}.

    @return: a C{Deferred} firing with an L{SPFResult} whose C{identity} is
        "mailfrom" or "helo".
    """
    mailFrom, helo = _text(mailFrom).strip(), _text(helo).strip() or None
    if mailFrom.startswith("<") and mailFrom.endswith(">"):
        mailFrom = mailFrom[1:-1]
    if mailFrom:
        identity = "mailfrom"
        domain = mailFrom.rpartition("@")[2]
        sender = mailFrom
    else:
        identity = "helo"
        domain = helo or ""
        sender = f"postmaster@{domain}"
    d = checkHost(resolver, ip, domain, sender, helo=helo, receivingHost=receivingHost, **kwargs)
    return d.addCallback(lambda r: dataclasses.replace(r, identity=identity))


def _text(value):
    """MAIL FROM or HELO as text, whether given as C{str}, C{bytes} or an address object."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# The wording of the Received-SPF examples of §9.1 (and of other
# implementations for the results §9.1 has no example of).
_REASONS = {
    "pass": "domain of {sender} designates {ip} as permitted sender",
    "fail": "domain of {sender} does not designate {ip} as permitted sender",
    "softfail": "domain of transitioning {sender} does not designate {ip} as permitted sender",
    "neutral": "{ip} is neither permitted nor denied by domain of {sender}",
    "none": "domain of {sender} does not designate permitted sender hosts",
}
_ERROR_PREFIX = {
    "permerror": "permanent error in processing domain of",
    "temperror": "temporary error in processing during lookup of",
}


def _toASCII(domain):
    domain = domain.strip()
    if not domain.isascii():
        try:
            return domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return domain


def _validDomain(domain, identity):
    """
    Whether C{domain} can be queried: labels of 1 to 63 octets, 253 in all,
    ASCII.  For an identity (§4.3: a malformed <domain> gives "none"
    without a lookup) also multi-label, no domain literal, no space or
    control character.  A mechanism's target name that fails (say a macro
    made a 66-octet label) is not queried and does not match (§4.8 leaves
    it open; the 2014.04 suite prefers that to permerror).
    """
    if not domain or len(domain) > 253 or not domain.isascii():
        return False
    labels = domain.split(".")
    if not all(0 < len(label) <= 63 for label in labels):
        return False
    if identity:
        return len(labels) > 1 and not domain.startswith("[") and all(
            "\x21" <= c <= "\x7e" for c in domain)
    return True


def _queryName(name):
    """
    Names are plain text here (no zone-file escapes); the resolver takes
    dnspython's text form, so a backslash (say from an expanded local-part)
    must stay a backslash, and "@" alone is not the origin.
    """
    name = name.replace("\\", "\\\\")
    return "\\@" if name == "@" else name


def _nameText(name):
    """A C{dns.name.Name} from an MX or PTR record as plain text."""
    return ".".join(label.decode("latin-1") for label in name.labels if label)


class _Check:
    """
    The state of one check_host() and everything it recurses into:
    the counters of §4.6.4 are per check, across include and redirect.
    """

    def __init__(self, resolver, ip, local, senderDomain, helo, receivingHost, now):
        self.resolver = resolver
        self.ip = ip
        self.local = local
        self.senderDomain = senderDomain
        self.helo = helo
        self.receivingHost = receivingHost
        self.now = now
        self.dnsTerms = 0
        self.voidLookups = 0

    # -- check_host() --------------------------------------------------------

    @defer.inlineCallbacks
    def checkHost(self, domain, explain):
        """
        §4: evaluate the record of C{domain}.  C{explain}: fetch the exp=
        text on fail (at the top and through redirect, never for include:
        §6.2 "include-ignores-exp").

        @return: a C{Deferred} firing with an L{_Outcome}, failing with
            L{_PermError} or L{_TempError}.
        """
        if domain.endswith("."):
            domain = domain[:-1]
        if not _validDomain(domain, identity=True):
            return _Outcome("none")
        record = yield self._fetchRecord(domain)
        if record is None:
            return _Outcome("none")
        try:
            record = parseRecord(record)
        except SPFSyntaxError as e:
            raise _PermError(f"{e} (in the record of {domain})")
        for directive in record.directives:
            matched = yield self._matches(directive, domain)
            if matched:
                explanation = None
                if directive.result == "fail" and explain and record.explanation is not None:
                    explanation = yield self._explanation(record.explanation, domain)
                return _Outcome(directive.result, directive.text, explanation)
        if record.redirect is not None:
            # §6.1: only when no mechanism matched; the redirect target's
            # result (and its own exp=, not ours: §6.2) is the result.
            self._countTerm("redirect")
            target = yield self._expandDomain(record.redirect, domain)
            if target is None:
                raise _PermError(f"redirect= of {domain} is not a valid domain name")
            outcome = yield self.checkHost(target, explain)
            if outcome.result == "none":
                # §6.1: "If no SPF record is found, or if the <target-name>
                # is malformed, the result is a 'permerror'."
                raise _PermError(f"redirect target {target} has no SPF record")
            return outcome
        # §4.7: no match, no redirect: neutral.
        return _Outcome("neutral", "default")

    @defer.inlineCallbacks
    def _fetchRecord(self, domain):
        """
        §4.4, §4.5: the one SPF record among the TXT records of C{domain}
        (the SPF RR type is not queried: §3.1, §14.1), or C{None}.
        """
        try:
            records = yield self.resolver.lookup(_queryName(domain), "TXT")
        except DNSError as e:
            if not e.temporary:
                return None  # §4.3: NXDOMAIN is "none".
            raise _TempError(f"TXT lookup of {domain}: {e.reason}")
        # §3.3: the strings of one TXT record are joined without spaces.
        spf = [data for data in (b"".join(r.strings) for r in records) if isSPFRecord(data)]
        if len(spf) > 1:
            raise _PermError(f"{domain} has {len(spf)} SPF records")  # §4.5
        return spf[0] if spf else None

    # -- mechanisms ------------------------------------------------------------

    def _countTerm(self, what):
        # §4.6.4: include, a, mx, ptr, exists and redirect each count, across
        # the whole check, when they are evaluated.
        self.dnsTerms += 1
        if self.dnsTerms > MAX_DNS_TERMS:
            raise _PermError(f"more than {MAX_DNS_TERMS} DNS-querying terms (at {what})")

    @defer.inlineCallbacks
    def _matches(self, directive, domain):
        mechanism = directive.mechanism
        if mechanism == "all":
            return True
        if mechanism in ("ip4", "ip6"):
            # §5.6: ip4 never matches an IPv6 client nor ip6 an IPv4 one.
            return self.ip.version == directive.network.version and self.ip in directive.network
        self._countTerm(directive.text)
        if directive.domainSpec is None:
            target = domain
        else:
            target = yield self._expandDomain(directive.domainSpec, domain)
        if mechanism == "include":
            if target is None:
                raise _PermError(f"{directive.text}: not a valid domain name")
            outcome = yield self.checkHost(target, explain=False)
            # §5.2: pass matches; fail, softfail, neutral do not; none is a
            # permerror (errors have already propagated).
            if outcome.result == "none":
                raise _PermError(f"{directive.text}: {target} has no SPF record")
            return outcome.result == "pass"
        if target is None:
            return False
        if mechanism == "a":
            addresses = yield self._addresses(target, void=True)
            return self._inAny(addresses, directive)
        if mechanism == "mx":
            return (yield self._matchesMX(target, directive))
        if mechanism == "ptr":
            return (yield self._matchesPTR(target))
        # exists (§5.7): an A query, whatever the client's address family.
        records = yield self._lookup(target, "A", void=True)
        return bool(records)

    def _inAny(self, addresses, directive):
        """§5.3/§5.4: the dual-cidr-length applies to the client's family."""
        length = directive.cidr4 if self.ip.version == 4 else directive.cidr6
        network = ipaddress.ip_network(f"{self.ip}/{length}", strict=False)
        return any(a in network for a in addresses)

    @defer.inlineCallbacks
    def _matchesMX(self, target, directive):
        records = yield self._lookup(target, "MX", void=True)
        if len(records) > MAX_NAMES_PER_TERM:
            # §4.6.4: an "mx" must not cause more than 10 address lookups,
            # else permerror.  Decided on the count of MX names, before any
            # lookup, so the result does not depend on the order of the
            # answer (pyspf does the same; the suite's "mx-limit").
            raise _PermError(f"{target} has more than {MAX_NAMES_PER_TERM} MX records")
        # §5.4: no MX means no match (no implicit MX, unlike RFC 5321); a
        # null MX (RFC 7505) names no host.
        hosts = [_nameText(r.exchange) for r in sorted(records, key=lambda r: r.preference)
                 if len(r.exchange) > 1]
        for host in hosts:
            addresses = yield self._addresses(host, void=False)
            if self._inAny(addresses, directive):
                return True
        return False

    @defer.inlineCallbacks
    def _matchesPTR(self, target):
        """
        §5.5: the client's validated names (PTR names whose A/AAAA records
        hold its address), the first 10 PTR names only (§4.6.4), match if
        one is C{target} or a subdomain of it.  DNS errors never make this a
        temperror: a PTR error is no match, an address error skips the name.
        """
        names = yield self._ptrNames(void=True)
        target = target.lower()
        for name in names:
            lower = name.lower()
            if (lower == target or lower.endswith("." + target)) and (yield self._validates(name)):
                return True
        return False

    @defer.inlineCallbacks
    def _ptrNames(self, void):
        try:
            records = yield self._lookup(dns.reversename.from_address(str(self.ip)).to_text(), "PTR", void)
        except _TempError:
            return []
        return [_nameText(r.target) for r in records][:MAX_NAMES_PER_TERM]

    @defer.inlineCallbacks
    def _validates(self, name):
        try:
            addresses = yield self._addresses(name, void=False)
        except _TempError:
            return False
        return self.ip in addresses

    @defer.inlineCallbacks
    def _addresses(self, name, void):
        """§5: A records for an IPv4 client, AAAA for an IPv6 one."""
        records = yield self._lookup(name, "A" if self.ip.version == 4 else "AAAA", void)
        return [ipaddress.ip_address(r.address) for r in records]

    @defer.inlineCallbacks
    def _lookup(self, name, rdtype, void):
        """
        @param void: count an empty answer or NXDOMAIN as a void lookup
            (§4.6.4: more than 2 is a permerror).  Only the lookup a term
            itself makes counts (not the addresses of MX hosts or PTR names,
            nor exp=).
        @raise _TempError: the lookup timed out or the server failed.
        """
        try:
            records = yield self.resolver.lookup(_queryName(name), rdtype)
        except DNSError as e:
            if e.temporary:
                raise _TempError(f"{rdtype} lookup of {name}: {e.reason}")
            records = []
        if void and not records:
            self.voidLookups += 1
            if self.voidLookups > MAX_VOID_LOOKUPS:
                raise _PermError(f"more than {MAX_VOID_LOOKUPS} void lookups (at {name} {rdtype})")
        return records

    # -- macros and explanations -----------------------------------------------

    @defer.inlineCallbacks
    def _expand(self, macroString, domain):
        """§7.2 values, the validated name %{p} looked up only if used."""
        ip = self.ip
        if ip.version == 4:
            dotted = str(ip)
        else:
            # §7.3: %{i} of IPv6 is the 32 nibbles, dot-separated.  Upper
            # case hex: the RFC leaves case open (DNS is case-insensitive),
            # the 2014.04 test suite's explanations expect upper case.
            dotted = ".".join(ip.exploded.replace(":", "").upper())
        values = {
            "s": f"{self.local}@{self.senderDomain}",
            "l": self.local,
            "o": self.senderDomain,
            "d": domain,
            "i": dotted,
            "v": "in-addr" if ip.version == 4 else "ip6",
            "h": self.helo or "unknown",
            "c": str(ip),
            "r": self.receivingHost or "unknown",
            "t": str(self.now),
        }
        if "p" in macroString.letters:
            values["p"] = yield self._validatedName(domain)
        return expand(macroString, values)

    @defer.inlineCallbacks
    def _expandDomain(self, macroString, domain):
        """
        Expand a domain-spec into a name to query, or C{None} if it is not a
        valid domain name.  §7.3: a trailing dot is dropped, and a name over
        253 characters loses labels on the left until it fits.
        """
        name = yield self._expand(macroString, domain)
        if name.endswith("."):
            name = name[:-1]
        while len(name) > 253 and "." in name:
            name = name.split(".", 1)[1]
        return name if _validDomain(name, identity=False) else None

    @defer.inlineCallbacks
    def _validatedName(self, domain):
        """
        §7.3 %{p}: a validated name of the client, preferring C{domain}
        itself, then a subdomain of it, then any; "unknown" if none (or on
        DNS errors).  Its lookups count towards no limit.
        """
        names = yield self._ptrNames(void=False)
        lower = domain.lower()

        def preference(name):
            name = name.lower()
            return 0 if name == lower else 1 if name.endswith("." + lower) else 2

        for name in sorted(names, key=preference):
            if (yield self._validates(name)):
                return name
        return "unknown"

    @defer.inlineCallbacks
    def _explanation(self, macroString, domain):
        """
        §6.2: the exp= text, or C{None} to use the default: "If there are
        any DNS processing errors (any RCODE other than 0), or if no records
        are returned, or if more than one record is returned, or if there
        are syntax errors in the explanation string", proceed as if there
        were no exp=.  The lookup counts towards no limit.
        """
        try:
            target = yield self._expandDomain(macroString, domain)
            if target is None:
                return None
            records = yield self.resolver.lookup(_queryName(target), "TXT")
            if len(records) != 1:
                return None
            text = b"".join(records[0].strings).decode("ascii")  # §6.2: US-ASCII
            explanation = parseMacroString(text, EXPLANATION_LETTERS, explanation=True)
            return (yield self._expand(explanation, domain))
        except (DNSError, _SPFError, SPFSyntaxError, UnicodeDecodeError):
            return None

    def defaultExplanation(self, text, domain):
        try:
            macroString = parseMacroString(text, EXPLANATION_LETTERS, explanation=True)
        except SPFSyntaxError:
            return text
        if "p" in macroString.letters:
            return text  # never worth PTR lookups of its own
        # No DNS: _expand() fires at once.
        result = []
        self._expand(macroString, domain).addCallback(result.append)
        return result[0]
