"""
The relay queue without real time or a real network: retries and reports
driven by a clock (L{ClockReactor}, L{task.Clock}, L{MemoryReactorClock}),
the SMTP client on a L{StringTransport}, and MX ordering with a fake
resolver.  Each test's docstring says what a user would notice if it failed.
"""

import io
import email
import email.policy
import functools
import random
import re

import dns.name
import pytest
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

import pymailer.queue.runner
from pymailer.config import QueueConfig, RelayConfig
from pymailer.delivery.dispatch import RoutingAgent
from pymailer.delivery.local import LocalDeliveryAgent
from pymailer.delivery.relay import RelayDeliveryAgent
from pymailer.delivery.router import Router
from pymailer.dns import DNSError
from pymailer.envelope import FAILED, DeliveryResult, Envelope, Recipient
from pymailer.queue.backoff import retryDelay
from pymailer.queue.mx import NoMailHosts, mailHosts
from pymailer.queue.notify import Reporter
from pymailer.queue.runner import QueueRunner
from pymailer.queue.spool import Spool
from pymailer.dotstuff import DotStuffer, MessageSender
from pymailer.smtp.client import SMTPClientError, SMTPClientProtocol
from pymailer.store.maildir import MaildirStore
from pymailer.testing import (
    ClockReactor,
    MemoryDirectory,
    RecordingDeliveryAgent,
    SynchronousThreadPool,
)

HOSTNAME = "mail.example.org"
ALICE = "alice@example.org"
FAR = "bob@unreachable.test"
UNREACHABLE = DeliveryResult.tempfail("no mail host answered", code=451, enhanced="4.4.1")


# --- the queue with a clock --------------------------------------------------


def accept(spool, sender=ALICE, rcpts=(FAR,), notify=None, at=0.0):
    data = (f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: hello\r\n"
            "Message-ID: <orig@example.org>\r\n\r\nHello.\r\n").encode()
    writer = spool.newMessage()
    writer.write(data)
    writer.commit(Envelope(
        queueId=writer.queueId, sender=sender, receivedAt=at, size=len(data),
        recipients=tuple(Recipient(i, a, notify=notify) for i, a in enumerate(rcpts)),
    ))
    return writer.queueId


class Queue:
    """A runner on a real spool in tmp_path, a real Reporter, a clock."""

    def __init__(self, tmp_path, agent, reactor=None, **config):
        self.spool = Spool(tmp_path / "queue")
        self.clock = reactor or ClockReactor()
        self.config = QueueConfig(**config)
        self.reporter = Reporter(self.spool, HOSTNAME, self.config)
        self.agent = agent
        self.runner = QueueRunner(self.spool, agent, self.config, self.clock,
                                  SynchronousThreadPool(), reporter=self.reporter)

    def runUntil(self, t, step=None):
        step = step or self.runner.scanInterval
        while self.clock.seconds() < t:
            self.clock.advance(step)

    def envelopes(self):
        return {state: [q for q, _ in self.spool.listQueue(state)]
                for state in ("incoming", "active", "deferred", "hold", "corrupt")}


class Outcomes:
    """
    The agent's answers: the far recipient gets C{far}; anything to our own
    sender (a report) is delivered.  Records when the far one was tried.
    """

    def __init__(self, clock, far=UNREACHABLE):
        self.clock = clock
        self.far = far
        self.attempts = []

    def __call__(self, recipient):
        if recipient.address == ALICE:
            return DeliveryResult.delivered()
        self.attempts.append(self.clock.seconds())
        return self.far


def reportsIn(agent):
    """The reports (null-sender messages) the agent was given, parsed."""
    out = []
    for envelope, recipients, data, _ in agent.calls:
        if envelope.sender == "":
            msg = email.message_from_bytes(data, policy=email.policy.default)
            out.append((envelope, [r.address for r in recipients], msg))
    return out


def statusFields(report):
    part = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    fields = {}
    for line in part.as_bytes().decode().splitlines():
        if ":" in line and not line.startswith((" ", "\t")):
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value.strip())
    return fields


@pytest.fixture
def noJitter(monkeypatch):
    """Retry delays exactly as scheduled (the jitter is tested in test_queue)."""
    monkeypatch.setattr(pymailer.queue.runner, "retryDelay",
                        functools.partial(retryDelay, rand=lambda: 0.5))


