"""
End-to-end tests of submission (587 with STARTTLS, 465 with implicit TLS)
against a real C{twistd pymailer}: smtplib, swaks, openssl and raw TLS
sockets, as mail clients use them.
"""

import signal
import smtplib
import socket
import subprocess
import time

import pytest

from mailserver import insecureTLS, PASSWORD, waitFor
from pymailer.tls import makeSelfSigned

ALICE = "alice@example.org"
BOB = "bob@example.org"




@pytest.fixture
def server(makeMailServer):
    return makeMailServer(
        roles=("submission", "submissions"),
        sections={"auth": {"failure_delay": 0.3, "max_failures": 5}},
    )


def delivered(server, user, count=1):
    return server.waitForMessages(user, count, timeout=10)


def message(subject, body="Hello from a test.\r\n"):
    return f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: {subject}\r\n\r\n{body}"


def headerBlock(data):
    return data.split(b"\r\n\r\n", 1)[0].decode("utf-8")


def test_starttls_login_send_arrives_with_esmtpsa(server):
    """A client using 587 + STARTTLS + AUTH delivers to a local user; Received says ESMTPSA and TLS."""
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as c:
        c.starttls(context=insecureTLS())
        c.login(ALICE, PASSWORD)
        c.sendmail(ALICE, [BOB], message("starttls"))
    (data,) = delivered(server, "bob")
    headers = headerBlock(data)
    assert "with ESMTPSA" in headers
    assert "using TLSv1." in headers
    assert data.endswith(b"Hello from a test.\r\n")


def test_smtputf8_over_starttls_and_auth_says_utf8smtpsa(server):
    """
    A message sent with SMTPUTF8 over STARTTLS and AUTH is stamped
    "with UTF8SMTPSA" (RFC 6531 §3.7.4), and the next plain message in the
    same session "with ESMTPSA": the name follows each transaction.
    """
    body = "From: jösé@example.org\r\nSubject: grüße\r\n\r\nHallo.\r\n".encode()
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as c:
        c.starttls(context=insecureTLS())
        c.login(ALICE, PASSWORD)
        c.sendmail(ALICE, [BOB], body, mail_options=["SMTPUTF8"])
        c.sendmail(ALICE, [BOB], message("ascii"))
    first, second = sorted(delivered(server, "bob", 2), key=lambda d: b"gr\xc3\xbc" not in d)
    assert "with UTF8SMTPSA id" in headerBlock(first)
    assert "with ESMTPSA id" in headerBlock(second)


def test_implicit_tls_465(server):
    """A client using 465 (implicit TLS, RFC 8314) logs in and sends."""
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=insecureTLS(), timeout=10) as c:
        c.login(ALICE, PASSWORD)
        c.sendmail(ALICE, [BOB], message("465"))
    assert "with ESMTPSA" in headerBlock(delivered(server, "bob")[0])


@pytest.mark.parametrize(
    "args",
    [
        ["--tls", "--auth", "PLAIN"],
        ["--tls", "--auth", "LOGIN"],
        ["--tlsc", "--auth", "PLAIN"],
        ["--tlsc", "--auth", "LOGIN"],
    ],
    ids=" ".join,
)
def test_swaks_tls_auth(server, args):
    """swaks with STARTTLS (--tls) or implicit TLS (--tlsc) and AUTH PLAIN/LOGIN delivers."""
    port = server.ports["submissions" if "--tlsc" in args else "submission"]
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--from", ALICE, "--to", BOB,
         "--auth-user", ALICE, "--auth-password", PASSWORD, "--body", "swaks body",
         *args],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0" in result.stdout
    data = delivered(server, "bob")[0]
    assert "with ESMTPSA" in headerBlock(data)


def test_mail_before_auth_530(server):
    """On 587, MAIL before AUTH is refused with 530 5.7.0."""
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as c:
        c.starttls(context=insecureTLS())
        c.ehlo()
        code, text = c.mail(ALICE)
        assert (code, text[:5]) == (530, b"5.7.0")


def test_auth_before_starttls_538(server):
    """AUTH on 587 before STARTTLS is refused with 538 5.7.11; no password crosses in clear."""
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as c:
        c.ehlo()
        assert not c.has_extn("auth")
        code, text = c.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHg=")
        assert (code, text[:6]) == (538, b"5.7.11")


def test_wrong_password_535_with_delay(server):
    """A wrong password gets 535 5.7.8, answered only after the failure delay."""
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=insecureTLS(), timeout=10) as c:
        started = time.monotonic()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            c.login(ALICE, "wrong")
        assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8")
        assert time.monotonic() - started >= 0.25


