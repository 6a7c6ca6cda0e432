"""
The IMAP server at the protocol level: command reading, literal limits,
STARTTLS, login policy and pipelining, on a L{StringTransport} with a
L{task.Clock}, a real Maildir store in a scratch directory and store calls
run inline (no reactor, no threads).
"""

import base64

import pytest
from twisted.internet.address import IPv4Address

from imapharness import TLS, USER, PASSWORD, Client, TLSTransport, withoutMailboxId  # noqa: F401 (re-exported)
from pymailer.imap import utf7
from pymailer.imap.server import IMAPServer

@pytest.fixture
def client(tmp_path):
    return Client(tmp_path, secure=True)


def test_greeting_lists_capabilities_and_logindisabled(tmp_path):
    """A plaintext client is told at once that it must STARTTLS before LOGIN (no password leaks)."""
    c = Client(tmp_path)
    assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1")
    assert b"STARTTLS" in c.greeting and b"LOGINDISABLED" in c.greeting
    assert b"AUTH=PLAIN" not in c.greeting


def test_login_refused_before_starttls(tmp_path):
    """A password sent in plaintext over the network is refused, not checked."""
    c = Client(tmp_path)
    out = c.send(b"a LOGIN alice@example.org secret\r\n")
    assert out.startswith(b"a NO [PRIVACYREQUIRED]")


def test_plaintext_login_on_loopback_when_configured(tmp_path):
    """Local tools on 127.0.0.1 may log in without TLS when the config allows it."""
    c = Client(tmp_path, host="127.0.0.1", plaintextLoopback=True)
    assert b"LOGINDISABLED" not in c.greeting
    c.login()


def test_starttls_discards_pipelined_plaintext(tmp_path):
    """Commands injected after STARTTLS in the same packet are never run inside TLS (CVE-2011-0411)."""
    c = Client(tmp_path)
    out = c.send(b"a STARTTLS\r\nb LOGIN alice@example.org secret\r\nc CAPABILITY\r\n")
    assert out == b"a OK Begin TLS negotiation now\r\n"
    assert c.transport.tlsContext is TLS
    assert c.protocol.user is None
    out = c.send(b"d CAPABILITY\r\n")
    assert b"STARTTLS" not in out and b"AUTH=PLAIN" in out


def test_starttls_twice_is_bad(client):
    """A client on an already encrypted connection gets BAD, not a second handshake."""
    assert client.send(b"a STARTTLS\r\n").startswith(b"a BAD")


def test_login_and_wrong_password_delayed(client):
    """A wrong password is answered only after the failure delay (slows guessing), then NO."""
    out = client.send(b"a LOGIN alice@example.org wrong\r\n")
    assert out == b""
    client.factory.clock.advance(2.0)
    assert client.read().startswith(b"a NO [AUTHENTICATIONFAILED]")
    client.login()


def test_lockout_after_repeated_failures(tmp_path):
    """
    After max_failures wrong passwords the address is locked out: the next
    LOGIN, even with the right password, gets [UNAVAILABLE] and BYE.
    """
    c = Client(tmp_path, secure=True, max_failures=3)
    out = b""
    for i in range(3):
        c.send(b"a%d LOGIN alice@example.org wrong\r\n" % i)
        c.factory.clock.advance(2.0)
        out += c.read()
    assert out.count(b"[AUTHENTICATIONFAILED]") == 3 and b"* BYE" not in out
    out = c.send(b"a9 LOGIN alice@example.org wrong\r\n")  # refused at once
    assert b"[UNAVAILABLE]" in out and b"* BYE" in out


def test_authenticate_plain_with_initial_response(client):
    """AUTHENTICATE PLAIN with SASL-IR logs in in one round trip (RFC 4959)."""
    blob = base64.b64encode(b"\0" + USER + b"\0" + PASSWORD)
    out = client.send(b"a AUTHENTICATE PLAIN " + blob + b"\r\n")
    assert out.startswith(b"a OK [CAPABILITY")


