"""
Keywords, \\Recent and SUBSCRIBE at the protocol level (the harness of
L{imapharness}).
"""

import re

import pytest

from imapharness import loggedIn


@pytest.fixture
def client(tmp_path):
    return loggedIn(tmp_path)


def test_keywords_stored_and_announced(client):
    """If this fails, labels like $Junk or "Important" set in a mail client vanish, or other clients never learn of them."""
    client.deliver()
    out = client.send(b"a SELECT INBOX\r\n")
    assert b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]" in out
    other = client.connectAgain()
    other.login()
    other.send(b"a SELECT INBOX\r\n")
    out = client.send(b"s STORE 1 +FLAGS ($Junk Important)\r\n")
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk Important)" in out
    assert b"* 1 FETCH (FLAGS ($Junk Important \\Recent))" in out
    out = other.send(b"n NOOP\r\n")  # the other session learns the new keywords
    assert out.index(b"* FLAGS (") < out.index(b"* 1 FETCH (FLAGS ($Junk Important) UID 1)")
    assert b"* SEARCH 1" in other.send(b"k SEARCH KEYWORD important\r\n")
    assert b"* SEARCH\r\n" in other.send(b"k SEARCH UNKEYWORD $junk\r\n")


def test_append_keeps_keywords(client):
    """If this fails, a message saved with a label (Thunderbird's $label1) loses it."""
    out = client.send(b"a APPEND INBOX (\\Seen $label1) {11}\r\n")
    out += client.send(b"Subject: x\r\r\n")
    assert b"a OK [APPENDUID" in out
    client.send(b"s SELECT INBOX\r\n")
    assert b"FLAGS ($label1 \\Recent \\Seen)" in client.send(b"f FETCH 1 (FLAGS)\r\n")


def test_keyword_limit_and_bad_keywords(client):
    """If this fails, a client inventing too many or malformed keywords corrupts flags instead of getting NO/BAD."""
    client.deliver()
    client.send(b"a SELECT INBOX\r\n")
    words = b" ".join(b"k%d" % i for i in range(26))
    assert b"s OK" in client.send(b"s STORE 1 +FLAGS (" + words + b")\r\n")
    assert b"\\*" not in client.send(b"b SELECT INBOX\r\n").split(b"PERMANENTFLAGS")[1].split(b"]")[0]
    assert client.send(b"t STORE 1 +FLAGS (another)\r\n").startswith(b"t NO [LIMIT]")
    assert b"u BAD" in client.send(b"u STORE 1 +FLAGS (bad]word)\r\n")
    assert b"v BAD" in client.send(b"v STORE 1 +FLAGS (\\Bogus)\r\n")


def test_recent_told_to_one_session(client):
    """If this fails, clients that show "new since last check" show nothing new, or the same mail as new in every session."""
    client.deliver()
    assert b"* STATUS \"INBOX\" (RECENT 1)" in client.send(b"s STATUS INBOX (RECENT)\r\n")
    out = client.send(b"e EXAMINE INBOX\r\n")  # read-only: does not claim
    assert b"* 1 RECENT" in out
    out = client.send(b"a SELECT INBOX\r\n")
    assert b"* 1 RECENT" in out
    assert b"FLAGS (\\Recent)" in client.send(b"f FETCH 1 FLAGS\r\n")
    assert b"* SEARCH 1\r\n" in client.send(b"n SEARCH NEW\r\n")
    assert b"* SEARCH\r\n" in client.send(b"o SEARCH OLD\r\n")
    other = client.connectAgain()
    other.login()
    assert b"* 0 RECENT" in other.send(b"a SELECT INBOX\r\n")
    assert b"* SEARCH\r\n" in other.send(b"r SEARCH RECENT\r\n")
    client.deliver()
    out = client.send(b"n NOOP\r\n")
    assert re.search(rb"\* 2 EXISTS\r\n\* 2 RECENT\r\n", out), out
    assert b"* 0 RECENT" in other.send(b"n NOOP\r\n")


def test_store_cannot_set_recent(client):
    """If this fails, a client could mark old mail as new for every other session."""
    client.deliver()
    client.send(b"x SELECT INBOX\r\nu UNSELECT\r\n")
    client.send(b"a SELECT INBOX\r\n")
    assert b"* 1 FETCH (FLAGS ())" in client.send(b"s STORE 1 FLAGS (\\Recent)\r\n")


def test_subscribe_needs_an_existing_mailbox(client):
    """If this fails, a mistyped folder name stays in the subscription list as a phantom folder."""
    assert client.send(b"a SUBSCRIBE Nowhere\r\n").startswith(b"a NO [NONEXISTENT]")
    assert client.send(b"b SUBSCRIBE Sent\r\n").startswith(b"b OK")
    assert client.send(b"c UNSUBSCRIBE Nowhere\r\n").startswith(b"c OK")


