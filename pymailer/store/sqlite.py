"""
The SQLite L{IMailStore}: metadata in one SQLite database in WAL mode
(C{data_dir/store/index.sqlite}), the single truth, and message content in
immutable, reference-counted blobs: small ones in the database, the others
in files (L{pymailer.store.blobs}).

Commands read the index, never the directories: C{snapshot()} is one query
over the mailbox's rows.  Every change is one C{BEGIN IMMEDIATE}
transaction (SQLite's single writer lock, shared by every process on the
file), so UIDs are assigned under a lock every process shares, and a
change is all there or not at all.

Content: a message up to L{INLINE_LIMIT} (most mail) is kept in the
database (C{contents}) and made durable by the commit itself (L{InlineBlob}).  A
larger one's blob is written to its name and fsynced, and its
directory fsynced (L{pymailer.store.blobs.BlobStore.place}; a very large one
through a temporary file, linked into place), all outside the lock; inside
the write transaction, before the commit, it is checked to be still there
(placed again if a removal of the same content came in between): the
commit never names content that a crash can lose.  A blob whose last
reference goes is removed after that commit is on disk; a crash in between
leaves an orphan that L{SQLiteStore.sweep} (run when a store is opened)
removes.

Durability, as Dovecot's default C{mail_fsync = optimized} ("fsync only
when it matters: new mail"): SQLite runs in WAL mode with C{synchronous =
NORMAL}, so a commit writes the WAL and does not wait for the disk.  A
commit that adds content (delivery, APPEND, COPY, MOVE, import; and
mailbox and account changes) is made durable before the call returns, by
an fsync of the WAL after the write lock is released; concurrent commits
share one (group commit, L{SQLiteStore._syncWal}), and deliveries and
IMAP's writes (STORE, EXPUNGE, APPEND, COPY, MOVE) that wait for the write
lock meanwhile share one transaction as well, a savepoint each
(L{SQLiteStore._writeShared}: fewer WAL pages per message, fewer commits
for ten sessions queued on one lock).  Flag changes,
expunges and the C{\\Recent} claim are not flushed: they are atomic, and
survive the process being killed (C{kill -9}: the WAL is in the kernel's
page cache), but an OS crash or a power loss before the next flush (the
next new message, a checkpoint) can undo the last of them: an expunged
message or an old flag comes back.  Mail acknowledged as received is never
lost.  Writers of one process queue on a lock of their own, and
processes on a file lock, before SQLite's, so they never poll in its busy
handler.

Other processes on the same C{data_dir} learn of changes through the
C{changes} table (one row per committed change, kept bounded), polled by
L{pymailer.store.notify.ChangeNotifier} only when C{PRAGMA data_version}
says somebody else committed (L{IExternalChanges}).

Trust: everything here comes from our own code; mailbox names and flags
from clients are validated (L{canonicalName}, L{Keywords}) before they
reach a query, and every query is parameterised.
"""

import fcntl
import hashlib
import hmac
import json
import operator
import os
import pathlib
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
from contextlib import contextmanager

from twisted.logger import Logger
from zope.interface import implementer

from pymailer.interfaces import (
    IExternalChanges, IMailbox, IMaildropLock, IMailImport, IMailStore)
from pymailer.store import (
    INBOX, SPECIAL_USE, Listeners, MailboxGone, MailboxSnapshot, MaildropLocked,
    MessageInfo, canonicalNameWithin, checkDeliveryKey, decodeSpecialUse, encodeSpecialUse,
    importPlan, importTarget, newObjectId, OBJECTID_DIGITS, renameMoves, specialUseOf,
)
from pymailer.fsutil import fsyncDirectory
from pymailer.sqlitedb import WriterLock
from pymailer.store.blobs import IN_PLACE_LIMIT, BlobStore
from pymailer.store.content import BytesContent
from pymailer.store.maildirindex import Keywords
from pymailer.message.summary import VERSION as SUMMARY_VERSION, Address, MessageSummary, summarize

log = Logger()

