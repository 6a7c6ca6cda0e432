"""
COMPRESS=DEFLATE (RFC 4978): a client on a slow link (a phone) turns on
compression after login; every octet after the tagged OK, both ways, is raw
deflate.  Protocol tests on the harness, and a real client over TLS.
"""

import socket
import ssl
import zlib

import pytest

from imapharness import Client, loggedIn
from imaplive import IMAP_SERVER, runningServer
from mailserver import PASSWORD, insecureTLS


class Deflated:
    """The client's side of RFC 4978: raw deflate with a sync flush per write."""

    def __init__(self):
        self.out = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self.inflater = zlib.decompressobj(-15)

    def pack(self, data):
        return self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH)

    def unpack(self, data):
        return self.inflater.decompress(data)


@pytest.fixture
def client(tmp_path):
    return loggedIn(tmp_path)


def compressed(client, pipelined=b""):
    """Send COMPRESS DEFLATE (and compressed C{pipelined} behind it in the same packet)."""
    z = Deflated()
    out = client.send(b"z COMPRESS DEFLATE\r\n" + (z.pack(pipelined) if pipelined else b""))
    client.factory.clock.advance(0)
    out += client.read()
    head, _, rest = out.partition(b"z OK DEFLATE active\r\n")
    assert head == b"", out
    return z, z.unpack(rest)


def talk(client, z, line):
    client.protocol.dataReceived(z.pack(line))
    client.factory.clock.advance(0)
    return z.unpack(client.read())


def test_capability(client):
    """A client sees COMPRESS=DEFLATE and may turn it on."""
    assert b" COMPRESS=DEFLATE" in client.send(b"c CAPABILITY\r\n")


def test_rfc4978_example(client):
    """RFC 4978 3 example: after the tagged OK both sides speak deflate; NOOP and LIST work."""
    z, _ = compressed(client)
    assert b"n OK NOOP completed" in talk(client, z, b"n NOOP\r\n")
    out = talk(client, z, b'l LIST "" "*"\r\n')
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in out and b"l OK" in out


def test_append_compressed(client):
    """An APPEND literal (its octets and the line after) read through deflate stores the message."""
    z, _ = compressed(client)
    m = b"Subject: x\r\n\r\nhi\r\n"
    out = talk(client, z, b"a APPEND INBOX {%d+}\r\n" % len(m) + m + b"\r\nn NOOP\r\n")
    assert b"a OK [APPENDUID" in out and b"n OK" in out


def test_pipelined_after_compress(client):
    """A client that sends compressed commands right behind COMPRESS (RFC 4978 3 allows it) gets them run."""
    z, out = compressed(client, b"n1 NOOP\r\nn2 NOOP\r\n")
    out += talk(client, z, b"")
    assert b"n1 OK" in out and b"n2 OK" in out


def test_already_active(client):
    """RFC 4978 3: a second COMPRESS gets NO [COMPRESSIONACTIVE], still compressed."""
    z, _ = compressed(client)
    assert b"z2 NO [COMPRESSIONACTIVE]" in talk(client, z, b"z2 COMPRESS DEFLATE\r\n")


def test_not_before_login(tmp_path):
    """COMPRESS before login is BAD, and the session goes on uncompressed."""
    c = Client(tmp_path, secure=True)
    out = c.send(b"z COMPRESS DEFLATE\r\nn NOOP\r\n")
    assert b"z BAD" in out and b"n OK NOOP" in out


def test_unknown_mechanism(client):
    """COMPRESS with anything but DEFLATE is BAD and nothing changes."""
    out = client.send(b"z COMPRESS LZ4\r\nn NOOP\r\n")
    assert b"z BAD" in out and b"n OK NOOP" in out


def test_corrupt_stream_closes(client):
    """Garbage that is not deflate closes the connection instead of being read as commands."""
    compressed(client)
    client.protocol.dataReceived(b"\xff" * 64)
    assert client.transport.disconnecting


