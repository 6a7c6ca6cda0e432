"""
The SQLite store's write path: which commits wait for the disk (new
content) and which do not (flag changes, expunges: Dovecot's
C{mail_fsync = optimized}), blobs freed by a commit not yet on disk kept
until it is, writers of one process queued in the process rather than in
SQLite's busy handler, and a blob placed before the write lock that a
concurrent removal took away.
"""

import fcntl
import io
import os
import sqlite3
import threading

import pytest

from pymailer.store import sqlite as sqlitestore
from pymailer.store.sqlite import SQLiteStore

ALICE = "alice@example.org"


def blobFiles(store):
    return {p.parent.name + p.name for p in (store.root / "blobs").glob("??/*")}


def countSyncs(store, monkeypatch):
    calls = []
    real = store._syncWal
    monkeypatch.setattr(store, "_syncWal", lambda: (calls.append(1), real())[1])
    return calls


def test_only_new_content_waits_for_the_disk(tmp_path, monkeypatch):
    """
    If this fails, every STORE and EXPUNGE waits for a disk flush (the
    commands a mail client sends most, slowed for a durability Dovecot
    does not give them either), or an APPEND or a delivery is acknowledged
    before it is on disk, so a power cut loses mail the client was told
    the server had.
    """
    store = SQLiteStore(tmp_path / "store")
    store.createUser(ALICE)
    syncs = countSyncs(store, monkeypatch)
    # The commit itself never flushes: SQLite's WAL with synchronous=NORMAL.
    assert store._db().execute("PRAGMA synchronous").fetchone()[0] == 1
    store.deliver(ALICE, b"", io.BytesIO(b"Subject: one\r\n\r\nbody\r\n"))
    assert len(syncs) == 1
    inbox = store.mailbox(ALICE)
    inbox.append(io.BytesIO(b"Subject: two\r\n\r\nbody\r\n"), ["\\Seen"])
    inbox.copy([1], store.mailbox(ALICE, "Archive"))
    assert len(syncs) == 3
    inbox.snapshot(claimRecent=True)
    inbox.storeFlags([1, 2], "add", {"\\Flagged"})
    inbox.expunge([2])
    assert len(syncs) == 3
    # What was not synced is still all there for the next reader (and for
    # the next process after a kill -9: it is in the WAL).
    again = SQLiteStore(store.root)
    assert [(i.uid, sorted(i.flags)) for i in again.mailbox(ALICE).messages()] == [
        (1, ["\\Flagged"])]


def test_claiming_recent_after_an_append_waits_for_no_flush(tmp_path, monkeypatch):
    """
    If this fails, the refresh after every APPEND into the selected
    mailbox (which claims the new message as \\Recent for the session)
    waits for a second disk flush, after the one that made the message
    durable.
    """
    store = SQLiteStore(tmp_path / "store")
    inbox = store.mailbox(ALICE)
    inbox.append(io.BytesIO(b"Subject: one\r\n\r\nbody\r\n"))
    seen = inbox.snapshot(claimRecent=True)
    syncs = countSyncs(store, monkeypatch)
    inbox.append(io.BytesIO(b"Subject: two\r\n\r\nbody\r\n"))
    changes = inbox.changedSince(seen.highestModSeq, claimRecent=True)
    assert [i.uid for i in changes.messages] == [2] and changes.recent == {2}
    assert len(syncs) == 1
    assert inbox.changedSince(seen.highestModSeq, claimRecent=True).recent == frozenset()


def test_blob_freed_by_an_expunge_goes_once_the_expunge_is_on_disk(tmp_path, monkeypatch):
    """
    If this fails, a power cut right after an EXPUNGE can bring the
    message back without its content (the file was unlinked before the
    expunge reached the disk), or expunged messages' files stay on disk
    for ever.
    """
    monkeypatch.setattr(sqlitestore, "UNSYNCED_FREED", 3)
    store = SQLiteStore(tmp_path / "store")
    store.inlineLimit = 0  # content in files (small content is kept in rows)
    inbox = store.mailbox(ALICE)
    for n in range(5):
        inbox.append(io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % n))
    assert len(blobFiles(store)) == 5
    inbox.expunge([1])
    inbox.expunge([2])
    assert len(blobFiles(store)) == 5  # the expunges are not on disk yet
    assert store.sweep(now=float("inf")) == 0  # nor are they orphans
    inbox.append(io.BytesIO(b"Subject: new\r\n\r\nbody\r\n"))  # durable: so are they
    assert len(blobFiles(store)) == 4
    # Without new mail, the queue is bounded: its end syncs the WAL.
    inbox.expunge([3])
    inbox.expunge([4])
    assert len(blobFiles(store)) == 4
    inbox.expunge([5])
    assert len(blobFiles(store)) == 1
    # A process that dies with some queued leaves orphans the next start
    # sweeps (once old enough: ORPHAN_AGE).
    inbox.expunge([6])
    assert len(blobFiles(store)) == 1
    assert SQLiteStore(store.root).sweep(now=float("inf")) == 1
    assert blobFiles(store) == set()