def test_unreachable_domain_retried_on_schedule_then_bounced(tmp_path, noJitter):
    """
    Mail to a domain whose hosts never answer (4.4.1) is tried again after
    5, 10, 20, 40 minutes... capped at one hour, and once it has been queued
    longer than max_queue_lifetime the sender gets one "failed" report from
    the null sender.  If this fails, users either wait forever for a bounce,
    or remote servers are hammered with retries.
    """
    agent = RecordingDeliveryAgent()
    q = Queue(tmp_path, agent, retry_min=300, retry_max=3600,
              max_queue_lifetime=10000, delay_warning=10 ** 9)
    outcomes = agent.outcome = Outcomes(q.clock)
    qid = accept(q.spool)
    q.runner.startService()
    q.runUntil(20000)

    expected = [0, 300, 900, 2100, 4500, 8100, 11700]
    assert len(outcomes.attempts) == len(expected), outcomes.attempts
    for want, got in zip(expected, outcomes.attempts):
        # A retry is picked up by the next scan once due.
        assert want <= got < want + q.runner.scanInterval, (expected, outcomes.attempts)

    assert qid not in sum(q.envelopes().values(), [])
    (envelope, rcpts, report), = reportsIn(agent)
    assert envelope.sender == ""
    assert rcpts == [ALICE]
    assert envelope.recipients[0].address == ALICE
    assert report.get_content_type() == "multipart/report"
    fields = statusFields(report)
    assert fields["Action"] == "failed"
    assert FAR in fields["Final-Recipient"]
    assert fields["Status"].startswith("4.4.") or fields["Status"].startswith("5.4."), fields
    assert "4.4.1" in fields.get("Diagnostic-Code", "") or "no mail host" in report.as_string()


def test_jittered_retries_stay_within_ten_percent(tmp_path):
    """
    With the real jitter, each retry comes 0.9 to 1.1 times the scheduled
    delay after the last (plus at most one scan); if this fails, retries of
    mail deferred together either bunch up or drift far from the schedule.
    """
    agent = RecordingDeliveryAgent()
    q = Queue(tmp_path, agent, retry_min=300, retry_max=3600,
              max_queue_lifetime=10 ** 9, delay_warning=10 ** 9)
    outcomes = agent.outcome = Outcomes(q.clock)
    accept(q.spool)
    q.runner.startService()
    q.runUntil(12000, step=1)
    gaps = [b - a for a, b in zip(outcomes.attempts, outcomes.attempts[1:])]
    scheduled = [min(3600, 300 * 2 ** n) for n in range(len(gaps))]
    assert len(gaps) >= 5
    for gap, want in zip(gaps, scheduled):
        assert 0.9 * want <= gap <= 1.1 * want + 1, (gaps, scheduled)


def test_delay_warning_sent_once(tmp_path, noJitter):
    """
    A recipient still failing temporarily after delay_warning seconds gets
    its sender exactly one "delayed" report, however many retries follow.
    If this fails, senders get a warning per retry (or none at all).
    """
    agent = RecordingDeliveryAgent()
    q = Queue(tmp_path, agent, retry_min=30, retry_max=30,
              max_queue_lifetime=10 ** 6, delay_warning=100)
    outcomes = agent.outcome = Outcomes(q.clock)
    qid = accept(q.spool)
    q.runner.startService()
    q.runUntil(95)
    assert reportsIn(agent) == []
    q.runUntil(1000)
    assert len(outcomes.attempts) >= 20
    (envelope, rcpts, report), = reportsIn(agent)
    assert envelope.sender == "" and rcpts == [ALICE]
    assert statusFields(report)["Action"] == "delayed"
    # The warning went with the first attempt past 100 s.
    firstLate = min(t for t in outcomes.attempts if t >= 100)
    assert firstLate < 100 + 30 + q.runner.scanInterval
    # The message itself is still queued, marked as warned.
    assert q.envelopes()["deferred"] == [qid]
    claim = q.spool.claim("deferred", qid)
    assert claim.envelope.delayWarned
    q.spool.release(claim, "deferred")


def test_notify_never_sends_nothing(tmp_path):
    """
    A recipient given NOTIFY=NEVER that bounces produces no report; if this
    fails, senders who asked for silence get bounces anyway.
    """
    agent = RecordingDeliveryAgent()
    q = Queue(tmp_path, agent)
    agent.outcome = Outcomes(q.clock, far=DeliveryResult.permfail("no such user"))
    accept(q.spool, notify=("NEVER",))
    q.runner.startService()
    q.runUntil(60)
    assert len(agent.calls) == 1
    assert reportsIn(agent) == []
    assert not any(q.envelopes().values())


