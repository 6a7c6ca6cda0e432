"""
The SQLite store's group commit: deliveries that wait for the write lock
share one write transaction and one WAL flush (each in a savepoint of its
own), are answered only once that commit is on disk, and one that fails
fails alone; and the change log without AUTOINCREMENT (one WAL page less
per commit).
"""

import hashlib
import io
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading

import pytest

from pymailer.store.sqlite import SQLiteStore

from tests.mailserver import subprocessEnv

ALICE = "alice@example.org"
BOB = "bob@example.org"


def message(n, subject="hello"):
    return b"Subject: %s\r\nMessage-ID: <%d@remote.test>\r\n\r\nbody %d\r\n" % (
        subject.encode(), n, n)


class QueueWatch:
    """
    Put in place of C{store}'s guard of its queue of shared writers (a
    lock) before any writer takes it: a lock that tells the test each
    time a thread lets go of it (the queue has changed).
    """

    def __init__(self, store):
        self.store = store
        self._changed = threading.Condition()
        store._sharedGuard = self

    def __enter__(self):
        self._changed.acquire()
        return self

    def __exit__(self, *exc):
        self._changed.notify_all()
        self._changed.release()

    def waitQueued(self, n, timeout=30):
        """Until C{n} writers wait in the store's queue."""
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.store._sharedQueue) >= n,
                                          timeout), "timed out"


class Deliveries:
    """Deliveries started in threads while the test holds the store's write lock."""

    def __init__(self, store):
        self.store = store
        self.results, self.errors, self.threads = {}, {}, []
        self.waitQueued = QueueWatch(store).waitQueued

    def start(self, n, user=ALICE, subject="hello"):
        def deliver():
            try:
                self.results[n] = self.store.deliver(user, b"", io.BytesIO(message(n, subject)))
            except Exception as e:
                self.errors[n] = e

        thread = threading.Thread(target=deliver)
        thread.start()
        self.threads.append(thread)

    def join(self):
        for thread in self.threads:
            thread.join(30)


def batchSizes(store, monkeypatch):
    sizes = []
    real = store._commitShared
    monkeypatch.setattr(store, "_commitShared", lambda batch: (sizes.append(len(batch)),
                                                               real(batch))[1])
    return sizes


def test_deliveries_waiting_for_the_lock_share_one_commit_and_one_flush(tmp_path, monkeypatch):
    """
    If this fails, deliveries that came while another writer held the
    lock each commit alone: under load every message writes its own ten
    WAL pages and waits for its own turn at the lock; or a delivery is
    answered before the commit that holds it is on disk.
    """
    store = SQLiteStore(tmp_path / "store")
    store.createUser(ALICE)
    store.createUser(BOB)
    sizes = batchSizes(store, monkeypatch)
    flushes = []
    realFlush = store._flushWal
    monkeypatch.setattr(store, "_flushWal", lambda: (flushes.append(1), realFlush())[1])
    changesBefore = store._read("SELECT count(*) FROM changes").fetchone()[0]
    deliveries = Deliveries(store)
    with store._writeLock():  # another writer: the deliveries queue meanwhile
        for n in range(3):
            deliveries.start(n)
        deliveries.start(3, user=BOB)
        deliveries.waitQueued(4)
        assert deliveries.results == {}  # nobody answered before the commit
    deliveries.join()
    assert deliveries.errors == {}
    assert deliveries.results == {0: True, 1: True, 2: True, 3: True}
    assert sizes == [4]
    assert flushes == [1]
    # One change-log row per mailbox changed, not per message.
    assert store._read("SELECT count(*) FROM changes").fetchone()[0] == changesBefore + 2
    again = SQLiteStore(store.root)
    assert [m.uid for m in again.mailbox(ALICE).messages()] == [1, 2, 3]
    assert len(again.mailbox(BOB).messages()) == 1


