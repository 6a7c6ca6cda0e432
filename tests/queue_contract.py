"""
The contract of L{pymailer.interfaces.ISpool}: what every queue backend
must do, whatever it keeps its messages in (buildbot's way: the in-memory
spool runs the same suite as the file spool, so it stays honest).
C{tests/test_queue_contract.py} runs it against each backend; a new backend
(PostgreSQL, issue 19) adds one subclass there.

Only behaviour the interface documents is tested here; layout details
(directories, locks, crash windows) stay in the backend's own tests
(C{tests/test_queue.py}).
"""

import io
import json
import time

import pytest
from zope.interface.verify import verifyObject

from pymailer.envelope import FAILED, PENDING, Envelope, Recipient
from pymailer.interfaces import ISpool, ISpoolWriter
from pymailer.queue.model import (
    ACTIVE, ADMIN_BOUNCE, DEFERRED, HOLD, INCOMING, STATES, Claim, MessageBusy,
    NoSuchMessage, QueueEntry, WrongState,
)

BODY = b"Subject: hello\r\n\r\nbody\r\n"


def enqueue(spool, body=BODY, sender="alice@example.org", recipients=("bob@example.net",)):
    writer = spool.newMessage()
    writer.write(body[:5])
    writer.write(body[5:])
    writer.commit(Envelope(
        queueId=writer.queueId, sender=sender,
        recipients=tuple(Recipient(i, a) for i, a in enumerate(recipients)),
        receivedAt=time.time(), size=len(body)))
    return writer.queueId


def ids(claims):
    return sorted(c.queueId for c in claims)


