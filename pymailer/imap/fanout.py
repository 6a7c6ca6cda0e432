"""
One store read for all the IDLE (and NOTIFY) sessions of a process on one
mailbox, and one look at an account for all its NOTIFY sessions.

A delivery to a mailbox that thousands of sessions have selected and idle
on wakes each of them in the same reactor turn (the change notifier calls
its subscribers in one loop).  Each used to read what changed on its own:
10,000 sessions on two workers made 10,000 C{changedSince} queries, each
with two thread hand-offs, and the last session heard of the delivery 5 s
after it (bench/imap_idle_many.py, issue 14).  Here the requests made in
one turn for the same mailbox are gathered and answered from one read, in
the thread pool, on the next turn.

Why one answer fits every session of a batch: the read asks for what
changed since the lowest mod-sequence among them, a superset of what each
one needs, and L{pymailer.imap.selected.Selected.apply} tells a client
only what differs from what it was told (flags compared, new messages
past its last UID, expunges of UIDs it knows).  A session that has seen a
newer state than the read (it ran a command meanwhile) reads on its own
rather than be taken back.

NOTIFY sessions (RFC 5465) share the same read for their selected
mailbox, and for the other mailboxes of their account one listing and one
STATUS read per changed mailbox (L{SharedRefresh.readTogether}): each
compares it with what it last told its own client.

C{\\Recent} (RFC 3501 2.3.2): a message is recent in one session only.
A read-write batch claims the new messages once, for the first session of
the batch; the others get the answer without them, as if each had read
after that claim.  Read-only sessions (EXAMINE) claim nothing and are
batched apart.

The cyclic garbage collector is held off from the first request of a
batch until a moment after its answer, when the reactor has written the
updates.  With thousands of sessions open, a full collection (every
object of every session scanned: 1 to 3 s under load) was set off in the
middle of the fan-out by the allocations of the fan-out itself, and every
session waited for it; it now runs after they have been told.
"""

import dataclasses
import gc

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


# How long after a batch's answer the collector stays off: the reactor
# writes the updates in its next turn.
COLLECT_AFTER = 0.05


class SharedRefresh:
    """
    @param reactor: where the read is scheduled (C{callLater}).
    @param run: C{run(function, *args)} -> C{Deferred}: runs a blocking
        store call in the thread pool.
    """

    def __init__(self, reactor, run):
        self.reactor = reactor
        self.run = run
        self._batches = {}  # key -> [(selected or need, callback)]
        self._held = 0  # batches between their first request and their writes
        self._collectorWasOn = False

    def refresh(self, user, selected, callback):
        """
        Call C{callback(changes, selected)} with what changed in
        C{selected}'s mailbox since the session last applied a state (a
        L{pymailer.store.MailboxSnapshot} for C{selected.apply}, or a
        L{Failure}), read once for every session asking in this reactor
        turn.  Asking costs a list entry: no Deferred per session.
        """
        if not selected.validity:
            # Never scanned: a whole scan, its own.
            self.run(selected.refresh).addBoth(callback, selected)
            return
        key = (user, selected.name, selected.mailboxId, selected.readOnly)
        batch = self._batches.get(key)
        if batch is None:
            batch = self._newBatch(key, self._readBatch, self._answer)
        batch.append((selected, callback))

    def readTogether(self, key, read, need, callback):
        """
        Call C{callback(result)} with C{read(needs)} (blocking, in the
        pool; or a L{Failure}), where C{needs} gathers the C{need} of every
        caller asking under C{key} in this reactor turn: one read for all
        of them.  The NOTIFY sessions of one user share their look at the
        account this way (L{pymailer.imap.notify}); C{read} is the first
        caller's, so callers under one key must pass the same.
        """
        batch = self._batches.get(key)
        if batch is None:
            batch = self._newBatch(
                key, lambda batch: self.run(read, [need for need, _ in batch]), self._tellAll)
        batch.append((need, callback))

    def _newBatch(self, key, read, answer):
        """
        Gather the requests made under C{key} in this reactor turn into the
        returned list; on the next turn, C{answer(result, batch)} with
        C{read(batch)} (a value, a C{Deferred} or a L{Failure}).  The
        collector stays off until a moment after the answer.
        """
        batch = self._batches[key] = []
        self._holdCollector()
        self.reactor.callLater(0, self._readNow, key, read, answer)
        return batch

    def _readNow(self, key, read, answer):
        batch = self._batches.pop(key)
        d = defer.maybeDeferred(read, batch)
        d.addBoth(answer, batch)
        d.addBoth(lambda _: self.reactor.callLater(COLLECT_AFTER, self._releaseCollector))

    def _tellAll(self, result, batch):
        for _, callback in batch:
            try:
                callback(result)
            except Exception:
                log.failure("NOTIFY update of a session failed")

    def _holdCollector(self):
        if not self._held:
            self._collectorWasOn = gc.isenabled()
            gc.disable()
        self._held += 1

    def _releaseCollector(self):
        self._held -= 1
        if not self._held and self._collectorWasOn:
            gc.enable()

    def _readBatch(self, batch):
        for selected, _ in batch:
            selected.reading()  # before the read is handed to the pool
        since = min(selected.highestModSeq for selected, _ in batch)
        first = batch[0][0]
        return self.run(first.mailbox.changedSince, since, claimRecent=not first.readOnly)

    def _answer(self, snapshot, batch):
        if isinstance(snapshot, Failure):
            for selected, callback in batch:
                _tell(callback, snapshot, selected)
            return
        others = dataclasses.replace(snapshot, recent=frozenset()) if snapshot.recent \
            else snapshot
        claimant = snapshot
        for selected, callback in batch:
            if selected.highestModSeq > snapshot.highestModSeq:
                # Moved past the read meanwhile: the shared answer is older.
                self.run(selected.refresh).addBoth(callback, selected)
                continue
            _tell(callback, claimant, selected)
            claimant = others


def _tell(callback, result, selected):
    # One session's failure must not keep the others from hearing.
    try:
        callback(result, selected)
    except Exception:
        log.failure("IDLE update of a session failed")
