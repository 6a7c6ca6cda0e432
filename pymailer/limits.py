"""
The counters behind rate limits and login lockouts (L{ILimitStore}), in
one process's memory or shared by every worker process.

With one process (C{[server] workers = 1}) they live in memory, as they
always have: fast, and a restart forgives.  With several workers a client's
connections land on any of them, so a count kept per process would let a
guesser make N times the allowed attempts and would let a lockout in one
worker mean nothing in the others: the counters then live in
C{data_dir/limits.sqlite} (WAL, one connection per thread, every access in
a thread pool), where every worker reads and adds to the same rows.  Each
change is one C{BEGIN IMMEDIATE} transaction, so two workers counting the
same key at once never lose a count.

With C{[storage] backend = "postgresql"} they live in the database every
node shares (L{pymailer.limits_pg}), so that limits hold across nodes too.

Times are the caller's clock: the reactor's C{seconds()}, wall-clock time in
a server, which every process on the machine agrees on.

Open connections per client address (C{max_connections_per_ip}, see
L{pymailer.connlimit}) are counted by each process for its own connections
(a I{counter}), and added up over the counters alive: each renews its
lease (L{CONNECTION_LEASE}) while it runs, so the counts of a process that
died stop counting within the lease, and are then purged.
"""

import os
import socket
import time
import uuid
from collections import deque

from twisted.internet.defer import Deferred
from zope.interface import implementer

from pymailer.config import POSTGRESQL
from pymailer.interfaces import ILimitStore
from pymailer.sqlitedb import ThreadConnections

FILENAME = "limits.sqlite"

# Bound on remembered keys in memory, so a flood of distinct addresses
# cannot grow memory without limit; the oldest entries go first.
MAX_KEYS = 100_000

# Forget stale rows every this many changes (DELETEs over indexes).
PURGE_EVERY = 1000

# Rows older than this are stale whatever the limits: longer than any
# bucket period (an hour) and any failure window a sane config has.
STALE_AFTER = 86400

# Seconds a counter's connection counts count without renewal
# (L{pymailer.interfaces.ILimitStore.keepAlive}): how long a dead process's
# connections still hold their client's slots.
CONNECTION_LEASE = 30.0


def refilled(row, limit, period, now):
    """
    The tokens in a bucket of C{limit} refilled evenly over C{period}
    seconds, at C{now}, from C{row}: C{(tokens, then)} as last left, or
    C{None} (never used: full).
    """
    tokens, then = row if row is not None else (limit, now)
    return min(limit, tokens + (now - then) * limit / period)


