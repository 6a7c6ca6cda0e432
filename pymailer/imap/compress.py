"""
COMPRESS=DEFLATE (RFC 4978): after C{COMPRESS DEFLATE} both directions of
the connection are raw deflate (RFC 1951, zlib C{wbits=-15}).

L{Deflate} sits between the transport and the protocol, above TLS (the
transport it wraps is the TLS one when there is TLS: RFC 4978 4 wants
compression inside TLS, and a TLS layer below does not know about it).
Writes are compressed as they come and flushed with C{Z_SYNC_FLUSH} once
per reactor turn (RFC 4978 4: the client must be able to decode each
response without waiting for more), so a burst of lines costs one flush.

Trust: the compressed input is the client's and may be a bomb (a few KB
inflating to gigabytes).  Memory stays bounded: each C{decompress} call
makes at most L{CHUNK} octets (C{max_length}); the rest waits as the
compressed C{unconsumed_tail}, not inflated; inflating stops while the
protocol has reading paused (its flow control then holds for compressed
input too) and yields to the reactor after L{TURN} octets, with reading
stopped until what waits is inflated, so a bomb of commands neither
blocks other clients nor piles up memory (compressed input waiting is
what the transport read before it paused: L{Deflate.backlog}).  The
protocol's own limits (line length, literal sizes, queued commands) then
apply to the inflated stream as to a plain one.  Corrupt input closes the
connection.
"""

import zlib
from collections import deque

from twisted.logger import Logger

log = Logger()

CHUNK = 64 * 1024        # inflated octets per decompress() call
TURN = 1024 * 1024       # inflated octets handed on per reactor turn


class Deflate:
    """
    One connection's compression, standing in for its C{transport} (the
    protocol writes to this object and passes what it reads to
    L{received}).

    @param transport: the connection's transport (TLS, when there is TLS).
    @param deliver: called with inflated octets (the protocol's reading).
    @param clock: an C{IReactorTime} for the once-a-turn flush.
    """

    def __init__(self, transport, deliver, clock):
        self._transport = transport
        self._deliver = deliver
        self._clock = clock
        self._inflater = zlib.decompressobj(-15)
        self._deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        # Compressed input not yet inflated: the pieces as received (a
        # deque, not one growing bytes: appending stays O(1)) and the
        # unconsumed tail of the one being inflated.
        self._pieces = deque()
        self._tail = b""
        self.backlog = 0          # compressed octets in both
        self._paused = False      # the protocol asked to stop reading
        self._yielding = False    # we stopped reading until the backlog is inflated
        self._flushCall = None
        self._resumeCall = None
        self._closed = False
        self.octetsIn = self.octetsOut = 0   # inflated in, uncompressed out

    # -- input --------------------------------------------------------------

    def received(self, data):
        """Compressed octets from the client."""
        if self._closed or not data:
            return
        self._pieces.append(data)
        self.backlog += len(data)
        # While a turn's inflating is scheduled, that call goes on with
        # this too: inflating here would skip the per-turn limit.
        if self._resumeCall is None:
            self._inflate()

    def _inflate(self):
        self._resumeCall = None
        handed = 0
        while self.backlog and not self._paused and not self._closed:
            if handed >= TURN:
                # Let other connections run; go on next turn.  Reading
                # stops meanwhile, or a bomb's compressed octets would
                # pile up behind the yield without bound.
                if not self._yielding:
                    self._yielding = True
                    self._transport.pauseProducing()
                self._resumeCall = self._clock.callLater(0, self._inflate)
                return
            if not self._tail:
                self._tail = self._pieces.popleft()
            before = len(self._tail)
            try:
                out = self._inflater.decompress(self._tail, CHUNK)
            except zlib.error as e:
                log.info("IMAP COMPRESS: corrupt deflate stream ({e}), closing", e=e)
                self._closed = True
                self._transport.loseConnection()
                return
            self._tail = self._inflater.unconsumed_tail
            self.backlog -= before - len(self._tail)
            if out:
                handed += len(out)
                self.octetsIn += len(out)
                self._deliver(out)
            elif self._tail:
                break  # zlib wants more input than the tail holds
        if self._yielding and not self._paused and not self._closed:
            # Our own pause only: the protocol's holds until it resumes.
            self._yielding = False
            self._transport.resumeProducing()

    # -- output -------------------------------------------------------------

    def write(self, data):
        if self._closed or not data:
            return
        self.octetsOut += len(data)
        out = self._deflater.compress(data)
        if out:
            self._transport.write(out)
        if self._flushCall is None:
            self._flushCall = self._clock.callLater(0, self.flush)

    def writeSequence(self, seq):
        self.write(b"".join(seq))

    def flush(self):
        """RFC 4978 4: Z_SYNC_FLUSH, so what was written can be decoded now."""
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        if not self._closed:
            self._transport.write(self._deflater.flush(zlib.Z_SYNC_FLUSH))

    def loseConnection(self):
        self.flush()
        self._closed = True
        if self._resumeCall is not None and self._resumeCall.active():
            self._resumeCall.cancel()
        self._transport.loseConnection()

    # -- flow control: reading paused stops inflating too -------------------

    def pauseProducing(self):
        self._paused = True
        self._transport.pauseProducing()

    def resumeProducing(self):
        self._paused = False
        if self.backlog:
            # What waits is inflated first (next turn), and reading goes
            # on once it is (the transport is still paused: ours or the
            # protocol's pause).
            self._yielding = True
            if self._resumeCall is None:
                self._resumeCall = self._clock.callLater(0, self._inflate)
        else:
            self._yielding = False
            self._transport.resumeProducing()

    def __getattr__(self, name):
        # getPeer, getHost, registerProducer, abortConnection, ...
        return getattr(self._transport, name)
