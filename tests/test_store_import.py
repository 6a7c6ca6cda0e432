"""
Moving mail in and out of the store (L{pymailer.store.maildir_io},
L{pymailer.interfaces.IMailImport}): the previous version's Maildir,
Dovecot's Maildir and mbox in with their UIDs and flags; a Maildir out that
Dovecot, mutt and Python read; C{pymailer backup} while mail arrives.
"""

import io
import mailbox
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from imapclient import IMAPClient

from mailserver import PASSWORD, MailServer, subprocessEnv
from pymailer.store import INBOX, ImportedMessage
from pymailer.store.maildir import MaildirStore
from pymailer.store.maildir_io import (
    LEGACY_DONE, exportMaildir, importMailboxes, migrateLegacyMaildirs, readMaildirTree,
    readMbox,
)
from pymailer.store.memory import MemoryStore
from pymailer.store.sqlite import SQLiteStore

ALICE = "alice@example.org"


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "store")


def imported(uid, data, flags=(), date=1_700_000_000.0):
    return ImportedMessage(uid=uid, flags=frozenset(flags), internalDate=date,
                           open=lambda: io.BytesIO(data))


def view(store, user):
    """Every mailbox as (UIDVALIDITY, UIDNEXT, [(uid, flags, date, content)])."""
    out = {}
    for name in store.listMailboxes(user):
        box = store.mailbox(user, name)
        snap = box.snapshot()
        messages = []
        for info in snap.messages:
            with box.openMessage(info.uid) as content:
                messages.append((info.uid, info.flags, int(info.internalDate), content.read()))
        out[name] = (snap.uidValidity, snap.uidNext, messages)
    return out


def contents(v):
    """L{view} without UIDVALIDITY/UIDNEXT: what a reader of the mail sees."""
    return {name: [m[1:] for m in messages] for name, (_, _, messages) in v.items()}


class TestImportAPI:
    def test_keepsUidValidityUidsFlagsAndDates(self, store):
        """
        If this fails, clients of a moved mailbox download everything again
        (UIDVALIDITY or UIDs changed), or lose flags, keywords or dates.
        """
        count = store.importMailbox(ALICE, "Old", 1234, [
            imported(3, b"a\r\n", {"\\Seen", "$Label1"}, 1_600_000_000.0),
            imported(7, b"b\r\n", {"\\Answered"}),
        ], uidNext=10)
        assert count == 2
        box = store.mailbox(ALICE, "Old")
        snap = box.snapshot()
        assert snap.uidValidity == 1234
        assert [(m.uid, m.flags, m.internalDate) for m in snap.messages] == [
            (3, {"\\Seen", "$Label1"}, 1_600_000_000.0), (7, {"\\Answered"}, 1_700_000_000.0)]
        with box.openMessage(7) as content:
            assert content.read() == b"b\r\n"
        # UIDs given by the old store to mail since expunged are not given again.
        assert box.append(io.BytesIO(b"c\r\n")) == 10

    def test_emptyInboxTakesTheValidity(self, store):
        """
        If this fails, the INBOX an account already has (made at user add)
        cannot receive its old mail with its UIDs.
        """
        store.createUser(ALICE)
        store.importMailbox(ALICE, INBOX, 99, [imported(5, b"x\r\n")])
        assert store.mailbox(ALICE).snapshot().uidValidity == 99
        assert [m.uid for m in store.mailbox(ALICE).messages()] == [5]

    def test_runAgainFinishesWithoutDuplicates(self, store):
        """
        If this fails, an import interrupted and run again doubles the
        messages it had already moved.
        """
        store.importMailbox(ALICE, "Old", 77, [imported(1, b"1\r\n")])
        assert store.importMailbox(ALICE, "Old", 77, [
            imported(1, b"1\r\n"), imported(2, b"2\r\n")]) == 1
        assert [m.uid for m in store.mailbox(ALICE, "Old").messages()] == [1, 2]

    def test_otherValidityIntoFullMailboxRefused(self, store):
        """
        If this fails, an import mixes two mailboxes' UIDs under one
        UIDVALIDITY and clients show the wrong messages for cached UIDs.
        """
        store.importMailbox(ALICE, "Old", 77, [imported(1, b"1\r\n")])
        with pytest.raises(ValueError):
            store.importMailbox(ALICE, "Old", 78, [imported(1, b"other\r\n")])

    def test_withoutValidityAppends(self, store):
        """If this fails, an mbox imported into a mailbox with mail overwrites or fails."""
        store.deliver(ALICE, b"", io.BytesIO(b"there\r\n"))
        validity = store.mailbox(ALICE).uidValidity()
        store.importMailbox(ALICE, INBOX, None, [imported(None, b"new\r\n")])
        snap = store.mailbox(ALICE).snapshot()
        assert snap.uidValidity == validity and [m.uid for m in snap.messages] == [1, 2]

    def test_newMailboxNeverGetsAnImportedValidity(self, store):
        """
        If this fails, a folder created after an import may share a
        UIDVALIDITY with an imported one (RFC 3501 2.3.1.1).
        """
        high = 2**32 - 5
        store.importMailbox(ALICE, "Old", high, [])
        store.createMailbox(ALICE, "New")
        assert store.mailbox(ALICE, "New").uidValidity() not in (high,)
        assert store.mailbox(ALICE, "New").uidValidity() > high


