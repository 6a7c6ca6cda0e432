"""
CONDSTORE (RFC 7162) at the protocol level: HIGHESTMODSEQ, the MODSEQ
fetch item, FETCH CHANGEDSINCE, STORE UNCHANGEDSINCE, SEARCH MODSEQ,
STATUS HIGHESTMODSEQ and ENABLE, with the harness of L{imapharness}.
"""

import re

import pytest

from imapharness import Client, loggedIn


@pytest.fixture
def client(tmp_path):
    """A logged-in session; INBOX has two messages, no longer \\Recent."""
    c = loggedIn(tmp_path, b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n")
    c.send(b"r SELECT INBOX\r\nu UNSELECT\r\n")
    return c


def highest(out):
    return int(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", out)[1])


def modseqs(out):
    """C{{seq: modseq}} from untagged FETCH responses."""
    return {int(m[1]): int(m[2]) for m in re.finditer(rb"\* (\d+) FETCH \(.*?MODSEQ \((\d+)\)", out)}


def test_capability_and_select_report_highestmodseq(client):
    """If this fails, Thunderbird and K-9 do not use CONDSTORE and re-read every flag on each sync."""
    assert b"CONDSTORE" in client.send(b"c CAPABILITY\r\n")
    plain = client.send(b"a SELECT INBOX\r\n")
    out = client.send(b"b SELECT INBOX (CONDSTORE)\r\n")
    assert highest(plain) == highest(out) > 0 and b"b OK [READ-WRITE]" in out
    out = client.send(b"e EXAMINE INBOX (CONDSTORE)\r\n")
    assert highest(out) == highest(plain) and b"e OK [READ-ONLY]" in out
    assert b"x BAD" in client.send(b"x SELECT INBOX (QRESYNC)\r\n")


def test_fetch_modseq_item(client):
    """If this fails, a client cannot learn which version of a message's flags it holds."""
    out = client.send(b"a SELECT INBOX\r\n")
    got = client.send(b"f FETCH 1:* (MODSEQ)\r\n")
    assert re.fullmatch(rb"\* 1 FETCH \(MODSEQ \(\d+\)\)\r\n\* 2 FETCH \(MODSEQ \(\d+\)\)\r\nf OK.*\r\n", got)
    assert max(modseqs(got).values()) == highest(out)
    assert b"UID 2 MODSEQ (" in client.send(b"g UID FETCH 2 (MODSEQ)\r\n")


def test_fetch_changedsince_returns_only_changed(client):
    """If this fails, a phone resyncing a 10,000-message mailbox downloads every flag instead of the few that changed."""
    before = highest(client.send(b"a SELECT INBOX (CONDSTORE)\r\n"))
    client.send(b"s STORE 2 +FLAGS.SILENT (\\Flagged)\r\n")
    out = client.send(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE %d)\r\n" % before)
    assert re.match(rb"\* 2 FETCH \(FLAGS \(\\Flagged\) MODSEQ \((\d+)\)\)\r\nf OK", out), out
    since = modseqs(out)[2]
    assert since > before
    assert client.send(b"g UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)\r\n" % since).startswith(b"g OK")
    assert b"BAD" in client.send(b"h FETCH 1 (FLAGS) (CHANGEDSINCE 0)\r\n")
    assert b"BAD" in client.send(b"i FETCH 1 (FLAGS) (CHANGEDSINCE x)\r\n")


def test_store_unchangedsince_refuses_changed_messages(client):
    """If this fails, two devices editing flags at once silently overwrite each other (RFC 7162 3.1.3)."""
    seen = highest(client.send(b"a SELECT INBOX\r\n"))
    other = client.connectAgain()
    other.login()
    other.send(b"a SELECT INBOX\r\n")
    other.send(b"s STORE 1 +FLAGS (\\Seen)\r\n")  # meanwhile, on the other device
    out = client.send(b"s STORE 1:2 (UNCHANGEDSINCE %d) +FLAGS (\\Deleted)\r\n" % seen)
    assert b"s OK [MODIFIED 1] Conditional STORE failed" in out
    assert re.search(rb"\* 2 FETCH \(FLAGS \(\\Deleted\) UID 2 MODSEQ \(\d+\)\)", out)
    assert not re.search(rb"\* 1 FETCH \(FLAGS \([^)]*Deleted", out)
    out = client.send(b"u UID STORE 1 (UNCHANGEDSINCE %d) +FLAGS (\\Deleted)\r\n" % seen)
    assert b"u OK [MODIFIED 1]" in out
    out = client.send(b"f FETCH 1:2 (FLAGS)\r\n")
    assert b"* 1 FETCH (FLAGS (\\Seen))" in out and b"* 2 FETCH (FLAGS (\\Deleted))" in out


def test_silent_store_still_reports_modseq(client):
    """If this fails, a CONDSTORE client storing flags silently loses track of its own change's MODSEQ."""
    client.send(b"e ENABLE CONDSTORE\r\n")
    client.send(b"a SELECT INBOX\r\n")
    out = client.send(b"s STORE 1 +FLAGS.SILENT (\\Answered)\r\n")
    assert re.match(rb"\* 1 FETCH \(UID 1 MODSEQ \(\d+\)\)\r\ns OK", out), out
    assert client.send(b"t STORE 1 +FLAGS.SILENT (\\Answered)\r\n").startswith(b"t OK")


def test_search_modseq(client):
    """If this fails, "find what changed since N" searches return nothing or everything."""
    before = highest(client.send(b"a SELECT INBOX\r\n"))
    client.send(b"s STORE 1 +FLAGS (\\Draft)\r\n")
    out = client.send(b"f SEARCH MODSEQ %d\r\n" % (before + 1))
    m = re.match(rb"\* SEARCH 1 \(MODSEQ (\d+)\)\r\nf OK", out)
    assert m and int(m[1]) > before
    out = client.send(b'g UID SEARCH MODSEQ "/flags/\\\\draft" all 1 NOT DELETED\r\n')
    assert out.startswith(b"* SEARCH 1 2 (MODSEQ ")
    assert client.send(b"h SEARCH MODSEQ %d\r\n" % (int(m[1]) + 1)).startswith(b"* SEARCH\r\nh OK")
    assert b"BAD" in client.send(b'i SEARCH MODSEQ "/flags/x" bogus 1\r\n')


def test_status_highestmodseq(client):
    """If this fails, a client cannot tell from STATUS whether a folder changed since its last visit."""
    out = client.send(b"s STATUS INBOX (MESSAGES HIGHESTMODSEQ)\r\n")
    value = int(re.search(rb"HIGHESTMODSEQ (\d+)", out)[1])
    assert b'* STATUS "INBOX" (MESSAGES 2 HIGHESTMODSEQ %d)' % value in out
    client.deliver()
    out = client.send(b"t STATUS INBOX (HIGHESTMODSEQ)\r\n")
    assert int(re.search(rb"HIGHESTMODSEQ (\d+)", out)[1]) > value


def test_enable_makes_unsolicited_fetch_carry_modseq(client):
    """If this fails, a CONDSTORE client never learns the MODSEQ of changes made by other devices."""
    other = client.connectAgain()
    other.login()
    other.send(b"a SELECT INBOX\r\n")
    client.send(b"a SELECT INBOX\r\n")
    other.send(b"s STORE 1 +FLAGS (\\Flagged)\r\n")
    assert b"* 1 FETCH (FLAGS (\\Flagged) UID 1)\r\n" in client.send(b"n NOOP\r\n")
    assert b"* ENABLED CONDSTORE" in client.send(b"e ENABLE CONDSTORE X-UNKNOWN\r\n")
    other.send(b"t STORE 2 +FLAGS (\\Flagged)\r\n")
    out = client.send(b"n NOOP\r\n")
    assert re.search(rb"\* 2 FETCH \(FLAGS \(\\Flagged\) UID 2 MODSEQ \(\d+\)\)", out), out


def test_implicit_seen_reports_uid_and_modseq(client):
    """If this fails, a CONDSTORE client reading a message does not learn that it became \\Seen (RFC 7162 3.1)."""
    client.send(b"a SELECT INBOX (CONDSTORE)\r\n")
    out = client.send(b"f FETCH 1 (BODY[TEXT])\r\n")
    assert re.match(rb"\* 1 FETCH \(BODY\[TEXT\] \{3\}\r\n1\r\n FLAGS \(\\Seen\) UID 1 MODSEQ \(\d+\)\)", out), out


def test_highestmodseq_survives_restart(tmp_path, client):
    """If this fails, after a server restart CONDSTORE clients see HIGHESTMODSEQ go back and miss changes."""
    client.send(b"a SELECT INBOX\r\n")
    client.send(b"s STORE 1:2 +FLAGS (\\Seen)\r\n")
    before = client.send(b"f FETCH 1:2 (MODSEQ)\r\n")
    value = highest(client.send(b"b SELECT INBOX\r\n"))
    again = Client(tmp_path, secure=True)  # a new store object on the same files
    again.login()
    assert highest(again.send(b"a SELECT INBOX\r\n")) == value
    assert modseqs(again.send(b"f FETCH 1:2 (MODSEQ)\r\n")) == modseqs(before)
