"""
A message whose delivery kills the process delivering it (a poison
message, or a node killed mid-delivery again and again): its claim lapses,
another process takes it over, and so on.  Issue 19's closing note left it
retried at once after every lapse, never expiring, so a poison message
could take down every node in turn for ever.

Here the real queue runner drives the file spool (its claims die with the
process's lock) and the PostgreSQL queue (with its lease): each "process"
is a runner with a delivery agent that never answers, killed while it
delivers; the next one takes the claim over.  C{max_takeovers} in a row put
the message on hold (logged as an error, shown by C{pymailer queue}); from
the second takeover on it backs off as retries do; past
C{max_queue_lifetime} it bounces.
"""

import time

import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from pymailer.cli import main
from pymailer.config import QueueConfig
from pymailer.queue.model import DEFERRED, HOLD
from pymailer.queue.notify import Reporter
from pymailer.queue.runner import QueueRunner
from pymailer.queue.spool_files import Spool
from pymailer.testing import ClockReactor, RecordingDeliveryAgent, SynchronousThreadPool
from tests.queue_contract import enqueue
# As a module: its test classes collected there only.
from tests import test_queue_contract as contract

CONFIG = QueueConfig(retry_min=60, retry_max=3600, max_takeovers=5)


class FileBackend:
    """Processes on one spool directory; a killed one's locks go with it."""

    def __init__(self, tmp_path):
        self.dataDir = tmp_path / "data"
        self.configText = f'hostname = "mail.example.org"\ndata_dir = "{self.dataDir}"\n'

    def spool(self):
        return Spool(self.dataDir / "queue")

    def kill(self, spool, claim):
        contract.TestFileSpool().killClaimer(spool, claim)


class PostgreSQLBackend:
    """Nodes on one database; a killed one stops renewing its lease."""

    def __init__(self, tmp_path, pool):
        self.pool = pool
        self.configText = (
            f'hostname = "mail.example.org"\ndata_dir = "{tmp_path / "data"}"\n'
            f'[storage]\nbackend = "postgresql"\ndsn = "{pool.conninfo}"\n')

    def spool(self):
        from pymailer.queue.spool_pg import PostgreSQLSpool

        return PostgreSQLSpool(self.pool)

    def kill(self, spool, claim):
        # The lease runs out (the database's clock, not the runner's).
        contract.TestPostgreSQLSpool().killClaimer(spool, claim)


@pytest.fixture(params=["files", "postgresql"])
def backend(request, tmp_path):
    if request.param == "files":
        return FileBackend(tmp_path)
    return PostgreSQLBackend(tmp_path, request.getfixturevalue("postgresqlPool"))


class Process:
    """
    One server process running the queue, at time C{now}, whose deliveries
    never come back (it dies in them).
    """

    def __init__(self, backend, now, config=CONFIG):
        self.spool = backend.spool()
        self.reactor = ClockReactor()
        self.reactor.advance(now)
        self.agent = RecordingDeliveryAgent()
        self.agent.hold = True
        self.claims = []
        claimDue = self.spool.claimDue

        def recordingClaimDue(*args, **kwargs):
            claims = claimDue(*args, **kwargs)
            self.claims.extend(claims)
            return claims

        self.spool.claimDue = recordingClaimDue
        self.runner = QueueRunner(
            self.spool, self.agent, config, self.reactor, SynchronousThreadPool(),
            reporter=Reporter(self.spool, "mail.example.org", config))
        self.runner.startService()  # looks at the whole queue at once


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def admin(backend, tmp_path, capsys, *args):
    conf = tmp_path / "admin.toml"
    conf.write_text(backend.configText)
    capsys.readouterr()
    assert main(["--config", str(conf), "queue", *args]) == 0
    return capsys.readouterr().out


