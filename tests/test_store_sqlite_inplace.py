"""
The SQLite store's blobs written from memory straight to their names
(L{pymailer.store.blobs.BlobStore.place}): no temporary name per message,
and a name that shows other octets than its own (a crash in the middle of
writing it) never used.
"""

import io
import os

from pymailer.store.sqlite import SQLiteStore

from tests.test_store_sqlite_durability import blobFiles

ALICE = "alice@example.org"


def test_a_delivery_creates_no_temporary_file(tmp_path, monkeypatch):
    """
    If this fails, each message delivered at the end of DATA creates a
    temporary name and removes it again: two more directory changes for
    the file system's journal per message, on the path every SMTP 250
    waits for.
    """
    store = SQLiteStore(tmp_path / "store")
    store.inlineLimit = 0  # content in files (small content is kept in rows)
    store.createUser(ALICE)
    created, removed = [], []
    realOpen, realUnlink = os.open, os.unlink

    def recordOpen(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            created.append(str(path))
        return realOpen(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", recordOpen)
    monkeypatch.setattr(os, "unlink", lambda path: (removed.append(path), realUnlink(path))[1])
    body = b"Subject: one\r\n\r\nbody\r\n"
    assert store.deliver(ALICE, b"Return-Path: <a@remote.test>\r\n", io.BytesIO(body))
    [blobId] = blobFiles(store)
    assert {p for p in created if "/blobs/" in p} == {str(store.blobs.path(blobId))}
    assert removed == []
    with store.mailbox(ALICE).openMessage(1) as content:
        assert content.read() == b"Return-Path: <a@remote.test>\r\n" + body


def test_a_half_written_blob_is_replaced_not_used(tmp_path):
    """
    If this fails, a message whose octets are the same as those a crash
    interrupted while writing them (within a minute, before the sweep) is
    stored as the truncated copy the crash left.
    """
    store = SQLiteStore(tmp_path / "store")
    body = b"Subject: again\r\n\r\n" + b"x" * 10000 + b"\r\n"
    whole = store.blobs.place(body)  # the name it will have
    path = store.blobs.path(whole.blobId)
    os.unlink(path)
    path.write_bytes(body[:4096])  # what the crash left
    store.deliver(ALICE, b"", io.BytesIO(body))
    with store.mailbox(ALICE).openMessage(1) as content:
        assert content.read() == body
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_placed_blob_replaced_before_the_lock_is_placed_again(tmp_path):
    """
    If this fails, a delivery whose content was removed (its last older
    reference expunged) and then half-written again by another writer,
    between the write and the lock, commits a row naming the other
    writer's copy before that copy is whole on disk.  The inode number
    alone does not tell: the removed file's number may go to the new one.
    """
    store = SQLiteStore(tmp_path / "store")
    body = b"Subject: same\r\n\r\nbody\r\n"
    pending = store.blobs.place(body)
    store.blobs.remove(pending.blobId)
    store.blobs.path(pending.blobId).write_bytes(body[:5])
    pending.install()
    assert store.blobs.path(pending.blobId).read_bytes() == body
