"""
The POP3 protocol (L{pymailer.pop3.server}) on a L{StringTransport}, with a
L{task.Clock}-driven guard and "threads" that run at once, over a real
Maildir store in a temporary directory.
"""

import base64
import io

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.error import ConnectionDone
from twisted.mail.interfaces import IMailboxPOP3
from twisted.python.failure import Failure

from pymailer.auth.guard import LoginGuard
from pymailer.auth.realm import MailRealm
from pymailer.config import AuthConfig, ConnectionLimits
from pymailer.pop3.maildrop import maildropFactory, uidl
from pymailer.pop3.server import POP3Factory
from pymailer.store.maildir import MaildirStore
from pymailer.testing import (
    ClockReactor,
    SynchronousThreadPool,
    _DecodingChecker,
    connectSMTP,
)

ALICE = "alice@example.org"
PASSWORD = b"secret pass"
TLS = object()  # a context factory stand-in: TLSStringTransport records it


class World:
    """One store, one guard, one clock; sessions connect to it."""

    def __init__(self, tmp_path, **auth):
        self.reactor = ClockReactor()
        self.pool = SynchronousThreadPool()
        self.store = MaildirStore(tmp_path / "mail", "mail.example.org")
        realm = MailRealm(lambda user: None)
        realm.avatarFactories[IMailboxPOP3] = maildropFactory(
            self.store, self.reactor, self.pool)
        db = InMemoryUsernamePasswordDatabaseDontUse()
        db.addUser(ALICE.encode(), PASSWORD)
        self.portal = Portal(realm, [_DecodingChecker(db)])
        self.auth = AuthConfig(**auth)
        self.guard = LoginGuard(self.auth, self.reactor)

    def deliver(self, data, user=ALICE):
        self.store.deliver(user, b"", io.BytesIO(data))

    def messages(self, user=ALICE):
        return self.store.mailbox(user).messages()

    def connect(self, host="192.0.2.1", implicitTLS=False, tls=TLS):
        factory = POP3Factory("mail.example.org", self.portal, self.guard,
                              self.auth, self.reactor, self.pool, tls=tls,
                              implicitTLS=implicitTLS)
        proto, transport = connectSMTP(factory, host=host)
        return Session(proto, transport)


class Session:
    def __init__(self, proto, transport):
        self.proto = proto
        self.transport = transport
        self.greeting = self.take()

    def take(self):
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data):
        self.proto.dataReceived(data)
        return self.take()

    def command(self, line):
        return self.send(line + b"\r\n")

    def login(self, user=ALICE.encode(), password=PASSWORD):
        assert self.command(b"USER " + user).startswith(b"+OK")
        return self.command(b"PASS " + password)

    def drop(self):
        self.proto.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def plain(user, password):
    return base64.b64encode(b"\0" + user + b"\0" + password)


class TestGreetingAndCapabilities:
    def test_greetingHasNoAPOPTimestamp(self, world):
        """The greeting carries no <timestamp>: clients would otherwise try
        APOP, which we cannot verify (no plaintext passwords on disk)."""
        s = world.connect()
        assert s.greeting.startswith(b"+OK ")
        assert b"<" not in s.greeting

    def test_capaBeforeTLS(self, world):
        """Before STLS, CAPA offers STLS and hides USER and SASL, so clients
        encrypt before they send a password."""
        s = world.connect()
        reply = s.command(b"CAPA")
        lines = reply.split(b"\r\n")
        assert lines[0].startswith(b"+OK")
        assert lines[-2:] == [b".", b""]
        caps = set(lines[1:-2])
        for cap in (b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING",
                    b"EXPIRE NEVER", b"IMPLEMENTATION pymailer", b"STLS"):
            assert cap in caps
        assert b"USER" not in caps and not any(c.startswith(b"SASL") for c in caps)

    def test_capaOverImplicitTLS(self, world):
        """On pop3s, CAPA offers USER and SASL PLAIN and no STLS."""
        s = world.connect(implicitTLS=True)
        caps = set(s.command(b"CAPA").split(b"\r\n")[1:-2])
        assert {b"USER", b"SASL PLAIN"} <= caps
        assert b"STLS" not in caps


