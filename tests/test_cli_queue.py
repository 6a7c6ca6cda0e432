"""
Tests for the C{pymailer queue ...} admin commands, run in-process through
L{pymailer.cli.main} on a real spool directory, with the spool's own locks
standing in for a running server.
"""

import email
import email.policy
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pymailer.config import QueueConfig
from pymailer.envelope import FAILED, Envelope, Recipient
from pymailer.queue.notify import Reporter
from pymailer.queue.runner import QueueRunner
from pymailer.queue.spool import ADMIN_BOUNCE, Spool
from mailserver import subprocessEnv
from pymailer.testing import ClockReactor, RecordingDeliveryAgent, SynchronousThreadPool

DATA = b"From: alice@example.org\r\nTo: bob@remote.test\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.fixture
def spool(conf):
    return Spool(conf.parent / "data" / "queue")


@pytest.fixture
def run(cli):
    """Run C{pymailer --config conf queue ARGS} in-process."""
    return lambda *args: cli("queue", *args)


def accept(spool, rcpts=("bob@remote.test",), sender="alice@example.org", data=DATA, **kwargs):
    writer = spool.newMessage()
    writer.write(data)
    envelope = Envelope(
        queueId=writer.queueId,
        sender=sender,
        recipients=tuple(Recipient(i, a) for i, a in enumerate(rcpts)),
        receivedAt=time.time() - 600,
        size=len(data),
        **kwargs,
    )
    writer.commit(envelope)
    return writer.queueId


def deferred(spool, retryIn=3600, error="451 4.4.1 Connection refused", **kwargs):
    """A message that was tried once and waits for its retry."""
    qid = accept(spool, **kwargs)
    claim = spool.claim("incoming", qid)
    envelope = claim.envelope.withRecipients(
        Recipient(r.index, r.address, attempts=1, lastError=error)
        for r in claim.envelope.recipients
    )
    spool.defer(claim, envelope, time.time() + retryIn)
    return qid


def state(spool, qid):
    return spool.find(qid)


def oneLineError(err):
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("pymailer: error: ")
    return err


class TestList:
    def test_empty(self, run, spool):
        """An empty queue says so: the admin knows nothing is stuck."""
        assert run("list") == (0, "queue is empty\n", "")

    def test_oneLinePerMessage(self, run, spool):
        """
        Each message is one line with id, state, size, age, sender and
        recipient count; deferred ones add the retry time and last error:
        this is what an admin reads to see why mail is stuck.
        """
        new = accept(spool, rcpts=("a@x.test", "b@y.test"))
        late = deferred(spool)
        code, out, err = run("list")
        assert code == 0 and err == ""
        lines = out.splitlines()
        assert len(lines) == 3 and lines[-1].startswith("-- 2 messages, ")
        [newLine] = [line for line in lines if line.startswith(new)]
        assert "incoming" in newLine and str(len(DATA)) in newLine
        assert "<alice@example.org>" in newLine and "2 rcpts" in newLine
        assert "10m" in newLine
        [lateLine] = [line for line in lines if line.startswith(late)]
        assert "deferred" in lateLine and "1 rcpt" in lateLine
        assert "retry: " in lateLine and "(in 59m)" in lateLine
        assert "last error: 451 4.4.1 Connection refused" in lateLine

    def test_nullSenderAndControlCharacters(self, run, spool):
        """
        A bounce shows as <> and a hostile reply text cannot put escape
        sequences on the admin's terminal.
        """
        qid = deferred(spool, sender="", error="451 4.0.0 \x1b[2Jgotcha")
        code, out, _ = run("list")
        line = out.splitlines()[0]
        assert line.startswith(qid) and "<>" in line
        assert "\x1b" not in out and "?[2Jgotcha" in out

    def test_corrupt(self, run, spool):
        """A corrupt envelope is listed, not a traceback."""
        qid = accept(spool)
        os.rename(spool.envelopePath("incoming", qid), spool.envelopePath("corrupt", qid))
        with open(spool.envelopePath("corrupt", qid), "wb") as f:
            f.write(b"{not json")
        code, out, _ = run("list")
        assert code == 0 and "corrupt" in out and "unreadable envelope" in out

    def test_noQueueDirectory(self, run):
        """
        With a config whose data_dir has no queue the command says so and
        creates nothing: otherwise a typo'd config makes a stray queue.
        """
        code, out, err = run("list")
        assert code == 1
        oneLineError(err)
        assert "no mail queue at" in err


