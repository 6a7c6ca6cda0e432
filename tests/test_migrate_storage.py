"""
C{pymailer migrate-storage --to postgresql DSN}
(L{pymailer.pg.migrate_storage}), run in-process on installations built
through the SQLite backends' own interfaces, against a throwaway
PostgreSQL cluster: what moves, what is refused, and that an interrupted
run resumes.  The whole path through real servers and clients is in
L{test_e2e_migrate_storage}.
"""

import io
import time

import pytest

from pymailer.auth.directory import SQLiteAccountDirectory
from pymailer.auth.passwords import hashPassword
from pymailer.config import StorageConfig
from pymailer.envelope import Envelope, Recipient
from pymailer.pg.pool import openPool
from pymailer.policy import dkimkeys
from pymailer.queue.spool_files import Spool
from pymailer.queue.spool_pg import PostgreSQLSpool
from pymailer.store.postgresql import PostgreSQLStore
from pymailer.store import sqlite as sqliteModule
from pymailer.store.sqlite import SQLiteStore


_opened = []


@pytest.fixture(autouse=True)
def _closePools():
    """The command's pools (one per process) and the tests' end with each test."""
    from pymailer.pg.pool import closePools

    yield
    closePools()
    while _opened:
        _opened.pop().close()


def pool(dsn):
    """A pool on the target database, closed after the test."""
    _opened.append(openPool(StorageConfig("postgresql", dsn, 2)))
    return _opened[-1]


@pytest.fixture
def dataDir(tmp_path):
    return tmp_path / "data"


def message(subject, body=b"body\r\n"):
    return io.BytesIO(f"From: a@b.example\r\nSubject: {subject}\r\n\r\n".encode() + body)


def install(dataDir, users=("alice@example.org", "bob@example.org")):
    """An installation: accounts, mail with flags and folders, a queue, a DKIM key."""
    directory = SQLiteAccountDirectory(dataDir / "accounts.sqlite3")
    directory.addDomain("example.org")
    for user in users:
        directory.addUser(user, hashPassword("secret"))
    directory.setQuota(users[0], 10_000_000)
    directory.addAlias("team@example.org", list(users))
    directory.close()
    store = SQLiteStore(dataDir / "store")
    for user in users:
        # The first user's small messages are kept in the index's rows,
        # the others' in files, as a store from before that kept them.
        store.inlineLimit = sqliteModule.INLINE_LIMIT if user == users[0] else 0
        store.createUser(user)
        for i in range(3):
            store.deliver(user, b"", message(f"{user} {i}"))
    box = store.mailbox(users[0])
    box.storeFlags([1], "add", ["\\Seen", "$Label1"])
    box.expunge([2])
    store.createMailbox(users[0], "Projects")
    store.subscribe(users[0], "Projects")
    box.copy([3], store.mailbox(users[0], "Projects"))
    # A large message: several chunks in PostgreSQL.
    store.deliver(users[0], b"", message("big", b"x" * 700_000 + b"\r\n"))
    spool = Spool(dataDir / "queue")
    queued = spool.inject(message("queued"), sender="alice@example.org",
                          recipients=(Recipient(0, "someone@remote.example", attempts=2,
                                                lastError="451 try later"),),
                          receivedAt=time.time() - 3600)
    spool.hold(queued)
    dkimkeys.generateKeys(dataDir, "example.org", "k1")
    return store, queued


def snapshot(store, user):
    """What an IMAP client that had synced knows of each mailbox."""
    seen = {}
    for name in store.listMailboxes(user):
        box = store.mailbox(user, name)
        messages = []
        for info in box.messages():
            with box.openMessage(info.uid) as content:
                data = content.readAt(0, content.size)
            messages.append((info.uid, sorted(info.flags), info.internalDate, info.modseq,
                             info.saveDate, data))
        seen[name] = (box.uidValidity(), box.uidNext(), box.highestModSeq(), box.mailboxId(),
                      box.emailIds([m[0] for m in messages]), messages)
    return seen, store.subscriptions(user)


def migrate(cli, dsn, *options):
    return cli("migrate-storage", "--to", "postgresql", dsn, *options)


def pgStore(dsn):
    return PostgreSQLStore(pool(dsn))


