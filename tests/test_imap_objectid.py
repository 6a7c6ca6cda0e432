"""
OBJECTID (RFC 8474) and SAVEDATE (RFC 8514) through the protocol, from the
RFCs' own examples: a client learns a mailbox's MAILBOXID from CREATE,
SELECT and STATUS, a message's EMAILID (kept by COPY and MOVE), THREADID
NIL, and when a message was saved into its mailbox.
"""

import re
import time

import pytest

from imapharness import BACKENDS, backendClient

@pytest.fixture(params=BACKENDS)
def client(request, tmp_path):
    return backendClient(request.param, tmp_path)


def mailboxId(text):
    return re.search(rb"MAILBOXID \(([A-Za-z0-9_-]+)\)", text)[1]


def test_capabilities(client):
    """A client uses OBJECTID and SAVEDATE only if CAPABILITY lists them."""
    caps = client.send(b"c CAPABILITY\r\n").split(b"\r\n")[0].split()
    assert b"OBJECTID" in caps and b"SAVEDATE" in caps


def test_rfc8474_mailboxid_create_status_rename(client):
    """RFC 8474 4.1, 4.3: a client that sees the same MAILBOXID after a
    RENAME keeps its cache; a folder made again under an old name must
    not look like the old one."""
    created = client.send(b"3 create foo\r\n")
    assert re.fullmatch(rb"3 OK \[MAILBOXID \([A-Za-z][A-Za-z0-9_-]*\)\] CREATE completed\r\n",
                        created)
    foo = mailboxId(created)
    bar = mailboxId(client.send(b"4 create bar\r\n"))
    assert foo != bar
    assert client.send(b"5 create foo\r\n").startswith(b"5 NO [ALREADYEXISTS]")
    assert client.send(b"6 status foo (mailboxid)\r\n") == \
        b"* STATUS \"foo\" (MAILBOXID (%s))\r\n6 OK STATUS completed\r\n" % foo
    client.send(b"8 rename foo renamed\r\n")
    assert mailboxId(client.send(b"9 status renamed (mailboxid)\r\n")) == foo
    assert mailboxId(client.send(b"10 status bar (mailboxid messages)\r\n")) == bar
    again = mailboxId(client.send(b"11 create foo\r\n"))
    assert again not in (foo, bar)
    listed = client.send(b'12 list "" "*" return (status (mailboxid))\r\n')
    assert b"* STATUS \"renamed\" (MAILBOXID (%s))" % foo in listed


def test_rfc8474_select_tells_mailboxid(client):
    """RFC 8474 4.2: SELECT and EXAMINE say the MAILBOXID untagged."""
    foo = mailboxId(client.send(b"1 create foo\r\n"))
    for command in (b"SELECT", b"EXAMINE"):
        out = client.send(b"2 %s foo\r\n" % command)
        assert b"* OK [MAILBOXID (%s)] Ok\r\n" % foo in out


def test_rfc8474_emailid_threadid_copy_move(client):
    """RFC 8474 5.1, 5.2, 6: EMAILID stays the same for the copy and the
    moved message (a second client need not download them again), differs
    between messages, THREADID is NIL, and SEARCH EMAILID finds it."""
    for subject in (b"Message A", b"Re: Message A", b"Message C"):
        client.deliver(b"Subject: %s\r\n\r\nbody\r\n" % subject)
    client.send(b"s SELECT INBOX\r\n")
    client.send(b"c create foo\r\n")
    out = client.send(b"22 fetch 1:* (emailid threadid)\r\n")
    ids = re.findall(rb"\* (\d) FETCH \(EMAILID \(([A-Za-z0-9_-]+)\) THREADID NIL\)", out)
    assert [n for n, _ in ids] == [b"1", b"2", b"3"] and len({i for _, i in ids}) == 3
    emailIds = [i for _, i in ids]
    assert client.send(b"27 search emailid %s\r\n" % emailIds[0]) == \
        b"* SEARCH 1\r\n27 OK SEARCH completed\r\n"
    assert client.send(b"28 search threadid T64b478a75b7ea9\r\n") == \
        b"* SEARCH\r\n28 OK SEARCH completed\r\n"
    client.send(b"23 move 2 foo\r\n")
    client.send(b"24 copy 1 foo\r\n")
    client.send(b"25 select foo\r\n")
    out = client.send(b"26 fetch 1:* (emailid)\r\n")
    assert out == (b"* 1 FETCH (EMAILID (%s))\r\n* 2 FETCH (EMAILID (%s))\r\n"
                   b"26 OK FETCH completed\r\n" % (emailIds[1], emailIds[0]))
    assert client.send(b"29 uid search emailid %s\r\n" % emailIds[0]) == \
        b"* SEARCH 2\r\n29 OK SEARCH completed\r\n"
    assert client.send(b"30 search emailid bad!id\r\n").startswith(b"30 BAD")


def test_rfc8514_savedate_fetch_and_search(client):
    """RFC 8514 3, 4: a message appended with an old internal date, then
    copied to Trash, shows the copy's save date as today, so a client
    expiring Trash by SAVEDBEFORE does not delete what was just moved."""
    client.send(b'a APPEND INBOX "01-Jan-2015 18:50:53 +0100" {5}\r\nhello\r\n')
    client.send(b"s SELECT INBOX\r\n")
    client.send(b"c COPY 1 Trash\r\n")
    client.send(b"s SELECT Trash\r\n")
    out = client.send(b"A101 FETCH 1 (INTERNALDATE SAVEDATE)\r\n")
    m = re.match(rb'\* 1 FETCH \(INTERNALDATE "01-Jan-2015 17:50:53 \+0000" '
                 rb'SAVEDATE "(\d\d-\w\w\w-\d{4}) [\d:]+ \+0000"\)\r\n', out)
    assert m is not None, out
    today = time.strftime("%d-%b-%Y", time.gmtime()).encode()
    assert m[1] == today
    assert client.send(b"A102 SEARCH SAVEDON %s\r\n" % today) == \
        b"* SEARCH 1\r\nA102 OK SEARCH completed\r\n"
    assert client.send(b"A103 SEARCH SAVEDBEFORE %s\r\n" % today) == \
        b"* SEARCH\r\nA103 OK SEARCH completed\r\n"
    assert client.send(b"A104 SEARCH SAVEDSINCE 28-Dec-2014 SAVEDATESUPPORTED\r\n") == \
        b"* SEARCH 1\r\nA104 OK SEARCH completed\r\n"
    assert client.send(b"A105 SEARCH BEFORE 28-Dec-2015\r\n") == \
        b"* SEARCH 1\r\nA105 OK SEARCH completed\r\n"