@pytest.mark.parametrize("whole", [False, True], ids=["statement", "transaction"])
def test_a_failing_delivery_fails_alone(tmp_path, monkeypatch, whole):
    """
    If this fails, one message that cannot be stored (a constraint, or an
    error of SQLite's that ends the whole transaction: disk full, an I/O
    error) fails the other messages that shared its commit, or leaves
    half of itself (a UID taken, a blob referenced) in the mailbox.
    """
    store = SQLiteStore(tmp_path / "store")
    store.createUser(ALICE)
    sizes = batchSizes(store, monkeypatch)
    real = store._keepSummary

    def keepSummary(txn, blobId, summary):
        if summary is not None and summary.subject == "poison":
            if whole:
                txn.execute("ROLLBACK")  # as SQLite does on SQLITE_FULL
            raise sqlite3.IntegrityError("poisoned")
        real(txn, blobId, summary)

    monkeypatch.setattr(store, "_keepSummary", keepSummary)
    deliveries = Deliveries(store)
    with store._writeLock():
        deliveries.start(0)
        deliveries.waitQueued(1)
        deliveries.start(1, subject="poison")
        deliveries.waitQueued(2)
        deliveries.start(2)
        deliveries.waitQueued(3)
    deliveries.join()
    assert deliveries.results == {0: True, 2: True}
    assert isinstance(deliveries.errors[1], sqlite3.IntegrityError)
    assert sizes == [3]
    again = SQLiteStore(store.root)
    inbox = again.mailbox(ALICE)
    # The failed one took no UID and left no reference behind.
    assert [m.uid for m in inbox.messages()] == [1, 2]
    bodies = {inbox.openMessage(m.uid).read() for m in inbox.messages()}
    assert bodies == {message(0), message(2)}
    assert again._read("SELECT count(*) FROM blobs").fetchone()[0] == 2
    assert again._read("SELECT count(*) FROM summaries").fetchone()[0] == 2
    assert inbox.uidNext() == 3


def killAfter(tmp_path, script, root, heard, enough):
    """
    Run the child C{script} on the store at C{root}, hand each line it
    prints (split in words) to C{heard}, kill it with SIGKILL once
    C{enough()}, and hand on what it printed before it died: acknowledged
    too.
    """
    child = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(__file__), script), str(root)],
        stdout=subprocess.PIPE, stderr=(tmp_path / "child.err").open("wb"),
        env=subprocessEnv())
    while not enough():
        line = child.stdout.readline()
        assert line, (tmp_path / "child.err").read_text()  # it only stops when killed
        heard(*line.split())
    child.send_signal(signal.SIGKILL)
    for line in child.stdout.read().splitlines():
        heard(*line.split())
    child.wait()


def test_shared_commits_survive_kill_9(tmp_path):
    """
    If this fails, a message answered 250 after a shared commit is lost
    when the server is killed right after (its commit not on disk, or
    another delivery's rollback took it along).
    """
    root = tmp_path / "store"
    SQLiteStore(root)
    acknowledged, batches = set(), []

    def heard(kind, value):
        if kind == b"A":
            acknowledged.add(value.decode())
        elif int(value) > 1:
            batches.append(int(value))

    killAfter(tmp_path, "groupcommitchild.py", root, heard,
              lambda: len(acknowledged) >= 150 and len(batches) >= 5)
    inbox = SQLiteStore(root).mailbox(ALICE)
    infos = inbox.messages()
    stored = {hashlib.sha256(inbox.openMessage(m.uid).read()).hexdigest() for m in infos}
    assert acknowledged <= stored
    assert len({m.uid for m in infos}) == len(infos)


def walPages(store):
    """The pages each frame of the WAL holds (checkpoints off), by B-tree name."""
    wal = (store.root / "index.sqlite-wal").read_bytes()
    pages = [struct.unpack(">I", wal[offset:offset + 4])[0]
             for offset in range(32, len(wal), 4096 + 24)]
    db = sqlite3.connect(store.path)
    try:
        names = dict(db.execute("SELECT pageno, name FROM dbstat"))
    finally:
        db.close()
    return [names.get(page) for page in pages]


