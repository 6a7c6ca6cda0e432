"""
What crosses the L{pymailer.interfaces.ISpool} line: the queue's states, the
value objects (L{QueueEntry}, L{Claim}), the errors of the administrator's
operations, and the rules every backend shares (queue ids, what an
administrator's bounce does to an envelope, how a made-up message is
injected).

No paths, no file descriptors: a backend keeps those to itself.
"""

import dataclasses
import itertools
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Optional

from pymailer.envelope import FAILED, PENDING, Envelope

# The states of a queued message.  A backend may store them as directories
# (L{pymailer.queue.spool_files}) or as a column; callers only see the names.
INCOMING = "incoming"  # accepted, never attempted
ACTIVE = "active"  # claimed: being delivered
DEFERRED = "deferred"  # waiting for its next attempt
HOLD = "hold"  # kept aside by the administrator
CORRUPT = "corrupt"  # an envelope that cannot be read, kept for inspection
STATES = (INCOMING, ACTIVE, DEFERRED, HOLD, CORRUPT)

ADMIN_BOUNCE = "550 5.0.0 Bounced by the administrator"

# What a queue id may look like (on the command line, in a URL): never a path.
_QUEUE_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}\Z")


def isQueueId(text):
    """Could C{text} be a queue id (and nothing else, such as a path)?"""
    return bool(_QUEUE_ID.match(text))


_counter = itertools.count()
_counterLock = threading.Lock()


def newQueueId(now=time.time):
    """
    A queue id unique across processes, sorting in arrival order, and usable
    in file names and Maildir unique names (C{[0-9a-f-]}).
    """
    with _counterLock:
        n = next(_counter)
    return f"{int(now() * 1e6):014x}-{os.getpid():x}-{n:x}"


class QueueError(Exception):
    """An administrator's queue operation cannot be done (one-line text)."""


class NoSuchMessage(QueueError, LookupError):
    def __init__(self, queueId):
        QueueError.__init__(self, f"no such message in the queue: {queueId}")


class MessageBusy(QueueError):
    """The message is claimed: the server is delivering it now."""

    def __init__(self, queueId):
        QueueError.__init__(
            self, f"{queueId}: being delivered right now; try again in a moment"
        )


class WrongState(QueueError):
    """The operation does not apply to the message in its current state."""


@dataclass(frozen=True)
class QueueEntry:
    """
    One queued message as the administrator (and the metrics) see it: a
    snapshot, nothing locked.

    @ivar state: one of L{STATES}.
    @ivar envelope: the L{Envelope}, or C{None} if it cannot be read.
    @ivar size: the message data's size in bytes, or C{None} if missing.
    @ivar nextAttempt: when a C{deferred} message is due (POSIX time); for
        other states, when it entered that state.
    @ivar raw: the stored envelope as bytes (JSON), for display (it may be
        unreadable); only L{ISpool.show} fills it in.
    @ivar takeovers: claims of this message in a row taken over from a
        claimer that stopped (L{Claim.takeovers}).
    @ivar holdReason: why the queue runner put it on hold (L{ISpool.holdClaimed}),
        or C{None} (not on hold, or held by the administrator).
    """

    queueId: str
    state: str
    nextAttempt: float
    envelope: Optional[Envelope]
    size: Optional[int]
    raw: Optional[bytes] = None
    takeovers: int = 0
    holdReason: Optional[str] = None

    @property
    def mtime(self):
        """The file spool's old name for L{nextAttempt}."""
        return self.nextAttempt

    @property
    def receivedAt(self):
        return None if self.envelope is None else self.envelope.receivedAt

    def age(self, now):
        """Seconds since the message was accepted, or C{None}."""
        received = self.receivedAt
        return None if received is None else now - received

    @property
    def lastError(self):
        """The last error of the first pending recipient that has one."""
        if self.envelope is None:
            return None
        for r in self.envelope.pending():
            if r.lastError:
                return r.lastError
        return None


