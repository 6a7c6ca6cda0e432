"""
DMARC (RFC 7489): find the From domain's policy and decide whether the
message's SPF and DKIM results are aligned with its From domain.

The organisational domain comes from the Public Suffix List as shipped and
updated by the C{publicsuffixlist} package (RFC 7489 §3.2), ICANN and
private sections both (so two C{*.blogspot.com} sites are not aligned with
each other).

C{txtLookup(name) -> list[str]}: one string per TXT record (strings of a
record joined), C{[]} when there is none, raising L{pymailer.dns.DNSError}
with C{temporary} set for timeouts and server failures (NXDOMAIN is not
temporary and means "no record" here).

Blocking and reactor-free: the server calls it in a thread pool.

What it trusts: nothing in the message or in DNS.  The From header is
parsed by the stdlib's RFC 5322 header parser; ambiguous From fields
(several fields, several addresses, none) yield no domain and a reason, and
the caller decides (RFC 7489 §6.6.1).  Policy records with unknown tags or
bad values are read as RFC 7489 §6.3 says: unknown tags ignored, bad values
replaced by defaults, a bad C{p=} read as C{p=none} when C{rua} is usable.
"""

from __future__ import annotations

import email.errors
import email.policy
import random as randomModule
import re
from dataclasses import dataclass, field

from publicsuffixlist import PublicSuffixList

from pymailer.dns import DNSError
from pymailer.policy.dkim import _reason

__all__ = [
    "DMARCRecord",
    "DMARCResult",
    "PolicyLookupError",
    "organisationalDomain",
    "aligned",
    "parseRecord",
    "fetchPolicy",
    "evaluate",
    "fromDomain",
]

POLICIES = ("none", "quarantine", "reject")

_psl = None


def _publicSuffixList():
    # Parsing the list takes ~50 ms: once per process, on first use.
    global _psl
    if _psl is None:
        _psl = PublicSuffixList()
    return _psl


def _clean(domain):
    return domain.strip().rstrip(".").lower()


def organisationalDomain(domain: str) -> str:
    """
    RFC 7489 §3.2: the public suffix of C{domain} plus one label
    (C{mail.example.co.uk} -> C{example.co.uk}).  A domain that is itself
    a public suffix (or has no more labels) is its own organisational
    domain.
    """
    domain = _clean(domain)
    org = _publicSuffixList().privatesuffix(domain)
    return org if org else domain


def aligned(identifier: str | None, fromDomain: str, mode: str) -> bool:
    """
    RFC 7489 §3.1: C{"s"} (strict) needs the same domain; C{"r"} (relaxed)
    the same organisational domain.
    """
    if not identifier or not fromDomain:
        return False
    a, b = _clean(identifier), _clean(fromDomain)
    if mode == "s":
        return a == b
    return organisationalDomain(a) == organisationalDomain(b)


# --- policy records --------------------------------------------------------

@dataclass(frozen=True)
class DMARCRecord:
    """
    A parsed C{v=DMARC1} record (RFC 7489 §6.3), defaults filled in.

    @ivar domain: where it was found (C{_dmarc.} stripped).
    @ivar sp: C{None} when absent (then C{p} applies to subdomains).
    @ivar pInvalid: C{p=} was missing or invalid and C{rua} made us read it
        as C{none} (RFC 7489 §6.6.3).
    """

    domain: str
    p: str
    sp: str | None = None
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    rua: tuple = ()
    ruf: tuple = ()
    fo: str = "0"
    rf: str = "afrf"
    ri: int = 86400
    pInvalid: bool = False


class PolicyLookupError(Exception):
    """A temporary DNS failure while looking for the policy."""

    def __init__(self, error):
        Exception.__init__(self, str(error))
        self.error = error


_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# RFC 7489 §6.4: dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ].
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s!,;]+(?:![0-9]+[kmgtKMGT]?)?$")


def _uris(value):
    """The syntactically valid URIs of a comma-separated C{rua}/C{ruf}."""
    return tuple(u.strip() for u in value.split(",") if _URI.match(u.strip()))


def _digits(text, most):
    """Whether C{text} is 1 to C{most} ASCII digits."""
    return text.isascii() and text.isdigit() and len(text) <= most


