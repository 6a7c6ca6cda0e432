"""
IMAPClient's own live test suite (C{python -m imapclient.livetest}, 59
tests; it wipes the account it is given) against the real server, over
implicit TLS checked against the server's own certificate.

Every livetest must pass, except
  - L{LIVETEST_OWN}: failures that happen against any server, for reasons
    in IMAPClient or its livetest; each is proved by a test of its own
    below;
  - L{NOT_OFFERED}: tests the livetest itself skips because we do not
    advertise the capability they need.
"""

import imaplib
import json
import socket
import subprocess
import sys
import threading
import unittest
from datetime import datetime
from email.utils import make_msgid
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.imapclient import SocketTimeout
from imapclient.fixed_offset import FixedOffset
from imapclient.livetest import MULTIPART_MESSAGE
from imapclient.response_types import Address, Envelope

from mailserver import PASSWORD, MailServer, insecureTLS, subprocessEnv

USER = "livetest@example.org"  # the livetest wipes this account
RUNNER = Path(__file__).with_name("livetest_runner.py")
TOTAL = 59

LIVETEST_OWN = {
    "TestWithUIDs.test_fetch":
        "compares ENVELOPE with assertSequenceEqual, but IMAPClient 3 made Envelope a "
        "dataclass without len(): 'First sequence has no length' whatever the server "
        "sends (test_livetest_envelope_check_fails_anywhere)",
    "TestWithoutUIDs.test_fetch":
        "the same ENVELOPE comparison; before it, the check of the keys expects no UID, "
        "but this FETCH of RFC822 sets \\Seen with CONDSTORE enabled, and RFC 7162 3.1 "
        "then requires UID and MODSEQ in the response (test_imap_condstore."
        "test_implicit_seen_reports_uid_and_modseq)",
    "TestWithoutUIDs.test_move":
        "IMAPClient.move with use_uid off calls imaplib's IMAP4.move, which does not "
        "exist: AttributeError before a byte is sent (test_livetest_move_without_uids_"
        "is_a_client_error)",
    "TestSocketTimeout.test_small_connection_timeout_fail":
        "measures latency, not the server: it expects connecting to take over 1 ms; "
        "over TLS the handshake usually does, but on loopback the TCP connect itself "
        "completes in the kernel before any accept(), whatever listens "
        "(test_loopback_connect_beats_the_livetest_timeout)",
    "TestSocketTimeout.test_small_read_timeout_fail":
        "expects a NOOP round trip to take over 10 us; CPython waits in whole "
        "milliseconds (poll), so any server answering within 1 ms on loopback makes "
        "it fail (test_prompt_answer_beats_the_livetest_timeout)",
}

_BOTH = ("TestWithUIDs", "TestWithoutUIDs")
NOT_OFFERED = {
    "TestGeneral.test_xlist": "XLIST is Gmail's; we offer SPECIAL-USE (RFC 6154)",
    "TestWithoutUIDs.test_uid_expunge": "the livetest runs it with UIDs only",
    **{f"{c}.{t}": reason for c in _BOTH for t, reason in [
        ("test_getacl", "ACL (RFC 4314): mailboxes are not shared"),
        ("test_gmail_labels", "X-GM-EXT-1 is Gmail's"),
        ("test_gmail_search", "X-GM-EXT-1 is Gmail's"),
        ("test_sort", "SORT (RFC 5256) is not offered"),
        ("test_sort_with_unicode", "SORT (RFC 5256) is not offered"),
        ("test_thread", "THREAD=REFERENCES (RFC 5256) is not offered"),
        ("test_thread_with_unicode", "THREAD=REFERENCES (RFC 5256) is not offered"),
    ]},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = MailServer(tmp_path_factory.mktemp("livetest"), roles=("imaps",),
                   sections={"auth": {"failure_delay": 0}})
    s.provision(users=(USER, "prover@example.org"))
    s.start()
    yield s
    s.stop()


def runLivetest(server, directory):
    """@return: C{{"Class.test": (outcome, detail)}} of one livetest run."""
    ini = directory / "livetest.ini"
    ini.write_text(f"""[DEFAULT]
host = 127.0.0.1
port = {server.ports['imaps']}
ssl = true
ssl_ca_file = {server.dataDir / 'tls' / 'selfsigned-cert.pem'}
# The certificate names the server's hostname; we connect to 127.0.0.1.
ssl_check_hostname = false
username = {USER}
password = {PASSWORD}
timeout = 30
""")
    run = subprocess.run([sys.executable, str(RUNNER), str(ini)], capture_output=True,
                         text=True, timeout=180, cwd=directory, env=subprocessEnv())
    results = {}
    for line in run.stdout.splitlines():
        if line.startswith("LIVETEST "):
            cls, name, outcome, detail = json.loads(line[len("LIVETEST "):])
            results[f"{cls}.{name}"] = (outcome, detail)
    assert results, f"the livetest did not run:\n{run.stdout}\n{run.stderr}"
    return results


def test_imapclient_livetest(server, tmp_path):
    """
    If this fails, some IMAP feature IMAPClient's authors test against every
    server (folders, flags, APPEND, FETCH, SEARCH, IDLE, CONDSTORE, MOVE...)
    is broken for the mail programs built on IMAPClient.
    """
    results = runLivetest(server, tmp_path)
    passed = sorted(n for n, (outcome, _) in results.items() if outcome == "ok")
    unexplained = {
        name: detail for name, (outcome, detail) in results.items()
        if outcome != "ok"
        and not (outcome in ("fail", "error") and name in LIVETEST_OWN)
        and not (outcome == "skip" and name in NOT_OFFERED)
    }
    print(f"livetest: {len(passed)}/{len(results)} passed; not passed: " + ", ".join(
        f"{n} ({outcome})" for n, (outcome, _) in sorted(results.items()) if outcome != "ok"))
    assert unexplained == {}
    assert len(results) == TOTAL, "the livetest changed: review LIVETEST_OWN and NOT_OFFERED"
    assert len(passed) >= TOTAL - len(LIVETEST_OWN) - len(NOT_OFFERED)


def client(server, user="prover@example.org"):
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl_context=insecureTLS())
    c.login(user, PASSWORD)
    return c


