"""
IMAP sessions against a real server as a user meets them: connection
limits, a brand-new account's mailboxes, UIDVALIDITY across a delete and
re-create, a selected mailbox deleted under a session, and APPEND refused
before the upload.
"""

import socket

import pytest

from imaplive import IMAP_SERVER
from mailserver import insecureTLS, waitFor


def greeting(port, tls=False):
    """Connect and read the first line; C{(socket, line)}."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls:
        s = insecureTLS().wrap_socket(s)
    return s, s.makefile("rb").readline()


def test_connections_over_the_per_ip_limit_get_bye_unavailable(makeMailServer):
    """
    If this fails, one address can open thousands of IMAP connections (2,000
    were taken), or a client over the limit is dropped without a reason.
    """
    server = makeMailServer(roles=IMAP_SERVER["roles"], sections=dict(
        IMAP_SERVER["sections"], imap={"max_connections_per_ip": 3}))
    for tls, port in ((False, server.ports["imap"]), (True, server.ports["imaps"])):
        held = [greeting(port, tls) for _ in range(3)]
        assert all(line.startswith(b"* OK") for _, line in held)
        refused, line = greeting(port, tls)
        assert line == b"* BYE [UNAVAILABLE] Too many connections from your address, try again later\r\n"
        assert refused.recv(10) == b""
        held.pop()[0].close()

        def admitted():
            s, line = greeting(port, tls)
            s.close()
            return line.startswith(b"* OK")

        waitFor(admitted, 5, message="a slot freed by a closed connection")
        for s, _ in held:
            s.close()
