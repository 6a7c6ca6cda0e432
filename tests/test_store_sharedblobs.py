"""
The PostgreSQL store with its content in a shared directory (C{[storage]
blobs = "/path"}, L{pymailer.store.sharedblobs}) beyond the store contract
(run against it by L{test_store_contract}): content in files, not in the
database; freed files kept for readers, then removed by any node's sweep;
a removal never takes content a new delivery on another node just named;
orphan files adopted and removed; content stored in the database before
the switch still read.  Each "node" is a store object with a pool of its
own, on one throwaway cluster (L{daemons.PostgreSQL}).
"""

import io
import os
import time

import pytest

from pymailer.config import StorageConfig
from pymailer.pg.pool import openPool
from pymailer.store import postgresql
from pymailer.store.postgresql import CHUNK, PostgreSQLStore

from tests.test_store_postgresql import chunkRows, redeliverWhileExpunging

USER = "alice@example.org"


@pytest.fixture
def nodes(postgresqlPool, tmp_path):
    """Two nodes on one database and one blob directory."""
    other = openPool(StorageConfig("postgresql", postgresqlPool.conninfo, 4))
    stores = [PostgreSQLStore(postgresqlPool, blobDirectory=tmp_path / "blobs"),
              PostgreSQLStore(other, blobDirectory=tmp_path / "blobs")]
    yield stores
    for store in stores:
        store.close()
    other.close()


def blobFiles(store):
    return sorted(p.name for d in store.blobs.root.iterdir() if d != store.blobs.tmp
                  for p in d.iterdir())


def test_contentInFilesReadOnEveryNode(nodes):
    """
    A message delivered on one node is a file in the shared directory (no
    chunk rows) and reads whole on the other: otherwise the option would
    still fill the database, or nodes would not share content.
    """
    body = b"Subject: big\r\n\r\n" + b"z" * (CHUNK * 2)
    nodes[0].deliver(USER, b"", io.BytesIO(body))
    assert chunkRows(nodes[0]) == 0
    assert len(blobFiles(nodes[0])) == 1
    with nodes[1].mailbox(USER).openMessage(1) as content:
        assert content.read() == body


def test_freedFileKeptForReadersThenSwept(nodes, monkeypatch):
    """
    An expunged message's file stays for a reader that opened it, and a
    later sweep on another node removes it: otherwise a POP3 RETR in
    progress would break, or the directory would keep every message.
    """
    nodes[0].deliver(USER, b"", io.BytesIO(b"Subject: x\r\n\r\nbody\r\n"))
    box = nodes[0].mailbox(USER)
    content = box.openMessage(1)
    box.expunge([1])
    assert nodes[0].sweep() == 0 and len(blobFiles(nodes[0])) == 1
    monkeypatch.setattr(postgresql, "FREED_GRACE", -1)
    assert nodes[1].sweep() == 1
    assert blobFiles(nodes[0]) == []
    assert content.read().endswith(b"body\r\n")  # opened before: still readable
    content.close()


def namedFilesMissing(store):
    """
    The blobs a message names whose file is missing, read with the rows
    locked (FOR SHARE: no sweep is removing them meanwhile).
    """
    with store.pool.connection() as db, db.transaction():
        named = [blobId for (blobId,) in db.execute(
            "SELECT id FROM mailstore.blobs WHERE refs > 0 FOR SHARE")]
        return [blobId for blobId in named if not store.blobs.path(blobId).exists()]


def test_redeliveryWhileAnotherNodeSweeps(nodes, monkeypatch):
    """
    The same content delivered again and again on one node while another
    expunges it and sweeps at once (no grace) never leaves a message
    naming a missing file: otherwise a resent message could be stored
    with its content deleted under it.
    """
    monkeypatch.setattr(postgresql, "FREED_GRACE", -1)
    body = b"Subject: again\r\n\r\n" + b"q" * 1000
    missing = []

    def sweepAndCheck(store):
        store.sweep()
        missing.extend(namedFilesMissing(store))

    redeliverWhileExpunging(nodes, body, 40, sweepAndCheck)
    assert missing == []
    nodes[1].deliver(USER, b"", io.BytesIO(body))
    box = nodes[0].mailbox(USER)
    with box.openMessage(box.messages()[-1].uid) as content:
        assert content.read() == body


def test_orphanFilesAdoptedThenRemoved(nodes, monkeypatch):
    """
    A file no row names (a crash between the file and the commit), once
    old, is removed by a sweep, and a file a message names is kept however
    old: otherwise crashes would leak disk, or old mail would lose content.
    """
    nodes[0].deliver(USER, b"", io.BytesIO(b"Subject: kept\r\n\r\nkept\r\n"))
    [kept] = blobFiles(nodes[0])
    orphan = nodes[0].blobs.root / "ab" / ("c" * 62)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"left by a crash")
    old = time.time() - 7200
    for path in [orphan, *(d / n for d in nodes[0].blobs.root.iterdir()
                           for n in os.listdir(d) if d.name != "tmp")]:
        os.utime(path, (old, old))
    monkeypatch.setattr(postgresql, "FREED_GRACE", -1)
    # Each sweep looks in one of the 256 subdirectories.
    assert sum(nodes[1].sweep() for _ in range(256)) == 1
    assert blobFiles(nodes[0]) == [kept]
    with nodes[0].mailbox(USER).openMessage(1) as content:
        assert content.read().endswith(b"kept\r\n")


def test_contentStoredBeforeTheSwitchStillRead(nodes, postgresqlPool):
    """
    Mail a node stored in the database (blobs = "postgresql", or moved by
    migrate-storage) reads on a node keeping content in files: otherwise
    switching to a shared directory would hide the older mail.
    """
    PostgreSQLStore(postgresqlPool).deliver(USER, b"", io.BytesIO(b"Subject: old\r\n\r\nold\r\n"))
    with nodes[1].mailbox(USER).openMessage(1) as content:
        assert content.read().endswith(b"old\r\n")
    assert blobFiles(nodes[1]) == []
