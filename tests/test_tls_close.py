"""
Every protocol hangs up after its goodbye over TLS too: implicit TLS (993,
995, 465) and IMAP after STARTTLS.  A client that waits for the server to
close (mbsync does, after LOGOUT) must see the end of the stream within a
second of the BYE, not hang until its own timeout.  mbsync itself over
IMAPS is in L{test_imap_clients}.
"""

import socket
import ssl
import time

import pytest

from imaplive import BOB, IMAP_SERVER, deliver, runningServer
from mailserver import PASSWORD, insecureTLS

CLOSE_WITHIN = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    options = dict(IMAP_SERVER)
    options["roles"] = IMAP_SERVER["roles"] + ("pop3s", "submissions")
    with runningServer(tmp_path_factory.mktemp("tlsclose"), **options) as s:
        yield s


def tlsConnect(port):
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return insecureTLS().wrap_socket(raw)


def readLine(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def readUntil(sock, prefix):
    """Lines up to and including the first that starts with C{prefix}."""
    lines = []
    while True:
        lines.append(readLine(sock))
        if lines[-1].startswith(prefix):
            return lines


def closesWithin(sock, seconds=CLOSE_WITHIN):
    """
    How long until the server ends the stream (recv returns b'' or the TLS
    layer reports the close).  Fails if anything but the end comes, or
    nothing within C{seconds}.
    """
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        data = sock.recv(4096)
    except socket.timeout:
        pytest.fail(f"the server did not close the connection within {seconds} s")
    except (ssl.SSLEOFError, ConnectionResetError):
        data = b""
    assert data == b"", data
    return time.monotonic() - start


def test_imaps_logout_closes_connection(server):
    """If this fails, mbsync and scripts over port 993 hang after LOGOUT until they time out."""
    s = tlsConnect(server.ports["imaps"])
    readLine(s)
    s.sendall(b"a LOGOUT\r\n")
    lines = readUntil(s, b"a ")
    assert lines[0].startswith(b"* BYE")
    closesWithin(s)


def test_imaps_logout_after_login_and_select_closes_connection(server):
    """If this fails, a mail client over 993 hangs after every sync (LOGOUT never completes)."""
    s = tlsConnect(server.ports["imaps"])
    readLine(s)
    s.sendall(b'a LOGIN %s "%s"\r\n' % (BOB.encode(), PASSWORD.encode()))
    assert readUntil(s, b"a ")[-1].startswith(b"a OK")
    s.sendall(b"b SELECT INBOX\r\nc LOGOUT\r\n")
    readUntil(s, b"c ")
    closesWithin(s)


def test_imap_starttls_logout_closes_connection(server):
    """If this fails, Thunderbird-style clients on 143 with STARTTLS hang after LOGOUT."""
    raw = socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=5)
    f = raw.makefile("rb")
    f.readline()
    raw.sendall(b"a STARTTLS\r\n")
    assert f.readline().startswith(b"a OK")
    s = insecureTLS().wrap_socket(raw)
    s.sendall(b"b LOGOUT\r\n")
    readUntil(s, b"b ")
    closesWithin(s)


def test_imaps_line_too_long_closes_connection(server):
    """If this fails, a client that sent a runaway line over 993 keeps a dead connection open."""
    s = tlsConnect(server.ports["imaps"])
    readLine(s)
    s.sendall(b"a NOOP " + b"x" * (70 * 1024) + b"\r\n")
    lines = readUntil(s, b"* BYE")
    assert b"too long" in lines[-1].lower()
    closesWithin(s)


def test_pop3s_quit_closes_connection(server):
    """If this fails, POP3 clients on port 995 hang after QUIT (after reading mail too)."""
    deliver(server, BOB, "pop3sclose")
    server.waitQueueEmpty()
    s = tlsConnect(server.ports["pop3s"])
    readLine(s)
    s.sendall(b"USER %s\r\nPASS %s\r\n" % (BOB.encode(), PASSWORD.encode()))
    readLine(s)
    assert readLine(s).startswith(b"+OK")
    # RETR streams with a producer registered on the TLS transport.
    s.sendall(b"RETR 1\r\n")
    readUntil(s, b".\r\n")
    s.sendall(b"QUIT\r\n")
    assert readLine(s).startswith(b"+OK")
    closesWithin(s)


def test_smtps_quit_closes_connection(server):
    """If this fails, mail clients submitting on port 465 hang after QUIT."""
    s = tlsConnect(server.ports["submissions"])
    readUntil(s, b"220 ")
    s.sendall(b"QUIT\r\n")
    assert readLine(s).startswith(b"221")
    closesWithin(s)