class TestCleartextRefused:
    @pytest.mark.parametrize("line", [b"USER alice@example.org", b"PASS x",
                                      b"AUTH PLAIN " + plain(b"a", b"b"), b"AUTH"])
    def test_loginRefusedBeforeTLS(self, world, line):
        """USER, PASS and AUTH are refused with [AUTH] on a plaintext
        connection: a password never crosses the network in the clear."""
        s = world.connect()
        assert s.command(line).startswith(b"-ERR [AUTH]")
        assert not s.transport.disconnecting

    def test_loopbackAllowedByConfig(self, tmp_path):
        """With allow_plaintext_on_loopback, local tools log in without TLS
        from 127.0.0.1, but not from elsewhere."""
        world = World(tmp_path, allow_plaintext_on_loopback=True)
        local = world.connect(host="127.0.0.1")
        assert local.login().startswith(b"+OK")
        remote = world.connect(host="192.0.2.7")
        assert remote.command(b"USER " + ALICE.encode()).startswith(b"-ERR [AUTH]")


class TestSTLS:
    def test_stlsThenLogin(self, world):
        """STLS starts TLS with our context, after which USER/PASS work."""
        s = world.connect()
        assert s.command(b"STLS").startswith(b"+OK")
        assert s.transport.tlsContextFactory is TLS
        assert s.login().startswith(b"+OK")
        assert s.command(b"STLS").startswith(b"-ERR")

    def test_pipelinedPlaintextDiscarded(self, world):
        """Commands sent in the same packet after STLS are dropped, not run
        inside TLS: a man in the middle cannot inject commands
        (CVE-2011-0411 class)."""
        s = world.connect()
        reply = s.send(b"STLS\r\nCAPA\r\nUSER alice@example.org\r\n")
        assert reply == b"+OK Begin TLS negotiation now\r\n"
        assert s.command(b"PASS " + PASSWORD).startswith(b"-ERR USER first")

    def test_stlsRefusedOnImplicitTLSAndWithArguments(self, world):
        """STLS on an already encrypted connection, or with an argument, is
        an error and the session goes on."""
        assert world.connect(implicitTLS=True).command(b"STLS").startswith(b"-ERR")
        s = world.connect()
        assert s.command(b"STLS now").startswith(b"-ERR")
        assert s.command(b"STLS").startswith(b"+OK")

    def test_noTLSConfigured(self, world):
        """Without a certificate there is no STLS to offer or accept."""
        s = world.connect(tls=None)
        assert b"STLS" not in s.command(b"CAPA")
        assert s.command(b"STLS").startswith(b"-ERR")


class TestAuthPlain:
    def test_initialResponse(self, world):
        """AUTH PLAIN with an initial response logs in (RFC 5034), as curl
        and Thunderbird do it."""
        s = world.connect(implicitTLS=True)
        reply = s.command(b"AUTH PLAIN " + plain(ALICE.encode(), PASSWORD))
        assert reply.startswith(b"+OK")

    def test_continuation(self, world):
        """AUTH PLAIN without initial response gets '+ ' then the response."""
        s = world.connect(implicitTLS=True)
        assert s.command(b"AUTH PLAIN") == b"+ \r\n"
        assert s.command(plain(ALICE.encode(), PASSWORD)).startswith(b"+OK")

    def test_cancelAndMalformed(self, world):
        """'*' cancels, bad base64 or a malformed PLAIN message is -ERR, an
        unknown mechanism is -ERR; the session goes on each time."""
        s = world.connect(implicitTLS=True)
        s.command(b"AUTH PLAIN")
        assert s.command(b"*").startswith(b"-ERR")
        s.command(b"AUTH PLAIN")
        assert s.command(b"!!!notbase64").startswith(b"-ERR")
        assert s.command(b"AUTH PLAIN " + base64.b64encode(b"nonul")).startswith(b"-ERR")
        assert s.command(b"AUTH CRAM-MD5").startswith(b"-ERR")
        assert s.command(b"AUTH").startswith(b"+OK")
        assert s.login().startswith(b"+OK")

    def test_authzidMustMatch(self, world):
        """Logging in as somebody else (authzid) is refused."""
        s = world.connect(implicitTLS=True)
        msg = base64.b64encode(b"bob@example.org\0" + ALICE.encode() + b"\0" + PASSWORD)
        assert s.command(b"AUTH PLAIN " + msg).startswith(b"-ERR [AUTH]")


