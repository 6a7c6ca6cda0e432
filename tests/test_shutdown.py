"""
SIGTERM says goodbye: each client connected when the server stops hears
why (IMAP C{* BYE}, SMTP C{421}, POP3 C{-ERR}) before the connection
closes, a message still arriving is neither delivered nor queued, and
twistd exits.  Real server, raw clients on loopback.
"""

import os
import signal
import socket

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pymailer.shutdown import Connections
from mailserver import PASSWORD

ALICE = "alice@example.org"


class _Line:
    """A line-reading client socket."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def expect(self, prefix):
        """Read lines up to one that starts with C{prefix}; return it."""
        seen = []
        while True:
            line = self.file.readline()
            assert line, f"connection closed while waiting for {prefix!r}: {seen}"
            if line.startswith(prefix.encode()):
                return line.decode()
            seen.append(line)

    def rest(self):
        """Everything the server sends until it closes the connection."""
        data = self.file.read()
        self.sock.close()
        return data.decode()


def test_sigterm_says_goodbye_to_every_client(makeMailServer):
    """
    On SIGTERM an IMAP client in IDLE gets `* BYE [UNAVAILABLE]`, an SMTP
    client in the middle of DATA gets `421 4.3.2` and its message is
    neither delivered nor left in the queue, a POP3 client gets `-ERR`,
    and twistd exits: before, every client saw the connection reset with
    no word, and could not tell a shutdown from a network fault.
    """
    server = makeMailServer(roles=("imap", "pop3"), sections={
        "auth": {"allow_plaintext_on_loopback": True, "failure_delay": 0}})

    imap = _Line(server.ports["imap"])
    imap.expect("* OK")
    imap.send(f'a LOGIN {ALICE} "{PASSWORD}"')
    imap.expect("a OK")
    imap.send("b SELECT INBOX")
    imap.expect("b OK")
    imap.send("c IDLE")
    imap.expect("+")

    smtp = _Line(server.port)
    smtp.expect("220 ")
    for command, reply in [("EHLO client.test", "250 "), ("MAIL FROM:<x@client.test>", "250"),
                           (f"RCPT TO:<{ALICE}>", "250"), ("DATA", "354")]:
        smtp.send(command)
        smtp.expect(reply)
    smtp.send("Subject: half a message\r\n\r\n" + "this message is not finished\r\n" * 1000)

    pop3 = _Line(server.ports["pop3"])
    pop3.expect("+OK")
    pop3.send(f"USER {ALICE}")
    pop3.expect("+OK")
    pop3.send(f"PASS {PASSWORD}")
    pop3.expect("+OK")

    server.proc.send_signal(signal.SIGTERM)
    assert "* BYE [UNAVAILABLE] Server shutting down" in imap.rest()
    assert smtp.rest().startswith("421 4.3.2 Service shutting down")
    assert pop3.rest().startswith("-ERR [SYS/TEMP] Server shutting down")
    # twistd re-raises the SIGTERM it handled, after a clean shutdown.
    assert server.stop() in (0, -15)
    assert "Server Shut Down." in server.log()
    assert server.allMessages() == []
    assert server.queueEnvelopes() == {}
    assert os.listdir(server.dataDir / "queue" / "data") == []


class _Client:
    """A connection that says goodbye by closing, or not at all."""

    def __init__(self, connections, answers=True):
        self.connections = connections
        self.answers = answers
        self.transport = StringTransport()
        connections.opened(self)

    def sayGoodbye(self):
        if self.answers:
            self.connections.closed(self)

    @property
    def aborted(self):
        return self.transport.disconnecting


def test_goodbye_waits_for_clients_then_cuts_the_rest():
    """
    Shutdown waits for clients to close after the goodbye, but not for
    ever: one that does not close is cut after the grace time, so twistd
    still exits.
    """
    clock = Clock()
    connections = Connections(clock)
    polite, stuck = _Client(connections), _Client(connections, answers=False)
    done = []
    connections.sayGoodbye(timeout=3.0).addCallback(done.append)
    assert not done and connections.open == {stuck}
    clock.advance(3.0)
    assert done == [None]
    assert stuck.transport.disconnecting and not polite.transport.disconnecting