def test_new_keyword_announced_before_any_fetch_shows_it(client):
    """If this fails, a label just set in one mail client is dropped by that client and by others watching the folder (they see a keyword FLAGS never defined)."""
    client.deliver()
    client.send(b"a SELECT INBOX\r\n")
    watcher = client.connectAgain()
    watcher.login()
    watcher.send(b"a SELECT INBOX\r\n")
    watcher.send(b"i IDLE\r\n")
    out = client.send(b"s STORE 1 +FLAGS ($Important)\r\n")
    lines = out.split(b"\r\n")
    assert lines[:3] == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important \\*)]"
        b" Flags permitted",
        b"* 1 FETCH (FLAGS ($Important \\Recent))",
    ]
    assert out.count(b"* FLAGS") == 1 and lines[3].startswith(b"s OK")
    out = watcher.read()
    assert out.index(b"* FLAGS (") < out.index(b"* OK [PERMANENTFLAGS (") \
        < out.index(b"* 1 FETCH (FLAGS ($Important) UID 1)"), out
    # A keyword already announced is not announced again.
    out = client.send(b"t STORE 1 -FLAGS ($Important)\r\nu STORE 1 +FLAGS ($Important)\r\n")
    assert b"* FLAGS" not in out and b"* 1 FETCH (FLAGS ($Important \\Recent))" in out


def test_flags_fetch_from_the_session_matches_the_general_path():
    """
    If this fails, FETCH (FLAGS), UID FETCH and CHANGEDSINCE answers on the
    fast path (every flag list formatted once per distinct set) differ from
    what the same FETCH of one message at a time says: a client would see
    wrong flags, a missing \\Recent or MODSEQ on big mailboxes only.
    """
    from pymailer.imap.fetch import FetchItem, fetchPieces, sessionFetchLines
    from pymailer.imap.selected import Selected

    selected = Selected("INBOX", None, False)
    selected.uids = [3, 5, 9, 12]
    selected.flags = {3: {"\\Seen"}, 5: set(), 9: {"\\Seen", "$Junk"}, 12: {"\\Seen"}}
    selected.modseq = {3: 7, 5: 2, 9: 11, 12: 4}
    selected.recent = {12}
    targets = list(enumerate(selected.uids, 1))
    for names, extras in [(["FLAGS"], []), (["UID", "FLAGS"], []),
                          (["FLAGS", "UID"], ["MODSEQ"]), (["MODSEQ", "UID"], ["FLAGS"])]:
        items = [FetchItem(n) for n in names]
        expected = b"".join(b"".join(fetchPieces(selected, seq, u, items, None, None, extras))
                            for seq, u in targets)
        assert sessionFetchLines(selected, targets, items, extras) == expected
    assert b"* 4 FETCH (FLAGS (\\Recent \\Seen))\r\n" in sessionFetchLines(
        selected, targets, [FetchItem("FLAGS")])
    assert sessionFetchLines(selected, targets, [FetchItem("INTERNALDATE")]) is None


def test_selecting_a_big_mailbox_shares_flag_sets():
    """
    If this fails, every SELECTed message costs the session a set of its
    own (100,000 of them for a big mailbox: tens of MB per session and a
    SELECT several times slower), instead of sharing the store's few
    distinct flag sets; and the new messages of a later scan are missed.
    """
    from pymailer.imap.selected import Selected
    from pymailer.store import MailboxSnapshot, MessageInfo

    seen = frozenset({"\\Seen"})
    infos = [MessageInfo(uid=u, key=str(u), flags=seen, size=1, internalDate=0.0, modseq=u)
             for u in range(1, 1001)]
    selected = Selected("INBOX", None, False)
    selected.apply(MailboxSnapshot(messages=infos, uidValidity=7, uidNext=1001,
                                   highestModSeq=1000))
    assert len(selected.uids) == 1000
    assert all(selected.flags[u] is seen for u in selected.uids)
    more = infos[1:] + [MessageInfo(uid=1001, key="n", flags=frozenset(), size=1,
                                    internalDate=0.0, modseq=1001)]
    lines = selected.apply(MailboxSnapshot(messages=more, uidValidity=7, uidNext=1002,
                                           highestModSeq=1001, recent=frozenset({1001})))
    assert lines == [b"* 1 EXPUNGE", b"* 1000 EXISTS", b"* 1 RECENT"]
    assert selected.uids[-1] == 1001 and selected.recent == {1001}
