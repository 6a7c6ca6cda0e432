"""
BINARY (RFC 3516) through the protocol: a client downloading an attachment
gets its decoded octets (with literal8 when they hold NULs), knows their
size before downloading, and can upload a message with NULs in it.
"""

import base64

import pytest

from imapharness import Client

PAYLOAD = bytes(range(256)) * 4  # NULs and every other octet
MESSAGE = (
    b"Subject: attachment\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=C3=A9 soft=\r\nbreak\r\n"
    b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")
    + b"--B\r\nContent-Type: application/x-odd\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin 644 x\r\n"
    b"--B--\r\n"
)


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path, secure=True)
    c.deliver(MESSAGE)
    c.login()
    c.send(b"s SELECT INBOX\r\n")
    return c


def test_capability(client):
    """A client sees BINARY and so knows it may ask for decoded parts."""
    assert b" BINARY" in client.send(b"c CAPABILITY\r\n")


def test_base64_part_decoded_as_literal8(client):
    """An attachment with NULs arrives decoded, byte for byte, in a ~{n} literal8 (RFC 3516 4.2)."""
    out = client.send(b"f FETCH 1 (BINARY.PEEK[2])\r\n")
    head = b"* 1 FETCH (BINARY[2] ~{%d}\r\n" % len(PAYLOAD)
    assert out.startswith(head + PAYLOAD + b")\r\n"), out[:200]
    assert out.endswith(b"f OK FETCH completed\r\n")


def test_quoted_printable_decoded(client):
    """A quoted-printable text part arrives as its UTF-8 octets with soft breaks joined."""
    text = "café soft".encode() + b"break"
    out = client.send(b"f FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])\r\n")
    assert b"BINARY[1] {%d}\r\n%s" % (len(text), text) in out
    assert b"BINARY.SIZE[1] %d" % len(text) in out


def test_size_before_download(client):
    """RFC 3516 4.2 BINARY.SIZE: the decoded size, not the base64 one, so a progress bar is right."""
    out = client.send(b"f FETCH 1 (BINARY.SIZE[2])\r\n")
    assert b"* 1 FETCH (BINARY.SIZE[2] %d)" % len(PAYLOAD) in out


def test_partial(client):
    """BINARY[2]<256.10> returns ten decoded octets from offset 256, labelled <256>."""
    out = client.send(b"f FETCH 1 (BINARY.PEEK[2]<256.10>)\r\n")
    assert b"BINARY[2]<256> ~{10}\r\n" + PAYLOAD[256:266] + b")" in out


def test_unknown_encoding(client):
    """RFC 3516 4.3: a part in an encoding the server cannot undo answers NO [UNKNOWN-CTE]."""
    out = client.send(b"f FETCH 1 (BINARY.PEEK[3])\r\n")
    assert b"f NO [UNKNOWN-CTE]" in out


def test_binary_sets_seen_peek_does_not(client):
    """BINARY.PEEK leaves a message unread, BINARY marks it read, as BODY and BODY.PEEK do."""
    client.send(b"f FETCH 1 (BINARY.PEEK[1])\r\n")
    assert b"\\Seen" not in client.send(b"f FETCH 1 (FLAGS)\r\n")
    out = client.send(b"f FETCH 1 (BINARY[1])\r\n")
    assert b"\\Seen" in out


def test_bad_sections(client):
    """RFC 3516 9: BINARY takes part numbers only; BINARY[1.HEADER] and a partial on BINARY.SIZE are BAD."""
    assert b"f BAD" in client.send(b"f FETCH 1 (BINARY[1.HEADER])\r\n")
    assert b"f BAD" in client.send(b"f FETCH 1 (BINARY.SIZE[1]<0.5>)\r\n")
    assert b"f BAD" in client.send(b"f FETCH 1 (BINARY[0])\r\n")


def test_missing_part_is_empty(client):
    """A part number past the last part answers an empty string, as BODY[] does (Dovecot too)."""
    out = client.send(b"f FETCH 1 (BINARY.PEEK[9] BINARY.SIZE[9])\r\n")
    assert b"BINARY[9] {0}\r\n" in out and b"BINARY.SIZE[9] 0" in out


def test_append_literal8(client):
    """RFC 3516 4.4: APPEND with a ~{n} literal8 stores a message with NULs as sent."""
    body = b"Subject: nul\r\n\r\na\x00b\r\n"
    out = client.send(b"a APPEND INBOX ~{%d}\r\n" % len(body))
    assert out.startswith(b"+ ")
    out = client.send(body + b"\r\n")
    assert b"a OK" in out
    out = client.send(b"f FETCH 2 (BINARY.PEEK[1])\r\n")
    assert b"BINARY[1] ~{5}\r\na\x00b\r\n)" in out


def test_literal8_outside_append(client):
    """literal8 anywhere but APPEND's message is BAD before any continuation."""
    out = client.send(b"c CREATE ~{3}\r\n")
    assert out.startswith(b"c BAD") and b"+ " not in out