class TestFailedLogins:
    def test_failureIsDelayed(self, world):
        """A wrong password is answered only after failure_delay, and
        pipelined commands wait behind it, in order; a guesser is slowed."""
        s = world.connect(implicitTLS=True)
        s.command(b"USER " + ALICE.encode())
        assert s.send(b"PASS wrong\r\nCAPA\r\n") == b""
        world.reactor.advance(world.auth.failure_delay)
        reply = s.take()
        assert reply.startswith(b"-ERR [AUTH] Authentication failed\r\n+OK Capability")
        assert s.login().startswith(b"+OK")

    def test_lockout(self, tmp_path):
        """After max_failures wrong passwords the address is locked out:
        the next attempt, even with the right password, is refused and the
        connection closed."""
        world = World(tmp_path, max_failures=3, failure_delay=1.0)
        s = world.connect(implicitTLS=True)
        for _ in range(3):
            s.command(b"USER " + ALICE.encode())
            s.command(b"PASS wrong")
            world.reactor.advance(1.0)
            assert s.take().startswith(b"-ERR [AUTH]")
        s.command(b"USER " + ALICE.encode())
        answer = s.command(b"PASS wrong")  # refused at once: no delay owed
        assert answer.startswith(b"-ERR [SYS/TEMP] Too many failed logins")
        assert s.transport.disconnecting
        again = world.connect(implicitTLS=True)
        assert again.login().startswith(b"-ERR [SYS/TEMP]")
        assert again.transport.disconnecting


class TestBadInput:
    def test_unknownAndOutOfState(self, world):
        """Unknown commands and commands in the wrong state get -ERR and
        the session goes on."""
        s = world.connect(implicitTLS=True)
        assert s.command(b"FOO bar").startswith(b"-ERR")
        assert s.command(b"\xff\xfe").startswith(b"-ERR")
        assert s.command(b"").startswith(b"-ERR")
        assert s.command(b"STAT").startswith(b"-ERR")
        assert s.command(b"APOP alice 0123").startswith(b"-ERR")
        assert s.command(b"PASS x").startswith(b"-ERR USER first")
        assert s.login().startswith(b"+OK")
        assert s.command(b"USER x").startswith(b"-ERR")
        assert s.command(b"LAST").startswith(b"-ERR")

    def test_badArguments(self, world):
        """Bad message numbers and argument counts are -ERR, never a crash."""
        world.deliver(b"S: 1\r\n\r\nx\r\n")
        s = world.connect(implicitTLS=True)
        s.login()
        for line in (b"RETR", b"RETR 0", b"RETR 2", b"RETR -1", b"RETR x",
                     b"RETR 1 2", b"LIST 99999999999999999", b"TOP 1",
                     b"TOP 1 -1", b"TOP 1 x", b"DELE", b"DELE 5", b"UIDL 0",
                     b"STAT 1", b"NOOP x", b"RSET x"):
            assert s.command(line).startswith(b"-ERR"), line
        assert s.command(b"STAT") == b"+OK 1 11\r\n"

    def test_overlongLine(self, world):
        """A line over the limit is answered with one -ERR and skipped (Twisted
        would silently hang up); the next command works."""
        s = world.connect(implicitTLS=True)
        reply = s.send(b"X" * 20000)
        assert reply.startswith(b"-ERR Line too long")
        assert s.send(b"Y" * 20000 + b"\r\nCAPA\r\n").startswith(b"+OK Capability")
        assert not s.transport.disconnecting

    def test_lineEndings(self, world):
        """Commands ended by bare LF are understood too."""
        s = world.connect(implicitTLS=True)
        assert s.send(b"CAPA\n").startswith(b"+OK")


