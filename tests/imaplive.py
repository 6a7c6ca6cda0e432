"""
Helpers for IMAP tests against a real server (L{mailserver.MailServer}):
the server options that open IMAP listeners, mail delivered over SMTP, and
logged-in IMAPClient sessions.
"""

import smtplib
from contextlib import contextmanager

from imapclient import IMAPClient

from mailserver import PASSWORD, MailServer

ALICE = "alice@example.org"
BOB = "bob@example.org"

# MailServer/makeMailServer options: imap (STARTTLS) and imaps listeners;
# plaintext LOGIN allowed on loopback, as local tools (mbsync) use it.
IMAP_SERVER = dict(roles=("imap", "imaps"),
                   sections={"auth": {"allow_plaintext_on_loopback": True}})


@contextmanager
def runningServer(root, **options):
    """A provisioned, started L{MailServer} (for module-scoped fixtures)."""
    server = MailServer(root, **options)
    server.provision()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def deliver(server, to, subject, body="hello\r\n"):
    """Send one message to C{to} over SMTP (it is then queued, then stored)."""
    msg = (f"From: carol@example.net\r\nTo: {to}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject}@example.net>\r\n\r\n{body}")
    with smtplib.SMTP("127.0.0.1", server.port) as c:
        c.sendmail("carol@example.net", [to], msg.encode())


def client(server, user=ALICE):
    """An IMAPClient session logged in over plaintext loopback."""
    c = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=30)
    c.login(user, PASSWORD)
    return c