def test_everythingMovesAsItWas(cli, dataDir, postgresqlDSN):
    """
    Accounts, mail (UIDs, UIDVALIDITY, MODSEQs, flags, keywords, dates,
    MAILBOXIDs and EMAILIDs, content), subscriptions, the held queued
    message and the DKIM key are in PostgreSQL exactly as they were:
    otherwise clients would download everything again, users could not log
    in, or queued mail would be lost.
    """
    store, queued = install(dataDir)
    before = {user: snapshot(store, user) for user in ("alice@example.org", "bob@example.org")}
    code, out, err = migrate(cli, postgresqlDSN)
    assert (code, err) == (0, "")
    assert "directory: 1 domains, 2 users" in out
    assert "account alice@example.org: 7 mailboxes, 4 messages" in out  # with Projects
    assert "queue: 1 messages: 1 hold" in out
    assert "verified:" in out
    target = pgStore(postgresqlDSN)
    after = {user: snapshot(target, user) for user in before}
    assert after == before
    target = pool(postgresqlDSN)
    from pymailer.auth.directory_pg import PostgreSQLAccountDirectory

    directory = PostgreSQLAccountDirectory(target)
    assert directory.passwordHash("alice@example.org") == SQLiteAccountDirectory(
        dataDir / "accounts.sqlite3").passwordHash("alice@example.org")
    assert directory.quota("alice@example.org") == 10_000_000
    assert sorted(directory.aliasTargets("team@example.org")) == [
        "alice@example.org", "bob@example.org"]
    entry = PostgreSQLSpool(target).show(queued)
    assert entry.state == "hold"
    recipient = Envelope.fromJSON(entry.raw).recipients[0]
    assert (recipient.address, recipient.attempts, recipient.lastError) == (
        "someone@remote.example", 2, "451 try later")
    with PostgreSQLSpool(target).openData(queued) as f:
        assert b"Subject: queued" in f.read()
    from pymailer.pg.dkimkeys import PostgreSQLKeys

    assert PostgreSQLKeys(target).load("example.org") == dkimkeys.loadSigningKeys(
        dataDir, "example.org")


def test_runTwiceMovesNothingMore(cli, dataDir, postgresqlDSN):
    """
    A second run finds everything moved and only verifies: otherwise an
    administrator who runs the command again (unsure it finished) would
    get duplicates or an error.
    """
    install(dataDir)
    assert migrate(cli, postgresqlDSN)[0] == 0
    code, out, err = migrate(cli, postgresqlDSN)
    assert (code, err) == (0, "")
    assert "account alice@example.org: moved before" in out
    assert "queue: 0 messages (1 moved before)" in out
    with pgStore(postgresqlDSN).pool.connection() as db:
        assert db.execute("SELECT count(*) FROM mailstore.messages").fetchone()[0] == 7


def test_interruptedRunResumes(cli, dataDir, postgresqlDSN):
    """
    A damaged message file stops the run with the account it belongs to
    left out whole, and once repaired a second run moves the rest: a
    failure never leaves an account half moved, and nothing is done twice.
    """
    store, _ = install(dataDir)
    box = store.mailbox("bob@example.org")
    path = store.blobs.path(_blobOf(store, box, 1))
    good = path.read_bytes()
    path.chmod(0o600)
    path.write_bytes(b"damaged")
    code, out, err = migrate(cli, postgresqlDSN)
    assert code == 1 and "does not match its name or size" in err
    assert "account alice@example.org: " in out
    target = pgStore(postgresqlDSN)
    with target.pool.connection() as db:
        names = [n for (n,) in db.execute("SELECT name FROM mailstore.users")]
    assert names == ["alice@example.org"]
    path.write_bytes(good)
    code, out, err = migrate(cli, postgresqlDSN)
    assert (code, err) == (0, ""), out
    assert "account alice@example.org: moved before" in out
    assert "account bob@example.org: " in out and "verified:" in out
    assert [info.uid for info in target.mailbox("bob@example.org").messages()] == [1, 2, 3]


def _blobOf(store, box, uid):
    return store._read("SELECT blob FROM messages WHERE mailboxId = ? AND uid = ?",
                       (box._id, uid)).fetchone()[0]


