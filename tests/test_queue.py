"""
The spool and the queue runner, on a real directory with time from a clock:
nothing acknowledged is lost, nothing unacknowledged survives, retries back
off, and several runners never deliver one message twice.
"""

import os

import pytest

from pymailer.config import QueueConfig
from pymailer.envelope import DELIVERED, PENDING, DeliveryResult, Envelope, Recipient
from pymailer.queue.backoff import retryDelay
from pymailer.queue.runner import QueueRunner
from pymailer.queue.spool import Spool
from pymailer.testing import ClockReactor, RecordingDeliveryAgent, SynchronousThreadPool


def accept(spool, data=b"Subject: t\r\n\r\nbody\r\n", rcpts=("a@example.org",), at=0.0):
    writer = spool.newMessage()
    writer.write(data)
    envelope = Envelope(
        queueId=writer.queueId,
        sender="s@remote.test",
        recipients=tuple(Recipient(i, a) for i, a in enumerate(rcpts)),
        receivedAt=at,
    )
    writer.commit(envelope)
    return writer.queueId


def queueState(spool):
    return {state: [q for q, _ in spool.listQueue(state)]
            for state in ("incoming", "active", "deferred", "hold", "corrupt")}


@pytest.fixture
def spool(tmp_path):
    return Spool(tmp_path / "queue")


def makeRunner(spool, agent, **config):
    reactor = ClockReactor()
    runner = QueueRunner(spool, agent, QueueConfig(**config), reactor, SynchronousThreadPool())
    return runner, reactor


def test_commit_makes_envelope_and_data_durable(spool):
    """After commit, the message's data and envelope are in the queue for delivery."""
    qid = accept(spool, data=b"hello\r\n")
    assert queueState(spool)["incoming"] == [qid]
    with spool.openData(qid) as f:
        assert f.read() == b"hello\r\n"


def test_delivered_message_leaves_the_queue(spool):
    """A message delivered to all recipients is removed from the spool."""
    agent = RecordingDeliveryAgent()
    runner, _ = makeRunner(spool, agent)
    qid = accept(spool, data=b"x\r\n")
    runner.startService()
    assert len(agent.calls) == 1
    envelope, recipients, data, recovering = agent.calls[0]
    assert envelope.queueId == qid and data == b"x\r\n" and recovering is False
    assert not any(queueState(spool).values())
    assert os.listdir(spool.root + "/data") == []


def test_enqueue_kicks_runner_at_once(spool):
    """A message committed while the runner runs is delivered without waiting for a scan."""
    agent = RecordingDeliveryAgent()
    runner, _ = makeRunner(spool, agent)
    runner.startService()
    accept(spool)  # the commit itself wakes the runner
    assert len(agent.calls) == 1


def test_temporary_failure_is_retried_with_backoff(spool):
    """A 4xx recipient is deferred, not retried before its time, and delivered on retry."""
    results = [DeliveryResult.tempfail("mailbox busy"), DeliveryResult.delivered()]
    agent = RecordingDeliveryAgent(lambda r: results.pop(0))
    runner, clock = makeRunner(spool, agent, retry_min=300, retry_max=3600)
    qid = accept(spool)
    runner.startService()
    assert queueState(spool)["deferred"] == [qid]
    (_, retryAt), = spool.listQueue("deferred")
    assert 270 <= retryAt <= 330
    clock.advance(150)  # not due yet
    assert len(agent.calls) == 1
    clock.advance(200)
    assert len(agent.calls) == 2
    assert not any(queueState(spool).values())


def test_deferred_state_is_recorded_per_recipient(spool):
    """Of two recipients, the delivered one is not delivered again on retry."""
    agent = RecordingDeliveryAgent(
        lambda r: DeliveryResult.delivered() if r.index == 0 else DeliveryResult.tempfail("busy")
    )
    runner, clock = makeRunner(spool, agent, retry_min=10, retry_max=10)
    qid = accept(spool, rcpts=("a@example.org", "b@example.org"))
    runner.startService()
    claim = spool.claim("deferred", qid)
    states = [r.state for r in claim.envelope.recipients]
    assert states == [DELIVERED, PENDING]
    assert claim.envelope.recipients[1].attempts == 1
    spool.release(claim, "deferred")
    os.utime(spool.envelopePath("deferred", qid), (0, 0))
    clock.advance(runner.scanInterval)
    assert [r.address for r in agent.calls[-1][1]] == ["b@example.org"]


def test_permanent_failure_removes_recipient(spool):
    """A 5xx recipient is failed for good and the message leaves the queue."""
    agent = RecordingDeliveryAgent(lambda r: DeliveryResult.permfail("no such user"))
    runner, _ = makeRunner(spool, agent)
    accept(spool)
    runner.startService()
    assert not any(queueState(spool).values())


def test_expired_message_fails(spool):
    """Past max_queue_lifetime, a recipient that still fails temporarily is failed."""
    agent = RecordingDeliveryAgent(lambda r: DeliveryResult.tempfail("down"))
    runner, clock = makeRunner(spool, agent, max_queue_lifetime=1000)
    clock.advance(5000)
    accept(spool, at=0.0)
    runner.startService()
    assert not any(queueState(spool).values())


def test_backoff_doubles_and_caps():
    """Retry delays double from retry_min and stop at retry_max, with ±10% jitter."""
    assert retryDelay(1, 300, 14400, rand=lambda: 0.5) == 300
    assert retryDelay(3, 300, 14400, rand=lambda: 0.5) == 1200
    assert retryDelay(20, 300, 14400, rand=lambda: 0.5) == 14400
    assert retryDelay(1, 300, 14400, rand=lambda: 0.0) == 270
    assert retryDelay(1, 300, 14400, rand=lambda: 1.0) == 330


