"""
The mail queue in PostgreSQL (C{[storage] backend = "postgresql"}): one
queue shared by every node on the database, an L{ISpool} like the file
spool (L{pymailer.queue.spool_files}) and run through the same contract
suite.

Tables (L{pymailer.pg.schema}): C{queue}, a row per message (its state as
a column, the envelope as the file spool's JSON), and C{queue_data}, the
message in chunks of L{CHUNK} bytes.

Durability: a message being received is buffered on this node (memory, then
a temporary file); L{PostgreSQLWriter.commit} writes its row and its data
in one transaction, and returns once PostgreSQL has committed it (flushed
its WAL, with the server's default C{synchronous_commit}; with synchronous
replication, once a standby has it too).  Only then does the intake answer
250.  An aborted or broken transaction leaves nothing in the database.

Claims: L{PostgreSQLSpool.claimDue} picks due rows with C{SELECT ... FOR
UPDATE SKIP LOCKED} (claimers on other nodes skip the rows it is looking
at, never wait for them), and marks them C{active} with its claimer name
and a lease, in one transaction.  The claim is counted there, before the
delivery attempt is made (as mox records an attempt first).  While this
process holds claims, a thread renews their leases every C{lease / 4}
seconds; a node that dies (or loses the database for longer than the lease)
stops renewing, and once the lease has lapsed any node claims the message
again with C{recovered} set, and counts the takeover (C{takeovers}, in a
row until an outcome is recorded: the runner stops a message that kills
every node delivering it).  Leases are on the database's clock, one clock
for every node.

At-least-once: a message is delivered twice only when its claimer stops
after the delivery was made and before L{complete} or L{reschedule} was
committed, and its lease then lapses; the next claimer knows (C{recovered})
and local delivery drops the duplicate by its unique key.  A claimer whose
lease lapsed while it was still delivering (a database outage longer than
the lease) finds on L{complete} that the message is no longer its own: it
gets L{ClaimLost}, and the new claimer's result stands.

Waking other nodes: each commit of new mail sends C{NOTIFY} on L{CHANNEL}
(with the queue id); the process that runs the queue listens
(L{PostgreSQLSpool.listen}), and its runner starts on a message another
node queued as on one of its own, instead of at its next scan.  After the
listener was cut off (notifications sent meanwhile are lost), the
listeners are told C{None}: look at the whole queue.

What it trusts: the database (the queue's contents are ours); queue ids
from the administrator are checked (L{isQueueId}) before use, and all SQL is
parameterised.

Every method blocks on the database: call it from a thread pool.
"""

import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

from twisted.logger import Logger
from zope.interface import implementer

from pymailer.envelope import Envelope
from pymailer.listeners import Listeners
from pymailer.interfaces import ISpool, ISpoolWriter
from pymailer.queue.model import (
    ACTIVE, ADMIN_BOUNCE, CORRUPT, DEFERRED, HOLD, INCOMING, STATES, Claim, ClaimOrder,
    MessageBusy, NoSuchMessage, QueueEntry, QueueError, WrongState,
    adminBounce, injectMessage, isQueueId, newQueueId,
    refuseCorrupt,
)

_log = Logger()

# Bytes per queue_data row; also what a writer keeps in memory before it
# spills to a temporary file.
CHUNK = 256 * 1024
# Seconds a claim lasts unless renewed: how long a dead node's mail waits
# (C{[storage] queue_lease}).
LEASE = 120.0
# NOTIFY channel of new mail in the queue: "claimer queueId".
CHANNEL = "pymailer_queue"


class ClaimLost(QueueError):
    """
    The claim lapsed (this node stopped renewing it for longer than the
    lease) and another node has claimed the message since.
    """

    def __init__(self, queueId):
        QueueError.__init__(self, f"{queueId}: the claim lapsed; another node delivers it now")


@dataclass
class PostgreSQLClaim(Claim):
    """A L{Claim} on this spool; C{claimedBy} names the claimer."""

    claimedBy: str = ""


