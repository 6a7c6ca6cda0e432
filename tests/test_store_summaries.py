"""
Message summaries in the SQLite store beyond the shared contract: one per
content (computed once for a message delivered to many users, gone with
the last reference), and a database from before summaries upgraded in
place, with the missing ones computed on first read and kept.
"""

import io
import sqlite3

from pymailer.message import summary as summaryModule
from pymailer.store import sqlite as sqliteModule
from pymailer.store.sqlite import SQLiteStore

MESSAGE = (b"From: Ann <ann@example.org>\r\nSubject: Fwd: report\r\n"
           b"Message-ID: <r1@example.org>\r\n\r\nbody\r\n")
USERS = [f"user{n}@example.org" for n in range(10)]


def countSummaries(monkeypatch):
    calls = []
    real = summaryModule.summarize

    def counting(content):
        calls.append(content.size)
        return real(content)

    monkeypatch.setattr(sqliteModule, "summarize", counting)
    return calls


def summaryRows(store):
    return store._read("SELECT count(*) FROM summaries").fetchone()[0]


def test_summary_computed_once_per_content(tmp_path, monkeypatch):
    """
    If this fails, a message delivered to ten users is parsed ten times at
    delivery (the MX slows down with the recipient count), or its summary
    stays in the database after the last copy is expunged.
    """
    calls = countSummaries(monkeypatch)
    store = SQLiteStore(tmp_path / "store")
    for user in USERS:
        store.deliver(user, b"", io.BytesIO(MESSAGE))
    assert len(calls) == 1
    assert summaryRows(store) == 1
    for user in USERS:
        box = store.mailbox(user)
        [info] = box.messages()
        assert box.summaries([info.uid])[info.uid].baseSubject == "report"
    assert len(calls) == 1  # reads never parse
    for user in USERS:
        box = store.mailbox(user)
        box.expunge([i.uid for i in box.messages()])
    assert summaryRows(store) == 0


def test_existing_database_upgraded_in_place(tmp_path, monkeypatch):
    """
    If this fails, an existing data_dir stops working after the upgrade, or
    its old messages are parsed again on every SORT instead of once.
    """
    store = SQLiteStore(tmp_path / "store")
    for n in range(3):
        store.deliver(USERS[0], b"", io.BytesIO(MESSAGE + b"%d\r\n" % n))
    # The database as the previous version left it: no summaries table.
    db = sqlite3.connect(store.path)
    db.execute("DROP TABLE summaries")
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    calls = countSummaries(monkeypatch)
    store = SQLiteStore(tmp_path / "store")
    assert store._read("PRAGMA user_version").fetchone()[0] == sqliteModule.UPGRADES[-1][0]
    box = store.mailbox(USERS[0])
    uids = [i.uid for i in box.messages()]
    first = box.summaries(uids)
    assert [first[u].sender.mailbox for u in uids] == ["ann"] * 3
    assert len(calls) == 3 and summaryRows(store) == 3
    again = SQLiteStore(tmp_path / "store").mailbox(USERS[0]).summaries(uids)
    assert again == first
    assert len(calls) == 3  # kept: not computed a second time


def test_older_summary_version_recomputed(tmp_path, monkeypatch):
    """
    If this fails, a summary computed by an older version (before a fix to
    ENVELOPE, say) is served for ever instead of being computed again.
    """
    store = SQLiteStore(tmp_path / "store")
    store.deliver(USERS[0], b"", io.BytesIO(MESSAGE))
    store._db().execute("UPDATE summaries SET version = 0, subject = 'stale'")
    box = store.mailbox(USERS[0])
    [uid] = [i.uid for i in box.messages()]
    assert box.summaries([uid])[uid].subject == "Fwd: report"
    assert store._read("SELECT version FROM summaries").fetchone()[0] == summaryModule.VERSION
