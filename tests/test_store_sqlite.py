"""
The SQLite store beyond the shared contract (L{tests.store_contract}):
content stored once per content and removed with its last reference,
crash safety under SIGKILL, changes seen by another process's IDLE
session, and a real server on C{backend = "sqlite"} end to end.
"""

import hashlib
import io
import os
import poplib
import random
import signal
import smtplib
import subprocess
import sys
import time

import pytest
from imapclient import IMAPClient

from mailserver import PASSWORD, MailServer, insecureTLS, subprocessEnv, waitFor
from pymailer.store import sqlite as sqliteModule
from pymailer.store.sqlite import SQLiteStore
from sqlitecount import RowCounter

ALICE = "alice@example.org"
BOB = "bob@example.org"
SQLITE = {"storage": {"backend": "sqlite"},
          "auth": {"allow_plaintext_on_loopback": True}}


def blobFiles(store):
    return {p.parent.name + p.name for p in (store.root / "blobs").glob("??/*")}


def storedContent(store):
    """The blobs whose octets are on disk: files, and rows that hold them."""
    return blobFiles(store) | {blobId for (blobId,) in store._db().execute(
        "SELECT id FROM blobs WHERE contentId IS NOT NULL")}


def test_older_database_gets_the_change_indexes(tmp_path):
    """
    If this fails, a data_dir made by the previous version either does
    not open, or keeps answering "what changed since" (QRESYNC, every IMAP
    session's refresh) by reading the whole mailbox.
    """
    store = SQLiteStore(tmp_path / "store")
    store.deliver(ALICE, b"", io.BytesIO(b"kept"))
    db = store._connect()
    db.executescript("DROP INDEX messagesModSeq; DROP INDEX expungedModSeq;"
                     " PRAGMA user_version = 0;")  # as the previous version left it
    db.close()
    again = SQLiteStore(store.root)
    box = again.mailbox(ALICE)
    assert [i.uid for i in box.messages()] == [1]
    db = again._connect()
    assert db.execute("PRAGMA user_version").fetchone()[0] == sqliteModule.UPGRADES[-1][0]
    for table, index in (("messages", "messagesModSeq"), ("expunged", "expungedModSeq")):
        plan = " ".join(str(row) for row in db.execute(
            f"EXPLAIN QUERY PLAN SELECT uid FROM {table} WHERE mailboxId = 1 AND modseq > 5"))
        assert index in plan
    db.close()


@pytest.mark.parametrize("inRow", [True, False], ids=["in its row", "in a file"])
def test_one_blob_per_content_removed_with_last_reference(tmp_path, inRow):
    """
    If this fails, a message to ten local recipients takes ten times the
    disk, or an expunged message's content stays on disk for ever (or goes
    while another mailbox still shows it).  Small content is kept in the
    database row, larger in a file: both ways.
    """
    store = SQLiteStore(tmp_path / "store")
    if not inRow:
        store.inlineLimit = 0
    users = [f"u{i}@example.org" for i in range(10)]
    for user in users:
        assert store.deliver(user, b"Received: x\r\n", io.BytesIO(b"the same body\r\n"))
    assert len(storedContent(store)) == 1
    assert len(blobFiles(store)) == (0 if inRow else 1)
    inbox = store.mailbox(users[0])
    inbox.copy([1], store.mailbox(users[0], "Archive"))
    for user in users:
        store.mailbox(user).expunge([1])
    [blob] = storedContent(store)
    with store.mailbox(users[0], "Archive").openMessage(1) as content:
        assert content.read() == b"Received: x\r\nthe same body\r\n"
        assert hashlib.sha256(content.readAt(0, 100)).hexdigest() == blob
    store.deleteMailbox(users[0], "Archive")
    assert storedContent(store) == set()


