"""
An in-memory L{ISpool}: the queue for tests and tools that need no disk.

It runs the same contract suite as the file spool (C{tests/queue_contract}),
so it behaves as the real queue does, durability aside: everything is gone
when the process is.  Thread-safe (one lock), as the runner calls it from a
thread pool.  L{MemorySpool.abandon} plays a claimer that died.
"""

import io
import threading
import time
from dataclasses import dataclass
from typing import Optional

from zope.interface import implementer

from pymailer.envelope import Envelope
from pymailer.listeners import Listeners
from pymailer.interfaces import ISpool, ISpoolWriter
from pymailer.queue.model import (
    ACTIVE, ADMIN_BOUNCE, DEFERRED, HOLD, INCOMING, STATES, Claim, ClaimOrder,
    MessageBusy, NoSuchMessage, QueueEntry, WrongState, adminBounce,
    injectMessage, isQueueId, newQueueId,
)


@dataclass
class _Record:
    state: str
    envelope: Envelope
    data: bytes
    nextAttempt: float
    claimed: bool = False
    # Where a claimed message goes back to on release.
    claimedFrom: Optional[tuple] = None
    # Claims in a row taken over from a dead claimer (Claim.takeovers).
    takeovers: int = 0
    holdReason: Optional[str] = None


@implementer(ISpoolWriter)
class MemoryWriter:
    def __init__(self, spool, queueId):
        self.spool = spool
        self.queueId = queueId
        self._buffer = io.BytesIO()

    def write(self, data):
        self._buffer.write(data)

    def commit(self, envelope):
        self.spool._commit(self.queueId, envelope, self._buffer.getvalue())

    def abort(self):
        self._buffer = io.BytesIO()

    def openData(self):
        return io.BytesIO(self._buffer.getvalue())


