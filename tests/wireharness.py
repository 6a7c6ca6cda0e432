"""
The four protocols behind one small interface, for the framing property
tests and the fuzzers (C{tests/test_framing.py}, C{tests/test_fuzz.py},
C{bench/fuzz.py}): a L{World} is one server (the real factory or protocol
class, a test store, a clock), L{World.replay} feeds one connection a
session cut into chunks, and L{World.answered} checks that a fresh
connection still gets its greeting and an answer.

Everything runs in memory and at once (store calls inline, time from a
clock advanced by hand), so a spinning or exponential code path shows as a
hang or a CPU measurement here, not as a flaky timeout.  Twisted log events
carrying a failure (C{log.failure}) are collected by L{failuresLogged}.
"""

import base64
import os
import re
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

from twisted.internet.error import ConnectionDone
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from imapharness import Client as IMAPClient, USER as IMAP_USER, PASSWORD as IMAP_PASSWORD
from pymailer.smtp.factory import MTA, SUBMISSIONS
from test_pop3_server import ALICE, PASSWORD as POP3_PASSWORD, World as POP3Store
from test_smtp_server import Client as SMTPClient
from test_smtp_submission import submissionClient

PROTOCOLS = ("smtp", "submission", "imap", "pop3")
# A command every state answers at once, and what its answer starts with.
PROBES = {
    "smtp": (b"NOOP\r\n", b"250 "),
    "submission": (b"NOOP\r\n", b"250 "),
    "imap": (b"p NOOP\r\n", b"p OK"),
    "pop3": (b"CAPA\r\n", b"+OK"),
}


def plain(user, password):
    return base64.b64encode(b"\0" + user + b"\0" + password)


@contextmanager
def failuresLogged():
    """Collect the Twisted log events that carry a failure (tracebacks)."""
    events = []

    def observe(event):
        if "log_failure" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observe)


@contextmanager
def fastDisk():
    """
    No fsync while the worlds run: they are thrown away, and a framing or
    fuzz run makes thousands of them (an fsync is ~0.5 ms here, several per
    APPEND or delivery).
    """
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


# CPU one read may cost before the run is called stalled.  Far above the
# few milliseconds any input should take, far below "the reactor is gone".
STALL_SECONDS = 2.0


class Stalled(Exception):
    """The server spent more than STALL_SECONDS of CPU on one read."""


@contextmanager
def cpuLimit(seconds=STALL_SECONDS):
    """Raise L{Stalled} in the code running when C{seconds} of CPU are spent."""

    def expired(signum, frame):
        raise Stalled(f"more than {seconds} s of CPU on one read")

    previous = signal.signal(signal.SIGPROF, expired)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def describe(event):
    failure = event["log_failure"]
    return f"{event.get('log_format')}: {failure.getTraceback()}"


class Connection:
    """One server connection on a string transport."""

    def __init__(self, proto, transport, tick):
        self.proto, self.transport, self.tick = proto, transport, tick

    @property
    def closed(self):
        return self.transport.disconnecting

    def feed(self, data):
        with cpuLimit():
            self.proto.dataReceived(data)
            self.tick()

    def take(self):
        out = self.transport.value()
        self.transport.clear()
        return out

    def close(self):
        """The client goes away (the factory's connection count drops)."""
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.tick()


class World:
    """One server of a protocol; subclasses say how to connect and probe."""

    name = None

    def __init__(self):
        self._dirs = []

    def scratch(self):
        path = Path(tempfile.mkdtemp(prefix=f"wire-{self.name}-"))
        self._dirs.append(path)
        return path

    def close(self):
        for path in self._dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._dirs = []

    def connect(self):
        raise NotImplementedError

    def normalise(self, output):
        """Replies with what differs between two servers (dates, ids) masked."""
        return output

    def replay(self, chunks):
        """Feed one new connection C{chunks}; everything it answered."""
        c = self.connect()
        out = [c.take()]
        for chunk in chunks:
            if c.closed:
                break
            c.feed(chunk)
            out.append(c.take())
        c.close()
        return self.normalise(b"".join(out))

    def answered(self):
        """Whether a fresh connection is greeted and answers L{probe}."""
        c = self.connect()
        try:
            greeting = c.take()
            if not greeting or c.closed:
                return False
            probe, answer = PROBES[self.name]
            c.feed(probe)
            return c.take().startswith(answer)
        finally:
            c.close()


