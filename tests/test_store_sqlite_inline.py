"""
The SQLite store keeps small content in its C{blobs} row
(L{pymailer.store.sqlite.InlineBlob}): made durable by the commit's WAL
fsync alone, where a file costs its own fsync and its directory's.
"""

import io
import os

from pymailer.store import sqlite as sqliteModule
from pymailer.store.sqlite import INLINE_LIMIT, SQLiteStore

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
    db.executescript("ALTER TABLE blobs DROP COLUMN octets; PRAGMA user_version = 5;")
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
