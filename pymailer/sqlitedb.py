"""
A SQLite file used from a thread pool by several processes: one
connection per thread (C{sqlite3} connections must not be shared between
threads that run at once), WAL (readers never wait on a writer, and other
processes see every commit), and write transactions that take the lock
first.

Trust: only our own SQL runs here; values are always bound parameters.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from contextlib import contextmanager

# How long a statement waits for another process's write lock (seconds).
BUSY_TIMEOUT = 10.0


class ThreadConnections:
    """
    The connections of one SQLite file, one per thread, in autocommit mode
    (every read sees the latest commit; writes of several statements use
    L{transaction}).

    @param schema: C{CREATE ... IF NOT EXISTS} statements run once, when
        the file is opened (greylist triplets, rate-limit counters).
    @param durable: C{synchronous=FULL}; otherwise NORMAL, where a power cut
        may lose the last commits (for state that can be lost: sessions,
        counters), never corrupt the file.
    @param private: a file this creates is readable by its owner only
        (password hashes, session tokens).
    @param foreignKeys: enforce the schema's C{REFERENCES}.
    @param busyTimeout: how long a statement waits for another process's
        write lock (seconds).
    @param queueWriters: L{transaction}s queue for the write lock on locks
        that wake the next writer when the holder lets go (a
        C{threading.Lock}, then an C{flock} of C{PATH-writer}, the file
        made next to the database) instead of in SQLite's busy handler,
        which polls in sleeps of 1, 2, 5, 10 ... ms: for a file many
        short transactions write at once (the shared connection counts,
        one or two per SMTP connection).
    """

    def __init__(self, path, schema=None, durable=False, private=False, foreignKeys=False,
                 busyTimeout=BUSY_TIMEOUT, queueWriters=False):
        self.path = os.fspath(path)
        self.durable = durable
        self.foreignKeys = foreignKeys
        self.busyTimeout = busyTimeout
        self._local = threading.local()
        self._opened = []  # every connection, for close()
        self._lock = threading.Lock()
        self._writers = threading.Lock() if queueWriters else None
        self._writerFile = None
        if private and not os.path.exists(self.path):
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass  # another process was first
        # WAL is a property of the file: set once, every process gets it.
        self.db().execute("PRAGMA journal_mode=WAL")
        if schema:
            self.db().executescript(schema)

    def db(self):
        """This thread's connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=self.busyTimeout, isolation_level=None,
                                 check_same_thread=False)
            db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            if self.foreignKeys:
                db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
            with self._lock:
                self._opened.append(db)
        return db

    def close(self):
        """
        Close every connection opened here (at shutdown, when no thread
        uses them); a later L{db} opens a new one.
        """
        with self._lock:
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()
        self._local = threading.local()
        if self._writerFile is not None:
            with self._writers:
                self._writerFile.close()
                self._writerFile = None

    @contextmanager
    def transaction(self):
        """
        C{BEGIN IMMEDIATE} ... C{COMMIT} (C{ROLLBACK} on any exception):
        IMMEDIATE takes the write lock at once, so two processes never
        both read, then both try to write and one fails.
        """
        with self._queued():
            db = self.db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _queued(self):
        """Hold this file's writer locks (C{queueWriters}), if it has them."""
        if self._writers is None:
            yield
            return
        with self._writers:
            if self._writerFile is None:
                # Kept open: closing any descriptor of a file drops the
                # process's POSIX locks on it, so never the database's own.
                self._writerFile = open(self.path + "-writer", "a")
            fcntl.flock(self._writerFile, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._writerFile, fcntl.LOCK_UN)
