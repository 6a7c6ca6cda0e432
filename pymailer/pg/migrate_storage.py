"""
C{pymailer migrate-storage --to postgresql DSN}: move an embedded
installation (C{[storage] backend = "sqlite"}) into PostgreSQL, so that
the same mail is served by nodes on C{backend = "postgresql"}.

What moves, exactly as it is (no client notices the move):
 - the accounts directory (C{accounts.sqlite3}): domains and catch-alls,
   users with their password hashes, admin and disabled flags and quotas,
   aliases and forwarding;
 - DKIM keys (C{data_dir/dkim}) into the database (L{pymailer.pg.dkimkeys}),
   where every node signs with them;
 - the message store (C{store/index.sqlite} and its blob files): per user
   the C{UIDVALIDITY} counter, mailboxes with their UIDVALIDITY, UIDNEXT,
   HIGHESTMODSEQ, keywords, special uses and MAILBOXIDs; subscriptions;
   messages with their UIDs, MODSEQs, flags, internal and save dates;
   expunge records (QRESYNC's VANISHED); the content, checked against its
   SHA-256 name while it is copied; the cached summaries; and the key
   EMAILIDs are derived with, so that they stay the same;
 - the queue (C{data_dir/queue}): every message with its envelope (the
   recipients' attempts, errors and due times), its state (held mail stays
   held) and its next try.  A message a runner was delivering when the
   server stopped is moved as a lapsed claim: the next node that claims it
   knows a delivery may have been made (duplicate checks), as with a node
   that died.

What stays in C{data_dir}, node-local (L{LEFT_BEHIND}): transient counters
and sessions, and state the PostgreSQL backend does not share yet.

All or nothing, per part: the directory with the DKIM keys and the
settings is one transaction, each account one, each queued message one.
Resumable: an interrupted run is run again; what is in the database
(an account's user row, a queue id) was committed whole and is skipped.
The database records which installation it was filled from
(C{mailstore.settings}): a database holding other pymailer data is
refused, and so is a second run once everything is in (nothing to do but
verify again).  There is no C{--force}: to start over, make a new, empty
database.

The schema is migrated first (as C{pymailer db migrate}, safe beside nodes
doing it too).  The source is never changed (apart from the SQLite files'
own in-place upgrades, which the server would make at its next start),
so going back is switching the configuration back.

Blocking throughout; run with the server stopped (L{pymailer.serverlock}).
"""

import hashlib
import io
import os
import sqlite3
from dataclasses import dataclass, field

from pymailer.fsutil import fsyncDirectory
from pymailer.auth.directory import ACCOUNTS_FILENAME, SQLiteAccountDirectory
from pymailer.pg.dkimkeys import PostgreSQLKeys
from pymailer.pg.pool import connect
from pymailer.pg.schema import migrate
from pymailer.policy import dkimkeys
from pymailer.queue.model import ACTIVE, CORRUPT, STATES, NoSuchMessage
from pymailer.store.postgresql import CHUNK as BLOB_CHUNK
from pymailer.queue.spool_pg import CHUNK as QUEUE_CHUNK

# Files and directories of data_dir that stay with this node, and why.
LEFT_BEHIND = (
    ("spam/", "spam filter training and verdicts (not shared by PostgreSQL nodes yet)"),
    ("greylist.sqlite", "greylisting triplets (per node: a retry on another node waits again)"),
    ("tls/", "the self-signed certificate, if any (each node keeps its own)"),
    ("monitoring.sqlite", "this node's monitoring history"),
    ("limits.sqlite, web sessions", "rate-limit counters and web logins: transient"),
)

SOURCE_KEY = "migratedFrom"   # mailstore.settings: the installation moved in
DONE_KEY = "migrationVerified"  # mailstore.settings: set once verified
# The claimer name of a message being delivered when the server stopped.
CLAIMER = "pymailer migrate-storage"
_ROWS = 500  # message rows sent to PostgreSQL at a time


class MigrationError(Exception):
    """The migration cannot go on: one line saying why and what to do."""


@dataclass
class Moved:
    """What a run moved (and skipped, having moved it before)."""

    domains: int = 0
    users: int = 0
    aliases: int = 0
    dkimKeys: int = 0
    queued: dict = field(default_factory=dict)   # state -> messages
    accounts: list = field(default_factory=list)  # (user, mailboxes, messages, octets)
    skippedAccounts: int = 0
    skippedQueued: int = 0
    blobs: int = 0


