"""
The PostgreSQL L{IMailStore} (C{[storage] backend = "postgresql"}): the
message store of many nodes on one database, metadata and content alike,
so that nodes on different machines share everything through the DSN.

It is the SQLite store (L{pymailer.store.sqlite}) on another engine: the
same tables (in the PostgreSQL schema C{mailstore}, made by migration step
2 of L{pymailer.pg.schema}) and the same queries, which L{_translate}
turns into PostgreSQL's dialect (placeholders, C{INSERT OR IGNORE/REPLACE},
two-argument C{max}, schema-qualified tables).  What differs is overridden
here: transactions, locks, content and change events.

Transactions and locks: every change is one transaction on one pooled
connection (L{pymailer.pg.pool}).  UIDs and MODSEQs come from C{UPDATE
mailboxes ... RETURNING}, and a write transaction that reads the mailbox
row reads it C{FOR UPDATE} (L{PostgreSQLStore._forUpdate}): the row lock is
held to the commit, so two nodes never hand out the same UID, and keyword
letters are never allocated twice.  A delivery or an APPEND returns once
PostgreSQL has committed it (the 250 and the OK depend on it).

Content: blobs as in the SQLite store (content-addressed, reference
counted, shared by copies and by the recipients of one message), kept in
C{blob_chunks} rows of L{CHUNK} octets and read by range
(L{ChunkedContent}), never whole unless small.  A blob whose last
reference goes is only marked (C{freedAt}); its rows go after
L{FREED_GRACE} seconds (L{PostgreSQLStore.sweep}), so a reader that opened
the message before the expunge (a FETCH, a POP3 RETR) still reads it all,
and the same content delivered again meanwhile takes it back.

Change events across nodes: each write transaction sends
C{NOTIFY} on L{CHANNEL} (delivered by PostgreSQL at the commit, never for
a rollback); a listener thread per store object (a connection of its own
in C{LISTEN}, L{pymailer.pg.listen}) collects other store objects' events,
and L{pymailer.store.notify.ChangeNotifier} takes them through
L{IExternalChanges} as it does the SQLite store's change log: an IDLE
session on one node hears of a delivery made on another within its poll
interval.  Events sent while the listener is disconnected are lost: once
it is back, L{PostgreSQLStore.changesSince} says "anything may have
changed" (C{None}), and every session refreshes through C{changedSince}.

POP3's maildrop lock: a session-level advisory lock on a connection of
its own, held until released or until the connection (the node) dies.

What it trusts: the database and its administrator (the DSN); mailbox
names and flags from clients are validated before they reach a query
(as in the SQLite store), and every query is parameterised.  Every method
blocks: call it from a thread pool.
"""

import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
from contextlib import contextmanager

from twisted.logger import Logger
from zope.interface import implementer

from pymailer.message.summary import VERSION as SUMMARY_VERSION
from pymailer.interfaces import IMessageContent
from pymailer.pg.listen import ChannelListener
from pymailer.store import MaildropLocked
from pymailer.store.blobs import PendingBlob
from pymailer.store.content import BytesContent, _Positioned
from pymailer.store.sqlite import (
    SPOOL_IN_MEMORY, SQLiteStore, _MaildropLock, _summaryRow, _Transaction)

log = Logger()

CHUNK = 256 * 1024          # octets per blob_chunks row
FREED_GRACE = 600           # seconds a freed blob's content stays readable
CHANNEL = "pymailer_store"  # NOTIFY channel of the message store
SCHEMA = "mailstore"
EVENTS_KEPT = 10_000        # other nodes' events kept for the poller
LISTEN_WAIT = 5.0           # seconds the first poll waits for LISTEN
SWEEP_INTERVAL = FREED_GRACE / 2  # seconds between sweeps (by the listener thread)
ORPHAN_BATCH = 500                # blob files looked up at a time

_TABLES = ("users", "mailboxes", "subscriptions", "messages", "expunged", "blobs",
           "blob_chunks", "settings", "summaries")
_TABLE = re.compile(r"\b(FROM|JOIN|INTO|UPDATE|TABLE)\s+(%s)\b" % "|".join(_TABLES))
_MAX2 = re.compile(r"\bmax\((\w+), \?\)")
_IGNORE = re.compile(r"^INSERT OR IGNORE INTO (.*)$", re.S)
_REPLACE = re.compile(r"^INSERT OR REPLACE INTO (\w+) \(([^)]*)\)(.*)$", re.S)
# Primary keys, for INSERT OR REPLACE (ON CONFLICT needs its target).
_KEYS = {"expunged": ("mailboxId", "uid")}
_translated = {}


