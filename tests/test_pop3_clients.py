"""
Real POP3 clients from Debian against a real twistd server: fetchmail over
POP3S (implicit TLS) and curl (STLS, and plaintext on loopback when the
config allows it).  .ci/run installs both.
"""

import io
import os
import smtplib
import subprocess

from mailserver import PASSWORD, waitFor

ALICE = "alice@example.org"


def inbox(server, user=ALICE):
    return server.store().mailbox(user).messages()


def deliver(server, data, user=ALICE):
    server.store().deliver(user, b"", io.BytesIO(data))


def message(subject):
    return (b"From: carol@example.net\r\nTo: alice@example.org\r\n"
            b"Subject: " + subject + b"\r\n\r\nHello.\r\n")


def test_fetchmail_downloads_and_deletes_over_pop3s(makeMailServer, tmp_path):
    """
    Two messages received over SMTP are downloaded by fetchmail over POP3S
    and deleted; afterwards the INBOX (which IMAP serves too) is empty.  If
    this fails, fetchmail/getmail users cannot collect their mail.
    """
    server = makeMailServer(roles=("pop3s",))
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        for subject in (b"first fetch", b"second fetch"):
            smtp.sendmail("carol@example.net", [ALICE], message(subject))
    waitFor(lambda: len(inbox(server)) == 2, 20, message="two delivered messages")

    home = tmp_path / "fetchmail"
    home.mkdir()
    rc = home / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 service {server.ports["pop3s"]} protocol pop3 timeout 30\n'
        f'  user "{ALICE}" password "{PASSWORD}" is "alice" here\n'
        f"  ssl no sslcertck fetchall nokeep\n")
    rc.chmod(0o600)  # fetchmail refuses a readable rc file
    out = home / "out.bsmtp"
    result = subprocess.run(
        ["fetchmail", "--fetchmailrc", str(rc), "--nodetach", "--verbose",
         "--bsmtp", str(out), "--idfile", str(home / "ids"),
         "--pidfile", str(home / "pid")],
        env=dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home)),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    fetched = out.read_bytes()
    assert fetched.count(b"\r\nDATA\r\n") + fetched.count(b"\nDATA\n") == 2, fetched
    assert b"Subject: first fetch" in fetched and b"Subject: second fetch" in fetched
    assert "QUIT" in result.stdout and "2 messages deleted" in result.stdout
    assert inbox(server) == []


def curl(*args):
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "60",
                           "--user", f"{ALICE}:{PASSWORD}", *args],
                          capture_output=True, timeout=90)


def test_curl_list_with_stls(makeMailServer):
    """curl pop3:// with --ssl-reqd (STLS, AUTH PLAIN) lists the messages
    and retrieves one; curl-based scripts and monitoring work."""
    server = makeMailServer(roles=("pop3",))
    one, two = message(b"a"), message(b"bb")
    deliver(server, one)
    deliver(server, two)
    url = f"pop3://127.0.0.1:{server.ports['pop3']}/"
    result = curl("--insecure", "--ssl-reqd", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"1 %d\r\n2 %d\r\n" % (len(one), len(two))
    result = curl("--insecure", "--ssl-reqd", url + "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == two


def test_curl_plaintext_refused_then_allowed_on_loopback(makeMailServer):
    """Without TLS, curl's login is refused unless
    [auth] allow_plaintext_on_loopback is on; then LIST works from
    127.0.0.1 (for local tools)."""
    server = makeMailServer(roles=("pop3",))
    deliver(server, message(b"a"))
    url = f"pop3://127.0.0.1:{server.ports['pop3']}/"
    assert curl(url).returncode != 0
    server.stop()
    server.sections["auth"] = {"allow_plaintext_on_loopback": True}
    server.writeConfig()
    server.start()
    result = curl(url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"1 %d\r\n" % len(message(b"a"))
