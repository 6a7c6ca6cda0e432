"""
Submission (RFC 6409) and its security at the protocol level: STARTTLS,
AUTH, lockouts, sender ownership, and CHUNKING/BDAT (RFC 3030), on a
L{StringTransport} with time from a clock.
"""

import base64

import pytest

from pymailer.config import AuthConfig
from pymailer.auth.guard import LoginGuard
from pymailer.smtp.factory import MTA, SUBMISSION, SUBMISSIONS

from test_smtp_server import Client, assertReply

TLS = object()  # stands in for the context factory; startTLS only records it


def plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def submissionClient(role=SUBMISSION, host="192.0.2.1", **auth):
    authConfig = AuthConfig(**{"failure_delay": 2.0, **auth})
    client = Client.__new__(Client)
    args = dict(role=role, tls=TLS, authConfig=authConfig)
    Client.__init__(client, factoryArgs=args, host=host)
    client.factory.guard = LoginGuard(authConfig, client.clock)
    return client


def startTLS(c):
    c.ehlo()
    assertReply(c.one("STARTTLS\r\n"), 220, "2.0.0")
    assert c.transport.tlsContextFactory is TLS


def login(c, user="alice@example.org", password="alice-pw"):
    return c.one(f"AUTH PLAIN {plain(user, password)}\r\n")


def test_submission_offers_starttls_not_auth_before_tls():
    """Port 587 offers STARTTLS and hides AUTH until the session is encrypted."""
    c = submissionClient()
    code, lines = c.ehlo()
    assert "STARTTLS" in lines and not any(l.startswith("AUTH") for l in lines)


def test_mail_before_auth_530():
    """On submission, MAIL before AUTH gets 530 5.7.0 (RFC 6409 §4.3)."""
    c = submissionClient()
    startTLS(c)
    c.ehlo()
    assertReply(c.one("MAIL FROM:<alice@example.org>\r\n"), 530, "5.7.0")


def test_auth_before_starttls_538():
    """AUTH over plaintext gets 538 5.7.11 (RFC 4954 §6)."""
    c = submissionClient()
    c.ehlo()
    assertReply(c.one(f"AUTH PLAIN {plain('alice@example.org', 'alice-pw')}\r\n"), 538, "5.7.11")


def test_starttls_discards_pipelined_plaintext():
    """
    Commands pipelined in plaintext after STARTTLS are not run inside TLS
    (CVE-2011-0411): the injected RSET gets no reply.
    """
    c = submissionClient()
    c.ehlo()
    replies = c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@evil.test>\r\n")
    assert [r[0] for r in replies] == [220]
    assert c.proto._buffer == b""
    # RFC 3207 §4.2: the client must say EHLO again.
    assertReply(c.one("MAIL FROM:<alice@example.org>\r\n"), 503, "5.5.1")


def test_after_starttls_auth_offered_and_starttls_gone():
    """After STARTTLS, EHLO offers AUTH PLAIN LOGIN and no longer STARTTLS."""
    c = submissionClient()
    startTLS(c)
    code, lines = c.ehlo()
    assert "AUTH PLAIN LOGIN" in lines and "STARTTLS" not in lines


def test_auth_plain_success_235_and_send():
    """A right password gets 235 2.7.0 and the user may send as themselves."""
    c = submissionClient(role=SUBMISSIONS)
    c.ehlo()
    assertReply(login(c), 235, "2.7.0")
    assertReply(c.one("MAIL FROM:<alice+lists@example.org>\r\n"), 250, "2.1.0")
    assertReply(c.one("RCPT TO:<bob@example.org>\r\n"), 250, "2.1.5")
    c.one("DATA\r\n")
    assertReply(c.one("Subject: s\r\n\r\nhi\r\n.\r\n"), 250, "2.0.0")
    envelope = c.intake.committed[0][0]
    assert envelope.session.authenticatedAs == "alice@example.org"


def test_auth_login_mechanism():
    """AUTH LOGIN prompts for user name and password (base64) and succeeds."""
    c = submissionClient(role=SUBMISSIONS)
    c.ehlo()
    assert c.one("AUTH LOGIN\r\n") == (334, ["VXNlcm5hbWU6"])
    assert c.one(base64.b64encode(b"alice@example.org") + b"\r\n") == (334, ["UGFzc3dvcmQ6"])
    assertReply(c.one(base64.b64encode(b"alice-pw") + b"\r\n"), 235, "2.7.0")


def test_wrong_password_535_after_delay():
    """A wrong password is answered 535 5.7.8, and only after the failure delay."""
    c = submissionClient(role=SUBMISSIONS, failure_delay=2.0)
    c.ehlo()
    assert c.send(f"AUTH PLAIN {plain('alice@example.org', 'wrong')}\r\nNOOP\r\n") == []
    c.clock.advance(1.9)
    assert c.replies() == []
    c.clock.advance(0.2)
    replies = c.replies()
    assertReply(replies[0], 535, "5.7.8")
    assertReply(replies[1], 250, "2.0.0")