def test_bomb_in_harness_bounded(client):
    """
    A bomb (a few KB of deflate inflating to 1 GB of one byte) is inflated
    a chunk at a time; the session closes at the line limit, having
    inflated little more than that, not the gigabyte.
    """
    z, _ = compressed(client)
    bomb = z.out.compress(b"A" * (1 << 20))
    for _ in range(1023):
        bomb += z.out.compress(b"A" * (1 << 20))
    bomb += z.out.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 2 << 20
    client.protocol.dataReceived(bomb)
    for _ in range(10):
        client.factory.clock.advance(0)
    assert client.transport.disconnecting
    assert client.protocol.compression.octetsIn < 2 << 20


# -- a real server, over TLS -------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with runningServer(tmp_path_factory.mktemp("compress"), **IMAP_SERVER) as s:
        yield s


class TLSDeflateClient:
    """A raw IMAP client over TLS on a real socket, able to turn on deflate."""

    def __init__(self, port):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock = insecureTLS().wrap_socket(raw, server_hostname="localhost")
        self.z = None
        self.pending = b""
        self.wireOctets = 0   # as received, compressed or not
        self.readLine()

    def send(self, data):
        self.sock.sendall(self.z.pack(data) if self.z else data)

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.wireOctets += len(data)
        self.pending += self.z.unpack(data) if self.z else data

    def readLine(self):
        while b"\r\n" not in self.pending:
            self._more()
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def readExactly(self, n):
        while len(self.pending) < n:
            self._more()
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    def command(self, tag, line):
        self.send(tag + b" " + line + b"\r\n")
        lines = []
        while True:
            got = self.readLine()
            if got.endswith(b"}") and b"{" in got:
                size = int(got.rsplit(b"{", 1)[1][:-1])
                got += b"\r\n" + self.readExactly(size) + self.readLine()
            lines.append(got)
            if got.startswith(tag + b" "):
                return lines


