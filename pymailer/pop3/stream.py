"""
Sending a stored message as a POP3 multi-line response (RFC 1939 §3), in
constant memory.

Why not Twisted's C{FileSender} with C{POP3.transformChunk}: FileSender reads
the file on the reactor thread, and C{transformChunk} works on each chunk
alone -- it turns CRLF into CR CR LF, and a line starting with C{.} right
after a chunk boundary (or at the very start of the message) goes out
unstuffed, so a client would take C{"\\r\\n.\\r\\n"} there for the end of the
message.  Twisted's C{_HeadersPlusNLines} (TOP) likewise only finds the
header/body separator if it lies inside one read.

Here L{pymailer.dotstuff.DotStuffer} carries its state across chunks (line start, a CR held
back until we see whether LF follows, the TOP line count), and
L{MessageSender} is a streaming producer that reads each chunk in the
thread pool and writes it only while the transport wants more, so at most a
chunk or two of a 50 MB message is in memory at once.

Trusts nothing of the message bytes: any mix of CRLF, bare LF and bare CR is
sent as CRLF lines (bare CR is left alone), and every line starting with
C{.} is stuffed, wherever the chunk boundaries fall.
"""

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from pymailer.dotstuff import DotStuffer

__all__ = ["DotStuffer", "MessageSender", "CHUNK"]

CHUNK = 64 * 1024


@implementer(IPushProducer)
class MessageSender:
    """
    Streams a binary file through a L{DotStuffer} to a consumer (the
    transport), reading each chunk in C{threadpool}.

    @ivar octets: bytes written so far (after stuffing).
    """

    def __init__(self, reactor, threadpool, file, stuffer, chunkSize=CHUNK):
        self.reactor = reactor
        self.threadpool = threadpool
        self.file = file
        self.stuffer = stuffer
        self.chunkSize = chunkSize
        self.octets = 0
        self._consumer = None
        self._paused = False
        self._reading = False
        self._stopped = False
        self._finished = None

    def send(self, consumer):
        """
        @return: a C{Deferred} firing once the terminating C{.} line is
            written, or failing (L{ConnectionLost}, a read error).
        """
        self._consumer = consumer
        self._finished = finished = defer.Deferred()
        consumer.registerProducer(self, True)
        self._readNext()
        return finished

    def _readNext(self):
        if self._paused or self._reading or self._finished is None:
            return
        self._reading = True
        d = deferToThreadPool(self.reactor, self.threadpool,
                              self.file.read, self.chunkSize)
        d.addCallbacks(self._gotChunk, self._fail)

    def _gotChunk(self, data):
        self._reading = False
        if self._stopped:
            return self._fail(ConnectionLost("client went away during transfer"))
        out = self.stuffer.feed(data)
        if out:
            self._write(out)
        if not data or self.stuffer.done:
            self._write(self.stuffer.end())
            self._done()
            self._finished, d = None, self._finished
            d.callback(self.octets)
        else:
            self._readNext()

    def _write(self, data):
        self.octets += len(data)
        self._consumer.write(data)

    def _done(self):
        self._consumer.unregisterProducer()
        self.file.close()

    def _fail(self, failure):
        self._reading = False
        if self._finished is None:
            return None
        self._done()
        self._finished, d = None, self._finished
        d.errback(failure)
        return None

    # -- IPushProducer ------------------------------------------------------

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._readNext()

    def stopProducing(self):
        self._stopped = True
        if not self._reading:
            self._fail(ConnectionLost("client went away during transfer"))