@dataclass
class Claim:
    """
    A message claimed for delivery by one queue runner: no other claimer
    gets it until L{ISpool.complete}, L{ISpool.reschedule} or
    L{ISpool.release} (or until the claimer dies: a backend makes the claim
    go with it).

    @ivar takenOver: this claim took the message over from a claimer that
        stopped (died, or lost its lease) before recording an outcome.
    @ivar takeovers: how many claims in a row were taken over, this one
        included; back to 0 once an attempt's outcome is recorded
        (L{ISpool.complete}, L{ISpool.reschedule}).  A message that crashes
        every process delivering it counts up here, never to an outcome:
        the runner backs off and then holds it (L{takeoverHoldReason}).
    """

    queueId: str
    envelope: Envelope
    takenOver: bool = False
    takeovers: int = 0

    @property
    def recovered(self):
        """
        A claimer stopped holding this message since its last recorded
        outcome (this claim took it over, or an earlier one did and then
        backed off): that delivery attempt may have been made, so agents
        check for duplicates.
        """
        return self.takeovers > 0


def takeoverHoldReason(takeovers):
    """
    What an administrator reads (C{pymailer queue list/show}) about a
    message the runner held after C{takeovers} takeovers in a row.
    """
    return (f"its delivery stopped {takeovers} times in a row without an outcome"
            " (did it crash the server?); `pymailer queue release` tries once more")


def bouncedEnvelope(queueId, envelope, reason):
    """
    The administrator's bounce: every pending recipient of C{envelope}
    failed with C{reason}; the runner then reports them to the sender.

    @raise WrongState: no recipient is pending.
    """
    if not envelope.pending():
        raise WrongState(f"{queueId}: no pending recipient to bounce")
    return envelope.withRecipients(
        dataclasses.replace(r, state=FAILED, lastError=reason, remoteMTA=None)
        if r.state == PENDING
        else r
        for r in envelope.recipients
    )


def refuseCorrupt(queueId, state):
    """Only delete applies to a message whose envelope is corrupt."""
    if state == CORRUPT:
        raise WrongState(f"{queueId}: the envelope is corrupt (only delete applies)")


def adminBounce(queueId, state, readEnvelope, reason):
    """
    The envelope an administrator's bounce leaves (L{bouncedEnvelope}), for
    every spool: C{readEnvelope()} gives the stored one, raising
    C{ValueError}, C{TypeError} or C{KeyError} when it cannot be read.

    @raise WrongState: corrupt, unreadable, or no recipient is pending.
    """
    refuseCorrupt(queueId, state)
    try:
        envelope = readEnvelope()
    except (ValueError, TypeError, KeyError):
        raise WrongState(f"{queueId}: the envelope cannot be read") from None
    return bouncedEnvelope(queueId, envelope, reason)


def injectMessage(spool, source, envelopeFields):
    """
    L{ISpool.inject} in terms of L{ISpool.newMessage}: copy the binary file
    object C{source} into a new message and commit it.  Blocking.

    @return: its queue id.
    """
    writer = spool.newMessage()
    size = 0
    try:
        while True:
            chunk = source.read(256 * 1024)
            if not chunk:
                break
            size += len(chunk)
            writer.write(chunk)
        envelopeFields.setdefault("size", size)
        writer.commit(Envelope(queueId=writer.queueId, **envelopeFields))
    except BaseException:
        writer.abort()
        raise
    return writer.queueId


class ClaimOrder:
    """
    The order in which a spool claims what is due (L{ISpool.claimDue}),
    the same for every backend: messages whose claimer died first, then
    due deferred mail and new mail alternately; which of the two comes
    first turns round at each full look, so that neither starves.
    """

    def __init__(self):
        self._preferDeferred = False

    def order(self, fresh, newOnly, lapsed, due):
        """
        @param fresh: the new messages, a list.
        @param newOnly: L{ISpool.claimDue}'s: then C{fresh} alone.
        @param lapsed: C{lapsed()} gives the messages whose claimer died,
            C{due()} the due deferred ones: lists, looked up only for a
            full look.
        """
        if newOnly:
            return fresh
        self._preferDeferred = not self._preferDeferred
        return lapsed() + interleave(due(), fresh, self._preferDeferred)


def interleave(a, b, aFirst):
    """C{a} and C{b} alternately, so that neither starves the other."""
    first, second = (a, b) if aFirst else (b, a)
    out = []
    for i in range(max(len(first), len(second))):
        if i < len(first):
            out.append(first[i])
        if i < len(second):
            out.append(second[i])
    return out
