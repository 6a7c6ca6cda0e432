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

Messages are read from a file, once, in chunks: the body hash (RFC 6376
§3.7) is computed incrementally by L{BodyHasher}, and only the header
section is given to dkimpy (which would otherwise hold a few copies of
the whole message in memory).  So any size the server accepts is signed
and verified in bounded memory.

What it trusts: nothing in the message.  Signatures are counted and capped
(L{MAX_SIGNATURES}, RFC 6376 §6.1 lets verifiers limit the work an attacker
can cause), keys must be at least 1024 bits (RFC 8301 §3.2) and rsa-sha1 is
not accepted (RFC 8301 §3.1).  DNS answers are parsed by dkimpy's key
parser; a key that does not parse is a C{permerror}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import time
from dataclasses import dataclass

import dkim
import nacl.encoding
import nacl.exceptions
import nacl.signing
from dkim.canonicalization import (
    CanonicalizationPolicy, InvalidCanonicalizationPolicyError)
from dkim.crypto import HASH_ALGORITHMS, UnparsableKeyError, parse_pem_private_key
from dkim.util import InvalidTagValueList, parse_tag_value

from pymailer.dns import DNSError
from pymailer.policy.dkimkeys import dnsDomain

__all__ = [
    "BodyHasher",
    "DKIMResult",
    "MAX_SIGNATURES",
    "SIGNED_HEADERS",
    "verifyAll",
    "verifyFile",
    "sign",
    "signFile",
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

# The header section is parsed in memory; a bigger one is refused (no MUA
# writes a megabyte of header fields).
MAX_HEADER_SECTION = 1024 * 1024
# The body is read and hashed this much at a time.  The regular
# expressions below build a list of pieces of a chunk, up to ~25 times its
# size for a chunk of alternating tabs and letters: this keeps that small.
CHUNK_SIZE = 64 * 1024

_LINE_END = re.compile(rb"\r?\n")
# RFC 6376 §3.4.4: WSP at line ends removed, other runs of WSP become one
# SP.  Only the runs that change are matched: a single SP is left alone
# (dkimpy's compress_whitespace matches every one, ~3 MiB of pieces for a
# 256 KiB chunk of prose).
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP_RUN = re.compile(rb"[\t ]{2,}|\t")


class BodyHasher:
    """
    The DKIM body hash, fed the body in pieces of any size (RFC 6376 §3.7).

    The body canonicalisations (§3.4.3 simple, §3.4.4 relaxed) are line by
    line except for one rule: empty lines at the end of the body are
    ignored.  So complete lines are canonicalised and hashed as they come,
    a run of empty lines is held back as a count until a non-empty line
    follows it, and an unfinished line is hashed as it arrives too, but for
    its last few octets that the next piece may still change (L{_partial}).
    Each octet is looked at a bounded number of times, however long its
    line: a body with no line end at all costs what any other body of its
    size costs.  The result is byte for byte what dkimpy computes from the
    whole body (LF line ends read as CRLF, as dkimpy reads them).

    @ivar hashName: the hashlib name of the C{a=} algorithm's hash
        (L{_hashName}).
    @ivar length: C{l=}: hash only this many canonical octets (verifying a
        signature that has one), or C{None}.
    """

    def __init__(self, canonicalization=b"relaxed", hashName="sha256", length=None):
        if canonicalization not in (b"simple", b"relaxed"):
            raise ValueError(f"unknown body canonicalization {canonicalization!r}")
        self._relaxed = canonicalization == b"relaxed"
        self._hash = hashlib.new(hashName)
        self._left = length
        # The held-back end of the unfinished line: a pending CR (an LF
        # may follow) and, relaxed, the run of WSP before it, kept as one
        # SP (any run is removed before a line end, else becomes one SP).
        self._tail = b""
        # Part of the unfinished line is hashed already: it is not empty.
        self._midLine = False
        self._emptyLines = 0
        self._anyLine = False

    def update(self, data: bytes) -> None:
        # Only the new piece is searched and copied: prepending everything
        # since the last line end to each piece made hashing a body with
        # no line end quadratic (a minute of CPU for 50 MB).
        cut = data.rfind(b"\n") + 1
        if cut:
            lines = data[:cut]
            if self._midLine:
                # The rest of a line already (partly) hashed: not an empty
                # line, whatever is left of it.
                first = lines.find(b"\n") + 1
                self._feed(self._canonical(self._tail + lines[:first]))
                self._tail = b""
                self._midLine = False
                lines = lines[first:]
            if lines:
                self._lines(self._tail + lines)
                self._tail = b""
            data = data[cut:]
        self._partial(data)

    def _partial(self, data):
        """Hash what canonicalisation cannot change of the unfinished line
        that C{data} (no line end in it) adds to, hold back the rest."""
        data = self._tail + data
        end = len(data) - data.endswith(b"\r")
        keep = end
        if self._relaxed:
            keep = len(data[:end].rstrip(b" \t"))
        if keep:
            # What is kept ends in neither WSP nor CR, so what follows
            # canonicalises the same on its own.
            self._feed(b"\r\n" * self._emptyLines + self._canonical(data[:keep]))
            self._emptyLines = 0
            self._anyLine = True
            self._midLine = True
        self._tail = (b" " if keep < end else b"") + data[end:]

    def _canonical(self, lines):
        # Each rewrite only when a fast scan finds something to rewrite: a
        # large message is mostly base64 lines, which none of them changes.
        if lines.count(b"\n") != lines.count(b"\r\n"):
            lines = _LINE_END.sub(b"\r\n", lines)
        if self._relaxed:
            if b" \r\n" in lines or b"\t\r\n" in lines:
                lines = _TRAILING_WSP.sub(b"\r\n", lines)
            if b"\t" in lines or b"  " in lines:
                lines = _WSP_RUN.sub(b" ", lines)
        return lines

    def _lines(self, lines):
        lines = self._canonical(lines)
        # Split off the empty lines at the end of this piece.
        end = len(lines)
        while lines.endswith(b"\r\n\r\n", 0, end):
            end -= 2
        if end == 2 and lines.startswith(b"\r\n"):
            end = 0
        if end:
            self._feed(b"\r\n" * self._emptyLines + lines[:end])
            self._emptyLines = 0
            self._anyLine = True
        self._emptyLines += (len(lines) - end) // 2

    def _feed(self, data):
        if self._left is not None:
            data = data[:self._left]
            self._left -= len(data)
        self._hash.update(data)

    def digest(self) -> bytes:
        """The hash of the canonical body; call once, after the last update."""
        if self._tail or self._midLine:
            # An incomplete last line gets its CRLF (RFC 6376 §3.4.3).
            self._feed(b"\r\n" * self._emptyLines + self._canonical(self._tail) + b"\r\n")
        elif not self._anyLine and not self._relaxed:
            # §3.4.3: an empty body is a single CRLF in "simple"; §3.4.4:
            # nothing at all in "relaxed".
            self._feed(b"\r\n")
        return self._hash.digest()


def _hashName(algorithm: bytes) -> str:
    """The hashlib name of a signature algorithm's hash: rsa-sha256 and
    ed25519-sha256 share one body hash."""
    return HASH_ALGORITHMS[algorithm]().name


def _readHeaderSection(f):
    """
    The header section of the message open in C{f}, leaving C{f} at the
    first octet of the body.

    @raise ValueError: the header section is over L{MAX_HEADER_SECTION}.
    """
    lines = []
    size = 0
    while True:
        line = f.readline(MAX_HEADER_SECTION + 1 - size)
        if line in (b"", b"\r\n", b"\n"):
            return b"".join(lines)
        lines.append(line)
        size += len(line)
        if size > MAX_HEADER_SECTION:
            raise ValueError("header section over 1 MiB")


def _hashBody(f, hashers):
    """Feed the rest of C{f} to every hasher, one chunk in memory at a time."""
    while True:
        chunk = f.read(CHUNK_SIZE)
        if not chunk:
            return [h.digest() for h in hashers]
        for h in hashers:
            h.update(chunk)


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


def _countSignatures(header):
    """Signatures in a header dkimpy cannot parse: count lines by name."""
    return len(re.findall(rb"(?im)^dkim-signature[ \t]*:", header))


def _bodyHashOf(sig):
    """
    The key of the body hash C{sig} asks for: C{(c=body, hash, l=)}, or
    C{None} when the tags are unusable (dkimpy reports that itself).
    """
    try:
        canonicalization = CanonicalizationPolicy.from_c_value(
            sig.get(b"c", b"simple/simple")).body_algorithm.name
    except InvalidCanonicalizationPolicyError:
        return None
    length = int(sig[b"l"]) if b"l" in sig else None
    if sig.get(b"a") not in HASH_ALGORITHMS:
        return None
    return canonicalization, _hashName(sig[b"a"]), length


def _verifyOne(d, idx, txtLookup, bodyHashes):
    """One signature -> L{DKIMResult}; C{bodyHashes} from L{_bodyHashOf} keys."""
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

    # dkimpy was given the header section only: we compare the body hash we
    # streamed, and let it check the header hash and signature without bh=.
    headerOnly = {k: v for k, v in sig.items() if k != b"bh"}
    try:
        ok = d.verify_sig(headerOnly, includeHeaders, sigHeaders[idx], dnsfunc)
    except dkim.ValidationError as e:
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
    try:
        expected = base64.b64decode(re.sub(rb"\s+", b"", sig[b"bh"]))
    except binascii.Error:
        return result("neutral", "signature syntax: bh= is not base64")
    if bodyHashes.get(_bodyHashOf(sig)) != expected:
        return result("fail", "body hash did not verify")
    if ok:
        return result("pass", "signature verified")
    return result("fail", "signature did not verify")


def verifyAll(message: bytes, txtLookup) -> list[DKIMResult]:
    """L{verifyFile} for a message in memory."""
    return verifyFile(io.BytesIO(message), txtLookup)


def verifyFile(f, txtLookup) -> list[DKIMResult]:
    """
    Verify every DKIM-Signature of the message open in C{f} (up to
    L{MAX_SIGNATURES}), topmost first.  Blocking (file, DNS, RSA); reads
    C{f} once, in chunks.

    @param f: a binary file at the start of the message, CRLF or LF line
        endings.
    @param txtLookup: see the module docstring.
    @return: one L{DKIMResult} per signature; C{[]} when the message is not
        signed (A-R C{dkim=none}).
    """
    try:
        header = _readHeaderSection(f)
    except ValueError as e:
        return [DKIMResult("neutral", None, None, None, _reason(str(e)))]
    if not _countSignatures(header):
        # Most mail: no signature, and no need for dkimpy to parse it.
        return []
    try:
        d = dkim.DKIM(header + b"\r\n", minkey=MIN_KEY_BITS)
    except (dkim.DKIMException, IndexError) as e:
        # A header dkimpy cannot split into fields (e.g. a first line that
        # is a continuation): report each signature line as unverifiable.
        reason = _reason(f"message header does not parse: {e}")
        return [DKIMResult("neutral", None, None, None, reason)
                for _ in range(min(_countSignatures(header), MAX_SIGNATURES))]
    signatures = [v for k, v in d.headers if k.lower() == b"dkim-signature"][:MAX_SIGNATURES]
    wanted = set()
    for value in signatures:
        try:
            wanted.add(_bodyHashOf(parse_tag_value(value)))
        except (InvalidTagValueList, ValueError):
            pass  # Reported as a syntax problem by _verifyOne.
    wanted.discard(None)
    wanted = sorted(wanted, key=repr)  # Signatures sharing a body hash share its work.
    digests = _hashBody(f, [BodyHasher(*key) for key in wanted])
    bodyHashes = dict(zip(wanted, digests))
    return [_verifyOne(d, idx, txtLookup, bodyHashes) for idx in range(len(signatures))]


def sign(message: bytes, domain: str, keys) -> bytes:
    """L{signFile} for a message in memory."""
    return signFile(io.BytesIO(message), domain, keys)


def signFile(f, domain: str, keys) -> bytes:
    """
    DKIM-Signature header fields for the message open in C{f}, one per key,
    to prepend to it: relaxed/relaxed canonicalisation (survives the header
    re-folding and whitespace changes of relays), the present fields of
    L{SIGNED_HEADERS}, From over-signed.  Blocking (file, RSA); reads C{f}
    once, in chunks, so any size is signed in bounded memory.

    @param f: a binary file at the start of the message.
    @param domain: C{d=}; any spelling (converted to lower-case A-labels,
        RFC 6376 §3.5).
    @param keys: C{(selector, algorithm, privateKey)} tuples, e.g. from
        L{dkimkeys.loadSigningKeys}; signatures come out in the same order
        (RSA first, then Ed25519, as loadSigningKeys sorts them).
    @return: the header lines, each ending in CRLF; C{b""} with no keys.
    @raise ValueError: the message has no From field (RFC 6376 §5.4: From
        MUST be signed), its header does not parse, or a key is unusable.
    """
    if not keys:
        return b""
    domain = dnsDomain(domain).encode("ascii")
    header = _readHeaderSection(f)
    try:
        d = dkim.DKIM(header + b"\r\n", linesep=b"\r\n")
    except (dkim.DKIMException, IndexError) as e:
        raise ValueError(f"cannot DKIM-sign: message header does not parse ({e})") from None
    d.should_sign = set(h.encode("ascii") for h in SIGNED_HEADERS)
    d.frozen_sign = set(h.encode("ascii") for h in _OVERSIGNED)
    include = tuple(h.lower() for h in d.default_sign_headers())
    if b"from" not in include:
        raise ValueError("message has no From header field: cannot DKIM-sign")
    keys = [(selector.encode("ascii"), algorithm.encode("ascii"), privateKey)
            for selector, algorithm, privateKey in keys]
    names = sorted({_hashName(algorithm) for _, algorithm, _ in keys})
    bodyHashes = dict(zip(names, _hashBody(f, [BodyHasher(b"relaxed", n) for n in names])))
    return b"".join(
        _signatureField(d, include, selector, domain, algorithm, privateKey,
                        bodyHashes[_hashName(algorithm)])
        for selector, algorithm, privateKey in keys)


def _signatureField(d, include, selector, domain, algorithm, privateKey, bodyHash):
    """
    One DKIM-Signature field over the header section dkimpy holds in C{d}
    and our streamed C{bodyHash}: the tags C{dkim.DKIM.sign} writes, signed
    by dkimpy's own header hashing and folding (C{gen_header}).
    """
    try:
        if algorithm == b"ed25519-sha256":
            pk = nacl.signing.SigningKey(privateKey, encoder=nacl.encoding.Base64Encoder)
        else:
            pk = parse_pem_private_key(privateKey)
    except (UnparsableKeyError, nacl.exceptions.ValueError, binascii.Error, TypeError) as e:
        raise ValueError(f"DKIM signing with {selector.decode()} ({algorithm.decode()}): "
                         f"unusable key ({e})") from None
    d.signature_algorithm = algorithm
    d.hasher = HASH_ALGORITHMS[algorithm]
    fields = [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", selector),
        (b"t", str(int(time.time())).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", base64.b64encode(bodyHash)),
        # dkimpy's placeholder: b= folds onto its own line, so refolding
        # after the signature is added leaves the other tags alone.
        (b"b", b"0" * 60),
    ]
    try:
        value = d.gen_header(fields, include,
                             CanonicalizationPolicy.from_c_value(b"relaxed/relaxed"),
                             b"DKIM-Signature", pk)
    except dkim.DKIMException as e:
        raise ValueError(f"DKIM signing with {selector.decode()} ({algorithm.decode()}): "
                         f"{e}") from None
    header = b"DKIM-Signature: " + value
    return header if header.endswith(b"\r\n") else header + b"\r\n"