@implementer(ISpool)
class MemorySpool(Listeners):
    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.RLock()
        self._messages = {}
        self._claimOrder = ClaimOrder()

    # -- receiving ----------------------------------------------------------

    def newMessage(self):
        return MemoryWriter(self, newQueueId())

    def inject(self, source, **envelopeFields):
        return injectMessage(self, source, envelopeFields)

    def _commit(self, queueId, envelope, data):
        with self._lock:
            self._messages[queueId] = _Record(INCOMING, envelope, data, self._clock())
        self._tell(queueId)  # ISpool.addListener

    def freeSpace(self):
        return None

    def recover(self):
        return []

    # -- the runner's side --------------------------------------------------

    def claimDue(self, now, limit, newOnly=False):
        with self._lock:
            free = sorted(
                (qid for qid, r in self._messages.items() if not r.claimed),
            )
            order = self._claimOrder.order(
                [q for q in free if self._messages[q].state == INCOMING], newOnly,
                # Active but unclaimed: its claimer died (L{abandon}).
                lapsed=lambda: [q for q in free if self._messages[q].state == ACTIVE],
                due=lambda: sorted(
                    (q for q in free if self._messages[q].state == DEFERRED
                     and self._messages[q].nextAttempt <= now),
                    key=lambda q: (self._messages[q].nextAttempt, q)))
            claims = []
            for qid in order[:limit]:
                record = self._messages[qid]
                takenOver = record.state == ACTIVE
                if takenOver:
                    record.takeovers += 1
                else:
                    record.claimedFrom = (record.state, record.nextAttempt)
                record.state, record.claimed = ACTIVE, True
                claims.append(Claim(
                    qid, record.envelope, takenOver=takenOver, takeovers=record.takeovers))
            return claims

    def abandon(self, claim):
        """The claimer died: the message is claimed again, as recovered."""
        with self._lock:
            self._messages[claim.queueId].claimed = False

    def _claimed(self, claim):
        record = self._messages.get(claim.queueId)
        if record is None or not record.claimed:
            raise NoSuchMessage(claim.queueId)
        return record

    def openData(self, queueId):
        with self._lock:
            record = self._messages.get(queueId)
            if record is None:
                raise NoSuchMessage(queueId)
            return io.BytesIO(record.data)

    def complete(self, claim):
        with self._lock:
            self._claimed(claim)
            del self._messages[claim.queueId]

    def reschedule(self, claim, envelope, nextAttempt):
        with self._lock:
            record = self._claimed(claim)
            record.envelope, record.nextAttempt = envelope, nextAttempt
            record.state, record.claimed = DEFERRED, False
            record.takeovers = 0

    def release(self, claim):
        with self._lock:
            record = self._claimed(claim)
            record.state, record.nextAttempt = record.claimedFrom or (INCOMING, self._clock())
            record.claimed = False

    def backOff(self, claim, nextAttempt):
        with self._lock:
            record = self._claimed(claim)
            record.state, record.nextAttempt, record.claimed = DEFERRED, nextAttempt, False

    def holdClaimed(self, claim, reason):
        with self._lock:
            record = self._claimed(claim)
            record.state, record.nextAttempt, record.claimed = HOLD, self._clock(), False
            record.holdReason = reason

    # -- the administrator's side -------------------------------------------

    def _entry(self, queueId, record, raw=None):
        return QueueEntry(queueId, record.state, record.nextAttempt, record.envelope,
                          len(record.data), raw=raw, takeovers=record.takeovers,
                          holdReason=record.holdReason)

    def listMessages(self, states=None):
        order = {state: i for i, state in enumerate(STATES)}
        with self._lock:
            entries = [self._entry(qid, r) for qid, r in self._messages.items()
                       if states is None or r.state in states]
        entries.sort(key=lambda e: (order[e.state], e.queueId))
        return entries

    def counts(self):
        with self._lock:
            counts = dict.fromkeys(STATES, 0)
            for record in self._messages.values():
                counts[record.state] += 1
            return counts

    def show(self, queueId):
        with self._lock:
            record = self._find(queueId)
            return self._entry(queueId, record, raw=record.envelope.toJSON())

    def _find(self, queueId):
        record = self._messages.get(queueId) if isQueueId(queueId) else None
        if record is None:
            raise NoSuchMessage(queueId)
        return record

    def _unclaimed(self, queueId):
        record = self._find(queueId)
        if record.claimed:
            raise MessageBusy(queueId)
        return record

    def hold(self, queueId):
        with self._lock:
            record = self._unclaimed(queueId)
            if record.state == HOLD:
                raise WrongState(f"{queueId}: already on hold")
            was = record.state
            record.state, record.nextAttempt = HOLD, self._clock()
            return was

    def unhold(self, queueId, now=None):
        with self._lock:
            record = self._unclaimed(queueId)
            if record.state != HOLD:
                raise WrongState(f"{queueId}: not on hold (it is {record.state})")
            record.state, record.holdReason = DEFERRED, None
            record.nextAttempt = self._clock() if now is None else now

    def delete(self, queueId):
        with self._lock:
            record = self._unclaimed(queueId)
            del self._messages[queueId]
            return record.state

    def flush(self, queueId=None, now=None):
        now = self._clock() if now is None else now
        with self._lock:
            if queueId is not None:
                record = self._unclaimed(queueId)
                if record.state != DEFERRED:
                    raise WrongState(f"{queueId}: not deferred (it is {record.state})")
                record.nextAttempt = now
                return [queueId]
            flushed = []
            for qid, record in sorted(self._messages.items()):
                if record.state == DEFERRED and not record.claimed:
                    record.nextAttempt = now
                    flushed.append(qid)
            return flushed

    def bounce(self, queueId, reason=None, now=None):
        reason = ADMIN_BOUNCE if reason is None else reason
        with self._lock:
            record = self._unclaimed(queueId)
            record.envelope = adminBounce(queueId, record.state, lambda: record.envelope, reason)
            record.state = DEFERRED
            record.nextAttempt = self._clock() if now is None else now
            return record.envelope

