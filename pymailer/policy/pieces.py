"""
Our email-authentication pieces on the message's path: SPF, DKIM (verify
inbound, sign submitted), ARC and DMARC.  Each wraps the standard's module
(L{spf}, L{dkim}, L{arc}, L{dmarc}), which knows nothing of SMTP, and
records its RFC 8601 result in C{facts.authResults} (the chain writes the
Authentication-Results header) and its full result in C{facts.notes} for
the pieces after it: DMARC reads SPF's and DKIM's.

Mail from an authenticated user (submission) is not judged: it is ours,
and DKIM signs it instead.  Crypto and the DNS those libraries do run in the
resolver's thread pool, never on the reactor.

DKIM streams over the spooled message once (L{dkim.signFile},
L{dkim.verifyFile}), so every size the server accepts is signed and
verified in bounded memory.  ARC still works on the whole message in
memory (dkimpy, a few copies of it), so a message over L{MAX_CRYPTO_SIZE}
is not ARC-verified: its arc result says so (RFC 8601 "policy").
"""

from twisted.internet import defer
from twisted.plugin import IPlugin
from zope.interface import implementer

from pymailer.interfaces import IPolicyFactory
from pymailer.policy import arc, dkim, dkimkeys, dmarc, spf
from pymailer.policy.decision import AuthResult, Decision, Policy
from pymailer.threadpool import deferToPool


MAX_CRYPTO_SIZE = 16 * 1024 * 1024
TOO_LARGE = "message too large to verify"
# What DMARC and the signer read to find the From field.
HEADER_LIMIT = 256 * 1024


class _Piece(Policy):
    def __init__(self, context, options=None):
        self.context = context
        self.options = options or {}
        self.txtLookup = dkim.txtLookupFromResolver(context.resolver)

    def inThread(self, f, *args):
        pool = getattr(self.context.resolver, "threadpool", None) or self.context.threadpool
        return deferToPool(self.context.reactor, pool, f, *args)

    def withMessage(self, facts, message, f, *args):
        """
        C{f(data, *args)} in a thread, C{data} the whole message, read
        once per transaction: in the same thread call if it is the first
        (one hand-off, not two).
        """
        if "message" in facts.notes:
            return self.inThread(f, facts.notes["message"], *args)

        def readThenCall():
            with message.openData() as opened:
                data = opened.read()
            return data, f(data, *args)

        def kept(readAndResult):
            data, result = readAndResult
            facts.notes.setdefault("message", data)
            return result

        return self.inThread(readThenCall).addCallback(kept)

    def headerBytes(self, facts, message):
        """The header section (at most 256 KiB of it): DMARC needs no body."""
        return self._read(facts, message, HEADER_LIMIT)

    def _read(self, facts, message, limit):
        if "message" in facts.notes:
            return defer.succeed(facts.notes["message"])

        def read():
            with message.openData() as f:
                return f.read(limit)

        return self.inThread(read)


class SPFCheck(_Piece):
    name = "spf"

    @defer.inlineCallbacks
    def checkData(self, facts, message):
        if facts.authenticatedAs is not None:
            return Decision.accept()
        result = yield spf.evaluate(
            self.context.resolver, facts.clientAddress, facts.sender, facts.helo,
            receivingHost=self.context.config.hostname, clock=self.context.reactor)
        facts.notes["spf"] = result
        facts.authResults.append(AuthResult(
            "spf", result.result, result.reason, (result.authResultsProperty,)))
        return Decision.accept()


class DKIMCheck(_Piece):
    """Verifies every signature of inbound mail; signs what users submit."""

    name = "dkim"

    @defer.inlineCallbacks
    def checkData(self, facts, message):
        if facts.authenticatedAs is not None:
            headers = yield self.inThread(self._sign, message)
            return Decision.addHeaders([headers], "dkim.signed") if headers else None
        results = yield self.inThread(self._verify, message)
        facts.notes["dkim"] = results
        if not results:
            facts.authResults.append(AuthResult("dkim", "none", "message not signed"))
        for r in results:
            properties = [("header.d", r.domain), ("header.s", r.selector),
                          ("header.b", r.headerB)]
            facts.authResults.append(AuthResult(
                "dkim", r.result, r.reason, tuple((k, v) for k, v in properties if v)))
        return Decision.accept()

    def _verify(self, message):
        with message.openData() as f:
            return dkim.verifyFile(f, self.txtLookup)

    def _sign(self, message):
        with message.openData() as f:
            domain, _ = dmarc.fromDomain(f.read(HEADER_LIMIT))
            if domain is None:
                return b""
            keys = dkimkeys.signingKeys(self.context.config, domain)
            if not keys:
                return b""
            f.seek(0)
            return dkim.signFile(f, domain, keys)


class ARCCheck(_Piece):
    name = "arc"

    @defer.inlineCallbacks
    def checkData(self, facts, message):
        if facts.authenticatedAs is not None:
            return Decision.accept()
        if facts.size > MAX_CRYPTO_SIZE:
            facts.authResults.append(AuthResult("arc", "policy", TOO_LARGE))
            return Decision.accept("arc.toolarge")
        result = yield self.withMessage(facts, message, arc.verifyChain, self.txtLookup)
        facts.notes["arc"] = result
        facts.authResults.append(AuthResult("arc", result.result, result.reason))
        return Decision.accept()


class DMARCCheck(_Piece):
    """
    RFC 7489 §6.6: reject or quarantine what the From domain's owner asks
    for.  C{mark_only_domains}: local domains whose recipients get the
    message in their INBOX, marked, whatever the policy.
    """

    name = "dmarc"

    @defer.inlineCallbacks
    def checkData(self, facts, message):
        if facts.authenticatedAs is not None:
            return Decision.accept()
        data = yield self.headerBytes(facts, message)
        spfResult = facts.notes.get("spf")
        result = yield self.inThread(
            self._evaluate, data, spfResult.result if spfResult else "none",
            spfResult.domain if spfResult else None, facts.notes.get("dkim", ()))
        facts.notes["dmarc"] = result
        properties = (("header.from", result.fromDomain),) if result.fromDomain else ()
        facts.authResults.append(AuthResult("dmarc", result.result, result.reason, properties))
        if result.disposition == "none":
            return Decision.accept()
        markOnly = set(self.options.get("mark_only_domains", ()))
        enforced = [r for r in facts.recipients if r.rpartition("@")[2].lower() not in markOnly]
        if not enforced:
            return Decision.accept("dmarc.marked")
        if result.disposition == "reject" and len(enforced) == len(facts.recipients):
            return Decision.reject(
                550, "5.7.1",
                f"Message rejected: {result.fromDomain} asks receivers to reject mail "
                "that fails its DMARC policy (no aligned SPF or DKIM pass)",
                "dmarc.reject")
        # Quarantine, or reject where some recipients only mark: Junk.
        return Decision.fileInto("Junk", f"dmarc.{result.disposition}", enforced)

    def _evaluate(self, data, spfResult, spfDomain, dkimResults):
        fromDomain, _ = dmarc.fromDomain(data)
        return dmarc.evaluate(fromDomain, spfResult, spfDomain, dkimResults, self.txtLookup)


@implementer(IPlugin, IPolicyFactory)
class _Factory:
    def __init__(self, name, piece):
        self.name = name
        self.piece = piece

    def build(self, context, options):
        return self.piece(context, options)


def SPFFactory():
    return _Factory("spf", SPFCheck)


def DKIMFactory():
    return _Factory("dkim", DKIMCheck)


def ARCFactory():
    return _Factory("arc", ARCCheck)


def DMARCFactory():
    return _Factory("dmarc", DMARCCheck)
