"""
The DATA decoder on its own: however the client's packets split the stream,
the message bytes and the verdict are the same.
"""

import pytest

from pymailer.smtp.data import BARE_NEWLINE, LONG_LINE, NUL, DataDecoder


def decode(stream, chunk=None):
    decoder = DataDecoder()
    out, rest = [], None
    pieces = [stream] if chunk is None else [
        stream[i : i + chunk] for i in range(0, len(stream), chunk)
    ]
    for i, piece in enumerate(pieces):
        payload, rest = decoder.feed(piece)
        out.append(payload)
        if rest is not None:
            rest += b"".join(pieces[i + 1 :])
            break
    return b"".join(out), rest, decoder.problem


STREAM = (
    b"Subject: dots\r\n\r\n..one\r\n.\r\n"[:0]
    + b"Subject: dots\r\n\r\n..one\r\n...two\r\nplain\r\n..\r\n.\r\nQUIT\r\n"
)


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 5, 7, 16])
def test_unstuffing_independent_of_packet_boundaries(chunk):
    """Dot-unstuffing and the end marker work whatever the packet boundaries."""
    payload, rest, problem = decode(STREAM, chunk)
    assert payload == b"Subject: dots\r\n\r\n.one\r\n..two\r\nplain\r\n.\r\n"
    assert rest == b"QUIT\r\n"
    assert problem is None


def test_empty_message():
    """A '.' right after DATA ends an empty message."""
    assert decode(b".\r\nNOOP\r\n") == (b"", b"NOOP\r\n", None)


@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_bare_lf_flagged(chunk):
    """A bare LF is flagged however it is split, and the real end still ends the data."""
    payload, rest, problem = decode(b"a\nb\r\n.\r\n", chunk)
    assert problem == BARE_NEWLINE and rest == b""


@pytest.mark.parametrize("chunk", [None, 1])
def test_bare_cr_flagged(chunk):
    """A bare CR is flagged."""
    assert decode(b"a\rb\r\n.\r\n", chunk)[2] == BARE_NEWLINE


def test_nul_flagged():
    """A NUL in the text is flagged."""
    assert decode(b"a\x00b\r\n.\r\n")[2] == NUL


@pytest.mark.parametrize("chunk", [None, 100, 999, 1001])
def test_long_line_flagged_without_buffering(chunk):
    """A line over 1000 octets is flagged, and the decoder never holds it whole."""
    decoder = DataDecoder()
    for _ in range(1000):
        decoder.feed(b"x" * 1000)
        assert len(decoder._pending) <= 1000
    payload, rest = decoder.feed(b"\r\n.\r\n")
    assert decoder.problem == LONG_LINE and rest == b""


def test_size_counts_message_octets():
    """The decoder counts the un-stuffed message size (for the size limit)."""
    decoder = DataDecoder()
    decoder.feed(b"..ab\r\n.\r\n")
    assert decoder.size == len(b".ab\r\n")


GOOD_LINES = b"".join(b"Line %d of a message, plain text\r\n" % i for i in range(120))


@pytest.mark.parametrize("bad, problem", [
    (b"bare\nLF\r\n", BARE_NEWLINE), (b"bare\rCR\r\n", BARE_NEWLINE),
    (b"CR CR LF\r\r\n", BARE_NEWLINE), (b"LF CR LF\n\r\n", BARE_NEWLINE),
    (b"x" * 999 + b"\r\n", LONG_LINE), (b"NUL\x00\r\n", NUL),
])
def test_one_bad_line_among_many_good_ones_is_caught(bad, problem):
    """
    A single bare CR or LF, over-long line or NUL in the middle of a 4 KiB
    message, in one packet or many, is refused: the fast checks of whole
    chunks (counts, one split) miss none of them.
    """
    stream = b"Subject: x\r\n\r\n" + GOOD_LINES + bad + GOOD_LINES + b".\r\n"
    for chunk in (None, 512, 1000):
        assert decode(stream, chunk)[2] == problem
    assert decode(b"Subject: x\r\n\r\n" + GOOD_LINES + b"x" * 996 + b"\r\n.\r\n")[2] is None
