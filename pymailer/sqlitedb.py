"""
A SQLite file used from a thread pool by several processes: one
connection per thread (C{sqlite3} connections must not be shared between
threads that run at once), WAL (readers never wait on a writer, and other
processes see every commit), and write transactions that take the lock
first.

Trust: only our own SQL runs here; values are always bound parameters.
"""

from __future__ import annotations

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
    """

    def __init__(self, path, schema=None, durable=False):
        self.path = os.fspath(path)
        self.durable = durable
        self._local = threading.local()
        # WAL is a property of the file: set once, every process gets it.
        self.db().execute("PRAGMA journal_mode=WAL")
        if schema:
            self.db().executescript(schema)

    def db(self):
        """This thread's connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                 check_same_thread=False)
            db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            # Closed when its thread ends (with the threading.local).
            self._local.db = db
        return db

    @contextmanager
    def transaction(self):
        """
        C{BEGIN IMMEDIATE} ... C{COMMIT} (C{ROLLBACK} on any exception):
        IMMEDIATE takes the write lock at once, so two processes never
        both read, then both try to write and one fails.
        """
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
