"""
What the PostgreSQL queue (L{pymailer.queue.spool_pg}) does beyond the
queue contract (C{tests/test_queue_contract.py}, which it passes): leases,
lapsed claims, claims counted before the attempt, many claimers at once,
messages larger than a chunk.  Against a throwaway cluster.
"""

import io
import threading
import time

import pytest

from pymailer.queue.spool_pg import CHUNK, ClaimLost, PostgreSQLSpool
from tests.queue_contract import enqueue


@pytest.fixture
def spool(postgresqlPool):
    spool = PostgreSQLSpool(postgresqlPool)
    yield spool
    spool.close()


def otherNode(spool):
    return PostgreSQLSpool(spool.pool)


def lapse(spool, queueId):
    """The lease runs out (as if its claimer stopped renewing it long ago)."""
    with spool.pool.connection() as db:
        db.execute("UPDATE queue SET lease_until = now() - interval '1 second'"
                   " WHERE queue_id = %s", (queueId,))


def column(spool, queueId, name):
    with spool.pool.connection() as db:
        return db.execute(f"SELECT {name} FROM queue WHERE queue_id = %s",
                          (queueId,)).fetchone()[0]


def test_renewedLeaseKeepsTheClaim(spool):
    """
    A claimer that renews its lease keeps the message, even past the time
    its first lease would have lapsed: otherwise a long delivery (a slow
    remote MX) would be taken over by another node and sent twice.
    """
    qid = enqueue(spool)
    [claim] = spool.claimDue(time.time(), 10)
    lapse(spool, qid)
    assert spool.renewLeases() == 1
    assert otherNode(spool).claimDue(time.time(), 10) == []
    spool.complete(claim)
    assert spool.renewLeases() == 0


def test_lapsedClaimTakenOverAndOldClaimerToldSo(spool):
    """
    When a node stops renewing (dead, or cut off from the database), another
    node claims its message, flagged recovered; the first node's late
    completion is refused (ClaimLost) and the new claimer's stands:
    otherwise a dead node's mail would never go out, or two nodes would
    each think the message theirs.
    """
    qid = enqueue(spool)
    [first] = spool.claimDue(time.time(), 10)
    lapse(spool, qid)
    other = otherNode(spool)
    [second] = other.claimDue(time.time(), 10)
    assert (second.queueId, second.recovered) == (qid, True)
    with pytest.raises(ClaimLost):
        spool.complete(first)
    with pytest.raises(ClaimLost):
        spool.reschedule(first, first.envelope, time.time() + 60)
    assert [e.state for e in spool.listMessages()] == ["active"]
    other.complete(second)
    assert spool.listMessages() == []


def test_closeGivesClaimsUp(spool):
    """
    A node shutting down with deliveries unrecorded gives their claims up
    at once: otherwise their mail waits a whole lease before another node
    (or the node itself, restarted) delivers it.
    """
    qid = enqueue(spool)
    spool.claimDue(time.time(), 10)
    spool.close()
    [again] = otherNode(spool).claimDue(time.time(), 10)
    assert (again.queueId, again.recovered) == (qid, True)


def test_claimCountedBeforeTheAttempt(spool):
    """
    Each claim is recorded in the database when it is made, before the
    delivery attempt, as mox does: otherwise a message whose delivery kills
    the node leaves no trace of the attempts it cost.
    """
    qid = enqueue(spool)
    assert column(spool, qid, "claims") == 0
    [claim] = spool.claimDue(time.time(), 10)
    assert column(spool, qid, "claims") == 1
    assert column(spool, qid, "claimed_by") == spool.claimer
    lapse(spool, qid)
    otherNode(spool).claimDue(time.time(), 10)
    assert column(spool, qid, "claims") == 2


def test_releasedRecoveredClaimGoesBackWhereItWas(spool):
    """
    A message taken over from a dead node and then released (shutdown)
    goes back to the state it had before the first claim, due as it was:
    otherwise deferred mail would jump the queue, or new mail wait a retry.
    """
    qid = enqueue(spool)
    [claim] = spool.claimDue(time.time(), 10)
    later = time.time() + 600
    spool.reschedule(claim, claim.envelope, later)
    [claim] = spool.claimDue(later + 1, 10)
    lapse(spool, qid)
    other = otherNode(spool)
    [again] = other.claimDue(later + 1, 10)
    other.release(again)
    [entry] = spool.listMessages()
    assert entry.state == "deferred" and abs(entry.nextAttempt - later) < 1


