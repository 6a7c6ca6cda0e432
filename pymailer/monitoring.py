"""
The server's own counters and recent events, kept on disk so that they
survive a restart: C{data_dir/monitoring.sqlite}, read by the admin
monitoring page (L{pymailer.web.monitoring}).

Two tables:
  - C{counts}: events per kind (received, delivered, rejected...) and
    reason, per minute (kept L{MINUTES_KEPT}) and per hour (kept
    L{HOURS_KEPT}); the charts of the last hour read the minutes, those of
    the day and week the hours.
  - C{events}: the last L{RECENT_KEPT} events with their queue id,
    addresses, client IP and result text, for the search.

L{MonitoringRecorder} is the sink of L{pymailer.events.Events}: on the
reactor it only adds to memory; every L{FLUSH_INTERVAL} seconds, and when
the service stops, one transaction in the thread pool adds the deltas
(C{INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n}), so that
several processes sharing C{data_dir} add to the same rows instead of
overwriting each other.  A crash (SIGKILL) loses at most the last
interval's events; a clean stop loses none.

Trust: the events' text comes partly from clients (addresses, reply text
echoing them): it is stored with bound parameters, clipped by
L{pymailer.events}, and escaped where it is shown.
"""

import collections
import os

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pymailer.events import Event
from pymailer.sqlitedb import ThreadConnections

