"""
Tests for the Maildir store's index (L{pymailer.store.maildirindex}):
mod-sequences for CONDSTORE, keywords, and \\Recent, kept across restarts,
processes and outside Maildir tools.
"""

import io
import multiprocessing
import os

import pytest

from pymailer.store import KeywordLimit
from pymailer.store.maildir import MaildirStore
from pymailer.store.maildirindex import KEYWORDS, UIDLIST, readIndex

USER = "alice@example.org"


@pytest.fixture
def store(tmp_path):
    store = MaildirStore(tmp_path / "mail", "mx.example.org")
    store.createUser(USER)
    return store


def deliver(store, body):
    return store.deliver(USER, b"", io.BytesIO(body))


def modseqs(box):
    return {m.uid: m.modseq for m in box.messages()}


def test_modseqRisesOnAppendFlagChangeAndExpunge(store):
    """If this fails, a CONDSTORE client (Thunderbird, K-9) asking "what
    changed since my last sync" misses new mail, flag changes or deletions."""
    box = store.mailbox(USER)
    start = box.highestModSeq()
    a = box.append(io.BytesIO(b"a"))
    b = box.append(io.BytesIO(b"b"))
    first = modseqs(box)
    assert start < first[a] < first[b] == box.highestModSeq()
    box.storeFlags([a], "add", {"\\Seen"})
    second = modseqs(box)
    assert second[a] > first[b] and second[b] == first[b]
    assert box.highestModSeq() == second[a]
    box.storeFlags([a], "add", {"\\Seen"})  # no change: no new modseq
    assert modseqs(box) == second
    box.expunge([b])
    assert box.highestModSeq() > second[a]
    assert modseqs(box) == {a: second[a]}


def test_modseqsSurviveRestart(store):
    """If this fails, every client resynchronises every flag of every
    message after a server restart (or worse, misses changes)."""
    deliver(store, b"x")
    box = store.mailbox(USER)
    [m] = box.messages()
    box.setFlags(m.uid, {"\\Flagged"})
    before, highest = modseqs(box), box.highestModSeq()
    again = MaildirStore(store.root, "other.host").mailbox(USER)
    snapshot = again.snapshot()
    assert {i.uid: i.modseq for i in snapshot.messages} == before
    assert snapshot.highestModSeq == highest


def test_outsideFlagChangeGetsNewModseq(store):
    """If this fails, a message marked read in mutt (a rename of its file)
    stays unread on the phone that syncs with CONDSTORE."""
    deliver(store, b"x")
    box = store.mailbox(USER)
    [m] = box.messages()
    os.rename(m.path, m.path.replace(":2,", ":2,S"))
    [m2] = box.messages()
    assert m2.flags == {"\\Seen"} and m2.modseq > m.modseq
    assert box.messages() == [m2]  # seen once, counted once


def test_unchangedSinceLeavesNewerMessagesAlone(store):
    """If this fails, two clients changing the same message both win and
    one user's change is silently lost (RFC 7162 3.1.3)."""
    box = store.mailbox(USER)
    a = box.append(io.BytesIO(b"a"))
    b = box.append(io.BytesIO(b"b"))
    seen = box.highestModSeq()
    box.storeFlags([b], "add", {"\\Flagged"})  # another client, meanwhile
    results, failed = box.storeFlags([a, b, 99], "add", {"\\Deleted"}, unchangedSince=seen)
    assert failed == [b] and set(results) == {a}
    assert results[a][0] == {"\\Deleted"}
    assert {m.uid: m.flags for m in box.messages()} == {
        a: {"\\Deleted"}, b: {"\\Flagged"}}


