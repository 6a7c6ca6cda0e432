"""
The external scanners end to end: a real pymailer, real smtplib clients,
and Debian's clamd and rspamd started by the tests (tests/daemons.py) on
temporary sockets and loopback ports.  EICAR is refused inbound and on
submission; rspamd's reject is refused with its message; clean mail is
delivered; a daemon that is down or silent costs a mark (fail open) or a
451 (fail closed), never a lost or bounced message.
"""

import base64
import email
import smtplib
import socket

import pytest

from daemons import EICAR, EICAR_NAME, MARKER, MARKER_NAME, Clamd, Rspamd
from mailserver import PASSWORD

pytestmark = pytest.mark.scanners

ALICE = "alice@example.org"
BOB = "bob@example.org"
DATE = "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"


@pytest.fixture(scope="module")
def clamd(tmp_path_factory):
    with Clamd(tmp_path_factory.mktemp("clamd")) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    with Rspamd(tmp_path_factory.mktemp("rspamd")) as daemon:
        yield daemon


def message(sender="x@remote.test", body="Hi there.\r\n", extra="", attachment=None):
    head = (f"From: <{sender}>\r\nTo: <{ALICE}>\r\nSubject: hello\r\n{DATE}"
            f"Message-ID: <m@remote.test>\r\n{extra}")
    if attachment is None:
        return (head + "\r\n" + body).encode()
    encoded = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
    return (head + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            f"--b\r\nContent-Type: text/plain\r\n\r\n{body}"
            "--b\r\nContent-Type: application/octet-stream; name=\"test.com\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
            f"{encoded}--b--\r\n").encode()


def send(server, data, sender="x@remote.test", recipients=(ALICE,)):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail(sender, list(recipients), data)


def submit(server, data, user=BOB, recipients=(ALICE,)):
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as client:
        client.ehlo("client.test")
        client.login(user, PASSWORD)
        client.sendmail(user, list(recipients), data)


def scannerServer(makeMailServer, checks, name="server", **options):
    return makeMailServer(name=name, roles=("submission",), sections={
        "auth": {"allow_plaintext_on_loopback": True, "failure_delay": 0},
        "policy": dict({"checks": checks}, **options)})


def refusedAtData(action):
    with pytest.raises(smtplib.SMTPDataError) as refused:
        action()
    return refused.value.smtp_code, refused.value.smtp_error.decode()


def test_eicar_refused_inbound_and_on_submission(makeMailServer, clamd):
    """EICAR is refused naming it, from the internet and from our own user; clean mail arrives."""
    server = scannerServer(makeMailServer, ["clamav"], clamav={"socket": str(clamd.socket)})
    infected = message(attachment=EICAR)
    expected = f"5.7.0 Message refused: virus found ({EICAR_NAME})"
    assert refusedAtData(lambda: send(server, infected)) == (554, expected)
    assert refusedAtData(lambda: submit(server, message(BOB, attachment=EICAR))) == (554, expected)
    server.waitForLog(f"check=clamav score=0 action=reject reason=virus {EICAR_NAME}")

    send(server, message(body="Nothing to see.\r\n", extra="X-Virus-Scanned: clean\r\n"))
    submit(server, message(BOB, body="From a colleague.\r\n"))
    delivered = [email.message_from_bytes(data)
                 for data in server.waitForMessages(ALICE, 2)]
    # The sender's own X-Virus-Scanned is dropped: nothing claims a scan we did not record.
    assert all(m["X-Virus-Scanned"] is None for m in delivered)
    assert server.messages(ALICE, folder="Junk") == []


def test_custom_signature_over_tcp(makeMailServer, clamd):
    """clamd reached by host:port finds the locally made signature in a plain-text body."""
    server = scannerServer(makeMailServer, ["clamav"], clamav={"address": clamd.address})
    data = message(body=f"payload {MARKER.decode()} here\r\n")
    assert refusedAtData(lambda: send(server, data)) == (
        554, f"5.7.0 Message refused: virus found ({MARKER_NAME})")
    assert server.messages(ALICE) == []


