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
"""

from twisted.internet.tcp import Connection


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