def test_active_set_is_bounded(spool):
    """No more than max_active messages are being delivered at once."""
    agent = RecordingDeliveryAgent()
    agent.hold = True
    runner, _ = makeRunner(spool, agent, max_active=2)
    for _ in range(5):
        accept(spool)
    runner.startService()
    assert len(agent.calls) == 2
    d, results = agent.pending.pop(0)
    d.callback(results)
    assert len(agent.calls) == 3


def test_freed_slot_takes_due_deferred_mail_at_once(spool):
    """
    With more deferred mail due than max_active, the next due message starts
    as soon as a delivery finishes, not at the next scan: otherwise a retry
    backlog drains in bursts of max_active every scan interval.
    """
    outcome = [DeliveryResult.tempfail("busy")]
    agent = RecordingDeliveryAgent(lambda r: outcome[0])
    runner, clock = makeRunner(spool, agent, max_active=1, retry_min=1, retry_max=1)
    for _ in range(3):
        accept(spool)
    runner.startService()
    assert len(agent.calls) == 3 and len(queueState(spool)["deferred"]) == 3
    outcome[0] = DeliveryResult.delivered()
    agent.hold = True
    clock.advance(runner.scanInterval)  # all three due; room for one
    assert len(agent.calls) == 4
    for started in (5, 6):
        d, results = agent.pending.pop(0)
        d.callback(results)  # no clock advance: the freed slot is refilled at once
        assert len(agent.calls) == started


def test_crash_recovery_redelivers_active_with_duplicate_check(spool):
    """Mail a dead process left in active/ is delivered again, flagged as recovering."""
    qid = accept(spool)
    claim = spool.claim("incoming", qid)
    os.close(claim.fd)  # the process died: its lock is gone
    agent = RecordingDeliveryAgent()
    runner, _ = makeRunner(spool, agent)
    runner.startService()
    assert [(c[0].queueId, c[3]) for c in agent.calls] == [(qid, True)]
    assert not any(queueState(spool).values())


def test_claim_is_exclusive(spool):
    """Two runners (processes) never claim the same message."""
    qid = accept(spool)
    first = spool.claim("incoming", qid)
    assert first is not None
    assert spool.claim("incoming", qid) is None
    assert spool.claim("active", qid) is None  # locked by the live claimer


def test_unacknowledged_data_is_removed_at_start(spool):
    """A spool file without its envelope (no 250 was sent) is discarded on start-up."""
    writer = spool.newMessage()
    writer.write(b"half a message")
    writer._close()  # the receiving process died
    live = spool.newMessage()
    live.write(b"still being received")
    assert spool.removeOrphans() == [writer.queueId]
    assert os.listdir(spool.root + "/data") == [live.queueId]


def test_corrupt_envelope_moved_aside(spool):
    """An unreadable envelope goes to corrupt/ instead of blocking the queue."""
    qid = accept(spool)
    with open(spool.envelopePath("incoming", qid), "wb") as f:
        f.write(b"{not json")
    assert spool.claim("incoming", qid) is None
    assert queueState(spool)["corrupt"] == [qid]


def test_fair_between_new_and_deferred(spool):
    """With the active set nearly full, due deferred mail and new mail take turns."""
    agent = RecordingDeliveryAgent()
    agent.hold = True
    runner, clock = makeRunner(spool, agent, max_active=2)
    clock.advance(1000)
    new = [accept(spool) for _ in range(2)]
    old = [accept(spool) for _ in range(2)]
    for qid in old:
        os.rename(spool.envelopePath("incoming", qid), spool.envelopePath("deferred", qid))
        os.utime(spool.envelopePath("deferred", qid), (1, 1))
    runner.startService()
    started = {c[0].queueId for c in agent.calls}
    assert len(started & set(new)) == 1 and len(started & set(old)) == 1


def test_crash_inside_defer_keeps_the_newer_state(spool):
    """An envelope left both in active/ and deferred/ by a crash is delivered once, from deferred/."""
    qid = accept(spool)
    claim = spool.claim("incoming", qid)
    import shutil

    shutil.copy(spool.envelopePath("active", qid), spool.envelopePath("deferred", qid))
    os.utime(spool.envelopePath("deferred", qid), (0, 0))
    os.close(claim.fd)  # the process died between the two steps of defer()
    agent = RecordingDeliveryAgent()
    runner, _ = makeRunner(spool, agent)
    runner.startService()
    assert len(agent.calls) == 1
    assert not any(queueState(spool).values())


def test_dead_writers_temporary_envelopes_removed(spool):
    """Half-written envelope files of a dead process are removed at start; a live one's stay."""
    dead = os.path.join(spool.root, "incoming", "x.json.999999999.1.tmp")
    live = os.path.join(spool.root, "incoming", f"y.json.{os.getpid()}.1.tmp")
    for path in (dead, live):
        open(path, "wb").close()
    spool.removeOrphans()
    assert not os.path.exists(dead) and os.path.exists(live)


def test_shutdown_does_not_wait_for_slow_deliveries(spool):
    """Stopping the server waits a few seconds for a slow delivery, then stops; the message stays queued."""
    agent = RecordingDeliveryAgent()
    agent.hold = True
    runner, clock = makeRunner(spool, agent)
    qid = accept(spool)
    runner.startService()
    stopped = []
    runner.stopService().addCallback(stopped.append)
    assert stopped == []
    clock.advance(runner.shutdownGrace + 1)
    assert len(stopped) == 1
    assert qid in [q for q, _ in spool.listQueue("deferred")] + [q for q, _ in spool.listQueue("active")]