def writeOldMaildir(root):
    """
    The previous version's Maildir for alice, written by its own store:
    deliveries, flags, keywords, subfolders, an expunge (a UID gap), and
    one delivery no scan has indexed yet.  @return: the MaildirStore.
    """
    old = MaildirStore(root, "mx.example.org")
    for i in range(4):
        old.deliver(ALICE, b"Received: old\r\n", io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % i))
    inbox = old.mailbox(ALICE)
    inbox.snapshot(claimRecent=True)
    inbox.storeFlags([1], "add", {"\\Seen", "$Important"})
    inbox.storeFlags([3], "add", {"\\Flagged", "\\Answered", "Work"})
    inbox.expunge([2])
    old.createMailbox(ALICE, "a/b.c")
    old.mailbox(ALICE, "a/b.c").append(io.BytesIO(b"Subject: deep\r\n\r\nx\r\n"),
                                       {"\\Seen", "Deep"}, 1_500_000_000.0)
    old.mailbox(ALICE, "Sent").append(io.BytesIO(b"Subject: sent\r\n\r\ny\r\n"), {"\\Seen"})
    old.createMailbox(ALICE, "Caf\u00e9")
    old.subscribe(ALICE, "a/b.c")
    old.deliver(ALICE, b"", io.BytesIO(b"Subject: late\r\n\r\nz\r\n"))  # in new/, no UID yet
    return old


def test_previous_version_maildir_imports_whole(tmp_path):
    """
    If this fails, mail kept by the previous version is lost or changed on
    the move: a message, a flag, a keyword, a folder, a date, or the UIDs
    and UIDVALIDITY that spare clients a full download.
    """
    old = writeOldMaildir(tmp_path / "mail")
    before = view(old, ALICE)  # the old store's own reading (it indexes the late delivery)
    new = SQLiteStore(tmp_path / "store")
    importMailboxes(new, ALICE, readMaildirTree(old._userDir(ALICE)))
    assert view(new, ALICE) == before
    assert before[INBOX][2][0][1] == {"\\Seen", "$Important"}
    assert [m[0] for m in before[INBOX][2]] == [1, 3, 4, 5]


def test_unindexed_delivery_gets_next_uid(tmp_path):
    """
    If this fails, mail delivered to the old Maildir after its last scan
    is lost on the move, or takes a UID a client already knows.
    """
    old = MaildirStore(tmp_path / "mail", "mx.example.org")
    old.deliver(ALICE, b"", io.BytesIO(b"one\r\n"))
    old.mailbox(ALICE).snapshot()
    old.deliver(ALICE, b"", io.BytesIO(b"two\r\n"))  # not scanned
    new = SQLiteStore(tmp_path / "store")
    importMailboxes(new, ALICE, readMaildirTree(old._userDir(ALICE)))
    inbox = new.mailbox(ALICE)
    assert inbox.uidValidity() == old.mailbox(ALICE).uidValidity()
    assert [(m.uid, inbox.openMessage(m.uid).read()) for m in inbox.messages()] == [
        (1, b"one\r\n"), (2, b"two\r\n")]


