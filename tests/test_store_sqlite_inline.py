"""
The SQLite store keeps small content in its C{blobs} row
(L{pymailer.store.sqlite.InlineBlob}): made durable by the commit's WAL
fsync alone, where a file costs its own fsync and its directory's.
"""

import hashlib
import io
import os
import pathlib

from pymailer.store import sqlite as sqliteModule
import pytest

from pymailer.store import ImportedMessage
from pymailer.store.sqlite import INLINE_LIMIT, SQLiteStore, StoreTooNew

ALICE = "alice@example.org"


def blobFiles(store):
    return {p.parent.name + p.name for p in (store.root / "blobs").glob("??/*")}


def countFsyncs(monkeypatch):
    """Record the path of every descriptor fsynced from now on."""
    synced = []
    realFsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return realFsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_a_small_message_is_durable_with_the_wal_fsync_alone(tmp_path, monkeypatch):
    """
    If this fails, every delivery of an ordinary message makes a file and
    waits for three fsyncs (the file, its directory, the WAL) before its
    250, where one WAL fsync, shared by concurrent deliveries, is enough.
    """
    store = SQLiteStore(tmp_path / "store")
    store.createUser(ALICE)
    synced = countFsyncs(monkeypatch)
    body = b"Subject: small\r\n\r\n" + b"x" * 4000 + b"\r\n"
    assert store.deliver(ALICE, b"Return-Path: <a@remote.test>\r\n", io.BytesIO(body))
    assert synced == [str(store.path) + "-wal"]
    assert blobFiles(store) == set()
    again = SQLiteStore(store.root)
    with again.mailbox(ALICE).openMessage(1) as content:
        assert content.read() == b"Return-Path: <a@remote.test>\r\n" + body


def test_content_over_the_limit_is_a_file(tmp_path):
    """
    If this fails, large messages are written into the database (twice:
    the WAL, then the checkpoint, and read whole into memory), or small
    ones are not kept in rows at all.
    """
    store = SQLiteStore(tmp_path / "store")
    atLimit = b"Subject: at\r\n\r\n" + b"a" * (INLINE_LIMIT - 15)
    over = b"Subject: ov\r\n\r\n" + b"b" * (INLINE_LIMIT - 14)
    assert (len(atLimit), len(over)) == (INLINE_LIMIT, INLINE_LIMIT + 1)
    store.deliver(ALICE, b"", io.BytesIO(atLimit))
    assert blobFiles(store) == set()
    store.deliver(ALICE, b"", io.BytesIO(over))
    assert len(blobFiles(store)) == 1
    box = store.mailbox(ALICE)
    assert [(uid, c.read()) for uid, c in box.openMessages([1, 2])] == [(1, atLimit),
                                                                        (2, over)]
    assert [box.summaries([uid])[uid].subject for uid in (1, 2)] == ["at", "ov"]


def test_a_database_from_before_keeps_its_files_and_takes_rows(tmp_path):
    """
    If this fails, an upgraded data_dir loses the mail it had (kept in
    files), or does not open.
    """
    store = SQLiteStore(tmp_path / "store")
    store.inlineLimit = 0  # as the previous version kept everything
    store.deliver(ALICE, b"", io.BytesIO(b"Subject: old\r\n\r\nfrom before\r\n"))
    db = store._connect()
    db.executescript("DROP TABLE contents; ALTER TABLE blobs DROP COLUMN contentId;"
                     " PRAGMA user_version = 5;")
    db.close()
    again = SQLiteStore(store.root)
    assert again._read("PRAGMA user_version").fetchone()[0] == sqliteModule.UPGRADES[-1][0]
    again.deliver(ALICE, b"", io.BytesIO(b"Subject: new\r\n\r\nin a row\r\n"))
    assert len(blobFiles(again)) == 1
    box = again.mailbox(ALICE)
    assert [c.read() for _, c in box.openMessages([1, 2])] == [
        b"Subject: old\r\n\r\nfrom before\r\n", b"Subject: new\r\n\r\nin a row\r\n"]
    # The old one expunged: its file goes (once the expunge is durable).
    box.storeFlags([1], "add", ["\\Deleted"])
    box.expunge([1])
    again.deliver(ALICE, b"", io.BytesIO(b"Subject: flush\r\n\r\n"))  # a durable commit
    assert blobFiles(again) == set()