class QueueContract:
    """
    Mixin: a subclass provides a C{spool} fixture (a fresh, empty spool)
    and L{reopen} (another process's spool object on the same queue), and
    L{killClaimer} (what the death of the claiming process does).
    """

    def reopen(self, spool):
        raise NotImplementedError

    def killClaimer(self, spool, claim):
        raise NotImplementedError

    # -- the interfaces ----------------------------------------------------

    def test_interfaces(self, spool):
        """If this fails, the server cannot use this queue backend at all."""
        assert verifyObject(ISpool, spool)
        writer = spool.newMessage()
        assert verifyObject(ISpoolWriter, writer)
        writer.abort()

    # -- receiving ---------------------------------------------------------

    def test_enqueueDurable(self, spool):
        """If this fails, mail acknowledged with 250 is lost when the server
        restarts."""
        qid = enqueue(spool)
        other = self.reopen(spool)
        [entry] = other.listMessages()
        assert isinstance(entry, QueueEntry)
        assert (entry.queueId, entry.state, entry.size) == (qid, INCOMING, len(BODY))
        assert entry.envelope.sender == "alice@example.org"
        with other.openData(qid) as f:
            assert f.read() == BODY

    def test_writerReadsBack(self, spool):
        """If this fails, policy checks at the end of DATA cannot read the
        message being received."""
        writer = spool.newMessage()
        writer.write(BODY)
        with writer.openData() as f:
            assert f.read() == BODY
        writer.abort()

    def test_abortLeavesNothing(self, spool):
        """If this fails, a refused or broken transaction leaves a message
        in the queue that is then delivered."""
        writer = spool.newMessage()
        writer.write(BODY)
        writer.abort()
        spool.recover()
        assert spool.listMessages() == []
        assert spool.claimDue(time.time(), 10) == []

    def test_listenersHearCommits(self, spool):
        """If this fails, new mail waits for the next queue scan (seconds)
        instead of going out at once."""
        heard = []
        spool.addListener(heard.append)
        qid = enqueue(spool)
        injected = spool.inject(io.BytesIO(BODY), sender="", recipients=(Recipient(0, "a@b"),),
                                receivedAt=time.time())
        assert heard == [qid, injected]

    def test_inject(self, spool):
        """If this fails, bounces and forwards are never queued."""
        qid = spool.inject(io.BytesIO(BODY), sender="", recipients=(Recipient(0, "a@b.example"),),
                           receivedAt=time.time())
        [claim] = spool.claimDue(time.time(), 10)
        assert claim.queueId == qid
        assert claim.envelope.queueId == qid
        assert claim.envelope.size == len(BODY)
        assert claim.envelope.recipients[0].address == "a@b.example"
        with spool.openData(qid) as f:
            assert f.read() == BODY

    def test_freeSpace(self, spool):
        """If this fails, the intake cannot refuse mail when the disk is
        full (452) and acknowledges mail it cannot keep."""
        free = spool.freeSpace()
        assert free is None or (isinstance(free, int) and free >= 0)

    # -- claims ------------------------------------------------------------

    def test_claimGivesEachOnce(self, spool):
        """If this fails, one message is delivered twice at once."""
        qid = enqueue(spool)
        [claim] = spool.claimDue(time.time(), 10)
        assert isinstance(claim, Claim)
        assert (claim.queueId, claim.recovered) == (qid, False)
        assert claim.envelope.recipients[0].address == "bob@example.net"
        assert spool.claimDue(time.time(), 10) == []
        assert self.reopen(spool).claimDue(time.time(), 10) == []
        assert [e.state for e in spool.listMessages()] == [ACTIVE]

    def test_newOnly(self, spool):
        """If this fails, mail committed while the runner is idle waits for
        the next full scan."""
        qid = enqueue(spool)
        assert ids(spool.claimDue(time.time(), 10, newOnly=True)) == [qid]

    def test_twoClaimersDisjoint(self, spool):
        """If this fails, two runners (processes, nodes) deliver the same
        message twice, or one message is never delivered."""
        queued = sorted(enqueue(spool) for _ in range(9))
        other = self.reopen(spool)
        got = [[], []]
        for _ in range(5):
            got[0] += spool.claimDue(time.time(), 2)
            got[1] += other.claimDue(time.time(), 2)
        first, second = ids(got[0]), ids(got[1])
        assert not set(first) & set(second)
        assert sorted(first + second) == queued

    def test_limit(self, spool):
        """If this fails, the runner takes more at once than max_active."""
        for _ in range(5):
            enqueue(spool)
        assert len(spool.claimDue(time.time(), 3)) == 3
        assert len(spool.claimDue(time.time(), 3)) == 2

    def test_complete(self, spool):
        """If this fails, delivered mail is delivered again, or stays in the
        queue for ever."""
        qid = enqueue(spool)
        [claim] = spool.claimDue(time.time(), 10)
        spool.complete(claim)
        assert spool.listMessages() == []
        assert self.reopen(spool).listMessages() == []
        with pytest.raises(NoSuchMessage):
            spool.openData(qid)
        with pytest.raises(NoSuchMessage):
            spool.show(qid)

    def test_reschedule(self, spool):
        """If this fails, a deferred message is retried at once (hammering
        the remote server), never, or forgets its recipients' states."""
        qid = enqueue(spool, recipients=("a@x.example", "b@y.example"))
        now = time.time()
        [claim] = spool.claimDue(now, 10)
        first, second = claim.envelope.recipients
        updated = claim.envelope.withRecipients([
            first.__class__(0, first.address, state="delivered", attempts=1),
            second.__class__(1, second.address, attempts=1, lastError="451 4.4.1 try later"),
        ])
        spool.reschedule(claim, updated, now + 600)
        [entry] = self.reopen(spool).listMessages()
        assert (entry.state, entry.lastError) == (DEFERRED, "451 4.4.1 try later")
        assert abs(entry.nextAttempt - (now + 600)) < 2
        assert spool.claimDue(now + 1, 10) == []
        [again] = spool.claimDue(now + 601, 10)
        assert again.queueId == qid
        assert [r.state for r in again.envelope.recipients] == ["delivered", PENDING]

    def test_release(self, spool):
        """If this fails, mail claimed when the server stops is stuck until
        a restart, or lost."""
        qid = enqueue(spool)
        [claim] = spool.claimDue(time.time(), 10)
        spool.release(claim)
        [again] = spool.claimDue(time.time(), 10)
        assert (again.queueId, again.recovered) == (qid, False)

    def test_deadClaimerRecovered(self, spool):
        """If this fails, mail being delivered when the server was killed is
        never delivered (or not checked for duplicates)."""
        qid = enqueue(spool)
        [claim] = spool.claimDue(time.time(), 10)
        self.killClaimer(spool, claim)
        [again] = self.reopen(spool).claimDue(time.time(), 10)
        assert (again.queueId, again.recovered) == (qid, True)

    def takenOverOnce(self, spool):
        """A message claimed, its claimer killed, taken over by another."""
        qid = enqueue(spool)
        [claim] = spool.claimDue(time.time(), 10)
        assert (claim.takenOver, claim.takeovers) == (False, 0)
        self.killClaimer(spool, claim)
        claimer = self.reopen(spool)
        [claim] = claimer.claimDue(time.time(), 10)
        assert claim.queueId == qid
        return claimer, claim

    def test_takeoversCounted(self, spool):
        """If this fails, a message that kills every process delivering it
        is taken over again and again for ever: the runner cannot tell it
        from a node that died once, and never holds it."""
        claimer, claim = self.takenOverOnce(spool)
        assert (claim.recovered, claim.takenOver, claim.takeovers) == (True, True, 1)
        for n in (2, 3):
            self.killClaimer(claimer, claim)
            claimer = self.reopen(spool)
            [claim] = claimer.claimDue(time.time(), 10)
            assert (claim.recovered, claim.takenOver, claim.takeovers) == (True, True, n)
        assert self.reopen(spool).show(claim.queueId).takeovers == 3
        # An attempt's outcome recorded: the count starts again.
        claimer.reschedule(claim, claim.envelope, time.time())
        [again] = claimer.claimDue(time.time() + 1, 10)
        assert (again.recovered, again.takenOver, again.takeovers) == (False, False, 0)

    def test_backOffKeepsTheCount(self, spool):
        """If this fails, a taken-over message is retried at once however
        often it crashed its claimers, or after its back-off the next claim
        forgets that it may have been delivered (duplicates) or that it
        crashed before (never held)."""
        claimer, claim = self.takenOverOnce(spool)
        now = time.time()
        claimer.backOff(claim, now + 600)
        [entry] = self.reopen(spool).listMessages()
        assert (entry.state, entry.takeovers) == (DEFERRED, 1)
        assert abs(entry.nextAttempt - (now + 600)) < 2
        assert claimer.claimDue(now + 1, 10) == []
        [again] = claimer.claimDue(now + 601, 10)
        assert (again.queueId, again.envelope.sender) == (claim.queueId, "alice@example.org")
        assert (again.recovered, again.takenOver, again.takeovers) == (True, False, 1)
        self.killClaimer(claimer, again)
        [third] = self.reopen(spool).claimDue(now + 601, 10)
        assert (third.takenOver, third.takeovers) == (True, 2)

    def test_holdClaimedWithReason(self, spool):
        """If this fails, the runner cannot put a message that crashes the
        server aside, or the administrator is not told why it is held."""
        claimer, claim = self.takenOverOnce(spool)
        qid = claim.queueId
        claimer.holdClaimed(claim, "it stopped 1 time")
        other = self.reopen(spool)
        [entry] = other.listMessages()
        assert (entry.state, entry.holdReason, entry.takeovers) == (HOLD, "it stopped 1 time", 1)
        shown = other.show(qid)
        assert (shown.holdReason, Envelope.fromJSON(shown.raw).sender) == (
            "it stopped 1 time", "alice@example.org")
        assert other.claimDue(time.time() + 86400, 10) == []
        other.unhold(qid)
        entry = other.show(qid)
        assert (entry.state, entry.holdReason, entry.takeovers) == (DEFERRED, None, 1)
        [again] = other.claimDue(time.time() + 1, 10)
        assert (again.queueId, again.recovered, again.takenOver) == (qid, True, False)

    # -- the administrator -------------------------------------------------

    def test_listByState(self, spool):
        """If this fails, `pymailer queue list` and the web admin's state
        filter show the wrong messages."""
        a, b, c = enqueue(spool), enqueue(spool), enqueue(spool)
        spool.hold(b)
        claims = {cl.queueId: cl for cl in spool.claimDue(time.time(), 10)}
        spool.reschedule(claims[c], claims[c].envelope, time.time() + 600)
        spool.release(claims[a])
        assert [(e.queueId, e.state) for e in spool.listMessages()] == sorted(
            [(a, INCOMING), (b, HOLD), (c, DEFERRED)],
            key=lambda e: (STATES.index(e[1]), e[0]))
        assert [e.queueId for e in spool.listMessages([HOLD, DEFERRED])] == [c, b]
        assert spool.counts() == {INCOMING: 1, ACTIVE: 0, DEFERRED: 1, HOLD: 1, "corrupt": 0}

    def test_show(self, spool):
        """If this fails, `pymailer queue show` cannot show a message."""
        qid = enqueue(spool)
        entry = spool.show(qid)
        assert (entry.queueId, entry.state, entry.size) == (qid, INCOMING, len(BODY))
        assert json.loads(entry.raw)["sender"] == "alice@example.org"
        assert entry.age(entry.envelope.receivedAt + 5) == 5

    def test_notAQueueId(self, spool):
        """If this fails, the queue commands can be pointed at files outside
        the queue."""
        enqueue(spool)
        for bad in ("../../etc/passwd", "", "nonexistent"):
            for op in (spool.show, spool.hold, spool.unhold, spool.delete,
                       spool.flush, spool.bounce, spool.openData):
                with pytest.raises(NoSuchMessage):
                    op(bad)

    def test_holdAndRelease(self, spool):
        """If this fails, held mail is delivered anyway, or never again."""
        qid = enqueue(spool)
        assert spool.hold(qid) == INCOMING
        assert spool.claimDue(time.time(), 10) == []
        with pytest.raises(WrongState):
            spool.hold(qid)
        spool.unhold(qid)
        assert spool.show(qid).state == DEFERRED
        with pytest.raises(WrongState):
            spool.unhold(qid)
        assert ids(spool.claimDue(time.time() + 1, 10)) == [qid]

    def test_claimedIsBusy(self, spool):
        """If this fails, the administrator deletes or holds a message in
        the middle of its delivery."""
        qid = enqueue(spool)
        [claim] = spool.claimDue(time.time(), 10)
        for op in (spool.hold, spool.delete, spool.bounce, spool.flush):
            with pytest.raises(MessageBusy):
                op(qid)
        assert spool.flush(None) == []
        spool.complete(claim)

    def test_delete(self, spool):
        """If this fails, `pymailer queue delete` leaves the message to be
        delivered."""
        qid = enqueue(spool)
        assert spool.delete(qid) == INCOMING
        assert spool.listMessages() == []
        assert spool.claimDue(time.time(), 10) == []
        with pytest.raises(NoSuchMessage):
            spool.delete(qid)

    def test_flush(self, spool):
        """If this fails, `pymailer queue flush` does not retry deferred
        mail now."""
        a, b, c = enqueue(spool), enqueue(spool), enqueue(spool)
        later = time.time() + 3600
        for claim in spool.claimDue(time.time(), 10):
            if claim.queueId != c:
                spool.reschedule(claim, claim.envelope, later)
            else:
                spool.release(claim)
        with pytest.raises(WrongState):
            spool.flush(c)  # new mail is due already
        now = time.time()
        assert spool.flush(a, now=now) == [a]
        assert ids(spool.claimDue(now + 1, 10)) == sorted([a, c])
        assert spool.flush(None, now=now) == [b]
        assert ids(spool.claimDue(now + 1, 10)) == [b]

    def test_bounce(self, spool):
        """If this fails, `pymailer queue bounce` does not fail the pending
        recipients, or their sender is never told."""
        qid = enqueue(spool, recipients=("a@x.example", "b@y.example"))
        envelope = spool.bounce(qid)
        assert [(r.state, r.lastError) for r in envelope.recipients] == [
            (FAILED, ADMIN_BOUNCE)] * 2
        with pytest.raises(WrongState):
            spool.bounce(qid)
        [claim] = spool.claimDue(time.time() + 1, 10)
        assert claim.envelope.pending() == []
        assert [r.state for r in claim.envelope.recipients] == [FAILED, FAILED]