def writeDovecotMaildir(root):
    """A Maildir as Dovecot 2.3 leaves it: uidlist v3, keywords, LF line ends."""
    def message(folder, sub, name, data, mtime):
        path = root / folder / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))

    for folder in ("", ".Sent", ".Lists.python", ".Caf&AOk-"):
        for sub in ("cur", "new", "tmp"):
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
    message("", "cur", "1600000000.M1P1.host,S=20,W21:2,Sa", b"Subject: a\n\nline\n",
            1_600_000_000)
    message("", "cur", "1600000100.M2P1.host,S=20,W21:2,RSb", b"Subject: b\n\nline\n",
            1_600_000_100)
    message("", "new", "1600000200.M3P1.host", b"Subject: c\n\nline\n", 1_600_000_200)
    (root / "dovecot-uidlist").write_text(
        "3 V1445000000 N43 Gabcdef0123456789\n"
        "17 W21 S20 :1600000000.M1P1.host,S=20,W21\n"
        "42 :1600000100.M2P1.host,S=20,W21:2,RS\n")
    (root / "dovecot-keywords").write_text("0 $Forwarded\n1 NonJunk\n")
    message(".Sent", "cur", "1600000300.M4P1.host:2,S", b"Subject: s\n\nsent\n", 1_600_000_300)
    (root / ".Sent" / "dovecot-uidlist").write_text("3 V1445000001 N8\n7 :1600000300.M4P1.host\n")
    message(".Lists.python", "cur", "1600000400.M5P1.host:2,", b"Subject: p\n\n>From x\n",
            1_600_000_400)
    (root / "subscriptions").write_text("V\t2\n\nSent\n")


def test_dovecot_maildir_keeps_uids_and_keywords(tmp_path):
    """
    If this fails, users moving from Dovecot lose flags or keywords, or
    their clients see new UIDs and download every message again.
    """
    writeDovecotMaildir(tmp_path / "dovecot")
    store = SQLiteStore(tmp_path / "store")
    importMailboxes(store, ALICE, readMaildirTree(tmp_path / "dovecot"))
    got = view(store, ALICE)
    validity, uidNext, inbox = got[INBOX]
    assert (validity, uidNext) == (1445000000, 44)
    assert [(uid, flags, date) for uid, flags, date, _ in inbox] == [
        (17, {"\\Seen", "$Forwarded"}, 1_600_000_000),
        (42, {"\\Answered", "\\Seen", "NonJunk"}, 1_600_000_100),
        (43, frozenset(), 1_600_000_200)]
    assert inbox[0][3] == b"Subject: a\r\n\r\nline\r\n"
    assert got["Sent"][0] == 1445000001 and [m[0] for m in got["Sent"][2]] == [7]
    assert got["Lists/python"][2][0][3] == b"Subject: p\r\n\r\n>From x\r\n"
    assert "Caf\u00e9" in got


MBOX = b"""\
From alice@example.org Mon Jan  1 10:00:00 2024
Subject: one
Status: RO
X-Status: AF

>From here the body starts
>>From twice quoted

From bob@example.org  Tue Jan  2 10:00:00 2024
Subject: two

second
"""