def failLogin(c):
    replies = c.send(f"AUTH PLAIN {plain('alice@example.org', 'wrong')}\r\n")
    c.clock.advance(c.factory.authConfig.failure_delay)
    return (replies + c.replies())[-1]


def guess(c, host, times=1):
    """C{times} wrong passwords for alice from C{host}, each answered 535."""
    attacker = c.reconnect(host=host)
    attacker.ehlo()
    for _ in range(times):
        assertReply(failLogin(attacker), 535, "5.7.8")
    return attacker


def test_ip_locked_out_after_max_failures():
    """
    Five wrong passwords from one IP in a minute are answered 535; the sixth
    attempt gets 421 4.7.0 and the connection closes, and from then on even
    the right password from that IP, on a new connection, gets 421 4.7.0.
    """
    c = submissionClient(role=SUBMISSIONS, failure_delay=0)
    c.ehlo()
    for _ in range(5):
        assertReply(failLogin(c), 535, "5.7.8")
    assertReply(failLogin(c), 421, "4.7.0")
    assert c.transport.disconnecting
    again = c.reconnect()
    again.ehlo()
    assertReply(login(again), 421, "4.7.0")
    # Another user, elsewhere, is not locked out.
    other = c.reconnect(host="192.0.2.50")
    other.ehlo()
    assertReply(login(other, "bob@example.org", "bob-pw"), 235, "2.7.0")
    assertReply(failLogin(other), 503, "5.5.1")  # already authenticated


def test_one_guesser_per_address_does_not_lock_the_owner_out():
    """
    Five wrong passwords for alice from each of nine addresses lock out
    those addresses, not alice: her right password from another address
    gets 235, where one guesser used to lock her out everywhere.
    """
    c = submissionClient(role=SUBMISSIONS, failure_delay=0)
    for i in range(9):
        attacker = guess(c, f"192.0.2.{100 + i}", times=5)
        assertReply(failLogin(attacker), 421, "4.7.0")
    owner = c.reconnect(host="198.51.100.7")
    owner.ehlo()
    assertReply(login(owner), 235, "2.7.0")


def test_account_locked_from_any_ip_past_the_per_account_bound():
    """
    Past max_failures_per_account wrong passwords for one account, spread
    over addresses (each under max_failures), its right password fails
    (535) from any other address.
    """
    c = submissionClient(role=SUBMISSIONS, failure_delay=0, max_failures_per_account=8)
    for i in range(8):
        guess(c, f"192.0.2.{100 + i}")
    owner = c.reconnect(host="198.51.100.7")
    owner.ehlo()
    owner.send(f"AUTH PLAIN {plain('alice@example.org', 'alice-pw')}\r\n")
    c.clock.advance(0)
    assertReply(owner.replies()[-1], 535, "5.7.8")


def test_ipv6_clients_counted_per_64():
    """
    Guesses from two addresses of one IPv6 /64 add up (a host has all of
    its /64 to hop around in): the lockout holds for the whole /64, and
    not for the next /64, where alice logs in.
    """
    c = submissionClient(role=SUBMISSIONS, failure_delay=0)
    for i in range(5):
        guess(c, f"2001:db8:0:1::{i + 1:x}")
    sameNet = c.reconnect(host="2001:db8:0:1:ffff::9")
    sameNet.ehlo()
    assertReply(login(sameNet), 421, "4.7.0")
    nextNet = c.reconnect(host="2001:db8:0:2::1")
    nextNet.ehlo()
    assertReply(login(nextNet), 235, "2.7.0")


def test_lockout_expires():
    """A locked-out IP may log in again once lockout_time has passed."""
    c = submissionClient(role=SUBMISSIONS, failure_delay=0, max_failures=1, lockout_time=60)
    c.ehlo()
    assertReply(failLogin(c), 535, "5.7.8")
    assertReply(failLogin(c), 421, "4.7.0")
    c.clock.advance(61)
    fresh = c.reconnect()
    fresh.ehlo()
    assertReply(login(fresh), 235, "2.7.0")


def test_forged_sender_553():
    """An authenticated user sending as somebody else gets 553 5.7.1."""
    c = submissionClient(role=SUBMISSIONS)
    c.ehlo()
    login(c)
    assertReply(c.one("MAIL FROM:<bob@example.org>\r\n"), 553, "5.7.1")


def test_alias_sender_allowed():
    """A user may send as an alias that reaches them."""
    c = submissionClient(role=SUBMISSIONS)
    c.ehlo()
    login(c)
    assertReply(c.one("MAIL FROM:<team@example.org>\r\n"), 250, "2.1.0")


def test_remote_recipient_tempfails_until_relay_exists():
    """Mail from a user to another domain is refused 451 4.4.0 (kept by the client), not dropped."""
    c = submissionClient(role=SUBMISSIONS)
    c.ehlo()
    login(c)
    c.one("MAIL FROM:<alice@example.org>\r\n")
    assertReply(c.one("RCPT TO:<friend@elsewhere.test>\r\n"), 451, "4.4.0")