def _sqlite(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    db.execute("PRAGMA query_only = 1")
    return db


class StorageMigration:
    """
    One run: C{config}'s data directory into the PostgreSQL database at
    C{dsn}, reporting to C{out} line by line.
    """

    def __init__(self, config, dsn, out, blobDirectory=None):
        """
        @param blobDirectory: the directory the nodes will share for
            message content (C{[storage] blobs}): the content goes there,
            hard-linked when on the same file system, instead of into the
            database.
        """
        self.config = config
        self.dsn = dsn
        self.out = out
        self.dataDir = config.data_dir
        self.moved = Moved()
        self.blobFiles = None
        self._unsynced = set()  # directories of links made, to fsync before the commit
        if blobDirectory is not None:
            from pymailer.store.blobs import BlobStore

            self.blobFiles = BlobStore(blobDirectory)

    def say(self, line):
        print(line, file=self.out, flush=True)

    # -- the whole run ------------------------------------------------------

    def run(self):
        """
        @return: the L{Moved} counts.
        @raise MigrationError: refused, or verification failed.
        """
        store = self._openSourceStore()
        with connect(self.dsn) as db:
            before, after = migrate(db)
            if before != after:
                self.say(f"schema: version {before} -> {after}")
            source = self._sourceId(store)
            resuming = self._checkTarget(db, source)
            if resuming:
                # The directory went in with the marker, in one transaction.
                self.say("resuming: what an earlier run committed is kept;"
                         " directory and DKIM keys: moved before")
            else:
                self._moveDirectory(db, source, store)
            self._moveQueue(db)
            self._moveAccounts(db, store)
            self._verify(db, store)
            with db.transaction():  # for the record: when it was first complete
                db.execute("INSERT INTO mailstore.settings (name, value) VALUES (%s, now()::text)"
                           " ON CONFLICT (name) DO NOTHING", (DONE_KEY,))
        return self.moved

    def _openSourceStore(self):
        if self.config.storage.backend != "sqlite":
            raise MigrationError(
                f'[storage] backend = "{self.config.storage.backend}": migrate-storage moves'
                ' the embedded SQLite store (backend = "sqlite"; a Maildir installation'
                " becomes one at its first start on sqlite)")
        from pymailer.store import openStore

        # Opened as the server's start opens it: its in-place upgrades run
        # (the rows below have today's columns), and the mail of the old
        # Maildir backend, if never started on since, comes in first.
        return openStore(self.config)

    def _sourceId(self, store):
        """This installation's name: its data directory and store key."""
        digest = hashlib.sha256(store.objectIdKey).hexdigest()[:16]
        return f"{os.path.abspath(self.dataDir)} {digest}"

    def _checkTarget(self, db, source):
        """
        @return: whether this resumes an earlier run from this source.
        @raise MigrationError: the database holds other data.
        """
        row = db.execute("SELECT value FROM mailstore.settings WHERE name = %s",
                         (SOURCE_KEY,)).fetchone()
        if row is not None:
            if row[0] != source:
                raise MigrationError(
                    f"the database was filled from another installation ({row[0]}):"
                    " migrate-storage moves into an empty database")
            return True
        held = []
        for table, what in (("domains", "domains"), ("users", "users"),
                            ("queue", "queued messages"), ("dkim_keys", "DKIM keys"),
                            ("mailstore.users", "mailbox owners"),
                            ("mailstore.messages", "messages")):
            (n,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
            if n:
                held.append(f"{n} {what}")
        if held:
            raise MigrationError(
                f"the database already holds pymailer data ({', '.join(held)}):"
                " migrate-storage moves into an empty database (there is no --force:"
                " create a new database to start over)")
        return False

    # -- the directory, DKIM keys, settings: one transaction ----------------

    def _directoryRows(self):
        path = self.dataDir / ACCOUNTS_FILENAME
        if not path.exists():
            return [], [], []
        SQLiteAccountDirectory(path).close()  # its upgrades: today's columns
        src = _sqlite(path)
        try:
            return (src.execute("SELECT name, catch_all FROM domains ORDER BY name").fetchall(),
                    src.execute("SELECT address, domain, password_hash, admin, disabled, quota"
                                " FROM users ORDER BY address").fetchall(),
                    src.execute("SELECT alias, target, domain FROM aliases"
                                " ORDER BY alias, target").fetchall())
        finally:
            src.close()

    def _keys(self):
        """The key files, each checked: a broken one is refused, not carried over."""
        keys = []
        for domain, selector, keyType, path in dkimkeys.keyFiles(self.dataDir):
            pem = path.read_bytes()
            try:
                dkimkeys.parseKey(pem, keyType, path)
            except dkimkeys.KeyFileError as e:
                raise MigrationError(f"{e}: fix or remove it, then run again") from None
            keys.append((domain, keyType, selector, pem))
        return keys

    def _moveDirectory(self, db, source, store):
        domains, users, aliases = self._directoryRows()
        keys = self._keys()
        with db.transaction():
            with db.cursor() as c:
                c.executemany("INSERT INTO domains (name, catch_all) VALUES (%s, %s)", domains)
                c.executemany(
                    "INSERT INTO users (address, domain, password_hash, admin, disabled,"
                    " quota) VALUES (%s, %s, %s, %s, %s, %s)",
                    [(a, d, h, bool(admin), bool(off), q) for a, d, h, admin, off, q in users])
                c.executemany("INSERT INTO aliases (alias, target, domain) VALUES (%s, %s, %s)",
                              aliases)
            shared = PostgreSQLKeys(None)
            for domain, keyType, selector, pem in keys:
                shared.store(domain, [(keyType, selector, pem)], db=db)
            # The key EMAILIDs are derived with: theirs stay the same.
            for name, value in (("objectIdKey", store.objectIdKey.hex()), (SOURCE_KEY, source)):
                db.execute(
                    "INSERT INTO mailstore.settings (name, value) VALUES (%s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", (name, value))
        self.moved.domains, self.moved.users = len(domains), len(users)
        self.moved.aliases, self.moved.dkimKeys = len(aliases), len(keys)
        self.say(f"directory: {len(domains)} domains, {len(users)} users (password hashes,"
                 f" flags, quotas), {len(aliases)} alias targets")
        self.say(f"DKIM keys: {len(keys)} ("
                 + (", ".join(f"{s}.{t} of {d}" for d, t, s, _ in keys) or "none") + ")")

    # -- the queue: a transaction per message --------------------------------

    def _moveQueue(self, db):
        root = self.dataDir / "queue"
        if not root.is_dir():
            self.say("queue: none")
            return
        from pymailer.queue.spool_files import Spool

        spool = Spool(root)
        for entry in spool.listMessages():
            queueId = entry.queueId
            if db.execute("SELECT 1 FROM queue WHERE queue_id = %s",
                          (queueId,)).fetchone():
                self.moved.skippedQueued += 1
                continue
            try:
                raw = spool.show(queueId).raw
            except NoSuchMessage:
                continue  # gone meanwhile (a removed orphan)
            self._moveQueued(db, spool, entry, raw)
            self.moved.queued[entry.state] = self.moved.queued.get(entry.state, 0) + 1
        counts = ", ".join(f"{n} {state}" for state, n in sorted(
            self.moved.queued.items(), key=lambda item: STATES.index(item[0])))
        skipped = (f" ({self.moved.skippedQueued} moved before)"
                   if self.moved.skippedQueued else "")
        self.say(f"queue: {sum(self.moved.queued.values())} messages"
                 f"{': ' + counts if counts else ''}{skipped}")

    def _moveQueued(self, db, spool, entry, raw):
        state = entry.state
        try:
            data = spool.openData(entry.queueId)
        except NoSuchMessage:
            # An envelope without its data cannot be delivered: kept for the
            # administrator to look at, as the file spool would.
            self.say(f"queue: {entry.queueId} has no data file: moved as corrupt")
            state, data = CORRUPT, None
        # Being delivered when the server stopped: a claim that has lapsed,
        # so the next claimer delivers it with duplicate checks.
        claimed = (CLAIMER, "-infinity", "incoming", entry.nextAttempt) if state == ACTIVE \
            else (None, None, None, None)
        try:
            with db.transaction():
                size = 0
                db.execute(
                    "INSERT INTO queue (queue_id, state, envelope, size, next_attempt,"
                    " claimed_by, lease_until, back_state, back_next, takeovers, hold_reason)"
                    " VALUES (%s, %s, %s, 0, %s, %s, %s, %s, %s, %s, %s)",
                    (entry.queueId, state, raw, entry.nextAttempt, *claimed,
                     entry.takeovers, entry.holdReason))
                if data is not None:
                    with db.cursor().copy(
                            "COPY queue_data (queue_id, seq, chunk) FROM STDIN") as copy:
                        seq = 0
                        while chunk := data.read(QUEUE_CHUNK):
                            copy.write_row((entry.queueId, seq, chunk))
                            size += len(chunk)
                            seq += 1
                db.execute("UPDATE queue SET size = %s WHERE queue_id = %s",
                           (size, entry.queueId))
        finally:
            if data is not None:
                data.close()

    # -- the message store: a transaction per account ------------------------

    def _moveAccounts(self, db, store):
        src = _sqlite(store.path)
        try:
            for userId, user, lastValidity, foldersMade in src.execute(
                    "SELECT id, name, lastValidity, foldersMade FROM users ORDER BY name"
            ).fetchall():
                if db.execute("SELECT 1 FROM mailstore.users WHERE name = %s",
                              (user,)).fetchone():
                    self.moved.skippedAccounts += 1
                    self.say(f"account {user}: moved before")
                    continue
                with db.transaction():
                    newId = db.execute(
                        "INSERT INTO mailstore.users (name, lastValidity, foldersMade)"
                        " VALUES (%s, %s, %s) RETURNING id",
                        (user, lastValidity, foldersMade)).fetchone()[0]
                    counts = self._moveAccount(db, src, store, userId, newId)
                    self._syncPlaced()
                self.moved.accounts.append((user, *counts))
                mailboxes, messages, octets = counts
                self.say(f"account {user}: {mailboxes} mailboxes, {messages} messages,"
                         f" {octets} octets")
        finally:
            src.close()

    def _moveAccount(self, db, src, store, userId, newId):
        """Inside the account's transaction. @return: (mailboxes, messages, octets)."""
        ids = {}
        for row in src.execute(
                "SELECT id, name, specialUse, uidValidity, uidNext, highestModSeq,"
                " firstRecent, keywords, objectId FROM mailboxes WHERE userId = ?",
                (userId,)).fetchall():
            ids[row[0]] = db.execute(
                "INSERT INTO mailstore.mailboxes (userId, name, specialUse, uidValidity,"
                " uidNext, highestModSeq, firstRecent, keywords, objectId)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (newId, *row[1:])).fetchone()[0]
        with db.cursor() as c:
            c.executemany(
                "INSERT INTO mailstore.subscriptions (userId, name) VALUES (%s, %s)",
                [(newId, name) for (name,) in src.execute(
                    "SELECT name FROM subscriptions WHERE userId = ?", (userId,))])
        inUser = "mailboxId IN (SELECT id FROM mailboxes WHERE userId = ?)"
        for blobId, refs, size in src.execute(
                f"SELECT m.blob, count(*), b.size FROM messages m JOIN blobs b ON b.id = m.blob"
                f" WHERE {inUser} GROUP BY m.blob", (userId,)):
            self._moveBlob(db, src, store, blobId, refs, size)
        messages = octets = 0
        rows = src.execute(
            "SELECT mailboxId, uid, key, modseq, system, letters, internalDate, size, blob,"
            f" uniqueKey, saveDate FROM messages WHERE {inUser}", (userId,))
        while batch := rows.fetchmany(_ROWS):
            with db.cursor() as c:
                c.executemany(
                    "INSERT INTO mailstore.messages (mailboxId, uid, key, modseq, system,"
                    " letters, internalDate, size, blob, uniqueKey, saveDate)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(ids[r[0]], *r[1:]) for r in batch])
            messages += len(batch)
            octets += sum(r[7] for r in batch)
        rows = src.execute(f"SELECT mailboxId, uid, modseq FROM expunged WHERE {inUser}",
                           (userId,))
        while batch := rows.fetchmany(_ROWS):
            with db.cursor() as c:
                c.executemany("INSERT INTO mailstore.expunged (mailboxId, uid, modseq)"
                              " VALUES (%s, %s, %s)", [(ids[r[0]], *r[1:]) for r in batch])
        return len(ids), messages, octets

    def _moveBlob(self, db, src, store, blobId, refs, size):
        """One content reference per message of this account; the octets once."""
        (inserted,) = db.execute(
            "INSERT INTO mailstore.blobs (id, refs, size) VALUES (%s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET refs = blobs.refs + EXCLUDED.refs"
            " RETURNING xmax = 0", (blobId, refs, size)).fetchone()
        if not inserted:
            return
        self.moved.blobs += 1
        (inline,) = src.execute("SELECT c.octets FROM blobs b LEFT JOIN contents c"
                                " ON c.id = b.contentId WHERE b.id = ?", (blobId,)).fetchone()
        if inline is not None:  # kept in the index, not a file (sqlite.InlineBlob)
            path, f = f"{blobId} (in index.sqlite)", io.BytesIO(inline)
        else:
            path = store.blobs.path(blobId)
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                raise MigrationError(f"message content {path} is missing: the store lost it"
                                     " (nothing of this account was moved)") from None
        with f:
            if self.blobFiles is not None:
                self._placeFile(f, path, blobId, size)
            else:
                self._copyChunks(db, f, path, blobId, size)
        summary = src.execute("SELECT * FROM summaries WHERE blob = ?", (blobId,)).fetchone()
        if summary is not None:
            # PostgreSQL's text holds no NUL (a header may): dropped, as the
            # PostgreSQL store does.
            row = tuple(v.replace("\x00", "") if isinstance(v, str) else v for v in summary)
            db.execute("INSERT INTO mailstore.summaries VALUES (" + ", ".join(["%s"] * len(row))
                       + ") ON CONFLICT (blob) DO NOTHING", row)

    @staticmethod
    def _damaged(path):
        return MigrationError(f"message content {path} does not match its name or size:"
                              " damaged on disk (nothing of this account was moved)")

    def _placeFile(self, f, path, blobId, size):
        """
        Into the shared directory, checked against its name first: a hard
        link (the same file system: no copy), else a copy, fsynced.  A run
        that fails after this leaves a file no row names, which the nodes'
        sweep removes (L{pymailer.store.sharedblobs}).
        """
        digest, seen = hashlib.sha256(), 0
        while chunk := f.read(BLOB_CHUNK):
            digest.update(chunk)
            seen += len(chunk)
        if digest.hexdigest() != blobId or seen != size:
            raise self._damaged(path)
        if isinstance(f, io.BytesIO):  # no file to link
            self._writeCopy(f)
            return
        target = self.blobFiles.path(blobId)
        try:
            target.parent.mkdir()
        except FileExistsError:
            pass
        else:  # the new directory's name must survive a crash too
            self._unsynced.add(self.blobFiles.root)
        try:
            os.link(path, target)
        except FileExistsError:
            pass
        except OSError:  # another file system
            self._writeCopy(f)
            return
        self._unsynced.add(target.parent)

    def _writeCopy(self, f):
        """C{f}'s octets written into the shared directory (fsynced), no temporary name left."""
        f.seek(0)
        written = self.blobFiles.write(b"", f)
        try:
            written.install()
        finally:
            written.discard()

    def _syncPlaced(self):
        """Before the account's commit: one fsync per directory linked into."""
        for directory in sorted(self._unsynced, key=lambda d: len(d.parts), reverse=True):
            fsyncDirectory(str(directory))
        self._unsynced.clear()

    def _copyChunks(self, db, f, path, blobId, size):
        digest, seen = hashlib.sha256(), 0
        with db.cursor().copy(
                "COPY mailstore.blob_chunks (blob, seq, chunk) FROM STDIN") as copy:
            seq = 0
            while chunk := f.read(BLOB_CHUNK):
                digest.update(chunk)
                copy.write_row((blobId, seq, chunk))
                seen += len(chunk)
                seq += 1
            if seq == 0:  # empty content is one empty chunk (ChunkedBlobs.open)
                copy.write_row((blobId, 0, b""))
        if digest.hexdigest() != blobId or seen != size:
            raise self._damaged(path)

    # -- checking -------------------------------------------------------------

    def _verify(self, db, store):
        """
        Compare the database with the source, count for count, mailbox for
        mailbox (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, messages, octets,
        highest UID, the sums of MODSEQs and of flag lengths, the user's
        subscriptions), and every blob's chunks (or file) with its size.
        """
        problems = []
        domains, users, aliases = self._directoryRows()
        for table, expected in (("domains", len(domains)), ("users", len(users)),
                                ("aliases", len(aliases)),
                                ("dkim_keys", len(dkimkeys.keyFiles(self.dataDir)))):
            (n,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
            if n != expected:
                problems.append(f"{table}: {n} in the database, {expected} here")
        queueRoot = self.dataDir / "queue"
        if queueRoot.is_dir():
            from pymailer.queue.spool_files import Spool

            here = {e.queueId for e in Spool(queueRoot).listMessages()}
            there = {q for (q,) in db.execute(
                "SELECT queue_id FROM queue WHERE queue_id = ANY(%s)", (list(here),))}
            if here - there:
                problems.append(f"queue: {len(here - there)} messages missing")
        summary = ("SELECT u.name, b.name, b.uidValidity, b.uidNext, b.highestModSeq,"
                   " count(m.uid), coalesce(sum(m.size), 0), coalesce(max(m.uid), 0),"
                   # MODSEQs and flags, summed: a cheap check of every row.
                   " coalesce(sum(m.modseq), 0),"
                   " coalesce(sum(length(m.system) + length(m.letters)), 0),"
                   " (SELECT count(*) FROM {p}subscriptions s WHERE s.userId = u.id)"
                   " FROM {p}users u JOIN {p}mailboxes b ON b.userId = u.id"
                   " LEFT JOIN {p}messages m ON m.mailboxId = b.id"
                   " GROUP BY u.id, u.name, b.name, b.uidValidity, b.uidNext, b.highestModSeq")
        src = _sqlite(store.path)
        try:
            here = {tuple(r) for r in src.execute(summary.format(p=""))}
        finally:
            src.close()
        there = {tuple(r) for r in db.execute(summary.format(p="mailstore."))}
        for row in sorted(here - there):
            problems.append(f"{row[0]} {row[1]}: differs in the database")
        mailboxes, messages = len(here), sum(r[5] for r in here)
        bad = self._incompleteContent(db)
        if bad:
            problems.append(f"{bad} message contents incomplete in the database")
        if problems:
            raise MigrationError("verification failed: " + "; ".join(problems))
        where = "" if self.blobFiles is None else f" (content in {self.blobFiles.root})"
        self.say(f"verified: {len(domains)} domains, {len(users)} users, {len(aliases)}"
                 f" alias targets, {mailboxes} mailboxes, {messages} messages"
                 " (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, messages, octets, MODSEQs, flags"
                 f" and subscriptions of each), every queued message and DKIM key{where}")

    def _incompleteContent(self, db):
        """How many blobs have neither their chunks nor a file of their size."""
        bad = 0
        for blobId, size, chunked, chunks in db.cursor().stream(
                "SELECT b.id, b.size, coalesce(sum(length(c.chunk)), 0), count(c.seq)"
                " FROM mailstore.blobs b LEFT JOIN mailstore.blob_chunks c ON c.blob = b.id"
                " GROUP BY b.id, b.size"):
            if chunks:
                bad += chunked != size
            elif self.blobFiles is None:
                bad += 1
            else:
                try:
                    bad += os.stat(self.blobFiles.path(blobId)).st_size != size
                except FileNotFoundError:
                    bad += 1
        return bad


def migrateStorage(config, dsn, out, blobDirectory=None):
    """
    Run L{StorageMigration} with the data directory to itself.

    @raise MigrationError: refused or failed (the message says what to do).
    @raise pymailer.serverlock.DataDirectoryBusy: a server runs on it.
    """
    from pymailer import serverlock

    with serverlock.exclusive(config.data_dir):
        moved = StorageMigration(config, dsn, out, blobDirectory).run()
    print("left in the data directory, per node:", file=out)
    for name, why in LEFT_BEHIND:
        print(f"  {name}: {why}", file=out)
    return moved