def test_fetch_1mb_over_tls_compressed(server):
    """
    Login over TLS, COMPRESS DEFLATE, APPEND and FETCH a 1 MB message: it
    comes back equal, and fewer octets crossed the wire than its size.
    """
    server.addUser("deflate@example.org")
    c = TLSDeflateClient(server.ports["imaps"])
    assert c.command(b"l", b'LOGIN deflate@example.org "%s"' % PASSWORD.encode())[-1].startswith(b"l OK")
    assert c.command(b"z", b"COMPRESS DEFLATE")[-1] == b"z OK DEFLATE active"
    c.z = Deflated()
    line = b"".join(b"line %07d of a compressible message\r\n" % i for i in range(27000))
    message = b"Subject: big\r\n\r\n" + line
    assert len(message) > 1 << 20
    c.send(b"a APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    while not c.readLine().startswith(b"a "):
        pass
    c.command(b"s", b"SELECT INBOX")
    before = c.wireOctets
    reply = c.command(b"f", b"FETCH 1 BODY.PEEK[]")
    assert reply[-1].startswith(b"f OK")
    head = b"* 1 FETCH (BODY[] {%d}\r\n" % len(message)
    assert reply[0].startswith(head) and reply[0][len(head):len(head) + len(message)] == message
    assert c.wireOctets - before < len(message) // 4
    assert c.command(b"o", b"LOGOUT")[-1].startswith(b"o OK")


def test_bomb_over_tls_bounded(server):
    """
    A compressed client sending a bomb (a few KB inflating to 4 GB) gets
    its connection closed, and the server's memory stays where it was.
    """
    server.addUser("bomb@example.org")
    c = TLSDeflateClient(server.ports["imaps"])
    c.command(b"l", b'LOGIN bomb@example.org "%s"' % PASSWORD.encode())
    assert c.command(b"z", b"COMPRESS DEFLATE")[-1] == b"z OK DEFLATE active"
    c.z = Deflated()
    before = server.peakRSS()
    chunk = c.z.out.compress(b"\0" * (1 << 24))
    sent = 0
    try:
        for _ in range(256):  # 256 x 16 MiB = 4 GiB inflated
            c.sock.sendall(chunk)
            sent += len(chunk)
        c.sock.sendall(c.z.out.flush(zlib.Z_SYNC_FLUSH))
        while True:
            c._more()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    assert sent < 8 << 20
    grown = server.peakRSS() - before
    print(f"bomb: {sent} octets sent, server peak RSS grew {grown >> 10} KiB")
    assert grown < 50 << 20


# -- Deflate alone: flow control under a bomb --------------------------------

def feedWhileReading(deflate, transport, pieces):
    """Hand C{pieces} to C{deflate} as a transport does: only while it is reading."""
    while pieces and transport.producerState == "producing":
        deflate.received(pieces.pop(0))


def test_bomb_pauses_reading_and_bounds_backlog():
    """
    A bomb arriving in 4 KB reads (each inflating to far more than a
    turn's worth): reading stops at the first yield, so the compressed
    input waiting stays one read, not the whole bomb; reading goes on once
    the next clock turn has inflated it, and stops again at the next read.
    """
    from twisted.internet import task
    from twisted.internet.testing import StringTransport

    from pymailer.imap.compress import TURN, Deflate

    z = Deflated()
    bomb = z.out.compress(b"A" * (64 << 20)) + z.out.flush(zlib.Z_SYNC_FLUSH)
    pieces = [bomb[i:i + 4096] for i in range(0, len(bomb), 4096)]
    assert len(pieces) > 4
    transport, clock, got = StringTransport(), task.Clock(), []
    deflate = Deflate(transport, got.append, clock)
    feedWhileReading(deflate, transport, pieces)
    assert transport.producerState == "paused"
    assert deflate.backlog <= 4096
    inflated = sum(map(len, got))
    assert TURN <= inflated < TURN + (1 << 17)
    # The next turn inflates what waits (task.Clock runs the turns it
    # schedules itself within one advance), then reading goes on.
    clock.advance(0)
    assert sum(map(len, got)) > inflated
    assert transport.producerState == "producing"
    assert deflate.backlog == 0
    feedWhileReading(deflate, transport, pieces)
    assert transport.producerState == "paused" and deflate.backlog <= 4096


def test_received_while_yielding_waits_for_its_turn():
    """
    Octets arriving while a turn's inflating is scheduled are not inflated
    at once (past the per-turn limit, and a second scheduled call would
    replace the first): they wait for that call.
    """
    from twisted.internet import task
    from twisted.internet.testing import StringTransport

    from pymailer.imap.compress import TURN, Deflate

    z = Deflated()
    first = z.out.compress(b"A" * (2 * TURN)) + z.out.flush(zlib.Z_SYNC_FLUSH)
    second = z.pack(b"B" * 1000)
    transport, clock, got = StringTransport(), task.Clock(), []
    deflate = Deflate(transport, got.append, clock)
    deflate.received(first)
    before = sum(map(len, got))
    deflate.received(second)  # already read by the transport before it paused
    assert sum(map(len, got)) == before
    assert len(clock.getDelayedCalls()) == 1
    for _ in range(10):
        clock.advance(0)
    assert b"".join(got) == b"A" * (2 * TURN) + b"B" * 1000
    assert transport.producerState == "producing"


def test_protocol_pause_holds_over_yield():
    """
    The protocol's own pause (a slow command) is not undone when a turn's
    inflating finishes: reading stays stopped until the protocol resumes.
    """
    from twisted.internet import task
    from twisted.internet.testing import StringTransport

    from pymailer.imap.compress import TURN, Deflate

    z = Deflated()
    data = z.out.compress(b"A" * (2 * TURN)) + z.out.flush(zlib.Z_SYNC_FLUSH)
    transport, clock, got = StringTransport(), task.Clock(), []
    deflate = Deflate(transport, got.append, clock)
    deflate.received(data)
    deflate.pauseProducing()
    clock.advance(0)
    assert transport.producerState == "paused"
    deflate.resumeProducing()
    for _ in range(10):
        clock.advance(0)
    assert b"".join(got) == b"A" * (2 * TURN)
    assert transport.producerState == "producing"