def test_a_delivery_writes_no_sequence_page(tmp_path, monkeypatch):
    """
    If this fails, every commit that logs a change (every delivery, under
    load) writes one more WAL page, for a counter nobody needs: the change
    log's numbers only grow without it.
    """
    store = SQLiteStore(tmp_path / "store")
    store.createUser(ALICE)
    for n in range(5):
        store.deliver(ALICE, b"", io.BytesIO(message(n)))
    db = store._db()
    db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.deliver(ALICE, b"", io.BytesIO(message(99)))
    pages = walPages(store)
    assert "changes" in pages
    assert "sqlite_sequence" not in pages
    assert len(pages) <= 9, pages


def test_older_change_log_loses_autoincrement_and_keeps_counting_up(tmp_path):
    """
    If this fails, a data_dir made by the previous version does not open,
    loses its change log, or numbers a new change at or below one another
    process's poller has seen already (it would miss that change).
    """
    store = SQLiteStore(tmp_path / "store")
    db = store._connect()
    db.executescript(
        "DROP TABLE changes;"
        " CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL,"
        " user TEXT NOT NULL, mailbox TEXT NOT NULL);"
        " INSERT INTO changes (origin, user, mailbox) VALUES ('x', 'a@b.c', 'INBOX');"
        " INSERT INTO changes (origin, user, mailbox) VALUES ('x', 'a@b.c', 'INBOX');"
        " PRAGMA user_version = 4;")  # as the previous version left it
    db.close()
    poller = SQLiteStore(store.root)
    cursor, _ = poller.changesSince(None)
    assert cursor == 2
    store = SQLiteStore(store.root)
    store.deliver(ALICE, b"", io.BytesIO(message(1)))
    cursor, changed = poller.changesSince(cursor)
    assert (cursor, changed) == (3, {(ALICE, "INBOX")})
    db = store._connect()
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'changes'").fetchone()[0]
    assert "AUTOINCREMENT" not in sql.upper()
    assert db.execute("SELECT count(*) FROM sqlite_sequence WHERE name = 'changes'"
                      ).fetchone()[0] == 0
    db.close()


def test_a_failing_delivery_alone_leaves_nothing_and_the_next_goes_on(tmp_path, monkeypatch):
    """
    If this fails, a delivery that fails in a transaction of its own (no
    savepoint then) leaves part of itself behind, or the next delivery
    waits for ever for a commit that never comes.
    """
    store = SQLiteStore(tmp_path / "store")
    store.createUser(ALICE)
    real = store._insertMessage

    def insertMessage(txn, *args, **kwargs):
        raise sqlite3.IntegrityError("poisoned")

    monkeypatch.setattr(store, "_insertMessage", insertMessage)
    with pytest.raises(sqlite3.IntegrityError):
        store.deliver(ALICE, b"", io.BytesIO(message(1)))
    monkeypatch.setattr(store, "_insertMessage", real)
    assert store.deliver(ALICE, b"", io.BytesIO(message(2)))
    inbox = store.mailbox(ALICE)
    assert [m.uid for m in inbox.messages()] == [1]
    assert store._read("SELECT count(*) FROM blobs").fetchone()[0] == 1


def test_a_failed_flush_fails_every_delivery_it_was_to_cover(tmp_path, monkeypatch):
    """
    If this fails, a delivery that shared a commit whose WAL flush failed
    (an I/O error: the commit may not be on disk) is answered as stored,
    or the deliveries after it wait for ever.
    """
    store = SQLiteStore(tmp_path / "store")
    store.createUser(ALICE)
    sizes = batchSizes(store, monkeypatch)
    real = store._flushWal
    failures = [OSError(5, "Input/output error")]

    def flush():
        if failures:
            raise failures.pop()
        real()

    monkeypatch.setattr(store, "_flushWal", flush)
    deliveries = Deliveries(store)
    with store._writeLock():
        for n in range(3):
            deliveries.start(n)
        deliveries.waitQueued(3)
    deliveries.join()
    assert sizes == [3]
    assert deliveries.results == {}
    assert sorted(deliveries.errors) == [0, 1, 2]
    assert all(isinstance(e, OSError) for e in deliveries.errors.values())
    assert store.deliver(ALICE, b"", io.BytesIO(message(9)))
