"""
The POP3 server: RFC 1939 (with TOP and UIDL), RFC 2449 CAPA and response
codes, RFC 2595 STLS, RFC 5034 AUTH (SASL PLAIN), RFC 3206 [AUTH]/[SYS].

L{POP3Server} subclasses C{twisted.mail.pop3.POP3} and keeps its replies,
its idle timeout and its logout-on-disconnect, but replaces what does not
hold up (checked on Twisted 26.10):

  - framing (C{dataReceived}): C{LineOnlyReceiver} drops the connection
    without a word on a line over 16 KiB, and would keep running lines
    already read after STLS.  Here an overlong line is answered with C{-ERR}
    and skipped; after STLS whatever else the client sent in plaintext is
    discarded (CVE-2011-0411 class); lines are run strictly one at a time, a
    command that waits (login, RETR, QUIT) holds the next ones back, and the
    transport is paused if a pipelining client sends too far ahead;
  - states: C{POP3} has no AUTHORIZATION/TRANSACTION/UPDATE states (it runs
    PASS while the previous login is still pending, answers pipelined
    commands out of order, expunges at QUIT without waiting or reporting);
  - USER/PASS/AUTH: Twisted offers them on plaintext connections, does not
    delay or count failures, has no SASL PLAIN (its AUTH is CRAM-MD5-style),
    and greets with an APOP timestamp.  APOP is not offered here: it needs
    the plaintext password on the server;
  - CAPA: Twisted's list has joke entries (CELERITY, AUSPEX, POTENCE) and
    misspells PIPELINING; there is no STLS;
  - STAT/LIST/UIDL/DELE treat deleted messages as size 0 instead of "no
    such message", DELE of a bad number raises, and RETR/TOP use
    C{FileSender} with a per-chunk C{transformChunk} that breaks dot-stuffing
    at chunk boundaries (see L{pymailer.pop3.stream}).

Trusts nothing of the client: every command and argument is checked, bad
ones get C{-ERR} and the session goes on; failed logins are delayed,
counted and locked out through the shared L{LoginGuard}; passwords are
accepted only over TLS (or, if the config says so, from loopback).
"""

import base64

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail import pop3
from twisted.mail.interfaces import IMailboxPOP3
from twisted.python.failure import Failure
from zope.interface import implementer

from pymailer.auth.guard import plaintextLoginAllowed
from pymailer.auth.login import LoginBlocked, accountName, guardedLogin
from pymailer.auth import sasl
from pymailer.auth.sasl import MECHANISMS
from pymailer.config import ConnectionLimits
from pymailer.connlimit import LimitedFactory
from pymailer.interfaces import IGoodbye
from pymailer.pop3.maildrop import maildropFactory
from pymailer.store import MaildropLocked
from pymailer.policy.dnsrecords import endpointPort
from pymailer.pop3.stream import DotStuffer, MessageSender
from pymailer.shutdown import Connections
from pymailer.tls import describeConnection

AUTHORIZATION = "AUTHORIZATION"
SASL = "SASL"  # AUTHORIZATION, waiting for a SASL response line
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"
CLOSED = "CLOSED"

# -ERR answers to unknown or misplaced commands in a row before the session is
# closed: the client is not speaking POP3 (or is probing).
MAX_BAD_COMMANDS = 20

# RFC 5034 needs only PLAIN; LOGIN is obsolete.
SASL_OFFERED = (b"PLAIN",)

# Commands per state (RFC 1939 §4-6, RFC 2449 §5, RFC 2595 §4, RFC 5034).
COMMANDS = {
    AUTHORIZATION: {"CAPA", "USER", "PASS", "AUTH", "STLS", "APOP", "QUIT"},
    TRANSACTION: {"CAPA", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET",
                  "TOP", "UIDL", "QUIT"},
}
KNOWN = set().union(*COMMANDS.values())


