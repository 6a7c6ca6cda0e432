"""
Test doubles shipped with pymailer, so that tests of the SMTP protocol (ours
and plugin authors') wire the real server to an in-memory intake.

The fakes use the real L{Router}, so what they accept is what the server
accepts; only the disk is replaced.
"""

import io

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
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

from pymailer.dns import DNSError
from pymailer.policy.dkim import txtLookupFromResolver
from pymailer.policy.dkimkeys import generateKeys, zoneTXT

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
        self.quotas = {}
        # What L{version} answers: code that changes the sets above
        # directly calls L{changed} for a route cache to see it.
        self.generation = 0

    def version(self):
        return self.generation

    def changed(self):
        self.generation += 1

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

    def isAdmin(self, address):
        return False

    def isDisabled(self, address):
        return False

    def quota(self, address):
        return self.quotas.get(address)

    def setQuota(self, address, limit):
        if address not in self.users:
            raise KeyError(address)
        self.quotas[address] = limit
        self.changed()


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

    def openData(self):
        return io.BytesIO(b"".join(self.chunks))


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
        self.opened = []
        self._ids = 0

    def _inThread(self, f, *args):
        return defer.maybeDeferred(f, *args)

    def checkCapacity(self, size):
        if self.capacityError is not None:
            return defer.fail(self.capacityError)
        return defer.succeed(None)

    def validateRecipient(self, session, sender, recipient, size=0):
        d = MessageIntake.validateRecipient(self, session, sender, recipient, size)
        if not self.hold:
            return d
        held = defer.Deferred()
        self.held.append(held)
        held.addCallback(lambda _: d)
        return held

    def openMessage(self):
        self._ids += 1
        message = MemoryMessage(self, f"Q{self._ids}")
        self.opened.append(message)
        return message


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


class CountingThreadPool(SynchronousThreadPool):
    """Runs work at once, counting the hand-offs."""

    def __init__(self):
        self.calls = 0

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        self.calls += 1
        SynchronousThreadPool.callInThreadWithCallback(self, onResult, f, *args, **kwargs)


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


# -- DNS ------------------------------------------------------------------------