class TestTransaction:
    def test_allCommands(self, world):
        """STAT, LIST, UIDL, TOP, RETR, DELE, RSET, NOOP answer as RFC 1939
        says; a client relying on any of them would misbehave otherwise."""
        world.deliver(b"Subject: one\r\n\r\nbody one\r\n")
        world.deliver(b"Subject: two\r\n\r\n.dot\r\nsecond\r\n")
        keys = [m.key for m in world.messages()]
        s = world.connect(implicitTLS=True)
        assert s.login() == b"+OK Logged in, 2 messages (56 octets)\r\n"
        assert s.command(b"STAT") == b"+OK 2 56\r\n"
        assert s.command(b"LIST") == b"+OK 2 messages (56 octets)\r\n1 26\r\n2 30\r\n.\r\n"
        assert s.command(b"LIST 2") == b"+OK 2 30\r\n"
        assert s.command(b"UIDL") == (
            b"+OK Unique-ID listing follows\r\n1 %s\r\n2 %s\r\n.\r\n"
            % (keys[0].encode(), keys[1].encode()))
        assert s.command(b"UIDL 2") == b"+OK 2 %s\r\n" % keys[1].encode()
        assert s.command(b"TOP 2 0") == b"+OK Top of message follows\r\nSubject: two\r\n\r\n.\r\n"
        assert s.command(b"TOP 2 1") == b"+OK Top of message follows\r\nSubject: two\r\n\r\n..dot\r\n.\r\n"
        assert s.command(b"RETR 2") == b"+OK 30 octets\r\nSubject: two\r\n\r\n..dot\r\nsecond\r\n.\r\n"
        assert s.command(b"NOOP") == b"+OK \r\n"
        assert s.command(b"DELE 1") == b"+OK Message 1 deleted\r\n"
        assert s.command(b"STAT") == b"+OK 1 30\r\n"
        assert s.command(b"LIST") == b"+OK 1 messages (30 octets)\r\n2 30\r\n.\r\n"
        assert s.command(b"LIST 1").startswith(b"-ERR")
        assert s.command(b"RETR 1").startswith(b"-ERR")
        assert s.command(b"RSET") == b"+OK 2 messages (56 octets)\r\n"
        assert s.command(b"DELE 2").startswith(b"+OK")
        assert len(world.messages()) == 2
        assert s.command(b"QUIT") == b"+OK Bye, 1 messages deleted\r\n"
        assert s.transport.disconnecting
        assert [m.key for m in world.messages()] == keys[:1]

    def test_pipelinedCommandsInOrder(self, world):
        """A client pipelining a whole session in one packet (PIPELINING)
        gets every answer, in order."""
        world.deliver(b"S: 1\r\n\r\nx\r\n")
        s = world.connect(implicitTLS=True)
        reply = s.send(b"USER alice@example.org\r\nPASS secret pass\r\nSTAT\r\n"
                       b"RETR 1\r\nDELE 1\r\nQUIT\r\n")
        assert reply.split(b"\r\n") == [
            b"+OK Send PASS", b"+OK Logged in, 1 messages (11 octets)",
            b"+OK 1 11", b"+OK 11 octets", b"S: 1", b"", b"x", b".",
            b"+OK Message 1 deleted", b"+OK Bye, 1 messages deleted", b""]
        assert world.messages() == []

    def test_dropDeletesNothing(self, world):
        """DELE then a dropped connection (no QUIT) removes nothing and
        frees the maildrop: a flaky phone connection loses no mail."""
        world.deliver(b"S: 1\r\n\r\nx\r\n")
        s = world.connect(implicitTLS=True)
        s.login()
        s.command(b"DELE 1")
        s.drop()
        assert len(world.messages()) == 1
        again = world.connect(implicitTLS=True)
        assert again.login().startswith(b"+OK Logged in, 1 messages")

    def test_quitBeforeLogin(self, world):
        """QUIT in the AUTHORIZATION state just says goodbye."""
        s = world.connect()
        assert s.command(b"QUIT").startswith(b"+OK")
        assert s.transport.disconnecting

    def test_inUse(self, world):
        """A second POP3 session on the same maildrop gets -ERR [IN-USE]
        (RFC 2449) until the first one ends; two clients deleting at once
        would otherwise confuse each other's message numbers."""
        first = world.connect(implicitTLS=True)
        assert first.login().startswith(b"+OK")
        second = world.connect(implicitTLS=True)
        assert second.login().startswith(b"-ERR [IN-USE]")
        assert not second.transport.disconnecting
        first.command(b"QUIT")
        first.drop()
        assert second.login().startswith(b"+OK")

    def test_messageExpungedByAnotherClient(self, world):
        """A message removed meanwhile (by IMAP) gives -ERR on RETR, and QUIT
        still removes the others; nobody crashes."""
        world.deliver(b"S: 1\r\n\r\nx\r\n")
        world.deliver(b"S: 2\r\n\r\ny\r\n")
        s = world.connect(implicitTLS=True)
        s.login()
        first = world.messages()[0]
        world.store.mailbox(ALICE).expunge([first.uid])
        assert s.command(b"RETR 1").startswith(b"-ERR")
        assert s.command(b"DELE 1").startswith(b"+OK")
        assert s.command(b"DELE 2").startswith(b"+OK")
        assert s.command(b"QUIT").startswith(b"+OK")
        assert world.messages() == []

    def test_newUserWithoutMaildir(self, world):
        """A user who never got mail logs in to an empty maildrop."""
        s = world.connect(implicitTLS=True)
        assert s.login() == b"+OK Logged in, 0 messages (0 octets)\r\n"
        assert s.command(b"LIST") == b"+OK 0 messages (0 octets)\r\n.\r\n"

    def test_timeoutRemovesNothing(self, world):
        """The autologout timer closes an idle session without entering
        UPDATE (RFC 1939 §3): marked messages stay."""
        world.deliver(b"S: 1\r\n\r\nx\r\n")
        s = world.connect(implicitTLS=True)
        s.proto.callLater = world.reactor.callLater
        s.login()
        s.command(b"DELE 1")
        s.proto.timeoutConnection()
        assert s.transport.disconnecting
        s.drop()
        assert len(world.messages()) == 1