def test_clamd_down_fail_open_marks_fail_closed_defers(makeMailServer, tmp_path):
    """With clamd down, fail-open delivers marked unscanned; fail-closed answers 451 4.7.0."""
    gone = str(tmp_path / "no-clamd.sock")
    server = scannerServer(makeMailServer, ["clamav"], clamav={"socket": gone})
    send(server, message())
    [data] = server.waitForMessages(ALICE, 1)
    delivered = email.message_from_bytes(data)
    assert delivered["X-Virus-Scanned"] == "unscanned (clamd unreachable)"
    server.waitForLog("check=clamav score=0 action=unscanned reason=clamd unreachable")

    closed = scannerServer(makeMailServer, ["clamav"], name="closed",
                           clamav={"socket": gone, "fail": "closed"})
    assert refusedAtData(lambda: send(closed, message())) == (
        451, "4.7.0 Message not scanned (clamd unreachable), try again later")
    assert refusedAtData(lambda: submit(closed, message(BOB)))[0] == 451


def test_silent_clamd_times_out(makeMailServer):
    """A clamd that accepts and never answers costs the timeout, then the fail-open mark."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        address = "127.0.0.1:%d" % silent.getsockname()[1]
        server = scannerServer(makeMailServer, ["clamav"],
                               clamav={"address": address, "timeout": 1})
        send(server, message())
        [data] = server.waitForMessages(ALICE, 1)
    assert email.message_from_bytes(data)["X-Virus-Scanned"] == (
        "unscanned (clamd timed out)")


def test_message_over_clamd_stream_limit_handled_per_fail(makeMailServer, clamd):
    """A message past clamd's StreamMaxLength (1 MiB here) is not lost: fail-open delivers it marked."""
    server = scannerServer(makeMailServer, ["clamav"], clamav={"socket": str(clamd.socket)})
    big = message(body=("x" * 998 + "\r\n") * 1200)
    send(server, big)
    [data] = server.waitForMessages(ALICE, 1)
    mark = email.message_from_bytes(data)["X-Virus-Scanned"]
    assert mark.startswith("unscanned (clamd"), mark


def test_rspamd_reject_refused_and_clean_mail_passes(makeMailServer, rspamd):
    """rspamd's reject is refused with its message, inbound and submitted; clean mail arrives scored."""
    server = scannerServer(makeMailServer, ["rspamd"], rspamd={"url": rspamd.url})
    marked = message(extra="X-Test-Reject: yes\r\n")
    assert refusedAtData(lambda: send(server, marked)) == (
        554, "5.7.1 Refused by the test rule: yes")
    assert refusedAtData(lambda: submit(server, message(BOB, extra="X-Test-Reject: yes\r\n")))[0] \
        == 554
    assert "symbols=PYMAILER_TEST_REJECT(100)" in server.waitForLog(
        "check=rspamd score=100 action=reject")

    send(server, message(extra="X-Spam-Status: No, forged\r\n"))
    [data] = server.waitForMessages(ALICE, 1)
    delivered = email.message_from_bytes(data)
    assert delivered["X-Spam-Status"].startswith("No, score=0 ")
    assert "rspamd.no_action" in delivered["X-Spam-Status"]
    server.waitForLog(
        "from=<x@remote.test> to=<alice@example.org> check=rspamd score=0 action=no_action")


def test_rspamd_down_fail_open_marks_fail_closed_defers(makeMailServer):
    """With rspamd down, fail-open delivers marked unscanned; fail-closed answers 451 4.7.0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d" % s.getsockname()[1]
    server = scannerServer(makeMailServer, ["rspamd"], rspamd={"url": url})
    send(server, message())
    [data] = server.waitForMessages(ALICE, 1)
    assert email.message_from_bytes(data)["X-Spam-Scanned"] == (
        "unscanned (rspamd unreachable)")
    closed = scannerServer(makeMailServer, ["rspamd"], name="closed",
                           rspamd={"url": url, "fail": "closed"})
    assert refusedAtData(lambda: send(closed, message())) == (
        451, "4.7.0 Message not scanned (rspamd unreachable), try again later")