class FakeResolver:
    """
    The resolver seam (L{pymailer.dns.Resolver.lookup}) answered from a zone
    in memory, with already-fired Deferreds, so unit tests need no reactor
    and no thread.

    It answers what the real L{pymailer.dns.Resolver} answers when
    C{tests/dnsserver.DNSServer} serves the same zone (the server answers
    from the same L{zoneAnswer}; C{tests/test_spf.py} runs one suite
    against both so the fake stays honest):

      - a list of dnspython rdata (C{dns.rdata.from_text}, names relative
        to the root); identical records appear once, as in an RRset;
      - C{[]} for a name that exists without records of that type;
      - L{DNSError} with C{temporary=False} for a name not in the zone
        (NXDOMAIN);
      - L{DNSError} with C{temporary=True} for a name marked C{TIMEOUT}
        (asked for a type it has no records of), for a CNAME loop (or a
        chain of 16), and for a name dnspython cannot make (a label over 63
        octets, an empty label);
      - CNAMEs are followed, as a recursive resolver does.

    @ivar records: C{{name: [(type, text), ..., "TIMEOUT"]}}, the shape of
        C{DNSServer}'s records, e.g. C{{"example.org": [("TXT", '"v=spf1
        -all"'), ("MX", "10 mx.example.org.")], "slow.example.org":
        ["TIMEOUT"]}}.  Names are case-insensitive, the final dot optional;
        the dict is live (tests may change it).
    @ivar queries: C{[(name, rdtype)]} in the order asked.
    """

    TIMEOUT = "TIMEOUT"
    MAX_CHAIN = 16  # dns.message.MAX_CHAIN: dnspython's limit on CNAME chains

    def __init__(self, records):
        self.records = {self.zoneKey(k): list(v) for k, v in records.items()}
        self.queries = []

    def lookup(self, name, rdtype):
        try:
            return defer.succeed(self.lookupBlocking(name, rdtype))
        except DNSError:
            return defer.fail()

    def lookupBlocking(self, name, rdtype):
        if not isinstance(rdtype, str):
            rdtype = dns.rdatatype.to_text(rdtype)
        rdtype = rdtype.upper()
        self.queries.append((name, rdtype))
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as e:
            # The real resolver fails the same way before asking anyone.
            raise DNSError(name, str(e), temporary=True)
        rcode, chain, rdatas = self.zoneAnswer(self.records, qname, rdtype)
        if rcode == "NXDOMAIN":
            raise DNSError(name, "no such domain", temporary=False)
        if rcode == "SERVFAIL":
            raise DNSError(name, "no server answered (SERVFAIL)", temporary=True)
        if rcode == "LOOP":
            raise DNSError(name, "CNAME chain too long", temporary=True)
        return rdatas

    @staticmethod
    def zoneKey(name):
        """C{name} (C{str} or C{dns.name.Name}) as a key of C{records}."""
        if isinstance(name, dns.name.Name):
            name = ".".join(label.decode("utf-8", "surrogateescape") for label in name.labels if label)
        return name.lower().rstrip(".") + "."

    @classmethod
    def zoneAnswer(cls, records, qname, rdtype):
        """
        What an authoritative server for C{records} answers to C{qname}
        (a C{dns.name.Name}) and C{rdtype} (text).

        @return: C{(rcode, chain, rdatas)}: rcode "NOERROR", "NXDOMAIN",
            "SERVFAIL" (a C{TIMEOUT} name) or "LOOP" (a CNAME loop or a
            chain of C{MAX_CHAIN}: a server answers NOERROR with the chain,
            the resolver gives up); C{chain} the C{[(owner, cname rdata)]}
            followed; C{rdatas} the records of the last name.
        """
        chain = []
        seen = set()
        name = qname
        while True:
            entries = records.get(cls.zoneKey(name))
            if entries is None:
                return "NXDOMAIN", chain, []
            rdatas = cls._rdatas(entries, rdtype)
            if rdatas:
                return "NOERROR", chain, rdatas
            cnames = cls._rdatas(entries, "CNAME") if rdtype != "CNAME" else []
            if cnames:
                key = cls.zoneKey(name)
                if key in seen or len(chain) >= cls.MAX_CHAIN:
                    return "LOOP", chain, []
                seen.add(key)
                chain.append((name, cnames[0]))
                name = cnames[0].target
                continue
            if cls.TIMEOUT in entries:
                return "SERVFAIL", chain, []
            return "NOERROR", chain, []

    @staticmethod
    def _rdatas(entries, rdtype):
        out = []
        for entry in entries:
            if entry == FakeResolver.TIMEOUT or entry[0].upper() != rdtype:
                continue
            rdata = dns.rdata.from_text(
                dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), entry[1],
                origin=dns.name.root, relativize=False,
            )
            if rdata not in out:
                out.append(rdata)
        return out


class FakeTXT:
    """
    The C{txtLookup(name) -> [text]} that DKIM, ARC and DMARC take
    (L{pymailer.policy.dkim.txtLookupFromResolver}), over a L{FakeResolver}:
    C{records} is C{{name: [text, ...]}}; names in C{temporary} fail for now;
    other names are NXDOMAIN.
    """

    def __init__(self, records=None, temporary=()):
        self.records = dict(records or {})
        zone = {name: [txtEntry(text) for text in texts]
                for name, texts in self.records.items()}
        for name in temporary:
            zone[name] = [FakeResolver.TIMEOUT]
        self.resolver = FakeResolver(zone)
        self._lookup = txtLookupFromResolver(self.resolver)
        self.queries = []

    def __call__(self, name):
        self.queries.append(name)
        return self._lookup(name)


def txtEntry(text):
    """A zone entry for L{FakeResolver} or C{DNSServer}: TXT C{text}, split as zone files need."""
    return ("TXT", zoneTXT(text))


def rsaSigningKey(dataDir, domain, selector):
    """A new DKIM RSA key of C{domain} (a L{pymailer.policy.dkimkeys.SigningKey})."""
    keys = generateKeys(dataDir, domain, selector)
    return next(k for k in keys if k.algorithm == "rsa-sha256")
