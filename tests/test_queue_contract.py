"""
The queue contract (L{tests.queue_contract}) run against every backend:
the file spool (production), PostgreSQL (production, many nodes; against a
throwaway cluster, C{tests/daemons.py}) and the memory spool (the fake
tests use).
"""

import os

import pytest

from pymailer.queue.memory import MemorySpool
from pymailer.queue.spool_files import Spool
from tests.queue_contract import QueueContract


class TestFileSpool(QueueContract):
    @pytest.fixture
    def spool(self, tmp_path):
        return Spool(tmp_path / "queue")

    def reopen(self, spool):
        """Another process's spool object on the same directories."""
        return Spool(spool.root)

    def killClaimer(self, spool, claim):
        """The process died: the kernel drops its lock."""
        os.close(claim.fd)


class TestPostgreSQLSpool(QueueContract):
    @pytest.fixture
    def spool(self, postgresqlPool):
        from pymailer.queue.spool_pg import PostgreSQLSpool

        spool = PostgreSQLSpool(postgresqlPool)
        yield spool
        spool.close()

    def reopen(self, spool):
        """Another node's spool on the same database."""
        from pymailer.queue.spool_pg import PostgreSQLSpool

        return PostgreSQLSpool(spool.pool)

    def killClaimer(self, spool, claim):
        """The node died: it renews nothing, and the lease runs out."""
        spool.close()
        with spool.pool.connection() as db:
            db.execute("UPDATE queue SET lease_until = now() - interval '1 second'"
                       " WHERE queue_id = %s", (claim.queueId,))


class TestMemorySpool(QueueContract):
    @pytest.fixture
    def spool(self):
        return MemorySpool()

    def reopen(self, spool):
        """One process: the same object is the whole queue."""
        return spool

    def killClaimer(self, spool, claim):
        spool.abandon(claim)


def test_runnerDeliversFromAnyISpool():
    """If this fails, the queue runner depends on the file spool's
    directories, and a database queue (issue 19) cannot drive it: mail on
    another backend is never delivered or never retried."""
    from pymailer.config import QueueConfig
    from pymailer.envelope import DeliveryResult
    from pymailer.queue.runner import QueueRunner
    from pymailer.testing import ClockReactor, RecordingDeliveryAgent, SynchronousThreadPool
    from tests.queue_contract import enqueue

    spool = MemorySpool(clock=lambda: 0.0)
    outcomes = iter([DeliveryResult.tempfail("mailbox busy"), DeliveryResult.delivered()])
    agent = RecordingDeliveryAgent(lambda r: next(outcomes))
    reactor = ClockReactor()
    runner = QueueRunner(spool, agent, QueueConfig(), reactor, SynchronousThreadPool())
    runner.startService()
    qid = enqueue(spool)  # the commit wakes the runner
    assert [e.state for e in spool.listMessages()] == ["deferred"]
    reactor.advance(QueueConfig().retry_max + runner.scanInterval)
    assert [call[0].queueId for call in agent.calls] == [qid, qid]
    assert agent.calls[1][2] == b"Subject: hello\r\n\r\nbody\r\n"
    assert spool.listMessages() == []
    runner.stopService()
