"""
The counters behind rate limits, login lockouts and per-address connection
limits (L{ILimitStore}) in the PostgreSQL database every node shares
(C{[storage] backend = "postgresql"}): a guesser whose connections land on
three nodes is counted once and locked out on all three, and a client's
connections are limited across nodes as on one.

The tables are migration step 3 of L{pymailer.pg.schema}.  Each change is
one transaction that first takes a transaction-level advisory lock on its
key (L{LIMITS_LOCK_CLASS}, the key's hash), so two nodes counting the same
key at once are serialised and never lose a count, while other keys go on
in parallel.  Bucket and failure times are the callers' clock (the nodes'
wall clocks, kept by NTP: a skew of a second or two moves a refill or a
window by as much); connection counters' leases are the database's clock,
one clock for every node (see L{pymailer.limits} for the lease).

What it trusts: the database; keys (addresses, account names) only ever
travel as bound parameters.  Every method blocks: call it from a thread
pool.
"""

import time

from zope.interface import implementer

from pymailer.interfaces import ILimitStore
from pymailer.limits import (
    CONNECTION_LEASE, PURGE_EVERY, STALE_AFTER, newCounter, refilled)
from pymailer.pg.schema import LIMITS_LOCK_CLASS


# In a transaction that changes counters: its commit does not wait for the
# WAL flush (synchronous_commit off, this transaction only).  Counters, not
# mail: a crash of the database server may lose the last changes, as the
# SQLite counters' synchronous=NORMAL may, and never corrupts anything.
_NO_FLUSH = "set_config('synchronous_commit', 'off', true)"


@implementer(ILimitStore)
class PostgreSQLLimits:
    """
    @param pool: a L{pymailer.pg.pool.Pool} on a database with the schema.
    @param lease: seconds this counter's connection counts last unless renewed.
    """

    blocking = True

    def __init__(self, pool, lease=CONNECTION_LEASE):
        self.pool = pool
        self.lease = lease
        self.counter = newCounter()
        self._changes = 0

    def _change(self, lockKey, f):
        """
        Run C{f(db)} in one transaction holding the advisory lock of
        C{lockKey} (a collision of two keys' hashes only serialises them).
        """
        with self.pool.connection() as db, db.transaction():
            db.execute(f"SELECT {_NO_FLUSH}, pg_advisory_xact_lock(%s, hashtext(%s))",
                       (LIMITS_LOCK_CLASS, lockKey))
            result = f(db)
        self._changes += 1
        if self._changes % PURGE_EVERY == 0:
            self._purge()
        return result

    def _purge(self):
        cutoff = time.time() - STALE_AFTER
        with self.pool.connection() as db, db.transaction():
            db.execute(f"SELECT {_NO_FLUSH}")
            db.execute("DELETE FROM limit_buckets WHERE at < %s", (cutoff,))
            db.execute("DELETE FROM limit_failures WHERE at < %s", (cutoff,))
            db.execute("DELETE FROM limit_lockouts WHERE until < %s", (cutoff,))

    # -- rate limits ------------------------------------------------------

    @staticmethod
    def _tokens(db, bucket, key, limit, period, now):
        return refilled(db.execute(
            "SELECT tokens, at FROM limit_buckets WHERE bucket = %s AND key = %s",
            (bucket, key)).fetchone(), limit, period, now)

    def take(self, bucket, key, limit, period, now, count=1):
        def take(db):
            tokens = self._tokens(db, bucket, key, limit, period, now)
            ok = tokens >= count
            db.execute(
                "INSERT INTO limit_buckets (bucket, key, tokens, at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (bucket, key) DO UPDATE SET tokens = EXCLUDED.tokens,"
                " at = EXCLUDED.at", (bucket, key, tokens - count if ok else tokens, now))
            return ok
        return self._change(f"bucket\n{bucket}\n{key}", take)

    def available(self, bucket, key, limit, period, now):
        with self.pool.connection() as db:
            return self._tokens(db, bucket, key, limit, period, now)

    # -- login failures -----------------------------------------------------

    def recordFailure(self, kind, key, now, window, maxFailures, lockoutTime):
        def record(db):
            db.execute("INSERT INTO limit_failures (kind, key, at) VALUES (%s, %s, %s)",
                       (kind, key, now))
            db.execute("DELETE FROM limit_failures WHERE kind = %s AND key = %s AND at <= %s",
                       (kind, key, now - window))
            (count,) = db.execute(
                "SELECT count(*) FROM limit_failures WHERE kind = %s AND key = %s",
                (kind, key)).fetchone()
            if count < maxFailures:
                return False
            db.execute(
                "INSERT INTO limit_lockouts (kind, key, until) VALUES (%s, %s, %s)"
                " ON CONFLICT (kind, key) DO UPDATE SET until = EXCLUDED.until",
                (kind, key, now + lockoutTime))
            db.execute("DELETE FROM limit_failures WHERE kind = %s AND key = %s", (kind, key))
            return True
        return self._change(f"failures\n{kind}\n{key}", record)

    def lockedOut(self, kind, key, now):
        with self.pool.connection() as db:
            row = db.execute("SELECT until FROM limit_lockouts WHERE kind = %s AND key = %s",
                             (kind, key)).fetchone()
        return row is not None and now < row[0]

    def clearFailures(self, kind, key):
        self._change(f"failures\n{kind}\n{key}", lambda db: db.execute(
            "DELETE FROM limit_failures WHERE kind = %s AND key = %s", (kind, key)))

    # -- open connections per address --------------------------------------

    def openConnection(self, scope, host, limit):
        # One statement (schema step 3's function): one round trip.
        with self.pool.connection() as db:
            return db.execute("SELECT limit_open_connection(%s, %s, %s, %s, %s)",
                              (scope, host, self.counter, limit, self.lease)).fetchone()[0]

    def closeConnection(self, scope, host):
        key = (scope, host, self.counter)
        with self.pool.connection() as db, db.transaction():
            db.execute(f"SELECT {_NO_FLUSH}")
            db.execute("UPDATE limit_connections SET open = open - 1"
                       " WHERE scope = %s AND host = %s AND counter = %s", key)
            db.execute("DELETE FROM limit_connections WHERE scope = %s AND host = %s"
                       " AND counter = %s AND open <= 0", key)

    def keepAlive(self):
        with self.pool.connection() as db, db.transaction():
            db.execute(f"SELECT {_NO_FLUSH}")
            db.execute(
                "INSERT INTO limit_counters (counter, alive_until)"
                " VALUES (%s, now() + make_interval(secs => %s))"
                " ON CONFLICT (counter) DO UPDATE SET alive_until = EXCLUDED.alive_until",
                (self.counter, self.lease))
            # Counters dead for a whole lease more go, their counts with
            # them (ON DELETE CASCADE).
            db.execute("DELETE FROM limit_counters"
                       " WHERE alive_until < now() - make_interval(secs => %s)", (self.lease,))

    def leave(self):
        with self.pool.connection() as db:
            db.execute("DELETE FROM limit_counters WHERE counter = %s", (self.counter,))
