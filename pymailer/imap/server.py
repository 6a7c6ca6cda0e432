"""
The IMAP4rev1 server protocol (RFC 3501) with IDLE, UIDPLUS, MOVE,
NAMESPACE, ID, ENABLE, LITERAL+, UNSELECT, SPECIAL-USE, SASL-IR, CHILDREN,
CONDSTORE, and (each in its own module, this one dispatching) QRESYNC
(L{pymailer.imap.qresync}), ESEARCH and
SEARCHRES (L{pymailer.imap.esearch}), LIST-EXTENDED and LIST-STATUS
(L{pymailer.imap.listing}, L{pymailer.imap.status}), STATUS=SIZE,
MULTIAPPEND and APPENDLIMIT (L{pymailer.imap.append}), BINARY
(L{pymailer.imap.binary}) and COMPRESS=DEFLATE (L{pymailer.imap.compress});
IMAP4rev2 (RFC 9051) after ENABLE, UTF8=ACCEPT and LITERAL-
(L{pymailer.imap.rev2}, which maps RFC 9051 Appendix E to this code);
SORT, SORT=DISPLAY and ESORT (L{pymailer.imap.sort}), THREAD
(L{pymailer.imap.thread}), from the store's message summaries.

Built on C{twisted.mail.imap4.IMAP4Server} (its line receiver, timeouts and
response helpers) but replacing its command reader and dispatcher, because
Twisted's:
  - sends C{+} for any literal size, even C{{99999999999}} and C{{-5}}, and
    spools it, before and after login;
  - drops a line over C{MAX_LENGTH} without a reply;
  - runs commands pipelined after STARTTLS inside the TLS session
    (CVE-2011-0411 class);
  - answers pipelined commands out of order behind a slow one (#9282);
  - parses quoted strings without escapes and lists without nesting;
  - calls mailbox methods synchronously (our store blocks: it must run in
    the thread pool) and has no UIDPLUS, MOVE, ENABLE, UNSELECT, ID.

Trust: nothing from the client is trusted.  Literal sizes are checked
before any continuation (C{NO [TOOBIG]}/C{BAD} first), and so is APPEND's
mailbox (C{NO [TRYCREATE]} without an upload; a LITERAL+ message is read
and dropped); literals before login are capped at L{PREAUTH_LITERAL}; a line over 64 KiB gets BAD and the
connection is closed; mailbox names are strict modified UTF-7 and then
checked by the store (no traversal).  Failed logins go through the shared
L{pymailer.auth.guard.LoginGuard} (delayed, counted, logged, locked out).

The selected mailbox's state is in L{pymailer.imap.selected}, FETCH in
L{pymailer.imap.fetch}.  C{\\Recent} is kept by the store (the first
read-write session to see a message claims it); so are keywords, at most 26
per mailbox (C{PERMANENTFLAGS} drops C{\\*} when they are used up) and
mod-sequences (CONDSTORE, RFC 7162).
"""

import bisect
import functools
import re
import time
from collections import deque
from contextlib import contextmanager

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.mail.imap4 import IMAP4Server
from twisted.mail.interfaces import IAccountIMAP
from zope.interface import implementer

from pymailer import metrics, sendnow
from pymailer.auth.guard import plaintextLoginAllowed
from pymailer.auth.login import LoginBlocked, guardedLogin
from pymailer.auth import sasl
from pymailer.auth.sasl import Plain
from pymailer.imap import (
    append, binary, catenate, compress, esearch, listing, notify, objectid, qresync, rev2,
    search, sort, status, thread, utf7,
)
from pymailer.imap.errors import CommandFailed
from pymailer.imap.quota import QuotaCommands
from pymailer.imap.fetch import (
    Range, fetchPieces, joinPieces, parseFetchItems, parseModifiers, sessionFetchLines,
)
from pymailer.imap.spool import MAX_PENDING_WRITES, SpoolFailed, SpoolingLiteral
from pymailer.imap.listing import listEntries, lsubEntries
from pymailer.message.mime import messageOctets
from pymailer.imap.parser import (
    LITERAL_AT_END, Atom, ParseError,
    astring, formatSet, formatValue, isAtom, isFetch, isTag, splitCommand, tokenize,
)
from pymailer.imap.selected import SYSTEM_FLAGS, Selected
from pymailer.interfaces import IExternalChanges, IGoodbye
from pymailer.store import INBOX, KeywordLimit, MailboxGone, MailboxNameTooLong

log = Logger()

MAX_LINE = 64 * 1024
PREAUTH_LITERAL = 8 * 1024
MAX_LITERAL = 64 * 1024          # literals other than APPEND's message
SPOOL_THRESHOLD = 256 * 1024     # APPEND literals above this go to a file
CHUNK = 256 * 1024
# Literals in one command: each may take MAX_LITERAL octets, and a command
# is held whole until it is complete.
MAX_LITERALS = 64
# Commands pipelined behind a slow one before reading stops (and again
# from half as many).
MAX_QUEUED_COMMANDS = 1000
# BAD answers in a row before the session is closed (Dovecot: 20).
MAX_BAD_COMMANDS = 20
_FLAG_NAMES = {f.upper(): f for f in SYSTEM_FLAGS}
_STORE_MODES = {b"FLAGS": "set", b"+FLAGS": "add", b"-FLAGS": "remove"}
# flag-keyword = atom (RFC 3501 9): no atom-specials, no "]".
_KEYWORD = re.compile(r'[^\x00-\x20\x7f-\uffff(){%*"\\\]]+')


# (command name, UID or not) -> its IMAP_COMMAND_SECONDS child: labels()
# checks and looks its arguments up under a lock on each call.  Bounded:
# only commands we implement are timed.
_commandHistograms = {}


@functools.lru_cache(maxsize=256)
def _commandLabel(name, uid):
    """The metrics label of a command we implement (a bounded set)."""
    return ("UID " if uid else "") + name.decode("ascii", "replace")


def _selectCompleted(readOnly):
    """SELECT's and EXAMINE's tagged text (RFC 3501 7.1: READ-ONLY, READ-WRITE)."""
    mode = b"[READ-ONLY]" if readOnly else b"[READ-WRITE]"
    return mode + b" " + (b"EXAMINE" if readOnly else b"SELECT") + b" completed"


def _isCompress(line):
    return line[:40].upper().split(b" ", 2)[1:2] == [b"COMPRESS"]


@contextmanager
def _flagLimit():
    """A keyword the mailbox has no room for is refused (RFC 5530 LIMIT)."""
    try:
        yield
    except KeywordLimit as e:
        raise CommandFailed(f"[LIMIT] {e}") from None