FILENAME = "monitoring.sqlite"
FLUSH_INTERVAL = 10.0
RECENT_KEPT = 10_000
MINUTE = 60
HOUR = 3600
DAY = 86400
MINUTES_KEPT = 2 * DAY
HOURS_KEPT = 400 * DAY
SEARCH_LIMIT = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counts (
    resolution INTEGER NOT NULL,   -- MINUTE or HOUR
    bucket INTEGER NOT NULL,       -- its start, seconds since the epoch (UTC)
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (resolution, bucket, kind, reason)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_queue_id ON events (queue_id);
"""
_EVENT_COLUMNS = "time, kind, reason, queue_id, sender, recipient, client_ip, text"


def floorTo(t, step):
    return int(t // step * step)


class MonitoringStore:
    """
    The SQLite file, one connection per thread.  Every method blocks:
    call it in a thread pool (L{MonitoringRecorder} does).
    """

    def __init__(self, path, keep=RECENT_KEPT):
        self.path = os.fspath(path)
        self.keep = keep
        # WAL: readers (the page) never wait on the flush, and other
        # processes see committed rows.  Counters, not mail: a power cut
        # may lose the last flush (not durable).
        self.connections = ThreadConnections(self.path, schema=_SCHEMA)
        self._db = self.connections.db

    def close(self):
        """Close every connection (at shutdown, when no thread uses them)."""
        self.connections.close()

    def write(self, counts, events, now):
        """
        Add C{counts} (C{{(kind, reason, minute): n}}) to the per-minute
        and per-hour rows, append C{events}, and drop what is past keeping;
        one transaction.
        """
        hourly = collections.Counter()
        for (kind, reason, minute), n in counts.items():
            hourly[(kind, reason, floorTo(minute, HOUR))] += n
        rows = [(MINUTE, minute, kind, reason, n) for (kind, reason, minute), n in counts.items()]
        rows += [(HOUR, hour, kind, reason, n) for (kind, reason, hour), n in hourly.items()]
        with self.connections.transaction() as db:
            db.executemany(
                "INSERT INTO counts (resolution, bucket, kind, reason, n) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (resolution, bucket, kind, reason) DO UPDATE SET n = n + excluded.n",
                rows)
            db.executemany(
                f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.time, e.kind, e.reason, e.queueId, e.sender, e.recipient, e.clientIP,
                  e.text) for e in events])
            # A ring of the last `keep` events, whichever process wrote them.
            db.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?",
                       (self.keep,))
            db.execute("DELETE FROM counts WHERE (resolution = ? AND bucket < ?)"
                       " OR (resolution = ? AND bucket < ?)",
                       (MINUTE, now - MINUTES_KEPT, HOUR, now - HOURS_KEPT))

    def counts(self, resolution, since):
        """C{{(bucket, kind): n}} of the buckets from C{since} on, all reasons summed."""
        rows = self._db().execute(
            "SELECT bucket, kind, sum(n) FROM counts WHERE resolution = ? AND bucket >= ?"
            " GROUP BY bucket, kind", (resolution, floorTo(since, resolution)))
        return {(bucket, kind): n for bucket, kind, n in rows}

    def reasons(self, kind, since):
        """C{[(reason, n)]} of C{kind} from C{since} on, most first."""
        return self._db().execute(
            "SELECT reason, sum(n) AS total FROM counts WHERE resolution = ? AND kind = ?"
            " AND bucket >= ? GROUP BY reason ORDER BY total DESC, reason",
            (HOUR, kind, floorTo(since, HOUR))).fetchall()

    def search(self, text="", limit=SEARCH_LIMIT):
        """
        The newest events (at most C{limit}) whose queue id, sender,
        recipient or client IP contains C{text} (any case); all without.
        """
        query = f"SELECT {_EVENT_COLUMNS} FROM events"
        args = ()
        text = text.strip().lower()
        if text:
            # instr, not LIKE: a % or _ typed in the box is just a character.
            query += (" WHERE instr(lower(queue_id), ?) OR instr(lower(sender), ?)"
                      " OR instr(lower(recipient), ?) OR instr(lower(client_ip), ?)")
            args = (text,) * 4
        rows = self._db().execute(query + " ORDER BY id DESC LIMIT ?", args + (limit,))
        return [Event(*row) for row in rows]


class MonitoringRecorder(Service):
    """
    The sink of L{pymailer.events.Events}: counts and events in memory,
    written to a L{MonitoringStore} by L{flush}, every C{interval} seconds
    while running and once more when stopping.

    @param clock: for the flush timer (the reactor, or a L{task.Clock}).
    """

    log = Logger()

    def __init__(self, store, reactor, threadpool, interval=FLUSH_INTERVAL):
        self.store = store
        self.reactor = reactor
        self.threadpool = threadpool
        self.interval = interval
        self._counts = collections.Counter()
        # Only the last `keep` can be kept anyway: a burst between two
        # flushes cannot grow memory past that.
        self._events = collections.deque(maxlen=store.keep)
        self._lock = defer.DeferredLock()
        self._loop = None

    def record(self, event):
        self._counts[(event.kind, event.reason, floorTo(event.time, MINUTE))] += 1
        self._events.append(event)

    def _inThread(self, f, *args):
        return deferToThreadPool(self.reactor, self.threadpool, f, *args)

    def flush(self):
        """
        Write what was recorded since the last flush; a C{Deferred}.  One
        flush at a time: a second waits for the first.
        """
        return self._lock.run(self._flush)

    def _flush(self):
        if not self._counts and not self._events:
            return defer.succeed(None)
        counts, self._counts = self._counts, collections.Counter()
        events = list(self._events)
        self._events.clear()
        d = self._inThread(self.store.write, counts, events, self.reactor.seconds())

        def failed(failure):
            # The counts are kept for the next try (the database may be
            # busy or the disk full for a moment); the events are not.
            self._counts.update(counts)
            self.log.failure("could not write the monitoring counters", failure)

        return d.addErrback(failed)

    def query(self, f, *args):
        """
        C{f(*args)} (a L{MonitoringStore} method) in the thread pool, after
        a flush: the page shows this process's latest events.
        """
        d = self.flush()
        d.addCallback(lambda _: self._inThread(f, *args))
        return d

    def startService(self):
        Service.startService(self)
        self._loop = task.LoopingCall(self.flush)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False).addErrback(
            lambda f: self.log.failure("monitoring flush loop", f))

    def stopService(self):
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        d = self.flush()
        d.addBoth(lambda _: self.store.close())
        return d


def openMonitoring(config, reactor, threadpool):
    """The recorder of C{config.data_dir/monitoring.sqlite}."""
    return MonitoringRecorder(MonitoringStore(config.data_dir / FILENAME), reactor, threadpool)
