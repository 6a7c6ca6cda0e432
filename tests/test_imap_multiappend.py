"""
MULTIAPPEND (RFC 3502) and APPENDLIMIT (RFC 7889) through the protocol: a
client uploading a batch of drafts gets all of them or none, and knows the
size limit before it uploads.
"""

import pytest

from imapharness import loggedIn


@pytest.fixture
def client(tmp_path):
    return loggedIn(tmp_path)


def messageCount(client, name=b"INBOX"):
    out = client.send(b"st STATUS %s (MESSAGES)\r\n" % name)
    return int(out.split(b"MESSAGES ")[1].split(b")")[0])


def test_capabilities(client):
    """A client sees MULTIAPPEND and the APPENDLIMIT it must keep under."""
    caps = client.send(b"c CAPABILITY\r\n").split(b"\r\n")[0].split()
    assert b"MULTIAPPEND" in caps and b"APPENDLIMIT=1000000" in caps


def test_rfc3502_example_two_messages(client):
    """RFC 3502 6 example: two messages, flags and date on the second, one APPENDUID for both."""
    first = b"Subject: one\r\n\r\nfirst\r\n"
    second = b"Subject: two\r\n\r\nsecond\r\n"
    out = client.send(b"A003 APPEND saved-messages {%d}\r\n" % len(first))
    assert b"TRYCREATE" in out  # no such mailbox: nothing is uploaded
    client.send(b"c CREATE saved-messages\r\n")
    out = client.send(b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(first))
    assert out.startswith(b"+ ")
    out = client.send(first + b' (\\Seen) "7-Feb-1994 22:43:04 -0800" {%d}\r\n' % len(second))
    assert out.startswith(b"+ ")
    out = client.send(second + b"\r\n")
    assert out.startswith(b"A003 OK [APPENDUID ") and b" 1:2] APPEND completed" in out
    assert messageCount(client, b"saved-messages") == 2
    client.send(b"s EXAMINE saved-messages\r\n")
    out = client.send(b"f FETCH 1:2 (INTERNALDATE FLAGS BODY.PEEK[TEXT])\r\n")
    assert b'INTERNALDATE "08-Feb-1994 06:43:04 +0000"' in out and b"second" in out


def test_literal_plus_multiappend(client):
    """Three messages sent as non-synchronising literals in one command all arrive."""
    msgs = [b"Subject: %d\r\n\r\nx\r\n" % i for i in range(3)]
    command = b"a APPEND INBOX" + b"".join(b" {%d+}\r\n%s" % (len(m), m) for m in msgs) + b"\r\n"
    out = client.send(command)
    assert b"a OK [APPENDUID" in out and b" 1:3]" in out
    assert messageCount(client) == 3


def test_failure_leaves_none(client):
    """RFC 3502 3: if one message of the batch fails, none is left in the mailbox."""
    client.send(b"a APPEND INBOX {3+}\r\nx\r\n\r\n")
    assert messageCount(client) == 1
    mailbox = client.factory.store.mailbox("alice@example.org", "INBOX")
    real, calls = type(mailbox).append, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, *args, **kwargs)

    type(mailbox).append = failing
    try:
        out = client.send(b"b APPEND INBOX {5+}\r\nhello {5+}\r\nworld\r\n")
    finally:
        type(mailbox).append = real
    assert b"b NO" in out
    assert messageCount(client) == 1


def test_date_where_message_expected_is_bad(client):
    """A quoted string is a date, never a message: APPEND with no literal is BAD."""
    out = client.send(b'a APPEND INBOX "7-Feb-1994 22:43:04 -0800"\r\n')
    assert b"a BAD" in out