def parseRecord(text: str, domain: str) -> DMARCRecord | None:
    """
    Parse one TXT record.

    @return: the record, or C{None} when it is not a DMARC record (does not
        begin with C{v=DMARC1}) or is unusable (no valid C{p=} and no valid
        C{rua}, RFC 7489 §6.6.3).
    """
    parts = [part.strip() for part in text.split(";")]
    tags = {}
    for i, part in enumerate(parts):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _TAG.match(name):
            if i == 0:
                return None
            continue  # RFC 7489 §6.3: syntax errors in the rest are ignored.
        if i == 0:
            # RFC 7489 §6.3: v= MUST be the first tag; "DMARC1" exactly.
            if name != "v" or value != "DMARC1":
                return None
        tags.setdefault(name.lower(), value)

    def choice(tag, allowed, default):
        value = tags.get(tag, "").lower()
        return value if value in allowed else default

    p = tags.get("p", "").lower()
    sp = tags.get("sp")
    rua = _uris(tags.get("rua", ""))
    pInvalid = False
    if p not in POLICIES or (sp is not None and sp.lower() not in POLICIES):
        # RFC 7489 §6.6.3: an invalid p (or sp) with a valid rua is read as
        # p=none; without one, no DMARC processing.
        if not rua:
            return None
        p, sp, pInvalid = "none", None, True
    pct = tags.get("pct", "100")
    # Bounded before int(): a record's digits are the sender domain's choice.
    pct = int(pct) if _digits(pct, 3) and int(pct) <= 100 else 100
    ri = tags.get("ri", "86400")
    ri = int(ri) if _digits(ri, 10) else 86400
    return DMARCRecord(
        domain=_clean(domain),
        p=p,
        sp=sp.lower() if sp is not None else None,
        pct=pct,
        adkim=choice("adkim", ("r", "s"), "r"),
        aspf=choice("aspf", ("r", "s"), "r"),
        rua=rua,
        ruf=_uris(tags.get("ruf", "")),
        fo=tags.get("fo", "0"),
        rf=tags.get("rf", "afrf"),
        ri=ri,
        pInvalid=pInvalid,
    )


def _lookup(domain, txtLookup):
    """
    The DMARC records at C{_dmarc.domain}: a list of TXT strings that begin
    like a DMARC record.
    @raise PolicyLookupError: a temporary DNS failure.
    """
    try:
        records = txtLookup(f"_dmarc.{domain}")
    except DNSError as e:
        if e.temporary:
            raise PolicyLookupError(e) from None
        return []  # NXDOMAIN: no record.
    # RFC 7489 §6.6.3 step 2: records not starting with v=DMARC1 are
    # discarded before counting.
    return [r for r in records if re.match(r"^v\s*=\s*DMARC1\s*(;|$)", r)]


def fetchPolicy(fromDomain: str, txtLookup) -> DMARCRecord | None:
    """
    RFC 7489 §6.6.3: the record at C{_dmarc.<From domain>}, else at
    C{_dmarc.<organisational domain>}.  No record, or more than one, means
    no policy.

    @return: the record (its C{domain} says where it was found), or C{None}.
    @raise PolicyLookupError: a temporary DNS failure (A-R C{temperror}).
    """
    domain = _clean(fromDomain)
    records = _lookup(domain, txtLookup)
    if not records:
        org = organisationalDomain(domain)
        if org != domain:
            domain = org
            records = _lookup(domain, txtLookup)
    if len(records) != 1:
        return None
    return parseRecord(records[0], domain)


# --- evaluation ------------------------------------------------------------

@dataclass(frozen=True)
class DMARCResult:
    """
    The DMARC verdict on one message.

    @ivar result: C{pass}, C{fail}, C{none} (no policy), C{temperror} or
        C{permerror} (no usable From domain) -- A-R C{dmarc=}.
    @ivar policy: the policy the domain owner asks for this From domain
        (C{sp} for a subdomain when the organisational domain's record
        applies), before C{pct} sampling: C{none}, C{quarantine} or
        C{reject}; C{none} when there is no policy.
    @ivar disposition: what to do with this message: C{none} unless the
        result is C{fail}, then C{policy} after C{pct} sampling (RFC 7489
        §6.6.4).  The caller acts on this one.
    @ivar fromDomain: the RFC5322.From domain (A-R C{header.from}), or
        C{None}.
    @ivar reason: short text for the A-R comment (no parentheses).
    @ivar record: the policy record used, or C{None}.
    @ivar spfAligned, dkimAligned: which identifiers aligned.
    """

    result: str
    policy: str
    disposition: str
    fromDomain: str | None
    reason: str
    record: DMARCRecord | None = field(default=None, repr=False)
    spfAligned: bool = False
    dkimAligned: bool = False


def _policyFor(record, fromDomain):
    # RFC 7489 §6.3 "sp": subdomains of the organisational domain, when the
    # organisational domain's record applies (found by the fallback).
    if record.sp is not None and record.domain != fromDomain:
        return record.sp
    return record.p


def _sampled(policy, pct, random):
    """
    RFC 7489 §6.6.4: a message outside the C{pct} sample gets the next
    policy down (reject -> quarantine, quarantine -> none).
    """
    if policy == "none" or pct >= 100:
        return policy
    if random() < pct / 100.0:
        return policy
    return {"reject": "quarantine", "quarantine": "none"}[policy]


