"""
Test doubles shipped with pymailer, so that tests of the SMTP protocol (ours
and plugin authors') wire the real server to an in-memory intake.

The fakes use the real L{Router}, so what they accept is what the server
accepts; only the disk is replaced.
"""

from twisted.cred.checkers import (
    AllowAnonymousAccess,
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from pymailer.auth.directory import normaliseAddress, normaliseDomain
from pymailer.auth.realm import MailRealm
from pymailer.delivery.router import Router
from pymailer.intake import MessageIntake
from pymailer.interfaces import IAccountDirectory, IDeliveryAgent, IIncomingMessage


@implementer(IAccountDirectory)
class MemoryDirectory:
    """The lookup half of L{IAccountDirectory}, in memory."""

    def __init__(self, domains=(), users=(), aliases=None, catchAll=None):
        self.domains = {normaliseDomain(d) for d in domains}
        self.users = {normaliseAddress(u) for u in users}
        self.aliases = {
            normaliseAddress(a): tuple(t) for a, t in (aliases or {}).items()
        }
        self.catchAlls = dict(catchAll or {})

    def hasDomain(self, domain):
        return domain in self.domains

    def hasUser(self, address):
        return address in self.users

    def aliasTargets(self, address):
        return self.aliases.get(address, ())

    def catchAll(self, domain):
        return self.catchAlls.get(domain)

    def passwordHash(self, address):
        return None


@implementer(IIncomingMessage)
class MemoryMessage:
    def __init__(self, intake, queueId):
        self.intake = intake
        self.queueId = queueId
        self.chunks = []
        self.aborted = False

    def write(self, data):
        self.chunks.append(data)
        return defer.succeed(None)

    def commit(self, envelope):
        if self.intake.commitError is not None:
            return defer.fail(self.intake.commitError)
        self.intake.committed.append((envelope, b"".join(self.chunks)))
        return defer.succeed(None)

    def abort(self):
        self.aborted = True
        return defer.succeed(None)


class MemoryIntake(MessageIntake):
    """
    L{MessageIntake} with the disk replaced by memory and the thread pool by
    direct calls.

    @ivar committed: C{[(envelope, bytes)]} of accepted messages.
    @ivar hold: when true, recipient checks return Deferreds kept in
        C{held} for the test to fire (a slow check).
    @ivar commitError: an exception to fail commits with (a full disk).
    @ivar capacityError: an exception to fail capacity checks with.
    """

    def __init__(self, directory, user=None, relayAvailable=False):
        MessageIntake.__init__(
            self, Router(directory), spool=None, reactor=None,
            threadpool=None, user=user, relayAvailable=relayAvailable,
        )
        self.committed = []
        self.held = []
        self.hold = False
        self.commitError = None
        self.capacityError = None
        self._ids = 0

    def _inThread(self, f, *args):
        return defer.maybeDeferred(f, *args)

    def checkCapacity(self, size):
        if self.capacityError is not None:
            return defer.fail(self.capacityError)
        return defer.succeed(None)

    def validateRecipient(self, session, sender, recipient):
        d = MessageIntake.validateRecipient(self, session, sender, recipient)
        if not self.hold:
            return d
        held = defer.Deferred()
        self.held.append(held)
        held.addCallback(lambda _: d)
        return held

    def openMessage(self):
        self._ids += 1
        return MemoryMessage(self, f"Q{self._ids}")


def memoryPortal(intake, passwords=None):
    """
    A portal whose anonymous SMTP sessions get C{intake}, and whose users
    (C{passwords}: address to password) get a L{MemoryIntake} of their own
    sharing C{intake}'s committed messages.
    """

    def intakeFor(user):
        if user is None:
            return intake
        userIntake = MemoryIntake(intake.router.directory, user=user)
        userIntake.committed = intake.committed
        return userIntake

    checkers = [AllowAnonymousAccess()]
    if passwords:
        db = InMemoryUsernamePasswordDatabaseDontUse()
        for user, password in passwords.items():
            db.addUser(user.encode("utf-8"), password.encode("utf-8"))
        checkers.append(_DecodingChecker(db))
    return Portal(MailRealm(intakeFor), checkers)


@implementer(ICredentialsChecker)
class _DecodingChecker:
    """Gives the avatar id as C{str}, as L{PasswordChecker} does."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, db):
        self.db = db

    def requestAvatarId(self, credentials):
        d = self.db.requestAvatarId(credentials)
        return d.addCallback(lambda avatarId: avatarId.decode("utf-8"))


class TLSStringTransport(StringTransport):
    """A L{StringTransport} that records C{startTLS} (no real handshake)."""

    tlsContextFactory = None

    def startTLS(self, contextFactory):
        self.tlsContextFactory = contextFactory


def connectSMTP(factory, host="192.0.2.1", port=40000):
    """
    Connect a server protocol from C{factory} to a L{StringTransport}.

    @return: C{(protocol, transport)}.
    """
    from twisted.internet.address import IPv4Address

    addr = IPv4Address("TCP", host, port)
    proto = factory.buildProtocol(addr)
    transport = TLSStringTransport(peerAddress=addr)
    proto.makeConnection(transport)
    return proto, transport


class ClockReactor:
    """
    A L{task.Clock} that also takes C{callFromThread}, for code that uses
    C{deferToThreadPool} with L{SynchronousThreadPool}.
    """

    def __init__(self):
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.callLater = self.clock.callLater
        self.seconds = self.clock.seconds
        self.advance = self.clock.advance

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class SynchronousThreadPool:
    """Runs "threaded" work at once, in the caller's thread."""

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        try:
            result = f(*args, **kwargs)
        except BaseException:
            from twisted.python.failure import Failure

            onResult(False, Failure())
        else:
            onResult(True, result)


@implementer(IDeliveryAgent)
class RecordingDeliveryAgent:
    """
    An L{IDeliveryAgent} that records what it is asked and answers with
    C{outcome(recipient)} (a L{DeliveryResult}); with C{hold}, it answers
    only when the test fires the Deferreds in C{pending}.
    """

    def __init__(self, outcome=None):
        from pymailer.envelope import DeliveryResult

        self.outcome = outcome or (lambda r: DeliveryResult.delivered())
        self.calls = []
        self.hold = False
        self.pending = []

    def deliver(self, envelope, recipients, openData, recovering):
        with openData() as f:
            data = f.read()
        self.calls.append((envelope, list(recipients), data, recovering))
        results = {r.index: self.outcome(r) for r in recipients}
        if self.hold:
            d = defer.Deferred()
            self.pending.append((d, results))
            return d
        return defer.succeed(results)
