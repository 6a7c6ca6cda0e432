"""
Spam protection end to end: a real pymailer, real smtplib clients from
127.0.0.1, and a real DNS server on loopback serving the blocklist zone.
A listed client is refused at RCPT; greylisting defers, then accepts, and
remembers across a restart; an executable attachment is refused; a forged
colleague lands in Junk while ordinary mail reaches the INBOX.
"""

import email
import smtplib

import pytest

from dnsserver import DNSServer
from mailserver import waitFor

ALICE = "alice@example.org"
DATE = "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"


def send(server, sender, message, recipients=(ALICE,)):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=20) as client:
        client.ehlo("client.test")
        client.sendmail(sender, list(recipients), message)


def message(fromHeader, body="Hi there.\r\n", extra=""):
    return (f"From: {fromHeader}\r\nTo: <{ALICE}>\r\nSubject: hello\r\n{DATE}"
            f"Message-ID: <m@remote.test>\r\n{extra}\r\n{body}").encode()


def test_listed_client_refused(makeMailServer):
    """A client on the configured blocklist is refused with the list's reason."""
    with DNSServer({"1.0.0.127.bl.test": [("A", "127.0.0.2")]}) as zone:
        server = makeMailServer(sections={
            "dns": {"servers": [zone.address], "timeout": 2.0},
            "policy": {"checks": ["dnsbl"],
                       "dnsbl": {"zones": ["bl.test"]},
                       "dnsbl.zone.\"bl.test\"": {"\"127.0.0.2\"": "listed for spam"}},
        })
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send(server, "x@remote.test", message("<x@remote.test>"))
        code, text = refused.value.recipients[ALICE]
        assert code == 554
        assert text.decode() == (
            "5.7.1 Client host [127.0.0.1] blocked using bl.test; listed for spam")
        assert any(name.startswith("1.0.0.127.bl.test") for name, _ in zone.queries), zone.queries
        assert "action=reject" in server.waitForLog("check=dnsbl")


def test_greylisting_defers_then_accepts_across_restart(makeMailServer):
    """A new sender waits once; its retry is delivered, and a restart does not make it wait again."""
    server = makeMailServer(sections={
        "policy": {"checks": ["greylist"], "greylist": {"delay": 1}}})
    with pytest.raises(smtplib.SMTPRecipientsRefused) as deferred:
        send(server, "x@remote.test", message("<x@remote.test>"))
    code, text = deferred.value.recipients[ALICE]
    assert (code, text.decode()) == (451, "4.7.1 Greylisted, try again in 1 seconds")
    server.stop()
    server.start()

    def retried():
        try:
            send(server, "x@remote.test", message("<x@remote.test>"))
        except smtplib.SMTPRecipientsRefused as e:
            assert e.recipients[ALICE][0] == 451
            return False
        return True

    waitFor(retried, timeout=15, interval=0.3)
    server.waitForMessages(ALICE, 1)
    server.stop()
    server.start()
    send(server, "x@remote.test", message("<x@remote.test>"))  # remembered: no 451
    server.waitForMessages(ALICE, 2)


@pytest.fixture
def rulesServer(makeMailServer):
    return makeMailServer(sections={"policy": {"checks": ["rules"]}})


def test_executable_attachment_refused(rulesServer):
    """A message carrying an .exe is refused at the end of data and never delivered."""
    body = ("--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            "--b\r\nContent-Type: application/octet-stream; name=\"setup.exe\"\r\n"
            "Content-Disposition: attachment; filename=\"setup.exe\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n")
    data = message("<x@remote.test>", body=body, extra=(
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(rulesServer, "x@remote.test", data)
    assert refused.value.smtp_code == 554
    assert b"5.7.1" in refused.value.smtp_error and b"setup.exe" in refused.value.smtp_error
    assert rulesServer.messages(ALICE) == []


def test_forged_colleague_in_junk_and_plain_mail_in_inbox(rulesServer):
    """A foreign sender showing a local address lands in Junk; an honest one in the INBOX."""
    send(rulesServer, "ceo@remote.test", message('"bob@example.org" <ceo@remote.test>'))
    send(rulesServer, "bob@remote.test", message("Bob <bob@remote.test>"))
    [junk] = rulesServer.waitForMessages(ALICE, 1, folder="Junk")
    [inbox] = rulesServer.waitForMessages(ALICE, 1)
    junked = email.message_from_bytes(junk)
    assert junked["X-Spam-Status"].startswith("Yes, score=5")
    assert "rules.forged_display_name" in junked["X-Spam-Status"]
    assert email.message_from_bytes(inbox)["X-Spam-Score"] == "0"