@implementer(IGoodbye)
class POP3Server(pop3.POP3):
    """One POP3 session.  See the module docstring for what differs."""

    log = Logger()

    # RFC 1939 §3: the autologout timer is at least 10 minutes.
    timeOut = 600
    # RFC 2449 §4 caps commands at 255 octets, but a SASL PLAIN response with
    # a long password is longer (RFC 5034 §4 lifts the limit for it).
    MAX_LINE = 8192
    # Pause reading when a pipelining client is this far ahead of us.
    MAX_PENDING = 64 * 1024

    state = AUTHORIZATION
    secure = False
    user = None
    _peerHost = None

    def connectionMade(self):
        # Not POP3.connectionMade: its greeting carries an APOP timestamp,
        # which announces APOP (RFC 1939 §7) that we do not offer.
        self.factory.clients.opened(self)
        self.portal = self.factory.portal
        self.secure = self.factory.implicitTLS
        self._peerHost = getattr(self.transport.getPeer(), "host", None)
        self._buffer = b""
        self._discarding = False
        self._busy = False
        self._draining = False
        self._paused = False
        self._lost = False
        self._badCommands = 0
        self._goodbye = False
        self._userName = None
        self._sasl = None
        self.setTimeout(self.timeOut)
        self.log.info("pop3 connection from {peer}{tls}", peer=self._peerHost,
                      tls=" (TLS)" if self.secure else "")
        self.successResponse(f"{self.factory.hostname} POP3 server ready")

    def connectionLost(self, reason):
        self.factory.clients.closed(self)
        self._lost = True
        self.state = CLOSED
        # A session that did not QUIT removes nothing (RFC 1939 §6): the
        # logout only releases the maildrop lock.
        pop3.POP3.connectionLost(self, reason)
        self.factory.connectionClosed(self._peerHost)
        self.log.info("pop3 connection from {peer} closed{user}",
                      peer=self._peerHost,
                      user=f" ({self.user})" if self.user else "")

    # -- framing ------------------------------------------------------------

    def dataReceived(self, data):
        self._buffer += data
        self._drain()

    def _drain(self):
        """Run complete lines, one command at a time."""
        if self._draining:
            return
        self._draining = True
        try:
            while not self._busy and self.state != CLOSED:
                line, sep, rest = self._buffer.partition(b"\n")
                if not sep:
                    if len(self._buffer) > self.MAX_LINE:
                        self._buffer = b""
                        if not self._discarding:
                            self._discarding = True
                            self._badCommand(b"Line too long")
                    break
                self._buffer = rest
                if self._discarding:  # the end of an overlong line
                    self._discarding = False
                    continue
                if len(line) > self.MAX_LINE:
                    self._badCommand(b"Line too long")
                    continue
                self.resetTimeout()
                self._run(line[:-1] if line.endswith(b"\r") else line)
        finally:
            self._draining = False
        self._flowControl()

    def _run(self, line):
        try:
            result = self.lineReceived(line)
        except Exception:
            self.log.failure("pop3 command failed")
            self.failResponse(b"[SYS/TEMP] Internal error")
            return
        if isinstance(result, defer.Deferred):
            self._busy = True
            self.setTimeout(None)
            result.addBoth(self._commandDone)

    def _commandDone(self, result):
        if isinstance(result, Failure) and not self._lost:
            self.log.failure("pop3 command failed", result)
            self.failResponse(b"[SYS/TEMP] Internal error")
        self._busy = False
        if self._goodbye:
            self.sayGoodbye()
        elif not self._lost:
            self.setTimeout(self.timeOut)
            self._drain()
        return None

    def _flowControl(self):
        transport = self.transport
        if self._lost:
            return
        if self._busy and len(self._buffer) > self.MAX_PENDING:
            if not self._paused:
                self._paused = True
                transport.pauseProducing()
        elif self._paused:
            self._paused = False
            transport.resumeProducing()

    def lineReceived(self, line):
        if self.state == SASL:
            return self._saslResponse(line)
        command, _, rest = line.partition(b" ")
        name = command.decode("ascii", "replace").upper()
        if name not in KNOWN:
            return self._badCommand(b"Unknown command")
        if name not in COMMANDS.get(self.state, ()):
            return self._badCommand(
                f"{name} not allowed in the {self.state} state".encode("ascii"))
        self._badCommands = 0
        return getattr(self, "do_" + name)(rest)

    def _badCommand(self, text):
        """
        C{-ERR}; past MAX_BAD_COMMANDS of them in a row the client is not
        speaking POP3 (or is probing): close, rather than answer garbage for
        ever.
        """
        self.failResponse(text)
        self._badCommands += 1
        if self._badCommands >= MAX_BAD_COMMANDS and self.state != CLOSED:
            self._closeWith(b"Too many bad commands, closing")

    def sayGoodbye(self):
        # A command in flight (a RETR streaming) finishes first: an -ERR
        # inside a multi-line response would corrupt the message.  A
        # session that did not QUIT removes nothing (RFC 1939 §6).
        # RFC 3206 §4: SYS/TEMP, a temporary problem on our side.
        self._goodbye = True
        if not self._busy and not self._lost and self.state != CLOSED:
            self._closeWith(b"[SYS/TEMP] Server shutting down, try again later")

    def _closeWith(self, message):
        self.failResponse(message)
        self.state = CLOSED
        self.transport.loseConnection()

    # -- capabilities ---------------------------------------------------------

    def _loginAllowed(self):
        return self.secure or plaintextLoginAllowed(
            self.factory.authConfig, self._peerHost)

    def _stlsOffered(self):
        return self.factory.tls is not None and not self.secure

    def capabilities(self):
        """RFC 2449 §6; the same list in both states (§5)."""
        caps = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE",
                b"PIPELINING", b"EXPIRE NEVER", b"IMPLEMENTATION pymailer"]
        if self._loginAllowed():
            caps += [b"USER", b"SASL " + b" ".join(SASL_OFFERED)]
        if self._stlsOffered():
            caps.append(b"STLS")
        return caps

    def do_CAPA(self, rest):
        self._multiLine(b"Capability list follows", self.capabilities())

    def _multiLine(self, first, lines):
        out = [b"+OK " + first + b"\r\n"]
        out += [line + b"\r\n" for line in lines]  # never start with "."
        out.append(b".\r\n")
        self.transport.writeSequence(out)

    # -- STLS (RFC 2595 §4) ---------------------------------------------------

    def do_STLS(self, rest):
        if rest:
            return self.failResponse(b"Syntax: STLS")
        if self.secure:
            return self.failResponse(b"Command not permitted when TLS active")
        if self.factory.tls is None:
            return self.failResponse(b"TLS not available")
        self.successResponse(b"Begin TLS negotiation now")
        # Anything the client sent after STLS came in plaintext and could
        # have been injected by a man in the middle: drop it, do not run it
        # inside TLS.  Forget what we learnt before TLS, too (RFC 2595 §4).
        self._buffer = b""
        self._discarding = False
        self._userName = None
        self.transport.startTLS(self.factory.tls)
        self.secure = True

    # -- login ----------------------------------------------------------------

    def _refuseCleartext(self):
        # RFC 3206 §4: [AUTH] -- the client must change how it logs in.
        # Name the port this server's pop3s really listens on, not 995.
        tlsPort = self.factory.tlsPort
        self.failResponse(
            b"[AUTH] Plaintext authentication disallowed on non-secure "
            b"connections; use STLS"
            + (b" or port %d" % tlsPort if tlsPort else b""))

    def do_USER(self, rest):
        if not self._loginAllowed():
            return self._refuseCleartext()
        name = rest.strip()
        if not name or b" " in name:
            return self.failResponse(b"Syntax: USER name")
        self._userName = name
        self.successResponse(b"Send PASS")

    def do_PASS(self, rest):
        if not self._loginAllowed():
            return self._refuseCleartext()
        if self._userName is None:
            return self.failResponse(b"USER first")
        name, self._userName = self._userName, None
        # The rest of the line: passwords may contain spaces.
        return self._login(UsernamePassword(name, rest))

    def do_APOP(self, rest):
        return self.failResponse(b"APOP not supported")

    def do_AUTH(self, rest):
        if not self._loginAllowed():
            return self._refuseCleartext()
        if not rest:
            # The pre-RFC 5034 "AUTH" listing, still used by some clients.
            return self._multiLine(b"Supported mechanisms", list(SASL_OFFERED))
        name, _, initial = rest.partition(b" ")
        name = name.upper()
        if name not in SASL_OFFERED:
            return self.failResponse(b"Unsupported SASL mechanism")
        self._sasl = MECHANISMS[name]()
        if initial:
            # RFC 5034 §4: "=" is an empty initial response.
            return self._saslResponse(initial,
                                      initial=True)
        self.state = SASL
        self._challenge(self._sasl.initialChallenge)

    def _challenge(self, challenge):
        self.state = SASL
        self.transport.write(b"+ " + base64.b64encode(challenge) + b"\r\n")

    def _saslResponse(self, line, initial=False):
        self.state = AUTHORIZATION
        try:
            challenge, credentials = sasl.step(self._sasl, line, initial)
        except sasl.SASLCancelled:
            self._sasl = None
            return self.failResponse(b"Authentication cancelled")
        except sasl.AuthorizationRefused:
            self._sasl = None
            # RFC 3206 4: [AUTH] for a refused identity.
            return self.failResponse(b"[AUTH] Not authorized to act as another user")
        except sasl.SASLError as e:
            self._sasl = None
            return self.failResponse(
                f"Malformed authentication response ({e})".encode())
        if challenge is not None:
            return self._challenge(challenge)
        self._sasl = None
        return self._login(credentials)

    def _login(self, credentials):
        account = accountName(credentials.username)
        d = guardedLogin(self.factory.portal, self.factory.guard,
                         self._peerHost, credentials, IMailboxPOP3, "pop3")
        d.addCallback(self._openMaildrop, account)
        d.addErrback(self._loginFailed, account)
        return d

    def _openMaildrop(self, result, account):
        _, maildrop, logout = result
        if self._lost:
            logout()
            return None
        d = maildrop.open()

        def opened(_):
            if self._lost:
                logout()
                return
            self.mbox, self._onLogout = maildrop, logout
            self.user = maildrop.user
            self.state = TRANSACTION
            sizes = maildrop.listMessages()
            version, cipher = describeConnection(self.transport) if self.secure else (None, None)
            self.log.info(
                "pop3 login {user} from {peer}{tls}: {n} messages",
                user=self.user, peer=self._peerHost, n=len(sizes),
                tls=f" ({version} {cipher})" if cipher else "")
            self.successResponse(
                f"Logged in, {len(sizes)} messages ({sum(sizes)} octets)")

        def notOpened(failure):
            logout()
            if self._lost:
                return
            if failure.check(MaildropLocked):
                self.log.info("pop3 login {user} from {peer}: maildrop in use",
                              user=account, peer=self._peerHost)
                # RFC 2449 §8.1.2
                return self.failResponse(
                    b"[IN-USE] Mailbox is locked by another POP3 session")
            self.log.failure("pop3: cannot open the maildrop of {user}",
                             failure, user=account)
            self.failResponse(b"[SYS/TEMP] Unable to open the mailbox")

        return d.addCallbacks(opened, notOpened)

    def _loginFailed(self, failure, account):
        if self._lost:
            return None
        if failure.check(LoginBlocked):
            return self._closeWith(
                b"[SYS/TEMP] Too many failed logins from your address, "
                b"try again later")
        if failure.check(UnauthorizedLogin):
            return self.failResponse(b"[AUTH] Authentication failed")
        self.log.failure("pop3 login of {user} failed", failure, user=account)
        self.failResponse(b"[SYS/TEMP] Internal error")

    # -- the transaction state (RFC 1939 §5) ----------------------------------

    def _messageIndex(self, arg):
        """
        Parse a message number; answer C{-ERR} and return C{None} if it is
        not one of a message still there.
        """
        if not (arg.isdigit() and len(arg) <= 9):
            self.failResponse(b"Invalid message number")
            return None
        index = int(arg) - 1
        if not 0 <= index < len(self.mbox):
            self.failResponse(b"No such message")
            return None
        if self.mbox.isDeleted(index):
            self.failResponse(b"Message already deleted")
            return None
        return index

    def _args(self, rest, count, syntax):
        args = rest.split()
        if len(args) not in count:
            self.failResponse(b"Syntax: " + syntax)
            return None
        return args

    def _present(self):
        sizes = self.mbox.listMessages()
        return [(i, size) for i, size in enumerate(sizes)
                if not self.mbox.isDeleted(i)]

    def do_STAT(self, rest):
        if rest.strip():
            return self.failResponse(b"Syntax: STAT")
        present = self._present()
        self.successResponse(
            b"%d %d" % (len(present), sum(size for _, size in present)))

    def _scanListing(self, rest, usage, line, heading):
        """
        LIST and UIDL (RFC 1939 §5, §7): one message's line, or every
        present message's, each C{b"n " + line(index, size)}.
        """
        args = self._args(rest, (0, 1), usage)
        if args is None:
            return
        if args:
            index = self._messageIndex(args[0])
            if index is not None:
                size = self.mbox.listMessages(index)
                self.successResponse(b"%d %s" % (index + 1, line(index, size)))
            return
        present = self._present()
        self._multiLine(heading(present),
                        [b"%d %s" % (i + 1, line(i, size)) for i, size in present])

    def do_LIST(self, rest):
        self._scanListing(
            rest, b"LIST [msg]", lambda i, size: b"%d" % size,
            lambda present: b"%d messages (%d octets)"
            % (len(present), sum(size for _, size in present)))

    def do_UIDL(self, rest):
        self._scanListing(
            rest, b"UIDL [msg]", lambda i, size: self.mbox.getUidl(i).encode("ascii"),
            lambda present: b"Unique-ID listing follows")

    def do_DELE(self, rest):
        args = self._args(rest, (1,), b"DELE msg")
        if args is None:
            return
        index = self._messageIndex(args[0])
        if index is not None:
            self.mbox.deleteMessage(index)
            self.successResponse(b"Message %d deleted" % (index + 1,))

    def do_NOOP(self, rest):
        if rest.strip():
            return self.failResponse(b"Syntax: NOOP")
        self.successResponse()

    def do_RSET(self, rest):
        if rest.strip():
            return self.failResponse(b"Syntax: RSET")
        self.mbox.undeleteMessages()
        present = self._present()
        self.successResponse(
            b"%d messages (%d octets)"
            % (len(present), sum(size for _, size in present)))

    def do_RETR(self, rest):
        args = self._args(rest, (1,), b"RETR msg")
        if args is None:
            return None
        index = self._messageIndex(args[0])
        if index is None:
            return None
        return self._send(index, None,
                          b"%d octets" % self.mbox.listMessages(index))

    def do_TOP(self, rest):
        args = self._args(rest, (2,), b"TOP msg n")
        if args is None:
            return None
        if not (args[1].isdigit() and len(args[1]) <= 9):
            return self.failResponse(b"Invalid line count")
        index = self._messageIndex(args[0])
        if index is None:
            return None
        return self._send(index, int(args[1]), b"Top of message follows")

    def _send(self, index, bodyLines, first):
        d = self.mbox.getMessage(index)

        def opened(file):
            if self._lost:
                file.close()
                return None
            self.successResponse(first)
            sender = MessageSender(self.factory.reactor, self.factory.threadpool,
                                   file, DotStuffer(bodyLines))
            return sender.send(self.transport).addErrback(broken)

        def missing(failure):
            failure.trap(KeyError)
            # Expunged by another client (IMAP) since our login.
            if not self._lost:
                self.failResponse(b"Message was removed by another session")

        def broken(failure):
            if self._lost:
                return None
            # Half a message is on the wire: the only honest thing left to
            # do is to hang up, so the client does not take it as complete.
            self.log.failure("pop3: sending message {n} to {user} failed",
                             failure, n=index + 1, user=self.user)
            self.state = CLOSED
            self.transport.abortConnection()

        return d.addCallbacks(opened, missing)

    # -- QUIT and the UPDATE state (RFC 1939 §6) --------------------------------

    def do_QUIT(self, rest):
        if self.state != TRANSACTION:
            self.successResponse(b"Bye")
            self.state = CLOSED
            self.transport.loseConnection()
            return None
        self.state = UPDATE
        marked = self.mbox.deletedCount
        d = self.mbox.sync()

        def updated(removed):
            self.log.info("pop3 logout {user}: {n} messages deleted",
                          user=self.user, n=removed)
            self._logout()
            if not self._lost:
                self.successResponse(
                    f"Bye, {removed} messages deleted".encode())

        def notUpdated(failure):
            self.log.failure("pop3: removing {n} messages of {user} failed",
                             failure, n=marked, user=self.user)
            self._logout()
            if not self._lost:
                self.failResponse(b"[SYS/TEMP] Some deleted messages not removed")

        def close(_):
            self.state = CLOSED
            if not self._lost:
                self.transport.loseConnection()

        return d.addCallbacks(updated, notUpdated).addCallback(close)

    def _logout(self):
        # Release the lock before answering, so a client reconnecting right
        # after our +OK finds the maildrop free.
        if self._onLogout is not None:
            logout, self._onLogout = self._onLogout, None
            logout()

    # Not in RFC 1939 any more, or never offered.
    def do_LAST(self, rest=None):
        return self.failResponse(b"Unknown command")

    do_RPOP = do_LAST