def test_failed_bounce_is_never_bounced(tmp_path, noJitter):
    """
    A message from the null sender (itself a bounce) that fails, at once or
    by expiry, is dropped without a report; if this fails, two servers can
    bounce bounces at each other forever.
    """
    agent = RecordingDeliveryAgent()
    q = Queue(tmp_path, agent, retry_min=300, retry_max=300, max_queue_lifetime=1000)
    agent.outcome = lambda r: (DeliveryResult.permfail("no such user")
                               if r.address == "gone@remote.test" else UNREACHABLE)
    originals = {accept(q.spool, sender="", rcpts=("gone@remote.test",)),
                 accept(q.spool, sender="", rcpts=(FAR,))}
    q.runner.startService()
    q.runUntil(3000)
    # Nothing but the two bounces themselves was ever queued or delivered.
    assert {envelope.queueId for envelope, *_ in agent.calls} == originals
    assert not any(q.envelopes().values())
    assert len(agent.calls) == 1 + 5  # the 5xx once; the 4xx at 0, 300, 600, 900, 1200


# --- success reports: real local delivery, real relay agent --------------------


class ThreadedMemoryReactor(MemoryReactorClock):
    """A memory reactor that runs callFromThread at once (with SynchronousThreadPool)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class MX:
    def __init__(self, preference, exchange):
        self.preference = preference
        self.exchange = dns.name.from_text(exchange)


class A:
    def __init__(self, address):
        self.address = address


class FakeResolver:
    """C{lookup(name, rdtype)} from a dict; a missing name is NXDOMAIN."""

    def __init__(self, records, errors=None):
        self.records = records
        self.errors = errors or {}
        self.queries = []

    def lookup(self, name, rdtype):
        self.queries.append((name, rdtype))
        if (name, rdtype) in self.errors:
            return defer.fail(self.errors[(name, rdtype)])
        if name not in self.records:
            return defer.fail(DNSError(name, "no such domain", temporary=False))
        return defer.succeed([r for t, r in self.records[name] if t == rdtype])


class FakePeer:
    """
    The far side of one connection the relay agent opened on a memory
    reactor: answers its commands from a script, on a StringTransport.
    """

    def __init__(self, reactor, extensions=("PIPELINING", "8BITMIME")):
        host, port, factory, _, _ = reactor.tcpClients.pop(0)
        self.address = (host, port)
        self.extensions = list(extensions)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        self.proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.proto.makeConnection(self.transport)
        self.commands = []
        self.messages = []
        self._buffer = b""
        self._data = None
        self.send("220 mx.peer.test ESMTP")

    def send(self, line):
        self.proto.dataReceived(line.encode() + b"\r\n")
        self.pump()

    def pump(self):
        while True:
            self._buffer += self.transport.value()
            self.transport.clear()
            if b"\r\n" not in self._buffer:
                return
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            self.handle(line)

    def handle(self, line):
        if self._data is not None:
            if line == b".":
                self.messages.append(b"".join(self._data))
                self._data = None
                self.send("250 2.0.0 queued as X")
            else:
                self._data.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
            return
        self.commands.append(line)
        verb = line[:4].upper()
        if verb == b"EHLO":
            lines = ["mx.peer.test"] + self.extensions
            self.proto.dataReceived(b"".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{t}\r\n".encode()
                for i, t in enumerate(lines)))
        elif verb in (b"MAIL", b"RCPT"):
            self.proto.dataReceived(b"250 2.1.0 ok\r\n")
        elif verb == b"DATA":
            self._data = []
            self.proto.dataReceived(b"354 go ahead\r\n")
        elif verb == b"RSET":
            self.proto.dataReceived(b"250 2.0.0 ok\r\n")
        elif verb == b"QUIT":
            self.proto.dataReceived(b"221 2.0.0 bye\r\n")
        else:
            self.proto.dataReceived(b"502 5.5.1 no\r\n")


def localWorld(tmp_path, reactor):
    directory = MemoryDirectory(domains=["example.org"], users=[ALICE])
    router = Router(directory)
    store = MaildirStore(tmp_path / "mail", HOSTNAME)
    store.createUser(ALICE)
    local = LocalDeliveryAgent(store, router, HOSTNAME, reactor, SynchronousThreadPool())
    return router, store, local


def mailboxReports(store):
    box = store.mailbox(ALICE)
    out = []
    for info in box.messages():
        with box.openMessage(info.uid) as f:
            msg = email.message_from_bytes(f.read(), policy=email.policy.default)
        if msg.get_content_type() == "multipart/report":
            out.append(msg)
    return out


def test_notify_success_on_local_delivery_reports_delivered(tmp_path):
    """
    NOTIFY=SUCCESS on mail to a local mailbox puts a "delivered" report in
    the sender's mailbox (through the real local delivery agent); if this
    fails, senders who asked for a delivery receipt never get one.
    """
    reactor = ClockReactor()
    router, store, local = localWorld(tmp_path, reactor)
    q = Queue(tmp_path, local, reactor=reactor)
    accept(q.spool, sender=ALICE, rcpts=(ALICE,), notify=("SUCCESS",))
    q.runner.startService()
    q.runUntil(10)
    (report,) = mailboxReports(store)
    fields = statusFields(report)
    assert fields["Action"] == "delivered"
    assert fields["Status"].startswith("2.")
    assert not any(q.envelopes().values())


@pytest.mark.parametrize("peerDSN", [False, True])
def test_notify_success_relayed_to_peer_without_dsn(tmp_path, peerDSN):
    """
    NOTIFY=SUCCESS on mail relayed (by the real relay agent) to a server
    that does not offer DSN gets the sender a "relayed" report: nobody
    further on will confirm.  To a server that offers DSN, NOTIFY is passed
    on in the RCPT command and we send nothing.  If this fails, receipts are
    lost, or sent twice.
    """
    reactor = ThreadedMemoryReactor()
    router, store, local = localWorld(tmp_path, reactor)
    resolver = FakeResolver({
        "peer.test": [("MX", MX(10, "mx.peer.test."))],
        "mx.peer.test": [("A", A("192.0.2.25"))],
    })
    relay = RelayDeliveryAgent(RelayConfig(), resolver, HOSTNAME, reactor,
                               SynchronousThreadPool())
    agent = RoutingAgent(router, local, relay, reactor, SynchronousThreadPool())
    q = Queue(tmp_path, agent, reactor=reactor)
    accept(q.spool, sender=ALICE, rcpts=("carol@peer.test",), notify=("SUCCESS",))
    q.runner.startService()
    assert [(h, p) for h, p, *_ in reactor.tcpClients] == [("192.0.2.25", 25)]
    extensions = ["PIPELINING", "8BITMIME"] + (["DSN"] if peerDSN else [])
    peer = FakePeer(reactor, extensions)
    reactor.advance(1)
    assert len(peer.messages) == 1
    assert peer.messages[0].endswith(b"\r\n\r\nHello.\r\n")
    rcpt = next(c for c in peer.commands if c.startswith(b"RCPT"))
    assert (b"NOTIFY=SUCCESS" in rcpt) == peerDSN
    assert not any(q.envelopes().values())
    reports = mailboxReports(store)
    if peerDSN:
        assert reports == []
    else:
        (report,) = reports
        fields = statusFields(report)
        assert fields["Action"] == "relayed"
        assert "mx.peer.test" in report.as_string()


# --- connection reuse ---------------------------------------------------------


PEER_WORLD = {
    "peer.test": [("MX", MX(10, "mx.peer.test."))],
    "mx.peer.test": [("A", A("192.0.2.25"))],
}


class Relaying:
    """The real relay agent, its connection cache started, on a memory reactor."""

    def __init__(self, **config):
        self.reactor = ThreadedMemoryReactor()
        self.agent = RelayDeliveryAgent(RelayConfig(**config), FakeResolver(PEER_WORLD),
                                        HOSTNAME, self.reactor, SynchronousThreadPool())
        self.agent.cache.startService()
        self.sent = 0

    def send(self, peer=None):
        """Relay one message to carol@peer.test; its per-recipient results."""
        self.sent += 1
        envelope = Envelope(queueId=f"q{self.sent}", sender=ALICE, receivedAt=0, size=20,
                            recipients=(Recipient(0, "carol@peer.test"),))
        results = []
        self.agent.deliver(envelope, list(envelope.recipients),
                           lambda: io.BytesIO(b"Subject: x\r\n\r\nHi.\r\n"), False
                           ).addBoth(results.append)
        if peer is None:
            peer = FakePeer(self.reactor)
        peer.pump()
        self.reactor.advance(0.1)
        peer.pump()
        return peer, results


def test_messages_to_one_mx_share_one_connection():
    """
    Two messages to the same MX, one after the other, go over one
    connection with RSET between them (one TLS handshake, not two), and the
    idle connection is closed with QUIT after a few seconds.
    """
    relay = Relaying()
    peer, results = relay.send()
    assert results[0][0].ok
    assert relay.reactor.tcpClients == []
    _, results = relay.send(peer)
    assert results[0][0].ok and len(peer.messages) == 2
    assert relay.reactor.tcpClients == []
    verbs = [c.split()[0].upper() for c in peer.commands]
    assert verbs.count(b"EHLO") == 1
    assert verbs[verbs.index(b"DATA") + 1] == b"RSET"
    relay.reactor.advance(relay.agent.cache.idleTimeout)
    peer.pump()
    assert peer.commands[-1] == b"QUIT"


def test_connection_closed_after_max_messages():
    """A connection carries at most maxMessages messages; the next one opens a new connection."""
    relay = Relaying()
    relay.agent.cache.maxMessages = 2
    peer, _ = relay.send()
    relay.send(peer)
    assert peer.commands[-1] == b"QUIT"
    other, results = relay.send()
    assert results[0][0].ok and len(other.messages) == 1


def test_idle_connection_closed_by_peer_is_replaced():
    """
    When the MX closed the idle connection (its own timeout), the next
    message opens a new connection and is delivered, not deferred.
    """
    relay = Relaying()
    peer, _ = relay.send()
    peer.proto.connectionLost(Failure(ConnectionRefusedError()))
    other, results = relay.send()
    assert results[0][0].ok and len(other.messages) == 1


def test_connection_lost_at_reuse_retried_on_a_new_one():
    """
    When a reused connection dies before the next message's data was sent
    (the MX timed out as we spoke), the message goes over a new connection
    at once instead of waiting for a retry.
    """
    relay = Relaying()
    peer, _ = relay.send()
    answer = peer.handle

    def dying(line):
        if line.startswith(b"MAIL"):
            peer.proto.connectionLost(Failure(ConnectionRefusedError()))
        else:
            answer(line)

    peer.handle = dying
    _, results = relay.send(peer)
    other = FakePeer(relay.reactor)
    relay.reactor.advance(0.1)
    other.pump()
    assert results[0][0].ok and len(other.messages) == 1
    assert len(peer.messages) == 1


def test_shutdown_quits_idle_connections():
    """Stopping the server sends QUIT on every idle relay connection."""
    relay = Relaying()
    peer, _ = relay.send()
    relay.agent.cache.stopService()
    peer.pump()
    assert peer.commands[-1] == b"QUIT"


def test_no_reuse_across_different_hosts():
    """A connection to one MX is never used for a message to another."""
    relay = Relaying()
    relay.agent.resolver.records.update({
        "other.test": [("MX", MX(10, "mx.other.test."))],
        "mx.other.test": [("A", A("192.0.2.26"))],
    })
    relay.send()
    envelope = Envelope(queueId="o1", sender=ALICE, receivedAt=0, size=20,
                        recipients=(Recipient(0, "dave@other.test"),))
    relay.agent.deliver(envelope, list(envelope.recipients),
                        lambda: io.BytesIO(b"Subject: x\r\n\r\nHi.\r\n"), False)
    assert [(h, p) for h, p, *_ in relay.reactor.tcpClients] == [("192.0.2.26", 25)]


# --- dot-stuffing ------------------------------------------------------------


def referenceEncoding(message):
    """RFC 5321 §4.5.2 by the book, on the whole message at once."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", text) + b".\r\n"