class TestShow:
    def test_envelopeAndHeaders(self, run, spool):
        """
        show prints the envelope as JSON and the message's headers (not its
        body): the admin sees who, to whom, and what, without reading mail.
        """
        qid = deferred(spool)
        code, out, err = run("show", qid)
        assert code == 0 and err == ""
        assert f"queue id: {qid}\nstate: deferred\n" in out
        start = out.index("{")
        end = out.index("\n}\n") + 2
        envelope = json.loads(out[start:end])
        assert envelope["sender"] == "alice@example.org"
        assert envelope["recipients"][0]["lastError"] == "451 4.4.1 Connection refused"
        assert "Subject: hello" in out
        assert "body" not in out[end:]

    def test_headersCapped(self, run, spool):
        """At most 40 header lines: a message with 10000 headers does not flood the terminal."""
        data = b"".join(b"X-H%d: v\r\n" % i for i in range(100)) + b"\r\nbody\r\n"
        qid = accept(spool, data=data)
        code, out, _ = run("show", qid)
        assert "X-H39: v" in out and "X-H40: v" not in out

    def test_unknown(self, run, spool):
        """An unknown id is one line and exit 1: scripts can tell."""
        code, out, err = run("show", "0123-dead-0")
        assert code == 1 and out == ""
        assert oneLineError(err) == "pymailer: error: no such message in the queue: 0123-dead-0\n"

    def test_pathIsNotAnId(self, run, spool):
        """An id is never a path: show ../../accounts cannot read other files."""
        code, _, err = run("show", "../../pymailer")
        assert code == 1 and "no such message" in oneLineError(err)


class TestHoldRelease:
    def test_roundTrip(self, run, spool):
        """
        hold keeps a message from delivery, release gives it back due at
        once: the admin can stop a suspicious message and let it go.
        """
        qid = deferred(spool)
        assert run("hold", qid) == (0, f"{qid}: on hold (was deferred)\n", "")
        assert state(spool, qid) == "hold"
        assert spool.claim("deferred", qid) is None  # no runner takes it
        code, out, _ = run("release", qid)
        assert code == 0 and "released" in out
        assert state(spool, qid) == "deferred"
        [(_, retryAt)] = spool.listQueue("deferred")
        assert retryAt <= time.time() + 1
        # The retry state survived the round trip.
        claim = spool.claim("deferred", qid)
        assert claim.envelope.recipients[0].attempts == 1

    def test_holdNew(self, run, spool):
        """New mail can be held before it is ever tried."""
        qid = accept(spool)
        assert run("hold", qid)[0] == 0
        assert state(spool, qid) == "hold"

    def test_holdTwice(self, run, spool):
        """Holding a held message is an error naming the state."""
        qid = accept(spool)
        run("hold", qid)
        code, _, err = run("hold", qid)
        assert code == 1 and "already on hold" in oneLineError(err)

    def test_releaseNotHeld(self, run, spool):
        """Releasing a message that is not held says so."""
        qid = accept(spool)
        code, _, err = run("release", qid)
        assert code == 1 and "not on hold" in oneLineError(err)
        assert state(spool, qid) == "incoming"

    def test_beingDelivered(self, run, spool):
        """
        A message a runner holds (being delivered right now) is refused with
        exit 1 and left alone: moving it under the runner would lose its
        delivery state or deliver it twice.
        """
        qid = accept(spool)
        claim = spool.claim("incoming", qid)
        for action in ("hold", "delete", "bounce", "flush"):
            code, out, err = run(action, qid)
            assert code == 1 and out == ""
            assert "being delivered right now" in oneLineError(err), action
        assert state(spool, qid) == "active"
        assert os.path.exists(spool.dataPath(qid))
        spool.release(claim)
        assert run("hold", qid)[0] == 0


class TestDelete:
    def test_removesDataAndEnvelope(self, run, spool):
        """delete removes envelope and data: the message is gone for good."""
        qid = deferred(spool)
        assert run("delete", qid) == (0, f"{qid}: deleted\n", "")
        assert state(spool, qid) is None
        assert not os.path.exists(spool.dataPath(qid))
        assert run("list") == (0, "queue is empty\n", "")

    def test_corrupt(self, run, spool):
        """A corrupt envelope can be deleted (it can be nothing else)."""
        qid = accept(spool)
        os.rename(spool.envelopePath("incoming", qid), spool.envelopePath("corrupt", qid))
        assert run("delete", qid)[0] == 0
        assert not os.path.exists(spool.dataPath(qid))

    def test_unknown(self, run, spool):
        """Deleting an unknown id is a one-line error."""
        code, _, err = run("delete", "0123-dead-0")
        assert code == 1 and "no such message" in oneLineError(err)