def test_manyClaimersAtOnce(spool):
    """
    Eight claimers (as eight nodes' runners) taking from one queue at the
    same time get every message exactly once: otherwise mail is delivered
    twice or never when several nodes run.
    """
    queued = sorted(enqueue(spool) for _ in range(60))
    got, errors = [], []
    start = threading.Barrier(8)

    def runner():
        node = otherNode(spool)
        try:
            start.wait()
            while claims := node.claimDue(time.time(), 3):
                got.extend(c.queueId for c in claims)
                for c in claims:
                    node.complete(c)
        except Exception as e:
            errors.append(e)
        finally:
            node.close()

    threads = [threading.Thread(target=runner) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(got) == queued
    assert spool.listMessages() == []


def test_bigMessageInChunks(spool):
    """
    A message of several chunks comes back byte for byte, and its size is
    right: otherwise large attachments are truncated or corrupted.
    """
    body = bytes(range(256)) * ((CHUNK * 5 // 2) // 256) + b"end\r\n"
    qid = enqueue(spool, body=body)
    assert column(spool, qid, "(SELECT count(*) FROM queue_data d"
                              " WHERE d.queue_id = queue.queue_id)") == 3
    with spool.openData(qid) as f:
        assert f.read() == body
    assert spool.show(qid).size == len(body)
    injected = spool.inject(io.BytesIO(body), sender="", recipients=(), receivedAt=time.time())
    with spool.openData(injected) as f:
        assert f.read() == body


def test_nothingBeforeCommit(spool):
    """
    Until the end of DATA commits it, a message being received is not in
    the database at all (nothing for another node to see, nothing to clean
    after a crash): otherwise a broken transaction could be delivered.
    """
    writer = spool.newMessage()
    writer.write(b"Subject: x\r\n\r\n" + b"x" * (CHUNK * 2))
    with spool.pool.connection() as db:
        assert db.execute("SELECT count(*) FROM queue_data").fetchone() == (0,)
    with writer.openData() as f:
        assert f.read(10) == b"Subject: x"
    writer.write(b"more\r\n")
    with writer.openData() as f:
        assert f.read().endswith(b"xmore\r\n")
    writer.abort()
    assert spool.listMessages() == []


def test_configuredLease(postgresqlDSN, tmp_path):
    """
    [storage] queue_lease sets how long a claim lasts: otherwise the
    administrator cannot choose how long a dead node's mail waits.
    """
    import dataclasses

    from pymailer.config import StorageConfig, default
    from pymailer.pg.pool import closePools, connect
    from pymailer.pg.schema import migrate
    from pymailer.queue.backend import openSpool

    with connect(postgresqlDSN) as db:
        migrate(db)
    config = dataclasses.replace(default(tmp_path), storage=StorageConfig(
        "postgresql", postgresqlDSN, 2, queue_lease=5.0))
    try:
        spool = openSpool(config)
        assert isinstance(spool, PostgreSQLSpool)
        qid = enqueue(spool)
        spool.claimDue(time.time(), 1)
        left = column(spool, qid, "extract(epoch FROM lease_until - now())")
        assert 3 < left <= 5
        spool.close()
    finally:
        closePools()


def test_otherNodesNewMailWakesTheRunner(spool):
    """
    A message queued on another node is told to this spool's listeners (the
    queue runner) within a second, and this spool's own once: otherwise a
    node whose runner is free would wait for its next scan while the node
    that took the mail is busy.
    """
    from mailserver import waitFor

    heard = []
    spool.addListener(heard.append)
    spool.listen()
    waitFor(lambda: spool._listener.listening.is_set(), message="LISTEN")
    other = otherNode(spool)
    start = time.monotonic()
    theirs = enqueue(other)
    waitFor(lambda: heard, message="the other node's message to be heard")
    assert time.monotonic() - start < 1.0
    ours = enqueue(spool)
    # Our own NOTIFY arrives too, and is not told again: notifications come
    # in commit order, so once the other node's next one is heard, ours
    # has been read (and skipped).
    again = enqueue(other)
    waitFor(lambda: again in heard, message="the other node's second message")
    assert heard == [theirs, ours, again]


def test_missedNotificationsMakeTheRunnerLook(spool):
    """
    When the listening connection is cut, mail queued meanwhile by another
    node is not lost to the runner: once listening again, the spool tells
    its listeners None (look at the whole queue).
    """
    from daemons import cutListeners
    from mailserver import waitFor

    heard = []
    spool.addListener(heard.append)
    spool.listen()
    waitFor(lambda: spool._listener.listening.is_set(), message="LISTEN")
    assert cutListeners(spool.pool.conninfo, "pymailer_queue") == 1
    enqueue(otherNode(spool))
    waitFor(lambda: heard, message="the spool to listen again")
    assert heard == [None]


class RenewalHeldUp:
    """
    A pool on which the lease renewer's next connection waits for the
    test: a renewal under way (its claims listed) when the server stops.
    """

    def __init__(self, pool):
        self.pool = pool
        self.renewing, self.proceed = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.pool, name)

    def connection(self):
        if threading.current_thread().name == "pymailer-queue-leases":
            self.renewing.set()
            self.proceed.wait(10)
        return self.pool.connection()


def test_stoppingWhileARenewalIsDueLogsNothing(postgresqlPool):
    """
    The server stopping while the lease renewer is renewing (its round was
    due) first lets that renewal end, then closes the database
    connections: the log shows no "could not renew the queue's claims"
    (DatabaseUnavailable, the connections closed under it), which an
    administrator reading the log at each restart would take for an
    outage.
    """
    from twisted.logger import globalLogPublisher

    pool = RenewalHeldUp(postgresqlPool)
    spool = PostgreSQLSpool(pool, lease=0.2)
    enqueue(spool)
    [claim] = spool.claimDue(time.time(), 10)
    assert pool.renewing.wait(10), "the renewer renews"
    renewer = spool._renewer
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        def stop():
            # SharedDatabaseService's order: the spool, then the pool.
            spool.close()
            pool.close()
        stopper = threading.Thread(target=stop)
        stopper.start()
        # close() waits for the renewal under way: this times out (a
        # close() that did not would have closed the pool under it).
        stopper.join(1)
        pool.proceed.set()
        stopper.join(10)
        renewer.join(10)
        assert not stopper.is_alive() and not renewer.is_alive()
    finally:
        pool.proceed.set()
        globalLogPublisher.removeObserver(events.append)
    assert [e.get("log_format") for e in events if e.get("log_level") is not None
            and e["log_level"].name in ("error", "critical")] == []