def encodeInChunks(message, cuts):
    stuffer = DotStuffer(bareCRIsNewline=True)
    out, last = [], 0
    for cut in list(cuts) + [len(message)]:
        out.append(stuffer.feed(message[last:cut]))
        last = cut
    out.append(stuffer.end())
    return b"".join(out)


def unstuff(wire):
    """What a receiving server reads: lines up to the first lone "."."""
    lines = wire.split(b"\r\n")
    end = lines.index(b".")
    assert lines[end + 1:] == [b""], "data after the end marker"
    return b"".join((l[1:] if l.startswith(b".") else l) + b"\r\n" for l in lines[:end])


def dotMessage(offset):
    """A message starting with "." whose "." lines begin at C{offset} and around it."""
    filler = b".x" + b"a" * (offset - 6) + b"\r\n"  # the next line starts at offset - 2
    assert len(filler) == offset - 2
    return filler + b".\r\n..\r\n.y\r\n" * 3 + b"end\r\n"


@pytest.mark.parametrize("offset", range(16384 - 6, 16384 + 7))
def test_dot_lines_around_16k_encode_the_same_whatever_the_chunking(offset):
    """
    A message whose lines starting with "." fall at every offset around
    16 KiB is sent identically however it is cut into chunks, with exactly
    one end-of-data marker; if this fails, such a message is cut short at
    the next hop (Twisted's SMTPClient bug) or loses its dots.
    """
    message = dotMessage(offset)
    want = referenceEncoding(message)
    chunkings = [
        [],
        list(range(16384, len(message), 16384)),
        list(range(1, len(message))),
        [offset - 3, offset - 2, offset - 1, offset, offset + 1, offset + 2],
        [offset - 2], [offset - 1], [offset], [offset + 1],
        [16383], [16384], [16385],
        [1],  # the leading "." alone
    ]
    for cuts in chunkings:
        wire = encodeInChunks(message, [c for c in cuts if 0 < c < len(message)])
        assert wire == want, cuts
        assert wire.split(b"\r\n").count(b".") == 1
        assert wire.endswith(b"\r\n.\r\n")
        assert unstuff(wire) == message


