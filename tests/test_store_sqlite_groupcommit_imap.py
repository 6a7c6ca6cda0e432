"""
The SQLite store's group commit for IMAP's writes: STOREs, EXPUNGEs and
APPENDs of different sessions that wait for the write lock share one
write transaction (a savepoint each) and one WAL flush; each is told
exactly what changed (its MODSEQs, UIDs); one that fails fails alone; and
every change acknowledged survives C{kill -9}.
"""

import io
import threading
import time

from pymailer.store import MailboxGone
from pymailer.store.sqlite import SQLiteStore

from tests.test_store_sqlite_groupcommit import (
    ALICE, BOB, QueueWatch, batchSizes, killAfter, message)


class Sessions:
    """Store calls made in threads, one a session, while the test holds the write lock."""

    def __init__(self, store):
        self.store = store
        self.results, self.errors, self.threads = {}, {}, []
        self.queue = QueueWatch(store)

    def start(self, name, call):
        """C{call()} in a thread of its own, queued for the lock before this returns."""
        def run():
            try:
                self.results[name] = call()
            except Exception as e:
                self.errors[name] = e

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)
        self.queue.waitQueued(len(self.threads))  # in this order

    def join(self):
        for thread in self.threads:
            thread.join(30)


def storeWith(tmp_path, monkeypatch, messages=3):
    store = SQLiteStore(tmp_path / "store")
    for user in (ALICE, BOB):
        store.createUser(user)
        for n in range(messages):
            store.deliver(user, b"", io.BytesIO(message(n)))
    flushes = []
    realFlush = store._flushWal
    monkeypatch.setattr(store, "_flushWal", lambda: (flushes.append(1), realFlush())[1])
    return store, batchSizes(store, monkeypatch), flushes


def test_two_sessions_stores_share_one_commit_and_each_is_told_its_modseqs(
        tmp_path, monkeypatch):
    """
    If this fails, STOREs from two IMAP sessions that waited for the write
    lock each commit alone (ten sessions queue one commit at a time), a
    flag change waits for a WAL flush it does not need, or a session is
    told a wrong MODSEQ: the second session's answer must hold its own
    change and the first one's, each with the mod-sequence it got.
    """
    store, sizes, flushes = storeWith(tmp_path, monkeypatch)
    first, second = store.mailbox(ALICE), store.mailbox(ALICE)
    since = first.highestModSeq()
    sessions = Sessions(store)
    with store._writeLock():  # another writer: the sessions queue meanwhile
        sessions.start("first", lambda: first.storeFlagsWithChanges(
            [1], "add", ["\\Seen"], since=since))
        sessions.start("second", lambda: second.storeFlagsWithChanges(
            [2], "add", ["\\Flagged"], since=since))
        sessions.start("bob", lambda: store.mailbox(BOB).storeFlags([3], "add", ["\\Seen"]))
        assert sessions.results == {}
    sessions.join()
    assert sessions.errors == {}
    assert sizes == [3]
    assert flushes == []  # flag changes are not flushed (see the store's _write)
    (results, failed), changes = sessions.results["first"]
    assert (results, failed) == ({1: (frozenset({"\\Seen"}), since + 1)}, [])
    assert [(i.uid, i.modseq) for i in changes.messages] == [(1, since + 1)]
    assert changes.highestModSeq == since + 1
    (results, failed), changes = sessions.results["second"]
    assert (results, failed) == ({2: (frozenset({"\\Flagged"}), since + 2)}, [])
    assert [(i.uid, i.modseq, i.flags) for i in changes.messages] == [
        (1, since + 1, frozenset({"\\Seen"})), (2, since + 2, frozenset({"\\Flagged"}))]
    assert changes.highestModSeq == since + 2
    assert sessions.results["bob"][0][3][0] == frozenset({"\\Seen"})
    again = SQLiteStore(store.root).mailbox(ALICE)
    assert {i.uid: i.flags for i in again.messages()} == {
        1: {"\\Seen"}, 2: {"\\Flagged"}, 3: frozenset()}
    assert again.highestModSeq() == since + 2


