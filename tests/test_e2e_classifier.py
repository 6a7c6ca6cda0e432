"""
The learning classifier end to end: a real pymailer with the
C{classifier} check, IMAPClient over implicit TLS (IMAPS), smtplib.  A
user moves 20 spam into Junk and 20 ham out of Junk; the next similar
spam delivered over SMTP lands in Junk, the next ham in the INBOX, and
C{pymailer spam stats} shows the training and the verdicts.
"""

import smtplib

import pytest
from imapclient import IMAPClient

from mailserver import PASSWORD, insecureTLS, waitFor
from spamcorpus import corpus

ALICE = "alice@example.org"


@pytest.fixture
def server(makeMailServer):
    return makeMailServer(roles=("imaps",), sections={"policy": {"checks": ["classifier"]}})


def send(server, sender, message):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=20) as client:
        client.ehlo("client.test")
        client.sendmail(sender, [ALICE], message)


def stats(server):
    return server.admin("spam", "stats", ALICE).stdout


def test_user_trains_by_moving_and_next_spam_lands_in_junk(server):
    """After moving 20 spam into Junk and 20 ham out of it, new spam is filed into Junk, new ham is not."""
    ham, spam = corpus(22, seed=21)
    with IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                    ssl_context=insecureTLS(), timeout=30) as imap:
        imap.login(ALICE, PASSWORD)
        for m in spam[:20]:
            imap.append("INBOX", m)
        for m in ham[:20]:
            imap.append("Junk", m)
        imap.select_folder("INBOX")
        imap.move(imap.search("ALL"), "Junk")
        imap.select_folder("Junk")
        hamUids = imap.search(["NOT", "FROM", "example"])  # spam senders are *.example
        assert len(hamUids) == 20
        imap.move(hamUids, "INBOX")

        waitFor(lambda: "20 spam, 20 ham" in stats(server), timeout=20,
                message=lambda: stats(server) + server.log()[-3000:])

        send(server, "promo@offers9.example", spam[20])
        send(server, "greta@northwind.test", ham[20])
        junk = server.waitForMessages(ALICE, 21, folder="Junk")
        inbox = server.waitForMessages(ALICE, 21)
        assert len(junk) == 21 and len(inbox) == 21
        newest = junk[-1]  # ascending by UID: the last one delivered
        assert b"X-Spam-Status: Yes" in newest and b"classifier.bayes(" in newest
        hamCopy = inbox[-1]
        assert b"X-Spam-Status: No" in hamCopy

        # Moving the filed spam back out is ham from now on (untrained as spam).
        imap.select_folder("Junk")
        newestUid = max(imap.search("ALL"))
        imap.move([newestUid], "INBOX")
        waitFor(lambda: "20 spam, 21 ham" in stats(server), timeout=20,
                message=lambda: stats(server))
    waitFor(lambda: "classifier junk" in stats(server), timeout=20,
            message=lambda: stats(server))
    assert "classifier pass" in stats(server)
