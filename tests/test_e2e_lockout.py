"""
Failed-login lockouts end to end: a real server with two worker processes
(the counts live in the limit store they share), listening on 127.0.0.1
(imap, submission, pop3) and on ::1 (imaps, submissions, pop3s); real
clients (a raw IMAP client, imaplib, smtplib, poplib) guess from 127.0.0.1
or other loopback addresses (127.0.0.2...) and log in from ::1.

A guesser locks out the address it guesses from, for the account it
guesses: the owner logging in from elsewhere is not locked out.  Guessing
spread over many addresses is bounded per account, and one address
guessing many accounts per address.
"""

import imaplib
import poplib
import smtplib

import pytest

from imapwire import Wire
from mailserver import PASSWORD, insecureTLS
from workerserver import runningWorkers

MAX_FAILURES = 3
PER_ACCOUNT = 6
PER_ADDRESS = 15
USERS = [f"{name}@example.org" for name in
         ("alice", "bob", "carol", "dave", "erin", "frank")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with runningWorkers(
            tmp_path_factory.mktemp("lockout"), users=USERS,
            roles=("imap", "imaps", "submission", "submissions", "pop3", "pop3s"),
            interfaces={"imaps": "::1", "submissions": "::1", "pop3s": "::1"},
            sections={"auth": {"allow_plaintext_on_loopback": True, "failure_delay": 0,
                               "max_failures": MAX_FAILURES,
                               "max_failures_per_account": PER_ACCOUNT,
                               "max_failures_per_address": PER_ADDRESS,
                               "failure_window": 600, "lockout_time": 600}}) as server:
        yield server


def imapLogin(server, user, password, source="127.0.0.1"):
    """LOGIN over plaintext IMAP on 127.0.0.1 from C{source}: the tagged reply."""
    wire = Wire(server.ports["imap"], timeout=20, source=source)
    try:
        return wire.command(f'LOGIN {user} "{password}"')[1]
    finally:
        wire.close()


def imapLoginFromIPv6(server, user, password=PASSWORD):
    """LOGIN over IMAPS on ::1 with imaplib: C{None} if it worked, else the error."""
    client = imaplib.IMAP4_SSL("::1", server.ports["imaps"], ssl_context=insecureTLS(),
                               timeout=20)
    try:
        client.login(user, password)
    except imaplib.IMAP4.error as e:
        return e
    finally:
        client.shutdown()
    return None


def smtpAuth(client, user, password):
    """AUTH PLAIN once (smtplib.login would try LOGIN too after a 535)."""
    client.user, client.password = user, password
    try:
        return client.auth("PLAIN", client.auth_plain)[0]
    except smtplib.SMTPAuthenticationError as e:
        return e.smtp_code


def test_imap_guesses_lock_out_the_guessers_address_only(server):
    """
    Three wrong passwords for alice from 127.0.0.1 lock 127.0.0.1 out for
    alice (even her right password gets [UNAVAILABLE]), but alice logs in
    from ::1, and bob from 127.0.0.1: before, a guesser anywhere locked
    the owner out everywhere.
    """
    alice = USERS[0]
    for _ in range(MAX_FAILURES):
        assert b"NO [AUTHENTICATIONFAILED]" in imapLogin(server, alice, "wrong")
    assert b"NO [UNAVAILABLE]" in imapLogin(server, alice, PASSWORD)
    assert imapLoginFromIPv6(server, alice) is None
    assert b" OK " in imapLogin(server, USERS[1], PASSWORD)


def test_smtp_auth_guesses_lock_out_the_guessers_address_only(server):
    """
    Three failed AUTH PLAIN for bob on submission from 127.0.0.1: the next
    one, right password and all, gets 421 there; from ::1 (submissions) bob
    is let in (235) and may send.
    """
    bob = USERS[1]
    for _ in range(MAX_FAILURES):
        with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=20) as client:
            client.ehlo("guesser.test")
            assert smtpAuth(client, bob, "wrong") == 535
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=20) as client:
        client.ehlo("guesser.test")
        assert smtpAuth(client, bob, PASSWORD) == 421
    with smtplib.SMTP_SSL("::1", server.ports["submissions"], context=insecureTLS(),
                          timeout=20) as client:
        client.ehlo("owner.test")
        assert smtpAuth(client, bob, PASSWORD) == 235
        client.sendmail(bob, [USERS[0]], b"Subject: still here\r\n\r\nhi\r\n")


def test_pop3_guesses_lock_out_the_guessers_address_only(server):
    """
    Three wrong PASS for carol from 127.0.0.1 lock 127.0.0.1 out for her
    (-ERR and the connection closed); her POP3S login from ::1 works.
    """
    carol = USERS[2]
    for _ in range(MAX_FAILURES):
        client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=20)
        client.user(carol)
        with pytest.raises(poplib.error_proto, match="AUTH"):
            client.pass_("wrong")
        client.quit()
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=20)
    client.user(carol)
    with pytest.raises(poplib.error_proto, match="Too many failed logins"):
        client.pass_(PASSWORD)
    client.close()
    owner = poplib.POP3_SSL("::1", server.ports["pop3s"], context=insecureTLS(), timeout=20)
    owner.user(carol)
    assert owner.pass_(PASSWORD).startswith(b"+OK")
    owner.quit()


def test_guesses_spread_over_addresses_are_bounded_per_account(server):
    """
    One wrong password for dave from each of six loopback addresses (each
    under max_failures) reaches max_failures_per_account: dave's right
    password is then refused from everywhere, ::1 included, as a wrong one
    is (the guesser learns nothing); erin, from the same addresses, is not.
    """
    dave, erin = USERS[3], USERS[4]
    sources = [f"127.0.0.{n}" for n in range(2, 2 + PER_ACCOUNT)]
    for source in sources:
        assert b"NO [AUTHENTICATIONFAILED]" in imapLogin(server, dave, "wrong", source)
    assert b"NO [AUTHENTICATIONFAILED]" in imapLogin(server, dave, PASSWORD, "127.0.0.20")
    assert "AUTHENTICATIONFAILED" in str(imapLoginFromIPv6(server, dave))
    assert b" OK " in imapLogin(server, erin, PASSWORD, sources[0])


def test_one_address_guessing_many_accounts_is_bounded(server):
    """
    One wrong password for each of max_failures_per_address accounts from
    127.0.0.30 (made-up ones count too) locks that address out for every
    account, frank's included; frank logs in from 127.0.0.31.
    """
    for n in range(PER_ADDRESS):
        assert b"NO [AUTHENTICATIONFAILED]" in imapLogin(
            server, f"nobody{n}@example.org", "wrong", "127.0.0.30")
    frank = USERS[5]
    assert b"NO [UNAVAILABLE]" in imapLogin(server, frank, PASSWORD, "127.0.0.30")
    assert b" OK " in imapLogin(server, frank, PASSWORD, "127.0.0.31")