@implementer(ISpoolWriter)
class PostgreSQLWriter:
    """
    One message being received: buffered here until L{commit} writes it
    into the database at once.
    """

    def __init__(self, spool, queueId):
        self.spool = spool
        self.queueId = queueId
        self._buffer = tempfile.SpooledTemporaryFile(max_size=CHUNK)

    def write(self, data):
        self._buffer.write(data)

    def commit(self, envelope):
        self._buffer.seek(0)
        size = self._buffer.seek(0, os.SEEK_END)
        self._buffer.seek(0)
        with self.spool.pool.connection() as db, db.transaction():
            db.execute(
                "INSERT INTO queue (queue_id, state, envelope, size, next_attempt)"
                " VALUES (%s, %s, %s, %s, %s)",
                (self.queueId, INCOMING, envelope.toJSON(), size, self.spool.clock()))
            with db.cursor().copy(
                    "COPY queue_data (queue_id, seq, chunk) FROM STDIN") as copy:
                seq = 0
                while chunk := self._buffer.read(CHUNK):
                    copy.write_row((self.queueId, seq, chunk))
                    seq += 1
            # Sent by PostgreSQL at the commit, never for a rollback.
            db.execute("SELECT pg_notify(%s, %s)",
                       (CHANNEL, f"{self.spool.claimer} {self.queueId}"))
        self._close()
        self.spool._tell(self.queueId)  # ISpool.addListener

    def abort(self):
        self._close()

    def openData(self):
        self._buffer.flush()
        self._buffer.seek(0)
        # A copy, so that reading it does not move the writer's position.
        copy = tempfile.SpooledTemporaryFile(max_size=CHUNK)
        while chunk := self._buffer.read(CHUNK):
            copy.write(chunk)
        self._buffer.seek(0, os.SEEK_END)
        copy.seek(0)
        return copy

    def _close(self):
        try:
            self._buffer.close()
        except OSError:
            pass