def test_a_backup_holds_content_kept_in_rows_and_in_files(tmp_path):
    """
    If this fails, a backup misses the content kept in the index (or in
    files), and restoring it loses mail.
    """
    store = SQLiteStore(tmp_path / "store")
    small = b"Subject: small\r\n\r\nrow\r\n"
    large = b"Subject: large\r\n\r\n" + b"f" * INLINE_LIMIT
    store.deliver(ALICE, b"", io.BytesIO(small))
    store.deliver(ALICE, b"", io.BytesIO(large))
    assert store.backup(tmp_path / "backup") == (2, 2)
    restored = SQLiteStore(tmp_path / "backup")
    assert len(blobFiles(restored)) == 1
    assert [c.read() for _, c in restored.mailbox(ALICE).openMessages([1, 2])] == [small,
                                                                                    large]


def test_content_freed_as_a_file_and_kept_again_in_a_row_leaves_no_file(tmp_path):
    """
    If this fails, the same octets freed as a file (stored before rows
    kept content) and stored again in a row in one transaction leave the
    file on disk for ever: the row names the content, and the sweep takes
    every content a row names for a file.
    """
    store = SQLiteStore(tmp_path / "store")
    octets = b"Subject: again\r\n\r\nthe same\r\n"
    store.inlineLimit = 0
    box = store.mailbox(ALICE)
    box.append(io.BytesIO(octets))
    store.inlineLimit = INLINE_LIMIT
    assert len(blobFiles(store)) == 1
    pending, summary = store._writeBlob(b"", io.BytesIO(octets))

    def expungeAndAppend(txn):
        box._expunge(txn, [1])
        return box._appendIn(txn, pending, summary, (), 0.0, None, False)

    store._writeShared(expungeAndAppend)
    assert [c.read() for _, c in box.openMessages([2])] == [octets]
    store.sweep(now=float("inf"))
    assert blobFiles(store) == set()


def test_content_kept_in_step_6s_column_moves_to_its_table(tmp_path):
    """
    If this fails, a database upgraded by step 6 (the content in the
    blobs row itself) loses the messages it kept there, or keeps writing
    them again on every COPY.
    """
    store = SQLiteStore(tmp_path / "store")
    store.createUser(ALICE)
    db = store._connect()
    octets = b"Subject: six\r\n\r\nin the row\r\n"
    blobId = hashlib.sha256(octets).hexdigest()
    db.executescript("DROP TABLE contents; ALTER TABLE blobs DROP COLUMN contentId;")
    with db:
        db.execute("INSERT INTO blobs (id, refs, size, octets) VALUES (?, 1, ?, ?)",
                   (blobId, len(octets), octets))
        db.execute("INSERT INTO messages (mailboxId, uid, key, modseq, internalDate, size, blob)"
                   " SELECT id, 1, 'k1', 2, 0, ?, ? FROM mailboxes WHERE name = 'INBOX'",
                   (len(octets), blobId))
        db.execute("UPDATE mailboxes SET uidNext = 2, highestModSeq = 2 WHERE name = 'INBOX'")
        db.execute("PRAGMA user_version = 6")
    db.close()
    again = SQLiteStore(store.root)
    assert again._read("SELECT octets IS NULL, contentId IS NOT NULL FROM blobs").fetchall() \
        == [(1, 1)]
    with again.mailbox(ALICE).openMessage(1) as content:
        assert content.read() == octets