def _translate(sql):
    """
    The SQLite store's SQL in PostgreSQL's dialect (cached: the queries
    are a few dozen constant strings).
    """
    done = _translated.get(sql)
    if done is not None:
        return done
    out = sql.replace("%", "%%")
    out = _MAX2.sub(r"GREATEST(\1, ?)", out)  # the scalar max of two values
    replace = _REPLACE.match(out)
    if replace:
        table, columns, rest = replace.groups()
        names = [c.strip() for c in columns.split(",")]
        keys = _KEYS[table]
        out = (f"INSERT INTO {table} ({columns}){rest} ON CONFLICT ({', '.join(keys)})"
               " DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in names
                                             if c not in keys))
    ignore = _IGNORE.match(out)
    if ignore:
        out = f"INSERT INTO {ignore.group(1)} ON CONFLICT DO NOTHING"
    out = _TABLE.sub(rf"\1 {SCHEMA}.\2", out).replace("?", "%s")
    _translated[sql] = out
    return out


class _Rows:
    """A query's rows, fetched (the connection may go back to the pool)."""

    def __init__(self, rows):
        self._rows = rows
        self._next = 0

    def fetchone(self):
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self):
        rows, self._next = self._rows[self._next:], len(self._rows)
        return rows

    def __iter__(self):
        return iter(self.fetchall())


class _Connection:
    """A psycopg connection that takes the SQLite store's SQL (L{_translate})."""

    def __init__(self, conn, writing):
        self.conn = conn
        self.writing = writing  # in a write transaction: mailbox rows are locked

    def execute(self, sql, args=()):
        cursor = self.conn.execute(_translate(sql), args)
        return _Rows(cursor.fetchall() if cursor.description else [])

    def executemany(self, sql, rows):
        with self.conn.cursor() as cursor:
            cursor.executemany(_translate(sql), rows)


class _PooledReads:
    """Single reads outside a transaction, each on a connection from the pool."""

    writing = False

    def __init__(self, pool):
        self.pool = pool

    def execute(self, sql, args=()):
        with self.pool.connection() as conn:
            return _Connection(conn, False).execute(sql, args)


class _PendingBlob(PendingBlob):
    """
    A message's octets spooled to a temporary file on this node (for its
    digest, size and summary) before the transaction that stores them in
    chunks; never installed as a file.
    """

    def place(self):
        """Nothing to place: the chunks go in with the transaction."""

    def chunks(self):
        with open(self.tempPath, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk


@implementer(IMessageContent)
class ChunkedContent(_Positioned):
    """
    A blob larger than one chunk, read by range: C{readAt} fetches only
    the chunks it covers (and keeps the last one, for sequential reads).
    """

    def __init__(self, pool, blobId, size, first):
        self._pool, self._blobId, self.size = pool, blobId, size
        self._last = (0, first)
        self.closed = False

    def _chunks(self, first, last):
        cached = self._last
        if first == last == cached[0]:
            return [cached[1]]
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT seq, chunk FROM {SCHEMA}.blob_chunks WHERE blob = %s"
                " AND seq BETWEEN %s AND %s ORDER BY seq",
                (self._blobId, first, last)).fetchall()
        if [seq for seq, _ in rows] != list(range(first, last + 1)):
            raise OSError(f"message content {self._blobId} is gone (freed long ago)")
        self._last = (rows[-1][0], bytes(rows[-1][1]))
        return [bytes(chunk) for _, chunk in rows]

    def readAt(self, offset, length):
        if self.closed:
            raise ValueError("I/O operation on closed message content")
        length = max(min(length, self.size - offset), 0)
        if length == 0:
            return b""
        first, last = offset // CHUNK, (offset + length - 1) // CHUNK
        data = b"".join(self._chunks(first, last))
        start = offset - first * CHUNK
        return data[start:start + length]

    def duplicate(self):
        if self.closed:
            raise ValueError("I/O operation on closed message content")
        return ChunkedContent(self._pool, self._blobId, self.size, self._chunks(0, 0)[0])

    def close(self):
        self.closed = True