@implementer(IPushProducer, IGoodbye)
class IMAPServer(QuotaCommands, IMAP4Server):
    IDENT = b"pymailer IMAP4rev1 ready"
    MAX_LENGTH = MAX_LINE
    # Lines end in LF, the CR before it dropped (lineReceived): RFC 3501
    # 2.2 says CRLF, but a user typing into `openssl s_client` without
    # -crlf sends a bare LF, and a server waiting for the CR leaves them
    # staring at nothing (Dovecot takes LF too).  A literal's octets are
    # counted from after the LF either way, byte for byte.
    delimiter = b"\n"
    timeOut = 120
    POSTAUTH_TIMEOUT = 30 * 60

    def __init__(self, factory):
        IMAP4Server.__init__(self, chal={}, contextFactory=factory.tls)
        self.factory = factory
        self.portal = factory.portal
        self.secure = factory.implicitTLS
        self.user = None
        self.selected = None
        self.idleTag = None
        self._segments = None
        self._literal = None
        self._discard = None  # [octets left, reply]: a refused literal being read
        self._skipLine = False
        self._commands = deque()
        self._busy = False
        self._pumping = False
        self._queueFull = False
        self._spoolFull = False  # reading stopped: APPEND chunks wait for the disk
        self._badCommands = 0
        self._sasl = None
        self._paused = None
        self._idleSync = None
        self._closing = False
        self._registered = False
        # RFC 7162 3.1: set by the first "CONDSTORE enabling command"; from
        # then on every untagged FETCH carries UID and MODSEQ.
        self.condstore = False
        # RFC 7162 3.2.3: set by ENABLE QRESYNC (which enables CONDSTORE
        # too); from then on expunges are told as VANISHED.
        self.qresync = False
        # RFC 9051 / RFC 6855: IMAP4rev2 and UTF8=ACCEPT, once enabled.
        self.enabled = rev2.Session()
        # RFC 5182: the UIDs of the last SEARCH RETURN (SAVE), "$".
        self.searchResult = frozenset()
        # RFC 4978: the L{compress.Deflate} once COMPRESS DEFLATE is on.
        self.compression = None
        self._readingLines = False
        # RFC 5465: the L{notify.Watcher} of NOTIFY SET, until NOTIFY NONE.
        self.notify = None
        # Every write goes through it: sent at once, or with the rest of
        # the reactor call's replies in one send (L{pymailer.sendnow}).
        self._outbox = sendnow.Outbox(self)

    # -- connection ---------------------------------------------------------

    def connectionMade(self):
        self.factory.clients.opened(self)
        peer = self.transport.getPeer()
        self.peerHost = getattr(peer, "host", "")
        self.setTimeout(self.timeOut)
        # A reply often goes out in two writes (untagged data, then the
        # tagged OK after a store call in the thread pool): with Nagle the
        # second waits for the client's delayed ACK, 40 ms on Linux.
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        self.transport.registerProducer(self, True)
        self._registered = True
        self.sendLine(b"* OK [CAPABILITY " + b" ".join(self.capabilityList()) + b"] " + self.IDENT)

    def connectionLost(self, reason):
        self.factory.clients.closed(self)
        self.setTimeout(None)
        self._closing = True
        self.factory.connectionClosed(self.peerHost)
        self._unselect()
        self._closeLiteral()
        if self.notify is not None:
            self.notify.stop()
        if self._onLogout:
            self._onLogout()
            self._onLogout = None
        if self._paused is not None:
            d, self._paused = self._paused, None
            # A FETCH or SEARCH waiting on it hears of the loss; when none
            # is (the buffer filled with pipelined NOOPs), the failure is
            # dropped, not logged as "Unhandled error in Deferred".
            d.addErrback(lambda failure: None)
            d.errback(ConnectionError("connection lost"))

    def timeoutConnection(self):
        self._bye(b"Autologout; idle for too long")

    def pauseProducing(self):
        if self._paused is None:
            self._paused = defer.Deferred()

    def resumeProducing(self):
        if self._paused is not None:
            d, self._paused = self._paused, None
            d.callback(None)

    def stopProducing(self):
        self.resumeProducing()

    def sayGoodbye(self):
        # RFC 3501 §7.1.5: BYE before the server closes; RFC 5530 §3:
        # UNAVAILABLE, a temporary failure (try again later).
        if not self._closing:
            self._bye(b"[UNAVAILABLE] Server shutting down")

    def _bye(self, text):
        self.sendLine(b"* BYE " + text)
        self._hangUp()

    def _hangUp(self):
        """
        Close the connection after what was written.  The protocol is a
        producer registered on its transport (connectionMade): TLS
        (C{twisted.protocols.tls}) sends its close alert only once no
        producer is registered, so unregister first or the connection stays
        open after the BYE, and a client waiting for the close (mbsync)
        hangs.
        """
        self._closing = True
        self._outbox.flush()
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    # -- capabilities -------------------------------------------------------

    def loginAllowed(self):
        return self.secure or plaintextLoginAllowed(self.factory.authConfig, self.peerHost)

    def capabilityList(self):
        # RFC 9051 and RFC 7888 4: IMAP4rev2's LITERAL- next to LITERAL+
        # (the larger promise; L{pymailer.imap.rev2} says why both).
        caps = [b"IMAP4rev1", rev2.IMAP4REV2, b"LITERAL+", rev2.LITERAL_MINUS,
                rev2.UTF8_ACCEPT, b"SASL-IR", b"ID", b"ENABLE", b"IDLE",
                b"NAMESPACE", b"UIDPLUS", b"MOVE", b"UNSELECT", b"SPECIAL-USE",
                b"CREATE-SPECIAL-USE", catenate.CAPABILITY,
                b"CHILDREN", b"CONDSTORE", b"QRESYNC", b"ESEARCH", b"SEARCHRES", b"LIST-EXTENDED",
                b"LIST-STATUS", b"STATUS=SIZE", b"MULTIAPPEND", b"BINARY",
                b"COMPRESS=DEFLATE", *sort.CAPABILITIES, *objectid.CAPABILITIES,
                notify.CAPABILITY,
                b"APPENDLIMIT=%d" % self.factory.maxMessageSize] + self.quotaCapabilities()
        if self.user is None:
            if not self.secure and self.factory.tls is not None:
                caps.append(b"STARTTLS")
            if self.loginAllowed():
                caps.append(b"AUTH=PLAIN")
            else:
                caps.append(b"LOGINDISABLED")
        return caps

    # -- reading commands ---------------------------------------------------

    def dataReceived(self, data):
        # The replies to what this reads go out together at the end.
        outer = sendnow.hold()
        try:
            # With COMPRESS on, what the transport gives is inflated first.
            # Not what LineReceiver hands itself while reading (setLineMode's
            # extra octets) nor b"" (read on what it holds, after a pause).
            if self.compression is not None and data and not self._readingLines:
                return self.compression.received(data)
            return self._readLines(data)
        finally:
            sendnow.release(outer)

    def sendLine(self, line):
        self._outbox.write(line + b"\r\n")

    def _readLines(self, data):
        outer, self._readingLines = self._readingLines, True
        try:
            return IMAP4Server.dataReceived(self, data)
        finally:
            self._readingLines = outer

    def lineLengthExceeded(self, line):
        # Twisted drops the connection silently: say why first.
        self.sendLine(b"* BAD Line too long (at most %d octets)" % MAX_LINE)
        self._bye(b"Line too long")

    def lineReceived(self, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._closing:
            return
        self.resetTimeout()
        if self._skipLine:
            self._skipLine = False
            return
        if self._sasl is not None:
            return self._saslResponse(line)
        if self.idleTag is not None and self._segments is None:
            return self._idleLine(line)
        segments = self._segments if self._segments is not None else []
        segments.append(line)
        marker = LITERAL_AT_END.search(line)
        if marker is None:
            self._segments = None
            self._commands.append(segments)
            if len(segments) == 1 and self.compression is None and _isCompress(line):
                # RFC 4978 3: the client compresses right after this line:
                # read no more lines until COMPRESS has run.
                self.paused = True
                self.transport.pauseProducing()
                self._commands.append(self._afterCompress)
            return self._pump()
        self._segments = segments
        try:
            tag, name = splitCommand(segments[0])
        except ParseError:
            tag, name = b"*", b""
        size, plus = int(marker[2]), bool(marker[3])
        refusal = self._literalRefusal(name, size, len(segments) // 2)
        if refusal is None and marker[1] and name != b"APPEND":
            # RFC 3516 4.4 (and 9): literal8 is APPEND's message only.
            refusal = b"BAD literal8 is allowed in APPEND only"
        if refusal is not None:
            self._segments = None
            self.sendLine(tag + b" " + refusal)
            if plus:
                # The client sends the octets anyway (RFC 7888 4): we will
                # not read them, so the connection cannot go on.
                self._bye(b"Literal refused, the connection cannot go on")
            return
        target = self._appendTarget(name, segments)
        if target is None:
            return self._acceptLiteral(name, size, plus)
        if not self._busy and not self._commands and self._appendCheckKnown(target, size):
            # Nothing runs or waits before this APPEND, and the session
            # knows the check's answer: accepted now, without pausing the
            # transport and resuming it (two epoll_ctl) or a turn of _pump
            # (issue 13: one APPEND in seven commands of a long session).
            return self._acceptLiteral(name, size, plus)
        # APPEND's message: is the mailbox there?  Asked before any "+", so
        # a refused name costs the client no upload; after the commands
        # before it (a pipelined CREATE), with reading paused meanwhile.
        self.paused = True  # LineReceiver: leave buffered input alone
        self.transport.pauseProducing()
        self._commands.append(lambda: self._checkAppend(tag, target, size, plus))
        self._pump()

    def _afterCompress(self):
        """
        After COMPRESS: what was read behind it is inflated when it worked,
        read as lines again when it did not.
        """
        self.paused = False
        if self._closing:
            return
        self._resumeReading()
        rest = self.clearLineBuffer()
        if self.compression is not None:
            self.compression.received(rest)
        else:
            self._readLines(rest)

    def _appendTarget(self, name, segments):
        """
        The mailbox token of an APPEND whose message literal this is, or
        C{None} (another command, or a literal that is not the message).
        """
        if name != b"APPEND" or self.state not in ("auth", "select"):
            return None
        try:
            tokens = tokenize(segments + [b""])  # b"": the literal to come
        except ParseError:
            return None
        return tokens[2] if len(tokens) >= 4 else None

    def _checkAppend(self, tag, target, size, plus):
        def check():
            self._openMailbox(self.mailboxName(target), b"TRYCREATE")
            self.checkQuota(size)  # before the upload, as for the mailbox

        def accepted(_):
            self._acceptLiteral(b"APPEND", size, plus)

        def refused(failure):
            self._segments = None
            if failure.check(ParseError):
                reply = b"BAD " + str(failure.value).encode("utf-8", "replace")
            elif failure.check(CommandFailed):
                reply = b"NO " + str(failure.value).encode("utf-8", "replace")
            else:
                log.failure("IMAP APPEND check failed", failure)
                reply = b"NO [SERVERBUG] Internal error, see the server log"
            if plus:
                # RFC 7888 4: the client sends a non-synchronising literal
                # anyway; read and drop it, then answer.
                self._discard = [size, tag + b" " + reply]
                self.setRawMode()
            else:
                self.sendLine(tag + b" " + reply)

        def resume(_):
            self.paused = False
            if not self._closing:
                self._resumeReading()
                self.dataReceived(b"")

        if self.user is None:
            d = defer.fail(ConnectionError("gone"))
        elif self._appendCheckKnown(target, size):
            d = defer.succeed(None)  # no trip to the store (issue 13)
        else:
            d = self.account.run(check)
        return d.addCallbacks(accepted, refused).addBoth(resume)

    def _appendCheckKnown(self, target, size):
        """
        Whether the session knows the check's answer without the store
        (run in order, after the commands before the APPEND): the target is
        the selected mailbox, which exists as far as the session was last
        told (RFC 9051 6.3.12's "no such mailbox" cannot be the answer;
        deleted meanwhile, the append itself says so and the session ends
        as on any command), and the quota has room as far as the session
        knows (L{quotaRoomKnown}).
        """
        selected = self.selected
        if selected is None:
            return False
        try:
            name = self.mailboxName(target)
        except (ParseError, CommandFailed):
            return False  # the check says why
        return name == selected.name and self.quotaRoomKnown(size)

    def _acceptLiteral(self, name, size, plus):
        if not plus:
            self.sendLine(b"+ Ready for literal data")
        spool = None
        if name == b"APPEND" and size > SPOOL_THRESHOLD:
            spool = SpoolingLiteral(self.factory.store.newAppendSpool(), size,
                                    self.factory.run, self._spoolWritten)
        self._literal = [size, spool, bytearray()]
        if size == 0:
            self._finishLiteral(b"")
        else:
            self.setRawMode()

    def _literalRefusal(self, name, size, before):
        """
        Why a literal of C{size} octets, after C{before} others in the same
        command, is refused, before any C{+}.
        """
        if before >= MAX_LITERALS:
            return b"BAD Too many literals in one command"
        if self.user is None:
            if size > PREAUTH_LITERAL:
                return b"BAD [TOOBIG] Literal too large before login"
            return None
        if name == b"APPEND":
            if size > self.factory.maxMessageSize:
                return b"NO [TOOBIG] Message too large"
            return None
        if size > MAX_LITERAL:
            return b"BAD [TOOBIG] Literal too large"
        return None

    def rawDataReceived(self, data):
        self.resetTimeout()
        if self._discard is not None:
            return self._discardReceived(data)
        literal = self._literal
        need = literal[0]
        chunk, rest = data[:need], data[need:]
        literal[0] -= len(chunk)
        literal[2] += chunk
        spool = literal[1]
        if spool is not None and (len(literal[2]) >= CHUNK or literal[0] == 0):
            pending, literal[2] = bytes(literal[2]), bytearray()
            spool.write(pending)
            if spool.pending > MAX_PENDING_WRITES and not self._spoolFull:
                self._spoolFull = True
                self.transport.pauseProducing()
        if literal[0] == 0:
            self._finishLiteral(rest)

    def _discardReceived(self, data):
        left, reply = self._discard
        if len(data) < left:
            self._discard[0] -= len(data)
            return
        self._discard = None
        self.sendLine(reply)
        # The rest of the refused command's line (its CRLF) goes too.
        self._skipLine = True
        self.setLineMode(data[left:])

    def _spoolWritten(self):
        """A chunk of an APPEND literal is on disk: read again below the limit."""
        spools = [self._literal[1]] if self._literal is not None else []
        if self._spoolFull and all(s is None or s.pending <= MAX_PENDING_WRITES // 2
                                   for s in spools):
            self._spoolFull = False
            self._resumeReading()

    def _resumeReading(self):
        """Read again, unless something else still holds reading stopped."""
        if not (self._closing or self._queueFull or self._spoolFull or self.paused):
            self.transport.resumeProducing()

    def _finishLiteral(self, rest):
        _, spool, buffer = self._literal
        self._literal = None
        if spool is not None:
            spool.finish()
            self._segments.append(spool)
        else:
            self._segments.append(bytes(buffer))
        self.setLineMode(rest)

    def _closeLiteral(self):
        """
        The connection is gone: close every spooled literal not handed to
        a running command (each after its pending writes).
        """
        held = [self._literal[1]] if self._literal is not None else []
        for segments in [self._segments or []] + [c for c in self._commands if isinstance(c, list)]:
            held += [s for s in segments if isinstance(s, SpoolingLiteral)]
        for spool in held:
            if spool is not None:
                spool.close()
        self._literal = None

    def _pump(self):
        # A command that completes at once calls _done, which calls _pump:
        # without this guard every command queued behind a slow one (20,000
        # NOOPs pipelined behind a LOGIN) nested one level deeper, until
        # RecursionError left the session hanging.  The loop runs them.
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._commands and not self._busy and not self._closing:
                segments = self._commands.popleft()
                self._busy = True
                if callable(segments):  # a step between commands (_checkAppend)
                    d = defer.maybeDeferred(segments)
                else:
                    # A command answered at once (FETCH FLAGS, NOOP, a BAD)
                    # returns no Deferred: no chain is built for it.
                    try:
                        d = self._execute(segments)
                    except BaseException:
                        d = Failure()
                    if not isinstance(d, defer.Deferred):
                        if isinstance(d, Failure):
                            self._internalError(d)
                        self._done(None, segments)
                        continue
                d.addBoth(self._settled, segments)
                if self._busy:
                    # Answer pipelined commands strictly in order (twisted #9282).
                    break
        finally:
            self._pumping = False
        self._queueFlowControl()

    def _settled(self, result, segments):
        """A command's Deferred fired: one callback, not an errback and a
        callback (each costs the reactor a turn of Deferred's loop)."""
        if isinstance(result, Failure):
            self._internalError(result)
        self._done(None, segments)

    def _done(self, _, segments):
        for s in segments if isinstance(segments, list) else ():
            if isinstance(s, SpoolingLiteral):
                s.close()  # after its pending writes, in the pool
        self._busy = False
        if self.notify is not None:
            self.notify.idle()
        self._pump()

    def canNotify(self):
        """
        Whether an unsolicited response may go out now (RFC 5465): between
        commands or in IDLE, never inside a command's output.
        """
        return not self._closing and (not self._busy or self.idleTag is not None) \
            and self._idleSync is None

    def _queueFlowControl(self):
        """
        Stop reading while too many commands wait behind a slow one, so a
        client pipelining without end costs bounded memory; read again once
        they have run.  (An APPEND check holds reading paused on its own:
        C{self.paused}, LineReceiver's flag.)
        """
        if self._closing:
            return
        waiting = len(self._commands)
        if waiting >= MAX_QUEUED_COMMANDS and not self._queueFull:
            self._queueFull = True
            self.transport.pauseProducing()
        elif self._queueFull and waiting < MAX_QUEUED_COMMANDS // 2 and not self.paused:
            self._queueFull = False
            self._resumeReading()

    def _internalError(self, failure):
        log.failure("IMAP command failed", failure)

    # -- dispatching --------------------------------------------------------

    def _execute(self, segments):
        try:
            tag, name = splitCommand(segments[0])
            tokens = tokenize(segments, sections=isFetch(segments[0]))
        except ParseError as e:
            tag = segments[0].split(b" ", 1)[0]
            # Not an echo of whatever the client sent: a tag that is not
            # one (8-bit, NULs) is answered untagged (RFC 3501 7.1.3).
            self._bad(tag if isTag(tag) else b"*", str(e).encode())
            return None
        args = tokens[2:]
        uid = False
        if name == b"UID":
            if not args or not isinstance(args[0], Atom):
                self._bad(tag, b"UID needs a command")
                return None
            name = args.pop(0).upper()
            uid = True
            if name not in (b"FETCH", b"STORE", b"SEARCH", b"COPY", b"MOVE", b"EXPUNGE",
                            b"SORT", b"THREAD"):
                self._bad(tag, b"Unknown UID command")
                return None
        handler = getattr(self, "cmd_" + name.decode("ascii", "replace").replace(".", "_"), None)
        if handler is None:
            self._bad(tag, b"Unknown command")
            return None
        states = getattr(handler, "states", ("unauth", "auth", "select"))
        if self.state not in states:
            self._bad(tag, b"Command not valid in this state")
            return None
        started = time.perf_counter()
        try:
            result = handler(tag, args, uid) if getattr(handler, "uid", False) \
                else handler(tag, args)
        except BaseException:
            result = Failure()
        if isinstance(result, defer.Deferred):
            return result.addBoth(self._answer, tag, name, uid, started)
        return self._answer(result, tag, name, uid, started)

    def _answer(self, result, tag, name, uid, started):
        """
        The tagged answer to a command's C{result} (after the changes to
        tell, L{_completed}) or to its failure (L{_failed}), and its time:
        at once, or as the one callback of the command's Deferred.
        """
        if not isinstance(result, Failure):
            try:
                result = self._completed(result, tag, name, uid)
            except BaseException:
                result = Failure()
            if isinstance(result, defer.Deferred):  # telling changes first
                result.addErrback(self._failed, tag)
                return result.addBoth(self._timed, name, uid, started)
        if isinstance(result, Failure):
            try:
                result = self._failed(result, tag)
            except BaseException:
                result = Failure()
        return self._timed(result, name, uid, started)

    def _timed(self, result, name, uid, started):
        # Only commands we implement get here: the label set is bounded.
        histogram = _commandHistograms.get((name, uid))
        if histogram is None:
            histogram = _commandHistograms[name, uid] = metrics.labelled(
                metrics.IMAP_COMMAND_SECONDS, _commandLabel(name, uid))
        histogram.observe(time.perf_counter() - started)
        return result

    def _completed(self, result, tag, name, uid):
        """After a command, report changes to the selected mailbox."""
        self._badCommands = 0
        if self.notify is not None:
            self.notify.commandCompleted(name)
        if isinstance(result, bytes):
            text = result
        else:
            text = name + b" completed"
        if self.selected is not None and name not in (b"LOGOUT",):
            allowExpunge = uid or name not in (b"FETCH", b"STORE", b"SEARCH")
            # RFC 3501 6.1.2: NOOP polls; with nothing heard since the
            # last read, and a store that tells every change, it has
            # nothing to read (issue 13, as for SELECT: _stateCurrent).
            if self.selected.dirty or (name in (b"NOOP", b"CHECK") and not self._stateCurrent()):
                return self._sync(allowExpunge).addCallback(
                    lambda _: self.sendLine(tag + b" OK " + text))
        self.sendLine(tag + b" OK " + text)

    def _bad(self, tag, text):
        """
        Answer BAD; past MAX_BAD_COMMANDS of them in a row (a command that
        works starts the count again: a client trying an extension we lack
        is not garbage) the client is not speaking IMAP, or is probing: say
        BYE and close, as Dovecot does, rather than answer garbage for ever.
        """
        self.sendLine(tag + b" BAD " + text)
        self._badCommands += 1
        if self._badCommands >= MAX_BAD_COMMANDS and not self._closing:
            self._bye(b"Too many invalid commands")

    def _failed(self, failure, tag):
        if failure.check(ParseError):
            self._bad(tag, str(failure.value).encode("utf-8", "replace"))
        elif failure.check(CommandFailed, SpoolFailed):
            self.sendLine(tag + b" NO " + str(failure.value).encode("utf-8", "replace"))
        elif failure.check(ConnectionError) or self._selectedVanished(failure):
            pass
        elif failure.check(MailboxGone):
            self.sendLine(tag + b" NO [NONEXISTENT] Mailbox was deleted meanwhile")
        elif failure.check(binary.UnknownTransferEncoding):
            # RFC 3516 4.3: a Content-Transfer-Encoding we cannot undo.
            self.sendLine(tag + b" NO [UNKNOWN-CTE] Cannot decode content-transfer-encoding "
                          + str(failure.value).encode("ascii", "replace"))
        else:
            log.failure("IMAP command error", failure)
            self.sendLine(tag + b" NO [SERVERBUG] Internal error, see the server log")

    def _sync(self, allowExpunge=True):
        """Tell the client what changed in the selected mailbox (only that is read)."""
        selected = self.selected
        return self.account.run(selected.refresh).addCallback(
            self._applyChanges, selected, allowExpunge)

    def _applyChanges(self, changes, selected, allowExpunge=True):
        if self.selected is selected and not self._closing:
            if selected.validity and changes.uidValidity != selected.validity:
                # Deleted and created again: our UIDs mean nothing now.
                raise MailboxGone(selected.name)
            self._sendLines(selected.apply(changes, allowExpunge, self.condstore, self.qresync))

    def _selectedVanished(self, failure):
        """
        If C{failure} says the selected mailbox was deleted or renamed
        (by another session or tool), say BYE and hang up: RFC 2180 3.2
        lets a server allow the DELETE and disconnect the sessions that
        have the mailbox selected, as Dovecot does.  @return: whether it
        did.
        """
        gone = failure.check(MailboxGone)
        if gone is None or self.selected is None or failure.value.name != self.selected.name:
            return False
        self._unselect()
        if not self._closing:
            self._bye(b"Selected mailbox was deleted, have to disconnect")
        return True

    # -- any state ----------------------------------------------------------

    def cmd_CAPABILITY(self, tag, args):
        self._noArgs(args)
        self.sendLine(b"* CAPABILITY " + b" ".join(self.capabilityList()))

    def cmd_NOOP(self, tag, args):
        self._noArgs(args)

    def cmd_LOGOUT(self, tag, args):
        self._noArgs(args)
        self.sendLine(b"* BYE Logging out")
        self.sendLine(tag + b" OK LOGOUT completed")
        self._hangUp()
        return defer.fail(ConnectionError("logged out"))

    def cmd_ID(self, tag, args):
        # RFC 2971: the client's list is read and ignored.
        self.sendLine(b'* ID ("name" "pymailer")')

    def _sendLines(self, lines):
        """C{lines} in one transport write (each costs the reactor a few calls)."""
        data = b"".join([line + b"\r\n" for line in lines])
        if data:
            self._outbox.write(data)

    def _noArgs(self, args):
        if args:
            raise ParseError("unexpected arguments")

    # -- not authenticated --------------------------------------------------

    def cmd_STARTTLS(self, tag, args):
        self._noArgs(args)
        if self.secure:
            raise ParseError("TLS already active")
        if self.factory.tls is None:
            raise CommandFailed("TLS not available")
        self.sendLine(tag + b" OK Begin TLS negotiation now")
        self._outbox.flush()  # in plaintext, before the handshake
        # RFC 3501 6.2.1 / RFC 2595 3.1: whatever was pipelined after
        # STARTTLS came in plaintext and may be injected: drop, never run.
        self.clearLineBuffer()
        self._commands.clear()
        self._segments = None
        self.transport.startTLS(self.factory.tls)
        self.secure = True
        return defer.fail(ConnectionError("answered"))  # tagged reply sent

    cmd_STARTTLS.states = ("unauth",)

    def cmd_LOGIN(self, tag, args):
        if len(args) != 2:
            raise ParseError("LOGIN needs a user name and a password")
        if not self.loginAllowed():
            raise CommandFailed("[PRIVACYREQUIRED] LOGIN is disabled until STARTTLS")
        user, password = astring(args[0], "user"), astring(args[1], "password")
        return self._passwordLogin(tag, UsernamePassword(user, password))

    cmd_LOGIN.states = ("unauth",)

    def cmd_AUTHENTICATE(self, tag, args):
        if not args or not isinstance(args[0], Atom) or len(args) > 2:
            raise ParseError("AUTHENTICATE needs a mechanism")
        if args[0].upper() != b"PLAIN":
            raise CommandFailed("Unsupported authentication mechanism")
        if not self.loginAllowed():
            raise CommandFailed("[PRIVACYREQUIRED] Authentication is disabled until STARTTLS")
        mechanism = Plain()
        if len(args) == 2:  # RFC 4959 SASL-IR; "=" is an empty response
            initial = bytes(args[1])
            return self._saslStep(tag, mechanism, initial, initial=True)
        d = defer.Deferred()
        self._sasl = (tag, mechanism, d)
        self.sendLine(b"+ ")
        return d

    cmd_AUTHENTICATE.states = ("unauth",)

    def _saslResponse(self, line):
        tag, mechanism, d = self._sasl
        self._sasl = None
        self._saslStep(tag, mechanism, line).chainDeferred(d)

    def _saslStep(self, tag, mechanism, line, initial=False):
        try:
            _, credentials = sasl.step(mechanism, line, initial)
        except sasl.SASLCancelled:
            return defer.fail(ParseError("Authentication cancelled"))
        except sasl.AuthorizationRefused:
            return defer.fail(CommandFailed(
                "[AUTHORIZATIONFAILED] Not authorized to act as another user"))
        except sasl.SASLError as e:
            return defer.fail(ParseError(f"Malformed authentication response ({e})"))
        return self._passwordLogin(tag, credentials)

    def _passwordLogin(self, tag, credentials):
        d = guardedLogin(
            self.portal, self.factory.guard, self.peerHost, credentials,
            IAccountIMAP, "imap",
        )
        d.addCallback(self._loggedIn)
        return d.addErrback(self._loginFailed, tag)

    def _loggedIn(self, result):
        _, avatar, logout = result
        if self._closing:
            logout()
            raise ConnectionError("gone")
        self.account, self._onLogout = avatar, logout
        self.user = avatar.user
        self.state = "auth"
        self.setTimeout(self.POSTAUTH_TIMEOUT)
        return b"[CAPABILITY " + b" ".join(self.capabilityList()) + b"] Logged in"

    def _loginFailed(self, failure, tag):
        if failure.check(LoginBlocked):
            self.sendLine(tag + b" NO [UNAVAILABLE] Too many failed logins, try again later")
            self._bye(b"Too many failed logins")
            raise ConnectionError("locked out")
        failure.trap(UnauthorizedLogin)
        raise CommandFailed("[AUTHENTICATIONFAILED] Authentication failed")

    # -- authenticated: mailboxes -------------------------------------------

    def mailboxName(self, token, forCreate=False):
        """A client's mailbox name -> the store's canonical name, or NO."""
        raw = astring(token, "mailbox name")
        try:
            name = rev2.decodeName(raw, self.enabled.utf8)
        except utf7.UTF7Error as e:
            raise CommandFailed(f"[CANNOT] Bad mailbox name: {e}") from None
        if forCreate and name.endswith("/") and len(name) > 1:
            name = name[:-1]  # RFC 3501 6.3.3: "foo/" creates foo
        try:
            # A new name may not have LIST wildcards or invisible controls
            # (pymailer.store.refusedInNewName): NO [CANNOT], RFC 5530 3.
            return self.factory.store.canonicalName(name, new=forCreate)
        except MailboxNameTooLong as e:
            raise CommandFailed(f"[LIMIT] {e}") from None  # RFC 5530 3
        except ValueError as e:
            raise CommandFailed(f"[CANNOT] Bad mailbox name: {e}") from None

    def encodeName(self, name):
        """A mailbox name as this client reads it (L{rev2.encodeName})."""
        return rev2.encodeName(name, self.enabled.utf8)

    def _normalised(self, token, name):
        """
        RFC 9051 6.3.2, 6.3.4: tell a UTF-8 client that the name it gave
        was stored in NFC, as C{name}.
        """
        self._sendLines(self._normalisedNotice(token, name))

    def _normalisedNotice(self, token, name):
        """The lines L{_normalised} sends: none, or the notice."""
        raw = astring(token)
        if rev2.wasDenormalised(raw, self.enabled.utf8):
            return [rev2.normalisedNotice(raw, name)]
        return []

    def cmd_NAMESPACE(self, tag, args):
        self._noArgs(args)
        self.sendLine(b'* NAMESPACE (("" "/")) NIL NIL')

    def cmd_ENABLE(self, tag, args):
        if not args or not all(isinstance(a, Atom) for a in args):
            raise ParseError("ENABLE needs capabilities")
        # RFC 5161 3.1: ENABLED lists what we enabled and ignores the rest.
        names = {a.upper() for a in args}
        enabled = []
        if b"CONDSTORE" in names:
            self.condstore = True
            enabled.append(b"CONDSTORE")
        if b"QRESYNC" in names:
            # RFC 7162 3.2.3: QRESYNC enables CONDSTORE too.
            self.qresync = self.condstore = True
            enabled.append(b"QRESYNC")
        enabled += self.enabled.enable(names)
        if self.selected is not None:
            self.selected.showRecent = not self.enabled.rev2
        self.sendLine(b" ".join([b"* ENABLED"] + enabled))

    cmd_ENABLE.states = ("auth", "select")

    def cmd_COMPRESS(self, tag, args):
        if len(args) != 1 or not isAtom(args[0], b"DEFLATE"):
            raise ParseError("COMPRESS takes DEFLATE")
        if self.compression is not None:
            raise CommandFailed("[COMPRESSIONACTIVE] DEFLATE is active already")
        # RFC 4978 3: the tagged OK goes out uncompressed, and everything
        # after it, both ways, is compressed.
        self.sendLine(tag + b" OK DEFLATE active")
        self._outbox.flush()  # uncompressed
        log.info("IMAP COMPRESS DEFLATE active for {user}", user=self.user)
        self.compression = compress.Deflate(
            self.transport, self._readLines, self.factory.clock)
        self.transport = self.compression
        return defer.fail(ConnectionError("answered"))  # tagged reply sent

    cmd_COMPRESS.states = ("auth", "select")

    def cmd_CREATE(self, tag, args):
        if len(args) not in (1, 2):
            raise ParseError("CREATE needs a mailbox name")
        name = self.mailboxName(args[0], forCreate=True)
        if name == INBOX:
            raise CommandFailed("[ALREADYEXISTS] INBOX always exists")
        uses = listing.createUses(args[1]) if len(args) == 2 else None

        def create():
            try:
                self.factory.store.createMailbox(self.user, name, uses)
            except KeyError:
                raise CommandFailed("[ALREADYEXISTS] Mailbox exists") from None
            return self.factory.store.mailbox(self.user, name).mailboxId()

        def created(mailboxId):
            self._normalised(args[0], name)
            return objectid.mailboxIdCode(mailboxId) + b" CREATE completed"  # RFC 8474 4.1

        return self.account.run(create).addCallback(created)

    def cmd_DELETE(self, tag, args):
        if len(args) != 1:
            raise ParseError("DELETE needs a mailbox name")
        name = self.mailboxName(args[0])
        if name == INBOX:
            raise CommandFailed("[CANNOT] INBOX cannot be deleted")

        def delete():
            try:
                self.factory.store.deleteMailbox(self.user, name)
            except KeyError:
                raise CommandFailed("[NONEXISTENT] No such mailbox") from None

        return self.account.run(delete).addCallback(self._closeIfMoved, name, b"deleted")

    def _closeIfMoved(self, _, name, what, withChildren=False):
        """
        This session deleted or renamed mailbox C{name}: if it is (or, with
        C{withChildren}, contains) the selected one, close it.  RFC 3501
        does not forbid it; the session goes back to the authenticated
        state, as in Dovecot, and says so with RFC 9051 7.1's CLOSED.
        """
        selected = self.selected
        if selected is not None and (selected.name == name or (
                withChildren and selected.name.startswith(name + "/"))):
            self._unselect()
            self.sendLine(b"* OK [CLOSED] The selected mailbox was " + what)

    def cmd_RENAME(self, tag, args):
        if len(args) != 2:
            raise ParseError("RENAME needs two mailbox names")
        old, new = self.mailboxName(args[0]), self.mailboxName(args[1], forCreate=True)
        store = self.factory.store
        if new == INBOX:
            raise CommandFailed("[ALREADYEXISTS] INBOX always exists")

        def rename():
            if old == INBOX:
                # RFC 3501 6.3.5: move every INBOX message to a new mailbox,
                # leaving INBOX empty (and its children where they are).
                try:
                    store.createMailbox(self.user, new)
                except KeyError:
                    raise CommandFailed("[ALREADYEXISTS] Target exists") from None
                source = self.account.openMailbox(INBOX)
                target = store.mailbox(self.user, new)
                with _flagLimit():
                    source.move([info.uid for info in source.messages()], target)
                return
            try:
                store.renameMailbox(self.user, old, new)
            except KeyError as e:
                if e.args and e.args[0] == old:
                    raise CommandFailed("[NONEXISTENT] No such mailbox") from None
                raise CommandFailed("[ALREADYEXISTS] Target exists") from None
            except ValueError as e:
                code = "LIMIT" if isinstance(e, MailboxNameTooLong) else "CANNOT"
                raise CommandFailed(f"[{code}] {e}") from None

        d = self.account.run(rename).addCallback(
            self._closeIfMoved, old, b"renamed", withChildren=(old != INBOX))
        return d.addCallback(lambda _: self._normalised(args[1], new))

    def cmd_SUBSCRIBE(self, tag, args):
        if len(args) != 1:
            raise ParseError("SUBSCRIBE needs a mailbox name")
        name = self.mailboxName(args[0])

        def subscribe():
            # RFC 3501 6.3.6: the server MAY check that the mailbox exists;
            # we do, so a typo is not kept as a phantom subscription.
            self._openMailbox(name, b"NONEXISTENT")
            self.account.setSubscribed(name, True)

        return self.account.run(subscribe)

    def cmd_UNSUBSCRIBE(self, tag, args):
        if len(args) != 1:
            raise ParseError("UNSUBSCRIBE needs a mailbox name")
        name = self.mailboxName(args[0])
        return self.account.run(self.account.setSubscribed, name, False)

    def _decodeNames(self, *raw):
        try:
            return [rev2.decodeName(r, self.enabled.utf8) for r in raw]
        except utf7.UTF7Error as e:
            raise CommandFailed(f"[CANNOT] Bad mailbox name: {e}") from None

    def cmd_LIST(self, tag, args):
        request = listing.parseList(args)
        if not request.extended:
            return self._basicList(b"LIST", request.reference, request.patterns[0])
        reference, *patterns = self._decodeNames(request.reference, *request.patterns)
        if request.statusItems and b"HIGHESTMODSEQ" in request.statusItems:
            self.condstore = True  # RFC 7162 3.1.7: as STATUS

        def work():
            names = self.factory.store.listMailboxes(self.user)
            subscribed = self.account.subscriptions()
            entries = listing.extendedEntries(request, names, subscribed, reference, patterns,
                                              self.factory.store.specialUses(self.user))
            numbers = {}
            for name, attrs, _ in entries if request.statusItems else ():
                if b"\\NonExistent" in attrs:
                    continue
                try:
                    numbers[name] = status.values(
                        self.account.openMailbox(name).snapshot(), request.statusItems)
                except (KeyError, MailboxGone):
                    continue  # deleted meanwhile: no STATUS (RFC 5819 2)
            return entries, numbers

        def answer(result):
            entries, numbers = result
            for name, attrs, childInfo in entries:
                encoded = self.encodeName(name)
                line = b'* LIST (%s) "/" %s' % (b" ".join(attrs), formatValue(encoded))
                if childInfo:  # RFC 5258 3.5
                    line += b' ("CHILDINFO" (%s))' % b" ".join(childInfo)
                self.sendLine(line)
                if name in numbers:
                    # RFC 5819 2: the STATUS right after its LIST.
                    self.sendLine(status.statusLine(encoded, request.statusItems, numbers[name]))

        return self.account.run(work).addCallback(answer)

    def _basicList(self, command, rawReference, rawPattern):
        reference, pattern = self._decodeNames(rawReference, rawPattern)
        if not pattern:
            if command == b"LIST":  # RFC 3501 6.3.8: the delimiter and root
                self.sendLine(b'* LIST (\\Noselect) "/" ""')
            return None

        def work():
            names = self.factory.store.listMailboxes(self.user)
            if command == b"LSUB":
                return lsubEntries(self.account.subscriptions(), names, reference, pattern)
            return listEntries(names, reference, pattern,
                               self.factory.store.specialUses(self.user), self.enabled.rev2)

        def answer(entries):
            for name, attrs in entries:
                self.sendLine(b"* %s (%s) \"/\" %s" % (
                    command, b" ".join(attrs), formatValue(self.encodeName(name))))

        return self.account.run(work).addCallback(answer)

    def cmd_LSUB(self, tag, args):
        if len(args) != 2:
            raise ParseError("LSUB needs a reference and a pattern")
        return self._basicList(b"LSUB", astring(args[0], "reference"),
                               astring(args[1], "pattern"))

    def _openMailbox(self, name, code):
        """Blocking: the mailbox, or NO with response code C{code}."""
        try:
            return self.account.openMailbox(name)
        except KeyError:
            raise CommandFailed(f"[{code.decode()}] No such mailbox") from None

    def cmd_STATUS(self, tag, args):
        if len(args) != 2:
            raise ParseError("STATUS needs a mailbox and a list of items")
        name = self.mailboxName(args[0])
        items = status.parseItems(args[1])
        if b"HIGHESTMODSEQ" in items:
            self.condstore = True  # RFC 7162 3.1.7: an enabling command

        def work():
            return status.values(self._openMailbox(name, b"NONEXISTENT").snapshot(), items)

        def answer(numbers):
            self.sendLine(status.statusLine(self.encodeName(name), items, numbers))

        return self.account.run(work).addCallback(answer)

    def cmd_APPEND(self, tag, args):
        if len(args) < 2:
            raise ParseError("APPEND needs a mailbox and a message")
        name = self.mailboxName(args[0])
        messages = append.parseMessages(args[1:], self._flagList, self.enabled.utf8Accept)
        spooled = [m.ready for m in append.fileLiterals(messages)]

        selected = self.selected if self.selected is not None \
            and self.selected.name == name else None

        def work(_):
            # Into the selected mailbox: the session's own store object and
            # UIDVALIDITY, not looked up again (deleted or renamed meanwhile,
            # it says MailboxGone, and the session ends as on any command);
            # and what changed there, the new message included, read in
            # the same trip to the pool (its EXISTS goes before the OK).
            mailbox = selected.mailbox if selected is not None \
                else self._openMailbox(name, b"TRYCREATE")
            built, files = catenate.resolve(messages, self.buildCatenation)
            try:
                self.checkQuota(sum(append.size(m) for _, _, m in built))
                with _flagLimit():
                    if selected is None:
                        return (mailbox.uidValidity(), append.appendAll(mailbox, built)), None
                    if len(built) == 1:  # and in one store step (issue 13)
                        flags, date, message = built[0]
                        uid, changes = selected.append(append.source(message), flags, date)
                        return (selected.validity, [uid]), changes
                    uids = append.appendAll(mailbox, built)
            finally:
                for f in files:
                    f.close()
            return (selected.validity, uids), selected.refresh()

        def answer(result):
            (validity, uids), changes = result
            if selected is not None:
                self._applyChanges(changes, selected)
            return b"[APPENDUID %d %s] APPEND completed" % (validity, formatSet(uids))

        ready = defer.gatherResults(spooled, consumeErrors=True).addErrback(
            lambda f: f.value.subFailure)
        return ready.addCallback(lambda _: self.account.run(work, None)).addCallback(answer)

    def buildCatenation(self, catenation):
        """Blocking: a CATENATE message, from this user's mailboxes (RFC 4469)."""
        return catenate.build(catenation, self.account.openMailbox,
                              self.factory.store.newAppendSpool, self.factory.maxMessageSize,
                              self.user)

    def _flagList(self, tokens):
        flags = []
        for t in tokens:
            if not isinstance(t, Atom) or not t:
                raise ParseError("bad flag")
            text = t.decode("ascii", "replace")
            if text.startswith("\\"):
                flag = _FLAG_NAMES.get(text.upper())
                if flag is None:
                    if text.upper() == "\\RECENT":
                        continue  # RFC 3501 2.3.2: clients cannot change it
                    raise ParseError(f"unknown system flag {text}")
                flags.append(flag)
            elif _KEYWORD.fullmatch(text):
                flags.append(text)
            else:
                raise ParseError(f"bad keyword {text[:40]}")
        return tuple(flags)

    # RFC 3501 6.3, RFC 2342: the commands of the authenticated state (they
    # need the account; before login they reached None and logged a
    # traceback).
    for _command in (cmd_NAMESPACE, cmd_CREATE, cmd_DELETE, cmd_RENAME, cmd_SUBSCRIBE,
                     cmd_UNSUBSCRIBE, cmd_LIST, cmd_LSUB, cmd_STATUS, cmd_APPEND):
        _command.states = ("auth", "select")
    del _command

    # -- SELECT ---------------------------------------------------------------

    def cmd_SELECT(self, tag, args, readOnly=False):
        if len(args) not in (1, 2):
            raise ParseError("SELECT needs a mailbox name")
        resync = self._selectParameters(args[1]) if len(args) == 2 else None
        name = self.mailboxName(args[0])
        rev2Session = self.enabled.rev2
        if resync is None and self._reselectKnown(name, readOnly):
            return self._reselect(args[0], rev2Session)
        if self.selected is not None:
            # RFC 9051 6.3.2 (Appendix E 9), RFC 7162 3.2.11: the mailbox
            # selected before is closed, whether this one opens or not; what
            # follows is about the mailbox being opened.
            self.sendLine(b"* OK [CLOSED] Previous mailbox is now closed")
        self._unselect()
        self.state = "auth"

        def work():
            selected = Selected(name, self._openMailbox(name, b"NONEXISTENT"), readOnly)
            selected.showRecent = not rev2Session
            scanned = selected.scan()
            changes = None
            if resync is not None and resync.uidValidity == scanned.uidValidity:
                # RFC 7162 3.2.5.1: a UIDVALIDITY that differs means the
                # client's cache is void: a plain SELECT, nothing more.
                changes = selected.mailbox.changedSince(resync.modseq)
            return selected, scanned, changes

        def answer(result):
            selected, scanned, changes = result
            # In the reactor: built in a pool thread, the maps of 100,000
            # messages came from that thread's malloc arena and the
            # server's peak RSS grew by 20-25 MB (bench/imap_side_by_side.sh).
            selected.apply(scanned)
            self.selected = selected
            self.state = "select"
            self.factory.notifier.subscribe(self.user, name, self._mailboxChanged)
            self._sendLines(self._selectLines(selected, args[0], rev2Session))
            if changes is not None:
                self._resynced(selected, resync, changes)
            return _selectCompleted(readOnly)

        return self.account.run(work).addCallback(answer)

    cmd_SELECT.states = ("auth", "select")

    def _selectLines(self, selected, token, rev2Session):
        """SELECT's untagged lines, for one write (RFC 3501 6.3.1, RFC 9051 6.3.2)."""
        lines = selected.flagsResponses()
        lines.append(b"* %d EXISTS" % len(selected.uids))
        if rev2Session:
            # RFC 9051 6.3.2: no RECENT, no UNSEEN; the mailbox's LIST
            # (its attributes may be left out), with OLDNAME if the
            # client's spelling was not the stored one.
            lines.append(b'* LIST () "/" %s' % formatValue(self.encodeName(selected.name)))
            lines += self._normalisedNotice(token, selected.name)
        else:
            lines.append(b"* %d RECENT" % len(selected.recent))
            flags = selected.flags
            unseen = next((s for s, u in enumerate(selected.uids, 1)
                           if "\\Seen" not in flags[u]), None)
            if unseen is not None:
                lines.append(b"* OK [UNSEEN %d] First unseen" % unseen)
        lines.append(b"* OK [UIDVALIDITY %d] UIDs valid" % selected.validity)
        lines.append(b"* OK [UIDNEXT %d] Predicted next UID" % selected.uidNext)
        # RFC 7162 3.1.2.1: on every SELECT/EXAMINE of a mailbox that
        # keeps mod-sequences, enabled or not.
        lines.append(b"* OK [HIGHESTMODSEQ %d] Highest" % selected.highestModSeq)
        lines.append(b"* OK %s Ok" % objectid.mailboxIdCode(selected.mailboxId))  # RFC 8474 4.2
        return lines

    def _reselectKnown(self, name, readOnly):
        """
        Whether a SELECT of C{name} can be answered from what the session
        holds, with no trip to the store (issue 13: a client that selects
        its INBOX again before each round of work): it is the mailbox
        selected now, read-write as before, no change was noticed since the
        session's last read and none is held back, and the store tells
        every change, other processes' included (L{IExternalChanges}:
        another process's change is heard within the notifier's poll, as
        by IDLE; a store that cannot tell them, Maildir, is read again).
        """
        selected = self.selected
        return (selected is not None and selected.name == name and not readOnly
                and not selected.readOnly and self._stateCurrent())

    def _stateCurrent(self):
        """
        Whether the selected mailbox's state is the store's as far as can
        be known without reading it: no change noticed since the last read
        and none held back (L{Selected.unchangedSinceRead}), on a store
        that tells every change, other processes' too (L{IExternalChanges}).
        """
        return self.selected.unchangedSinceRead() and IExternalChanges.providedBy(
            self.factory.store)

    def _reselect(self, token, rev2Session):
        """
        SELECT of the mailbox selected now, nothing changed (L{_reselectKnown}):
        closed and opened again (RFC 9051 6.3.2: CLOSED first), from the
        session's state.  What a new read would give: no message is
        \\Recent any more (this session claimed them, RFC 3501 2.3.2).
        """
        selected = self.selected
        self.sendLine(b"* OK [CLOSED] Previous mailbox is now closed")
        self.searchResult = frozenset()  # RFC 5182 2.1
        selected.recent = set()
        selected.showRecent = not rev2Session
        self._sendLines(self._selectLines(selected, token, rev2Session))
        return _selectCompleted(False)

    def _selectParameters(self, params):
        """
        The SELECT/EXAMINE parameter list: C{CONDSTORE} (RFC 7162 3.1.8,
        an enabling command) and C{QRESYNC (...)} (3.2.5).

        @return: the L{qresync.Resync}, or C{None}.
        """
        if not isinstance(params, list) or not params:
            raise ParseError("unknown SELECT parameter")
        resync = None
        tokens = iter(params)
        for token in tokens:
            if isAtom(token, b"CONDSTORE"):
                self.condstore = True
            elif isAtom(token, b"QRESYNC") and resync is None:
                if not self.qresync:
                    # RFC 7162 3.2.5: BAD unless ENABLE QRESYNC came first.
                    raise ParseError("QRESYNC is not enabled")
                resync = qresync.parseSelectParameter(next(tokens, None))
            else:
                raise ParseError("unknown SELECT parameter")
        return resync

    def _resynced(self, selected, resync, changes):
        """
        RFC 7162 3.2.5.1: after SELECT's usual responses, what the client
        that knew C{resync} missed: the UIDs expunged (within its known
        UIDs), then each message changed since its mod-sequence, as the
        session's view has it, with UID, FLAGS and MODSEQ.
        """
        known, largest = resync.knownUids, selected.uidNext - 1
        self._sendLines(qresync.vanishedEarlier(qresync.vanishedSince(
            changes, selected, known, largest, resync.seqMatch)))
        self._sendLines(
            selected.fetchUpdate(seq, uid, condstore=True)
            for seq, uid in enumerate(selected.uids, 1)
            if selected.modseq[uid] > resync.modseq
            and (known is None or known.contains(uid, largest)))

    def cmd_EXAMINE(self, tag, args):
        return self.cmd_SELECT(tag, args, readOnly=True)

    cmd_EXAMINE.states = ("auth", "select")

    def _unselect(self):
        # RFC 5182 2.1: SELECT, EXAMINE, CLOSE and UNSELECT empty "$".
        self.searchResult = frozenset()
        if self.selected is not None:
            self.factory.notifier.unsubscribe(self.user, self.selected.name, self._mailboxChanged)
            self.selected = None
            if self.state == "select":
                self.state = "auth"

    def _mailboxChanged(self, stamp=0):
        if self.selected is None:
            return
        self.selected.noticed(stamp)
        if self.notify is not None:
            self.notify.selectedChanged()  # RFC 5465: NOTIFY decides, in IDLE or not
        elif self.idleTag is not None and self._idleSync is None:
            # In one read with the other sessions the same change woke
            # (L{pymailer.imap.fanout}); a bare callback, not a Deferred
            # chain: 10,000 sessions woken at once made 250,000 objects,
            # and a full garbage collection in the middle (issue 14).
            self._idleSync = defer.Deferred()
            self.account.refreshWithOthers(self.selected, self._idleRefreshed)

    def _idleRefreshed(self, changes, selected):
        """The IDLE update's read came back: C{changes}, or a L{Failure}."""
        done = self._idleSync
        if not isinstance(changes, Failure):
            try:
                self._applyChanges(changes, selected)
            except Exception:
                changes = Failure()
        self._idleSynced(changes)
        done.callback(None)  # a DONE waiting for the update

    def _idleSynced(self, result):
        self._idleSync = None
        if isinstance(result, Failure):
            if not self._selectedVanished(result):
                log.failure("IDLE update failed", result)
            return None  # not again at once: the next change or command retries
        if self.selected is not None and self.selected.dirty and self.idleTag is not None:
            self._mailboxChanged()
        return None

    # -- selected state ---------------------------------------------------------

    def cmd_CHECK(self, tag, args):
        self._noArgs(args)

    cmd_CHECK.states = ("select",)

    def cmd_CLOSE(self, tag, args):
        self._noArgs(args)
        selected = self.selected
        self._unselect()
        if selected.readOnly:
            return None
        # RFC 3501 6.4.2: the \Deleted messages go, nothing is told.
        return self.account.run(selected.mailbox.expungeDeleted)

    cmd_CLOSE.states = ("select",)

    def cmd_UNSELECT(self, tag, args):
        self._noArgs(args)
        self._unselect()

    cmd_UNSELECT.states = ("select",)

    def cmd_EXPUNGE(self, tag, args, uid=False):
        uids = None
        if uid:
            if len(args) != 1:
                raise ParseError("UID EXPUNGE needs a UID set")
            seqset = self._sequenceSet(args[0], True)
            largest = self.selected.uids[-1] if self.selected.uids else 0
            uids = set(seqset.select(self.selected.uids, largest))
        else:
            self._noArgs(args)
        if self.selected.readOnly:
            raise CommandFailed("[READ-ONLY] Mailbox is read-only")
        selected = self.selected
        # One trip: the store expunges and reads what to tell in one step.
        return self.account.run(selected.expungeDeleted, uids).addCallback(
            self._applyChanges, selected)

    cmd_EXPUNGE.states = ("select",)
    cmd_EXPUNGE.uid = True

    def _targets(self, token, uid):
        """C{[(seq, uid)]} named by a sequence set (RFC 3501 6.4.8)."""
        seqset = self._sequenceSet(token, uid)
        uids = self.selected.uids
        if uid:
            if not uids:
                return []
            # Each span of the set is a run of sequence numbers: no set of
            # the chosen UIDs (UID FETCH 1:* on 100,000 messages made one).
            targets = []
            for lo, hi in seqset.spans(uids[-1]):
                first, end = bisect.bisect_left(uids, lo), bisect.bisect_right(uids, hi)
                targets += zip(range(first + 1, end + 1), uids[first:end])
            return targets
        count = len(uids)
        for lo, hi in seqset.bounds(count):
            if hi > count or lo < 1:
                raise ParseError("message sequence number out of range")
        picked = seqset.select(range(1, count + 1), count)
        return [(s, uids[s - 1]) for s in picked]

    def _sequenceSet(self, token, uid):
        return esearch.parseSet(token, self.searchResult, self.selected.uids, uid)

    # STORE

    def cmd_STORE(self, tag, args, uid=False):
        args = list(args)
        unchangedSince = None
        if len(args) > 1 and isinstance(args[1], list):
            # RFC 7162 3.1.3: STORE set (UNCHANGEDSINCE n) item flags
            unchangedSince = parseModifiers(args.pop(1), "UNCHANGEDSINCE")
            self.condstore = True
        if len(args) < 3:
            raise ParseError("STORE needs a set, an item and flags")
        targets = self._targets(args[0], uid)
        item = args[1].upper() if isinstance(args[1], Atom) else b""
        mode = _STORE_MODES.get(item.split(b".")[0])
        if mode is None or item.split(b".", 1)[1:] not in ([], [b"SILENT"]):
            raise ParseError("bad STORE item")
        silent = item.endswith(b".SILENT")
        flagTokens = args[2] if len(args) == 3 and isinstance(args[2], list) else args[2:]
        flags = set(self._flagList(flagTokens))
        if self.selected.readOnly:
            raise CommandFailed("[READ-ONLY] Mailbox is read-only")
        selected = self.selected

        def work():
            with _flagLimit():
                return selected.storeFlags([u for _, u in targets], mode, flags, unchangedSince)

        def answer(result):
            (results, failed), changes = result
            # A new keyword is defined before a FETCH shows it.
            self._sendLines(selected.announceKeywords(
                set().union(*(newFlags for newFlags, _ in results.values()))))
            for seq, u in targets:
                if u not in results:
                    continue
                newFlags, modseq = results[u]
                changed = modseq != selected.modseq.get(u)
                selected.flags[u], selected.modseq[u] = set(newFlags), modseq
                if not silent:
                    self.sendLine(selected.fetchUpdate(
                        seq, u, self.condstore, withUid=uid or self.condstore))
                elif changed and self.condstore:
                    # RFC 7162 3.1.3: even .SILENT tells the new MODSEQ.
                    self.sendLine(selected.fetchUpdate(seq, u, True, withFlags=False))
            # Others' changes since; ours are known now and not told again.
            # RFC 3501 7.4.1: no EXPUNGE during STORE (UID STORE may).
            self._applyChanges(changes, selected, allowExpunge=uid)
            if failed:
                failed = set(failed)
                numbers = sorted(u if uid else seq for seq, u in targets if u in failed)
                return b"[MODIFIED %s] Conditional STORE failed" % formatSet(numbers)
            return None

        # One trip: the store changes and reads what to tell in one step.
        return self.account.run(work).addCallback(answer)

    cmd_STORE.states = ("select",)
    cmd_STORE.uid = True

    # COPY / MOVE

    def cmd_COPY(self, tag, args, uid=False, move=False):
        if len(args) != 2:
            raise ParseError("COPY needs a set and a mailbox")
        targets = self._targets(args[0], uid)
        name = self.mailboxName(args[1])
        selected = self.selected
        if move and selected.readOnly:
            raise CommandFailed("[READ-ONLY] Mailbox is read-only")

        def work():
            target = self._openMailbox(name, b"TRYCREATE")
            uids = [u for _, u in targets]
            if not move:  # a copy takes room; a move within the account none
                self.checkQuota(sum(selected.infos[u].size for u in uids if u in selected.infos))
            with _flagLimit():
                if move:
                    pairs = selected.mailbox.move(uids, target)
                else:
                    pairs = selected.mailbox.copy(uids, target)
            return target.uidValidity(), pairs, selected.refresh() if move else None

        def answer(result):
            validity, pairs, scanned = result
            code = b""
            if pairs:
                code = b"[COPYUID %d %s %s] " % (
                    validity, formatSet([p[0] for p in pairs]), formatSet([p[1] for p in pairs]))
            if name == selected.name:
                selected.dirty = True
            if move:
                # RFC 6851 4.3: COPYUID in an untagged OK before the EXPUNGEs.
                if code:
                    self.sendLine(b"* OK " + code + b"Moved")
                self._applyChanges(scanned, selected)
                return b"MOVE completed"
            return code + b"COPY completed"

        return self.account.run(work).addCallback(answer)

    cmd_COPY.states = ("select",)
    cmd_COPY.uid = True

    def cmd_MOVE(self, tag, args, uid=False):
        return self.cmd_COPY(tag, args, uid, move=True)

    cmd_MOVE.states = ("select",)
    cmd_MOVE.uid = True

    # SEARCH

    def cmd_SEARCH(self, tag, args, uid=False):
        try:
            options, args = esearch.parseReturn(list(args))
        except ParseError:
            self.searchResult = frozenset()  # RFC 5182 2.1: a failed SAVE empties $
            raise
        if options is None and self.enabled.rev2:
            # RFC 9051 6.4.4: IMAP4rev2 answers SEARCH with ESEARCH, ALL
            # when no RETURN was given.
            options = frozenset({esearch.ALL})
        if options and esearch.SAVE in options:
            saved, self.searchResult = self.searchResult, frozenset()
        else:
            saved = self.searchResult
        charset = "utf-8"
        if args and isAtom(args[0], b"CHARSET"):
            if len(args) < 2:
                raise ParseError("CHARSET needs a name")
            charset = search.parseCharset(args[1])
            if charset is None:
                raise CommandFailed(search.BAD_CHARSET)
            args = args[2:]
        selected = self.selected
        compiler, predicate = search.compileFor(selected, charset, saved, args)
        if compiler.usesModSeq:
            self.condstore = True  # RFC 7162 3.1.5: an enabling command
        snapshot = search.candidates(selected)

        def work():
            emailIds = objectid.loadEmailIds(selected, [i.uid for _, i, _, _ in snapshot]) \
                if compiler.usesEmailId else None
            return [(u if uid else seq, modseq, u) for seq, u, modseq in search.evaluate(
                snapshot, predicate, selected.mailbox, emailIds)]

        def answer(found):
            if options is not None:
                return self._esearchAnswer(tag, uid, options, found, compiler.usesModSeq)
            self.sendLine(search.resultLine(b"SEARCH", found, compiler.usesModSeq))

        if search.inPool(compiler, snapshot):
            return self.account.run(work).addCallback(answer)
        return answer(work())

    cmd_SEARCH.states = ("select",)
    cmd_SEARCH.uid = True

    # SORT, THREAD (RFC 5256, 5957, 5267): in their own modules.

    def cmd_SORT(self, tag, args, uid=False):
        return sort.command(self, tag, args, uid)

    cmd_SORT.states = ("select",)
    cmd_SORT.uid = True

    def cmd_THREAD(self, tag, args, uid=False):
        return thread.command(self, tag, args, uid)

    cmd_THREAD.states = ("select",)
    cmd_THREAD.uid = True

    def _esearchAnswer(self, tag, uid, options, found, usesModSeq):
        if esearch.SAVE in options:
            self.searchResult = frozenset(esearch.toSave(options, [u for _, _, u in found]))
        line = esearch.esearchResponse(
            tag, uid, options, [(n, m if usesModSeq else None) for n, m, _ in found])
        if line is not None:
            self.sendLine(line)

    # FETCH

    def cmd_FETCH(self, tag, args, uid=False):
        if len(args) not in (2, 3):
            raise ParseError("FETCH needs a set and items")
        targets = self._targets(args[0], uid)
        items = parseFetchItems(args[1], uid)
        selected = self.selected
        extras = []
        vanished = False
        if len(args) == 3:
            modifiers = args[2]
            if isinstance(modifiers, list) and any(isAtom(m, b"VANISHED") for m in modifiers):
                # RFC 7162 3.2.6: UID FETCH only, with CHANGEDSINCE, once
                # QRESYNC is enabled; BAD otherwise.
                if not uid or not self.qresync:
                    raise ParseError("VANISHED needs UID FETCH after ENABLE QRESYNC")
                modifiers = [m for m in modifiers if not isAtom(m, b"VANISHED")]
                vanished = True
            # RFC 7162 3.1.4.1: only the messages changed since, with MODSEQ.
            since = parseModifiers(modifiers, "CHANGEDSINCE")
            targets = [(s, u) for s, u in targets if selected.modseq.get(u, 0) > since]
            extras.append("MODSEQ")
        if extras or any(i.name == "MODSEQ" for i in items):
            self.condstore = True  # RFC 7162 3.1.4: enabling
        if vanished:
            within = self._sequenceSet(args[0], True)

            def vanishedFirst(changes):
                # RFC 7162 3.2.6: the expunged UIDs of the set, before the FETCHes.
                self._sendLines(qresync.vanishedEarlier(qresync.vanishedSince(
                    changes, selected, within, max(selected.uidNext - 1, 1))))
                return self._fetchWithIds(selected, targets, items, extras)

            return self.account.run(selected.mailbox.changedSince, since).addCallback(
                vanishedFirst)
        return self._fetchWithIds(selected, targets, items, extras)

    cmd_FETCH.states = ("select",)
    cmd_FETCH.uid = True

    def _fetchWithIds(self, selected, targets, items, extras):
        """The FETCH, after reading the EMAILIDs it shows (RFC 8474 5.1)."""
        if objectid.needsEmailIds(items):
            return self.account.run(objectid.loadEmailIds, selected, [u for _, u in targets]) \
                .addCallback(lambda _: self._fetchTargets(selected, targets, items, extras))
        return self._fetchTargets(selected, targets, items, extras)

    def _fetchTargets(self, selected, targets, items, extras):
        needsContent = any(i.needsContent for i in items)
        setsSeen = any(i.setsSeen for i in items) and not selected.readOnly
        if not needsContent and not setsSeen and not any(i.needsSummary for i in items):
            lines = sessionFetchLines(selected, targets, items, extras)
            if lines is not None:
                self._outbox.write(lines)
                return None
            # One write per CHUNK octets of responses, not one per message.
            for piece in joinPieces([p for seq, u in targets
                                     for p in fetchPieces(selected, seq, u, items, None, None,
                                                          extras)], CHUNK):
                self._outbox.write(piece)
            return None
        return self._fetchBatches(targets, items, setsSeen, extras)

    @defer.inlineCallbacks
    def _fetchBatches(self, targets, items, setsSeen, extras):
        selected = self.selected
        # Summaries alone (ENVELOPE, BODYSTRUCTURE) are small: larger batches.
        batch = 32 if any(i.needsContent for i in items) else 512
        for start in range(0, len(targets), batch):
            chunk = targets[start:start + batch]
            results = yield self.account.run(
                self._buildFetch, selected, chunk, items, setsSeen, extras)
            # The small messages' responses in one write (up to CHUNK
            # octets), not one a message; a Range streamed from its file.
            pending = deque(joinPieces([p for pieces in results for p in pieces], CHUNK))
            try:
                while pending and not self._closing:
                    piece = pending.popleft()
                    if isinstance(piece, Range):
                        yield self._stream(piece)
                    else:
                        self._outbox.write(piece)
                    if self._paused is not None:
                        yield self._paused
            finally:
                for piece in pending:
                    if isinstance(piece, Range):
                        piece.file.close()
            if self._closing:
                return

    def _markSeen(self, selected, chunk):
        """Blocking: set \\Seen where a FETCH reads a body (RFC 3501 6.4.5)."""
        unseen = [u for _, u in chunk if "\\Seen" not in selected.flags.get(u, set())]
        if not unseen:
            return set()
        results, _ = selected.mailbox.storeFlags(unseen, "add", {"\\Seen"})
        for u, (flags, modseq) in results.items():
            selected.flags[u], selected.modseq[u] = set(flags), modseq
        return set(results)

    def _buildFetch(self, selected, chunk, items, setsSeen, extras):
        """Blocking: the response pieces for a few messages."""
        seen = self._markSeen(selected, chunk) if setsSeen else set()
        # The new flags are told; once CONDSTORE is on, with UID and MODSEQ
        # (RFC 7162 3.1).
        seenExtras = extras + ["FLAGS"] + (["UID", "MODSEQ"] if self.condstore else [])
        out = []
        # ENVELOPE, BODY, BODYSTRUCTURE: from the store's summaries.
        summaries = selected.mailbox.summaries([u for _, u in chunk]) \
            if any(i.needsSummary for i in items) else None
        if not any(i.needsContent for i in items):
            for seq, u in chunk:
                if u in summaries:  # not expunged meanwhile
                    out.append(fetchPieces(selected, seq, u, items, None, None,
                                           seenExtras if u in seen else extras, summaries[u]))
            return out
        # The messages looked up together (one query), each opened in turn.
        sequence = dict((u, seq) for seq, u in chunk)
        for u, content in selected.mailbox.openMessages([u for _, u in chunk]):
            with content:
                if summaries is not None and u not in summaries:
                    continue  # expunged meanwhile
                out.append(fetchPieces(
                    selected, sequence[u], u, items, messageOctets(content),
                    content.duplicate, seenExtras if u in seen else extras,
                    summaries and summaries[u]))
        return out

    @defer.inlineCallbacks
    def _stream(self, piece):
        """Write a file range, reading it in the thread pool chunk by chunk."""
        with piece.file as f:
            offset, left = piece.offset, piece.length
            while left > 0:
                size = min(CHUNK, left)
                chunk = yield self.factory.run(f.readAt, offset, size)
                if not chunk:
                    raise ConnectionError("message shrank while sending it")
                self._outbox.write(chunk)
                offset += len(chunk)
                left -= len(chunk)
                if self._paused is not None:
                    yield self._paused
                if self._closing:
                    raise ConnectionError("connection closed")

    # IDLE

    def cmd_NOTIFY(self, tag, args):
        return notify.command(self, args, CommandFailed)

    cmd_NOTIFY.states = ("auth", "select")

    def cmd_IDLE(self, tag, args):
        self._noArgs(args)
        d = defer.Deferred()
        self.idleTag = (tag, d)
        self.sendLine(b"+ idling")
        if self.selected is not None:
            self._mailboxChanged()
        return d

    cmd_IDLE.states = ("auth", "select")

    def _idleLine(self, line):
        tag, d = self.idleTag
        self.idleTag = None
        if line.upper() != b"DONE":
            d.errback(ParseError("Expected DONE"))
        elif self._idleSync is not None:
            self._idleSync.addBoth(lambda _: d.callback(b"IDLE terminated"))
        else:
            d.callback(b"IDLE terminated")