def test_uidlOfOddKeys():
    """UIDL values are 1-70 printable ASCII even for odd Maildir names, and
    stable (a hash of the name); clients would re-download otherwise."""
    assert uidl("1700000000.M1P2R3.host") == "1700000000.M1P2R3.host"
    odd = uidl("café name with spaces" * 5)
    assert odd == uidl("café name with spaces" * 5)
    assert 1 <= len(odd) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in odd)


def test_pipeliningFloodPausesReading(world):
    """A client sending far ahead while a command waits (here a delayed
    failed login) makes the server stop reading instead of buffering without
    bound; reading resumes once the backlog is worked off."""
    s = world.connect(implicitTLS=True)
    s.command(b"USER " + ALICE.encode())
    s.send(b"PASS wrong\r\n" + b"CAPA\r\n" * 20000)
    assert s.transport.producerState == "paused"
    world.reactor.advance(world.auth.failure_delay)
    assert s.transport.producerState == "producing"
    out = s.take()
    assert out.count(b"-ERR") == 1
    assert out.count(b"\r\nTOP\r\n") == 20000


def test_too_many_bad_commands_close_the_session(world):
    """A client sending garbage is not answered -ERR for ever: after 20
    unknown or misplaced commands the server says so and closes."""
    from pymailer.pop3.server import MAX_BAD_COMMANDS

    s = world.connect(implicitTLS=True)
    out = s.send(b"FOO\r\n" * (MAX_BAD_COMMANDS + 5))
    assert out.count(b"-ERR Unknown command\r\n") == MAX_BAD_COMMANDS
    assert out.endswith(b"-ERR Too many bad commands, closing\r\n")
    assert s.transport.disconnecting


def test_connections_per_ip_and_in_all_refused_with_sys_temp(tmp_path):
    """
    If this fails, one client can hold every POP3 slot (or open thousands of
    connections), or a refused client gets no reason before the close.
    """
    w = World(tmp_path)
    factory = POP3Factory("mail.example.org", w.portal, w.guard, w.auth, w.reactor, w.pool,
                          limits=ConnectionLimits(max_connections_per_ip=2, max_connections=3))
    first, _ = connectSMTP(factory, host="192.0.2.1")
    connectSMTP(factory, host="192.0.2.1")
    _, refused = connectSMTP(factory, host="192.0.2.1")
    assert refused.value() == b"-ERR [SYS/TEMP] Too many connections from your address, try again later\r\n"
    assert refused.disconnecting
    connectSMTP(factory, host="192.0.2.2")
    _, full = connectSMTP(factory, host="192.0.2.3")
    assert full.value().startswith(b"-ERR [SYS/TEMP] Too many connections,")
    first.connectionLost(Failure(ConnectionDone()))
    _, again = connectSMTP(factory, host="192.0.2.1")
    assert again.value().startswith(b"+OK")
