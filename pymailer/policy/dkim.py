"""
DKIM (RFC 6376): verify every signature of a received message; sign what
our users submit (rsa-sha256, and ed25519-sha256 per RFC 8463).

dkimpy does the cryptography and canonicalisation.  We fetch the keys
ourselves through the C{txtLookup} function the caller passes in (the
server's one resolver), so that a DNS failure is told apart from a missing
key (dkimpy folds both, and a bad key, into "False"): C{temperror} versus
C{permerror} in Authentication-Results (RFC 8601 §2.7.1).

C{txtLookup(name) -> list[str]}: one string per TXT record at C{name}, the
record's character-strings joined without separators (RFC 6376 §3.6.2.2);
C{[]} when the name has no TXT records; raises L{pymailer.dns.DNSError}
(C{temporary} set for timeouts and server failures, not for NXDOMAIN).

Everything here is blocking and reactor-free: the server runs it in a
thread pool.

What it trusts: nothing in the message.  Signatures are counted and capped
(L{MAX_SIGNATURES}, RFC 6376 §6.1 lets verifiers limit the work an attacker
can cause), keys must be at least 1024 bits (RFC 8301 §3.2) and rsa-sha1 is
not accepted (RFC 8301 §3.1).  DNS answers are parsed by dkimpy's key
parser; a key that does not parse is a C{permerror}.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from pymailer.dns import DNSError
from pymailer.policy.dkimkeys import dnsDomain

__all__ = [
    "DKIMResult",
    "MAX_SIGNATURES",
    "SIGNED_HEADERS",
    "verifyAll",
    "sign",
    "dkimpyDNS",
    "txtLookupFromResolver",
]

# Signatures beyond this many are not evaluated (nor reported).
MAX_SIGNATURES = 10

# Header fields we sign when present, each instance (RFC 6376 §5.4.1's
# list, trimmed to what a submitted message carries).  From is signed once
# more than it occurs ("over-signed", RFC 6376 §8.15) so that a second From
# added on the way breaks the signature.
SIGNED_HEADERS = (
    "from", "to", "cc", "subject", "date", "message-id", "reply-to",
    "mime-version", "content-type", "content-transfer-encoding",
    "in-reply-to", "references",
)
_OVERSIGNED = ("from",)

MIN_KEY_BITS = 1024


@dataclass(frozen=True)
class DKIMResult:
    """
    The outcome of one DKIM-Signature, for Authentication-Results (RFC 8601
    §2.7.1) and DMARC.

    @ivar result: C{pass}, C{fail}, C{neutral}, C{temperror}, C{permerror}
        or C{policy}.
    @ivar domain: C{d=} (header.d), or C{None} if the signature had none
        or one that is not a DNS name.
    @ivar selector: C{s=} (header.s), or C{None} (likewise).
    @ivar algorithm: C{a=} (header.a), e.g. C{"rsa-sha256"}, or C{None}.
    @ivar reason: short text for the A-R comment, e.g. C{"body hash did
        not verify"}; one line, no parentheses or backslashes.
    @ivar identity: C{i=} (header.i) as the signer wrote it (it may need
        quoting in A-R), or C{None}.
    @ivar headerB: the first 8 characters of C{b=} (header.b, RFC 6008),
        which tell apart signatures of one domain, or C{None}.
    """

    result: str
    domain: str | None
    selector: str | None
    algorithm: str | None
    reason: str
    identity: str | None = None
    headerB: str | None = None


class _TemporaryDNSError(Exception):
    """
    Raised out of our dkimpy DNS hook: deliberately not a
    C{dkim.DKIMException}, so dkimpy lets it through to us instead of
    turning it into "signature did not verify".
    """

    def __init__(self, error):
        Exception.__init__(self, str(error))
        self.error = error


def _text(value):
    if value is None:
        return None
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_ALGORITHM = re.compile(r"^[A-Za-z0-9-]+$")


def _name(value, pattern=_NAME):
    """A tag value fit for A-R's header.d/header.s/header.a, else None."""
    text = _text(value)
    return text if text and len(text) <= 253 and pattern.match(text) else None


def _reason(text):
    """
    Short, one-line reason text without parentheses or backslashes, safe
    inside an Authentication-Results comment (RFC 8601 §2.2).
    """
    text = " ".join(_text(text).split())
    text = "".join(c for c in text if c.isprintable() and c not in "()\\")
    return text if len(text) <= 100 else text[:97] + "..."


def _selectKey(records):
    """
    The key record among the TXT records at a selector's name.

    @return: C{(record, None)} or C{(None, reason)}.
    """
    keys = []
    for record in records:
        try:
            dkim.evaluate_pk(b"", record.encode("ascii"))
        except (dkim.DKIMException, binascii.Error, UnicodeError, ValueError, IndexError):
            continue
        keys.append(record)
    if len(keys) == 1:
        return keys[0], None
    if keys:
        # RFC 6376 §3.6.2.2: several records give undefined results; we
        # refuse rather than pick one at random (DNS order varies).
        return None, "several key records"
    if not records:
        return None, "no key for signature"
    if len(records) == 1:
        try:
            tags = parse_tag_value(records[0].encode("ascii"))
        except (InvalidTagValueList, UnicodeError):
            tags = {}
        # RFC 6376 §3.6.1: an empty p= means the key was revoked.
        if tags.get(b"p", None) == b"":
            return None, "key revoked"
    return None, "key record does not parse"


def dkimpyDNS(txtLookup):
    """
    Adapt C{txtLookup} to dkimpy's C{dnsfunc(name, timeout=5)} hook, which
    must return the key record as C{bytes} (several character-strings
    already joined), or C{None} for no key.

    A temporary DNS error raises an exception that is not a
    C{dkim.DKIMException}, so it escapes dkimpy's C{verify} and
    C{arc_verify} to the caller (dkimpy would otherwise report the
    signature as invalid).  Used for ARC; DKIM fetches keys itself.
    """
    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        try:
            records = txtLookup(name)
        except DNSError as e:
            if e.temporary:
                raise _TemporaryDNSError(e) from None
            return None  # NXDOMAIN: no key.
        record, _ = _selectKey(records)
        return None if record is None else record.encode("ascii")
    return dnsfunc


def txtLookupFromResolver(resolver):
    """
    The C{txtLookup} these modules take, from the server's
    L{pymailer.dns.Resolver} (its blocking lookup: call the result in a
    thread, never in the reactor).  Each TXT record's character-strings are
    joined without separators (RFC 6376 §3.6.2.2, RFC 7208 §3.3) and decoded
    as UTF-8 (invalid bytes replaced: they can only make a record unusable).
    """
    def txtLookup(name):
        return [b"".join(rdata.strings).decode("utf-8", "replace")
                for rdata in resolver.lookupBlocking(name, "TXT")]
    return txtLookup


def _headerSection(message):
    end = re.search(rb"\r?\n\r?\n", message)
    return message if end is None else message[:end.start()]


def _countSignatures(message):
    """Signatures in a header dkimpy cannot parse: count lines by name."""
    return len(re.findall(rb"(?im)^dkim-signature[ \t]*:", _headerSection(message)))


def _verifyOne(d, idx, txtLookup):
    """One signature -> L{DKIMResult}."""
    # Parse the signature's tags (RFC 6376 §6.1.1).  dkimpy's own checks
    # raise ValidationError/MessageFormatError for syntax problems: RFC 8601
    # §2.7.1 calls that "neutral".
    try:
        prep = d.verify_headerprep(idx)
    except (dkim.DKIMException, InvalidTagValueList) as e:
        sig = {}
        try:
            sig = parse_tag_value(
                [v for k, v in d.headers if k.lower() == b"dkim-signature"][idx])
        except Exception:
            pass
        return DKIMResult("neutral", _name(sig.get(b"d")), _name(sig.get(b"s")),
                          _name(sig.get(b"a"), _ALGORITHM),
                          _reason(f"signature syntax: {e}"))
    sig, includeHeaders, sigHeaders = prep
    b = re.sub(rb"\s+", b"", sig[b"b"])
    facts = dict(domain=_name(sig[b"d"]), selector=_name(sig[b"s"]),
                 algorithm=_name(sig[b"a"], _ALGORITHM),
                 identity=_text(sig.get(b"i")), headerB=_text(b[:8]))

    def result(code, reason):
        return DKIMResult(code, reason=_reason(reason), **facts)

    if facts["domain"] is None or facts["selector"] is None:
        # Not DNS names: nothing to look up (and nothing safe to report).
        return result("neutral", "signature syntax: invalid d= or s=")

    if sig[b"a"] == b"rsa-sha1":
        # RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1 valid.
        return result("policy", "rsa-sha1 is not accepted (RFC 8301)")
    if b"from" not in includeHeaders:
        # RFC 6376 §6.1.1: From not signed -> PERMFAIL.
        return result("permerror", "From header not signed")

    name = f"{facts['selector']}._domainkey.{facts['domain']}"
    try:
        records = txtLookup(name)
    except DNSError as e:
        if e.temporary:
            return result("temperror", f"key lookup: {e.reason}")
        records = []  # NXDOMAIN (RFC 6376 §6.1.2: no key for signature).
    record, problem = _selectKey(records)
    if record is None:
        return result("permerror", problem)

    def dnsfunc(name, timeout=5):
        return record.encode("ascii")

    try:
        ok = d.verify_sig(sig, includeHeaders, sigHeaders[idx], dnsfunc)
    except dkim.ValidationError as e:
        if str(e).startswith("body hash mismatch"):
            return result("fail", "body hash did not verify")
        # E.g. a key for another service (RFC 6376 §3.6.1 s=).
        return result("permerror", str(e))
    except dkim.KeyFormatError as e:
        if "too small" in str(e):
            # RFC 8301 §3.2: keys under 1024 bits MUST NOT be accepted.
            return result("policy", f"key shorter than {MIN_KEY_BITS} bits")
        return result("permerror", f"unusable key: {e}")
    except dkim.MessageFormatError as e:
        return result("neutral", f"signature syntax: {e}")
    except dkim.DKIMException as e:
        return result("permerror", str(e))
    if ok:
        return result("pass", "signature verified")
    return result("fail", "signature did not verify")


def verifyAll(message: bytes, txtLookup) -> list[DKIMResult]:
    """
    Verify every DKIM-Signature of C{message} (up to L{MAX_SIGNATURES}),
    topmost first.  Blocking (DNS, RSA).

    @param message: the whole message, CRLF or LF line endings.
    @param txtLookup: see the module docstring.
    @return: one L{DKIMResult} per signature; C{[]} when the message is not
        signed (A-R C{dkim=none}).
    """
    if not _countSignatures(message):
        # Most mail: no signature, and no need for dkimpy to parse it.
        return []
    try:
        d = dkim.DKIM(message, minkey=MIN_KEY_BITS)
    except (dkim.DKIMException, IndexError) as e:
        # A header dkimpy cannot split into fields (e.g. a first line that
        # is a continuation): report each signature line as unverifiable.
        reason = _reason(f"message header does not parse: {e}")
        return [DKIMResult("neutral", None, None, None, reason)
                for _ in range(min(_countSignatures(message), MAX_SIGNATURES))]
    count = sum(1 for k, v in d.headers if k.lower() == b"dkim-signature")
    return [_verifyOne(d, idx, txtLookup)
            for idx in range(min(count, MAX_SIGNATURES))]


def sign(message: bytes, domain: str, keys) -> bytes:
    """
    DKIM-Signature header fields for C{message}, one per key, to prepend to
    it: relaxed/relaxed canonicalisation (survives the header re-folding
    and whitespace changes of relays), the present fields of
    L{SIGNED_HEADERS}, From over-signed.  Blocking (RSA).

    @param domain: C{d=}; any spelling (converted to lower-case A-labels,
        RFC 6376 §3.5).
    @param keys: C{(selector, algorithm, privateKey)} tuples, e.g. from
        L{dkimkeys.loadSigningKeys}; signatures come out in the same order
        (RSA first, then Ed25519, as loadSigningKeys sorts them).
    @return: the header lines, each ending in CRLF; C{b""} with no keys.
    @raise ValueError: the message has no From field (RFC 6376 §5.4: From
        MUST be signed), or a key is unusable.
    """
    out = []
    if keys:
        domain = dnsDomain(domain)
    for selector, algorithm, privateKey in keys:
        try:
            d = dkim.DKIM(message, signature_algorithm=algorithm.encode("ascii"),
                          linesep=b"\r\n")
        except (dkim.DKIMException, IndexError) as e:
            raise ValueError(f"cannot DKIM-sign: message header does not parse ({e})") from None
        d.should_sign = set(h.encode("ascii") for h in SIGNED_HEADERS)
        d.frozen_sign = set(h.encode("ascii") for h in _OVERSIGNED)
        include = d.default_sign_headers()
        if not any(h.lower() == b"from" for h in include):
            raise ValueError("message has no From header field: cannot DKIM-sign")
        try:
            header = d.sign(selector.encode("ascii"), domain.encode("ascii"),
                            privateKey, canonicalize=(b"relaxed", b"relaxed"),
                            include_headers=include)
        except dkim.DKIMException as e:
            raise ValueError(f"DKIM signing with {selector} ({algorithm}): {e}") from None
        if not header.endswith(b"\r\n"):
            header += b"\r\n"
        out.append(header)
    return b"".join(out)