def test_select_with_nothing_recent_needs_no_write_lock(tmp_path):
    """
    If this fails, every SELECT and every scan after an IMAP command queues
    for the store's write lock even with nothing to claim as \\Recent: ten
    clients on one server wait behind each other's APPENDs and EXPUNGEs
    (a third of the server's time in the side-by-side benchmark), and one
    slow writer in another process stalls every SELECT.
    """
    import sqlite3
    import threading

    store = SQLiteStore(tmp_path / "store")
    store.deliver(ALICE, b"", io.BytesIO(b"Subject: one\r\n\r\nbody\r\n"))
    inbox = store.mailbox(ALICE)
    assert inbox.snapshot(claimRecent=True).recent == {1}
    writer = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # another process mid-transaction
    got = []
    reader = threading.Thread(target=lambda: got.append(inbox.snapshot(claimRecent=True)))
    reader.start()
    reader.join(10)  # bounded: the store's busy timeout is longer than this
    answeredWhileLocked = bool(got)
    writer.execute("COMMIT")
    reader.join()
    writer.close()
    assert answeredWhileLocked
    assert got[0].recent == frozenset() and [i.uid for i in got[0].messages] == [1]
    store.deliver(ALICE, b"", io.BytesIO(b"Subject: two\r\n\r\nbody\r\n"))
    assert inbox.snapshot(claimRecent=True).recent == {2}


def test_what_a_session_knows_of_its_mailbox_never_hides_another_process(tmp_path):
    """
    If this fails, a session that appended a message shows it as \\Recent
    although a session of another process claimed it first (RFC 3501
    2.3.2: recent in one session only), or shows a mailbox another process
    renamed, or the refresh after an APPEND into the selected mailbox
    reads the mailbox row once more than it needs to.
    """
    here = SQLiteStore(tmp_path / "store")
    there = SQLiteStore(tmp_path / "store")  # another process on the data_dir
    box = here.mailbox(ALICE)
    seen = box.snapshot(claimRecent=True).highestModSeq
    uid = box.append(io.BytesIO(b"Subject: mine\r\n\r\nbody\r\n"))
    counter = RowCounter(here)
    changes = box.changedSince(seen, claimRecent=True)  # known due: no read first
    assert changes.recent == {uid}
    assert counter.take()["mailboxes"] == 1
    uid = box.append(io.BytesIO(b"Subject: mine too\r\n\r\nbody\r\n"))
    assert there.mailbox(ALICE).changedSince(seen, claimRecent=True).recent == {uid}
    changes = box.changedSince(seen, claimRecent=True)
    assert [i.uid for i in changes.messages] == [1, 2] and changes.recent == frozenset()
    there.renameMailbox(ALICE, "Archive", "Old")
    with pytest.raises(KeyError):
        here.mailbox(ALICE, "Archive")
    assert here.mailbox(ALICE, "Old").snapshot().messages == []


def test_orphans_swept_at_start(tmp_path):
    """
    If this fails, content written by a delivery that crashed before its
    commit fills the disk for ever, or start-up removes a blob that a
    transaction in another process is about to commit.
    """
    store = SQLiteStore(tmp_path / "store")
    store.inlineLimit = 0  # "kept" in a file, beside the orphans
    store.deliver(ALICE, b"", io.BytesIO(b"kept"))
    orphan = store.blobs.write(b"", io.BytesIO(b"never committed"))
    orphan.install()
    half = store.blobs.write(b"", io.BytesIO(b"still in tmp"))
    assert len(blobFiles(store)) == 2
    assert store.sweep() == 0  # young: may be another process's, mid-commit
    old = time.time() - 3600
    for path in (store.blobs.path(orphan.blobId), half.tempPath):
        os.utime(path, (old, old))
    SQLiteStore(store.root)  # opening sweeps
    assert len(blobFiles(store)) == 1 and not any(store.blobs.tmp.iterdir())
    with store.mailbox(ALICE).openMessage(1) as content:
        assert content.read() == b"kept"


def _check(store, model, maxUid, pending):
    """
    The store after a kill against what the child acknowledged: every
    acknowledged change is there; the one in flight is wholly there or not
    at all.
    """
    for user, messages in model.items():
        actual = {}
        box = store.mailbox(user)
        for info in box.messages():
            with box.openMessage(info.uid) as content:
                data = content.read()
            assert len(data) == info.size
            actual[info.uid] = [hashlib.sha256(data).hexdigest(),
                                ",".join(sorted(info.flags))]
        kind = pending[1] if pending and pending[2] == user else None
        for uid in list(messages):
            if uid not in actual:
                assert kind == "X" and int(pending[3]) == uid, (user, uid, pending)
                del messages[uid]
            elif actual[uid][1] != messages[uid][1]:
                assert kind == "F" and int(pending[3]) == uid and pending[4] == actual[uid][1]
                messages[uid][1] = actual[uid][1]
        extra = sorted(set(actual) - set(messages))
        if extra:
            [uid] = extra
            assert kind == "A" and actual[uid] == [pending[3], pending[4]], (actual[uid], pending)
            assert uid > maxUid[user]
            maxUid[user] = uid
            messages[uid] = actual[uid]
        assert actual == messages
    # Reference counts match the rows; every referenced blob not kept in
    # its row is a file, and after the sweep (an hour later) no other is.
    db = store._db()
    counts = dict(db.execute("SELECT blob, count(*) FROM messages GROUP BY blob"))
    assert counts == dict(db.execute("SELECT id, refs FROM blobs"))
    store.sweep(now=time.time() + 3600)
    assert blobFiles(store) == {blobId for (blobId,) in db.execute(
        "SELECT id FROM blobs WHERE contentId IS NULL")}
    assert not any(store.blobs.tmp.iterdir())