class SMTPWorld(World):
    """Port 25 (the MTA role): local users of example.org, no AUTH."""

    name = "smtp"
    role = MTA

    def __init__(self):
        World.__init__(self)
        self.client = self.makeClient()

    def makeClient(self):
        return SMTPClient(factoryArgs={"role": self.role})

    def connect(self):
        c = self.client.reconnect()
        transport = c.transport
        # The greeting was read by reconnect(): put it back for replay().
        transport.write(b"".join(
            b"%d %s\r\n" % (code, line.encode()) for code, lines in c.greeting
            for line in lines))
        return Connection(c.proto, transport, lambda: self.client.clock.advance(0))


    def normalise(self, output):
        # Queue ids count the messages of the whole server.
        return re.sub(rb"queued as Q\d+", b"queued as Q", output)


class SubmissionWorld(SMTPWorld):
    """Port 465 (implicit TLS): AUTH PLAIN offered, MAIL needs it."""

    name = "submission"
    role = SUBMISSIONS

    def makeClient(self):
        return submissionClient(role=SUBMISSIONS, failure_delay=0)


class IMAPWorld(World):
    """IMAP over TLS (LOGIN allowed) on a Maildir store of its own."""

    name = "imap"

    def __init__(self):
        World.__init__(self)
        self.client = IMAPClient(self.scratch(), secure=True, failure_delay=0)
        self.client.deliver(b"From: a@example.net\r\nSubject: hello\r\n\r\nfirst\r\n")

    def connect(self):
        c = self.client.connectAgain()
        c.transport.write(c.greeting)
        return Connection(c.protocol, c.transport,
                          lambda: self.client.factory.clock.advance(0))

    def normalise(self, output):
        # UIDVALIDITY and INTERNALDATE come from the clock of the machine.
        output = re.sub(rb"(UIDVALIDITY|APPENDUID|COPYUID) \d+", rb"\1 N", output)
        # RFC 8474 object ids are random per mailbox and message.
        output = re.sub(rb"(MAILBOXID|EMAILID) \([A-Za-z0-9_-]+\)", rb"\1 (ID)", output)
        return re.sub(rb'INTERNALDATE "[^"]*"', b'INTERNALDATE "D"', output)


class POP3World(World):
    """POP3 over TLS (pop3s) on a Maildir store of its own."""

    name = "pop3"

    def __init__(self):
        World.__init__(self)
        self.world = POP3Store(self.scratch(), failure_delay=0)
        self.world.deliver(b"Subject: one\r\n\r\n.dotted\r\nbody\r\n")
        self.world.deliver(b"Subject: two\r\n\r\nsecond\r\n")

    def connect(self):
        s = self.world.connect(implicitTLS=True)
        s.transport.write(s.greeting)
        return Connection(s.proto, s.transport, lambda: self.world.reactor.advance(0))

    def normalise(self, output):
        # UIDL values name the Maildir files, which differ between stores.
        return re.sub(rb"(?m)^(\d+) [!-~]{20,}\r$", rb"\1 UID\r", output)


WORLDS = {w.name: w for w in (SMTPWorld, SubmissionWorld, IMAPWorld, POP3World)}


# -- recorded sessions -------------------------------------------------------

def _literal(data):
    return b"{%d}\r\n" % len(data) + data


MESSAGE = (b"From: <alice@example.org>\r\nTo: <bob@example.org>\r\nSubject: hi\r\n"
           b"\r\n..a stuffed dot\r\nbody \xc3\xa9\r\n")

