"""
What the external scanners (L{clamav}, L{rspamd}) share: the spooled
message streamed to a daemon in chunks read in the thread pool, and what
happens when the daemon cannot say anything (down, too slow, refusing the
message): C{fail = "open"} accepts and marks the message unscanned,
C{fail = "closed"} costs a 451 4.7.0 the sender retries.
"""

import re

from twisted.internet import defer, task
from twisted.internet.error import ConnectError
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from pymailer.policy.decision import Decision
from pymailer.policy.verdict import logVerdict

CHUNK_SIZE = 64 * 1024
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


class ScanError(Exception):
    """The daemon answered, but not with a verdict (e.g. clamd's size limit)."""


def printable(text, limit=200):
    """C{text} safe for a reply line or a header field: no CR, LF or controls."""
    return _UNPRINTABLE.sub(" ", str(text)).strip()[:limit]


def isField(field, name):
    """Is C{field} (a header line, bytes) the field C{name}?"""
    head = field.split(b":", 1)[0].strip().lower()
    return head == name.lower().encode()


class MessageReader:
    """
    The spooled message, opened and read in C{CHUNK_SIZE} pieces in the
    thread pool.  Reads and the close run one at a time (a lock), so a
    close after a cancelled scan never races a read still in a thread.
    """

    def __init__(self, inThread, file, size):
        self._inThread = inThread
        self._file = file
        self.size = size
        self._lock = defer.DeferredLock()

    @classmethod
    def open(cls, inThread, message):
        def opened():
            f = message.openData()
            size = f.seek(0, 2)
            f.seek(0)
            return f, size

        return inThread(opened).addCallback(lambda fs: cls(inThread, *fs))

    def read(self):
        """A C{Deferred} of the next chunk, C{b""} at the end."""
        return self._lock.run(self._inThread, self._file.read, CHUNK_SIZE)

    def close(self):
        return self._lock.run(self._inThread, self._file.close)


@implementer(IBodyProducer)
class ChunkProducer:
    """
    The message as a streaming producer (an HTTP request body, clamd's
    INSTREAM): one chunk read in a thread at a time, written when it
    arrives, paused while the consumer's buffer is full.
    """

    def __init__(self, reader):
        self.reader = reader
        self.length = reader.size
        self._paused = None
        self._stopped = False

    @defer.inlineCallbacks
    def startProducing(self, consumer):
        while True:
            if self._paused is not None:
                yield self._paused
            if self._stopped:
                raise task.TaskStopped()
            chunk = yield self.reader.read()
            if self._stopped:
                raise task.TaskStopped()
            if not chunk:
                return
            consumer.write(chunk)

    def pauseProducing(self):
        if self._paused is None:
            self._paused = defer.Deferred()

    def resumeProducing(self):
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self):
        self._stopped = True
        self.resumeProducing()


def failureReason(failure, daemon):
    """A short reason for the log and the unscanned mark."""
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return f"{daemon} timed out"
    if failure.check(ScanError):
        return printable(failure.value)
    if failure.check(ConnectError):
        return f"{daemon} unreachable"
    return printable(f"{daemon} failed: {failure.getErrorMessage()}")


def unscanned(facts, check, fail, field, reason, queueId):
    """
    The decision for a message the daemon did not judge: C{fail = "closed"}
    refuses for now (RFC 3463 §3.8: 4.7.0, a temporary security failure);
    C{"open"} accepts it with C{field: unscanned (reason)}.
    """
    if fail == "closed":
        logVerdict(facts, check, "tempfail", reason, queueId=queueId)
        return Decision.tempfail(
            451, "4.7.0", f"Message not scanned ({reason}), try again later",
            f"{check}.unscanned")
    logVerdict(facts, check, "unscanned", reason, queueId=queueId)
    return Decision.addHeaders([f"{field}: unscanned ({reason})\r\n".encode()],
                               f"{check}.unscanned")