def test_a_copy_does_not_write_the_content_again(tmp_path):
    """
    If this fails, every COPY or MOVE of a message kept in the database
    writes its content to the WAL again (its reference count in the same
    row as its octets): several times the pages of the change itself.
    """
    store = SQLiteStore(tmp_path / "store")
    store.deliver(ALICE, b"", io.BytesIO(b"Subject: big\r\n\r\n" + b"b" * 60_000))
    store.createMailbox(ALICE, "Kept")
    db = store._db()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = pathlib.Path(str(store.path) + "-wal")
    before = wal.stat().st_size
    store.mailbox(ALICE).copy([1], store.mailbox(ALICE, "Kept"))
    assert wal.stat().st_size - before < 30_000


def test_a_database_from_a_newer_version_is_refused(tmp_path):
    """
    If this fails, starting an older pymailer on a data_dir a newer one
    upgraded serves its mailboxes with the messages it cannot read: listed,
    and empty or gone when fetched.
    """
    store = SQLiteStore(tmp_path / "store")
    store.deliver(ALICE, b"", io.BytesIO(b"Subject: kept\r\n\r\n"))
    db = store._connect()
    db.execute(f"PRAGMA user_version = {sqliteModule.UPGRADES[-1][0] + 1}")
    db.close()
    with pytest.raises(StoreTooNew, match="newer pymailer"):
        SQLiteStore(store.root)


def test_imported_small_messages_are_kept_in_the_database(tmp_path):
    """
    If this fails, an import writes a file for every small message (and
    one whose content a delivered message keeps already is a file no row
    names, on disk until the next start).
    """
    store = SQLiteStore(tmp_path / "store")
    octets = b"Subject: imported\r\n\r\nsmall\r\n"
    store.deliver(ALICE, b"", io.BytesIO(octets))
    messages = [ImportedMessage(None, (), 0.0, lambda: io.BytesIO(octets)),
                ImportedMessage(None, (), 0.0, lambda: io.BytesIO(b"Subject: other\r\n\r\n"))]
    assert store.importMailbox(ALICE, "Old", 7, messages) == 2
    assert blobFiles(store) == set() and not any(store.blobs.tmp.iterdir())
    box = store.mailbox(ALICE, "Old")
    assert [c.read() for _, c in box.openMessages([1, 1, 2])] == [
        octets, octets, b"Subject: other\r\n\r\n"]


def test_a_delivery_found_made_before_is_flushed(tmp_path, monkeypatch):
    """
    If this fails, the queue's retry of a delivery made just before a
    crash (committed, killed before its WAL fsync) is told "delivered"
    and forgets the message while the copy found is not on disk: a power
    loss then loses it.
    """
    store = SQLiteStore(tmp_path / "store")
    octets = b"Subject: once\r\n\r\n"
    assert store.deliver(ALICE, b"", io.BytesIO(octets), uniqueKey="q1")
    synced = countFsyncs(monkeypatch)
    assert not store.deliver(ALICE, b"", io.BytesIO(octets), uniqueKey="q1",
                             checkDuplicate=True)
    assert synced == [str(store.path) + "-wal"]


def test_a_delivery_whose_transaction_never_began_leaves_no_file(tmp_path, monkeypatch):
    """
    If this fails, a delivery that fails before its transaction begins
    (the database locked past the busy timeout) leaves its temporary file
    in blobs/tmp until the next start.
    """
    import sqlite3

    store = SQLiteStore(tmp_path / "store")
    store.createUser(ALICE)

    def locked(batch):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "_commitShared", locked)
    large = b"Subject: large\r\n\r\n" + b"l" * (2 << 20)
    with pytest.raises(sqlite3.OperationalError):
        store.deliver(ALICE, b"", io.BytesIO(large))
    with pytest.raises(sqlite3.OperationalError):
        store.mailbox(ALICE).append(io.BytesIO(large))
    assert not any(store.blobs.tmp.iterdir())
