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
from contextlib import contextmanager, nullcontext

from twisted.logger import Logger

log = Logger()

# How long a statement waits for another process's write lock (seconds).
BUSY_TIMEOUT = 10.0


class WriterLock:
    """
    Where the writers of one SQLite file queue before SQLite's own lock:
    the threads of this process on a lock of their own, then the
    processes on an C{flock} of C{path}.  A writer waiting here wakes
    when the holder lets go; one waiting in SQLite's busy handler polls
    in sleeps of 1, 2, 5, 10 ... up to 100 ms (a STORE waited 0.7 s at
    the 99th percentile under ten sessions).

    The file is opened at the first use and kept open: closing any
    descriptor of a file drops the process's POSIX locks on it, so it is
    never the database's own.  If it cannot be opened (made by another
    user, e.g. root running the admin command), only the threads queue
    here; SQLite's lock still excludes the processes.
    """

    def __init__(self, path, mode=0o600):
        self.path = os.fspath(path)
        self._mode = mode
        self._threads = threading.Lock()
        self._file = None
        self._usable = True  # False once the file could not be opened

    def _opened(self):
        """The lock file, under C{_threads}; C{None} if it cannot be used."""
        if self._file is None and self._usable:
            try:
                self._file = os.fdopen(os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self._mode), "rb")
            except PermissionError:
                self._usable = False
                log.warn("Cannot open {path}: writers of several processes poll"
                         " SQLite's lock", path=self.path)
        return self._file

    @contextmanager
    def held(self):
        """Hold both locks, waiting for them."""
        with self._threads:
            lockFile = self._opened()
            if lockFile is None:
                yield
                return
            fcntl.flock(lockFile, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lockFile, fcntl.LOCK_UN)

    @contextmanager
    def heldIfFree(self):
        """
        Hold both locks if nobody does, without waiting.  Yields whether
        they are held: never if processes cannot queue on the file (one
        may be writing without it).
        """
        if not self._threads.acquire(blocking=False):
            yield False
            return
        try:
            lockFile = self._opened()
            try:
                if lockFile is None:
                    raise BlockingIOError
                fcntl.flock(lockFile, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lockFile, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def locked(self):
        """Whether a thread of this process holds it (for tests)."""
        return self._threads.locked()

    def close(self):
        with self._threads:
            if self._file is not None:
                self._file.close()
                self._file = None


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
    @param queueWriters: L{transaction}s queue for the write lock on a
        L{WriterLock} (C{PATH-writer}, the file made next to the database)
        instead of in SQLite's busy handler: for a file many short
        transactions write at once (the shared connection counts, one or
        two per SMTP connection).
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
        self._writers = WriterLock(self.path + "-writer", 0o644) if queueWriters else None
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
        if self._writers is not None:
            self._writers.close()

    @contextmanager
    def transaction(self):
        """
        C{BEGIN IMMEDIATE} ... C{COMMIT} (C{ROLLBACK} on any exception):
        IMMEDIATE takes the write lock at once, so two processes never
        both read, then both try to write and one fails.
        """
        with self._writers.held() if self._writers is not None else nullcontext():
            db = self.db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