def _apply(line, model, maxUid, pending):
    """
    One line of the child's: an intent (the new pending change) or an
    acknowledged change, applied to C{model}. @return: what is pending.
    """
    words = line.decode().split()
    if words[0] == "I":
        return words
    kind, user, uid = words[0], words[1], int(words[2])
    if kind == "A":
        assert uid > maxUid[user], "a UID given twice"
        maxUid[user] = uid
        model[user][uid] = [words[3], words[4] if len(words) > 4 else ""]
    elif kind == "F":
        model[user][uid][1] = words[3] if len(words) > 3 else ""
    else:
        del model[user][uid]
    return None


def test_sigkill_keeps_acknowledged_changes(tmp_path):
    """
    If this fails, a crash (power cut, OOM kill) loses mail or flag changes
    a client was told were done, leaves a message without content or
    content without a message, or gives a new message a UID a client
    already cached for another one.
    """
    root = tmp_path / "store"
    SQLiteStore(root)
    rng = random.Random(13)
    model = {ALICE: {}, BOB: {}}
    maxUid = {ALICE: 0, BOB: 0}
    for round in range(10):
        child = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(__file__), "sqlitecrashchild.py"),
             str(root), str(round)],
            stdout=subprocess.PIPE, stderr=(tmp_path / f"child{round}.err").open("wb"),
            env=subprocessEnv())
        pending = None
        for _ in range(rng.randint(5, 80)):
            line = child.stdout.readline()
            # The child only stops when killed: an early end is its error.
            assert line, (tmp_path / f"child{round}.err").read_text()
            pending = _apply(line, model, maxUid, pending)
        child.send_signal(signal.SIGKILL)
        # Whatever it printed before dying is acknowledged too.
        for line in child.stdout.read().splitlines():
            pending = _apply(line, model, maxUid, pending)
        child.wait()
        if pending is not None and len(pending) < 5 and pending[1] in "AF":
            pending = pending + [""]
        _check(SQLiteStore(root), model, maxUid, pending)
    assert sum(len(m) for m in model.values()) > 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = MailServer(tmp_path_factory.mktemp("sqlite"), roles=("imap", "imaps", "pop3s"),
                   sections=SQLITE)
    s.provision()
    s.start()
    yield s
    s.stop()


def test_idle_sees_delivery_from_another_process(server):
    """
    If this fails, a phone in IDLE on one server process is not told of
    mail that another process (a second server on the same data_dir, the
    delivery agent, the admin command) stored, until it polls itself.
    """
    c = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=30)
    c.login(BOB, PASSWORD)
    exists = c.select_folder("INBOX")[b"EXISTS"]
    c.idle()
    # This test process is the other process: its own store object on the
    # server's data_dir.
    SQLiteStore(server.dataDir / "store").deliver(
        BOB, b"", io.BytesIO(b"Subject: from elsewhere\r\n\r\nhi\r\n"))
    t = time.monotonic()
    responses = c.idle_check(timeout=5)
    elapsed = time.monotonic() - t
    c.idle_done()
    assert (exists + 1, b"EXISTS") in responses
    assert elapsed < 1.0, elapsed
    c.logout()


