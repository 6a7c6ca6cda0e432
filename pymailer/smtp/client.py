"""
The SMTP client the relay agent speaks to other servers with.

Our own, not Twisted's C{SMTPClient}: that one dot-stuffs per 16 KiB chunk
and never at the start of the message, so a "." line on a chunk boundary
ends the message early on the wire, and its callback state machine knows
nothing of PIPELINING.  Here every command returns a C{Deferred} of its reply;
replies are matched to commands in order, so pipelined commands need nothing
special.  Each wait has the RFC 5321 §4.5.3.2 timeout.

Trusts nothing from the server: reply lines are bounded, malformed replies
fail the command.
"""

import re

from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver


# RFC 5321 §4.5.3.2, in seconds.
TIMEOUTS = {
    "greeting": 300,
    "MAIL": 300,
    "RCPT": 300,
    "DATA": 120,
    "block": 180,
    "end": 600,
    "other": 300,
}


class SMTPClientError(Exception):
    """The conversation failed (timeout, lost connection, bad reply)."""


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines

    @property
    def text(self):
        return " ".join(self.lines)

    def __str__(self):
        return f"{self.code} {self.text}"

    @property
    def ok(self):
        return 200 <= self.code < 400

    @property
    def temporary(self):
        return 400 <= self.code < 500


class SMTPClientProtocol(LineOnlyReceiver):
    """
    One connection to a remote SMTP server.  L{greeting} fires with the
    220 reply; then call L{command}, L{sendData}, L{quit}.
    """

    log = Logger()
    MAX_LENGTH = 4096
    MAX_REPLY_LINES = 100

    def __init__(self, clock, timeoutScale=1.0):
        self.clock = clock
        self.timeoutScale = timeoutScale
        self.greeting = defer.Deferred()
        self._pending = [(self.greeting, self._startTimer("greeting"))]
        self._lines = []
        self.extensions = {}
        self.connected = True
        # Messages whose data began on this connection (a reused session's
        # count; and a failure before it grows sent nothing).
        self.transactions = 0

    # -- replies ------------------------------------------------------------

    def _startTimer(self, kind):
        return self.clock.callLater(TIMEOUTS[kind] * self.timeoutScale, self._timedOut, kind)

    def _timedOut(self, kind):
        self._failAll(SMTPClientError(f"timeout waiting for the {kind} reply"))
        self.transport.abortConnection()

    def lineReceived(self, line):
        m = re.match(rb"^([2-5]\d\d)([ -]?)(.*)$", line)
        if m is None or len(self._lines) > self.MAX_REPLY_LINES:
            self._failAll(SMTPClientError(f"malformed reply {line[:80]!r}"))
            self.transport.loseConnection()
            return
        self._lines.append(m.group(3).decode("utf-8", "replace"))
        if m.group(2) == b"-":
            return
        reply, self._lines = Reply(int(m.group(1)), self._lines), []
        if not self._pending:
            self.log.warn("unexpected reply {reply}", reply=reply)
            return
        d, timer = self._pending.pop(0)
        if timer.active():
            timer.cancel()
        d.callback(reply)

    def lineLengthExceeded(self, line):
        self._failAll(SMTPClientError("reply line too long"))
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.connected = False
        self._failAll(SMTPClientError(f"connection lost: {reason.getErrorMessage()}"))

    def _failAll(self, exc):
        pending, self._pending = self._pending, []
        for d, timer in pending:
            if timer.active():
                timer.cancel()
            d.errback(exc)

    def _expect(self, kind):
        d = defer.Deferred()
        self._pending.append((d, self._startTimer(kind)))
        return d

    # -- commands -------------------------------------------------------------

    def command(self, line, kind="other"):
        """Send one command line; fire with its L{Reply}."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        d = self._expect(kind)
        self.sendLine(line)
        return d

    @defer.inlineCallbacks
    def ehlo(self, hostname):
        """EHLO (HELO if refused); record the extensions offered."""
        reply = yield self.command(f"EHLO {hostname}")
        if reply.ok:
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.partition(" ")
                self.extensions[keyword.upper()] = params
            return reply
        reply = yield self.command(f"HELO {hostname}")
        self.extensions = {}
        return reply

    def supports(self, keyword):
        return keyword in self.extensions

    def maxSize(self):
        value = self.extensions.get("SIZE", "")
        # size-value = 1*20DIGIT (RFC 1870 §4); the peer's text is not trusted.
        ok = value.isascii() and value.isdigit() and len(value) <= 20
        return int(value) if ok and int(value) > 0 else None

    @defer.inlineCallbacks
    def sendData(self, sender):
        """
        DATA, then the message through C{sender} (a
        L{pymailer.dotstuff.MessageSender}: stuffed, streamed, ended with
        "."); fires with the reply to the end of data.
        """
        self.transactions += 1
        reply = yield self.command(b"DATA", "DATA")
        if reply.code != 354:
            return reply
        try:
            yield sender.send(self.transport)
        except Exception as e:
            raise SMTPClientError(f"sending the message failed: {e}")
        return (yield self._expect("end"))

    @defer.inlineCallbacks
    def sendChunks(self, source, readChunk):
        """
        RFC 3030: the message in BDAT chunks, unaltered (BINARYMIME).
        """
        self.transactions += 1
        chunk = yield readChunk(source)
        while True:
            following = (yield readChunk(source)) if chunk else b""
            last = b" LAST" if not following else b""
            d = self._expect("end" if last else "block")
            self.transport.write(b"BDAT %d%s\r\n" % (len(chunk), last) + chunk)
            reply = yield d
            if not reply.ok or last:
                return reply
            chunk = following

    def quit(self):
        if not self.connected:
            return defer.succeed(None)
        d = self.command(b"QUIT")
        d.addErrback(lambda f: None)
        d.addBoth(lambda _: self.transport.loseConnection())
        return d