def test_messageKillingEveryProcessIsHeld(backend, tmp_path, capsys, logged):
    """
    If this fails, a message whose delivery kills the server is taken over
    and delivered again as soon as each claim lapses, for ever: every node
    in turn goes down with it, and the administrator is not told which
    message it is.
    """
    now = time.time()
    qid = enqueue(backend.spool())
    first = Process(backend, now)
    assert [recovering for *_, recovering in first.agent.calls] == [False]
    backend.kill(first.spool, first.claims[-1])

    # The first takeover delivers at once (a node that died once).
    second = Process(backend, now)
    assert [c.takeovers for c in second.claims] == [1]
    assert [recovering for *_, recovering in second.agent.calls] == [True]
    backend.kill(second.spool, second.claims[-1])

    # From the second in a row: the retry schedule, doubling.
    for takeovers in (2, 3, 4):
        process = Process(backend, now)
        assert process.agent.calls == []
        entry = backend.spool().show(qid)
        assert (entry.state, entry.takeovers) == (DEFERRED, takeovers)
        delay = CONFIG.retry_min * 2 ** (takeovers - 2)
        assert delay * 0.9 - 1 <= entry.nextAttempt - now <= delay * 1.1 + 1
        process.reactor.advance(delay * 0.9 - 1 - 0.5)
        assert process.agent.calls == []
        now += delay * 1.1 + process.runner.scanInterval
        process.reactor.advance(now - process.reactor.seconds())
        # Delivered again, checked for duplicates; and it kills this one too.
        assert [recovering for *_, recovering in process.agent.calls] == [True]
        backend.kill(process.spool, process.claims[-1])

    last = Process(backend, now)
    assert last.agent.calls == []
    entry = backend.spool().show(qid)
    assert (entry.state, entry.takeovers) == (HOLD, 5)
    assert "stopped 5 times in a row" in entry.holdReason
    errors = [formatEvent(e) for e in logged if e.get("log_level") == LogLevel.error]
    assert [e for e in errors if qid in e and "on hold" in e], errors
    last.reactor.advance(86400)
    assert last.agent.calls == []

    listed = admin(backend, tmp_path, capsys, "list")
    assert f"{qid}  hold" in listed
    assert "held: its delivery stopped 5 times in a row" in listed
    shown = admin(backend, tmp_path, capsys, "show", qid)
    assert "state: hold\nheld: its delivery stopped 5 times in a row" in shown
    assert "takeovers in a row: 5" in shown

    # Released by the administrator: one more try; an outcome recorded
    # clears the count.
    assert "released" in admin(backend, tmp_path, capsys, "release", qid)
    retry = Process(backend, now + 1)
    assert [recovering for *_, recovering in retry.agent.calls] == [True]
    [(d, results)] = retry.agent.pending
    d.callback(results)
    assert backend.spool().listMessages() == []


def test_takenOverPastItsLifetimeBounces(backend):
    """
    If this fails, a message that keeps stopping its deliveries stays in
    the queue past max_queue_lifetime (its sender never hears), or is
    delivered once more instead of bounced.
    """
    now = time.time()
    config = QueueConfig(retry_min=60, max_queue_lifetime=3600)
    qid = enqueue(backend.spool(), recipients=("bob@example.net", "carol@example.net"))
    first = Process(backend, now, config)
    backend.kill(first.spool, first.claims[-1])
    later = Process(backend, now + 3601, config)
    # Only the bounce is delivered (to the sender): the message never again.
    [(delivered, *_)] = later.agent.calls
    [bounce] = backend.spool().listMessages()
    assert delivered.queueId == bounce.queueId
    assert bounce.queueId != qid
    assert bounce.envelope.sender == ""
    assert [r.address for r in bounce.envelope.recipients] == ["alice@example.org"]
    with backend.spool().openData(bounce.queueId) as f:
        report = f.read()
    assert report.count(b"kept stopping without an outcome") == 2, report


def test_lapsedClaimFoundByThePeriodicScan(backend):
    """
    If this fails, the mail of a process that died is taken over only when
    something wakes the runner (new mail, a NOTIFY from another node); on
    a quiet queue it waits for ever.  Nothing tells the runner of a lapse:
    its look at the whole queue every scanInterval must find it.
    """
    now = time.time()
    survivor = Process(backend, now)
    survivor.agent.hold = False
    dying = backend.spool()
    qid = enqueue(dying)  # another process's spool: no wake-up here
    [claim] = dying.claimDue(now, 10)
    backend.kill(dying, claim)
    assert survivor.agent.calls == []
    survivor.reactor.advance(survivor.runner.scanInterval)
    assert [(e.queueId, recovering) for e, *_, recovering in survivor.agent.calls] == [
        (qid, True)]
    assert backend.spool().listMessages() == []


def test_missedNotificationsLookAtEverything():
    """
    If this fails, after a shared spool's listener was cut off (NOTIFYs
    lost) the runner looks only at new mail, and deferred mail that came
    due or a dead node's claims wait for the next scan instead.
    """
    from pymailer.queue.memory import MemorySpool

    spool = MemorySpool()
    qid = enqueue(spool)
    [claim] = spool.claimDue(time.time(), 10)
    spool.reschedule(claim, claim.envelope, 0)
    agent = RecordingDeliveryAgent()
    reactor = ClockReactor()
    reactor.advance(time.time())
    runner = QueueRunner(spool, agent, CONFIG, reactor, SynchronousThreadPool())
    runner.running = True  # started, its first look (at start) long done
    spool._tell(None)
    assert [e.queueId for e, *_ in agent.calls] == [qid]