def test_end_to_end_on_sqlite(server):
    """
    If this fails, a server configured with backend = "sqlite" does not
    store mail delivered over SMTP, or IMAP clients over TLS cannot read,
    flag, copy or delete it, or POP3 cannot download it.
    """
    msg = (f"From: carol@example.net\r\nTo: {ALICE}\r\nSubject: on sqlite\r\n"
           "Message-ID: <sqlite-e2e@example.net>\r\n\r\nthe body\r\n")
    with smtplib.SMTP("127.0.0.1", server.port) as s:
        s.sendmail("carol@example.net", [ALICE], msg.encode())
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                   ssl_context=insecureTLS(), timeout=30)
    c.login(ALICE, PASSWORD)
    waitFor(lambda: c.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] >= 1, 20)
    assert c.select_folder("INBOX")[b"EXISTS"] == 1
    [uid] = c.search(["SUBJECT", "on sqlite"])
    data = c.fetch([uid], ["BODY.PEEK[]", "RFC822.SIZE", "ENVELOPE"])[uid]
    assert b"the body" in data[b"BODY[]"] and data[b"ENVELOPE"].subject == b"on sqlite"
    assert data[b"RFC822.SIZE"] == len(data[b"BODY[]"])
    c.add_flags([uid], [b"\\Flagged", b"$Work"])
    assert {b"\\Flagged", b"$Work"} <= set(c.get_flags([uid])[uid])
    c.copy([uid], "Archive")
    c.add_flags([uid], [b"\\Deleted"])
    c.expunge()
    assert c.search(["ALL"]) == []
    c.select_folder("Archive")
    [copied] = c.search(["SUBJECT", "on sqlite"])
    assert {b"\\Flagged", b"$Work"} <= set(c.get_flags([copied])[copied])
    c.logout()
    # The copy is what POP3 does not see (INBOX only); deliver another.
    with smtplib.SMTP("127.0.0.1", server.port) as s:
        s.sendmail("carol@example.net", [ALICE], msg.replace("on sqlite", "pop").encode())
    inbox = SQLiteStore(server.dataDir / "store").mailbox(ALICE)
    waitFor(lambda: inbox.messages() or None, 20)
    pop = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=insecureTLS(), timeout=30)
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    assert pop.stat()[0] == 1
    lines = pop.retr(1)[1]
    assert b"Subject: pop" in lines and b"the body" in lines
    pop.quit()
    assert not (server.dataDir / "mail" / "example.org").exists()  # not in Maildir


def test_refresh_reads_only_what_changed(tmp_path):
    """
    If this fails, a NOOP (what clients send every few minutes, per
    session) or the refresh after another session's change re-reads every
    message of the mailbox, or misses a change another process made: a
    delivery, a flag, a new keyword, an expunge held back during a FETCH.
    """
    from pymailer.imap.selected import Selected

    store = SQLiteStore(tmp_path / "store")
    for i in range(50):
        store.deliver(ALICE, b"", io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % i))
    store.mailbox(ALICE).snapshot(claimRecent=True)  # an earlier session saw them
    selected = Selected("INBOX", store.mailbox(ALICE), False)
    selected.apply(selected.scan())
    counter = RowCounter(store)
    assert selected.apply(selected.refresh()) == []
    assert counter.take() == {"*": 1, "mailboxes": 1}
    other = store.mailbox(ALICE)  # another session or process
    for change, lines in (
            (lambda: store.deliver(ALICE, b"", io.BytesIO(b"Subject: new\r\n\r\nx\r\n")),
             [b"* 51 EXISTS", b"* 1 RECENT"]),
            (lambda: other.storeFlags([7], "add", {"\\Flagged"}),
             [b"* 7 FETCH (FLAGS (\\Flagged) UID 7)"]),
            (lambda: other.storeFlags([99], "add", {"$Work"}), None),
            (lambda: other.expunge([1]), [])):
        change()
        counter.take()
        changes = selected.refresh()
        read = counter.take()
        assert read.get("messages", 0) <= 1 and read["*"] <= 3, read
        told = selected.apply(changes, allowExpunge=False)
        if lines is not None:
            assert told == lines
    # The expunge held back (RFC 3501 7.4.1) is told at the next chance.
    assert selected.apply(selected.refresh()) == [b"* 1 EXPUNGE"]
    assert len(selected.uids) == 50 and "$Work" in selected.keywords
    assert selected.apply(selected.refresh()) == []