def test_an_append_and_an_expunge_of_two_sessions_share_one_commit_and_one_flush(
        tmp_path, monkeypatch):
    """
    If this fails, an APPEND shares no commit with the other sessions'
    writes, is answered before the flush that makes it durable, or the
    UIDs and VANISHED a session is told are off by the other's change.
    """
    store, sizes, flushes = storeWith(tmp_path, monkeypatch)
    box = store.mailbox(ALICE)
    box.storeFlags([2], "add", ["\\Deleted"])
    since = box.highestModSeq()
    appending, expunging = store.mailbox(ALICE), store.mailbox(ALICE)
    sessions = Sessions(store)
    with store._writeLock():
        del sizes[:]
        sessions.start("expunge", lambda: expunging.expungeDeleted(since=since))
        sessions.start("append", lambda: appending.appendWithChanges(
            io.BytesIO(message(7)), ["\\Seen"], since=since))
    sessions.join()
    assert sessions.errors == {}
    assert sizes == [2]
    assert flushes == [1]
    expunged, changes = sessions.results["expunge"]
    assert expunged == [2]
    assert changes.vanished == (2,) and changes.highestModSeq == since + 1
    uid, changes = sessions.results["append"]
    assert uid == 4
    assert changes.vanished == (2,)
    assert [(i.uid, i.modseq) for i in changes.messages] == [(4, since + 2)]
    assert (changes.uidNext, changes.highestModSeq) == (5, since + 2)
    again = SQLiteStore(store.root).mailbox(ALICE)
    assert [i.uid for i in again.messages()] == [1, 3, 4]
    assert again.openMessage(4).read() == message(7)


def test_a_failing_store_fails_alone(tmp_path, monkeypatch):
    """
    If this fails, one session's STORE that fails part-way (after its
    UPDATE: a mailbox gone, a keyword limit, an error of SQLite's) takes
    the other sessions' changes in the same commit with it, or leaves
    half of itself (a flag, a mod-sequence) behind.
    """
    store, sizes, flushes = storeWith(tmp_path, monkeypatch)
    first, failing, last = (store.mailbox(ALICE) for _ in range(3))
    since = first.highestModSeq()
    real = failing._storeIn

    def storeIn(*args):
        real(*args)  # its flag written, in its savepoint
        raise MailboxGone("INBOX")

    monkeypatch.setattr(failing, "_storeIn", storeIn)
    sessions = Sessions(store)
    with store._writeLock():
        sessions.start("first", lambda: first.storeFlagsWithChanges(
            [1], "add", ["\\Seen"], since=since))
        sessions.start("failing", lambda: failing.storeFlagsWithChanges(
            [2], "add", ["\\Seen"], since=since))
        sessions.start("last", lambda: last.storeFlagsWithChanges(
            [3], "add", ["\\Seen"], since=since))
    sessions.join()
    assert sizes == [3]
    assert list(sessions.errors) == ["failing"]
    assert isinstance(sessions.errors["failing"], MailboxGone)
    (results, _), changes = sessions.results["last"]
    assert results == {3: (frozenset({"\\Seen"}), since + 2)}
    assert [(i.uid, i.modseq) for i in changes.messages] == [(1, since + 1), (3, since + 2)]
    again = SQLiteStore(store.root).mailbox(ALICE)
    assert {i.uid: i.flags for i in again.messages()} == {
        1: {"\\Seen"}, 2: frozenset(), 3: {"\\Seen"}}
    assert again.highestModSeq() == since + 2


def test_shared_imap_commits_survive_kill_9(tmp_path):
    """
    If this fails, a flag change or an APPEND answered OK after a shared
    commit is lost when the server is killed right after (its commit not
    in the WAL yet, or another session's failure rolled it back).
    """
    root = tmp_path / "store"
    SQLiteStore(root)
    stored, appended, batches = set(), set(), []

    def heard(kind, value):
        if kind == b"S":
            stored.add(int(value))
        elif kind == b"A":
            appended.add(int(value))
        elif int(value) > 1:
            batches.append(int(value))

    deadline = time.monotonic() + 60
    killAfter(tmp_path, "groupcommitimapchild.py", root, heard,
              lambda: (len(stored) >= 100 and len(appended) >= 30 and len(batches) >= 5)
              or time.monotonic() > deadline)
    inbox = SQLiteStore(root).mailbox(ALICE)
    flags = {i.uid: i.flags for i in inbox.messages()}
    assert all("\\Seen" in flags[uid] for uid in stored)
    assert appended <= set(flags)
    assert len(batches) >= 5  # the sessions' writes did share commits