SESSIONS = {
    "smtp": [
        b"EHLO client.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
        b"DATA\r\n" + MESSAGE + b".\r\nRSET\r\nNOOP\r\nVRFY alice\r\nQUIT\r\n",
        b"HELO c\r\nMAIL FROM:<> SIZE=10\r\nRCPT TO:<team@example.org>\r\n"
        b"BDAT 5\r\nhelloBDAT 0 LAST\r\nQUIT\r\n",
        # malformed
        b"EHLO\r\nMAIL FROM:<bad\r\nRCPT TO:<x@example.org>\r\n\r\nDATA x\r\n"
        b"EHLO a b\r\nNO\x00OP\r\n\xff\xfe\r\nBDAT x\r\nNOOP",
        b"EHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
        b"DATA\r\nbare\nlf\r\n.\r\nMAIL FROM:<e@x>\r\n" + b"NOOP " + b"x" * 600 + b"\r\n"
        b"BDAT -1\r\nBDAT 3 FIRST\r\nEHLO x\r",
    ],
    "submission": [
        b"EHLO c\r\nAUTH PLAIN " + plain(b"alice@example.org", b"alice-pw") + b"\r\n"
        b"MAIL FROM:<alice@example.org> BODY=BINARYMIME\r\nRCPT TO:<bob@example.org>\r\n"
        b"BDAT 20\r\n" + MESSAGE[:20] + b"BDAT %d LAST\r\n" % (len(MESSAGE) - 20)
        + MESSAGE[20:] + b"QUIT\r\n",
        b"EHLO c\r\nAUTH PLAIN\r\n" + plain(b"bob@example.org", b"bob-pw") + b"\r\n"
        b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
        + MESSAGE + b".\r\nQUIT\r\n",
        # malformed
        b"EHLO c\r\nMAIL FROM:<alice@example.org>\r\nAUTH PLAIN !!!\r\nAUTH PLAIN\r\n*\r\n"
        b"AUTH CRAM-MD5\r\nAUTH PLAIN " + plain(b"alice@example.org", b"wrong") + b"\r\n"
        b"BDAT 4 LAST\r\nabcdBDAT 99999999999999\r\nBDAT 2\r\n\r\n",
        b"EHLO c\r\nAUTH PLAIN " + plain(b"alice@example.org", b"alice-pw") + b"\r\n"
        b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
        b"BDAT 3\r\nab",
    ],
    "imap": [
        b"a1 CAPABILITY\r\na2 LOGIN " + IMAP_USER + b" " + IMAP_PASSWORD + b"\r\n"
        b'a3 LIST "" "*"\r\na4 SELECT INBOX\r\na5 APPEND INBOX (\\Seen) '
        + _literal(MESSAGE) + b"\r\na6 FETCH 1:* (FLAGS UID RFC822.SIZE BODY.PEEK[HEADER])\r\n"
        b"a7 UID SEARCH FROM alice NOT DELETED\r\na8 STORE 1 +FLAGS (\\Flagged $x)\r\n"
        b"a9 LOGOUT\r\n",
        b"b1 AUTHENTICATE PLAIN\r\n" + plain(IMAP_USER, IMAP_PASSWORD) + b"\r\n"
        b"b2 EXAMINE INBOX\r\nb3 SEARCH CHARSET UTF-8 TEXT {2+}\r\n\xc3\xa9\r\n"
        b"b4 IDLE\r\nDONE\r\nb5 UID FETCH 1:* (BODY[1])\r\nb6 LOGOUT\r\n",
        # malformed
        b"\r\nNOTAG\r\nc1\r\nc2 BAD(\r\nc3 LOGIN {5}\r\nab\r\n\r\nc4 NOOP ((\r\n"
        b"c5 L\x00GIN\r\nc6 \xff\xfe\r\nc7 SELECT INBOX\r\nc8 LOGIN " + IMAP_USER
        + b" " + IMAP_PASSWORD + b"\r\nc9 FETCH 1 FLAGS\r\nd1 SELECT \"INBOX\r\n"
        b"d2 SELECT INBOX\r\nd3 FETCH 0:x FLAGS\r\nd4 SEARCH NOT\r\nd5 STORE 1 FLAGS (\\Bogus)\r\n"
        b'd6 LIST "" "*%*%*%*%*%*%*%>"\r\nd7 FETCH 1,2,3,4:*,1:4294967295 (UID)\r\nd8 NOOP',
    ],
    "pop3": [
        b"CAPA\r\nUSER " + ALICE.encode() + b"\r\nPASS " + POP3_PASSWORD + b"\r\n"
        b"STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\nDELE 1\r\nLIST 1\r\nRSET\r\nNOOP\r\nQUIT\r\n",
        b"AUTH PLAIN " + plain(ALICE.encode(), POP3_PASSWORD) + b"\r\nSTAT\r\nDELE 2\r\nQUIT\r\n",
        # malformed
        b"\r\nPASS x\r\nUSER\r\nAUTH PLAIN !!\r\nAUTH\r\nRETR 1\r\nUSER a b c\r\nAPOP x y\r\n"
        b"N\x00OP\r\n\xff\r\nUSER " + ALICE.encode() + b"\r\nPASS " + POP3_PASSWORD + b"\r\n"
        b"RETR x\r\nRETR 99\r\nTOP 1\r\nTOP 1 -1\r\nDELE 0\r\nLIST 1 2\r\n" + b"X" * 9000
        + b"\r\nSTAT\r\nNOOP",
    ],
}


def splitAt(data, cuts):
    """C{data} cut at the sorted offsets C{cuts}."""
    out, last = [], 0
    for cut in cuts:
        out.append(data[last:cut])
        last = cut
    out.append(data[last:])
    return [c for c in out if c]
