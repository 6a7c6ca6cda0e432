"""
Small SQLite files several threads and processes share (greylist triplets,
rate-limit counters): one connection per thread, WAL, so that readers never
wait on a writer and every process sees the others' commits.
"""

import sqlite3
import threading


class ThreadConnections:
    """
    A connection per thread to C{path}, each made on first use with the
    schema C{schema} (C{CREATE ... IF NOT EXISTS} statements).  Counters
    and caches, not mail: C{synchronous=NORMAL}, so a power cut may lose
    the last commits but never corrupts the file.
    """

    def __init__(self, path, schema):
        self.path = str(path)
        self.schema = schema
        self._local = threading.local()

    def get(self):
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(self.schema)
            self._local.db = db
        return db