NAME_LIMIT = 1000                 # octets of UTF-8 in a mailbox name
SPOOL_IN_MEMORY = 1024 * 1024     # APPEND spools above this go to a file
BUSY_TIMEOUT_MS = 30_000          # another process holding the write lock
CHANGES_KEPT = 10_000             # rows of the change log other processes poll
UNSYNCED_FREED = 256              # freed blobs waiting for a durable commit, at most
# Content up to this size is kept in the database, not a file (InlineBlob).
INLINE_LIMIT = 64 * 1024
_SYSTEM = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
# SQLiteMailbox._infos builds MessageInfo tuples in this order.
if MessageInfo._fields != ("uid", "key", "flags", "size", "internalDate", "modseq", "path",
                           "saveDate"):
    raise ImportError("MessageInfo's fields changed: update SQLiteMailbox._infos")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    lastValidity INTEGER NOT NULL DEFAULT 0,
    foldersMade INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS mailboxes (
    id INTEGER PRIMARY KEY,
    userId INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    specialUse TEXT,
    uidValidity INTEGER NOT NULL,
    uidNext INTEGER NOT NULL DEFAULT 1,
    highestModSeq INTEGER NOT NULL DEFAULT 1,
    firstRecent INTEGER NOT NULL DEFAULT 1,
    keywords TEXT NOT NULL DEFAULT '[]',
    objectId TEXT,
    UNIQUE (userId, name)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    userId INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    PRIMARY KEY (userId, name)
);
CREATE TABLE IF NOT EXISTS messages (
    mailboxId INTEGER NOT NULL REFERENCES mailboxes(id),
    uid INTEGER NOT NULL,
    key TEXT NOT NULL,
    modseq INTEGER NOT NULL,
    system TEXT NOT NULL DEFAULT '',
    letters TEXT NOT NULL DEFAULT '',
    internalDate REAL NOT NULL,
    size INTEGER NOT NULL,
    blob TEXT NOT NULL REFERENCES blobs(id),
    uniqueKey TEXT,
    saveDate REAL,
    PRIMARY KEY (mailboxId, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messagesUniqueKey ON messages (mailboxId, uniqueKey)
    WHERE uniqueKey IS NOT NULL;
CREATE TABLE IF NOT EXISTS expunged (
    mailboxId INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailboxId, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    id TEXT PRIMARY KEY,
    refs INTEGER NOT NULL,
    size INTEGER NOT NULL,
    contentId INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contents (
    id INTEGER PRIMARY KEY,
    octets BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    user TEXT NOT NULL,
    mailbox TEXT NOT NULL
);
"""

# A message is \Deleted: the system flags are space-separated names and no
# other holds "\Deleted".  A literal, not a parameter, and the same text in
# the partial index (upgrade step 4) and in the query (expungeDeleted): a
# partial index serves only a query whose WHERE has its term as written, in
# SQLite as in PostgreSQL.  ESCAPE names a character other than the
# backslash, which PostgreSQL's LIKE would take as its escape.
IS_DELETED = "system LIKE '%\\Deleted%' ESCAPE '!'"
DELETED_ROWS = "SELECT uid, system FROM messages WHERE mailboxId = ? AND " + IS_DELETED

# Versioned steps on an existing database (PRAGMA user_version): each runs
# once, in order, in one write transaction; a new database runs them all.
# A released step is never edited: a change is a new step.
UPGRADES = (
    # 1: changedSince (QRESYNC, a session's refresh) reads the rows changed
    # or expunged after a mod-sequence, not the whole mailbox.
    (1, ["CREATE INDEX IF NOT EXISTS messagesModSeq ON messages (mailboxId, modseq)",
         "CREATE INDEX IF NOT EXISTS expungedModSeq ON expunged (mailboxId, modseq)"]),
    # 2: message summaries (ENVELOPE, BODYSTRUCTURE, SORT/THREAD fields),
    # one per blob: content is immutable and shared by copies, so a
    # message delivered to ten users is summarised once.  Messages stored
    # before this step get theirs on first read (SQLiteMailbox.summaries).
    (2, ["""CREATE TABLE IF NOT EXISTS summaries (
        blob TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        envelope BLOB, bodystructure BLOB, body BLOB,
        sentDate INTEGER, subject TEXT NOT NULL, baseSubject TEXT NOT NULL,
        isReply INTEGER NOT NULL,
        fromName TEXT NOT NULL, fromMailbox TEXT NOT NULL, fromHost TEXT NOT NULL,
        toName TEXT NOT NULL, toMailbox TEXT NOT NULL, toHost TEXT NOT NULL,
        ccName TEXT NOT NULL, ccMailbox TEXT NOT NULL, ccHost TEXT NOT NULL,
        messageId TEXT NOT NULL, inReplyTo TEXT NOT NULL, refs TEXT NOT NULL,
        attachments INTEGER NOT NULL
    )"""]),
    # 3: RFC 8514 SAVEDATE and RFC 8474 OBJECTID (see _objectIdStep).
    (3, lambda txn: _objectIdStep(txn)),
    # 4: EXPUNGE finds the \Deleted messages from a partial index of them
    # alone, not by reading every row of the mailbox under the write lock.
    (4, ["CREATE INDEX IF NOT EXISTS messagesDeleted ON messages (mailboxId, system)"
         " WHERE " + IS_DELETED]),
    # 5: the change log without AUTOINCREMENT (see _plainChangesStep).
    (5, lambda txn: _plainChangesStep(txn)),
    # 6: content up to INLINE_LIMIT kept in its blobs row; superseded by 7
    # (the column stays, empty).
    (6, lambda txn: _addColumns(txn, [("blobs", "octets", "BLOB")])),
    # 7: that content in a table of its own (see _contentsStep).
    (7, lambda txn: _contentsStep(txn)),
)
_STRUCTURE_COLUMNS = "envelope, bodystructure, body"
_FIELD_COLUMNS = (
    "sentDate, subject, baseSubject, isReply, fromName, fromMailbox, fromHost,"
    " toName, toMailbox, toHost, ccName, ccMailbox, ccHost, messageId, inReplyTo,"
    " refs, attachments")
SUMMARY_BATCH = 200  # summaries computed per write transaction on first read
CONTENT_BATCH = 64   # messages whose content one query reads (openMessages)


def _summaryRow(summary):
    """The C{summaries} columns after C{blob, version} of a MessageSummary."""
    s = summary
    return (s.envelope, s.bodystructure, s.body, s.date, s.subject, s.baseSubject,
            int(s.isReply), s.sender.name, s.sender.mailbox, s.sender.host,
            s.to.name, s.to.mailbox, s.to.host, s.cc.name, s.cc.mailbox, s.cc.host,
            s.messageId, s.inReplyTo, " ".join(s.references), int(s.hasAttachments))


def _summaryFrom(structure, fields):
    """A MessageSummary from its columns (structure: three, or Nones)."""
    (date, subject, base, isReply, fn, fm, fh, tn, tm, th, cn, cm, ch,
     messageId, inReplyTo, refs, attachments) = fields
    envelope, bodystructure, body = structure
    return MessageSummary(
        envelope=envelope, bodystructure=bodystructure, body=body, date=date,
        subject=subject, baseSubject=base, isReply=bool(isReply),
        sender=Address(fn, fm, fh), to=Address(tn, tm, th), cc=Address(cn, cm, ch),
        messageId=messageId, inReplyTo=inReplyTo, references=tuple(refs.split()),
        hasAttachments=bool(attachments))


def _objectIdStep(txn):
    """
    Upgrade step 3.  Columns: C{messages.saveDate}, NULL for rows from
    before, shown as their internal date: for delivered mail that is the
    save date exactly, for APPENDed or copied mail the nearest thing known
    (RFC 8514 3 leaves no way to say "unknown" per message, only per
    mailbox); C{mailboxes.objectId}, the RFC 8474 MAILBOXID, random, given
    to older mailboxes here.  Last, the random key EMAILIDs are derived
    with.
    """
    _addColumns(txn, [("messages", "saveDate", "REAL"), ("mailboxes", "objectId", "TEXT")])
    for (mailboxId,) in txn.execute(
            "SELECT id FROM mailboxes WHERE objectId IS NULL").fetchall():
        txn.execute("UPDATE mailboxes SET objectId = ? WHERE id = ?",
                    (newObjectId("F"), mailboxId))
    txn.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)",
                ("objectIdKey", secrets.token_hex(32)))


def _addColumns(txn, columns):
    """
    Add each C{(table, column, type)} a table lacks (a column L{SCHEMA}
    made already, in a new database, is not added again).  ALTER TABLE ...
    ADD COLUMN rewrites no row: instant however much mail there is.
    """
    for table, column, kind in columns:
        present = {row[1] for row in txn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            txn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _contentsStep(txn):
    """
    Upgrade step 7: content kept in the database (L{InlineBlob}) is a row
    of C{contents}, which C{blobs.contentId} names.  In the C{blobs} row
    itself (step 6), every change of its reference count (a COPY, a
    MOVE, an expunge of one copy) wrote the whole row again, content and
    all, to the WAL: 148 KB for the COPY of a 60 KB message, not 21 KB.
    """
    _addColumns(txn, [("blobs", "contentId", "INTEGER")])
    txn.execute("CREATE TABLE IF NOT EXISTS contents"
                " (id INTEGER PRIMARY KEY, octets BLOB NOT NULL)")
    for blobId, octets in txn.execute(
            "SELECT id, octets FROM blobs WHERE octets IS NOT NULL").fetchall():
        contentId = txn.execute("INSERT INTO contents (octets) VALUES (?) RETURNING id",
                                (octets,)).fetchone()[0]
        txn.execute("UPDATE blobs SET contentId = ?, octets = NULL WHERE id = ?",
                    (contentId, blobId))


def _plainChangesStep(txn):
    """
    Upgrade step 5: C{changes.seq} a plain INTEGER PRIMARY KEY, not
    AUTOINCREMENT, whose counter in C{sqlite_sequence} was one more page
    every commit wrote to the WAL (of about ten per delivery).  The numbers
    still only grow, which is all the pollers' cursors need
    (L{SQLiteStore.changesSince}): a new row takes one more than the
    largest, and the largest row is never deleted (the log keeps its
    newest L{CHANGES_KEPT}).  SQLite cannot drop AUTOINCREMENT from a
    table: it is made again, rows kept (a new database has it plain from
    L{SCHEMA} already).
    """
    sql = txn.execute("SELECT sql FROM sqlite_master WHERE type = 'table'"
                      " AND name = 'changes'").fetchone()[0]
    if "AUTOINCREMENT" not in sql.upper():
        return
    txn.execute("CREATE TABLE changesPlain (seq INTEGER PRIMARY KEY, origin TEXT NOT NULL,"
                " user TEXT NOT NULL, mailbox TEXT NOT NULL)")
    txn.execute("INSERT INTO changesPlain SELECT seq, origin, user, mailbox FROM changes")
    txn.execute("DROP TABLE changes")
    txn.execute("ALTER TABLE changesPlain RENAME TO changes")
    txn.execute("DELETE FROM sqlite_sequence WHERE name = 'changes'")


_byUid = operator.itemgetter(0)  # a MessageInfo's uid


def _keywords(text):
    """The mailbox's L{Keywords} from its column (a JSON list, empty at first)."""
    return Keywords(json.loads(text) or None)


class StoreTooNew(Exception):
    """The store was made or upgraded by a newer pymailer."""


class InlineBlob:
    """
    Content kept in the database (a row of C{contents}, which its C{blobs}
    row names), not in a file: what a
    L{pymailer.store.blobs.PlacedBlob} is, for content up to
    L{INLINE_LIMIT}.  Nothing reaches the disk before the transaction: the
    octets are made durable by the commit's WAL fsync, which a delivery
    waits for anyway and which concurrent deliveries share (group
    commit), where a file costs its own fsync and its directory's, and
    creating and later unlinking it.  That is most mail (a message of a
    few KiB) and what Stalwart does by default; Dovecot's mdbox keeps many
    messages in one file for the same reason.  A larger message is a file
    still: the database's pages would hold it twice (WAL, then the
    checkpoint), and a read of it, whole in memory, is bounded here.
    """

    tempPath = None
    new = False  # whether a summary exists is read (there is no file to create)

    def __init__(self, octets):
        self.blobId = hashlib.sha256(octets).hexdigest()
        self.inlineOctets = octets
        self.size = len(octets)

    def place(self):
        """Nothing to place: the commit writes the octets."""

    install = discard = place

    def content(self):
        return BytesContent(self.inlineOctets)


class _Transaction:
    """One write transaction: its cursor and what to do after the commit."""

    def __init__(self, db):
        self.db = db
        self.touched = []      # (user, mailbox) to tell listeners
        self.freed = []        # blob ids whose last reference went
        self.pending = []      # blobs whose temporary names go after it, or if it fails

    def execute(self, sql, args=()):
        return self.db.execute(sql, args)

    def changed(self, user, mailbox):
        if (user, mailbox) not in self.touched:
            self.touched.append((user, mailbox))


class _SharedWork:
    """One caller's part of a shared write transaction (L{SQLiteStore._writeShared})."""

    def __init__(self, work, durable):
        self.work, self.durable = work, durable
        self.txn = self.result = self.error = None
        self.leads = False   # told to lead the next transaction
        self.answered = False  # woken with its outcome (see _answer)
        # Released when this caller is to go on: its commit is durable (or
        # failed), or it is to lead.  A lock: cheaper than an Event.
        self.wake = threading.Lock()
        self.wake.acquire()

    def start(self, db):
        """A try in a transaction (again, if one before was rolled back)."""
        self.txn, self.error = _Transaction(db), None

    def failed(self):
        return self.error is not None

    def discardPending(self):
        if self.txn is not None:
            for pending in self.txn.pending:
                pending.discard()


@implementer(IMaildropLock)
class _MaildropLock:
    """
    A lock other processes see and death frees, held as long as C{handle}
    is open: here an C{flock}ed file descriptor (C{close}: C{os.close});
    a database session holding an advisory lock in
    L{pymailer.store.postgresql}.
    """

    def __init__(self, handle, close=os.close):
        self._handle, self._close = handle, close
        self._guard = threading.Lock()

    def release(self):
        with self._guard:
            handle, self._handle = self._handle, None
        if handle is not None:
            self._close(handle)  # releases the lock


@implementer(IMailStore, IExternalChanges, IMailImport)
class SQLiteStore(Listeners):
    """
    L{IMailStore} on SQLite + blobs under C{root} (C{data_dir/store}).
    Thread-safe: one connection per thread; a lock of the store's
    serialises its threads' writers, SQLite's locks serialise processes
    (C{busy_timeout} waits).
    """

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "locks").mkdir(exist_ok=True)
        self.path = self.root / "index.sqlite"
        self.blobs = BlobStore(self.root / "blobs")
        self.inlineLimit = INLINE_LIMIT  # new content up to this goes in contents
        # Our own rows in the change log: other processes' pollers act on
        # them, ours are told directly after the commit.
        self.origin = secrets.token_hex(8)
        self._local = threading.local()
        # Writers of this process, then of every process, queue here
        # before SQLite's lock (see _writeLock).
        self._writers = WriterLock(self.root / "locks" / "writer")
        # Blobs freed by commits not yet durable (see _write).
        self._unsyncedGuard = threading.Lock()
        self._unsynced = []
        # Blobs freed by commits now durable, to unlink (see _removeBlobs).
        self._settled = []
        # Group commit of the WAL (see _syncWal): tickets handed out to
        # commits waiting for a flush, and the last one a flush covered.
        self._walGuard = threading.Condition()
        self._walTickets = self._walSynced = 0
        self._walSyncing = False
        # Deliveries sharing one write transaction (see _writeShared): those
        # waiting for the next one, and whether a thread is leading one.
        self._sharedGuard = threading.Lock()
        self._sharedQueue = []
        self._sharedLeading = False
        self._pollDb = None
        version = self._knownVersion()
        self._db().executescript(SCHEMA)
        self._upgrade(version)
        self.sweep()

    # -- connections and transactions ---------------------------------------

    def _connect(self):
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=BUSY_TIMEOUT_MS / 1000)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL: a commit writes the WAL without an fsync (atomic, and
        # safe from kill -9); _write fsyncs the WAL itself, after the lock,
        # for the commits that must be durable (see the module docstring).
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = OFF")
        return db

    @contextmanager
    def _writeLock(self):
        """
        Held around every write transaction: the threads of this process,
        then the processes (C{[server] workers}, the admin command, the
        delivery agent) queue on C{locks/writer} before SQLite's lock
        (L{pymailer.sqlitedb.WriterLock}).
        """
        with self._writers.held():
            yield

    def _db(self):
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    @contextmanager
    def _write(self, durable=True):
        """
        A C{BEGIN IMMEDIATE} transaction; after the commit, blobs freed are
        removed and listeners told.  A failure rolls everything back.

        @param durable: whether the commit is on disk before this returns
            (the WAL fsynced after the lock: new content, whose
            acknowledgement says the server has it).  If not (flag changes,
            expunges, the C{\\Recent} claim), the commit is in the WAL,
            atomic and safe from C{kill -9}, and reaches the disk with the
            next durable commit or checkpoint; only an OS crash or power
            loss before that can undo it, as with Dovecot's C{mail_fsync =
            optimized}.  Blobs such a commit frees stay on disk until it is
            durable (L{_settleLater}).
        """
        db = self._db()
        # Writers queue in _writeLock, not in SQLite's busy handler.
        with self._writeLock():
            db.execute("BEGIN IMMEDIATE")
            txn = _Transaction(db)
            try:
                self._unlinkSettled(db)
                written = db.total_changes
                yield txn
                self._logChanges(db, txn.touched)
                # Everything queued committed before this transaction
                # began: the WAL fsync that makes this one durable covers it.
                synced = durable and db.total_changes != written
                settled = self._takeUnsynced() if synced else []
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                for pending in txn.pending:
                    pending.discard()
                raise
        for pending in txn.pending:
            pending.discard()  # the temporary name, outside the lock
        if synced:
            # Outside the lock: the next writer goes on meanwhile, and
            # concurrent commits share the disk flush (group commit).
            self._syncWal()
            settled += txn.freed
        elif durable:
            settled = txn.freed  # nothing written, nothing to sync
        else:
            settled = self._settleLater(txn.freed)
        if settled:
            self._removeBlobs(settled)
        for user, mailbox in txn.touched:
            self._notify(user, mailbox)

    def _logChanges(self, db, touched):
        """Inside a write transaction: the change log's rows for other processes."""
        for user, mailbox in touched:
            seq = db.execute("INSERT INTO changes (origin, user, mailbox)"
                             " VALUES (?, ?, ?) RETURNING seq",
                             (self.origin, user, mailbox)).fetchone()[0]
            if seq % 1000 == 0:
                db.execute("DELETE FROM changes WHERE seq <= ?", (seq - CHANGES_KEPT,))

    def _writeShared(self, work, durable=True):
        """
        C{work(txn)} in a write transaction that the writers waiting for
        the write lock meanwhile share (group commit, as Postfix's and
        Dovecot's: one commit, one WAL flush for all of them; under load a
        delivery otherwise wrote its own ~10 WAL pages and re-read the
        pages another connection changed, and ten IMAP sessions' STOREs
        queued for the lock one commit each).  Each one's work runs in a
        C{SAVEPOINT} of its own: one that fails is rolled back alone and
        its caller gets its exception, the others commit.  A C{durable}
        caller returns once the shared commit is on disk (the WAL
        flushed); one not C{durable} (flag changes, expunges: see L{_write})
        once it is committed, before that flush.

        The thread that finds no transaction being prepared leads: it takes
        the write lock, then every writer queued by then (its own among
        them), commits them, hands the lead to the first one queued since,
        and flushes the WAL while that one prepares the next.

        @return: what C{work} returned.
        """
        entry = _SharedWork(work, durable)
        with self._sharedGuard:
            self._sharedQueue.append(entry)
            lead = not self._sharedLeading
            self._sharedLeading = True
        if lead:
            entry.leads = True
        else:
            entry.wake.acquire()  # led by another, or told to lead
        if not entry.leads:
            return self._sharedOutcome(entry)
        batch, settled, synced = [], [], False
        try:
            with self._writeLock():
                with self._sharedGuard:
                    batch, self._sharedQueue = self._sharedQueue, []
                settled, synced = self._commitShared(batch)
        except BaseException as e:
            with self._sharedGuard:
                if not batch:  # the lock failed: those queued would wait for ever
                    batch, self._sharedQueue = self._sharedQueue, []
            for done in batch:
                if not done.failed():
                    done.error = e
            settled, synced = [], False
        finally:
            with self._sharedGuard:
                if self._sharedQueue:  # came after the lock was taken: the next batch
                    nextLeader = self._sharedQueue[0]
                    nextLeader.leads = True
                    nextLeader.wake.release()
                else:
                    self._sharedLeading = False
        freed = [blobId for done in batch if not done.failed() for blobId in done.txn.freed]
        # Those the flush is not for go on now (committed: atomic, and
        # safe from kill -9), the others after it.
        for done in batch:
            if not (synced and done.durable and not done.failed()):
                self._answer(done, entry)
        try:
            if synced:
                self._syncWal()  # outside the lock: the next batch commits meanwhile
                settled += freed
            else:
                settled += self._settleLater(freed)
        except BaseException as e:  # maybe not on disk: nobody is told it is
            for done in batch:
                if not done.answered and not done.failed():
                    done.error = e
            with self._unsyncedGuard:  # freed blobs wait for the next flush
                self._unsynced.extend(settled + freed if synced else settled)
            settled = []
        finally:
            for done in batch:
                self._answer(done, entry)
        if settled:
            self._removeBlobs(settled)
        return self._sharedOutcome(entry)

    @staticmethod
    def _answer(done, leader):
        """Wake C{done}, its shared transaction over for it (at most once)."""
        if not done.answered:
            done.answered, done.leads = True, False
            if done is not leader:
                done.wake.release()

    def _sharedOutcome(self, entry):
        """A caller of L{_writeShared}, its transaction over: its result or its error."""
        entry.discardPending()  # the temporary names, outside the lock
        if entry.failed():
            raise entry.error
        for user, mailbox in entry.txn.touched:
            self._notify(user, mailbox)
        return entry.result

    def _commitShared(self, batch):
        """
        Under the write lock: every L{_SharedWork} of C{batch} in one
        transaction, each in a savepoint (one alone in none); an error of
        SQLite's that ends the whole transaction (C{SQLITE_FULL}, an I/O
        error: the savepoint is gone) fails that one and runs the others
        again in a new one.  A failed one's temporary blobs go with its
        outcome (L{_sharedOutcome}), outside the lock, as everyone's.

        @return: C{(settled, synced)}: blobs freed by earlier non-durable
            commits, which this one's flush makes durable; whether anything
            was written (the WAL is to be flushed).
        """
        db = self._db()
        remaining = batch
        while True:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._unlinkSettled(db)
                written = db.total_changes
                committing, again = [], None
                # One alone needs no savepoint: its failure is the transaction's.
                alone = len(remaining) == 1
                for index, entry in enumerate(remaining):
                    entry.start(db)
                    if alone:
                        entry.result = entry.work(entry.txn)
                        committing.append(entry)
                        break
                    db.execute("SAVEPOINT delivery")
                    try:
                        entry.result = entry.work(entry.txn)
                    except Exception as e:
                        entry.error = e
                        if not db.in_transaction:
                            again = committing + remaining[index + 1:]
                            break
                        db.execute("ROLLBACK TO delivery")
                    db.execute("RELEASE delivery")
                    if entry.error is None:
                        committing.append(entry)
                if again is not None:
                    if not again:
                        return [], False
                    remaining = again
                    continue
                # Each (user, mailbox) once, in the order first touched.
                self._logChanges(db, list(dict.fromkeys(
                    t for entry in committing for t in entry.txn.touched)))
                synced = db.total_changes != written and any(
                    entry.durable for entry in committing)
                settled = self._takeUnsynced() if synced else []
                db.execute("COMMIT")
                return settled, synced
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _knownVersion(self):
        """
        The database's format (its L{UPGRADES} step), refused if a newer
        pymailer has upgraded it: this code would not know what it keeps
        where (since step 7, small messages are not files: an older
        version shows them listed and empty).
        """
        version = self._read("PRAGMA user_version").fetchone()[0]
        if version > UPGRADES[-1][0]:
            raise StoreTooNew(
                f"{self.path} is in the format of a newer pymailer (store version {version};"
                f" this one knows up to {UPGRADES[-1][0]}): run that version, or restore"
                " a backup made with this one")
        return version

    def _upgrade(self, version):
        """
        Run the L{UPGRADES} steps this database has not had yet (the usual
        open: one read, no write transaction, no fsync), then load the key
        EMAILIDs are derived with (see L{SQLiteMailbox.emailIds}).
        """
        if version < UPGRADES[-1][0]:
            self._runUpgrades()
        self.objectIdKey = bytes.fromhex(self._read(
            "SELECT value FROM settings WHERE name = 'objectIdKey'").fetchone()[0])

    def _runUpgrades(self):
        with self._write() as txn:  # another process may be upgrading too
            version = txn.execute("PRAGMA user_version").fetchone()[0]
            for number, step in UPGRADES:
                if number > version:
                    if callable(step):
                        step(txn)
                    else:
                        for sql in step:
                            txn.execute(sql)
                    txn.execute(f"PRAGMA user_version = {int(number)}")

    def _takeUnsynced(self):
        with self._unsyncedGuard:
            taken, self._unsynced = self._unsynced, []
        return taken

    def _settleLater(self, freed):
        """
        Queue the blobs a non-durable commit freed: removed after the next
        durable commit (unlinked now, a power loss could bring back rows
        naming them).  Past L{UNSYNCED_FREED}, sync the WAL here instead.

        @return: the blobs that may go now.
        """
        if not freed:
            return []
        with self._unsyncedGuard:
            self._unsynced.extend(freed)
            if len(self._unsynced) < UNSYNCED_FREED:
                return []
        taken = self._takeUnsynced()
        self._syncWal()
        return taken

    def _syncWal(self):
        """
        Make every commit so far durable: fsync the WAL, or wait for a
        flush that covers them.  Group commit (as Postfix and Dovecot do
        theirs): a flush that began after this call covers every commit
        before it, so commits that come while one flush runs wait for it
        to end and share the next one (one APPEND each from ten sessions
        made ten flushes in a row, each waiting for the one before).
        """
        with self._walGuard:
            self._walTickets += 1
            ticket = self._walTickets
            while self._walSynced < ticket:
                if self._walSyncing:
                    self._walGuard.wait()
                    continue
                self._walSyncing, covers = True, self._walTickets
                self._walGuard.release()
                try:
                    self._flushWal()
                finally:
                    self._walGuard.acquire()
                    self._walSyncing = False
                    self._walGuard.notify_all()
                # Not reached when the flush failed: its waiters try their own.
                self._walSynced = max(self._walSynced, covers)

    def _flushWal(self):
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # checkpointed into the database (synced) and removed
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self, sql, args=()):
        return self._db().execute(sql, args)

    def _forUpdate(self, db):
        """
        What a read of a mailbox row on C{db} adds to lock it to the commit:
        nothing here (C{BEGIN IMMEDIATE} already holds the one write lock);
        a row lock on a database with many writers (L{pymailer.store.postgresql}).
        Writers there take locks in one order, so that two never wait on
        each other: mailboxes first (in id order when two), then blobs.
        """
        return ""

    @contextmanager
    def _readTransaction(self):
        """Several reads that see one state (a WAL read snapshot)."""
        db = self._db()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    # -- blobs ----------------------------------------------------------------

    def _addBlob(self, txn, pending):
        """Inside C{txn}: put a written blob in place and count a reference."""
        # Checked (linked again if need be) under the write lock: a
        # concurrent removal of the same content (its last reference
        # expunged) runs under that lock too, so it can never unlink a file
        # this transaction is about to name.
        pending.install()
        self._reference(txn, pending.blobId, pending.size,
                        pending.inlineOctets if isinstance(pending, InlineBlob) else None)

    def _writeBlob(self, prefix, source):
        """
        Outside the lock: C{prefix} + C{source} written and placed, and its
        summary.  Content up to C{inlineLimit} (a usual message) goes into
        the database with the transaction (L{InlineBlob}); up to
        L{IN_PLACE_LIMIT} it is read into memory and written straight to its
        name (L{pymailer.store.blobs.BlobStore.place}); a larger one is
        streamed through a temporary file.

        @return: C{(pending, summary)}: the placed blob (for L{_addBlob}
            and the transaction's C{pending}), and L{_summarizePending}'s.
        """
        head = source.read(max(IN_PLACE_LIMIT - len(prefix), 0) + 1)
        octets = prefix + head if prefix else head
        if len(octets) <= self.inlineLimit:
            pending = InlineBlob(octets)
        elif len(octets) <= IN_PLACE_LIMIT:
            pending = self.blobs.place(octets)
        else:
            pending = self.blobs.write(octets, source)
        return self._summarizeAndPlace(pending)

    def _summarizeAndPlace(self, pending):
        """L{_writeBlob}'s end: the summary, the blob placed (or discarded on a failure)."""
        try:
            summary = self._summarizePending(pending)
            pending.place()
        except BaseException:
            pending.discard()
            raise
        return pending, summary

    def _summarizePending(self, pending):
        """
        Outside the lock: the summary of a written blob, or C{None} if its
        content (the same octets delivered before) has one already.  A
        blob whose file this delivery made has none.
        """
        if not getattr(pending, "new", False) and self._read(
                "SELECT 1 FROM summaries WHERE blob = ? AND version = ?",
                (pending.blobId, SUMMARY_VERSION)).fetchone() is not None:
            return None
        try:
            with pending.content() as content:
                return summarize(content)
        except Exception:
            # Never a reason to refuse mail: the first read tries again.
            log.failure("Summarising message {blob} failed", blob=pending.blobId)
            return None

    def _keepSummary(self, txn, blobId, summary):
        """Inside C{txn}: store a blob's summary (C{None}: it has one)."""
        if summary is not None:
            txn.execute("INSERT OR REPLACE INTO summaries VALUES"
                        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (blobId, SUMMARY_VERSION) + _summaryRow(summary))

    def _reference(self, txn, blobId, size, inlineOctets=None):
        """
        Inside C{txn}: one more reference to a blob; a new one's octets
        kept in C{contents} if C{inlineOctets} (the same content there
        already, in a file or a row, stays where it is).
        """
        if txn.execute("UPDATE blobs SET refs = refs + 1 WHERE id = ? RETURNING 1",
                       (blobId,)).fetchone() is not None:
            return
        contentId = None if inlineOctets is None else txn.execute(
            "INSERT INTO contents (octets) VALUES (?) RETURNING id", (inlineOctets,)).fetchone()[0]
        txn.execute("INSERT INTO blobs (id, refs, size, contentId) VALUES (?, 1, ?, ?)",
                    (blobId, size, contentId))

    def _unreference(self, txn, blobIds):
        for blobId in blobIds:
            row = txn.execute("UPDATE blobs SET refs = refs - 1 WHERE id = ?"
                              " RETURNING refs, contentId", (blobId,)).fetchone()
            if row is not None and row[0] <= 0:
                txn.execute("DELETE FROM blobs WHERE id = ?", (blobId,))
                txn.execute("DELETE FROM summaries WHERE blob = ?", (blobId,))
                if row[1] is None:  # a file, unlinked once this commit is durable
                    txn.freed.append(blobId)
                else:
                    txn.execute("DELETE FROM contents WHERE id = ?", (row[1],))

    # A message's content: its blob, and the octets if they are in contents.
    _contentQuery = ("SELECT m.uid, m.blob, c.octets FROM messages m"
                     " JOIN blobs b ON b.id = m.blob LEFT JOIN contents c ON c.id = b.contentId"
                     " WHERE m.mailboxId = ?")

    def _openContent(self, blobId, inlineOctets=None):
        """A blob's content: its octets in contents, or else its file. I{Blocking.}"""
        if inlineOctets is not None:
            return BytesContent(inlineOctets)
        return self.blobs.open(blobId)

    def _openBlob(self, blobId):
        """
        A blob's content by its id. I{Blocking.}
        @raise FileNotFoundError: no such blob (expunged meanwhile).
        """
        row = self._read("SELECT c.octets FROM blobs b LEFT JOIN contents c"
                         " ON c.id = b.contentId WHERE b.id = ?", (blobId,)).fetchone()
        if row is None:
            raise FileNotFoundError(blobId)
        return self._openContent(blobId, row[0])

    def _removeBlobs(self, blobIds):
        """
        Once the commits that freed them are durable: unlink the blobs,
        unless a new reference took them meanwhile.  Checked and unlinked
        under the write lock, where every writer of the same content
        links it again if need be (L{_addBlob}); but never a transaction
        of its own (it was a second one after each APPEND, issue 13): at
        once if no writer holds the lock, else by the write transaction
        that comes next, at its start (L{_unlinkSettled}).  A process that
        ends first leaves them to the sweep at start-up.
        """
        with self._unsyncedGuard:
            self._settled.extend(blobIds)
        with self._writers.heldIfFree() as held:
            if held:
                # Every writer holds the lock through its commit: what
                # this read sees stays true while it is held.  (If not,
                # a writer has it: our next transaction unlinks them.)
                self._unlinkSettled(self._db())

    def _unlinkSettled(self, db):
        """Under the write lock: unlink the settled blobs no row names again."""
        with self._unsyncedGuard:
            blobIds, self._settled = self._settled, []
        for i in range(0, len(blobIds), 500):
            part = blobIds[i:i + 500]
            named = {row[0] for row in db.execute(
                # A row that keeps the octets itself names no file: the same
                # content freed as a file and delivered again in one batch.
                "SELECT id FROM blobs WHERE contentId IS NULL AND id IN (%s)"
                % ",".join("?" * len(part)), part)}
            for blobId in part:
                if blobId not in named:
                    try:
                        self.blobs.remove(blobId)
                    except OSError:  # never the write's failure: an orphan now
                        log.failure("Removing blob {blob} failed", blob=blobId)

    def sweep(self, now=None):
        """
        Remove orphan blobs: files no row names, older than
        L{pymailer.store.blobs.ORPHAN_AGE} (a crash between a blob and its
        commit, or between an expunge's commit and the unlink).

        @return: how many files went.
        """
        db = self._db()
        with self._writeLock():
            db.execute("BEGIN IMMEDIATE")  # no blob is taken or freed meanwhile
            try:
                referenced = {row[0] for row in db.execute(
                    "SELECT id FROM blobs WHERE contentId IS NULL")}  # the others have no file
                # Freed by commits not yet durable: not orphans yet.
                with self._unsyncedGuard:
                    referenced.update(self._unsynced)
                removed = 0
                for path in list(self.blobs.orphans(referenced, now)):
                    try:
                        os.unlink(path)
                        removed += 1
                    except FileNotFoundError:
                        pass
            finally:
                db.execute("COMMIT")
        return removed

    # -- accounts and names --------------------------------------------------

    def canonicalName(self, name, new=False):
        return canonicalNameWithin(name, NAME_LIMIT, new)

    def _userId(self, user):
        """
        The user's id, with INBOX and the special-use folders made on the
        first access (one write transaction, only that once).
        """
        if not isinstance(user, str) or "@" not in user:
            raise ValueError(f"bad user {user!r}")
        row = self._read("SELECT id FROM users WHERE name = ? AND foldersMade = 1",
                         (user,)).fetchone()
        if row is not None:
            return row[0]
        with self._write() as txn:
            return self._makeUser(txn, user, force=False)

    def _makeUser(self, txn, user, force):
        txn.execute("INSERT INTO users (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (user,))
        userId, made = txn.execute("SELECT id, foldersMade FROM users WHERE name = ?",
                                   (user,)).fetchone()
        if force or not made:
            for name in (INBOX, *SPECIAL_USE):
                self._insertMailbox(txn, userId, name, ignoreExisting=True)
            txn.execute("UPDATE users SET foldersMade = 1 WHERE id = ?", (userId,))
        return userId

    def _insertMailbox(self, txn, userId, name, ignoreExisting=False, specialUse=None):
        if txn.execute("SELECT 1 FROM mailboxes WHERE userId = ? AND name = ?",
                       (userId, name)).fetchone() is not None:
            if ignoreExisting:
                return
            raise KeyError(name)
        # Never a UIDVALIDITY given before to this user (RFC 3501 2.3.1.1),
        # even for a name deleted and created again within the second.
        last = txn.execute("SELECT lastValidity FROM users WHERE id = ?",
                           (userId,)).fetchone()[0]
        validity = max(last + 1, int(time.time())) % 2**32 or 1
        txn.execute("UPDATE users SET lastValidity = ? WHERE id = ?", (validity, userId))
        # The specialUse column (there since the first schema) keeps the
        # uses, space-separated; it goes with the row on a rename.
        txn.execute("INSERT INTO mailboxes (userId, name, specialUse, uidValidity, objectId)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (userId, name, encodeSpecialUse(specialUseOf(name, specialUse)), validity,
                     newObjectId("F")))

    def createUser(self, user):
        if not isinstance(user, str) or "@" not in user:
            raise ValueError(f"bad user {user!r}")
        with self._write() as txn:
            txn.execute("INSERT INTO users (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                        (user,))
            self._makeUser(txn, user, force=False)

    def _mailboxRow(self, userId, name):
        return self._read("SELECT id FROM mailboxes WHERE userId = ? AND name = ?",
                          (userId, name)).fetchone()

    def mailbox(self, user, name=INBOX):
        canonical = self.canonicalName(name)
        return self.mailboxClass(self, user, canonical, self._mailboxIds(user, canonical, name)[1])

    def _mailboxIds(self, user, canonical, name):
        """
        C{(userId, mailboxId)} of the user's mailbox C{canonical}, the
        account made on the first access.  One query for the usual case
        (a SELECT, a delivery): an account made before, a mailbox that is
        there.

        @raise KeyError: no such mailbox (C{name}, as the caller gave it).
        """
        row = self._read(
            "SELECT u.id, m.id FROM users u JOIN mailboxes m ON m.userId = u.id"
            " WHERE u.name = ? AND u.foldersMade = 1 AND m.name = ?",
            (user, canonical)).fetchone() if isinstance(user, str) else None
        if row is None:
            userId = self._userId(user)
            mailboxRow = self._mailboxRow(userId, canonical)
            if mailboxRow is None:
                raise KeyError(name)
            row = (userId, mailboxRow[0])
        return row

    def listMailboxes(self, user):
        names = {row[0] for row in self._read(
            "SELECT name FROM mailboxes WHERE userId = ?", (self._userId(user),))}
        return [INBOX] + sorted(names - {INBOX})

    def createMailbox(self, user, name, specialUse=None):
        canonical = self.canonicalName(name, new=True)
        specialUseOf(canonical, specialUse)  # ValueError before the write
        userId = self._userId(user)
        with self._write() as txn:
            self._insertMailbox(txn, userId, canonical, specialUse=specialUse)
            txn.changed(user, canonical)

    def specialUses(self, user):
        return {name: decodeSpecialUse(uses) for name, uses in self._read(
            "SELECT name, specialUse FROM mailboxes WHERE userId = ? AND specialUse IS NOT NULL",
            (self._userId(user),))}

    def _dropMailbox(self, txn, mailboxId):
        blobIds = [row[0] for row in txn.execute(
            "SELECT blob FROM messages WHERE mailboxId = ?", (mailboxId,))]
        self._unreference(txn, blobIds)
        for table in ("messages", "expunged"):
            txn.execute(f"DELETE FROM {table} WHERE mailboxId = ?", (mailboxId,))
        txn.execute("DELETE FROM mailboxes WHERE id = ?", (mailboxId,))

    def deleteMailbox(self, user, name):
        canonical = self.canonicalName(name)
        if canonical == INBOX:
            raise ValueError("INBOX cannot be deleted")
        userId = self._userId(user)
        with self._write() as txn:
            row = txn.execute("SELECT id FROM mailboxes WHERE userId = ? AND name = ?"
                              + self._forUpdate(txn.db), (userId, canonical)).fetchone()
            if row is None:
                raise KeyError(name)
            self._dropMailbox(txn, row[0])
            txn.changed(user, canonical)

    def renameMailbox(self, user, oldName, newName):
        old, new = self.canonicalName(oldName), self.canonicalName(newName, new=True)
        if INBOX in (old, new):
            raise ValueError("renaming to or from INBOX is not supported")
        userId = self._userId(user)
        with self._write() as txn:
            boxes = {name: mailboxId for mailboxId, name in txn.execute(
                "SELECT id, name FROM mailboxes WHERE userId = ?", (userId,))}
            if old not in boxes:
                raise KeyError(oldName)
            try:
                moves = renameMoves(boxes, old, new, self.canonicalName)
            except KeyError:
                raise KeyError(newName) from None
            # The mailbox keeps its id (and so UIDVALIDITY and UIDs); an
            # open IMailbox notices by name (MailboxGone).
            for source, target in moves:
                txn.execute("UPDATE mailboxes SET name = ? WHERE id = ?",
                            (target, boxes[source]))
            txn.changed(user, old)

    def usage(self, user):
        # One aggregate over the user's mailboxes (the messages' primary key
        # starts with mailboxId): no blob is read, none is made.
        row = self._read(
            "SELECT coalesce(sum(m.size), 0) FROM users u JOIN mailboxes b ON b.userId = u.id"
            " JOIN messages m ON m.mailboxId = b.id WHERE u.name = ?", (user,)).fetchone()
        return row[0]

    def mailboxCounts(self, user):
        # One aggregate over the user's mailboxes and their rows' system
        # flags (space-separated names; no other system flag contains
        # "\\Seen"); ESCAPE names a character that is not the backslash,
        # which PostgreSQL's LIKE would take as its escape.
        self._userId(user)  # makes the account, as listMailboxes does
        rows = self._read(
            "SELECT b.name, count(m.uid),"
            " count(CASE WHEN m.system NOT LIKE ? ESCAPE '!' THEN 1 END)"
            " FROM users u JOIN mailboxes b ON b.userId = u.id"
            " LEFT JOIN messages m ON m.mailboxId = b.id WHERE u.name = ?"
            " GROUP BY b.name", ("%\\Seen%", user)).fetchall()
        return {name: (total, unseen) for name, total, unseen in rows}

    # -- subscriptions, maildrop lock, spools ------------------------------

    def subscriptions(self, user):
        return {row[0] for row in self._read(
            "SELECT name FROM subscriptions WHERE userId = ?", (self._userId(user),))}

    def subscribe(self, user, name):
        userId = self._userId(user)
        with self._write() as txn:
            txn.execute("INSERT OR IGNORE INTO subscriptions (userId, name) VALUES (?, ?)",
                        (userId, name))
            txn.changed(user, name)

    def unsubscribe(self, user, name):
        userId = self._userId(user)
        with self._write() as txn:
            txn.execute("DELETE FROM subscriptions WHERE userId = ? AND name = ?",
                        (userId, name))
            txn.changed(user, name)

    def lockMaildrop(self, user):
        # flock is per open file: another store object, thread or process
        # opening the same file conflicts; the kernel frees it on death.
        name = hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        fd = os.open(self.root / "locks" / f"{name}.pop3",
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MaildropLocked(user) from None
        return _MaildropLock(fd)

    def newAppendSpool(self):
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=self.blobs.tmp)

    # -- delivery ----------------------------------------------------------

    def deliver(self, user, prefix, source, mailbox=INBOX, uniqueKey=None,
                checkDuplicate=False):
        checkDeliveryKey(uniqueKey, checkDuplicate)
        canonical = self.canonicalName(mailbox)
        userId = self._mailboxIds(user, canonical, mailbox)[0]  # before writing anything
        pending, summary = self._writeBlob(prefix, source)  # outside the lock
        delivered = self._writeNew(pending, lambda txn: self._deliverIn(
            txn, user, userId, canonical, mailbox, pending, summary, uniqueKey, checkDuplicate))
        if not delivered:
            # The copy found may be the commit of a delivery killed between
            # its COMMIT and its WAL fsync: on disk before the queue, told
            # it is delivered, forgets the message.
            self._syncWal()
        return delivered

    def _writeNew(self, pending, work):
        """
        L{_writeShared} for a writer of new content C{pending}, which goes
        if the transaction fails: also before C{work} ran and recorded it
        (C{BEGIN} busy past its timeout), where no transaction would.
        """
        try:
            return self._writeShared(work)
        except BaseException:
            pending.discard()
            raise

    def _deliverIn(self, txn, user, userId, canonical, mailbox, pending, summary, uniqueKey,
                   checkDuplicate):
        """L{deliver}'s part of a shared write transaction."""
        txn.pending.append(pending)
        if checkDuplicate and self._deliveredBefore(txn, userId, canonical, uniqueKey,
                                                    pending):
            return False
        # The mailbox before the blob, as every writer takes them (see
        # _forUpdate; here its UPDATE takes it): found by name again,
        # its UID taken, in one statement.
        row = txn.execute(
            "UPDATE mailboxes SET uidNext = uidNext + 1, highestModSeq = highestModSeq + 1"
            " WHERE userId = ? AND name = ? RETURNING id, uidNext - 1, highestModSeq",
            (userId, canonical)).fetchone()
        if row is None:
            raise KeyError(mailbox)
        self._addBlob(txn, pending)
        self._keepSummary(txn, pending.blobId, summary)
        self._insertMessage(txn, *row, pending.blobId, pending.size, "", "",
                            time.time(), uniqueKey)
        txn.changed(user, canonical)
        return True

    def _deliveredBefore(self, txn, userId, canonical, uniqueKey, pending):
        """
        Inside C{txn} of a delivery that may have been made before a crash
        (the queue recovering): whether its C{uniqueKey} is in the mailbox
        already; if so, C{pending} goes.
        """
        row = txn.execute("SELECT id FROM mailboxes WHERE userId = ? AND name = ?"
                          + self._forUpdate(txn.db), (userId, canonical)).fetchone()
        if row is None or txn.execute(
                "SELECT 1 FROM messages WHERE mailboxId = ? AND uniqueKey = ?",
                (row[0], uniqueKey)).fetchone() is None:
            return False
        pending.discard()
        # Placed but named by no row: under the lock, so nobody is about
        # to name it.
        if not isinstance(pending, InlineBlob) and txn.execute(
                "SELECT 1 FROM blobs WHERE id = ?", (pending.blobId,)).fetchone() is None:
            self.blobs.remove(pending.blobId)
        return True

    def _addMessage(self, txn, mailboxId, blobId, size, system, letters,
                    internalDate, uniqueKey=None):
        """Inside C{txn}: a new message row. @return: its UID."""
        uid, modseq = txn.execute(
            "UPDATE mailboxes SET uidNext = uidNext + 1, highestModSeq = highestModSeq + 1"
            " WHERE id = ? RETURNING uidNext - 1, highestModSeq", (mailboxId,)).fetchone()
        return self._insertMessage(txn, mailboxId, uid, modseq, blobId, size, system, letters,
                                   internalDate, uniqueKey)

    def _insertMessage(self, txn, mailboxId, uid, modseq, blobId, size, system, letters,
                       internalDate, uniqueKey=None):
        """Inside C{txn}: the row of message C{uid}, taken by the caller. @return: C{uid}."""
        # RFC 8514 3: the save date is now, for a copy or a move too.
        txn.execute(
            "INSERT INTO messages (mailboxId, uid, key, modseq, system, letters,"
            " internalDate, size, blob, uniqueKey, saveDate)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (mailboxId, uid, secrets.token_hex(12), modseq, system, letters,
             internalDate, size, blobId, uniqueKey, time.time()))
        return uid

    # -- other processes' changes (IExternalChanges) ----------------------------

    def dataVersion(self):
        # A connection of its own, used by the poller's thread only:
        # data_version moves when any *other* connection commits.
        if self._pollDb is None:
            self._pollDb = self._connect()
        return self._pollDb.execute("PRAGMA data_version").fetchone()[0]

    def changesSince(self, cursor):
        if cursor is None:
            row = self._read("SELECT max(seq) FROM changes").fetchone()
            return (row[0] or 0), set()
        rows = self._read("SELECT seq, user, mailbox FROM changes WHERE seq > ? AND origin != ?"
                          " ORDER BY seq", (cursor, self.origin)).fetchall()
        newest = self._read("SELECT max(seq) FROM changes").fetchone()[0] or 0
        return max(newest, cursor), {(user, mailbox) for _, user, mailbox in rows}


    # -- moving in (IMailImport) and backups -----------------------------------

    IMPORT_BATCH = 100  # messages per transaction: blobs wait in tmp/ < ORPHAN_AGE

    def importMailbox(self, user, name, uidValidity, messages, uidNext=None):
        canonical = self.canonicalName(name)
        userId = self._userId(user)
        with self._write() as txn:
            row = txn.execute("SELECT id, uidValidity FROM mailboxes WHERE userId = ?"
                              " AND name = ?", (userId, canonical)).fetchone()
            if row is None:
                self._insertMailbox(txn, userId, canonical)
                row = txn.execute("SELECT id, uidValidity FROM mailboxes WHERE userId = ?"
                                  " AND name = ?", (userId, canonical)).fetchone()
            mailboxId, validity = row
            hasMessages = txn.execute("SELECT 1 FROM messages WHERE mailboxId = ? LIMIT 1",
                                      (mailboxId,)).fetchone() is not None
            take, keepUids, resuming = importTarget(uidValidity, validity, hasMessages,
                                                    canonical)
            if take:
                txn.execute("UPDATE mailboxes SET uidValidity = ?, uidNext = 1, firstRecent = 1"
                            " WHERE id = ?", (uidValidity, mailboxId))
                # A mailbox made later never gets this UIDVALIDITY again.
                txn.execute("UPDATE users SET lastValidity = max(lastValidity, ?)"
                            " WHERE id = ?", (uidValidity, userId))
                txn.changed(user, canonical)
        box = self.mailboxClass(self, user, canonical, mailboxId)
        count, batch = 0, []
        for message in messages:
            batch.append(message)
            if len(batch) >= self.IMPORT_BATCH:
                count += self._importBatch(box, batch, keepUids, resuming)
                batch = []
        count += self._importBatch(box, batch, keepUids, resuming)
        with self._write() as txn:
            txn.execute("UPDATE mailboxes SET uidNext = max(uidNext, ?) WHERE id = ?",
                        (uidNext or 0, mailboxId))
            txn.execute("UPDATE mailboxes SET firstRecent = uidNext WHERE id = ?", (mailboxId,))
        return count

    def _importBatch(self, box, batch, keepUids, resuming):
        """One transaction of L{importMailbox}: blobs first, outside the lock."""
        if not batch:
            return 0
        written, summaries = [], []
        try:
            for message in batch:
                with message.open() as source:
                    head = source.read(self.inlineLimit + 1)
                    written.append(InlineBlob(head) if len(head) <= self.inlineLimit
                                   else self.blobs.write(head, source))
                summaries.append(self._summarizePending(written[-1]))
        except BaseException:
            for pending in written:
                pending.discard()
            raise
        count = 0
        with self._write() as txn:
            txn.pending.extend(written)
            for message, pending, summary in zip(batch, written, summaries):
                uidNext = box._row(txn.db, "uidNext")[0]
                plan = importPlan(keepUids, resuming, uidNext, message.uid)
                if plan == "skip":
                    pending.discard()
                    continue
                if plan == "keep":
                    txn.execute("UPDATE mailboxes SET uidNext = ? WHERE id = ?",
                                (message.uid, box._id))
                system, letters, _ = box._split(txn, message.flags, True)
                self._addBlob(txn, pending)
                self._keepSummary(txn, pending.blobId, summary)
                self._addMessage(txn, box._id, pending.blobId, pending.size, system, letters,
                                 message.internalDate)
                count += 1
            txn.changed(box.user, box.name)
        return count

    def isEmpty(self):
        """Whether the store holds no message at all (a first start)."""
        return self._read("SELECT 1 FROM messages LIMIT 1").fetchone() is None

    def backup(self, directory):
        """
        A consistent copy of the store in C{directory} (which must not hold
        one): C{index.sqlite} made with SQLite's online backup API while
        other processes go on working, and every blob file it names,
        hard-linked (blobs are immutable) or copied across file systems
        (content kept in rows, L{InlineBlob}, is in the copy already).  The result is
        a store root: L{SQLiteStore} opens it.  I{Blocking.}

        The write lock is held for the page copy (small messages are in
        it: about a second for 200 MB) and for the blob files written
        since the first linking pass; writers wait meanwhile;
        while it is held no blob can go, so every row of the copy finds
        its file.

        @return: C{(messages, blobs)} in the copy.
        """
        target = pathlib.Path(directory)
        if (target / "index.sqlite").exists():
            raise FileExistsError(f"{target / 'index.sqlite'} exists")
        (target / "blobs").mkdir(parents=True, exist_ok=True)
        for entry in list(self.blobs.root.iterdir()):  # most blobs, no lock held
            if entry.is_dir() and entry != self.blobs.tmp:
                for blob in list(entry.iterdir()):
                    self._backupBlob(entry.name + blob.name, target)
        lock, source = self._connect(), self._connect()
        copy = sqlite3.connect(target / "index.sqlite")
        try:
            # The write lock on a connection of its own: no commit, so no
            # blob freed, meanwhile; the WAL lets the backup read beside it.
            # Writers wait in the writer lock for as long as the copy takes
            # (it holds the small messages too), not in SQLite's busy
            # handler, which gives up after BUSY_TIMEOUT_MS.
            with self._writers.held():
                lock.execute("BEGIN IMMEDIATE")
                try:
                    source.backup(copy)
                    named = {row[0] for row in copy.execute(
                        "SELECT id FROM blobs WHERE contentId IS NULL")}  # the rest is copied
                    for blobId in named:
                        self._backupBlob(blobId, target, required=True)
                finally:
                    lock.execute("COMMIT")
            messages, blobs = copy.execute("SELECT (SELECT count(*) FROM messages),"
                                           " (SELECT count(*) FROM blobs)").fetchone()
        finally:
            for db in (lock, source, copy):
                db.close()
        for path in BlobStore(target / "blobs").orphans(named, now=float("inf")):
            os.unlink(path)  # linked in the first pass, expunged before the copy
        for path in [target / "index.sqlite", *(target / "blobs").iterdir()]:
            fsyncDirectory(str(path.parent if path.is_file() else path))
        return messages, blobs

    def _backupBlob(self, blobId, target, required=False):
        path = target / "blobs" / blobId[:2] / blobId[2:]
        if path.exists():
            return
        path.parent.mkdir(exist_ok=True)
        try:
            os.link(self.blobs.path(blobId), path)
        except FileNotFoundError:
            if required:  # under the lock none go: the store lost it
                raise
            # First pass: expunged meanwhile, and not in the copy.
        except OSError:  # another file system
            shutil.copy2(self.blobs.path(blobId), path)

@implementer(IMailbox)
class SQLiteMailbox:
    """One mailbox of a L{SQLiteStore}: its row id, checked by name each call."""

    def __init__(self, store, user, name, mailboxId):
        self.store = store
        self.user = user
        self.name = name
        self._id = mailboxId
        self._appended = False  # by this object, since its last changedSince

    def _row(self, db, columns="uidValidity, uidNext, highestModSeq, firstRecent, keywords"):
        """The mailbox row, or L{MailboxGone} if deleted or renamed away."""
        row = db.execute(f"SELECT name, {columns} FROM mailboxes WHERE id = ?"
                         + self.store._forUpdate(db), (self._id,)).fetchone()
        if row is None or row[0] != self.name:
            raise MailboxGone(self.name)
        return row[1:]

    def uidValidity(self):
        return self._row(self.store._db(), "uidValidity")[0]

    def mailboxId(self):
        return self._row(self.store._db(), "objectId")[0]

    def emailIds(self, uids):
        # RFC 8474 5.1: the blob names the content, and a COPY or MOVE
        # shares it, so its copies keep the EMAILID.  The blob id is the
        # content's SHA-256, the same in every account that holds it: keyed
        # with the store's secret and the user, the EMAILID lets nobody
        # learn whether someone else holds a message, nor test a guess.
        wanted = set(uids)
        rows = self.store._read("SELECT uid, blob FROM messages WHERE mailboxId = ?",
                                (self._id,)) if len(wanted) > 500 else (
            row for uid in sorted(wanted) for row in self.store._read(
                "SELECT uid, blob FROM messages WHERE mailboxId = ? AND uid = ?",
                (self._id, uid)))
        key, user = self.store.objectIdKey, self.user.encode("utf-8", "surrogatepass")
        return {uid: "M" + hmac.new(key, user + b"\0" + blobId.encode(),
                                    hashlib.sha256).hexdigest()[:OBJECTID_DIGITS]
                for uid, blobId in rows if uid in wanted}

    def uidNext(self):
        return self._row(self.store._db(), "uidNext")[0]

    def highestModSeq(self):
        return self._row(self.store._db(), "highestModSeq")[0]

    def changeStamp(self):
        # Appends raise UIDNEXT, every other change HIGHESTMODSEQ; a keyword
        # defined by a STORE that changed no message only the keywords.
        return self._row(self.store._db(), "uidNext, highestModSeq, keywords")

    @staticmethod
    def _flags(keywords, system, letters):
        flags = set(system.split()) if system else set()
        return frozenset(flags | keywords.decode(letters))

    def _infos(self, db, keywords, since=None, byIndex=False):
        # A mailbox has few distinct flag sets: decode each once (a SELECT
        # of 100,000 messages spent a fifth of its time here) and share
        # the frozenset between the messages that carry it.  The rows come
        # in MessageInfo's field order, made into one with tuple.__new__
        # (no keyword parsing: a third of the cost per message).
        decoded = {}
        make = tuple.__new__
        infos = []
        append = infos.append
        # With since and byIndex: the messagesModSeq index finds the
        # changed rows, in mod-sequence order, sorted here ("ORDER BY uid"
        # makes SQLite walk the primary key instead, every row of the
        # mailbox).  Without byIndex (most of the mailbox changed), that
        # walk is the cheaper: one index lookup a row costs more.
        changed = " ORDER BY uid" if since is None else (
            " AND modseq > ?" if byIndex else " AND modseq > ? ORDER BY uid")
        for uid, key, system, letters, size, internalDate, modseq, saveDate in db.execute(
                "SELECT uid, key, system, letters, size, internalDate, modseq,"
                " coalesce(saveDate, internalDate)"  # see _objectIdStep
                " FROM messages WHERE mailboxId = ?" + changed,
                (self._id,) if since is None else (self._id, since)):
            flags = decoded.get((system, letters))
            if flags is None:
                flags = decoded[system, letters] = self._flags(keywords, system, letters)
            append(make(MessageInfo, (uid, key, flags, size, internalDate, modseq, None,
                                      saveDate)))
        if byIndex:
            infos.sort(key=_byUid)
        return infos

    _SNAPSHOT_ROW = "uidValidity, uidNext, highestModSeq, firstRecent, keywords, objectId"

    def snapshot(self, claimRecent=False):
        with self.store._readTransaction() as db:
            validity, uidNext, highest, firstRecent, names, objectId = self._row(
                db, self._SNAPSHOT_ROW)
            # Nothing to claim (RFC 3501 2.3.2): no write transaction, so a
            # SELECT or the scan after a command does not queue for the
            # write lock and fsync a commit that changes nothing.
            if not claimRecent or firstRecent >= uidNext:
                keywords = _keywords(names)
                infos = self._infos(db, keywords)
                claimRecent = False
        if claimRecent:  # RFC 3501 2.3.2: this session is told of them
            with self.store._write(durable=False) as txn:
                validity, uidNext, highest, firstRecent, names, objectId = self._row(
                    txn.db, self._SNAPSHOT_ROW)
                self._claimIn(txn)
                keywords = _keywords(names)
                infos = self._infos(txn.db, keywords)
        return MailboxSnapshot(
            messages=infos, uidValidity=validity, uidNext=uidNext, highestModSeq=highest,
            recent=frozenset(i.uid for i in infos if i.uid >= firstRecent)
            if firstRecent < uidNext else frozenset(),
            keywords=keywords.defined(), keywordsFull=keywords.full(),
            changeStamp=(uidNext, highest, names), mailboxId=objectId,
        )

    def _changesIn(self, db, modseq, row=None):
        """
        Inside a transaction: the mailbox row and what changed after
        C{modseq} (C{(row, infos, vanished)}), for L{_changedSnapshot}.
        """
        row = self._row(db) if row is None else row
        validity, uidNext, highest, firstRecent, names = row
        if highest <= modseq:  # nothing after it: the row was the one query
            return row, [], ()
        # The expungedModSeq index, sorted here: with "ORDER BY uid" SQLite
        # reads the mailbox's whole expunge history instead (0.35 ms for
        # 1,200 expunges, under the write lock after an EXPUNGE; it grew
        # with every expunge and the bench's rounds slowed down, issue 13).
        vanished = tuple(sorted(r[0] for r in db.execute(
            "SELECT uid FROM expunged WHERE mailboxId = ? AND modseq > ?",
            (self._id, modseq))))
        # Each change takes a mod-sequence of its own, so at most
        # highest - modseq rows changed, of at most uidNext - 1: few of
        # them (a session's refresh after a command: one or two rows of
        # 100,000), the index; most (a client back after many changes),
        # the walk (issue 13: 9 ms -> 0.04 ms, and 230 ms either way).
        byIndex = highest - modseq < (uidNext - 1) // 2
        return row, self._infos(db, _keywords(names), modseq, byIndex), vanished

    def _claimIn(self, txn):
        """
        Inside a write transaction: the messages recent now are this
        session's (RFC 3501 2.3.2).  Not durable, as in snapshot: the
        claim is no content; a power loss before the next durable commit
        only shows the messages as \\Recent once more.
        """
        txn.execute("UPDATE mailboxes SET firstRecent = uidNext WHERE id = ?", (self._id,))

    def changedSince(self, modseq, claimRecent=False):
        # After this object's own append there is something to claim (RFC
        # 3501 2.3.2): straight to the write transaction, without the read
        # that would find it out (a hint: the transaction reads again).
        claim = claimRecent and self._appended
        self._appended = False
        if not claim:
            with self.store._readTransaction() as db:
                row = self._row(db)
                # As in snapshot: a claim only when there is something to
                # claim, in one write transaction with the read.
                claim = claimRecent and row[3] < row[1]
                if not claim:
                    result = self._changesIn(db, modseq, row)
        if claim:
            def claimIn(txn):
                result = self._changesIn(txn.db, modseq)  # before the claim: what is recent
                self._claimIn(txn)
                return result

            result = self.store._writeShared(claimIn, durable=False)
        return self._changedSnapshot(modseq, result)

    def _changedSnapshot(self, modseq, result):
        """The L{MailboxSnapshot} of L{_changesIn}'s C{result}."""
        (validity, uidNext, highest, firstRecent, names), infos, vanished = result
        keywords = _keywords(names)
        return MailboxSnapshot(
            messages=infos, uidValidity=validity, uidNext=uidNext, highestModSeq=highest,
            recent=frozenset(i.uid for i in infos if i.uid >= firstRecent),
            keywords=keywords.defined(), keywordsFull=keywords.full(),
            changeStamp=(uidNext, highest, names), since=modseq, vanished=vanished)

    def messages(self):
        with self.store._readTransaction() as db:
            keywords = _keywords(self._row(db, "keywords")[0])
            return self._infos(db, keywords)

    def openMessage(self, uid):
        row = self.store._read(self.store._contentQuery + " AND m.uid = ?", (self._id, uid)).fetchone()
        if row is None:
            raise KeyError(uid)
        try:
            return self.store._openContent(*row[1:])
        except FileNotFoundError:
            # Expunged (and its blob removed) between the query and the open.
            raise KeyError(uid) from None

    def openMessages(self, uids):
        uids = list(uids)
        # A few at a time: the inline octets of each part are in memory
        # together (at most CONTENT_BATCH * INLINE_LIMIT).
        for i in range(0, len(uids), CONTENT_BATCH):
            part = uids[i:i + CONTENT_BATCH]
            found = {row[0]: row[1:] for row in self.store._read(
                self.store._contentQuery + " AND m.uid IN (%s)" % ",".join("?" * len(part)),
                (self._id, *part))}
            for uid in part:
                if uid not in found:
                    continue
                try:
                    content = self.store._openContent(*found[uid])
                except FileNotFoundError:
                    continue  # expunged (and its blob removed) after the query
                yield uid, content

    def summaries(self, uids, structure=True):
        columns = (_STRUCTURE_COLUMNS if structure else "NULL, NULL, NULL") \
            + ", " + _FIELD_COLUMNS
        query = ("SELECT m.uid, m.blob, s.version, " + columns + " FROM messages m"
                 " LEFT JOIN summaries s ON s.blob = m.blob WHERE m.mailboxId = ?")
        wanted = set(uids)
        with self.store._readTransaction() as db:
            self._row(db, "1")
            if len(wanted) > 500:  # most of the mailbox: one pass
                rows = [r for r in db.execute(query, (self._id,)) if r[0] in wanted]
            else:
                ordered = sorted(wanted)
                rows = []
                for i in range(0, len(ordered), 250):
                    part = ordered[i:i + 250]
                    rows += db.execute(query + " AND m.uid IN (%s)" % ",".join("?" * len(part)),
                                       (self._id, *part)).fetchall()
        out, missing = {}, {}
        for row in rows:
            if row[2] != SUMMARY_VERSION:
                missing.setdefault(row[1], []).append(row[0])
            else:
                out[row[0]] = _summaryFrom(row[3:6], row[6:])
        if missing:
            out.update(self._summarizeStored(missing))
        return out

    def _summarizeStored(self, missing):
        """
        Summaries of blobs stored before there were any (an upgraded
        database) or under an older L{SUMMARY_VERSION}: computed now, kept.

        @param missing: C{{blobId: [uid, ...]}}.
        """
        out = {}
        blobIds = list(missing)
        for i in range(0, len(blobIds), SUMMARY_BATCH):
            made = []
            for blobId in blobIds[i:i + SUMMARY_BATCH]:
                try:
                    with self.store._openBlob(blobId) as content:
                        summary = summarize(content)
                except FileNotFoundError:  # expunged meanwhile
                    continue
                made.append((blobId, summary))
                out.update((uid, summary) for uid in missing[blobId])
            with self.store._write() as txn:
                for blobId, summary in made:
                    # Not for a blob whose last reference went meanwhile.
                    if txn.execute("SELECT 1 FROM blobs WHERE id = ?",
                                   (blobId,)).fetchone() is not None:
                        self.store._keepSummary(txn, blobId, summary)
        return out

    def _split(self, txn, flags, allocate):
        """
        Inside C{txn}: C{(system, letters, keywords)} of C{flags}; a new
        keyword is saved in the mailbox row (KeywordLimit changes nothing).
        """
        return self._splitWith(txn, flags, allocate, self._row(txn.db, "keywords")[0])[:3]

    def _splitWith(self, txn, flags, allocate, names):
        """
        L{_split}, the mailbox's keywords column C{names} read in C{txn}
        already. @return: C{(system, letters, keywords, column after)}.
        """
        keywords = _keywords(names)
        system = " ".join(sorted(f for f in flags if f in _SYSTEM))
        letters, changed = keywords.encode(
            sorted(f for f in flags if not f.startswith("\\")), allocate)
        if changed:
            names = json.dumps(keywords.names)
            txn.execute("UPDATE mailboxes SET keywords = ? WHERE id = ?", (names, self._id))
        return system, "".join(sorted(letters)), keywords, names

    def _nextModSeq(self, txn):
        return txn.execute("UPDATE mailboxes SET highestModSeq = highestModSeq + 1"
                           " WHERE id = ? RETURNING highestModSeq", (self._id,)).fetchone()[0]

    def storeFlags(self, uids, mode, flags, unchangedSince=None):
        def store(txn):
            names = self._row(txn.db, "keywords")[0]
            return self._storeIn(txn, names, uids, mode, flags, unchangedSince)[:2]

        # Shared with other sessions' writes waiting meanwhile (one commit).
        return self.store._writeShared(store, durable=False)

    def storeFlagsWithChanges(self, uids, mode, flags, unchangedSince=None, since=0,
                              claimRecent=False):
        # One write transaction (one trip for the caller, issue 13), as in
        # expungeDeleted, shared with other sessions' writes (one commit).
        def store(txn):
            row = self._row(txn.db)
            validity, uidNext, highest, firstRecent, names = row
            results, failed, changed, names = self._storeIn(
                txn, names, uids, mode, flags, unchangedSince)
            if highest == since:
                # Nobody changed the mailbox since the caller's read (not
                # the writers before this one in a shared transaction
                # either: the row is read in it), and the write lock keeps
                # it so: what changed after it is this change alone, known
                # without reading it back.
                result = ((validity, uidNext, max([highest] + [i.modseq for i in changed]),
                           firstRecent, names), changed, ())
            else:
                result = self._changesIn(txn.db, since)
            if claimRecent and firstRecent < uidNext:  # RFC 3501 2.3.2, as in changedSince
                self._claimIn(txn)
            return (results, failed), result

        answer, result = self.store._writeShared(store, durable=False)
        return answer, self._changedSnapshot(since, result)

    def _storeIn(self, txn, names, uids, mode, flags, unchangedSince):
        """
        Inside C{txn}: L{storeFlags}, the mailbox's keywords column C{names}
        read in C{txn}.

        @return: C{(results, failed, changed, names)}: L{storeFlags}'s
            answer, the L{MessageInfo}s of the messages whose flags changed
            (ascending by UID), and the keywords column after the change.
        """
        results, failed, changed = {}, [], []
        wanted = set(uids)
        system, letters, keywords, names = self._splitWith(txn, flags, mode != "remove", names)
        system, letters = set(system.split()), set(letters)
        query = ("SELECT uid, modseq, system, letters, key, size, internalDate,"
                 " coalesce(saveDate, internalDate) FROM messages WHERE mailboxId = ?")
        if len(wanted) > 500:
            rows = txn.execute(query + " ORDER BY uid", (self._id,)).fetchall()
        else:
            # Under the write lock every writer waits for this: one query a
            # chunk, not one a UID (each sqlite call gives up and takes back
            # the GIL, the long tail of the lock's hold, issue 13).
            ordered, rows = sorted(wanted), []
            for i in range(0, len(ordered), 250):
                part = ordered[i:i + 250]
                rows += txn.execute(query + " AND uid IN (%s) ORDER BY uid"
                                    % ",".join("?" * len(part)), (self._id, *part)).fetchall()
        answers, updates = [], []
        for uid, modseq, oldSystem, oldLetters, key, size, internalDate, saveDate in rows:
            if uid not in wanted:
                continue
            if unchangedSince is not None and modseq > unchangedSince:
                failed.append(uid)
                continue
            old = (set(oldSystem.split()), set(oldLetters))
            if mode == "set":
                new = (system, letters)
            elif mode == "add":
                new = (old[0] | system, old[1] | letters)
            else:
                new = (old[0] - system, old[1] - letters)
            newFlags = self._flags(keywords, " ".join(new[0]), new[1])
            if new != old:
                updates.append((uid, new, newFlags, key, size, internalDate, saveDate))
                modseq = None  # taken below
            answers.append([uid, newFlags, modseq])
        if updates:
            # A mod-sequence each, ascending with the UIDs as before, all
            # taken in one statement and written in one executemany.
            first = txn.execute(
                "UPDATE mailboxes SET highestModSeq = highestModSeq + ? WHERE id = ?"
                " RETURNING highestModSeq", (len(updates), self._id)).fetchone()[0] \
                - len(updates) + 1
            txn.db.executemany(
                "UPDATE messages SET system = ?, letters = ?, modseq = ?"
                " WHERE mailboxId = ? AND uid = ?",
                [(" ".join(sorted(new[0])), "".join(sorted(new[1])), first + n, self._id, uid)
                 for n, (uid, new, *_) in enumerate(updates)])
            taken = {}
            for n, (uid, _, newFlags, key, size, internalDate, saveDate) in enumerate(updates):
                taken[uid] = first + n
                changed.append(MessageInfo(uid, key, newFlags, size, internalDate, first + n,
                                           None, saveDate))
            for answer in answers:
                if answer[2] is None:
                    answer[2] = taken[answer[0]]
            txn.changed(self.user, self.name)
        for uid, newFlags, modseq in answers:
            results[uid] = (newFlags, modseq)
        return results, failed, changed, names

    def setFlags(self, uid, flags):
        if uid not in self.storeFlags([uid], "set", flags)[0]:
            raise KeyError(uid)

    def expunge(self, uids):
        def expunge(txn):
            self._row(txn.db, "1")
            self._expunge(txn, uids)

        self.store._writeShared(expunge, durable=False)

    def expungeDeleted(self, uids=None, since=None, claimRecent=False):
        # One write transaction (and so one trip for the caller): which
        # messages are \Deleted, their removal, and what the session is to
        # be told, with nobody's change in between; shared with other
        # sessions' writes (one commit).
        expunged, result = self.store._writeShared(
            lambda txn: self._expungeDeletedIn(txn, uids, since, claimRecent), durable=False)
        return expunged, None if since is None else self._changedSnapshot(since, result)

    def _expungeDeletedIn(self, txn, uids, since, claimRecent):
        """L{expungeDeleted}'s transaction. @return: C{(expunged, result or None)}."""
        row = self._row(txn.db)  # MailboxGone
        wanted = None if uids is None else set(uids)
        if wanted is not None and len(wanted) <= 500:  # UID EXPUNGE: by key
            rows = [row for uid in sorted(wanted) for row in txn.execute(
                "SELECT uid, system FROM messages WHERE mailboxId = ? AND uid = ?",
                (self._id, uid))]
        else:
            # Under the write lock every writer waits for this: the
            # messagesDeleted index holds the \Deleted rows alone.
            rows = txn.execute(DELETED_ROWS, (self._id,)).fetchall()
        doomed = [uid for uid, system in rows if "\\Deleted" in system.split()
                  and (wanted is None or uid in wanted)]
        expunged = [uid for uid, _ in self._expunge(txn, doomed)]
        if since is None:
            return expunged, None
        validity, uidNext, highest, firstRecent, names = row
        if highest == since:
            # As in storeFlagsWithChanges: the expunge (one new
            # mod-sequence) is all that changed after the caller's read.
            result = ((validity, uidNext, highest + bool(expunged), firstRecent, names),
                      [], tuple(expunged))
        else:
            result = self._changesIn(txn.db, since)
        if claimRecent and firstRecent < uidNext:  # RFC 3501 2.3.2, as in changedSince
            self._claimIn(txn)
        return expunged, result

    def _expunge(self, txn, uids):
        """Inside C{txn}: expunge C{uids}. @return: C{[(uid, blob)]} expunged."""
        # One statement a chunk, not one a UID: fewer sqlite calls under
        # the write lock (see _storeIn).
        doomed, ordered = [], sorted(set(uids))
        for i in range(0, len(ordered), 250):
            part = ordered[i:i + 250]
            doomed += txn.execute("DELETE FROM messages WHERE mailboxId = ? AND uid IN (%s)"
                                  " RETURNING uid, blob" % ",".join("?" * len(part)),
                                  (self._id, *part)).fetchall()
        doomed.sort()
        if doomed:
            # Expunges raise HIGHESTMODSEQ too (RFC 7162 3.2), and are
            # recorded with it for QRESYNC's VANISHED (RFC 7162 3.2.10).
            modseq = self._nextModSeq(txn)
            txn.db.executemany("INSERT OR REPLACE INTO expunged (mailboxId, uid, modseq)"
                               " VALUES (?, ?, ?)", [(self._id, uid, modseq) for uid, _ in doomed])
            self.store._unreference(txn, [blobId for _, blobId in doomed])
            txn.changed(self.user, self.name)
        return doomed

    def append(self, source, flags=(), internalDate=None):
        self.uidValidity()  # MailboxGone before writing anything
        uid, _ = self._appendWith(source, flags, internalDate)
        self._appended = True  # see changedSince
        return uid

    def appendWithChanges(self, source, flags=(), internalDate=None, since=0,
                          claimRecent=False):
        # One write transaction, as in storeFlagsWithChanges.  No look at
        # the mailbox before the blob is written: the caller had it open;
        # deleted meanwhile, the transaction says MailboxGone and the blob
        # goes with it.
        uid, result = self._appendWith(source, flags, internalDate, since, claimRecent)
        return uid, self._changedSnapshot(since, result)

    def _appendWith(self, source, flags, internalDate, since=None, claimRecent=False):
        """
        L{append}; with C{since}, L{changedSince}'s C{result} (for
        L{_changedSnapshot}) read in the same transaction.
        @return: C{(uid, result or None)}.
        """
        pending, summary = self.store._writeBlob(b"", source)  # outside the lock
        # Shared with other sessions' writes (one commit, one WAL flush).
        return self.store._writeNew(pending, lambda txn: self._appendIn(
            txn, pending, summary, flags, internalDate, since, claimRecent))

    def _appendIn(self, txn, pending, summary, flags, internalDate, since, claimRecent):
        """L{_appendWith}'s transaction."""
        result = None
        txn.pending.append(pending)
        row = self._row(txn.db) if since is not None else (None,) * 4 + (
            self._row(txn.db, "keywords")[0],)
        validity, uidNext, highest, firstRecent, names = row
        system, letters, keywords, names = self._splitWith(txn, flags, True, names)
        self.store._addBlob(txn, pending)
        self.store._keepSummary(txn, pending.blobId, summary)
        uid = self.store._addMessage(
            txn, self._id, pending.blobId, pending.size, system, letters,
            time.time() if internalDate is None else internalDate)
        txn.changed(self.user, self.name)
        if since is not None:
            # As in storeFlagsWithChanges: when nothing changed after
            # the caller's read, the new message (one new UID and
            # mod-sequence) is all there is to read.
            result = ((validity, uid + 1, highest + 1, firstRecent, names),
                      self._infos(txn.db, keywords, since), ()) \
                if highest == since else self._changesIn(txn.db, since)
            if claimRecent:  # the new message at least (RFC 3501 2.3.2)
                self._claimIn(txn)
        return uid, result

    def _checkWith(self, txn, target):
        """
        Inside C{txn}: both mailboxes still there (L{MailboxGone}), read in
        id order: where that locks them (see L{SQLiteStore._forUpdate}), a
        COPY from A to B and one from B to A never wait on each other.
        """
        for box in sorted((self, target), key=lambda box: box._id):
            box._row(txn.db, "1")

    def _copy(self, txn, uids, target):
        pairs = []
        self._row(txn.db, "1")
        keywords = _keywords(self._row(txn.db, "keywords")[0])
        for uid in sorted(set(uids)):
            row = txn.execute("SELECT system, letters, internalDate, size, blob FROM messages"
                              " WHERE mailboxId = ? AND uid = ?", (self._id, uid)).fetchone()
            if row is None:
                continue
            system, letters, internalDate, size, blobId = row
            flags = self._flags(keywords, system, letters)
            newSystem, newLetters, _ = target._split(txn, flags, True)
            self.store._reference(txn, blobId, size)
            pairs.append((uid, self.store._addMessage(
                txn, target._id, blobId, size, newSystem, newLetters, internalDate)))
        if pairs:
            txn.changed(target.user, target.name)
        return pairs

    def copy(self, uids, target):
        # One transaction: a KeywordLimit part-way rolls the whole COPY
        # back, which the interface allows (it only promises what was
        # copied before stays *if* it stayed) and RFC 3501 6.4.7 prefers.
        def copy(txn):
            self._checkWith(txn, target)
            return self._copy(txn, uids, target)

        return self.store._writeShared(copy)

    def move(self, uids, target):
        # RFC 6851: copy and expunge in one transaction, so a message is
        # never in neither mailbox, nor in both after a crash.
        def move(txn):
            self._checkWith(txn, target)
            pairs = self._copy(txn, uids, target)
            if pairs:
                self._expunge(txn, [uid for uid, _ in pairs])
            return pairs

        return self.store._writeShared(move)


SQLiteStore.mailboxClass = SQLiteMailbox
