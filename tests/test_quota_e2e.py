"""
Quotas (issue 18) end to end: a real twistd, the limit set with the admin
command, IMAPClient over implicit TLS reading it, smtplib delivering into a
mailbox that fills up, and APPEND refused past the limit.
"""

import smtplib

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from imaplive import IMAP_SERVER, runningServer
from mailserver import PASSWORD, insecureTLS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with runningServer(tmp_path_factory.mktemp("quota"), **IMAP_SERVER) as s:
        yield s


def tlsClient(server, user, quota):
    server.addUser(user)
    server.admin("user", "quota", user, quota)
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                   ssl_context=insecureTLS(), timeout=30)
    c.login(user, PASSWORD)
    return c


def test_new_user_quota_root_over_tls(server):
    """
    A client (Thunderbird's quota bar) asking GETQUOTAROOT INBOX of a brand
    new user with a 1M limit learns the root and STORAGE 0 of 1024 KiB.
    """
    c = tlsClient(server, "fresh@example.org", "1M")
    assert {b"QUOTA", b"QUOTA=RES-STORAGE"} <= set(c.capabilities())
    roots, quotas = c.get_quota_root("INBOX")
    assert roots.mailbox == "INBOX" and roots.quota_roots == [""]
    assert [(q.quota_root, q.resource, q.usage, q.limit) for q in quotas] == [
        ("", "STORAGE", 0, 1024)]
    c.logout()


def test_full_mailbox_smtp_452_and_append_overquota(server):
    """
    Mail to a full mailbox is refused at RCPT with 452 4.2.2 (the sending
    server keeps it and retries), and so is mail declaring a SIZE= that
    would overfill it; the user's own APPEND beyond the limit gets NO
    [OVERQUOTA]; once the user deletes mail, delivery works again.
    """
    c = tlsClient(server, "full@example.org", "4K")
    body = b"Subject: filler\r\n\r\n" + (b"x" * 98 + b"\r\n") * 30
    c.append("INBOX", body)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("sender@remote.test", ["SIZE=2000"])
        code, text = smtp.rcpt("full@example.org")
        assert (code, text[:5]) == (452, b"4.2.2"), text
        smtp.rset()
        smtp.mail("sender@remote.test")  # no SIZE: room is left, accepted
        assert smtp.rcpt("full@example.org")[0] == 250
        code, _ = smtp.data(b"From: sender@remote.test\r\nTo: full@example.org\r\n"
                  b"Subject: fits\r\nMessage-ID: <fits@remote.test>\r\n\r\n"
                  + (b"y" * 98 + b"\r\n") * 12)
        assert code == 250
    server.waitForMessages("full@example.org", 2)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("sender@remote.test")
        code, text = smtp.rcpt("full@example.org")
        assert (code, text[:5]) == (452, b"4.2.2"), text
    with pytest.raises(IMAPClientError) as refused:
        c.append("INBOX", b"Subject: more\r\n\r\nmore\r\n")
    assert "OVERQUOTA" in str(refused.value)
    _, quotas = c.get_quota_root("INBOX")
    assert quotas[0].usage >= quotas[0].limit
    c.select_folder("INBOX")
    c.delete_messages([1])
    c.expunge()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("sender@remote.test")
        assert smtp.rcpt("full@example.org")[0] == 250
    c.logout()