class POP3Factory(LimitedFactory):
    """
    Makes L{POP3Server}s for one listener, within the C{[pop3]} connection
    limits (L{pymailer.connlimit}).

    @param implicitTLS: the listener is TLS from the first byte (pop3s,
        RFC 8314): passwords are accepted at once and STLS is refused.
    @param tls: the context factory for STLS, or C{None}.
    @param tlsPort: the port of this server's pop3s listener, which a
        refused plaintext login is told to use, or C{None}.
    """

    protocol = POP3Server
    noisy = False

    def __init__(self, hostname, portal, guard, authConfig, reactor, threadpool,
                 tls=None, implicitTLS=False, limits=ConnectionLimits(),
                 tlsPort=None):
        LimitedFactory.__init__(self, limits)
        self.hostname = hostname
        self.portal = portal
        self.guard = guard
        self.authConfig = authConfig
        self.reactor = reactor
        self.threadpool = threadpool
        self.tls = tls
        self.implicitTLS = implicitTLS
        self.tlsPort = tlsPort
        self.clients = Connections(reactor)

    def refusal(self, reason):
        # RFC 2449 8.1.2: SYS/TEMP, a temporary problem; try again later.
        return b"-ERR [SYS/TEMP] " + reason.encode("ascii")

    def buildSession(self, addr):
        return ServerFactory.buildProtocol(self, addr)


def buildPOP3(role, parts):
    """The C{LISTENER_BUILDERS} entry for C{pop3} (STLS) and C{pop3s}."""
    return POP3Factory(
        parts.config.hostname, parts.portal, parts.guard, parts.config.auth,
        parts.reactor, parts.threadpool, tls=parts.tls,
        implicitTLS=(role == "pop3s"), limits=parts.config.pop3,
        tlsPort=endpointPort(pop3s) if (pop3s := parts.config.listen.pop3s) else None,
    )


def buildMaildrops(parts):
    """The C{AVATAR_BUILDERS} entry for C{IMailboxPOP3}."""
    return maildropFactory(parts.store, parts.reactor, parts.threadpool)