def test_auth_not_offered_on_mta():
    """Port 25 offers no AUTH: a client trying gets 503 5.5.1."""
    c = submissionClient(role=MTA)
    startTLS(c)
    c.ehlo()
    assertReply(c.one(f"AUTH PLAIN {plain('alice@example.org', 'alice-pw')}\r\n"), 503, "5.5.1")


def test_mta_offers_starttls():
    """Port 25 offers STARTTLS with the same certificate."""
    c = submissionClient(role=MTA)
    assert "STARTTLS" in c.ehlo()[1]


def test_plaintext_auth_on_loopback_when_allowed():
    """With allow_plaintext_on_loopback, a local client may AUTH without TLS."""
    c = submissionClient(host="127.0.0.1", allow_plaintext_on_loopback=True)
    c.ehlo()
    assertReply(login(c), 235, "2.7.0")


def test_auth_aborted_501():
    """A client answering '*' to a challenge gets 501 and may go on."""
    c = submissionClient(role=SUBMISSIONS)
    c.ehlo()
    c.one("AUTH LOGIN\r\n")
    assertReply(c.one("*\r\n"), 501, "5.7.0")
    assertReply(c.one("NOOP\r\n"), 250, "2.0.0")


def test_malformed_sasl_501():
    """Invalid base64 in an AUTH response gets 501 5.5.2."""
    c = submissionClient(role=SUBMISSIONS)
    c.ehlo()
    assertReply(c.one("AUTH PLAIN !!!notbase64\r\n"), 501, "5.5.2")


def test_auth_as_another_user_535():
    """A PLAIN authzid naming somebody else gets 535 5.7.8 (RFC 4954 6), not 501."""
    c = submissionClient(role=SUBMISSIONS)
    c.ehlo()
    token = base64.b64encode(b"bob@example.org\0alice@example.org\0alice-pw").decode()
    assertReply(c.one(f"AUTH PLAIN {token}\r\n"), 535, "5.7.8")
    assertReply(c.one("MAIL FROM:<alice@example.org>\r\n"), 530, "5.7.0")


def test_unknown_mechanism_504():
    """An unknown SASL mechanism gets 504 5.5.4."""
    c = submissionClient(role=SUBMISSIONS)
    c.ehlo()
    assertReply(c.one("AUTH CRAM-MD5\r\n"), 504, "5.5.4")


# -- CHUNKING / BDAT ----------------------------------------------------------


def bdatSession(**limits):
    c = Client(**limits)
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test> BODY=BINARYMIME\r\n")
    c.one("RCPT TO:<alice@example.org>\r\n")
    return c


def test_bdat_chunks_arrive_byte_exact():
    """A message in BDAT chunks (binary, with a bare LF and a NUL) is stored exactly."""
    c = bdatSession()
    body = b"Subject: b\r\n\r\n\x00binary\nline\r\n.\r\n"
    assertReply(c.one(b"BDAT 10\r\n" + body[:10]), 250, "2.0.0")
    replies = c.send(b"BDAT %d LAST\r\n" % (len(body) - 10) + body[10:])
    assertReply(replies[0], 250, "2.0.0")
    assert c.intake.committed[0][1] == body


def test_bdat_pipelined_in_one_packet():
    """BDAT chunks pipelined with the commands around them are answered in order."""
    c = Client()
    replies = c.send(
        b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
        b"BDAT 3\r\nabcBDAT 0 LAST\r\nNOOP\r\n"
    )
    assert [r[0] for r in replies] == [250, 250, 250, 250, 250, 250]
    assert c.intake.committed[0][1] == b"abc"


def test_bdat_without_mail_503_after_reading_chunk():
    """BDAT outside a transaction: the chunk is read (not run as commands) and 503 given."""
    c = Client()
    c.ehlo()
    replies = c.send(b"BDAT 6 LAST\r\nRSET\r\n")
    assert [r[0] for r in replies] == [503]


def test_bdat_over_size_552():
    """A BDAT message over the size limit gets 552 5.3.4 and is not stored."""
    c = bdatSession(max_message_size=10)
    assertReply(c.one(b"BDAT 20 LAST\r\n" + b"x" * 20), 552, "5.3.4")
    assert c.intake.committed == []


def test_binarymime_with_data_503():
    """BODY=BINARYMIME followed by DATA gets 503 5.5.1 (RFC 3030 §3)."""
    c = bdatSession()
    assertReply(c.one("DATA\r\n"), 503, "5.5.1")


@pytest.mark.parametrize("command", ["BDAT", "BDAT x", "BDAT 5 FIRST", "BDAT -1"])
def test_bdat_syntax_501(command):
    """A malformed BDAT gets 501 5.5.4."""
    c = bdatSession()
    assertReply(c.one(command + "\r\n"), 501, "5.5.4")


def test_long_auth_response_allowed():
    """A SASL response up to RFC 4954's 12288 octets is read, not refused as a long line."""
    c = submissionClient(role=SUBMISSIONS, failure_delay=0)
    c.ehlo()
    token = plain("alice@example.org", "x" * 3000)
    replies = c.send(f"AUTH PLAIN {token}\r\n")
    c.clock.advance(0)
    assertReply((replies + c.replies())[-1], 535, "5.7.8")