@implementer(ISpool)
class PostgreSQLSpool(Listeners):
    """
    @param pool: a psycopg_pool C{ConnectionPool} on a database with the
        schema (L{pymailer.pg.schema}); shared, not closed here.
    @param lease: seconds a claim lasts without renewal.
    @param clock: POSIX time, for the times the runner also uses
        (C{next_attempt}); leases use the database's clock.
    @ivar claimer: this spool's name on its claims: host, process, and a
        random part (two spools in one process are two claimers).
    """

    def __init__(self, pool, lease=LEASE, clock=time.time):
        self.pool = pool
        self.lease = lease
        self.clock = clock
        self.claimer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._claimOrder = ClaimOrder()
        # Queue ids claimed and not yet completed, rescheduled or released:
        # while there are any, the renewer keeps their leases.
        self._held = set()
        self._heldLock = threading.Lock()
        self._renewer = None
        self._stopping = threading.Event()
        # Held for each renewal: close() takes it after _stopping is set,
        # so that once close() returns no renewal is under way or starts.
        self._renewing = threading.Lock()
        self._listener = None

    # -- other nodes' new mail ----------------------------------------------

    def listen(self):
        """
        Tell this spool's listeners (L{ISpool.addListener}) of the mail
        other nodes queue too, as it is committed, and C{None} when some
        may have been missed.  For the process that runs the queue; not
        waiting (the runner scans the queue when it starts anyway).
        """
        from pymailer.pg.listen import ChannelListener

        if self._listener is None:
            self._listener = ChannelListener(
                self.pool.conninfo, CHANNEL, self._heard, lambda: self._tell(None),
                "pymailer-queue-listen")
            self._listener.start(0)

    def _heard(self, payload):
        claimer, _, queueId = payload.partition(" ")
        if claimer != self.claimer:  # ours: told directly after the commit
            self._tell(queueId)

    # -- receiving ----------------------------------------------------------

    def newMessage(self):
        return PostgreSQLWriter(self, newQueueId())

    def inject(self, source, **envelopeFields):
        return injectMessage(self, source, envelopeFields)

    def freeSpace(self):
        # The database's disk is the database administrator's business.
        return None

    def recover(self):
        # Nothing unacknowledged is ever written (a transaction commits
        # whole or not at all), and dead claimers' leases lapse by
        # themselves.
        return []

    # -- claims -------------------------------------------------------------

    def claimDue(self, now, limit, newOnly=False):
        """
        See L{ISpool.claimDue}: lapsed claims first, then due deferred mail
        interleaved with new mail (turn about which comes first), each
        looked at with C{FOR UPDATE SKIP LOCKED} so that claimers on other
        nodes take other rows at the same time.
        """
        if limit <= 0:
            return []
        with self.pool.connection() as db, db.transaction():
            def select(where, order, *args):
                return [row[0] for row in db.execute(
                    f"SELECT queue_id FROM queue WHERE {where} ORDER BY {order}"
                    " LIMIT %s FOR UPDATE SKIP LOCKED", (*args, limit))]

            order = self._claimOrder.order(
                select("state = 'incoming'", "queue_id"), newOnly,
                lapsed=lambda: select("state = 'active' AND lease_until < now()", "queue_id"),
                due=lambda: select("state = 'deferred' AND next_attempt <= %s",
                                   "next_attempt, queue_id", now))[:limit]
            if not order:
                return []
            rows = db.execute(
                "UPDATE queue q SET state = 'active', claimed_by = %s,"
                " lease_until = now() + make_interval(secs => %s),"
                " claims = q.claims + 1, last_claim = now(),"
                " takeovers = q.takeovers + (q.state = 'active')::integer,"
                # A lapsed claim keeps where its first claimer took it from.
                " back_state = CASE WHEN q.state = 'active' THEN q.back_state ELSE q.state END,"
                " back_next = CASE WHEN q.state = 'active' THEN q.back_next"
                " ELSE q.next_attempt END"
                " FROM (SELECT queue_id, state AS was FROM queue WHERE queue_id = ANY(%s)) old"
                " WHERE q.queue_id = old.queue_id"
                " RETURNING q.queue_id, q.envelope, old.was, q.takeovers",
                (self.claimer, self.lease, order)).fetchall()
            claims, corrupt = {}, []
            for queueId, raw, was, takeovers in rows:
                try:
                    envelope = Envelope.fromJSON(bytes(raw))
                except (ValueError, TypeError, KeyError):
                    corrupt.append(queueId)
                    continue
                claims[queueId] = PostgreSQLClaim(
                    queueId, envelope, takenOver=(was == ACTIVE), takeovers=takeovers,
                    claimedBy=self.claimer)
            if corrupt:
                db.execute(
                    "UPDATE queue SET state = 'corrupt', claimed_by = NULL, lease_until = NULL,"
                    " next_attempt = %s WHERE queue_id = ANY(%s)", (self.clock(), corrupt))
        ordered = [claims[q] for q in order if q in claims]
        if ordered:
            self._hold(q.queueId for q in ordered)
        return ordered

    def openData(self, queueId):
        if not isQueueId(queueId):
            raise NoSuchMessage(queueId)
        data = tempfile.SpooledTemporaryFile(max_size=CHUNK)
        with self.pool.connection() as db, db.transaction():
            if db.execute("SELECT 1 FROM queue WHERE queue_id = %s",
                          (queueId,)).fetchone() is None:
                raise NoSuchMessage(queueId)
            # One row at a time (libpq's single-row mode): a big message
            # never sits in memory whole.
            for (chunk,) in db.cursor().stream(
                    "SELECT chunk FROM queue_data WHERE queue_id = %s ORDER BY seq",
                    (queueId,)):
                data.write(chunk)
        data.seek(0)
        return data

    def _ended(self, db, claim, sql, args):
        """
        Run C{sql} (with C{WHERE queue_id AND claimed_by} appended) for a
        claim of ours, which it ends.

        @raise ClaimLost: the message is not ours any more.
        """
        cursor = db.execute(
            sql + " WHERE queue_id = %s AND claimed_by = %s AND state = 'active'",
            (*args, claim.queueId, self.claimer))
        self._unhold(claim.queueId)
        if cursor.rowcount == 0:
            raise ClaimLost(claim.queueId)

    def complete(self, claim):
        with self.pool.connection() as db, db.transaction():
            self._ended(db, claim, "DELETE FROM queue", ())

    def reschedule(self, claim, envelope, nextAttempt):
        with self.pool.connection() as db, db.transaction():
            self._ended(
                db, claim,
                "UPDATE queue SET state = 'deferred', envelope = %s, next_attempt = %s,"
                " claimed_by = NULL, lease_until = NULL, back_state = NULL, back_next = NULL,"
                " takeovers = 0",
                (envelope.toJSON(), nextAttempt))

    def release(self, claim):
        with self.pool.connection() as db, db.transaction():
            self._ended(
                db, claim,
                "UPDATE queue SET state = coalesce(back_state, 'incoming'),"
                " next_attempt = coalesce(back_next, %s),"
                " claimed_by = NULL, lease_until = NULL, back_state = NULL, back_next = NULL",
                (self.clock(),))

    def backOff(self, claim, nextAttempt):
        self._setAside(claim, DEFERRED, nextAttempt, None)

    def holdClaimed(self, claim, reason):
        self._setAside(claim, HOLD, self.clock(), reason)

    def _setAside(self, claim, state, nextAttempt, holdReason):
        """End a claim without an outcome; the takeover count stays."""
        with self.pool.connection() as db, db.transaction():
            self._ended(
                db, claim,
                "UPDATE queue SET state = %s, next_attempt = %s, hold_reason = %s,"
                " claimed_by = NULL, lease_until = NULL, back_state = NULL, back_next = NULL",
                (state, nextAttempt, holdReason))

    # -- leases -------------------------------------------------------------

    def _hold(self, queueIds):
        with self._heldLock:
            self._held.update(queueIds)
            if self._renewer is None and not self._stopping.is_set():
                self._renewer = threading.Thread(
                    target=self._renewLoop, name="pymailer-queue-leases", daemon=True)
                self._renewer.start()

    def _unhold(self, queueId):
        with self._heldLock:
            self._held.discard(queueId)

    def _renewLoop(self):
        while not self._stopping.wait(self.lease / 4):
            with self._heldLock:
                if not self._held:
                    self._renewer = None
                    return
            with self._renewing:
                # Stopped while this round was due: close() gives the
                # claims up, and the pool may be closed right after it.
                if self._stopping.is_set() or getattr(self.pool, "closed", False):
                    return
                try:
                    self.renewLeases()
                except Exception:
                    # The next round tries again; if the database stays
                    # away longer than the lease, other nodes take the
                    # mail over.
                    _log.failure("could not renew the queue's claims")

    def renewLeases(self):
        """
        Extend the lease of every claim this spool holds (its renewer
        thread calls this).

        @return: how many claims were renewed.
        """
        with self._heldLock:
            held = sorted(self._held)
        if not held:
            return 0
        with self.pool.connection() as db, db.transaction():
            return db.execute(
                "UPDATE queue SET lease_until = now() + make_interval(secs => %s)"
                " WHERE claimed_by = %s AND state = 'active' AND queue_id = ANY(%s)",
                (self.lease, self.claimer, held)).rowcount

    def close(self):
        """
        At shutdown, after the runner stopped: stop renewing, and let the
        claims still held (deliveries whose outcome was never recorded)
        lapse now rather than after the lease, so another node recovers
        them at once, as the kernel drops a dead process's file locks.
        """
        self._stopping.set()
        # A renewal under way ends first (it holds a pooled connection);
        # none starts after: the server closes the pool once this returns
        # (L{pymailer.service.SharedDatabaseService}), and a renewal then
        # would fail and log DatabaseUnavailable.  At most one UPDATE's
        # wait, at shutdown.
        with self._renewing:
            pass
        if self._listener is not None:
            self._listener.close()
        with self._heldLock:
            held, self._held = sorted(self._held), set()
        if not held:
            return
        try:
            with self.pool.connection() as db:
                db.execute(
                    "UPDATE queue SET lease_until = now() - interval '1 second'"
                    " WHERE claimed_by = %s AND state = 'active' AND queue_id = ANY(%s)",
                    (self.claimer, held))
        except Exception:
            _log.failure("could not give up the queue's claims: they lapse with their lease")

    # -- the administrator's side -------------------------------------------

    _COLUMNS = "queue_id, state, next_attempt, envelope, size, takeovers, hold_reason"

    @staticmethod
    def _entry(row, keepRaw=False):
        queueId, state, nextAttempt, raw, size, takeovers, holdReason = row
        raw = bytes(raw)
        try:
            envelope = Envelope.fromJSON(raw)
        except (ValueError, TypeError, KeyError):
            envelope = None
        return QueueEntry(queueId, state, nextAttempt, envelope, size,
                          raw=raw if keepRaw else None, takeovers=takeovers,
                          holdReason=holdReason)

    def listMessages(self, states=None):
        with self.pool.connection() as db:
            rows = db.execute(
                f"SELECT {self._COLUMNS} FROM queue"
                " WHERE %(all)s OR state = ANY(%(states)s::text[])",
                {"all": states is None, "states": list(states or ())}).fetchall()
        order = {state: i for i, state in enumerate(STATES)}
        entries = [self._entry(row) for row in rows]
        entries.sort(key=lambda e: (order[e.state], e.queueId))
        return entries

    def counts(self):
        counts = dict.fromkeys(STATES, 0)
        with self.pool.connection() as db:
            for state, n in db.execute("SELECT state, count(*) FROM queue GROUP BY state"):
                counts[state] = n
        return counts

    def show(self, queueId):
        if not isQueueId(queueId):
            raise NoSuchMessage(queueId)
        with self.pool.connection() as db:
            row = db.execute(f"SELECT {self._COLUMNS} FROM queue WHERE queue_id = %s",
                             (queueId,)).fetchone()
        if row is None:
            raise NoSuchMessage(queueId)
        return self._entry(row, keepRaw=True)

    def _unclaimed(self, db, queueId):
        """
        Lock C{queueId}'s row for this transaction.

        @return: C{(state, raw envelope)}.
        @raise NoSuchMessage: not in the queue.
        @raise MessageBusy: claimed, and the claim has not lapsed.
        """
        if not isQueueId(queueId):
            raise NoSuchMessage(queueId)
        row = db.execute(
            "SELECT state, envelope, state = 'active' AND lease_until >= now()"
            " FROM queue WHERE queue_id = %s FOR UPDATE", (queueId,)).fetchone()
        if row is None:
            raise NoSuchMessage(queueId)
        state, raw, busy = row
        if busy:
            raise MessageBusy(queueId)
        return state, bytes(raw)

    def _setState(self, db, queueId, state, nextAttempt, envelope=None):
        # The runner's hold reason goes with any change the administrator
        # makes (release, bounce, a hold of their own).
        db.execute(
            "UPDATE queue SET state = %s, next_attempt = %s,"
            " envelope = coalesce(%s, envelope), claimed_by = NULL, lease_until = NULL,"
            " back_state = NULL, back_next = NULL, hold_reason = NULL WHERE queue_id = %s",
            (state, nextAttempt, envelope, queueId))

    def hold(self, queueId):
        with self.pool.connection() as db, db.transaction():
            state, _ = self._unclaimed(db, queueId)
            if state == HOLD:
                raise WrongState(f"{queueId}: already on hold")
            refuseCorrupt(queueId, state)
            self._setState(db, queueId, HOLD, self.clock())
        return state

    def unhold(self, queueId, now=None):
        now = self.clock() if now is None else now
        with self.pool.connection() as db, db.transaction():
            state, _ = self._unclaimed(db, queueId)
            if state != HOLD:
                raise WrongState(f"{queueId}: not on hold (it is {state})")
            self._setState(db, queueId, DEFERRED, now)

    def delete(self, queueId):
        with self.pool.connection() as db, db.transaction():
            state, _ = self._unclaimed(db, queueId)
            db.execute("DELETE FROM queue WHERE queue_id = %s", (queueId,))
        return state

    def flush(self, queueId=None, now=None):
        now = self.clock() if now is None else now
        with self.pool.connection() as db, db.transaction():
            if queueId is not None:
                state, _ = self._unclaimed(db, queueId)
                if state != DEFERRED:
                    hint = {HOLD: "on hold (release it instead)", CORRUPT: "corrupt"}.get(
                        state, f"{state}, already waiting for delivery")
                    raise WrongState(f"{queueId}: not deferred: {hint}")
                self._setState(db, queueId, DEFERRED, now)
                return [queueId]
            # Claimed messages are 'active': never touched here.
            rows = db.execute(
                "UPDATE queue SET next_attempt = %s WHERE state = 'deferred'"
                " RETURNING queue_id", (now,)).fetchall()
        return sorted(row[0] for row in rows)

    def bounce(self, queueId, reason=None, now=None):
        now = self.clock() if now is None else now
        reason = ADMIN_BOUNCE if reason is None else reason
        with self.pool.connection() as db, db.transaction():
            state, raw = self._unclaimed(db, queueId)
            envelope = adminBounce(queueId, state, lambda: Envelope.fromJSON(raw), reason)
            self._setState(db, queueId, DEFERRED, now, envelope.toJSON())
        return envelope
