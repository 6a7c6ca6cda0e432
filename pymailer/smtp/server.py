"""
The SMTP server protocol (RFC 5321) for the MTA role, on Twisted's ESMTP.

Trusts nothing from the client.  Every reply carries an RFC 3463 enhanced
status code (RFC 2034); commands pipelined in one packet (RFC 2920) are
answered in order even when a check takes a Deferred; lines are bounded; the
message body is streamed through L{pymailer.smtp.data.DataDecoder} into the
intake, never held whole.  It knows nothing of disks or mailboxes: it talks
to an L{pymailer.interfaces.IMessageIntake} obtained from the portal.  Nor
does it judge: at each stage it asks the factory's policy chain (an
L{pymailer.interfaces.IPolicy}) and turns its decision into a reply.
"""

import re
import time

from twisted.cred.credentials import Anonymous
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.mail.smtp import COMMAND, ESMTP
from zope.interface import implementer

from pymailer import metrics
from pymailer.envelope import Session
from pymailer.connlimit import hostOf
from pymailer.interfaces import IGoodbye, IMessageIntake
from pymailer.limits import andThen
from pymailer.policy.decision import Facts
from pymailer.sendnow import closeNow, writeNow
from pymailer.steps import isDeferred, runSteps, settled
from pymailer.smtp import data as smtpdata, submission
from pymailer.smtp.address import parsePathCommand, unquoteLocalPart
from pymailer.smtp.reply import BAD_MAILBOX, DEFAULT_ENHANCED, SMTPReply
from pymailer.smtp.security import AUTH_MODE, SessionSecurity

DATA = "DATA"
BDAT = "BDAT"

# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF;
# RFC 4954 §4 allows AUTH and its responses 12288.
MAX_COMMAND_LINE = 512
MAX_AUTH_LINE = 12288
# Message bytes gathered before a write to the spool: small messages go to
# disk in one thread hop with their commit.
WRITE_BATCH = 256 * 1024
# Pipelined input held while a command waits: beyond it, stop reading.
MAX_BUFFERED = 64 * 1024
# 452s for recipients past max_recipients before they count as errors
# (Postfix's smtpd_recipient_overshoot_limit default).
RECIPIENT_OVERSHOOT_LIMIT = 1000

# RFC 3463 §3.4: X.3.0, mail system trouble; 4xx so that the client keeps
# the message and tries again (a disk error is not the message's fault).
STORAGE_FAILED = SMTPReply(451, "4.3.0", "Could not store the message, try again later")

# RFC 5321 §3.8: 421 when the server must shut down; RFC 3463 §3.5: 4.3.2,
# system not accepting network messages.
SHUTTING_DOWN = SMTPReply(421, "4.3.2", "Service shutting down, try again later")

_DATA_PROBLEMS = {
    smtpdata.BARE_NEWLINE: SMTPReply(
        554, "5.6.0",
        "Message refused: bare CR or LF in message text (RFC 5321 section 2.3.8)",
    ),
    smtpdata.NUL: SMTPReply(
        554, "5.6.0", "Message refused: NUL character in message text"
    ),
    smtpdata.LONG_LINE: SMTPReply(
        552, "5.3.4",
        "Message refused: a text line is longer than 1000 octets "
        "(RFC 5321 section 4.5.3.1.6)",
    ),
}


