"""
The SQLite store's blobs written from memory straight to their names
(L{pymailer.store.blobs.BlobStore.place}): no temporary name per message,
the directory fsync shared by concurrent writers, and a name that shows
other octets than its own (a crash in the middle of writing it) never
used.
"""

import hashlib
import io
import os
import threading

from pymailer import fsutil
from pymailer.store.sqlite import SQLiteStore

from tests.test_store_sqlite_durability import WatchedCondition, blobFiles

ALICE = "alice@example.org"


def test_a_delivery_creates_no_temporary_file(tmp_path, monkeypatch):
    """
    If this fails, each message delivered at the end of DATA creates a
    temporary name and removes it again: two more directory changes for
    the file system's journal per message, on the path every SMTP 250
    waits for.
    """
    store = SQLiteStore(tmp_path / "store")
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


def sameDirectory(count):
    """C{count} messages whose blobs land in one directory (of 256)."""
    found, n = {}, 0
    while True:
        data = b"Subject: %d\r\n\r\nbody\r\n" % n
        group = found.setdefault(hashlib.sha256(data).hexdigest()[:2], [])
        group.append(data)
        if len(group) == count:
            return group
        n += 1


def test_deliveries_into_one_blob_directory_share_its_fsync(tmp_path, monkeypatch):
    """
    If this fails, deliveries whose blobs land in the same directory at
    the same moment each wait for a directory fsync of their own, one
    after the other, or one is acknowledged before a directory fsync that
    began after its file was named.
    """
    store = SQLiteStore(tmp_path / "store")
    store.createUser(ALICE)
    first, *others = sameDirectory(3)
    directory = str(store.blobs.path(hashlib.sha256(first).hexdigest()).parent)
    syncs, syncing, release = [], threading.Event(), threading.Event()
    real = fsutil.fsyncDirectory

    def fsyncDirectory(path):
        if path == directory:
            syncs.append(path)
            syncing.set()
            if len(syncs) == 1:
                release.wait(30)  # the first is slow: the others queue
        real(path)

    monkeypatch.setattr(fsutil, "fsyncDirectory", fsyncDirectory)
    os.makedirs(directory)
    store.blobs.syncDirectory(directory)  # made once, before the watch
    syncs.clear()
    syncing.clear()
    sync = store.blobs._directorySyncs[directory]
    sync._cond = WatchedCondition()
    delivered = []

    def deliver(data):
        store.deliver(ALICE, b"", io.BytesIO(data))
        delivered.append(data)

    threads = [threading.Thread(target=deliver, args=(first,))]
    threads[0].start()
    assert syncing.wait(30)
    threads += [threading.Thread(target=deliver, args=(data,)) for data in others]
    for t in threads[1:]:
        t.start()
    assert sync._cond.waitForWaiters(2, 30)  # both named, waiting for an fsync
    assert delivered == []
    release.set()
    for t in threads:
        t.join()
    assert len(delivered) == 3
    assert len(syncs) == 2  # the second covers both that waited
    inbox = SQLiteStore(store.root).mailbox(ALICE)
    assert len(inbox.messages()) == 3


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


def test_a_placed_blob_removed_or_replaced_before_the_lock_is_placed_again(tmp_path):
    """
    If this fails, a message whose content was expunged elsewhere at the
    moment it was delivered (the same octets: its last reference went
    after the new copy was written, before the new row was committed) is
    stored without content.
    """
    store = SQLiteStore(tmp_path / "store")
    body = b"Subject: same\r\n\r\nbody\r\n"
    pending = store.blobs.place(body)
    store.blobs.remove(pending.blobId)  # the concurrent removal
    pending.install()
    assert store.blobs.path(pending.blobId).read_bytes() == body
    pending = store.blobs.place(body)
    store.blobs.remove(pending.blobId)  # removed, then written half by another
    store.blobs.path(pending.blobId).write_bytes(body[:5])
    pending.install()
    assert store.blobs.path(pending.blobId).read_bytes() == body