def test_refusesDatabaseWithOtherData(cli, dataDir, postgresqlDSN, tmp_path):
    """
    A database that holds other pymailer data (nodes already running on
    it, or another installation moved in) is refused, naming what it
    holds: otherwise two installations' accounts and UIDs would mix.
    """
    install(dataDir)
    other = tmp_path / "other"
    other.mkdir()
    (other / "pymailer.toml").write_text('hostname = "x.example"\ndata_dir = "data"\n')
    install(other / "data", users=("carol@example.org",))
    from pymailer.cli import main

    assert main(["--config", str(other / "pymailer.toml"), "migrate-storage", "--to",
                 "postgresql", postgresqlDSN]) == 0
    code, out, err = migrate(cli, postgresqlDSN)
    assert code == 1
    assert "filled from another installation" in err
    assert "migrate-storage moves into an empty database" in err


def test_refusesNonEmptyDatabase(cli, dataDir, postgresqlDSN):
    """
    A database where nodes already keep accounts is refused, saying what
    it holds.
    """
    install(dataDir)
    from pymailer.auth.directory_pg import PostgreSQLAccountDirectory
    from pymailer.pg.pool import connect
    from pymailer.pg.schema import migrate as migrateSchema

    with connect(postgresqlDSN) as db:
        migrateSchema(db)
    PostgreSQLAccountDirectory(pool(postgresqlDSN)
                               ).addDomain("elsewhere.example")
    code, out, err = migrate(cli, postgresqlDSN)
    assert code == 1
    assert "already holds pymailer data (1 domains)" in err


def test_serverLockRefusesBoth(dataDir):
    """
    While a server holds its data directory the migration is refused, and
    a server cannot start while a migration runs: otherwise mail accepted
    meanwhile would be left behind.
    """
    import subprocess
    import sys

    from pymailer import serverlock

    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pymailer import serverlock;"
         f"serverlock.holdForServer({str(dataDir)!r}); print('held', flush=True);"
         " sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n"
        with pytest.raises(serverlock.DataDirectoryBusy, match="server is running"):
            with serverlock.exclusive(dataDir):
                pass
    finally:
        child.stdin.close()
        child.wait()
    with serverlock.exclusive(dataDir):
        code = subprocess.run(
            [sys.executable, "-c", "from pymailer import serverlock;"
             f"serverlock.holdForServer({str(dataDir)!r})"], capture_output=True, text=True)
        assert code.returncode == 1 and "being moved to another storage backend" in code.stderr


def test_contentIntoSharedDirectory(cli, dataDir, postgresqlDSN, tmp_path):
    """
    With --blobs the content goes into the nodes' shared directory, hard
    linked (no copy on one file system), not into the database, and a
    store with [storage] blobs on that directory serves the same mail:
    otherwise a large installation would have to push all its mail
    through the database to use a shared directory.
    """
    store, _ = install(dataDir)
    before = snapshot(store, "alice@example.org")
    shared = tmp_path / "shared"
    code, out, err = migrate(cli, postgresqlDSN, "--blobs", str(shared))
    assert (code, err) == (0, ""), out
    assert f"content in {shared}" in out and f'blobs = "{shared}"' in out
    target = PostgreSQLStore(pool(postgresqlDSN),
                             blobDirectory=shared)
    with target.pool.connection() as db:
        assert db.execute("SELECT count(*) FROM mailstore.blob_chunks").fetchone()[0] == 0
        blobIds = [b for (b,) in db.execute("SELECT id FROM mailstore.blobs")]
    files = [b for b in blobIds if store.blobs.path(b).exists()]
    assert 0 < len(files) < len(blobIds)  # the rest was kept in the index's rows
    assert all(target.blobs.path(b).stat().st_ino == store.blobs.path(b).stat().st_ino
               for b in files)
    assert all(target.blobs.path(b).exists() for b in blobIds)
    assert snapshot(target, "alice@example.org") == before


def test_verificationNamesWhatDiffers(cli, dataDir, postgresqlDSN):
    """
    A run that finds the database different from the source (a flag lost,
    a row changed since) fails naming the mailbox: otherwise "verified"
    would be printed over mail that did not arrive as it was.
    """
    install(dataDir)
    assert migrate(cli, postgresqlDSN)[0] == 0
    with pool(postgresqlDSN).connection() as db:
        db.execute("UPDATE mailstore.messages SET system = '' WHERE system != ''")
    code, out, err = migrate(cli, postgresqlDSN)
    assert code == 1
    assert err == ("pymailer: error: verification failed: alice@example.org INBOX:"
                   " differs in the database\n")