def newCounter():
    """A name for this process's connection counts, unique among nodes."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@implementer(ILimitStore)
class MemoryLimits:
    """The counters of one process, in dictionaries."""

    blocking = False
    lease = None

    def __init__(self):
        self._buckets = {}
        self._failures = {}
        self._lockedUntil = {}
        self._connections = {}  # (scope, host) -> open

    def take(self, bucket, key, limit, period, now, count=1):
        tokens = self.available(bucket, key, limit, period, now)
        ok = tokens >= count
        self._buckets[bucket, key] = (tokens - count if ok else tokens, now)
        if len(self._buckets) > 10000:
            self._forgetFull(bucket, limit, period, now)
        return ok

    def available(self, bucket, key, limit, period, now):
        return refilled(self._buckets.get((bucket, key)), limit, period, now)

    def _forgetFull(self, bucket, limit, period, now):
        # Full buckets are forgotten, so memory follows the active keys.
        for name, key in list(self._buckets):
            if name == bucket and self.available(bucket, key, limit, period, now) >= limit:
                del self._buckets[bucket, key]

    def recordFailure(self, kind, key, now, window, maxFailures, lockoutTime):
        times = self._failures.setdefault((kind, key), deque())
        times.append(now)
        while times and times[0] <= now - window:
            times.popleft()
        lockedOut = len(times) >= maxFailures
        if lockedOut:
            self._lockedUntil[kind, key] = now + lockoutTime
            times.clear()
        for table in (self._failures, self._lockedUntil):
            while len(table) > MAX_KEYS:
                del table[next(iter(table))]
        return lockedOut

    def lockedOut(self, kind, key, now):
        until = self._lockedUntil.get((kind, key))
        if until is None:
            return False
        if now < until:
            return True
        del self._lockedUntil[kind, key]
        return False

    def clearFailures(self, kind, key):
        self._failures.pop((kind, key), None)

    # One process, one counter: nothing to renew, nothing outlives it.

    def openConnection(self, scope, host, limit):
        if self._connections.get((scope, host), 0) >= limit:
            return False
        self._connections[scope, host] = self._connections.get((scope, host), 0) + 1
        return True

    def closeConnection(self, scope, host):
        left = self._connections.pop((scope, host), 0) - 1
        if left > 0:
            self._connections[scope, host] = left

    def keepAlive(self):
        pass

    def leave(self):
        self._connections.clear()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    bucket TEXT NOT NULL, key TEXT NOT NULL, tokens REAL NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (bucket, key));
CREATE INDEX IF NOT EXISTS buckets_at ON buckets (at);
CREATE TABLE IF NOT EXISTS failures (kind TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failures_key ON failures (kind, key, at);
CREATE TABLE IF NOT EXISTS lockouts (
    kind TEXT NOT NULL, key TEXT NOT NULL, until REAL NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS counters (counter TEXT PRIMARY KEY, alive_until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS connections (
    scope TEXT NOT NULL, host TEXT NOT NULL, counter TEXT NOT NULL, open INTEGER NOT NULL,
    PRIMARY KEY (scope, host, counter));
"""