class ChunkedBlobs:
    """The blobs of a L{PostgreSQLStore}: written on this node, kept in chunks."""

    def __init__(self, pool):
        self.pool = pool

    def write(self, prefix, source):
        """
        Spool C{prefix} + C{source} to a temporary file (no fsync:
        PostgreSQL's commit makes it durable).  I{Blocking.}

        @return: a L{_PendingBlob}.
        """
        digest = hashlib.sha256(prefix)
        size = len(prefix)
        fd, tempPath = tempfile.mkstemp(prefix="pymailer-blob-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(prefix)
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
        except BaseException:
            os.unlink(tempPath)
            raise
        return _PendingBlob(self, tempPath, digest.hexdigest(), size)

    def open(self, blobId):
        """
        @return: an L{IMessageContent}: in memory when it is one chunk
            (most mail: one query), else a L{ChunkedContent}.
        @raise FileNotFoundError: no such blob.
        """
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT b.size, c.chunk FROM {SCHEMA}.blobs b JOIN {SCHEMA}.blob_chunks c"
                " ON c.blob = b.id AND c.seq = 0 WHERE b.id = %s", (blobId,)).fetchone()
        if row is None:
            raise FileNotFoundError(blobId)
        size, first = row
        if size <= CHUNK:
            return BytesContent(first)
        return ChunkedContent(self.pool, blobId, size, bytes(first))

    def remove(self, blobId):
        """Nothing to remove: chunks exist only with their committed row."""