class TestFlush:
    def test_one(self, run, spool):
        """flush ID makes a deferred message due now: the server retries it at once."""
        qid = deferred(spool)
        other = deferred(spool)
        code, out, _ = run("flush", qid)
        assert code == 0 and "due now" in out
        due = dict(spool.listQueue("deferred"))
        assert due[qid] <= time.time() + 1
        assert due[other] > time.time() + 3000

    def test_all(self, run, spool):
        """flush without an id makes all deferred mail due, and leaves held mail held."""
        deferred(spool), deferred(spool)
        held = deferred(spool)
        run("hold", held)
        code, out, _ = run("flush")
        assert (code, out) == (0, "2 deferred messages due now\n")
        assert all(t <= time.time() + 1 for _, t in spool.listQueue("deferred"))
        assert state(spool, held) == "hold"

    def test_allSkipsBusy(self, run, spool):
        """A message being delivered does not stop flushing the others."""
        a, _ = deferred(spool), deferred(spool)
        claim = spool.claim("deferred", a)
        assert run("flush") == (0, "1 deferred message due now\n", "")
        spool.release(claim, "deferred")

    def test_held(self, run, spool):
        """flush on a held message points to release instead."""
        qid = deferred(spool)
        run("hold", qid)
        code, _, err = run("flush", qid)
        assert code == 1 and "release it instead" in oneLineError(err)


class TestBounce:
    def test_marksPendingFailed(self, run, spool):
        """
        bounce fails every pending recipient with a 5.0.0 administrator
        reason and puts the message where the server's next scan finds it,
        due now: the sender gets a bounce instead of silence.
        """
        qid = deferred(spool, rcpts=("a@x.test", "b@y.test"))
        code, out, err = run("bounce", qid)
        assert code == 0 and err == ""
        assert "2 recipients failed" in out and "<alice@example.org>" in out
        assert state(spool, qid) == "deferred"
        [(_, retryAt)] = spool.listQueue("deferred")
        assert retryAt <= time.time() + 1
        claim = spool.claim("deferred", qid)
        assert [(r.state, r.lastError) for r in claim.envelope.recipients] == [
            (FAILED, ADMIN_BOUNCE),
            (FAILED, ADMIN_BOUNCE),
        ]
        assert not any(r.reported for r in claim.envelope.recipients)

    def test_fromHold(self, run, spool):
        """A held message can be bounced: it leaves hold for the server to report."""
        qid = accept(spool)
        run("hold", qid)
        assert run("bounce", qid)[0] == 0
        assert state(spool, qid) == "deferred"
        assert spool.listQueue("hold") == []

    def test_nothingPending(self, run, spool):
        """Bouncing twice is an error: nothing is pending the second time."""
        qid = accept(spool)
        run("bounce", qid)
        code, _, err = run("bounce", qid)
        assert code == 1 and "no pending recipient" in oneLineError(err)

    def test_serverSendsTheBounce(self, run, spool):
        """
        After bounce, the queue runner (as in the running server) reports
        the failure to the sender with an RFC 3464 report and removes the
        message: the whole point of bouncing rather than deleting.
        """
        qid = accept(spool, rcpts=("a@x.test", "b@y.test"))
        run("bounce", qid)
        agent = RecordingDeliveryAgent()
        reactor = ClockReactor()
        reactor.advance(time.time())
        config = QueueConfig()
        runner = QueueRunner(
            spool, agent, config, reactor, SynchronousThreadPool(),
            reporter=Reporter(spool, "mail.example.org", config),
        )
        runner.startService()
        reactor.advance(1)
        reports = [call for call in agent.calls if call[0].sender == ""]
        assert len(reports) == 1
        envelope, recipients, data, _ = reports[0]
        assert [r.address for r in recipients] == ["alice@example.org"]
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert message.get_content_type() == "multipart/report"
        blocks = [dict(b.items()) for b in list(message.iter_parts())[1].get_payload()]
        assert [b["Final-Recipient"] for b in blocks[1:]] == ["rfc822; a@x.test", "rfc822; b@y.test"]
        assert {b["Diagnostic-Code"] for b in blocks[1:]} == {"smtp; " + ADMIN_BOUNCE}
        # The bounced message itself was not delivered, and has left the queue.
        assert not any(call[1] for call in agent.calls if call[0].queueId == qid)
        assert state(spool, qid) is None
        runner.stopService()


def test_show_into_a_closed_pipe_ends_quietly(spool, conf):
    """
    `pymailer queue show ID | head` whose reader has gone ends quietly,
    with the status of a tool killed by SIGPIPE (141): before, it printed
    "pymailer: error: Broken pipe" after the lines the user wanted.
    """
    qid = accept(spool)
    read, write = os.pipe()
    os.close(read)  # The reader is gone before the first write: every write fails.
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pymailer", "--config", str(conf), "queue", "show", qid],
            stdout=write, stderr=subprocess.PIPE, text=True, env=subprocessEnv(),
            cwd=conf.parent, timeout=60)
    finally:
        os.close(write)
    assert result.stderr == ""
    assert result.returncode == 128 + signal.SIGPIPE