@implementer(ILimitStore)
class SQLiteLimits:
    """
    The counters in one SQLite file that every worker process opens.
    Every method blocks: call it in a thread pool.
    """

    blocking = True

    def __init__(self, path, lease=CONNECTION_LEASE, clock=time.time):
        self.path = os.fspath(path)
        # Every SMTP connection may write here (L{pymailer.connlimit}): the
        # writers of all workers queue, rather than poll in sleeps.
        self._connections = ThreadConnections(self.path, _SCHEMA, queueWriters=True)
        self._db = self._connections.db
        self._changes = 0
        self._db()  # made (and checked) now, not on the first client
        self.counter = newCounter()
        self.lease = lease
        self._clock = clock  # the counters' liveness: one machine, one clock

    def _change(self, f):
        """Run C{f(db)} as one transaction that no other writer interleaves."""
        with self._connections.transaction() as db:
            result = f(db)
            self._changes += 1
            if self._changes % PURGE_EVERY == 0:
                self._purge(db)
        return result

    def _purge(self, db):
        cutoff = time.time() - STALE_AFTER
        db.execute("DELETE FROM buckets WHERE at < ?", (cutoff,))
        db.execute("DELETE FROM failures WHERE at < ?", (cutoff,))
        db.execute("DELETE FROM lockouts WHERE until < ?", (cutoff,))

    def _tokens(self, db, bucket, key, limit, period, now):
        row = db.execute("SELECT tokens, at FROM buckets WHERE bucket=? AND key=?",
                         (bucket, key)).fetchone()
        return refilled(row, limit, period, now)

    def take(self, bucket, key, limit, period, now, count=1):
        def take(db):
            tokens = self._tokens(db, bucket, key, limit, period, now)
            ok = tokens >= count
            db.execute("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?)",
                       (bucket, key, tokens - count if ok else tokens, now))
            return ok
        return self._change(take)

    def available(self, bucket, key, limit, period, now):
        return self._tokens(self._db(), bucket, key, limit, period, now)

    def recordFailure(self, kind, key, now, window, maxFailures, lockoutTime):
        def record(db):
            db.execute("INSERT INTO failures VALUES (?, ?, ?)", (kind, key, now))
            db.execute("DELETE FROM failures WHERE kind=? AND key=? AND at <= ?",
                       (kind, key, now - window))
            (count,) = db.execute("SELECT count(*) FROM failures WHERE kind=? AND key=?",
                                  (kind, key)).fetchone()
            if count < maxFailures:
                return False
            db.execute("INSERT OR REPLACE INTO lockouts VALUES (?, ?, ?)",
                       (kind, key, now + lockoutTime))
            db.execute("DELETE FROM failures WHERE kind=? AND key=?", (kind, key))
            return True
        return self._change(record)

    def lockedOut(self, kind, key, now):
        row = self._db().execute("SELECT until FROM lockouts WHERE kind=? AND key=?",
                                 (kind, key)).fetchone()
        return row is not None and now < row[0]

    def clearFailures(self, kind, key):
        self._change(lambda db: db.execute(
            "DELETE FROM failures WHERE kind=? AND key=?", (kind, key)))

    def _alive(self, db):
        """Renew this counter (opening a connection is a sign of life too)."""
        db.execute("INSERT OR REPLACE INTO counters VALUES (?, ?)",
                   (self.counter, self._clock() + self.lease))

    def openConnection(self, scope, host, limit):
        def open(db):
            (count,) = db.execute(
                "SELECT coalesce(sum(c.open), 0) FROM connections c JOIN counters k"
                " ON k.counter = c.counter WHERE c.scope=? AND c.host=? AND k.alive_until > ?",
                (scope, host, self._clock())).fetchone()
            if count >= limit:
                return False
            self._alive(db)
            db.execute("INSERT INTO connections VALUES (?, ?, ?, 1) ON CONFLICT"
                       " (scope, host, counter) DO UPDATE SET open = open + 1",
                       (scope, host, self.counter))
            return True
        return self._change(open)

    def closeConnection(self, scope, host):
        def close(db):
            key = (scope, host, self.counter)
            db.execute("UPDATE connections SET open = open - 1"
                       " WHERE scope=? AND host=? AND counter=?", key)
            db.execute("DELETE FROM connections WHERE scope=? AND host=? AND counter=?"
                       " AND open <= 0", key)
        self._change(close)

    def keepAlive(self):
        def renew(db):
            self._alive(db)
            # Counters dead for a whole lease more go, with their counts.
            dead = "SELECT counter FROM counters WHERE alive_until < ?"
            cutoff = (self._clock() - self.lease,)
            db.execute(f"DELETE FROM connections WHERE counter IN ({dead})", cutoff)
            db.execute("DELETE FROM counters WHERE alive_until < ?", cutoff)
        self._change(renew)

    def leave(self):
        def leave(db):
            db.execute("DELETE FROM connections WHERE counter=?", (self.counter,))
            db.execute("DELETE FROM counters WHERE counter=?", (self.counter,))
        self._change(leave)


def openLimits(config, shared):
    """
    @param shared: several processes serve clients (worker processes):
        keep the counters in C{data_dir}, else in memory.  With
        C{[storage] backend = "postgresql"} they are in the database
        whatever C{shared} says: other nodes serve clients too.
    @return: an L{ILimitStore}.
    """
    if config.storage.backend == POSTGRESQL:
        from pymailer.limits_pg import PostgreSQLLimits
        from pymailer.pg.pool import poolFor

        return PostgreSQLLimits(poolFor(config.storage))
    if shared:
        return SQLiteLimits(config.data_dir / FILENAME)
    return MemoryLimits()


def caller(store, reactor, threadpool):
    """
    @return: C{call(f, *args)} for C{store}'s methods: at once for a store
        in memory (the result itself), in C{threadpool} for one that
        blocks (a C{Deferred}).
    """
    if not store.blocking:
        return lambda f, *args: f(*args)
    from twisted.internet.threads import deferToThreadPool

    return lambda f, *args: deferToThreadPool(reactor, threadpool, f, *args)


def andThen(result, f):
    """C{f(result)}, or once C{result} fires if it is a C{Deferred}."""
    if isinstance(result, Deferred):
        return result.addCallback(f)
    return f(result)