def test_sixth_wrong_password_locks_the_address_out_for_that_account(server):
    """
    After five wrong passwords for bob in a minute, the sixth attempt from
    that IP gets 421 4.7.0, and so does bob's right one later; alice, from
    the same IP, still logs in: a guesser locks out their own address for
    the account they guess, nobody else.
    """
    codes = []
    for _ in range(6):
        with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=insecureTLS(), timeout=10) as c:
            c.ehlo()
            code, _ = c.docmd("AUTH", "PLAIN " + _plain(BOB, "wrong"))
            codes.append(code)
            if code == 421:
                break
    assert codes == [535] * 5 + [421]
    for user, expected in ((BOB, (421, b"4.7.0")), (ALICE, (235, b"2.7.0"))):
        with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=insecureTLS(),
                              timeout=10) as c:
            c.ehlo()
            code, text = c.docmd("AUTH", "PLAIN " + _plain(user, PASSWORD))
            assert (code, text[:5]) == expected
    server.waitForLog("locked out")


def _plain(user, password):
    import base64

    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_forged_sender_553(server):
    """An authenticated user may not send as another user: 553 5.7.1."""
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=insecureTLS(), timeout=10) as c:
        c.login(ALICE, PASSWORD)
        code, text = c.mail(BOB)
        assert (code, text[:5]) == (553, b"5.7.1")


def test_starttls_injection_not_executed(server):
    """
    Plaintext RSET pipelined after STARTTLS in one packet is not executed
    inside TLS: the first answer inside TLS is the one to our EHLO.
    """
    sock = socket.create_connection(("127.0.0.1", server.ports["submission"]), timeout=10)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220 ")
    sock.sendall(b"EHLO client.test\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    sock.sendall(b"STARTTLS\r\nRSET\r\n")
    assert f.readline().startswith(b"220 2.0.0")
    tls = insecureTLS().wrap_socket(sock, server_hostname="mail.example.org")
    tls.sendall(b"EHLO client.test\r\n")
    first = tls.makefile("rb").readline()
    assert first.startswith(b"250-mail.example.org"), first
    tls.close()


@pytest.mark.parametrize("port_role", ["submissions", "submission"])
def test_tls_versions(server, port_role):
    """openssl s_client: TLS 1.2 and 1.3 are accepted, TLS 1.1 is refused, on 465 and on 587 STARTTLS."""
    port = server.ports[port_role]
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"]
    if port_role == "submission":
        base += ["-starttls", "smtp"]

    def attempt(version):
        return subprocess.run(
            base + [f"-{version}"], input=b"QUIT\r\n", capture_output=True, timeout=30
        ).stdout.decode("utf-8", "replace")

    for version, name in (("tls1_2", "TLSv1.2"), ("tls1_3", "TLSv1.3")):
        out = attempt(version)
        assert f"Protocol: {name}" in out or f"Protocol  : {name}" in out or f", {name}," in out, out
    out = attempt("tls1_1")
    assert "Cipher is (NONE)" in out or "no protocols available" in out, out


def test_bdat_10mb_in_1mb_chunks(server):
    """A 10 MB message sent with BDAT in 1 MB chunks (last one BDAT n LAST) arrives byte-exact."""
    line = b"0123456789" * 7 + b"\r\n"
    body = b"Subject: bdat\r\n\r\n" + line * (10 * 1024 * 1024 // len(line))
    chunk = 1024 * 1024
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    f = sock.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if line[3:4] == b" ":
                return line

    reply()
    sock.sendall(b"EHLO client.test\r\n")
    assert b"250 " in reply()
    sock.sendall(b"MAIL FROM:<sender@remote.test> BODY=BINARYMIME\r\nRCPT TO:<alice@example.org>\r\n")
    assert reply().startswith(b"250") and reply().startswith(b"250")
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    for i, piece in enumerate(pieces):
        last = b" LAST" if i == len(pieces) - 1 else b""
        sock.sendall(b"BDAT %d%s\r\n" % (len(piece), last) + piece)
        assert reply().startswith(b"250 2.0.0")
    sock.sendall(b"QUIT\r\n")
    sock.close()
    (data,) = delivered(server, "alice")
    assert data.endswith(body)


def test_certificate_reloaded_on_sighup(makeMailServer, tmp_path):
    """
    After the certificate files are replaced and SIGHUP sent, new
    connections get the new certificate and an open connection goes on.
    """
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    makeSelfSigned(str(cert), str(key), "old.example.org")
    server = makeMailServer(
        roles=("submissions",), sections={"tls": {"cert": str(cert), "key": str(key)}}
    )
    port = server.ports["submissions"]

    def peerCertificate():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            with insecureTLS().wrap_socket(s) as t:
                return t.getpeercert(binary_form=True)

    old = peerCertificate()
    kept = smtplib.SMTP_SSL("127.0.0.1", port, context=insecureTLS(), timeout=10)
    makeSelfSigned(str(cert), str(key), "new.example.org")
    server.proc.send_signal(signal.SIGHUP)
    waitFor(lambda: peerCertificate() != old, timeout=10, message="new certificate served")
    assert kept.noop()[0] == 250
    kept.quit()
