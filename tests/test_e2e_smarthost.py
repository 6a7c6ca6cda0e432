"""
Relay through a smarthost, end to end: the smarthost is a second pymailer
on 127.0.0.1 (submission port, STARTTLS with a self-signed certificate for
"localhost", AUTH) or a scripted server without TLS.  Its certificate is
verified by default, and the password never goes where it could be read.
"""

import smtplib

import pytest

from mailserver import PASSWORD, waitFor
from scriptedsmtp import ScriptedSMTP
from pymailer.tls import makeSelfSigned

ALICE = "alice@example.org"
CAROL = "carol@remote.test"


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate (and key) for the name localhost only."""
    cert, key = tmp_path / "localhost-cert.pem", tmp_path / "localhost-key.pem"
    makeSelfSigned(str(cert), str(key), "localhost", alsoFor=())
    return cert, key


@pytest.fixture
def smarthost(makeMailServer, certificate):
    """
    A pymailer with remote.test and carol, submission with STARTTLS and
    AUTH, where alice has an account too (a provider's smarthost).
    """
    cert, key = certificate
    server = makeMailServer(name="smarthost", roles=("submission",), start=False,
                            sections={"tls": {"cert": str(cert), "key": str(key)}})
    server.provision(domain="remote.test", users=(CAROL,))
    return server.start()


def sender(makeMailServer, smarthostAddress, **relay):
    """Our server, relaying everything through C{smarthostAddress} as alice."""
    options = {"smarthost": smarthostAddress, "smarthost_user": ALICE,
               "smarthost_password": PASSWORD, "connect_timeout": 2.0}
    options.update(relay)
    return makeMailServer(
        name="sender", roles=("submission",), queue={"retry_min": 1, "retry_max": 1},
        sections={"auth": {"allow_plaintext_on_loopback": True, "failure_delay": 0},
                  "relay": options})


def submit(server):
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as c:
        c.login(ALICE, PASSWORD)
        c.sendmail(ALICE, [CAROL], f"From: {ALICE}\r\nTo: {CAROL}\r\nSubject: hi\r\n\r\nHello.\r\n")


def lastError(server):
    """The 'last error' that `pymailer queue list` shows, once there is one."""
    def found():
        out = server.admin("queue", "list").stdout
        return out.partition("last error: ")[2].strip() or None
    return waitFor(found, timeout=20, message="a deferred message with its last error")


def test_self_signed_smarthost_refused_by_default(makeMailServer, smarthost):
    """
    A smarthost whose certificate no trusted CA signed gets no mail and no
    password: the mail waits in the queue, and `queue list` says the
    certificate could not be verified.
    """
    ours = sender(makeMailServer, f"localhost:{smarthost.ports['submission']}",
                  smarthost_tls="starttls")
    submit(ours)
    error = lastError(ours)
    assert "certificate" in error and error.startswith("451 4.7.5"), error
    assert smarthost.messages(CAROL) == []
    assert "sasl_username" not in smarthost.log()


def test_smarthost_ca_file_verifies_and_delivers_with_auth(makeMailServer, smarthost, certificate):
    """
    With smarthost_ca_file naming the smarthost's certificate, the mail is
    delivered over verified TLS and after AUTH (the smarthost's Received
    line says ESMTPSA).
    """
    ours = sender(makeMailServer, f"localhost:{smarthost.ports['submission']}",
                  smarthost_tls="starttls", smarthost_ca_file=str(certificate[0]))
    submit(ours)
    [data] = smarthost.waitForMessages(CAROL, 1)
    assert b"with ESMTPSA" in data
    smarthost.waitForLog(f"user={ALICE}")


def test_smarthost_name_must_match_certificate(makeMailServer, smarthost, certificate):
    """
    A trusted certificate for another name (localhost, reached as
    127.0.0.1) is refused too: the error names the host it was checked for.
    """
    ours = sender(makeMailServer, f"127.0.0.1:{smarthost.ports['submission']}",
                  smarthost_tls="starttls", smarthost_ca_file=str(certificate[0]))
    submit(ours)
    error = lastError(ours)
    assert "certificate" in error and "'127.0.0.1'" in error, error
    assert smarthost.messages(CAROL) == []


def test_verify_opt_out_delivers(makeMailServer, smarthost):
    """With smarthost_tls_verify = false, the self-signed smarthost gets the mail (and AUTH)."""
    ours = sender(makeMailServer, f"localhost:{smarthost.ports['submission']}",
                  smarthost_tls="starttls", smarthost_tls_verify=False)
    submit(ours)
    [data] = smarthost.waitForMessages(CAROL, 1)
    assert b"with ESMTPSA" in data


@pytest.fixture
def plainSmarthost():
    """A smarthost offering AUTH but no STARTTLS."""
    from mailserver import freePort

    server = ScriptedSMTP("127.0.0.1", freePort(), extensions=("PIPELINING", "AUTH PLAIN"))
    yield server
    server.stop()


def test_no_password_in_the_clear(makeMailServer, plainSmarthost):
    """
    An opportunistic smarthost that offers no TLS never sees the password
    (nor the mail): `queue list` says why and which key allows it.
    """
    ours = sender(makeMailServer, f"127.0.0.1:{plainSmarthost.server.server_address[1]}")
    submit(ours)
    error = lastError(ours)
    assert "in the clear" in error and "smarthost_auth_plaintext" in error, error
    wire = b"".join(line for t in plainSmarthost.transcripts for line in t)
    assert b"AUTH" not in wire
    assert plainSmarthost.messages == []


def test_password_in_the_clear_when_allowed(makeMailServer, plainSmarthost):
    """With smarthost_auth_plaintext = true, AUTH goes without TLS and the mail is delivered."""
    ours = sender(makeMailServer, f"127.0.0.1:{plainSmarthost.server.server_address[1]}",
                  smarthost_auth_plaintext=True)
    submit(ours)
    waitFor(lambda: plainSmarthost.messages, timeout=20, message="the relayed message")
    wire = b"".join(line for t in plainSmarthost.transcripts for line in t)
    assert b"AUTH PLAIN" in wire
