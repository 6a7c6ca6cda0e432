"""
IMAP sessions over each store backend (Maildir, SQLite, PostgreSQL and memory): the protocol
code needs nothing of a backend but L{IMailStore}/L{IMailbox}, so these
common sessions behave the same on each, large messages included (read
through L{IMessageContent}, not a file descriptor).
"""

import re

import pytest

from tests.imapharness import BACKENDS, backendClient

BIG = 5 * 1024 * 1024  # over WHOLE_LIMIT: FETCH pages it in, streams sections


@pytest.fixture(params=BACKENDS + ("postgresql",))
def client(request, tmp_path):
    return backendClient(request.param, tmp_path, request)


def test_select_fetch_store_expunge(client):
    """If this fails, a mail client on this store cannot read, flag or
    delete mail."""
    client.deliver(b"Subject: one\r\n\r\nfirst\r\n")
    client.deliver(b"Subject: two\r\n\r\nsecond\r\n")
    out = client.send(b"a SELECT INBOX\r\n")
    assert b"* 2 EXISTS" in out and b"* 2 RECENT" in out and b"a OK [READ-WRITE]" in out
    out = client.send(b"b FETCH 2 (BODY[TEXT] ENVELOPE)\r\n")
    assert b"BODY[TEXT] {8}\r\nsecond\r\n" in out and b'"two"' in out
    out = client.send(b"c STORE 1 +FLAGS (\\Deleted $Old)\r\n")
    assert b"* 1 FETCH (FLAGS (" in out and b"$Old" in out
    out = client.send(b"d EXPUNGE\r\n")
    assert b"* 1 EXPUNGE" in out and b"d OK" in out
    out = client.send(b"e UID FETCH 1:* (FLAGS)\r\n")
    assert b"* 1 FETCH (UID 2 FLAGS (\\Recent \\Seen))" in out


def test_copy_move_uidplus(client):
    """If this fails, COPY/MOVE lose mail or answer a wrong COPYUID, and a
    client's cache of the target folder is wrong."""
    for n in range(3):
        client.deliver(b"Subject: %d\r\n\r\nbody\r\n" % n)
    client.send(b"a SELECT INBOX\r\n")
    validity = int(re.search(
        rb"UIDVALIDITY (\d+)", client.send(b"s STATUS Archive (UIDVALIDITY)\r\n"))[1])
    out = client.send(b"b COPY 1:2 Archive\r\n")
    assert b"b OK [COPYUID %d 1:2 1:2] COPY completed" % validity in out
    out = client.send(b"c UID MOVE 3 Archive\r\n")
    assert b"* OK [COPYUID %d 3 3]" % validity in out and b"* 3 EXPUNGE" in out
    out = client.send(b"d STATUS Archive (MESSAGES UIDNEXT)\r\n")
    assert b"(MESSAGES 3 UIDNEXT 4)" in out
    out = client.send(b"e COPY 1 Nowhere\r\n")
    assert b"e NO [TRYCREATE]" in out


def test_append_spooled_and_big_fetch(client):
    """If this fails, saving or reading a large message (an attachment of
    some MB) fails, or comes back altered."""
    body = b"Subject: big\r\nContent-Type: text/plain\r\n\r\n" + (b"y" * 76 + b"\r\n") * (BIG // 78)
    client.factory.maxMessageSize = 2 * BIG
    out = client.send(b"a APPEND Sent (\\Seen) {%d}\r\n" % len(body))
    assert out.startswith(b"+ ")
    out = client.send(body + b"\r\n")
    assert re.search(rb"a OK \[APPENDUID \d+ 1\]", out), out[-200:]
    client.send(b"b SELECT Sent\r\n")
    out = client.send(b"c FETCH 1 (RFC822.SIZE BODYSTRUCTURE BODY.PEEK[HEADER] BODY.PEEK[]<3.5>)\r\n")
    assert b"RFC822.SIZE %d" % len(body) in out
    assert b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d %d' % (
        len(body) - 42, body.count(b"\n") - 3) in out
    assert b"BODY[]<3> {5}\r\nject:" in out
    out = client.send(b"d FETCH 1 BODY.PEEK[]\r\n")
    assert out.startswith(b"* 1 FETCH (BODY[] {%d}\r\n" % len(body))
    assert body in out and out.endswith(b"d OK FETCH completed\r\n")


def test_subscriptions_and_rename_inbox(client):
    """If this fails, LSUB forgets subscriptions, or RENAME INBOX loses mail."""
    client.deliver()
    assert b"a OK" in client.send(b"a SUBSCRIBE Sent\r\n")
    assert b"b NO [NONEXISTENT]" in client.send(b"b SUBSCRIBE Nope\r\n")
    out = client.send(b'c LSUB "" *\r\n')
    assert b'* LSUB () "/" "Sent"' in out and b"INBOX" not in out
    assert b"d OK" in client.send(b"d RENAME INBOX Old\r\n")
    out = client.send(b"e STATUS Old (MESSAGES)\r\n") + client.send(b"f STATUS INBOX (MESSAGES)\r\n")
    assert b"\"Old\" (MESSAGES 1)" in out and b"\"INBOX\" (MESSAGES 0)" in out


def test_idle_sees_delivery(client):
    """If this fails, a client in IDLE is not told of new mail at once."""
    client.send(b"a SELECT INBOX\r\n")
    assert client.send(b"b IDLE\r\n").startswith(b"+ idling")
    client.deliver()
    assert b"* 1 EXISTS" in client.read()
    assert client.send(b"DONE\r\n").startswith(b"b OK")