def test_freed_blobs_go_without_a_transaction_of_their_own(tmp_path, monkeypatch):
    """
    If this fails, every APPEND after an EXPUNGE (each loop of a client
    that files a message and empties its trash) queues for the write lock
    a second time, to unlink the expunged message's file in a
    transaction of its own; or, with another writer in, the file is
    unlinked under its feet (it may be linking the same content again) or
    stays on disk after the next write.
    """
    store = SQLiteStore(tmp_path / "store")
    store.inlineLimit = 0  # content in files (small content is kept in rows)
    inbox = store.mailbox(ALICE)
    for n in range(3):
        inbox.append(io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % n))
    first, second = (store._read("SELECT blob FROM messages WHERE uid = ?", (uid,)).fetchone()[0]
                     for uid in (1, 2))
    inbox.expunge([1])
    statements = []
    store._db().set_trace_callback(statements.append)
    inbox.append(io.BytesIO(b"Subject: new\r\n\r\nbody\r\n"))  # durable: the expunge too
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
    assert first not in blobFiles(store)
    # Another process's writer holds the lock when the expunge is on disk:
    # the file waits for this process's next write, and goes there.
    inbox.expunge([2])
    other = open(store.root / "locks" / "writer", "rb")
    real = store._syncWal

    def flushedThenAnotherWriterComes():
        real()
        fcntl.flock(other, fcntl.LOCK_EX)

    monkeypatch.setattr(store, "_syncWal", flushedThenAnotherWriterComes)
    inbox.append(io.BytesIO(b"Subject: newer\r\n\r\nbody\r\n"))
    monkeypatch.setattr(store, "_syncWal", real)
    assert second in blobFiles(store)
    fcntl.flock(other, fcntl.LOCK_UN)
    other.close()
    statements.clear()
    inbox.storeFlags([3], "add", {"\\Seen"})
    assert second not in blobFiles(store)
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
    assert len(blobFiles(store)) == 3


def test_writers_in_one_process_queue_in_the_process(tmp_path, monkeypatch):
    """
    If this fails, threads of one server wait for each other's writes in
    SQLite's busy handler, which sleeps up to 100 ms between tries: with
    ten IMAP sessions a STORE or an APPEND waited most of a second at the
    99th percentile.  (Here SQLite's busy wait is off: a thread that met
    the lock there fails at once with "database is locked".)
    """
    monkeypatch.setattr(sqlitestore, "BUSY_TIMEOUT_MS", 0)
    store = SQLiteStore(tmp_path / "store")
    inbox = store.mailbox(ALICE)
    for n in range(8):
        inbox.append(io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % n))
    errors = []

    def work(n):
        try:
            for i in range(25):
                inbox.storeFlags([n + 1], "add" if i % 2 else "remove", {"\\Flagged"})
                if i % 5 == 0:
                    inbox.append(io.BytesIO(b"Subject: %d %d\r\n\r\nx\r\n" % (n, i)))
        except sqlite3.OperationalError as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(inbox.messages()) == 8 + 8 * 5


@pytest.mark.parametrize("fromMemory", [False, True], ids=["streamed", "from-memory"])
def test_blob_removed_between_placing_and_the_lock_is_placed_again(tmp_path, fromMemory):
    """
    If this fails, a message whose content was expunged elsewhere at the
    moment it was appended or delivered (the same octets: its last
    reference went after the new copy was placed, before the new row was
    committed) is stored without content.
    """
    store = SQLiteStore(tmp_path / "store")
    if fromMemory:  # written to its name (BlobStore.place)
        pending = store.blobs.place(b"Subject: same\r\n\r\nbody\r\n")
    else:
        pending = store.blobs.write(b"", io.BytesIO(b"Subject: same\r\n\r\nbody\r\n"))
        pending.place()
    store.blobs.remove(pending.blobId)  # the concurrent removal
    pending.install()
    pending.discard()  # after the commit, as the store does
    with store.blobs.open(pending.blobId) as content:
        assert content.read() == b"Subject: same\r\n\r\nbody\r\n"
    assert not any(store.blobs.tmp.iterdir())


def test_new_blob_directory_is_synced_in_its_parent(tmp_path, monkeypatch):
    """
    If this fails, the first message whose content lands in a new blob
    directory (one of 256) can lose that directory, and so the message's
    content, in a power cut after it was acknowledged.
    """
    from pymailer.store import blobs

    store = SQLiteStore(tmp_path / "store")
    store.inlineLimit = 0  # content in files (small content is kept in rows)
    synced = []
    real = blobs.fsyncDirectory
    monkeypatch.setattr(blobs, "fsyncDirectory", lambda d: (synced.append(d), real(d))[1])
    store.mailbox(ALICE).append(io.BytesIO(b"Subject: first\r\n\r\nbody\r\n"))
    [blobId] = blobFiles(store)
    assert str(store.blobs.root) in synced
    assert str(store.blobs.path(blobId).parent) in synced


