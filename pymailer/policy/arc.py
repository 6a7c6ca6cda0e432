"""
ARC (RFC 8617): verify the chain of custody on received mail; seal mail we
forward to another domain, so that the next hop can see our
authentication results although forwarding broke SPF (and maybe DKIM).

dkimpy does the work (C{arc_verify}, C{arc_sign}; the latter needs the
C{authres} package to read Authentication-Results).  ARC seals with
rsa-sha256 only (dkimpy's ARC knows no other algorithm; RFC 8463's Ed25519
is defined for DKIM), so sealing takes an RSA key.

C{txtLookup(name) -> list[str]} as in L{pymailer.policy.dkim}: strings of a
record joined, C{[]} for no record, L{pymailer.dns.DNSError} (C{temporary}
set for timeouts and server failures) on failure.

Blocking and reactor-free: the server calls it in a thread pool.

What it trusts: nothing in the message; a chain is "pass" only when dkimpy
verified every ARC-Seal and the newest ARC-Message-Signature against keys
in DNS.  What a passing chain's earlier hops claimed (their
ARC-Authentication-Results) is only as trustworthy as those hops: the
caller decides which sealers it believes (RFC 8617 leaves that to the
receiver's local policy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dkim

from pymailer.policy.dkim import _headerSection, _reason, _TemporaryDNSError, dkimpyDNS
from pymailer.policy.dkimkeys import dnsDomain

__all__ = ["ARCResult", "verifyChain", "seal", "SEALED_HEADERS"]

# Header fields the ARC-Message-Signature covers when present (as for
# DKIM signing; RFC 8617 §4.1.2 lets the sealer choose, excluding ARC and
# Authentication-Results fields).
SEALED_HEADERS = (
    "from", "to", "cc", "subject", "date", "message-id", "reply-to",
    "mime-version", "content-type", "content-transfer-encoding",
    "in-reply-to", "references", "dkim-signature",
)

MIN_KEY_BITS = 1024


@dataclass(frozen=True)
class ARCResult:
    """
    The ARC chain validation status (RFC 8617 §5.2) for A-R C{arc=}.

    @ivar result: C{none} (no ARC sets), C{pass} or C{fail}.
    @ivar reason: short text for the A-R comment (no parentheses).
    @ivar instances: how many ARC sets the message carries (highest C{i=}).
    @ivar temporary: C{fail} because a key could not be fetched for now (a
        DNS timeout or server failure); a later attempt may pass.  The
        caller may tempfail instead of recording C{fail}.
    @ivar domains: the sealing domains, newest first (C{d=} of each
        ARC-Seal verified), for the A-R comment or a trust list.
    """

    result: str
    reason: str
    instances: int = 0
    temporary: bool = False
    domains: tuple = ()


def verifyChain(message: bytes, txtLookup) -> ARCResult:
    """
    Validate the ARC chain of C{message} (RFC 8617 §5.2).  Blocking.

    A chain whose newest seal says C{cv=fail} is "fail" here (dkimpy calls
    it terminated; RFC 8617 §5.2 step 2 makes it fail).
    """
    if not re.search(rb"(?im)^arc-seal[ \t]*:", _headerSection(message)):
        # Most mail: no ARC set, and no need for dkimpy to parse it.
        return ARCResult("none", "no ARC sets")
    try:
        cv, results, reason = dkim.arc_verify(
            message, dnsfunc=dkimpyDNS(txtLookup), minkey=MIN_KEY_BITS)
    except _TemporaryDNSError as e:
        return ARCResult("fail", _reason(f"key lookup: {e.error.reason}"),
                         temporary=True)
    except (dkim.DKIMException, IndexError) as e:
        # arc_verify catches its own errors; this is a header it cannot
        # even split into fields.
        return ARCResult("fail", _reason(f"message does not parse: {e}"))
    instances = max((r.get("instance", 0) for r in results), default=0)
    domains = tuple(r["as-domain"].decode("ascii", "replace")
                    for r in results if "as-domain" in r)
    if cv == dkim.CV_None:
        return ARCResult("none", "no ARC sets")
    if cv == dkim.CV_Pass:
        return ARCResult("pass", f"chain of {instances} verified",
                         instances=instances, domains=domains)
    return ARCResult("fail", _reason(reason), instances=instances, domains=domains)


def seal(message: bytes, domain: str, selector: str, privateKey: bytes,
         authservId: str, timestamp: int | None = None) -> bytes:
    """
    The next ARC set for C{message}: ARC-Seal, ARC-Message-Signature and
    ARC-Authentication-Results header lines (CRLF-ended), to prepend.
    Blocking (RSA).

    The message MUST already carry our Authentication-Results header field,
    spelled exactly C{Authentication-Results} and with authserv-id
    C{authservId}: its results become the ARC-Authentication-Results, and
    its C{arc=} result (from L{verifyChain}) becomes the seal's C{cv=}
    (RFC 8617 §4.1.3, §5.1.1).  So the caller prepends our A-R header
    first, including C{arc=pass|fail|none}, then seals.  For a message
    with no ARC sets, C{arc=none} or no C{arc=} at all gives C{cv=none}.

    @param domain: C{d=}; any spelling (converted to lower-case A-labels).
    @param privateKey: an RSA key as PKCS#1 PEM (the form
        L{pymailer.policy.dkimkeys.loadSigningKeys} gives for rsa-sha256).
    @raise ValueError: no usable Authentication-Results header field, a
        chain dkimpy will not extend (more than 50 sets, or an existing
        chain without an C{arc=} result), or an unusable key.
    """
    include = _present(message)
    domain = dnsDomain(domain)
    try:
        a = dkim.ARC(message, signature_algorithm=b"rsa-sha256", linesep=b"\r\n")
        # dkimpy refuses to sign DKIM-Signature fields by default (a DKIM
        # signer must not); an AMS should cover them, so the next hop can
        # tell which signatures we saw (RFC 8617 §4.1.2).
        a.should_not_sign.discard(b"dkim-signature")
        headers = a.sign(selector.encode("ascii"), domain.encode("ascii"),
                         privateKey, authservId.encode("ascii"),
                         include_headers=include, timestamp=timestamp)
    except (dkim.DKIMException, IndexError) as e:
        raise ValueError(f"ARC sealing: {e}") from None
    if not headers:
        raise ValueError(
            "ARC sealing: no Authentication-Results header field with"
            f" authserv-id {authservId!r} (or an existing chain without an"
            " arc= result in it)")
    return b"".join(h if h.endswith(b"\r\n") else h + b"\r\n" for h in headers)


def _present(message):
    """The header names of L{SEALED_HEADERS} present in C{message}."""
    try:
        headers, _ = dkim.rfc822_parse(message)
    except (dkim.DKIMException, IndexError) as e:
        raise ValueError(f"ARC sealing: message header does not parse ({e})") from None
    wanted = set(SEALED_HEADERS)
    include = [name.lower() for name, _ in headers
               if name.lower().decode("ascii", "replace") in wanted]
    if b"from" not in include:
        raise ValueError("ARC sealing: message has no From header field")
    # Over-sign From, as for DKIM (RFC 6376 §8.15).
    return include + [b"from"]
