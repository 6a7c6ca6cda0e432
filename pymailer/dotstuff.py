"""
Dot-stuffing (RFC 5321 §4.5.2, RFC 1939 §3) for messages streamed in chunks:
the one encoder, and the one producer streaming a file through it, that the
SMTP client (relay) and the POP3 server send with.  The producer reads each
chunk in the thread pool and writes only while the transport wants more, so
a 50 MB message costs a chunk or two of memory.

Its state carries across chunks (line start, a CR held back until we see
whether LF follows, the TOP line count), so a line starting with "." is
stuffed wherever the chunk boundaries fall -- which Twisted's per-chunk
C{transformChunk} gets wrong.  Trusts nothing of the message bytes: any mix
of CRLF, bare LF and bare CR goes out as CRLF lines.
"""

import re

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

CHUNK = 64 * 1024

_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")


class DotStuffer:
    """
    Turns a message, fed in chunks of any size, into dot-stuffed text: CRLF
    line endings, C{.}-stuffed lines, then the terminating C{.} line from
    L{end}.

    @param bodyLines: for POP3 TOP, the number of body lines to send after
        the headers and the blank line; C{None} sends everything.
    @param bareCRIsNewline: also turn a bare CR into CR LF.  The SMTP client
        does, so that no stray CR reaches the next hop (smuggling); POP3
        leaves it to the reader.
    @ivar done: the TOP limit is reached; further input is ignored.
    """

    def __init__(self, bodyLines=None, bareCRIsNewline=False):
        self.bareCRIsNewline = bareCRIsNewline
        self.done = False
        self._atLineStart = True  # of the output, for stuffing
        self._heldCR = False
        self._limited = bodyLines is not None
        self._inHeaders = True
        self._linesLeft = bodyLines
        self._cutLineStart = True

    def feed(self, data):
        """@return: the bytes to send for C{data} (possibly empty)."""
        if self.done or not data:
            return b""
        if self._heldCR:
            data = b"\r" + data
            self._heldCR = False
        if data.endswith(b"\r"):
            # Is it CRLF split over two chunks, or a bare CR?  Next chunk says.
            data = data[:-1]
            self._heldCR = True
        return self._process(data)

    def _process(self, data):
        if self.bareCRIsNewline:
            data = _ANY_NEWLINE.sub(b"\r\n", data)
        else:
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self._limited:
            data = self._cut(data)
        if not data:
            return data
        # RFC 1939 §3, RFC 5321 §4.5.2: a line starting with "." gets one
        # more "." first.
        if self._atLineStart and data[:1] == b".":
            data = b"." + data
        data = data.replace(b"\r\n.", b"\r\n..")
        self._atLineStart = data.endswith(b"\r\n")
        return data

    def _cut(self, data):
        """TOP (RFC 1939 §7): the headers, the blank line, n body lines."""
        if not data:
            return data
        pos = 0
        while True:
            i = data.find(b"\r\n", pos)
            if i == -1:
                break
            end = i + 2
            lineStart = self._cutLineStart if pos == 0 else True
            if self._inHeaders:
                if i == pos and lineStart:  # the empty line ending headers
                    self._inHeaders = False
                    if self._linesLeft == 0:
                        self.done = True
                        return data[:end]
            else:
                self._linesLeft -= 1
                if self._linesLeft == 0:
                    self.done = True
                    return data[:end]
            pos = end
        self._cutLineStart = data.endswith(b"\r\n")
        return data

    def end(self):
        """@return: what is left, a line end if needed, and C{.CRLF}."""
        out = b""
        if self._heldCR and not self.done:
            out = self._process(b"\r")
        self._heldCR = False
        if not self._atLineStart:
            out += b"\r\n"
        return out + b".\r\n"


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