def test_version1UidlistRead(store):
    """If this fails, upgrading pymailer renumbers every message and clients
    download all mail again."""
    deliver(store, b"x")
    deliver(store, b"y")
    box = store.mailbox(USER)
    old = box.messages()
    path = box.path / UIDLIST
    validity = box.uidValidity()
    path.write_text(f"1 V{validity} N3\n" + "".join(
        f"{m.uid} {m.key}\n" for m in old))
    again = store.mailbox(USER)
    new = again.messages()
    assert [(m.uid, m.key, m.flags) for m in new] == [(m.uid, m.key, m.flags) for m in old]
    assert again.uidValidity() == validity and again.uidNext() == 3
    assert {m.modseq for m in new} == {1}
    assert readIndex(box.path).highestModSeq == 1
    assert path.read_text().startswith("2 ")


def test_keywordsKeptDovecotStyle(store):
    """If this fails, labels set in the mail client ($Junk, "Important")
    vanish, or do not survive a move to or from Dovecot."""
    box = store.mailbox(USER)
    uid = box.append(io.BytesIO(b"a"), flags=("\\Seen", "$Junk"))
    [m] = box.messages()
    assert m.flags == {"\\Seen", "$Junk"} and m.path.endswith(":2,Sa")
    box.storeFlags([uid], "add", {"work", "$junk"})  # case-insensitive
    snapshot = box.snapshot()
    assert snapshot.messages[0].flags == {"\\Seen", "$Junk", "work"}
    assert snapshot.keywords == ("$Junk", "work") and not snapshot.keywordsFull
    assert (box.path / KEYWORDS).read_text() == "0 $Junk\n1 work\n"
    box.storeFlags([uid], "set", {"work"})
    assert box.messages()[0].flags == {"work"}
    box.storeFlags([uid], "remove", {"work", "never-defined"})
    assert box.messages()[0].flags == frozenset()


def test_keywordLimit(store):
    """If this fails, a client inventing a 27th keyword corrupts flags
    instead of getting a clear NO [LIMIT]."""
    box = store.mailbox(USER)
    uid = box.append(io.BytesIO(b"a"))
    box.storeFlags([uid], "add", {f"k{i}" for i in range(26)})
    assert len(box.messages()[0].flags) == 26 and box.snapshot().keywordsFull
    highest = box.highestModSeq()
    with pytest.raises(KeywordLimit):
        box.storeFlags([uid], "set", {"\\Seen", "one-too-many"})
    assert len(box.messages()[0].flags) == 26 and box.highestModSeq() == highest


def test_recentClaimedByOneSession(store):
    """If this fails, new mail is never marked recent (clients that count
    "new since last time" show 0) or is shown as new in every session."""
    deliver(store, b"x")
    box = store.mailbox(USER)
    [m] = box.messages()
    assert box.snapshot().recent == {m.uid}          # STATUS / EXAMINE: not claimed
    assert box.snapshot(claimRecent=True).recent == {m.uid}
    assert box.snapshot(claimRecent=True).recent == frozenset()
    assert store.mailbox(USER).snapshot().recent == frozenset()
    deliver(store, b"y")
    assert [len(box.snapshot(claimRecent=True).recent) for _ in range(2)] == [1, 0]


def _flagWorker(root, index, results):
    try:
        box = MaildirStore(root, "host%d" % index).mailbox(USER)
        got = []
        for uid in range(1 + index, 41, 4):
            got.append(box.storeFlags([uid], "add", {"\\Seen", f"w{index}"})[0][uid][1])
        results.put(got)
    except BaseException as e:
        results.put(repr(e))


def test_concurrentProcessesNeverShareAModseq(store):
    """If this fails, two server processes changing flags at once give two
    changes one mod-sequence, and a syncing client misses one of them."""
    box = store.mailbox(USER)
    for i in range(40):
        box.append(io.BytesIO(b"m%d" % i))
    before = box.highestModSeq()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_flagWorker, args=(store.root, i, results))
             for i in range(4)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert [g for g in got if isinstance(g, str)] == []
    given = [m for g in got for m in g]
    assert len(set(given)) == 40 and min(given) > before
    assert box.highestModSeq() == max(given) == before + 40
    assert all(len(m.flags) == 2 for m in box.messages())