def test_authenticate_as_another_user_is_authorizationfailed(client):
    """
    A PLAIN authzid naming somebody else is a refusal, NO
    [AUTHORIZATIONFAILED] (RFC 5530 3), not a syntax error; no login.
    """
    blob = base64.b64encode(b"bob@example.org\0" + USER + b"\0" + PASSWORD)
    out = client.send(b"a AUTHENTICATE PLAIN " + blob + b"\r\n")
    assert out.startswith(b"a NO [AUTHORIZATIONFAILED]")
    assert client.send(b"b SELECT INBOX\r\n").startswith(b"b BAD")


def test_authenticate_plain_with_continuation(client):
    """AUTHENTICATE PLAIN without initial response asks with '+' and accepts the answer."""
    assert client.send(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    blob = base64.b64encode(b"\0" + USER + b"\0" + PASSWORD)
    assert client.send(blob + b"\r\n").startswith(b"a OK")


def test_huge_literal_refused_before_continuation(client):
    """{99999999999} gets NO/BAD before any '+', so the server never reads gigabytes."""
    client.login()
    out = client.send(b"a APPEND INBOX {99999999999}\r\n")
    assert out.startswith(b"a NO [TOOBIG]") and b"+ " not in out
    assert client.send(b"b NOOP\r\n").startswith(b"b OK")


def test_negative_literal_is_bad(client):
    """{-5} is a syntax error answered with BAD; the connection goes on."""
    client.login()
    out = client.send(b"a APPEND INBOX {-5}\r\n")
    assert out.startswith(b"a BAD") and b"+ " not in out
    assert client.send(b"b NOOP\r\n").startswith(b"b OK")


def test_preauth_literal_capped(client):
    """Before login a client cannot make the server buffer more than a few KiB."""
    out = client.send(b"a LOGIN {100000}\r\n")
    assert out.startswith(b"a BAD") and b"+ " not in out


def test_non_synchronizing_literal_over_limit_closes(client):
    """A LITERAL+ over the limit cannot be skipped safely: BAD, then BYE and close."""
    out = client.send(b"a LOGIN {100000+}\r\n")
    assert out.startswith(b"a BAD") and b"* BYE" in out
    assert client.transport.disconnecting


def test_line_too_long_answered_then_closed(client):
    """A line over 64 KiB gets a BAD reply before the connection closes (Twisted just drops it)."""
    out = client.send(b"a NOOP " + b"x" * (70 * 1024))
    assert b"* BAD Line too long" in out
    assert client.transport.disconnecting


def test_literal_login(client):
    """A client sending its password as a literal (with '+' continuation) can log in."""
    assert client.send(b"a LOGIN {17}\r\n") == b"+ Ready for literal data\r\n"
    out = client.send(USER + b" {6+}\r\n" + PASSWORD + b"\r\n")
    assert out.startswith(b"a OK"), out


def test_malformed_commands_get_bad_and_connection_goes_on(client):
    """Garbage gets BAD with a reason; the session stays usable."""
    client.login()
    for line in [b"a FOO", b"a SELECT", b'a SELECT "unterminated', b"a FETCH 1:x FLAGS",
                 b"a LIST a", b"a UID FOO", b"(((", b"a STATUS INBOX (BOGUS)"]:
        out = client.send(line + b"\r\n")
        assert b" BAD " in out, (line, out)
    assert client.send(b"z NOOP\r\n").startswith(b"z OK")


def test_pipelined_commands_answered_in_order(client):
    """Pipelined commands get their replies in order, each after its own results (twisted #9282)."""
    client.login()
    out = client.send(b"a SELECT INBOX\r\nb NOOP\r\nc LOGOUT\r\n")
    assert out.index(b"a OK") < out.index(b"b OK") < out.index(b"c OK")


@pytest.mark.parametrize("name", [
    "../x", "/abs", "a/../../b", "&AGE-", "&Jjo-&Jjo-", "&Jjo", "a\\x00b".replace("\\x00", "\x00"),
])
def test_bad_mailbox_names_refused(client, tmp_path, name):
    """Names that could escape the user's maildir or alias another name are refused with NO."""
    client.login()
    raw = name.encode("latin-1")
    if b"\x00" in raw:
        out = client.send(b"a CREATE {%d}\r\n" % len(raw))
        out += client.send(raw + b"\r\n")
    else:
        out = client.send(b'a CREATE "' + raw + b'"\r\n')
    assert b"a NO" in out or b"a BAD" in out, out
    assert not (tmp_path / "x").exists() and not (tmp_path / "abs").exists()


@pytest.mark.parametrize("name", ["a*b", "a%b"])
def test_wildcards_refused_in_create(client, name):
    """A mailbox named with * or % could never be listed: CREATE refuses it."""
    client.login()
    assert b"a NO" in client.send(b'a CREATE "' + name.encode() + b'"\r\n')


def test_modified_utf7_round_trip():
    """Non-ASCII folder names (Entwürfe, 日本語) survive the trip to the client and back."""
    for name in ["Entwürfe", "日本語/x", "a&b", "~peter/mail/台北/日本語"]:
        assert utf7.decode(utf7.encode(name)) == name
    assert utf7.encode("台北") == b"&U,BTFw-"


def test_idle_sees_delivery(client):
    """A client in IDLE is told of new mail at once (EXISTS), without polling."""
    client.login()
    client.send(b"a SELECT INBOX\r\n")
    assert client.send(b"b IDLE\r\n").startswith(b"+ idling")
    import io
    client.factory.store.deliver(USER.decode(), b"", io.BytesIO(b"Subject: x\r\n\r\nhi\r\n"))
    assert b"* 1 EXISTS" in client.read()
    assert client.send(b"DONE\r\n").startswith(b"b OK")


def test_flag_change_seen_by_other_session(tmp_path):
    """A flag set in one session shows up in another session on the same mailbox at its next NOOP."""
    c1 = Client(tmp_path, secure=True)
    import io
    c1.factory.store.deliver(USER.decode(), b"", io.BytesIO(b"Subject: x\r\n\r\nhi\r\n"))
    c1.login()
    c1.send(b"a SELECT INBOX\r\n")
    c2 = IMAPServer(c1.factory)
    t2 = TLSTransport(peerAddress=IPv4Address("TCP", "192.0.2.2", 40001))
    c2.makeConnection(t2)
    c2.dataReceived(b"l LOGIN alice@example.org secret\r\na SELECT INBOX\r\n")
    t2.clear()
    c1.send(b"s STORE 1 +FLAGS (\\Flagged)\r\n")
    c2.dataReceived(b"n NOOP\r\n")
    assert b"* 1 FETCH (FLAGS (\\Flagged) UID 1)" in t2.value()


@pytest.mark.parametrize("command", [
    b'LIST "" "*"', b'LSUB "" "*"', b"CREATE x", b"DELETE x", b"RENAME x y",
    b"SUBSCRIBE x", b"UNSUBSCRIBE x", b"STATUS INBOX (MESSAGES)", b"NAMESPACE",
    b"APPEND INBOX {1+}\r\nx",
])
def test_mailbox_commands_before_login_are_bad(tmp_path, command):
    """
    If this fails, a client that sends LIST, CREATE, APPEND... before
    logging in gets NO [SERVERBUG] (and the log a traceback) instead of
    BAD (RFC 3501 6.3: authenticated state only), found by the fuzzer.
    """
    c = Client(tmp_path, secure=True)
    assert c.send(b"a " + command + b"\r\n") == b"a BAD Command not valid in this state\r\n"


@pytest.mark.parametrize("key", [b"SINCE 1-Jan-19700000000000000000000",
                                 b"SENTSINCE 1-Jan-19700000000000000000000",
                                 b"BEFORE 123-Jan-2020", b"ON 1-Jan-20"])
def test_search_date_out_of_grammar_is_bad(client, key):
    """If this fails, SEARCH with an absurd date gets NO [SERVERBUG] and a traceback, not BAD."""
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    assert client.send(b"a SEARCH " + key + b"\r\n").startswith(b"a BAD bad date ")


@pytest.mark.parametrize("command", [b"CREATE %s", b"SELECT %s", b"RENAME INBOX %s"])
def test_mailbox_name_over_255_octets_is_limit(client, command):
    """
    If this fails, CREATE of a 300-character name gets NO [SERVERBUG] (the
    file system refuses the directory name) instead of NO [LIMIT].
    """
    client.login()
    out = client.send(b"a " + command % (b"n" * 300) + b"\r\n")
    assert out.startswith(b"a NO [LIMIT] mailbox name longer than 255 octets"), out
    assert withoutMailboxId(client.send(b"b CREATE " + b"n" * 200 + b"\r\n")) == b"b OK CREATE completed\r\n"


def test_commands_pipelined_behind_a_slow_one_all_answered(tmp_path):
    """
    If this fails, a client that pipelines thousands of commands behind a
    LOGIN that takes a while (a password check, a failure delay) gets a
    few hundred answers and then silence: the server hit RecursionError.
    """
    client = Client(tmp_path, plaintextLoopback=True, host="127.0.0.1")
    count = 5000
    out = client.send(b"a LOGIN alice@example.org wrong\r\n" + b"n NOOP\r\n" * count)
    assert out == b""  # the failed LOGIN waits out its delay; nothing runs ahead
    client.factory.clock.advance(2.0)
    out = client.read()
    assert out.startswith(b"a NO [AUTHENTICATIONFAILED]"), out[:80]
    assert out.count(b"n OK NOOP completed\r\n") == count


def test_reading_stops_while_too_many_commands_wait(tmp_path):
    """
    If this fails, a client pipelining without end behind a slow command
    makes the server hold every command in memory: reading must pause once
    MAX_QUEUED_COMMANDS wait, and go on once they have run.
    """
    from pymailer.imap.server import MAX_QUEUED_COMMANDS

    client = Client(tmp_path, plaintextLoopback=True, host="127.0.0.1")
    client.send(b"a LOGIN alice@example.org wrong\r\n" + b"n NOOP\r\n" * MAX_QUEUED_COMMANDS)
    assert client.transport.producerState == "paused"
    client.factory.clock.advance(2.0)
    assert client.transport.producerState == "producing"
    assert client.read().count(b"n OK NOOP completed\r\n") == MAX_QUEUED_COMMANDS


def test_bad_tag_answered_untagged_not_echoed(client):
    """
    If this fails, the server echoes a client's garbage (8-bit bytes, NULs)
    back as if it were a tag, instead of an untagged BAD.
    """
    assert client.send(b"\xa6\xbc NOOP\r\n") == b"* BAD bad tag\r\n"
    assert client.send(b"\x00" * 100 + b"\r\n").startswith(b"* BAD")


def test_too_many_bad_commands_close_the_session(client):
    """
    If this fails, a client sending garbage is answered BAD for ever; after
    20 the server says BYE and closes, as Dovecot does.
    """
    from pymailer.imap.server import MAX_BAD_COMMANDS

    out = client.send(b"x FOO\r\n" * MAX_BAD_COMMANDS)
    assert out.count(b"x BAD Unknown command\r\n") == MAX_BAD_COMMANDS
    assert out.endswith(b"* BYE Too many invalid commands\r\n")
    assert client.transport.disconnecting


def test_bad_commands_between_good_ones_do_not_close(client):
    """
    If this fails, a client that tries an extension we lack now and then
    (answered BAD) is thrown out after 20 tries spread over a long session:
    only BADs in a row count.
    """
    from pymailer.imap.server import MAX_BAD_COMMANDS

    for _ in range(MAX_BAD_COMMANDS * 2):
        assert client.send(b"x FOO\r\n") == b"x BAD Unknown command\r\n"
        assert client.send(b"n NOOP\r\n") == b"n OK NOOP completed\r\n"
    assert not client.transport.disconnecting