def test_mbox_import(tmp_path):
    """
    If this fails, mail from an mbox (Thunderbird, mutt, an old spool)
    arrives split wrongly, with quoted From lines, bare LFs, or without
    its read/answered/flagged state and date.
    """
    path = tmp_path / "inbox.mbox"
    path.write_bytes(MBOX)
    store = SQLiteStore(tmp_path / "store")
    store.deliver(ALICE, b"", io.BytesIO(b"already here\r\n"))
    importMailboxes(store, ALICE, [readMbox(path)])
    [_, first, second] = view(store, ALICE)[INBOX][2]
    assert first[0] == 2 and first[1] == {"\\Seen", "\\Answered", "\\Flagged"}
    assert first[2] == 1704103200
    assert first[3] == (b"Subject: one\r\nStatus: RO\r\nX-Status: AF\r\n\r\n"
                        b"From here the body starts\r\n>From twice quoted\r\n")
    assert second[1:] == (frozenset(), 1704189600, b"Subject: two\r\n\r\nsecond\r\n")


def test_export_reads_in_python_and_imports_back_equal(tmp_path):
    """
    If this fails, an exported Maildir is not one mutt/Dovecot/Python can
    read, or a round trip through it loses a message, flag, keyword,
    folder, date, UID or UIDVALIDITY.
    """
    store = SQLiteStore(tmp_path / "store")
    importMailboxes(store, ALICE, readMaildirTree(writeOldMaildir(tmp_path / "mail")
                                                  ._userDir(ALICE)))
    exportMaildir(store, ALICE, tmp_path / "out")
    md = mailbox.Maildir(tmp_path / "out", factory=None, create=False)
    assert {"Sent", "a.b%2Ec", "Caf&AOk-"} <= set(md.list_folders())
    flags = sorted(m.get_flags() for m in md)
    assert flags == sorted(["Sa", "FRb", "", ""])  # $Important is a, Work b
    assert (tmp_path / "out" / "dovecot-keywords").read_text() == "0 $Important\n1 Work\n"
    again = SQLiteStore(tmp_path / "again")
    importMailboxes(again, ALICE, readMaildirTree(tmp_path / "out"))
    assert view(again, ALICE) == view(store, ALICE)


def test_cli_import_export_and_first_start_migration(tmp_path):
    """
    If this fails, an administrator upgrading loses access to the mail
    the previous version kept (it is not moved at the first start on the
    SQLite store, or is moved twice), IMAP shows other UIDs or flags than
    before, or `pymailer import`/`export` do not work.
    """
    server = MailServer(tmp_path, roles=("imap",),
                        sections={"storage": {"backend": "sqlite"},
                                  "auth": {"allow_plaintext_on_loopback": True}})
    server.dataDir.mkdir()
    old = writeOldMaildir(server.dataDir / "mail")
    before = view(old, ALICE)
    server.provision()
    assert (server.dataDir / LEGACY_DONE).is_dir() and not (server.dataDir / "mail").exists()
    with server.start():
        with IMAPClient("127.0.0.1", server.ports["imap"], ssl=False) as imap:
            imap.login(ALICE, PASSWORD)
            for name, (validity, uidNext, messages) in before.items():
                status = imap.select_folder(name)
                assert status[b"UIDVALIDITY"] == validity and status[b"UIDNEXT"] == uidNext
                fetched = imap.fetch(imap.search(), ["UID", "FLAGS", "BODY.PEEK[]"]) if messages else {}
                assert sorted((uid, {x.decode() for x in f[b"FLAGS"]}, f[b"BODY[]"])
                              for uid, f in fetched.items()) == [
                    (uid, set(flags), data) for uid, flags, _, data in messages]
            assert imap.list_sub_folders() and "a/b.c" in [
                f[2] for f in imap.list_sub_folders()]
        # And the admin command, while the server runs.
        mbox = tmp_path / "x.mbox"
        mbox.write_bytes(MBOX)
        result = server.admin("import", "mbox", ALICE, str(mbox), "--folder", "Old mail")
        assert "Old mail: 2 messages imported" in result.stdout
        server.admin("export", "maildir", ALICE, str(tmp_path / "out"))
        assert len(mailbox.Maildir(tmp_path / "out", create=False)
                   .get_folder("Old mail")) == 2
    # The second start imports nothing again.
    server.start().stop()
    assert len(SQLiteStore(server.dataDir / "store").mailbox(ALICE).messages()) == 4


