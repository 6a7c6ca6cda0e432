"""
The IMAP server on a L{StringTransport} with a L{task.Clock}, a real
Maildir store in a scratch directory (or any other store, C{store=}) and
store calls run inline (no reactor, no threads): the harness of the
protocol-level IMAP tests.
"""

import io
import re

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.mail.interfaces import IAccountIMAP

from pymailer.auth.guard import LoginGuard
from pymailer.auth.realm import MailRealm
from pymailer.config import AuthConfig
from pymailer.imap.account import IMAPAccount
from pymailer.imap.fanout import SharedRefresh
from pymailer.imap.server import IMAPServer
from pymailer.store.maildir import MaildirStore
from pymailer.store.notify import ChangeNotifier
from pymailer.shutdown import Connections

USER = b"alice@example.org"
PASSWORD = b"secret"
TLS = object()


class InlineAccount(IMAPAccount):
    def run(self, function, *args, **kwargs):
        return defer.maybeDeferred(function, *args, **kwargs)


class TLSTransport(StringTransport):
    tlsContext = None

    def startTLS(self, context):
        self.tlsContext = context


class ImmediateReactor(task.Clock):
    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class InlinePool:
    """A thread pool that runs each call at once, in the caller's thread."""

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        onResult(True, f(*args, **kwargs))


class FakeFactory:
    def __init__(self, tmp_path, secure=False, plaintextLoopback=False, store=None,
                 quotas=None, shareRefresh=False, **auth):
        self.clock = ImmediateReactor()
        # IDLE sessions on one mailbox share the read after a change, as in
        # the server (pymailer.imap.fanout); the read waits for clock.advance(0).
        self.sharedRefresh = SharedRefresh(self.clock, self.run) if shareRefresh else None
        if store is None:
            store = MaildirStore(tmp_path / "mail", "mail.example.org")
        self.store = store
        self.quotas = quotas  # a pymailer.quota.Quotas, or None: no quotas
        self.store.createUser(USER.decode())
        self.notifier = ChangeNotifier(self.store, self.clock)
        self.authConfig = AuthConfig(allow_plaintext_on_loopback=plaintextLoopback,
                                     **{"failure_delay": 2.0, **auth})
        self.guard = LoginGuard(self.authConfig, self.clock)
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{USER.decode(): PASSWORD})
        self.realm = MailRealm(lambda user: None, {IAccountIMAP: self.account})
        self.portal = Portal(self.realm, [checker])
        self.tls = TLS
        self.implicitTLS = secure
        self.maxMessageSize = 1000000
        self.clients = Connections(self.clock)

    def account(self, user):
        if isinstance(user, bytes):
            user = user.decode()
        return InlineAccount(user, self.store, self.clock, None, self.notifier,
                             self.sharedRefresh)

    def run(self, function, *args, **kwargs):
        return defer.maybeDeferred(function, *args, **kwargs)

    def connectionClosed(self, host):
        """Sessions here are built directly, not counted (L{LimitedFactory})."""


class Client:
    """One session; C{connectAgain} opens another on the same server."""

    def __init__(self, tmp_path=None, host="192.0.2.1", factory=None, **options):
        self.factory = factory if factory is not None else FakeFactory(tmp_path, **options)
        self.protocol = IMAPServer(self.factory)
        self.transport = TLSTransport(peerAddress=IPv4Address("TCP", host, 40000))
        self.protocol.makeConnection(self.transport)
        self.greeting = self.read()

    def connectAgain(self, host="192.0.2.2"):
        return Client(host=host, factory=self.factory)

    def read(self):
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.protocol.dataReceived(data)
        return self.read()

    def login(self):
        out = self.send(b"l LOGIN " + USER + b" " + PASSWORD + b"\r\n")
        assert b"l OK" in out, out
        return out

    def deliver(self, body=b"Subject: x\r\n\r\nhi\r\n", mailbox="INBOX"):
        """Local delivery into the store, as SMTP would do it."""
        self.factory.store.deliver(USER.decode(), b"", io.BytesIO(body), mailbox)


def loggedIn(tmp_path, *bodies):
    """A logged-in session over TLS, with C{bodies} delivered into INBOX first."""
    c = Client(tmp_path, secure=True)
    for body in bodies:
        c.deliver(body)
    c.login()
    return c


def withoutMailboxId(reply):
    """A reply without CREATE's MAILBOXID code (RFC 8474 4.1), for tests of other things."""
    return re.sub(rb"\[MAILBOXID \([A-Za-z0-9_-]+\)\] ", b"", reply)


BACKENDS = ("maildir", "memory", "sqlite")


def backendClient(backend, tmp_path, request=None):
    """
    A logged-in L{Client} (over TLS) on a fresh store of C{backend};
    C{"postgresql"} needs the test's C{request} (for its database fixture).
    """
    from pymailer.store.memory import MemoryStore
    from pymailer.store.sqlite import SQLiteStore

    if backend == "maildir":
        store = MaildirStore(tmp_path / "mail", "mail.example.org")
    elif backend == "sqlite":
        store = SQLiteStore(tmp_path / "store")
    elif backend == "postgresql":
        from pymailer.store.postgresql import PostgreSQLStore

        store = PostgreSQLStore(request.getfixturevalue("postgresqlPool"))
    else:
        store = MemoryStore()
    client = Client(tmp_path, secure=True, store=store)
    client.login()
    return client