def test_bare_cr_and_lf_become_crlf_whatever_the_chunking():
    """
    A stray CR or LF in outgoing mail (even split across chunks, CR in one
    and LF in the next) becomes one CR LF, never passed on bare; if this
    fails, we can be used to smuggle a second message past the next hop.
    """
    message = b"a\rb\nc\r\nd\r\r\n.\n.\r\r.\rlast"
    want = b"a\r\nb\r\nc\r\nd\r\n\r\n..\r\n..\r\n\r\n..\r\nlast\r\n.\r\n"
    assert referenceEncoding(message) == want
    for cut in range(len(message) + 1):
        assert encodeInChunks(message, [cut] if 0 < cut < len(message) else []) == want, cut
    assert encodeInChunks(message, range(1, len(message))) == want
    rand = random.Random(5321)
    for _ in range(300):
        body = bytes(rand.choice(b".\r\nx") for _ in range(rand.randrange(0, 40)))
        cuts = sorted(rand.sample(range(1, len(body)), min(len(body) - 1, 4))) if len(body) > 1 else []
        assert encodeInChunks(body, cuts) == referenceEncoding(body), (body, cuts)


# --- the SMTP client protocol ------------------------------------------------


def clientOn(clock):
    proto = SMTPClientProtocol(clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_silent_server_times_out_after_five_minutes():
    """
    A server that accepts the connection but never greets is given up after
    300 s (RFC 5321 §4.5.3.2) and the connection is aborted; if this fails,
    one dead MX holds a relay connection slot forever.
    """
    clock = task.Clock()
    proto, transport = clientOn(clock)
    failures = []
    proto.greeting.addErrback(failures.append)
    clock.advance(299)
    assert failures == [] and not transport.disconnecting
    clock.advance(1)
    (failure,) = failures
    assert failure.check(SMTPClientError)
    assert "greeting" in str(failure.value)
    assert transport.disconnecting or getattr(transport, "disconnected", False)
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("advertised,size", [
    ("10240000", 10240000), ("\u00b2", None), ("9" * 100, None), ("0", None), ("", None),
])
def test_peer_size_limit_read_only_when_a_plain_number(advertised, size):
    """A peer advertising SIZE as no plain number is taken as giving no limit, instead of failing every delivery to it."""
    proto, _ = clientOn(task.Clock())
    proto.dataReceived(b"220 mx.peer.test\r\n")
    proto.ehlo("mx.example.org")
    proto.dataReceived(f"250-mx.peer.test\r\n250 SIZE {advertised}\r\n".encode())
    assert proto.supports("SIZE") and proto.maxSize() == size


def test_pipelined_replies_matched_in_order():
    """
    With PIPELINING, MAIL and several RCPT go out together and their replies,
    arriving in one packet, go to the right commands in order (a multi-line
    reply counting once); if this fails, a refused recipient is taken for
    accepted, or the reverse.
    """
    clock = task.Clock()
    proto, transport = clientOn(clock)
    greeting = []
    proto.greeting.addCallback(greeting.append)
    proto.dataReceived(b"220-mx.peer.test ESMTP\r\n220 welcome\r\n")
    assert greeting[0].code == 220 and greeting[0].lines == ["mx.peer.test ESMTP", "welcome"]
    replies = {}
    ds = {
        "mail": proto.command("MAIL FROM:<a@example.org>", "MAIL"),
        "rcpt1": proto.command("RCPT TO:<b@peer.test>", "RCPT"),
        "rcpt2": proto.command("RCPT TO:<c@peer.test>", "RCPT"),
        "rcpt3": proto.command("RCPT TO:<d@peer.test>", "RCPT"),
    }
    for name, d in ds.items():
        d.addCallback(lambda r, name=name: replies.__setitem__(name, r))
    assert transport.value() == (b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@peer.test>\r\n"
                                 b"RCPT TO:<c@peer.test>\r\nRCPT TO:<d@peer.test>\r\n")
    proto.dataReceived(b"250 2.1.0 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n"
                       b"451 4.3.0 later\r\n250 2.1.5 fine\r\n")
    assert {k: (r.code, r.text) for k, r in replies.items()} == {
        "mail": (250, "2.1.0 ok"),
        "rcpt1": (550, "5.1.1 no such 5.1.1 user"),
        "rcpt2": (451, "4.3.0 later"),
        "rcpt3": (250, "2.1.5 fine"),
    }
    # Every reply timer was cancelled with its reply.
    assert clock.getDelayedCalls() == []


def test_end_of_data_waits_ten_minutes():
    """
    After the final "." the client waits 600 s for the reply (RFC 5321
    §4.5.3.2: the server may be scanning the message), not less; if this
    fails, slow servers get our mail twice.
    """
    clock = task.Clock()
    proto, transport = clientOn(clock)
    proto.dataReceived(b"220 hi\r\n")
    chunks = [b"Subject: x\r\n\r\nbody\r\n", b""]
    result, failures = [], []
    d = proto.sendData(MessageSender(ClockReactor(), SynchronousThreadPool(),
                                     io.BytesIO(b"".join(chunks)),
                                     DotStuffer(bareCRIsNewline=True)))
    d.addCallbacks(result.append, failures.append)
    assert transport.value() == b"DATA\r\n"
    proto.dataReceived(b"354 go\r\n")
    assert transport.value().endswith(b"body\r\n.\r\n")
    clock.advance(599)
    assert result == [] and failures == []
    clock.advance(1)
    assert failures and failures[0].check(SMTPClientError)


# --- MX resolution -------------------------------------------------------------


def hostsOf(resolver, domain, rand=random.random):
    results = []
    mailHosts(resolver, domain, rand=rand).addBoth(results.append)
    (result,) = results
    return result


def sequence(*values):
    it = iter(values)
    return lambda: next(it)


MX_WORLD = {
    "many.test": [("MX", MX(20, "c.many.test.")), ("MX", MX(10, "a1.many.test.")),
                  ("MX", MX(10, "a2.many.test.")), ("MX", MX(10, "a3.many.test.")),
                  ("MX", MX(30, "d.many.test."))],
    "a1.many.test": [("A", A("192.0.2.1"))],
    "a2.many.test": [("A", A("192.0.2.2")), ("AAAA", A("2001:db8::2"))],
    "a3.many.test": [("A", A("192.0.2.3"))],
    "c.many.test": [("A", A("192.0.2.20"))],
    "d.many.test": [("AAAA", A("2001:db8::30"))],
    "implicit.test": [("A", A("192.0.2.77"))],
    "nullmx.test": [("MX", MX(0, "."))],
    "dangling.test": [("MX", MX(10, "nowhere.dangling.test."))],
}


def test_mx_in_preference_order_shuffled_among_equals():
    """
    Mail hosts are tried by MX preference, and in random order among equal
    preferences (RFC 5321 §5.1), with their A then AAAA addresses; if this
    fails, backup MXs get mail first or one of equal MXs gets all of it.
    """
    resolver = FakeResolver(MX_WORLD)
    first = hostsOf(resolver, "many.test", rand=sequence(0.5, 0.1, 0.2, 0.3, 0.4))
    assert first == [
        ("a1.many.test", ["192.0.2.1"]),
        ("a2.many.test", ["192.0.2.2", "2001:db8::2"]),
        ("a3.many.test", ["192.0.2.3"]),
        ("c.many.test", ["192.0.2.20"]),
        ("d.many.test", ["2001:db8::30"]),
    ]
    # Other random draws reorder the three preference-10 hosts, and only them.
    second = hostsOf(resolver, "many.test", rand=sequence(0.5, 0.9, 0.1, 0.5, 0.4))
    assert [h for h, _ in second] == [
        "a2.many.test", "a3.many.test", "a1.many.test", "c.many.test", "d.many.test"]
    seen = set()
    for seed in range(50):
        order = [h for h, _ in hostsOf(resolver, "many.test", rand=random.Random(seed).random)]
        assert order[3:] == ["c.many.test", "d.many.test"]
        seen.add(tuple(order[:3]))
    assert len(seen) == 6  # every order of the three equals turns up


def test_no_mx_means_the_domain_itself():
    """
    A domain without MX records takes mail at its own address (the implicit
    MX, RFC 5321 §5.1); if this fails, such domains get no mail from us.
    """
    resolver = FakeResolver(MX_WORLD)
    assert hostsOf(resolver, "implicit.test") == [("implicit.test", ["192.0.2.77"])]
    assert ("implicit.test", "MX") in resolver.queries


def test_null_mx_fails_permanently_at_once():
    """
    A null MX ("0 .", RFC 7505) fails the recipient at once with 5.1.10 and
    no address lookup; if this fails, mail to domains that take none is
    retried for days before bouncing.
    """
    resolver = FakeResolver(MX_WORLD)
    failure = hostsOf(resolver, "nullmx.test")
    assert failure.check(NoMailHosts)
    e = failure.value
    assert (e.temporary, e.code, e.enhanced) == (False, 556, "5.1.10")
    assert resolver.queries == [("nullmx.test", "MX")]


def test_nonexistent_domain_fails_permanently():
    """
    A domain that does not exist (NXDOMAIN) fails with 5.1.2; if this fails,
    typos in domain names are retried for five days before the sender hears.
    """
    failure = hostsOf(FakeResolver(MX_WORLD), "typo.test")
    assert failure.check(NoMailHosts)
    assert (failure.value.temporary, failure.value.code, failure.value.enhanced) == (
        False, 550, "5.1.2")


def test_dns_timeout_is_temporary():
    """
    A DNS timeout (or an MX whose host does not resolve yet) is a temporary
    failure, retried later; if this fails, a DNS hiccup bounces mail.
    """
    resolver = FakeResolver(MX_WORLD, errors={
        ("slow.test", "MX"): DNSError("slow.test", "timed out", temporary=True)})
    failure = hostsOf(resolver, "slow.test")
    assert failure.check(NoMailHosts) and failure.value.temporary
    assert failure.value.code == 451 and failure.value.enhanced.startswith("4.")
    dangling = hostsOf(resolver, "dangling.test")
    assert dangling.check(NoMailHosts) and dangling.value.temporary
    # An address timing out for one MX does not hide the others.
    resolver.errors[("a1.many.test", "A")] = DNSError("a1", "timed out", temporary=True)
    hosts = [h for h, _ in hostsOf(resolver, "many.test", rand=sequence(0.1, 0.2, 0.3, 0.4, 0.5))]
    assert hosts == ["a2.many.test", "a3.many.test", "c.many.test", "d.many.test"]


def test_relay_agent_turns_unreachable_hosts_into_441(tmp_path):
    """
    When every MX host refuses the connection, the relay agent reports a
    temporary 4.4.1 for the recipient (what the queue then retries); if
    this fails, an unreachable domain bounces at once or is never retried.
    """
    reactor = ThreadedMemoryReactor()
    resolver = FakeResolver(MX_WORLD)
    relay = RelayDeliveryAgent(RelayConfig(), resolver, HOSTNAME, reactor, SynchronousThreadPool())
    envelope = Envelope(queueId="q1", sender=ALICE, receivedAt=0,
                        recipients=(Recipient(0, "x@implicit.test"),))
    results = []
    relay.deliver(envelope, list(envelope.recipients), None, False).addBoth(results.append)
    while reactor.tcpClients:
        host, port, factory, _, _ = reactor.tcpClients.pop(0)
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    (result,) = results
    r = result[0]
    assert (r.ok, r.temporary, r.code, r.enhanced) == (False, True, 451, "4.4.1")


def test_expired_recipient_marked_failed_in_envelope(tmp_path):
    """
    A recipient that expires is recorded as failed and reported, and never
    tried again; if this fails, an expired message keeps being retried.
    """
    agent = RecordingDeliveryAgent()
    q = Queue(tmp_path, agent, max_queue_lifetime=100)
    agent.outcome = Outcomes(q.clock)
    q.clock.advance(500)
    accept(q.spool, at=0.0)
    events = []
    real = q.reporter.report

    def spy(envelope, evts, openData):
        events.extend((a, r.address, r.state) for a, r in evts)
        return real(envelope, evts, openData)

    q.reporter.report = spy
    q.runner.startService()
    q.runUntil(2000)
    assert events[0] == ("failed", FAR, FAILED)
    assert len(agent.outcome.attempts) == 1