class WatchedCondition(threading.Condition):
    """A condition variable that tells how many threads wait on it."""

    def __init__(self):
        super().__init__()
        self._count = threading.Condition()
        self.waiting = 0

    def wait(self, timeout=None):
        with self._count:
            self.waiting += 1
            self._count.notify_all()
        try:
            return super().wait(timeout)
        finally:
            with self._count:
                self.waiting -= 1

    def waitForWaiters(self, n, timeout):
        with self._count:
            return self._count.wait_for(lambda: self.waiting >= n, timeout)


def test_appends_waiting_for_a_flush_share_the_next_one(tmp_path, monkeypatch):
    """
    If this fails, APPENDs from several sessions at once flush the WAL one
    after the other, each waiting for all the flushes before its own
    (group commit: one flush covers every commit made before it began),
    or an APPEND is answered before a flush that covers it has ended.
    """
    store = SQLiteStore(tmp_path / "store")
    inbox = store.mailbox(ALICE)
    before = store._walTickets  # the account's own commits
    flushes, flushing, release = [], threading.Event(), threading.Event()
    real = store._flushWal

    def flush():
        flushes.append(store._walTickets - before)
        flushing.set()
        if len(flushes) == 1:
            release.wait(30)  # the first flush is slow: the others queue
        real()

    monkeypatch.setattr(store, "_flushWal", flush)
    guard = store._walGuard = WatchedCondition()
    answered = []

    def append(n):
        inbox.append(io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % n))
        answered.append(n)

    first = threading.Thread(target=append, args=(0,))
    first.start()
    assert flushing.wait(30)
    others = [threading.Thread(target=append, args=(n,)) for n in range(1, 5)]
    for n, t in enumerate(others, 1):
        # One at a time: each commits alone (those that came together
        # would share one commit, see test_store_sqlite_groupcommit*).
        t.start()
        assert guard.waitForWaiters(n, 30)  # committed and waiting for a flush
    assert store._walTickets - before == 5
    assert answered == []  # none answered before its flush
    release.set()
    for t in [first] + others:
        t.join()
    assert sorted(answered) == [0, 1, 2, 3, 4]
    assert flushes == [1, 5]  # the second covers the four that waited
    assert len(SQLiteStore(store.root).mailbox(ALICE).messages()) == 5


def test_no_file_is_unlinked_while_writers_wait(tmp_path, monkeypatch):
    """
    If this fails, every large APPEND (streamed through a temporary file)
    holds the process's write lock while the file system removes its
    temporary file name (milliseconds under load), and every other
    session's STORE, EXPUNGE and APPEND waits behind it.
    """
    from pymailer.store import blobs

    monkeypatch.setattr(sqlitestore, "IN_PLACE_LIMIT", 8)  # this one is "large"
    store = SQLiteStore(tmp_path / "store")
    store.inlineLimit = 0  # content in files (small content is kept in rows)
    inbox = store.mailbox(ALICE)
    underLock = []
    real = os.unlink
    monkeypatch.setattr(blobs.os, "unlink",
                        lambda path: (underLock.append(store._writers.locked()), real(path))[1])
    inbox.append(io.BytesIO(b"Subject: one\r\n\r\nbody\r\n"))
    assert underLock == [False]
    assert not any(store.blobs.tmp.iterdir())


def test_writers_of_two_processes_queue_on_a_file_lock(tmp_path, monkeypatch):
    """
    If this fails, writers in different processes on one store (the
    workers of C{[server] workers}, the delivery agent, the admin command)
    meet in SQLite's busy handler, which polls in sleeps of up to 100 ms:
    slow STOREs and APPENDs whenever two workers write at once.  Two store
    objects stand for the two processes; the waiting one's connection
    would fail at once on SQLite's lock (busy_timeout 0), so it must wait
    in the file lock.
    """
    first = SQLiteStore(tmp_path / "store")
    first.createUser(ALICE)
    second = SQLiteStore(tmp_path / "store")
    inbox = second.mailbox(ALICE)
    holding, release, errors = threading.Event(), threading.Event(), []

    def hold():
        with first._write():
            first._db().execute("UPDATE mailboxes SET keywords = keywords")
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(30)
    waitingInFlock, realFlock = threading.Event(), fcntl.flock

    def flock(fd, operation):
        # The second store's writer finds the lock taken, then waits in it.
        if fd is second._writers._file and operation == fcntl.LOCK_EX:
            try:
                return realFlock(fd, operation | fcntl.LOCK_NB)
            except BlockingIOError:
                waitingInFlock.set()
        return realFlock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)

    def write():
        try:
            second._db().execute("PRAGMA busy_timeout = 0")  # this thread's connection
            inbox.append(io.BytesIO(b"Subject: waited\r\n\r\nbody\r\n"))
        except Exception as e:
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    assert waitingInFlock.wait(30)  # the writer is waiting now, not failing
    release.set()
    holder.join()
    writer.join()
    assert errors == []
    assert len(first.mailbox(ALICE).messages()) == 1
