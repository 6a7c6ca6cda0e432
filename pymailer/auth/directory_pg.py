"""
The accounts directory in PostgreSQL (C{[storage] backend = "postgresql"}):
the same rules and queries as the SQLite one (L{SQLAccountDirectory}), in
the database every node shares, so a user added on one node (or by
C{pymailer user add} anywhere) logs in on every node at once.

Reads run in autocommit mode and see every committed change (nothing is
cached, as with SQLite).  Writes are serialised by a transaction-level
advisory lock (L{pymailer.pg.schema.DIRECTORY_LOCK}), as SQLite's C{BEGIN
IMMEDIATE} serialises them: the checks a change makes ("is it an alias
already?") cannot be raced by a writer on another node.  Changes are the
administrator's, rare: one writer at a time costs nothing.

Trust as in L{pymailer.auth.directory}: input normalised and checked there;
SQL parameterised.  Blocking: call from a thread pool.
"""

import contextlib

from zope.interface import implementer

from pymailer.auth.directory import SQLAccountDirectory
from pymailer.interfaces import IAccountDirectory
from pymailer.pg.schema import DIRECTORY_LOCK


def _pg(sql):
    """The shared SQL's C{?} placeholders in psycopg's spelling."""
    return sql.replace("?", "%s")


class _Handle:
    """A psycopg connection speaking the shared SQL (C{?} placeholders)."""

    def __init__(self, db):
        self.db = db

    def execute(self, sql, args=()):
        return self.db.execute(_pg(sql), args)

    def executemany(self, sql, rows):
        with self.db.cursor() as cursor:
            cursor.executemany(_pg(sql), rows)


@implementer(IAccountDirectory)
class PostgreSQLAccountDirectory(SQLAccountDirectory):
    """
    @param pool: a psycopg_pool C{ConnectionPool} (autocommit connections)
        on a database with the schema (L{pymailer.pg.schema}); shared, not
        closed here.
    """

    def __init__(self, pool):
        self.pool = pool

    def _one(self, sql, *args):
        with self.pool.connection() as db:
            return db.execute(_pg(sql), args).fetchone()

    def _rows(self, sql, *args):
        with self.pool.connection() as db:
            return db.execute(_pg(sql), args).fetchall()

    @contextlib.contextmanager
    def _write(self):
        with self.pool.connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (DIRECTORY_LOCK,))
            yield _Handle(db)
