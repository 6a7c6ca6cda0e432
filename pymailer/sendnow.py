"""
Replies sent the moment they are ready.

Twisted's TCP transport never sends in C{write}: it buffers the bytes, asks
the reactor to watch the socket for room (an C{epoll_ctl}), sends on the
next turn of the loop, and stops watching (another C{epoll_ctl}).  A
protocol that answers each command with one short reply pays two system
calls and a loop turn per reply, and each system call lets the disk threads
take the GIL from the reactor: on the SMTP accept path (issue 14) that was
14 C{epoll_ctl} per message, 10 % of the reactor thread's time.

L{writeNow} sends at once when nothing is waiting in the transport's buffer;
what the socket does not take is buffered as C{write} would, behind nothing,
so the order of the bytes is kept.  Anything else (TLS, data already
waiting, a closing connection, a test's C{StringTransport}) goes through
C{write}.

L{Outbox} adds holding to it for IMAP: the writes one reactor call makes
(reading a command, or firing a store call's Deferred) go out in one send
at its end.
"""

from twisted.internet.main import CONNECTION_DONE
from twisted.internet.tcp import Connection
from twisted.python.failure import Failure


def _idle(transport):
    """A plain TCP transport, open, with nothing waiting to be sent."""
    return (isinstance(transport, Connection) and not transport.TLS
            and transport.connected and not transport.disconnecting
            and not transport._writeDisconnected
            and not transport._tempDataLen and transport.offset == len(transport.dataBuffer))


def writeNow(transport, data):
    """Write C{data} to C{transport}, sending what the socket takes at once."""
    if data and _idle(transport):
        sent = transport.writeSomeData(data)
        # Not a count: the connection is lost, and write() below lets the
        # reactor find that out as it would have.
        if isinstance(sent, int):
            data = data[sent:]
    if data:
        transport.write(data)


def closeNow(transport):
    """
    Close C{transport} at once when everything written to it has been
    sent (L{_idle}, no producer); otherwise C{loseConnection}.

    Twisted's C{loseConnection} stops reading and asks the reactor to
    watch the socket for room (two C{epoll_ctl}), closes on the next turn
    of the loop when the buffer is empty, and stops watching (a third):
    for a connection whose last reply has already gone out, this closes
    it here, as that turn would, and as C{loseConnection} itself does
    after a half-close: the protocol's C{connectionLost} is called before
    this returns.
    """
    if _idle(transport) and transport.producer is None:
        transport.disconnecting = True
        transport.stopReading()
        transport.stopWriting()
        transport.connectionLost(Failure(CONNECTION_DONE))
    else:
        transport.loseConnection()


# -- replies held for the rest of a reactor call --------------------------
#
# A command's reply is often several writes (untagged data, then the tagged
# line) made in one reactor call: the one that read the command, or the
# one that fired its store call's Deferred (L{pymailer.threadpool}).  Sent
# at once, each would be a segment of its own; through C{write}, the
# reactor's write turn (two C{epoll_ctl}, an event) joins them.  Held for
# the rest of the call instead, they go out in one send.

# The outboxes holding replies, while a reactor call holds them (L{hold}).
_held = None
# A write this large goes out at once (after what is held), so that the
# transport's buffer fills and pauses its producer as it would have.
HOLD_LIMIT = 64 * 1024


def hold():
    """
    Hold what L{Outbox}es are given until L{release}; C{True} if this
    call is the outermost hold (only that one's release sends).
    """
    global _held
    if _held is not None:
        return False
    _held = []
    return True


def release(outer):
    """Send what was held since the outermost L{hold}, one write per outbox."""
    global _held
    if outer:
        held, _held = _held, None
        for outbox in held:
            outbox.flush()


class Outbox:
    """
    A protocol's writes: sent at once (L{writeNow}) on its current
    C{transport}, or held until the reactor call that made them ends.
    """

    __slots__ = ("protocol", "chunks")

    def __init__(self, protocol):
        self.protocol = protocol
        self.chunks = None

    def write(self, data):
        if _held is not None and len(data) < HOLD_LIMIT:
            if self.chunks is None:
                self.chunks = [data]
                _held.append(self)
            else:
                self.chunks.append(data)
            return
        if self.chunks is not None:
            self.flush()
        writeNow(self.protocol.transport, data)

    def flush(self):
        """Send what is held now (before the transport changes or closes)."""
        chunks = self.chunks
        if chunks is not None:
            self.chunks = None
            writeNow(self.protocol.transport, b"".join(chunks))