def evaluate(fromDomain: str | None, spfResult: str, spfDomain: str | None,
             dkimResults, txtLookup, random=randomModule.random) -> DMARCResult:
    """
    RFC 7489 §6.6: the DMARC result and what to do with the message.

    @param fromDomain: from L{fromDomain}; C{None} gives C{permerror}.
    @param spfResult: the SPF result (C{"pass"}, ...) of the MAIL FROM
        identity, which for a null reverse-path is the HELO identity
        (RFC 7489 §4.1 via RFC 7208 §2.4).
    @param spfDomain: the domain that SPF result is for.
    @param dkimResults: objects with C{.result} and C{.domain} (the
        L{pymailer.policy.dkim.DKIMResult} list).
    @param random: C{() -> float} in [0, 1) for C{pct} sampling.
    """
    if not fromDomain:
        return DMARCResult("permerror", "none", "none", None,
                           "no single From domain to evaluate")
    fromDomain = _clean(fromDomain)
    try:
        record = fetchPolicy(fromDomain, txtLookup)
    except PolicyLookupError as e:
        return DMARCResult("temperror", "none", "none", fromDomain,
                           _reason(f"policy lookup: {e.error.reason}"))
    if record is None:
        return DMARCResult("none", "none", "none", fromDomain, "no policy published")
    policy = _policyFor(record, fromDomain)
    spfOk = spfResult == "pass" and aligned(spfDomain, fromDomain, record.aspf)
    dkimOk = any(r.result == "pass" and aligned(r.domain, fromDomain, record.adkim)
                 for r in dkimResults)
    common = dict(policy=policy, fromDomain=fromDomain, record=record,
                  spfAligned=spfOk, dkimAligned=dkimOk)
    if spfOk or dkimOk:
        how = " and ".join(n for n, ok in (("SPF", spfOk), ("DKIM", dkimOk)) if ok)
        return DMARCResult("pass", disposition="none",
                           reason=f"aligned {how} pass", **common)
    disposition = _sampled(policy, record.pct, random)
    reason = "no aligned SPF or DKIM pass"
    if disposition != policy:
        reason += f"; outside pct={record.pct} sample"
    return DMARCResult("fail", disposition=disposition, reason=reason, **common)


# --- the From domain -------------------------------------------------------

# The longest From field parsed, unfolded: one address with a long
# encoded display name is well under 1 KiB; 8 KiB are parsed in 0.05 s.
MAX_FROM_FIELD = 8 * 1024

def _headerFields(headerBytes):
    """C{[(name, unfolded value)]} of a header section (or whole message)."""
    end = re.search(rb"\r?\n\r?\n", headerBytes)
    if end is not None:
        headerBytes = headerBytes[:end.start()]
    fields = []
    for line in re.split(rb"\r?\n", headerBytes):
        if line[:1] in (b" ", b"\t") and fields:
            # Joined once below: adding each line to the value copied it
            # again (a field folded 100,000 times took seconds).
            fields[-1][1].append(line.strip())
        else:
            name, sep, value = line.partition(b":")
            if sep:
                fields.append((name.strip(), [value.strip()]))
    return [(name, b" ".join(parts)) for name, parts in fields]


def fromDomain(headerBytes: bytes) -> tuple[str | None, str]:
    """
    RFC 7489 §6.6.1: the RFC5322.From domain of a message.

    @param headerBytes: the header section (or the whole message).
    @return: C{(domain, "")} -- lower case, A-label form -- or
        C{(None, reason)} when there is not exactly one From field with
        exactly one address with a DNS domain (the caller may reject, as
        RFC 7489 §6.6.1 allows, or evaluate as C{permerror}).
    """
    values = [v for n, v in _headerFields(headerBytes) if n.lower() == b"from"]
    if not values:
        return None, "no From header field"
    if len(values) > 1:
        return None, "several From header fields"
    if len(values[0]) > MAX_FROM_FIELD:
        # Not parsed: the email package's address parser takes time growing
        # with the square of the field (a minute for 256 KiB of addresses).
        return None, "From header field too long"
    text = values[0].decode("utf-8", "replace")
    try:
        header = email.policy.default.header_factory("From", text)
        addresses = header.addresses
    except (email.errors.HeaderParseError, ValueError, IndexError, TypeError):
        return None, "From header field does not parse"
    if len(addresses) != 1:
        return None, ("From header field has no address" if not addresses
                      else "From header field has several addresses")
    domain = _clean(addresses[0].domain or "")
    if not domain or domain.startswith("[") or "." not in domain:
        return None, "From address has no domain name"
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None, "From domain is not a valid domain name"
    if not re.match(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)+$", domain):
        return None, "From domain is not a valid domain name"
    return domain, ""