def _isXtext(value):
    # RFC 3461 §4: printable ASCII but "+" and "=", or "+XX" hex escapes.
    return re.fullmatch(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+", value) is not None


def _rcptDSNParams(params):
    """RFC 3461 §4.1-4.2: NOTIFY and ORCPT of a RCPT command."""
    notify = orcpt = None
    for key, value in params.items():
        if key == "NOTIFY":
            words = tuple(w.upper() for w in (value or "").split(","))
            allowed = {"SUCCESS", "FAILURE", "DELAY"}
            if not (words == ("NEVER",) or (words and set(words) <= allowed)):
                raise SMTPReply(501, "5.5.4", "Bad NOTIFY parameter")
            notify = words
        elif key == "ORCPT":
            addrType, _, addr = (value or "").partition(";")
            if not addrType or not addr or not _isXtext(addr) or len(value) > 500:
                raise SMTPReply(501, "5.5.4", "Bad ORCPT parameter")
            orcpt = value
        else:
            raise SMTPReply(555, "5.5.4", f"Unsupported parameter {key}")
    return notify, orcpt


class Transaction:
    """
    One MAIL ... DATA (or BDAT ... LAST) transaction.

    @ivar message: the L{IIncomingMessage} once data has started.
    @ivar size: octets received so far.
    @ivar problem: the reply refusing the message, once one is known; the
        data is still read to its end so the session stays in step.
    @ivar session: the L{Session} as the envelope records it, made once at
        MAIL: nothing it holds can change before the transaction ends
        (EHLO, STARTTLS and AUTH end or refuse it).
    """

    def __init__(self, sender, params, session=None):
        self.sender = sender
        self.session = session
        self.smtputf8 = "SMTPUTF8" in params
        self.body = (params.get("BODY") or "7BIT").upper()
        self.recipients = []  # (address, notify, orcpt)
        self.dsnRet = (params.get("RET") or "").upper() or None
        self.dsnEnvid = params.get("ENVID")
        self.declaredSize = int(params.get("SIZE") or 0)  # checked in _checkMailParams
        self.message = None
        self.size = 0
        self.problem = None


@implementer(IGoodbye)
class SMTPServer(SessionSecurity, ESMTP):
    """
    Subclasses L{ESMTP} for its extension dispatch (C{ext_*}), its AUTH and
    STARTTLS machinery, the portal login and the idle timeout, but replaces:

     - the framing (C{dataReceived}): Twisted's C{LineOnlyReceiver} passes
       bare LF inside DATA (SMTP smuggling) and drops over-long lines
       silently; here command lines get C{500 5.5.2} and DATA is decoded by
       L{smtpdata.DataDecoder};
     - the dispatch, so a command whose check returns a Deferred holds back
       the commands pipelined behind it (twisted #8126);
     - STARTTLS and AUTH (see L{SessionSecurity});
     - MAIL, RCPT and DATA, so that one spool file serves all recipients
       (Twisted makes one C{IMessage} per recipient) and a storage failure
       is a temporary C{451 4.3.0}, never the permanent 550 of
       C{SMTP._messageHandled}.
    """

    log = Logger()

    def __init__(self, factory):
        ESMTP.__init__(self)
        self.factory = factory
        self.host = factory.greetingName
        self.timeout = factory.limits.idle_timeout
        self.callLater = factory.reactor.callLater
        self.intake = None
        self._buffer = b""
        self._busy = False
        self._goodbye = False
        self._processing = False
        self._paused = False
        self._discardingLine = False
        self._disconnected = False
        self._errors = 0
        self._overshoot = 0
        self._heloName = None
        self._protocolName = "ESMTP"
        self._txn = None
        self._decoder = None
        self._bdatRemaining = None
        self._bdatLast = False
        self._pendingData = []
        self._pendingSize = 0
        self._onLogout = None
        self._outbox = []
        self.facts = Facts()

    # -- replies ------------------------------------------------------------

    def reply(self, code, enhanced, text):
        """
        Queue one reply, each line carrying its enhanced code; it goes out
        with the others of its command group (L{_flushReplies}).  A 4xx or
        5xx counts toward C{max_errors}.
        """
        if self._disconnected:
            return
        self._queueReply(code, enhanced, text)
        if code >= 400:
            self._errors += 1
            if code != 421 and self._errors > self.factory.limits.max_errors:
                self._closeWith(421, "4.7.0", "Too many errors, closing connection")

    def _queueReply(self, code, enhanced, text):
        """Queue one reply without counting it (L{reply} counts errors)."""
        lines = text.split("\n")
        last = len(lines) - 1
        for i, line in enumerate(lines):
            sep = "-" if i < last else " "
            prefix = f"{code}{sep}{enhanced} " if enhanced else f"{code}{sep}"
            self._outbox.append((prefix + line + "\r\n").encode("utf-8"))

    def _send(self, data):
        """Queue raw reply bytes (the greeting, the EHLO answer)."""
        if not self._disconnected:
            self._outbox.append(data)

    def _flushReplies(self):
        """
        Write every queued reply in one transport write.

        RFC 2920 §3.2: the server may hold the replies to a group of
        pipelined commands until it has processed the last command of the
        group, but must send them before it waits for more input.  So
        replies go out when the input buffer holds no complete command to
        run (L{_processBuffer}), and before the connection closes or
        changes to TLS.  One write per group is one TCP segment (one TLS
        record) instead of one per reply, sent at once (L{writeNow}).
        """
        if self._outbox:
            out, self._outbox = self._outbox, []
            writeNow(self.transport, b"".join(out))

    def sendCode(self, code, message=b""):
        """
        Twisted's own replies (AUTH, STARTTLS) get an enhanced code too.
        """
        text = message.decode("utf-8", "replace")
        self.reply(code, DEFAULT_ENHANCED.get(code), text)

    def replyError(self, failure):
        if failure.check(SMTPReply):
            e = failure.value
            self.reply(e.code, e.enhanced, e.text)
        else:
            self.log.failure("unexpected error in SMTP session", failure)
            self.reply(451, "4.3.0", "Local error in processing, try again later")

    def _closeWith(self, code, enhanced, text, now=False):
        """
        The last reply, then the connection closes.

        @param now: closed at once if the reply has gone out (L{closeNow}:
            the session's C{connectionLost} runs before this returns);
            else on the reactor's next turn.
        """
        self.reply(code, enhanced, text)
        self._flushReplies()
        self._disconnected = True
        self._buffer = b""
        if now:
            closeNow(self.transport)
        else:
            self.transport.loseConnection()

    def greeting(self):
        return self.host + b" ESMTP pymailer"

    def connectionMade(self):
        self.factory.clients.opened(self)
        self.setTimeout(self.timeout)
        self.secure = self.factory.role.implicitTLS
        self._peerHost = hostOf(self.transport.getPeer())
        self._helo = (None, self._peerHost.encode("ascii", "replace"))
        self.facts.clientAddress = self._peerHost
        self.facts.role = self.factory.role.name
        # Commands a client sends before the greeting wait behind the check.
        self._run(self._greetClient, None)
        if not self._busy:
            self._flushReplies()

    def _greetClient(self, _):
        def greet(decision):
            if decision.refuses:
                self._recordRefusal(decision)
                self._logRefusal("CONNECT", SMTPReply(
                    decision.code, decision.enhanced, decision.text, decision.reason or "policy"))
                # RFC 5321 §3.1: 554 (or 421) instead of the greeting.
                return self._closeWith(decision.code, decision.enhanced, decision.text)
            # RFC 2034 §3: no enhanced code on the greeting.
            self._send(b"220 " + self.greeting() + b"\r\n")

        return self._steps(self.replyError, lambda _: self._ask("checkConnect"), greet)

    def _ask(self, stage, *args):
        """
        The policy chain's decision at C{stage}, with the facts refreshed:
        the L{Decision} itself when the chain answers at once, else a
        C{Deferred} of it (L{IPolicy}).  Called from L{_steps} or a
        Deferred's callback, which turn what it raises into a reply.
        """
        facts = self.facts
        facts.helo = self._heloName
        facts.tls = bool(self.secure)
        facts.authenticatedAs = self.authenticatedAs
        return getattr(self.factory.policy, stage)(facts, *args)

    def _steps(self, refused, *steps):
        """
        Run a command's steps in order, each given the previous one's
        result: at once while they answer at once (no policy check, or
        one answered from memory, or a C{Deferred} that has already
        fired), and from the first that is pending on, as it fires
        (L{runSteps}).  Without a Deferred or a generator per command, a
        session without slow checks costs a few function calls per
        command (issue 14).

        @param refused: given the L{Failure} of a step that raises or
            fails; answers it (L{_refusedBy}).
        @return: C{None} once done, or the C{Deferred} the command waits
            on (L{_run} holds the commands pipelined behind it).
        """
        try:
            result = runSteps(None, *steps)
        except Exception:
            refused(Failure())
            return None
        if isDeferred(result):
            return result.addErrback(refused)
        return None

    def _judge(self, decision, recipient=None):
        """
        A refusing decision becomes the error reply (and maybe a close).

        @param recipient: the RCPT being judged, for the record.
        """
        if decision.refuses:
            self._recordRefusal(decision, recipient)
            if decision.disconnect:
                # The reply goes out here; the error below only stops the
                # command (a closed session sends nothing more).
                self._closeWith(decision.code, decision.enhanced, decision.text)
            raise SMTPReply(decision.code, decision.enhanced, decision.text,
                            decision.reason or "policy")
        return decision

    def _recordRefusal(self, decision, recipient=None):
        if recipient is None:
            # At DATA: the message's recipients.
            recipient = ", ".join(self.facts.recipients)
        self.factory.events.rejected(
            decision.reason or "policy", self._peerHost, self.facts.sender, recipient,
            f"{decision.code} {decision.enhanced} {decision.text}")

    def _logRefusal(self, stage, reply, sender=None, recipients=()):
        """One mail log record for a refused command (L{MailLog.refused})."""
        reason = reply.reason
        if reason is None and reply.enhanced == BAD_MAILBOX:
            reason = "unknown_recipient"
        self.factory.mailLog.refused(
            stage, reply.code, reply.enhanced, reply.text, self._peerHost,
            sender=sender, recipients=recipients, reason=reason)

    def _refuse(self, stage, reply, sender=None, recipients=()):
        """Log and send the refusal of a command of the transaction."""
        self._logRefusal(stage, reply, sender, recipients)
        self.reply(reply.code, reply.enhanced, reply.text)

    def _refusedBy(self, stage, sender=None, recipients=()):
        """
        An errback that logs a refusal (an L{SMTPReply}) and answers it
        (L{replyError}: an unexpected error is logged and answered 451).
        """
        def answer(failure):
            if failure.check(SMTPReply):
                self._logRefusal(stage, failure.value, sender, recipients)
            self.replyError(failure)

        return answer

    def timeoutConnection(self):
        self._closeWith(421, "4.4.2", f"{self.factory.hostname} Error: timeout exceeded")

    def connectionLost(self, reason):
        self._disconnected = True
        self.setTimeout(None)
        self._abortMessage()
        self.factory.connectionClosed(self._peerHost)
        self.factory.clients.closed(self)
        ESMTP.connectionLost(self, reason)

    # -- framing --------------------------------------------------------------

    def dataReceived(self, data):
        self._buffer += data
        self._processBuffer()

    def _processBuffer(self):
        if self._processing:
            return
        self._processing = True
        try:
            # Each step says whether it consumed input: an incomplete command
            # line (no LF yet) waits for the next read instead of being
            # looked at again and again on the reactor thread.
            progress = True
            while progress and self._buffer and not self._busy and not self._disconnected:
                if self._decoder is not None:
                    progress = self._dataReceived()
                elif self._bdatRemaining is not None:
                    progress = self._chunkReceived()
                else:
                    progress = self._commandReceived()
        finally:
            self._processing = False
        if not (self._busy and b"\n" in self._buffer):
            # Nothing more of the group to run now: the client may be
            # waiting for these replies (RFC 2920 §3.2).
            self._flushReplies()
        self._flowControl()

    def _flowControl(self):
        if self._disconnected:
            return
        tooMuch = len(self._buffer) > MAX_BUFFERED
        if tooMuch and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        elif not tooMuch and self._paused:
            self._paused = False
            self.transport.resumeProducing()

    def _lineLimit(self):
        if self.mode == AUTH_MODE or self._buffer[:5].upper() == b"AUTH ":
            return MAX_AUTH_LINE
        return MAX_COMMAND_LINE

    def _commandReceived(self):
        """
        Run one command line from the buffer.

        @return: whether any input was consumed (C{False} while the line's
            LF has not arrived yet).
        """
        limit = self._lineLimit()
        newline = self._buffer.find(b"\n")
        if newline < 0:
            if len(self._buffer) > limit:
                # Answer at once and drop the rest of the line as it comes,
                # rather than buffer it or close silently as Twisted would.
                self._buffer = b""
                if not self._discardingLine:
                    self._discardingLine = True
                    self.reply(500, "5.5.2", "Line too long")
                return True
            return False
        line, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
        if self._discardingLine:
            self._discardingLine = False
            return True
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) + 2 > limit:
            self.reply(500, "5.5.2", "Line too long")
            return True
        self.resetTimeout()
        if self.mode == AUTH_MODE:
            self._run(self.state_AUTH, line)
        else:
            self._dispatch(line)
        return True

    def _dispatch(self, line):
        if b"\r" in line or b"\x00" in line:
            self.reply(501, "5.5.2", "Syntax error: CR or NUL in command")
            return
        verb, _, rest = line.strip(b" \t").partition(b" ")
        if not verb:
            self.reply(500, "5.5.2", "Syntax error: empty command")
            return
        try:
            method = self.lookupMethod(verb.decode("ascii"))
        except UnicodeDecodeError:
            method = None
        self._run(method or self.do_UNKNOWN, rest.strip(b" \t"))

    def _run(self, method, argument):
        result = method(argument)
        try:
            # Done already (a fired Deferred): nothing to hold back.
            result = settled(result)
        except Exception:
            return self.replyError(Failure())
        if isDeferred(result):
            self._busy = True
            result.addErrback(self.replyError)
            result.addBoth(self._commandDone)

    def _commandDone(self, _):
        self._busy = False
        if self._goodbye:
            self.sayGoodbye()
        else:
            self._processBuffer()

    def sayGoodbye(self):
        """
        The server is stopping: 421 (RFC 5321 §3.8), after the command in
        flight (so a message being committed gets its 250 first); a message
        still arriving is dropped, never queued.
        """
        self._goodbye = True
        if self._busy or self._disconnected:
            return
        self._abortMessage()
        self._closeWith(SHUTTING_DOWN.code, SHUTTING_DOWN.enhanced, SHUTTING_DOWN.text)

    # -- session commands -----------------------------------------------------

    def do_UNKNOWN(self, rest):
        self.reply(500, "5.5.2", "Error: command not recognized")

    def _greet(self, rest, extended):
        try:
            name = rest.decode("utf-8")
        except UnicodeDecodeError:
            self.reply(501, "5.5.2", "Syntax error: EHLO/HELO argument is not UTF-8")
            return
        if not name or " " in name:
            self.reply(501, "5.5.4", "Syntax: EHLO hostname")
            return
        self._resetTransaction()
        self._heloName = name
        return self._steps(self._refusedBy("HELO"), lambda _: self._ask("checkHelo"),
                           self._judge, lambda _: self._welcome(rest, name, extended))

    def _welcome(self, rest, name, extended):
        self._helo = (rest, self._helo[1])
        self._protocolName = "ESMTP" if extended else "SMTP"
        # RFC 2034 §3: no enhanced code on the HELO/EHLO reply.
        lines = [f"{self.factory.hostname} Hello {name} [{self._peerHost}]"]
        if extended:
            lines += self.extensionLines()
        last = len(lines) - 1
        for i, line in enumerate(lines):
            self._send(f"250{'-' if i < last else ' '}{line}\r\n".encode("utf-8"))

    def do_HELO(self, rest):
        return self._greet(rest, extended=False)

    def do_EHLO(self, rest):
        return self._greet(rest, extended=True)

    def extensionLines(self):
        return [
            f"SIZE {self.factory.limits.max_message_size}",
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "BINARYMIME",
            "DSN",
        ] + self.securityExtensions()

    def do_NOOP(self, rest):
        self.reply(250, "2.0.0", "Ok")

    def do_RSET(self, rest):
        self._resetTransaction()
        self.reply(250, "2.0.0", "Ok")

    def do_QUIT(self, rest):
        # The 221 has gone out: closed now (closeNow), not on the
        # reactor's next turn (each message's last step, issue 14).
        self._closeWith(221, "2.0.0", "Bye", now=True)

    def do_VRFY(self, rest):
        # RFC 5321 §3.5.3: 252 when we will not say whether a user exists.
        self.reply(252, "2.5.0", "Cannot VRFY user, but will accept message")

    def do_EXPN(self, rest):
        self.reply(502, "5.5.1", "EXPN not available")

    def do_HELP(self, rest):
        self.reply(214, "2.0.0", "See RFC 5321")

    def _resetTransaction(self):
        txn, self._txn = self._txn, None
        if txn is not None and txn.message is not None:
            txn.message.abort()

    # -- the transaction ------------------------------------------------------

    def _session(self, smtputf8=False):
        """
        The session as the envelope records it.  C{smtputf8}: the
        transaction's MAIL had SMTPUTF8, which changes the protocol name, so
        it is per transaction, not per session.
        """
        tlsVersion, tlsCipher = self.tlsDetails()
        # RFC 3848: ESMTP, plus S for TLS and A for an authenticated client;
        # RFC 6531 §3.7.4: UTF8SMTP(S)(A) for a transaction with SMTPUTF8.
        protocol = self._protocolName
        if protocol == "ESMTP":
            protocol = "UTF8SMTP" if smtputf8 else protocol
            protocol += ("S" if tlsVersion else "") + ("A" if self.authenticatedAs else "")
        hidden = self.factory.hideClientIP
        return Session(
            helo=self._heloName or "",
            clientAddress="" if hidden else self._peerHost,
            protocol=protocol,
            authenticatedAs=self.authenticatedAs,
            tlsVersion=tlsVersion,
            tlsCipher=tlsCipher,
        )

    def _decodeArgument(self, rest):
        try:
            return rest.decode("utf-8")
        except UnicodeDecodeError:
            raise SMTPReply(501, "5.5.2", "Syntax error: argument is not UTF-8")

    def do_MAIL(self, rest):
        if self._heloName is None:
            return self.reply(503, "5.5.1", "Error: send HELO/EHLO first")
        if self._txn is not None:
            return self.reply(503, "5.5.1", "Error: nested MAIL command")
        try:
            self.checkAuthenticated()
            sender, params = parsePathCommand(
                self._decodeArgument(rest), "FROM", allowNull=True
            )
            self._checkMailParams(sender, params)
        except SMTPReply as e:
            return self._refuse("MAIL", e)
        sender = unquoteLocalPart(sender)
        size = int(params.get("SIZE") or 0)
        session = self._session("SMTPUTF8" in params)

        def askPolicy(_):
            self.facts.newTransaction()
            self.facts.sender = sender
            return self._ask("checkMail")

        def accepted(_):
            self._txn = Transaction(sender, params, session)
            self.reply(250, "2.1.0", f"Sender <{sender}> ok")

        return self._steps(
            self._refusedBy("MAIL", sender),
            self._anonymousLogin,
            lambda _: self.intake.checkCapacity(size),
            lambda _: self.intake.validateSender(session, sender, params),
            askPolicy, self._judge, accepted)

    def _checkMailParams(self, sender, params):
        for key, value in params.items():
            if key == "SIZE":
                # size-value = 1*20DIGIT (RFC 1870 §4), ASCII digits only
                # (str.isdigit also takes "²", which int() refuses).
                if value is None or not (value.isascii() and value.isdigit()) or len(value) > 20:
                    raise SMTPReply(501, "5.5.4", "Bad SIZE parameter")
                # RFC 1870 §6.1: a declared size over the limit: 552.
                if int(value) > self.factory.limits.max_message_size:
                    raise SMTPReply(
                        552, "5.3.4",
                        "Message size exceeds fixed maximum message size",
                    )
            elif key == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME", "BINARYMIME"):
                    raise SMTPReply(501, "5.5.4", "Bad BODY parameter")
            elif key == "SMTPUTF8":
                if value is not None:
                    raise SMTPReply(501, "5.5.4", "SMTPUTF8 takes no value")
            elif key == "RET":
                # RFC 3461 §4.3.
                if (value or "").upper() not in ("FULL", "HDRS"):
                    raise SMTPReply(501, "5.5.4", "Bad RET parameter")
            elif key == "ENVID":
                # RFC 3461 §4.4: xtext, at most 100 characters.
                if not value or len(value) > 100 or not _isXtext(value):
                    raise SMTPReply(501, "5.5.4", "Bad ENVID parameter")
            else:
                raise SMTPReply(555, "5.5.4", f"Unsupported parameter {key}")
        if not sender.isascii() and "SMTPUTF8" not in params:
            # RFC 6531 §3.4: UTF-8 addresses need SMTPUTF8.
            raise SMTPReply(553, "5.6.7", "UTF-8 address requires SMTPUTF8")

    def _anonymousLogin(self, _=None):
        if self.intake is not None:
            return None
        d = self.portal.login(Anonymous(), None, IMessageIntake)

        def loggedIn(result):
            _, self.intake, self._onLogout = result

        return d.addCallback(loggedIn)

    def do_RCPT(self, rest):
        txn = self._txn
        if txn is None:
            return self.reply(503, "5.5.1", "Error: need MAIL command")
        try:
            recipient, params = parsePathCommand(
                self._decodeArgument(rest), "TO", allowNull=False, allowPostmaster=True
            )
        except SMTPReply as e:
            return self._refuse("RCPT", e, txn.sender)
        try:
            notify, orcpt = _rcptDSNParams(params)
            if not recipient.isascii() and not txn.smtputf8:
                raise SMTPReply(553, "5.6.7", "UTF-8 address requires SMTPUTF8")
            recipient = unquoteLocalPart(recipient)
        except SMTPReply as e:
            return self._refuse("RCPT", e, txn.sender, [recipient])
        if len(txn.recipients) >= self.factory.limits.max_recipients:
            return self._refuseOvershoot(txn.sender, recipient)

        def route(_):
            d = self.intake.validateRecipient(txn.session, txn.sender,
                                              recipient, txn.declaredSize)
            return d.addErrback(self._unknownRecipient, recipient)

        def accepted(_):
            if self._txn is txn:
                txn.recipients.append((recipient, notify, orcpt))
                self.facts.recipients.append(recipient)
            self.reply(250, "2.1.5", f"Recipient <{recipient}> ok")

        return self._steps(
            self._refusedBy("RCPT", txn.sender, [recipient]),
            route, lambda _: self._ask("checkRecipient", recipient),
            lambda decision: self._judge(decision, recipient), accepted)

    def _refuseOvershoot(self, sender, recipient):
        """
        452 for a recipient past C{max_recipients} (RFC 5321 4.5.3.1.10),
        not counted as an error up to L{RECIPIENT_OVERSHOOT_LIMIT} of them:
        a client told 452 sends the rest in a later transaction, so a large
        batch is no abuse, and counting each 452 would close the session
        (421) before its DATA and lose the recipients already accepted.
        Past the limit they count, as Postfix's
        C{smtpd_recipient_overshoot_limit} does.
        """
        reply = submission.TOO_MANY_RECIPIENTS
        self._overshoot += 1
        if self._overshoot > RECIPIENT_OVERSHOOT_LIMIT:
            return self._refuse("RCPT", reply, sender, [recipient])
        self._logRefusal("RCPT", reply, sender, [recipient])
        if not self._disconnected:
            self._queueReply(reply.code, reply.enhanced, reply.text)

    def _unknownRecipient(self, failure, recipient):
        """
        No such user: policy may turn the 550 into a refusal of the client
        (a directory harvest guesses addresses; a peer MTA does not).
        """
        failure.trap(SMTPReply)
        if failure.value.enhanced != BAD_MAILBOX:
            return failure
        reply = failure.value
        self.factory.events.rejected("unknown_recipient", self._peerHost, self.facts.sender,
                                     recipient, f"{reply.code} {reply.enhanced} {reply.text}")
        def judged(decision):
            self._judge(decision, recipient)  # raises a refusal
            return failure  # else the 550 stands

        return andThen(self._ask("checkUnknownRecipient", recipient), judged)

    def _checkReadyForData(self, txn):
        if txn is None:
            raise SMTPReply(503, "5.5.1", "Error: need MAIL command")
        if not txn.recipients:
            # RFC 5321 §3.3: 554 when no RCPT was accepted.
            raise SMTPReply(554, "5.5.1", "Error: no valid recipients")

    def do_DATA(self, rest):
        txn = self._txn
        try:
            self._checkReadyForData(txn)
            if txn.message is not None:
                raise SMTPReply(503, "5.5.1", "Error: DATA after BDAT")
            if txn.body == "BINARYMIME":
                # RFC 3030 §3: a BINARYMIME body can only be sent with BDAT.
                raise SMTPReply(503, "5.5.1", "Error: BINARYMIME requires BDAT")
            if rest:
                raise SMTPReply(501, "5.5.4", "Syntax: DATA takes no argument")
        except SMTPReply as e:
            return self.reply(e.code, e.enhanced, e.text)
        self.mode = DATA
        self._decoder = smtpdata.DataDecoder()
        txn.message = self._openMessage()
        self.reply(354, None, "End data with <CR><LF>.<CR><LF>")

    def do_BDAT(self, rest):
        words = rest.split()
        if not (1 <= len(words) <= 2 and words[0].isdigit() and len(words[0]) <= 12) or (
            len(words) == 2 and words[1].upper() != b"LAST"
        ):
            # The chunk's length is unknown: nothing to skip, so stay in
            # command mode (the client will be out of step and see errors).
            return self.reply(501, "5.5.4", "Syntax: BDAT size [LAST]")
        self._bdatRemaining = int(words[0])
        self._bdatLast = len(words) == 2
        txn = self._txn
        try:
            self._checkReadyForData(txn)
        except SMTPReply as e:
            # RFC 3030 §2: the chunk is read, then the error given.
            txn = self._txn = Transaction("", {})
            txn.problem = e
        if txn.message is None and txn.problem is None:
            txn.message = self._openMessage()
        self.mode = BDAT
        if self._bdatRemaining == 0:
            self._run(self._endOfChunk, None)

    def _openMessage(self):
        return submission.openMessage(self.intake, self.factory.policy, self.facts)

    def _chunkReceived(self):
        take = self._buffer[: self._bdatRemaining]
        self._buffer = self._buffer[len(take):]
        self._bdatRemaining -= len(take)
        self._accept(take)
        if self._bdatRemaining == 0:
            self._run(self._endOfChunk, None)
        elif self._pendingSize >= WRITE_BATCH:
            self._run(self._flushData, None)
        return bool(take)

    def _endOfChunk(self, _):
        txn, last = self._txn, self._bdatLast
        self._bdatRemaining = None
        self.mode = COMMAND
        self.resetTimeout()
        if txn.problem is not None and txn.message is None:
            self._txn = None
            return self._refuse("DATA", txn.problem)
        if last or txn.problem is not None:
            return self._finishMessage()
        d = self._flushData(None)

        def received(_):
            self.reply(250, "2.0.0", f"{txn.size} octets received")

        return d.addCallback(received)

    def _accept(self, payload):
        """Count message octets and keep them for the next spool write."""
        txn = self._txn
        txn.size += len(payload)
        if txn.problem is None and txn.size > self.factory.limits.max_message_size:
            txn.problem = SMTPReply(
                552, "5.3.4", "Message size exceeds fixed maximum message size"
            )
        if txn.problem is not None:
            self._dropPendingData()
        elif payload:
            self._pendingData.append(payload)
            self._pendingSize += len(payload)

    def _dataReceived(self):
        payload, rest = self._decoder.feed(self._buffer)
        self._buffer = b""
        self._accept(payload)
        if self._decoder.problem is not None and self._txn.problem is None:
            self._txn.problem = _DATA_PROBLEMS[self._decoder.problem]
        if rest is not None:
            self._buffer = rest
            self._decoder = None
            self.mode = COMMAND
            self.resetTimeout()
            self._run(lambda _: self._finishMessage(), None)
        elif self._pendingSize >= WRITE_BATCH:
            self._run(self._flushData, None)
        # The decoder took the whole buffer (holding an incomplete line).
        return True

    def _takePendingData(self):
        data = b"".join(self._pendingData)
        self._dropPendingData()
        return data

    def _dropPendingData(self):
        self._pendingData = []
        self._pendingSize = 0

    def _flushData(self, _):
        txn = self._txn
        d = txn.message.write(self._takePendingData())

        def failed(failure):
            self.log.failure("could not write to the spool", failure)
            if txn.problem is None:
                txn.problem = STORAGE_FAILED

        return d.addErrback(failed)

    def _finishMessage(self):
        """The end of DATA or BDAT LAST: refuse, or commit and answer 250."""
        txn = self._txn
        self._txn = None
        message = txn.message
        recipients = [address for address, _, _ in txn.recipients]
        if txn.problem is not None:
            self._dropPendingData()
            d = message.abort()
            d.addCallback(lambda _: self._refuse("DATA", txn.problem, txn.sender, recipients))
            return d
        started = time.perf_counter()
        self.facts.size = txn.size

        def committed(envelope):
            self.factory.mailLog.accepted(
                envelope.queueId, envelope.sender, recipients, envelope.size, self._peerHost,
                self.authenticatedAs, [r.address for r in envelope.delivered()])
            self.factory.events.messageAccepted(
                self.factory.role.name, envelope.queueId, envelope.sender,
                [r.address for r in envelope.recipients], self._peerHost)
            self.reply(250, "2.0.0", f"Ok: queued as {envelope.queueId}")

        def failed(failure):
            message.abort()
            if failure.check(SMTPReply):
                self._logRefusal("DATA", failure.value, txn.sender, recipients)
                return self.replyError(failure)
            # A disk error is temporary: the client keeps the message and
            # retries, instead of a 5xx bouncing it for good.
            self.log.failure("could not commit {qid}", failure, qid=message.queueId)
            self._refuse("DATA", STORAGE_FAILED, txn.sender, recipients)

        def timed(result):
            metrics.labelled(metrics.SMTP_DATA_SECONDS, self.factory.role.name).observe(
                time.perf_counter() - started)
            return result

        d = self._steps(
            failed,
            lambda _: message.write(self._takePendingData()),
            lambda _: submission.commitMessage(
                message, lambda m: self._ask("checkData", m), self._judge,
                lambda decision: self._envelope(txn, message, decision)),
            committed)
        if d is None:
            return timed(None)
        return d.addBoth(timed)

    def _envelope(self, txn, message, decision):
        """The envelope to queue, with what policy added and where it files."""
        return submission.envelope(
            message.queueId, txn.sender, txn.recipients, decision,
            txn.session, txn.size, txn.body, txn.smtputf8,
            txn.dsnRet, txn.dsnEnvid)

    def _abortMessage(self):
        self._decoder = None
        self._bdatRemaining = None
        self._resetTransaction()