def test_upgrade_adds_savedate_and_mailboxid_in_place(tmp_path):
    """If this fails, a data_dir made by the version before SAVEDATE and
    OBJECTID stops opening after an upgrade, or its old mail shows no
    save date and its folders no MAILBOXID."""
    import sqlite3

    from pymailer.store import sqlite as module

    old = module.SCHEMA.replace("    objectId TEXT,\n", "").replace("    saveDate REAL,\n", "")
    old = old[:old.index("CREATE TABLE IF NOT EXISTS settings")] + \
        old[old.index("CREATE TABLE IF NOT EXISTS changes"):]
    root = tmp_path / "store"
    root.mkdir()
    db = sqlite3.connect(root / "index.sqlite")
    db.executescript(old)
    db.execute("INSERT INTO users (name, foldersMade) VALUES ('a@example.org', 1)")
    db.execute("INSERT INTO mailboxes (userId, name, uidValidity, uidNext)"
               " VALUES (1, 'INBOX', 7, 2)")
    db.execute("INSERT INTO messages (mailboxId, uid, key, modseq, internalDate, size, blob)"
               " VALUES (1, 1, 'k', 1, 1234567.0, 1, 'ab')")
    db.commit()
    db.close()
    store = SQLiteStore(root)
    inbox = store.mailbox("a@example.org")
    [info] = inbox.messages()
    assert info.saveDate == 1234567.0
    assert inbox.mailboxId().startswith("F")
    assert SQLiteStore(root).mailbox("a@example.org").mailboxId() == inbox.mailboxId()
    inbox.append(io.BytesIO(b"new"))
    assert inbox.messages()[-1].saveDate > time.time() - 60



def vmSteps(store, call):
    """C{(result, steps)}: C{call()}, and the SQLite VM steps it took in this thread."""
    steps = []
    store._db().set_progress_handler(lambda: steps.append(1), 1)
    try:
        return call(), len(steps)
    finally:
        store._db().set_progress_handler(None, 1)


def importSame(store, user, count, flags=()):
    """C{count} messages of one content into C{user}'s INBOX, without fsync (a set-up)."""
    from unittest import mock

    from pymailer.store import ImportedMessage

    with mock.patch("os.fsync"):
        store.importMailbox(user, "INBOX", None, (
            ImportedMessage(None, frozenset(flags), 1_700_000_000,
                            lambda: io.BytesIO(b"Subject: same\r\n\r\nbody\r\n"))
            for _ in range(count)))


def test_expunge_reads_the_deleted_messages_not_the_mailbox(tmp_path):
    """
    If this fails, every EXPUNGE reads each message row of the mailbox
    under the store's write lock (12 ms on 100,000 messages), and every
    other client's APPEND, STORE and EXPUNGE waits that long behind it; or
    a data_dir made by the previous version never gets the index.
    """
    store = SQLiteStore(tmp_path / "store")
    db = store._connect()
    db.executescript("DROP INDEX messagesDeleted; PRAGMA user_version = 3;")  # as before
    db.close()
    store = SQLiteStore(store.root)
    inbox = store.mailbox(ALICE)

    def expungeSteps():
        """SQLite VM steps of an EXPUNGE of the newest message (set \\Deleted first)."""
        uid = inbox.uidNext() - 1
        inbox.storeFlags([uid], "add", {"\\Deleted"})
        (expunged, _), steps = vmSteps(store, inbox.expungeDeleted)
        assert expunged == [uid]
        return steps

    importSame(store, ALICE, 500, {"\\Seen"})
    small = expungeSteps()
    importSame(store, ALICE, 3000, {"\\Seen"})
    big = expungeSteps()
    assert big < small * 1.2, (small, big)


def test_refresh_cost_does_not_grow_with_mailbox_or_expunge_history(tmp_path):
    """
    If this fails, what an IMAP session does after each command (read what
    changed since it last looked, QRESYNC's VANISHED) reads every message
    of the mailbox and every expunge it ever had: in the long-session
    bench, commands/s fell from round to round as the expunges piled up
    (issue 13), and a 100,000-message mailbox pays for all of them after
    each STORE.
    """
    store = SQLiteStore(tmp_path / "store")
    inbox = store.mailbox(ALICE)

    def refreshSteps():
        """Steps of changedSince after one flag change and one expunge."""
        first, last = inbox.snapshot().messages[0].uid, inbox.uidNext() - 1
        seen = inbox.highestModSeq()
        inbox.storeFlags([last], "add", {"\\Flagged"})
        inbox.expunge([first])
        changes, steps = vmSteps(store, lambda: inbox.changedSince(seen))
        assert [i.uid for i in changes.messages] == [last] and changes.vanished == (first,)
        return steps

    importSame(store, ALICE, 500)
    small = refreshSteps()
    importSame(store, ALICE, 3000)
    inbox.expunge([i.uid for i in inbox.snapshot().messages[:2000]])  # a long history
    big = refreshSteps()
    assert big < small * 1.2, (small, big)
