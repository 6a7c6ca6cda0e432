"""
QRESYNC (RFC 7162 3.2): ENABLE, SELECT/EXAMINE (QRESYNC (...)), UID FETCH
(CHANGEDSINCE n VANISHED), VANISHED instead of EXPUNGE, CLOSED on
reselect and the errors the RFC names; the RFC's own examples (their
UIDs, on a mailbox built to match), then a real client over TLS against a
real server.
"""

import re

import pytest
from imapclient import IMAPClient

from imapharness import Client
from imaplive import IMAP_SERVER, runningServer
from mailserver import PASSWORD, insecureTLS
from pymailer.imap import qresync
from pymailer.imap.parser import Atom, SequenceSet
from pymailer.imap.selected import Selected
from pymailer.store import MailboxSnapshot
from pymailer.store.memory import MemoryStore


def messages(n):
    """A logged-in session on a memory store whose INBOX has UIDs 1..n."""
    c = Client(secure=True, store=MemoryStore())
    for i in range(n):
        c.deliver(b"Subject: %d\r\n\r\nbody\r\n" % i)
    c.login()
    return c


def state(out):
    """C{(uidvalidity, highestmodseq)} of a SELECT's answer."""
    return (int(re.search(rb"\[UIDVALIDITY (\d+)\]", out)[1]),
            int(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", out)[1]))


def elsewhere(c, *commands):
    """Run C{commands} in another session on INBOX (another device)."""
    other = c.connectAgain()
    other.login()
    other.send(b"s SELECT INBOX\r\n")
    for n, command in enumerate(commands):
        out = other.send(b"o%d %s\r\n" % (n, command))
        assert b"o%d OK" % n in out, out
    other.send(b"z LOGOUT\r\n")


@pytest.fixture
def rfcSelect():
    """
    RFC 7162 3.2.5.1's example mailbox: the client knew 41,43:211,214:541;
    since then 41, 43:116, 118, 120:211 and 214:540 were expunged, and the
    flags of 117, 119 and 541 changed.
    """
    c = messages(541)
    known = state(c.send(b"a EXAMINE INBOX\r\n"))
    c.send(b"u UNSELECT\r\n")
    elsewhere(c, b"UID STORE 41,43:116,118,120:211,214:540 +FLAGS.SILENT (\\Deleted)",
              b"EXPUNGE", b"UID STORE 117 +FLAGS (\\Seen \\Answered)",
              b"UID STORE 119 +FLAGS (\\Draft $NotJunk)",
              b"UID STORE 541 +FLAGS (\\Seen $Forwarded)")
    return c, known


def test_enable_and_capability():
    """If this fails, Thunderbird and K-9 never use QRESYNC and resync
    every folder the slow way."""
    c = messages(1)
    assert b"QRESYNC" in c.send(b"c CAPABILITY\r\n")
    assert c.send(b"e ENABLE QRESYNC\r\n") == b"* ENABLED QRESYNC\r\ne OK ENABLE completed\r\n"
    # RFC 7162 3.2.3: QRESYNC enables CONDSTORE: unsolicited FETCH has MODSEQ.
    c.send(b"s SELECT INBOX\r\n")
    elsewhere(c, b"STORE 1 +FLAGS (\\Seen)")
    assert re.search(rb"\* 1 FETCH \(FLAGS \([^)]*\) UID 1 MODSEQ \(\d+\)\)",
                     c.send(b"n NOOP\r\n"))


def test_rfc_select_example(rfcSelect):
    """If this fails, a client reopening a folder it cached (RFC 7162
    3.2.5.1's example) keeps showing deleted mail or stale flags, or has to
    download the folder again."""
    c, (validity, modseq) = rfcSelect
    c.send(b"e ENABLE QRESYNC\r\n")
    out = c.send(b"A02 SELECT INBOX (QRESYNC (%d %d 41,43:211,214:541))\r\n"
                 % (validity, modseq))
    assert b"* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n" in out
    fetches = re.findall(rb"\* (\d+) FETCH \((.*)\)\r\n", out)
    # INBOX is now 1:40, 42, 117, 119, 212, 213, 541.
    assert [(seq, re.sub(rb" MODSEQ \(\d+\)", b"", items)) for seq, items in fetches] == [
        (b"42", b"FLAGS (\\Answered \\Seen) UID 117"),
        (b"43", b"FLAGS ($NotJunk \\Draft) UID 119"),
        (b"46", b"FLAGS ($Forwarded \\Seen) UID 541")]
    assert all(int(m) > modseq for m in re.findall(rb"MODSEQ \((\d+)\)", out))
    # The VANISHED line comes after the usual responses, before the FETCHes.
    assert out.index(b"[HIGHESTMODSEQ") < out.index(b"VANISHED") < out.index(b"FETCH")
    assert out.endswith(b"A02 OK [READ-WRITE] SELECT completed\r\n")


def test_select_without_known_uids_and_examine(rfcSelect):
    """If this fails, a client that keeps no UID list (or opens read-only)
    is not told what vanished."""
    c, (validity, modseq) = rfcSelect
    c.send(b"e ENABLE QRESYNC\r\n")
    out = c.send(b"x EXAMINE INBOX (QRESYNC (%d %d))\r\n" % (validity, modseq))
    assert b"* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n" in out
    assert len(re.findall(rb"FETCH", out)) == 3 and b"x OK [READ-ONLY]" in out
    # Asking from the current HIGHESTMODSEQ: nothing to tell.
    now = state(out)[1]
    out = c.send(b"y EXAMINE INBOX (QRESYNC (%d %d))\r\n" % (validity, now))
    assert b"VANISHED" not in out and b"FETCH" not in out


def test_uidvalidity_changed_is_a_plain_select(rfcSelect):
    """If this fails, a client whose cache belongs to an older incarnation
    of the folder is told changes that mean nothing to it (RFC 7162
    3.2.5.1: it must refetch everything instead)."""
    c, (validity, modseq) = rfcSelect
    c.send(b"e ENABLE QRESYNC\r\n")
    out = c.send(b"s SELECT INBOX (QRESYNC (%d %d 1:541))\r\n" % (validity + 1, modseq))
    assert b"VANISHED" not in out and b"FETCH" not in out and b"s OK [READ-WRITE]" in out


def test_rfc_uid_fetch_vanished_example():
    """If this fails, a client asking which of UIDs 300:500 changed or went
    (RFC 7162 3.2.6's example) is not told the expunged ones, or is told
    them after the FETCHes."""
    c = messages(420)
    modseq = state(c.send(b"a SELECT INBOX\r\n"))[1]
    elsewhere(c, b"UID STORE 300:310,405,411 +FLAGS.SILENT (\\Deleted)", b"EXPUNGE",
              b"UID STORE 404 +FLAGS (\\Seen)", b"UID STORE 406 +FLAGS (\\Deleted)",
              b"UID STORE 408 +FLAGS ($NoJunk $AutoJunk $MDNSent)")
    c.send(b"e ENABLE QRESYNC\r\nb SELECT INBOX\r\n")
    out = c.send(b"A04 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE %d VANISHED)\r\n" % modseq)
    lines = out.split(b"\r\n")
    assert lines[0] == b"* VANISHED (EARLIER) 300:310,405,411"
    assert [re.search(rb"UID (\d+)", line)[1] for line in lines[1:4]] == [b"404", b"406", b"408"]
    assert lines[4] == b"A04 OK FETCH completed"
    # Only the set asked about.
    out = c.send(b"A05 UID FETCH 400:410 (FLAGS) (CHANGEDSINCE %d VANISHED)\r\n" % modseq)
    assert out.startswith(b"* VANISHED (EARLIER) 405\r\n")


def test_expunges_are_vanished_once_enabled():
    """If this fails, a QRESYNC client is sent EXPUNGE (which it was promised
    it would not get, RFC 7162 3.2.10) after EXPUNGE, UID EXPUNGE, MOVE or
    another session's expunge."""
    c = messages(8)
    c.send(b"e ENABLE QRESYNC\r\ns SELECT INBOX\r\n")
    out = c.send(b"a STORE 2,4 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n")
    assert out.endswith(b"* VANISHED 2,4\r\nb OK EXPUNGE completed\r\n")
    out = c.send(b"c UID STORE 5 +FLAGS.SILENT (\\Deleted)\r\nd UID EXPUNGE 5\r\n")
    assert out.endswith(b"* VANISHED 5\r\nd OK EXPUNGE completed\r\n")
    out = c.send(b"m UID MOVE 6:7 Trash\r\n")
    assert b"* VANISHED 6:7\r\nm OK MOVE completed\r\n" in out and b"COPYUID" in out
    elsewhere(c, b"UID STORE 8 +FLAGS.SILENT (\\Deleted)", b"EXPUNGE")
    out = c.send(b"n NOOP\r\n")
    assert out == b"* VANISHED 8\r\nn OK NOOP completed\r\n" and b"EXPUNGE" not in out
    assert c.send(b"f FETCH 1:* (UID)\r\n") == (
        b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\nf OK FETCH completed\r\n")


def test_held_back_vanished_keeps_highestmodseq_below_it():
    """If this fails, a QRESYNC client that sees a newer MODSEQ while an
    expunge is held back (during FETCH, RFC 3501 7.4.1) and then loses the
    connection resyncs from past the expunge and never learns of it (RFC
    7162 3.2 and its section 6 example)."""
    c = messages(3)
    c.send(b"e ENABLE QRESYNC\r\n")
    before = state(c.send(b"s SELECT INBOX\r\n"))[1]
    elsewhere(c, b"UID STORE 3 +FLAGS.SILENT (\\Deleted)", b"UID EXPUNGE 3",
              b"UID STORE 1 +FLAGS (\\Seen)")
    out = c.send(b"f FETCH 2 (UID)\r\n")
    assert b"VANISHED" not in out and re.search(rb"\* 1 FETCH \(FLAGS \([^)]*\\Seen\) UID 1 MODSEQ", out)
    # Not the mailbox's HIGHESTMODSEQ: the one the client had before the expunge.
    assert b"* OK [HIGHESTMODSEQ %d] " % before in out, out
    assert c.send(b"n NOOP\r\n") == b"* VANISHED 3\r\nn OK NOOP completed\r\n"


def test_closed_on_reselect():
    """If this fails, a client reading responses after SELECT of another
    folder cannot tell which folder they are about (RFC 7162 3.2.11)."""
    c = messages(1)
    assert b"CLOSED" not in c.send(b"a SELECT INBOX\r\n")
    out = c.send(b"b EXAMINE Trash\r\n")
    assert out.startswith(b"* OK [CLOSED] ") and out.index(b"CLOSED") < out.index(b"EXISTS")


@pytest.mark.parametrize("command", [
    # RFC 7162 3.2.5: QRESYNC without ENABLE QRESYNC.
    b"SELECT INBOX (QRESYNC (1 1))",
])
def test_qresync_before_enable_is_bad(command):
    """If this fails, a client that forgot ENABLE gets answers it cannot
    read (VANISHED) instead of BAD."""
    c = messages(1)
    c.send(b"s SELECT INBOX\r\n")
    assert c.send(b"x " + command + b"\r\n").startswith(b"x BAD")
    assert c.send(b"y UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n").startswith(b"y BAD")
    # The failed SELECT left the mailbox selected.
    assert b"z OK" in c.send(b"z FETCH 1 (UID)\r\n")


@pytest.mark.parametrize("arguments", [
    b"INBOX (QRESYNC)", b"INBOX (QRESYNC ())", b"INBOX (QRESYNC (1))",
    b"INBOX (QRESYNC (0 5))", b"INBOX (QRESYNC (1 0))",       # zero is no UIDVALIDITY/mod-sequence
    b"INBOX (QRESYNC (1 x))", b"INBOX (QRESYNC (1 5 1:*))",   # no * in known-uids
    b"INBOX (QRESYNC (1 5 1:9 (1:3 4:5)))",                   # seq-match-data of unequal sizes
    b"INBOX (QRESYNC (1 5 1:9 (1:3)))", b"INBOX (QRESYNC (1 5 1:9 (1 2) 3))",
    b"INBOX (QRESYNC (1 5) QRESYNC (1 5))", b"INBOX (UNKNOWN)",
])
def test_malformed_qresync_is_bad(arguments):
    """If this fails, a broken QRESYNC parameter selects the mailbox (and
    the client trusts a resync that never happened) instead of BAD."""
    c = messages(1)
    c.send(b"e ENABLE QRESYNC\r\n")
    assert c.send(b"x SELECT " + arguments + b"\r\n").startswith(b"x BAD")


@pytest.mark.parametrize("command", [
    b"FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)",      # VANISHED is for UID FETCH only
    b"UID FETCH 1 (FLAGS) (VANISHED)",                 # and needs CHANGEDSINCE
])
def test_vanished_modifier_misuse_is_bad(command):
    """If this fails, a FETCH with VANISHED where RFC 7162 3.2.6 forbids it
    is answered as if it were valid."""
    c = messages(1)
    c.send(b"e ENABLE QRESYNC\r\ns SELECT INBOX\r\n")
    assert c.send(b"x " + command + b"\r\n").startswith(b"x BAD")


def test_seq_match_data_narrows_the_superset():
    """
    If this fails, a client resyncing after the server forgot old expunges
    (a bounded history) is told every UID it ever knew that is not there
    (thousands), although its message-number samples (RFC 7162 3.2.5.2's
    example: 5000,7500,9000,9990:9999 for UIDs 15000,22500,...) show that
    nothing below UID 29970 went.
    """
    uids = [3 * n for n in range(1, 10001) if 3 * n != 29973]  # 29973 expunged
    selected = Selected("INBOX", None, True)
    selected.uids = uids
    whole = MailboxSnapshot(messages=[], uidValidity=1, uidNext=30001, highestModSeq=9)
    match = (SequenceSet.parse(Atom(b"5000,7500,9000,9990:9999")),
             SequenceSet.parse(Atom(b"15000,22500,27000,29970,29973,29976,29979,29982,"
                                    b"29985,29988,29991,29994,29997")))
    assert qresync.confirmedUpTo(match, uids) == 29970
    spans = qresync.vanishedSince(whole, selected, SequenceSet.parse(Atom(b"1:29997")),
                                  30000, match)
    # From 29971 on: the UIDs never given (not multiples of 3) and 29973.
    assert spans[0] == (29971, 29975) and spans[-1] == (29995, 29996)
    # Without the samples: every gap from UID 1 on.
    assert qresync.vanishedSince(whole, selected, None, 30000)[0] == (1, 2)
    # A client's 1:4294967295 costs spans, not a list of four billion UIDs.
    huge = qresync.vanishedSince(whole, selected, SequenceSet.parse(Atom(b"1:4294967295")),
                                 30000)
    assert huge[-1] == (30001, 4294967295)


# -- a real client over TLS ---------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with runningServer(tmp_path_factory.mktemp("qresync"), **IMAP_SERVER) as s:
        yield s


def tlsClient(server, user):
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                   ssl_context=insecureTLS(), timeout=30)
    c.login(user, PASSWORD)
    return c


def test_resync_after_another_session_over_tls(server):
    """
    If this fails, a phone that was offline while a laptop flagged and
    deleted mail shows deleted messages or stale flags after reconnecting
    with QRESYNC, or is told of changes it already had.  Session A caches
    the folder; session B flags and expunges; A reselects with QRESYNC and
    gets exactly the vanished UIDs and the changed flags.
    """
    user = "qresync@example.org"
    server.addUser(user)
    a = tlsClient(server, user)
    b = tlsClient(server, user)
    for n in range(10):
        a.append("INBOX", f"Subject: q{n}\r\n\r\nbody {n}\r\n".encode())
    assert b"QRESYNC" in a.capabilities()
    assert a.enable("QRESYNC") == [b"QRESYNC"]
    cached = a.select_folder("INBOX")
    validity, modseq = cached[b"UIDVALIDITY"], cached[b"HIGHESTMODSEQ"]
    knownFlags = {uid: set(data[b"FLAGS"]) for uid, data in a.fetch(range(1, 11), ["FLAGS"]).items()}
    assert sorted(knownFlags) == list(range(1, 11))
    a.close_folder()

    b.select_folder("INBOX")
    b.add_flags([2, 7], [b"\\Flagged"])
    b.add_flags([3], [b"$Work"])
    b.delete_messages([4, 5, 9])
    b.expunge()
    b.logout()

    imap = a._imap  # IMAPClient has no QRESYNC SELECT: its imaplib session
    typ, _ = imap._simple_command(
        "SELECT", "INBOX", f"(QRESYNC ({validity} {modseq} 1:10))")
    assert typ == "OK"
    assert imap.untagged_responses.pop("VANISHED") == [b"(EARLIER) 4:5,9"]
    changed = {}
    for line in imap.untagged_responses.pop("FETCH"):
        uid = int(re.search(rb"UID (\d+)", line)[1])
        changed[uid] = set(re.search(rb"FLAGS \(([^)]*)\)", line)[1].split())
        assert int(re.search(rb"MODSEQ \((\d+)\)", line)[1]) > modseq
    assert changed == {2: {b"\\Flagged"}, 3: {b"$Work"}, 7: {b"\\Flagged"}}
    # A later resync from the new HIGHESTMODSEQ has nothing to say.
    newest = int(imap.untagged_responses.pop("HIGHESTMODSEQ")[-1])
    typ, _ = imap._simple_command("SELECT", "INBOX", f"(QRESYNC ({validity} {newest}))")
    assert typ == "OK" and not {"VANISHED", "FETCH"} & set(imap.untagged_responses)
    a.logout()