def test_livetest_envelope_check_fails_anywhere(server):
    """
    If this fails, our ENVELOPE for the livetest's message is wrong, or the
    livetest's test_fetch can pass after all and must leave LIVETEST_OWN.
    """
    expected = Envelope(
        datetime(2010, 3, 16, 16, 45, 32, tzinfo=FixedOffset(0)), b"A multipart message",
        (Address(b"Bob Smith", None, b"bob", b"smith.com"),),
        (Address(b"Bob Smith", None, b"bob", b"smith.com"),),
        (Address(b"Bob Smith", None, b"bob", b"smith.com"),),
        (Address(b"Some One", None, b"some", b"one.com"), Address(None, None, b"foo", b"foo.com")),
        None, None, None, None)
    # The livetest's own assertion fails even comparing the Envelope with itself.
    with pytest.raises(AssertionError, match="has no length"):
        unittest.TestCase().assertSequenceEqual(expected, expected)
    messageId = make_msgid()
    c = client(server)
    c.select_folder("INBOX")
    c.append("INBOX", f"Message-ID: {messageId}\r\n" + MULTIPART_MESSAGE)
    uid = c.search(["HEADER", "Message-ID", messageId])[0]
    c.normalise_times = False
    got = c.fetch([uid], ["ENVELOPE"])[uid][b"ENVELOPE"]
    expected.message_id = messageId.encode()
    assert got == expected
    c.logout()


def test_livetest_move_without_uids_is_a_client_error(server):
    """
    If this fails, IMAPClient's move() works without UIDs after all, and the
    livetest's TestWithoutUIDs.test_move must leave LIVETEST_OWN.
    """
    assert not hasattr(imaplib.IMAP4, "move")
    c = client(server)
    c.select_folder("INBOX")
    c.append("INBOX", b"Subject: stay\r\n\r\nx\r\n")
    count = len(c.search())
    c.use_uid = False
    with pytest.raises(AttributeError, match="Unknown IMAP4 command: 'move'"):
        c.move([1], "Trash")
    assert len(c.search()) == count  # nothing was sent, nothing moved
    c.logout()


def test_loopback_connect_beats_the_livetest_timeout():
    """
    If this fails, a loopback connect can take over 1 ms here, and the
    livetest's connection-timeout test could pass against a loopback server.
    """
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:  # never accepts
        for _ in range(3):
            socket.create_connection(listener.getsockname(), timeout=0.001).close()


def test_prompt_answer_beats_the_livetest_timeout():
    """
    If this fails, a loopback server answering NOOP at once is still slower
    than the livetest's 10 us read timeout, and its read-timeout test could
    pass against a good server.  A bare responder stands in for any server.
    """
    listener = socket.create_server(("127.0.0.1", 0))

    def respond():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
                for line in lines:
                    conn.sendall(line.split(b" ")[0] + b" OK done\r\n")

    threading.Thread(target=respond, daemon=True).start()
    answered = 0
    try:
        for _ in range(5):  # one prompt answer is enough: a loaded machine may miss some
            c = IMAPClient("127.0.0.1", port=listener.getsockname()[1], ssl=False,
                           timeout=SocketTimeout(connect=30, read=0.00001))
            try:
                c.noop()
                answered += 1
            except socket.timeout:
                pass
            c.shutdown()
    finally:
        listener.close()
    assert answered