def test_first_start_import_resumes_after_a_failure(tmp_path, monkeypatch):
    """
    If this fails, a first start that dies half-way through moving the old
    Maildirs (a full disk, a kill) leaves the rest of the mail behind for
    good, or doubles what had moved when it runs again.
    """
    old = MaildirStore(tmp_path / "mail", "mx.example.org")
    for user in (ALICE, "bob@example.org"):
        for i in range(3):
            old.deliver(user, b"", io.BytesIO(b"%s %d\r\n" % (user.encode(), i)))
    store = SQLiteStore(tmp_path / "store")
    real = SQLiteStore.importMailbox

    def failOnBob(self, user, *args):
        if user == "bob@example.org":
            raise OSError("disk full")
        return real(self, user, *args)

    monkeypatch.setattr(SQLiteStore, "importMailbox", failOnBob)
    with pytest.raises(OSError):
        migrateLegacyMaildirs(store, tmp_path, "mx.example.org")
    monkeypatch.setattr(SQLiteStore, "importMailbox", real)
    assert migrateLegacyMaildirs(SQLiteStore(tmp_path / "store"), tmp_path,
                                 "mx.example.org") == 3  # bob's; alice's were in
    legacy = MaildirStore(tmp_path / LEGACY_DONE, "mx.example.org")
    for user in (ALICE, "bob@example.org"):
        assert view(store, user)[INBOX] == view(legacy, user)[INBOX]
    assert migrateLegacyMaildirs(store, tmp_path, "mx.example.org") == 0


DELIVERY_LOOP = textwrap.dedent("""
    import io, sys
    from pymailer.store.sqlite import SQLiteStore
    store = SQLiteStore(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        store.deliver("alice@example.org", b"", io.BytesIO(b"Subject: %d\\r\\n\\r\\nx\\r\\n" % i))
        if i % 3 == 0:
            box = store.mailbox("alice@example.org")
            box.expunge([m.uid for m in box.messages()[:2]])
""")


def test_backup_while_mail_arrives(tmp_path):
    """
    If this fails, a backup taken while the server works is unusable: the
    database copy does not open, or names messages whose content it lacks.
    """
    root = tmp_path / "data" / "store"
    SQLiteStore(root)
    child = subprocess.Popen([sys.executable, "-c", DELIVERY_LOOP, str(root)],
                             stdout=subprocess.PIPE, env=subprocessEnv())
    try:
        assert child.stdout.readline() == b"ready\n"
        store = SQLiteStore(root)
        while len(store.mailbox(ALICE).messages()) < 20:
            pass  # the loop runs: real deliveries, not a sleep
        for n in range(3):
            messages, blobs = store.backup(tmp_path / f"backup{n}")
            copy = tmp_path / f"backup{n}"
            assert sqlite3.connect(copy / "index.sqlite").execute(
                "PRAGMA integrity_check").fetchone() == ("ok",)
            restored = SQLiteStore(copy)
            infos = restored.mailbox(ALICE).messages()
            assert len(infos) == messages > 0
            for info in infos:
                with restored.mailbox(ALICE).openMessage(info.uid) as content:
                    assert content.read().startswith(b"Subject: ")
    finally:
        child.kill()
        child.wait()


def test_cli_backup(cli, conf):
    """If this fails, `pymailer backup DIR` does not make a store that opens."""
    conf.write_text(conf.read_text() + '\n[storage]\nbackend = "sqlite"\n')
    code, out, err = cli("import", "mbox", ALICE, os.devnull)
    assert code == 0, err
    store = SQLiteStore(conf.parent / "data" / "store")
    store.deliver(ALICE, b"", io.BytesIO(b"kept\r\n"))
    code, out, err = cli("backup", str(conf.parent / "bk"))
    assert (code, err) == (0, "") and "1 messages" in out
    with SQLiteStore(conf.parent / "bk").mailbox(ALICE).openMessage(1) as content:
        assert content.read() == b"kept\r\n"
    code, out, err = cli("backup", str(conf.parent / "bk"))
    assert code == 1 and "exists" in err