class PostgreSQLStore(SQLiteStore):
    """
    L{IMailStore}, L{IExternalChanges} and L{IMailImport} on the database
    of C{pool} (a L{pymailer.pg.pool.Pool}, its schema migrated).
    Thread-safe: each call takes a connection from the pool.
    """

    def __init__(self, pool, blobDirectory=None):
        """
        @param blobDirectory: keep the content in files there, shared by
            every node (L{pymailer.store.sharedblobs}), instead of in
            C{blob_chunks} rows (C{None}).
        """
        self.pool = pool
        self.blobs = ChunkedBlobs(pool)
        self._blobFiles = blobDirectory is not None
        if self._blobFiles:
            from pymailer.store.sharedblobs import SharedFileBlobs

            self.blobs = SharedFileBlobs(blobDirectory, self.blobs)
        self._orphanCursor = 0  # the next of the 256 blob subdirectories a sweep scans
        self.origin = secrets.token_hex(8)
        self._local = threading.local()
        self._reads = _PooledReads(pool)
        # (seq, user, mailbox) from other store objects; (seq, None, None)
        # when events may have been missed (the listener reconnected).
        self._events = []
        self._seq = 0
        self._eventsLock = threading.Lock()
        self._listener = ChannelListener(
            pool.conninfo, CHANNEL, self._heard, self._missed, "pymailer-store-listen",
            idle=self.sweep, idleEvery=SWEEP_INTERVAL)
        self._objectIdKey = None
        # Nothing touches the database here: twistd builds the store, then
        # forks (see L{pymailer.pg.pool.Pool}).  The listener thread sweeps.

    # -- connections and transactions ---------------------------------------

    def _db(self):
        return getattr(self._local, "current", None) or self._reads

    def _forUpdate(self, db):
        # In a write transaction a mailbox row is read FOR UPDATE, so what
        # the transaction reads of it (UIDNEXT, the keywords) stays true to
        # its commit, whichever node writes.
        return " FOR UPDATE" if db.writing else ""

    @contextmanager
    def _transaction(self, writing):
        with self.pool.connection() as conn:
            db = _Connection(conn, writing)
            self._local.current = db
            try:
                with conn.transaction():
                    if not writing:
                        # One snapshot for the reads (the mailbox row and
                        # its messages agree), as SQLite's read transaction.
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ,"
                                     " READ ONLY")
                    yield db
            finally:
                self._local.current = None

    @contextmanager
    def _readTransaction(self):
        with self._transaction(False) as db:
            yield db

    @contextmanager
    def _write(self, durable=True):
        """
        One transaction; its NOTIFYs go out at the commit, then this
        process's listeners are told.  A failure rolls everything back.
        Not C{durable} (flag changes, expunges: see the SQLite store's
        C{_write}): the commit does not wait for the WAL flush
        (C{synchronous_commit = off}, this transaction only): atomic, and
        only a crash of the database server can undo it.
        """
        txn = None
        try:
            with self._transaction(True) as db:
                if not durable:
                    db.conn.execute("SET LOCAL synchronous_commit TO off")
                txn = _Transaction(db)
                yield txn
                for user, mailbox in txn.touched:
                    db.conn.execute("SELECT pg_notify(%s, %s)",
                                    (CHANNEL, json.dumps([self.origin, user, mailbox])))
        finally:
            for pending in txn.pending if txn is not None else ():
                pending.discard()  # stored (or rolled back): the spool goes
        for user, mailbox in txn.touched:
            self._notify(user, mailbox)

    def _syncWal(self):
        """Nothing to flush: a commit here is durable when it returns."""

    def _writeShared(self, work, durable=True):
        """
        A transaction of its own: concurrent writers here commit in
        parallel on their own connections (row locks, not one write lock),
        and the server groups their WAL flushes itself (C{commit_delay}).
        """
        with self._write(durable) as txn:
            return work(txn)

    @property
    def objectIdKey(self):
        """
        The key EMAILIDs are derived with (see the SQLite store), made by
        the first node that needs it; the schema itself is
        L{pymailer.pg.schema}'s business (C{pymailer db migrate}).
        """
        if self._objectIdKey is None:
            with self._write() as txn:
                txn.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)",
                            ("objectIdKey", secrets.token_hex(32)))
                self._objectIdKey = bytes.fromhex(txn.execute(
                    "SELECT value FROM settings WHERE name = 'objectIdKey'").fetchone()[0])
        return self._objectIdKey

    # -- blobs ----------------------------------------------------------------

    def _writeBlob(self, prefix, source):
        """
        Always through a temporary file: chunks are stored from it, and
        shared blob files are written only there (L{pymailer.store.sharedblobs}
        says why: nothing but the sweep unlinks one).
        """
        return self._summarizeAndPlace(self.blobs.write(prefix, source))

    def _addBlob(self, txn, pending):
        """Inside C{txn}: a reference to the content, its chunks if it is new."""
        (inserted,) = txn.db.conn.execute(
            f"INSERT INTO {SCHEMA}.blobs (id, refs, size) VALUES (%s, 1, %s)"
            " ON CONFLICT (id) DO UPDATE SET refs = blobs.refs + 1, freedAt = NULL"
            " RETURNING xmax = 0", (pending.blobId, pending.size)).fetchone()
        if self._blobFiles:
            # Under the row lock: a sweep removing this content has
            # committed, or waits for this transaction (sharedblobs).
            pending.install()
        elif inserted:
            # A chunk at a time: a large message is never whole in memory.
            # Empty content is one empty chunk (ChunkedBlobs.open reads seq 0).
            for seq, chunk in enumerate(pending.chunks() if pending.size else [b""]):
                txn.db.conn.execute(
                    f"INSERT INTO {SCHEMA}.blob_chunks (blob, seq, chunk) VALUES (%s, %s, %s)",
                    (pending.blobId, seq, chunk))

    def _keepSummary(self, txn, blobId, summary):
        if summary is None:
            return
        # PostgreSQL's text holds no NUL (a header may): dropped.
        row = tuple(v.replace("\x00", "") if isinstance(v, str) else v
                    for v in _summaryRow(summary))
        txn.db.conn.execute(  # one of an older SUMMARY_VERSION is replaced
            f"DELETE FROM {SCHEMA}.summaries WHERE blob = %s AND version != %s",
            (blobId, SUMMARY_VERSION))
        txn.db.conn.execute(
            f"INSERT INTO {SCHEMA}.summaries VALUES (%s, %s" + ", %s" * len(row) + ")"
            " ON CONFLICT (blob) DO NOTHING", (blobId, SUMMARY_VERSION) + row)

    # The content is never in the blobs row (blob_chunks, or shared files).
    _contentQuery = "SELECT m.uid, m.blob, NULL FROM messages m WHERE m.mailboxId = ?"

    def _openBlob(self, blobId):
        return self.blobs.open(blobId)

    def _reference(self, txn, blobId, size):
        # A copy: the source message holds the blob (its mailbox row is
        # locked), so the row and its chunks are there.
        txn.db.conn.execute(
            f"UPDATE {SCHEMA}.blobs SET refs = refs + 1, freedAt = NULL WHERE id = %s",
            (blobId,))

    def _unreference(self, txn, blobIds):
        # In one order (see _forUpdate): two expunges of shared blobs never
        # wait on each other.
        for blobId in sorted(blobIds):
            txn.db.conn.execute(
                f"UPDATE {SCHEMA}.blobs SET refs = refs - 1, freedAt = CASE WHEN refs <= 1"
                " THEN now() END WHERE id = %s", (blobId,))

    def sweep(self, now=None):
        """
        Remove the blobs freed more than L{FREED_GRACE} seconds ago, with
        their chunks and summaries (any node may; each row goes once).

        @return: how many blobs went.
        """
        if self._blobFiles:
            # One subdirectory a sweep (every node's listener sweeps every
            # SWEEP_INTERVAL): the listener never stops for long to scan a
            # large directory, and an orphan goes within a day.
            self.adoptOrphans(now, [f"{self._orphanCursor:02x}"])
            self._orphanCursor = (self._orphanCursor + 1) % 256
        with self._write() as txn:
            gone = txn.db.conn.execute(
                f"DELETE FROM {SCHEMA}.blobs WHERE refs <= 0 AND freedAt <"
                " now() - make_interval(secs => %s) RETURNING id", (FREED_GRACE,)).fetchall()
            if gone:
                txn.db.conn.execute(f"DELETE FROM {SCHEMA}.summaries WHERE blob = ANY(%s)",
                                    ([blobId for (blobId,) in gone],))
            if self._blobFiles:
                # Before the commit, the rows locked (see sharedblobs).
                for (blobId,) in gone:
                    self.blobs.unlink(blobId)
        return len(gone)

    def adoptOrphans(self, now=None, subdirectories=None):
        """
        Blob files no row names (a crash between a file and its commit, a
        duplicate delivery's file) become freed rows, which the sweep then
        removes with the row-lock rules of L{pymailer.store.sharedblobs}.

        @param subdirectories: the blob subdirectories (C{"00"} to C{"ff"})
            to look in; all by default.
        @return: how many files were adopted.
        """
        adopted = 0
        batch = []
        for candidate in self.blobs.orphanFiles(now, subdirectories):
            batch.append(candidate)
            if len(batch) == ORPHAN_BATCH:
                adopted += self._adopt(batch)
                batch = []
        return adopted + (self._adopt(batch) if batch else 0)

    def _adopt(self, batch):
        with self._write() as txn:
            rows = txn.db.conn.execute(
                f"INSERT INTO {SCHEMA}.blobs (id, refs, size, freedAt)"
                " SELECT id, 0, size, now() - make_interval(secs => %s)"
                " FROM unnest(%s::text[], %s::integer[]) AS f(id, size)"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                (FREED_GRACE + 1, [b for b, _ in batch], [n for _, n in batch])).fetchall()
        return len(rows)

    # -- accounts, maildrop lock, spools ------------------------------------

    @contextmanager
    def _takenMeanwhile(self, name):
        """
        A mailbox name another node took between the check and the commit
        (the unique key says so, and the transaction rolled back): the same
        KeyError as when it was there before.
        """
        from psycopg.errors import UniqueViolation

        try:
            yield
        except UniqueViolation:
            raise KeyError(name) from None

    def createMailbox(self, user, name, specialUse=None):
        with self._takenMeanwhile(name):
            SQLiteStore.createMailbox(self, user, name, specialUse)

    def renameMailbox(self, user, oldName, newName):
        with self._takenMeanwhile(newName):
            SQLiteStore.renameMailbox(self, user, oldName, newName)

    def lockMaildrop(self, user):
        from pymailer.pg.pool import connect

        key = int.from_bytes(hashlib.sha256(
            b"pop3\0" + user.encode("utf-8", "surrogatepass")).digest()[:8], "big", signed=True)
        conn = connect(self.pool.conninfo)
        try:
            (locked,) = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        except BaseException:
            conn.close()
            raise
        if not locked:
            conn.close()
            raise MaildropLocked(user)
        # Closing the session releases its locks.
        return _MaildropLock(conn, type(conn).close)

    def newAppendSpool(self):
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)

    # No file backup of ours: the mail is in the database, which PostgreSQL's
    # own tools back up (pg_dump, continuous archiving; see cli.cmdBackup).
    backup = None

    # -- other nodes' changes (IExternalChanges) ------------------------------

    def dataVersion(self):
        """How many events other store objects sent (starts the listener)."""
        self._listener.start(LISTEN_WAIT)
        return self._seq

    def changesSince(self, cursor):
        with self._eventsLock:
            if cursor is None:
                return self._seq, set()
            changed = {(user, mailbox) for seq, user, mailbox in self._events if seq > cursor}
            # Missed, or forgotten (more than EVENTS_KEPT since cursor).
            if (None, None) in changed or (self._events and self._events[0][0] > cursor + 1):
                return self._seq, None
            return self._seq, changed

    def _missed(self):
        """The listener was cut off: any mailbox may have changed meanwhile."""
        self._record(None, None)

    def _record(self, user, mailbox):
        with self._eventsLock:
            self._seq += 1
            self._events.append((self._seq, user, mailbox))
            if len(self._events) > EVENTS_KEPT:
                del self._events[:len(self._events) - EVENTS_KEPT]

    def _heard(self, payload):
        try:
            origin, user, mailbox = json.loads(payload)
        except ValueError:
            return
        if origin == self.origin:  # ours: told directly after the commit
            return
        self._record(user, mailbox)

    def close(self):
        """Stop listening (the listener thread ends within a second)."""
        self._listener.close()
