"""
RETR/TOP encoding (L{pymailer.pop3.stream}): dot-stuffing and line endings
that hold whatever the chunk boundaries, and a producer that reads only while
the transport wants more.
"""

import io

import pytest
from twisted.internet.testing import StringTransport

from pymailer.pop3.stream import DotStuffer, MessageSender
from pymailer.testing import ClockReactor, SynchronousThreadPool


def encode(message, chunkSize, bodyLines=None):
    stuffer = DotStuffer(bodyLines)
    out = []
    for start in range(0, len(message), chunkSize):
        out.append(stuffer.feed(message[start:start + chunkSize]))
        if stuffer.done:
            break
    out.append(stuffer.end())
    return b"".join(out)


def decode(wire):
    """What a POP3 client makes of a multi-line response body."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    body = lines[:-2]
    for line in body:
        assert line != b".", "an unstuffed '.' line would end the message early"
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n"
                    for line in body)


def messageWithDotsAround(offsets, size):
    """A CRLF message whose lines start with '.' at (or just around) the
    given byte offsets."""
    data = bytearray(b"Subject: dots\r\n\r\n")
    while len(data) < size:
        target = next((o for o in offsets if o > len(data)), None)
        if target is not None and target - len(data) < 80:
            # Pad so that the next line starts exactly at the offset.
            gap = target - len(data)
            if gap >= 2:
                data += b"x" * (gap - 2) + b"\r\n"
                data += b". dot line at %d\r\n" % target
                continue
        data += b"abcdefghij" * 7 + b"\r\n"
    return bytes(data)


class TestDotStuffer:
    @pytest.mark.parametrize("chunkSize", [1, 2, 3, 7, 16384, 65536, 1 << 20])
    def test_dotLinesAroundChunkBoundariesRoundTrip(self, chunkSize):
        """
        A message with '.'-lines right at, before and after 16 KiB and 64 KiB
        boundaries arrives byte-exact; if not, a client would get a truncated
        or corrupted message (or a smuggled '.' end mark).
        """
        offsets = sorted({k * 16384 + d for k in range(1, 9) for d in (-2, -1, 0, 1, 2)})
        message = b".starts with a dot\r\n" + messageWithDotsAround(offsets, 9 * 16384)
        message += b".\r\n..\r\n.last"
        wire = encode(message, chunkSize)
        assert decode(wire) == message + b"\r\n"

    @pytest.mark.parametrize("chunkSize", [1, 2, 5, 4096])
    def test_bareLineEndingsBecomeCRLF(self, chunkSize):
        """
        Messages stored with bare LF (written by other Maildir tools) go
        out as CRLF lines, a CRLF split across chunks stays one line end, and
        '.'-lines after bare LF are stuffed too; otherwise clients would see
        broken lines or a premature end.
        """
        message = b"A: b\n\n.x\nline\r\n.\n\r\n.y\r\nbare\rcr\r"
        wire = encode(message, chunkSize)
        assert wire == b"A: b\r\n\r\n..x\r\nline\r\n..\r\n\r\n..y\r\nbare\rcr\r\r\n.\r\n"

    def test_emptyMessage(self):
        """An empty message is just the end mark, so the client does not hang."""
        assert encode(b"", 10) == b".\r\n"

    @pytest.mark.parametrize("chunkSize", [1, 3, 64, 65536])
    def test_topZeroSendsHeadersAndBlankLine(self, chunkSize):
        """TOP n 0 gives exactly the headers and the blank line, however
        the file is read; a client previewing mail would otherwise get the
        body too or lose headers."""
        message = b"From: a\r\nSubject: b\r\n\r\n.body\r\nmore\r\n"
        assert encode(message, chunkSize, 0) == b"From: a\r\nSubject: b\r\n\r\n.\r\n"

    @pytest.mark.parametrize("chunkSize", [1, 2, 7, 65536])
    def test_topCountsBodyLines(self, chunkSize):
        """TOP n 2 gives the headers, the blank line and two body lines
        (dot-stuffed); more or fewer would mislead the client's preview."""
        message = b"S: x\n\n.one\ntwo\nthree\n"
        assert encode(message, chunkSize, 2) == b"S: x\r\n\r\n..one\r\ntwo\r\n.\r\n"

    def test_topWithoutBody(self):
        """TOP on a message without a blank line sends all of it."""
        assert encode(b"S: x\r\nT: y", 3, 5) == b"S: x\r\nT: y\r\n.\r\n"


class SlowTransport(StringTransport):
    """Pauses its producer after every write, like a full socket buffer."""

    def write(self, data):
        StringTransport.write(self, data)
        if self.producer is not None:
            self.producer.pauseProducing()


class TestMessageSender:
    def test_readsOnlyWhileTheTransportWantsMore(self):
        """
        The sender reads the next chunk only after the transport resumes it,
        so a slow client never makes the server hold the whole message in
        memory (a 50 MB RETR would otherwise cost 50 MB per client).
        """
        message = b"line\r\n" * 10000
        source = io.BytesIO(message)
        transport = SlowTransport()
        sender = MessageSender(ClockReactor(), SynchronousThreadPool(), source,
                               DotStuffer(), chunkSize=4096)
        done = []
        sender.send(transport).addCallback(done.append)
        assert source.tell() == 4096
        resumes = 0
        while not done:
            resumes += 1
            assert source.tell() <= 4096 * (resumes + 1)
            sender.resumeProducing()
        assert transport.value() == message + b".\r\n"
        assert transport.producer is None
        assert source.closed

    def test_connectionLostStopsAndCloses(self):
        """A client hanging up mid-RETR stops the reads and closes the file
        (no leaked descriptors on a busy server)."""
        source = io.BytesIO(b"x\r\n" * 10000)
        transport = SlowTransport()
        sender = MessageSender(ClockReactor(), SynchronousThreadPool(), source,
                               DotStuffer(), chunkSize=1024)
        failures = []
        sender.send(transport).addErrback(failures.append)
        sender.stopProducing()
        assert failures and source.closed
