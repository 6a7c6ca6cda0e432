"""
The SMTP accept path's per-message costs (issue 14's hot path), as a user
or an operator sees them: replies to a pipelined group in one write, one
mail-log record per message and per refusal, a log that is written in
batches off the thread that logs, and one hand-off to the disk threads for
a small message's whole commit.
"""

import io
import socket
import threading

from twisted.application.service import Application, MultiService
from twisted.internet import task, tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import ILogObserver, Logger

from pymailer.config import SMTPConfig
from pymailer.envelope import Envelope, Recipient
from pymailer.intake import MessageIntake
from pymailer.logs import BufferedLogObserver, LoggingTo
from pymailer.queue.spool_files import Spool
from pymailer.sendnow import writeNow
from pymailer.smtp.factory import SMTPFactory
from pymailer.testing import (
    ClockReactor, CountingThreadPool, MemoryDirectory, MemoryIntake, connectSMTP,
    memoryPortal)

from test_smtp_server import REPLY


class CountingSession:
    """One SMTP session on a transport that counts its writes."""

    def __init__(self):
        directory = MemoryDirectory(domains=["example.org"],
                                    users=["alice@example.org", "bob@example.org"])
        self.intake = MemoryIntake(directory)
        self.factory = SMTPFactory("mx.example.org", SMTPConfig(),
                                   memoryPortal(self.intake), task.Clock())
        self.records = []
        self.factory.mailLog.log = Logger(namespace="pymailer.mail",
                                          observer=self.records.append)
        self.proto, self.transport = connectSMTP(self.factory)
        self.writes = 0
        write, writeSequence = self.transport.write, self.transport.writeSequence

        def countedWrite(data):
            self.writes += 1
            write(data)

        def countedSequence(seq):
            self.writes += 1
            writeSequence(seq)

        self.transport.write, self.transport.writeSequence = countedWrite, countedSequence
        self.replies()

    def send(self, data):
        self.proto.dataReceived(data)
        return self.replies()

    def replies(self):
        codes = []
        raw = self.transport.value()
        self.transport.clear()
        for line in raw.split(b"\r\n")[:-1]:
            m = REPLY.match(line)
            assert m, line
            if m.group(2) == b" ":
                codes.append(int(m.group(1)))
        return codes

    def record(self, result):
        found = [e for e in self.records if e["result"] == result]
        assert len(found) == 1, self.records
        return found[0]


def test_pipelined_group_replies_in_one_write():
    """
    A client that pipelines MAIL, two RCPTs and DATA (RFC 2920) gets the
    four replies in one write (one TCP segment, one TLS record), even when
    the recipient checks answer later: before, each reply was a write of its
    own as its check finished.
    """
    s = CountingSession()
    assert s.send(b"EHLO client.test\r\n") == [250]
    s.intake.hold = True
    s.writes = 0
    assert s.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
                  b"RCPT TO:<bob@example.org>\r\nDATA\r\n") == []
    while s.intake.held:
        s.intake.held.pop(0).callback(None)
    assert s.replies() == [250, 250, 250, 354]
    assert s.writes == 1


def test_unpipelined_commands_are_answered_at_once():
    """
    A client that waits for each reply gets it at once: the server holds
    replies only while more of the group is waiting to run.
    """
    s = CountingSession()
    assert s.send(b"EHLO client.test\r\n") == [250]
    s.intake.hold = True
    assert s.send(b"MAIL FROM:<a@remote.test>\r\n") == [250]
    assert s.send(b"RCPT TO:<alice@example.org>\r\n") == []
    s.intake.held.pop(0).callback(None)
    assert s.replies() == [250]


def test_accepted_message_has_one_log_record():
    """
    Each accepted message is one mail-log record with its queue id, sender,
    recipients, size and result, as event fields and as one line of text.
    """
    s = CountingSession()
    s.send(b"EHLO client.test\r\nMAIL FROM:<a@remote.test>\r\n"
           b"RCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
    assert s.send(b"Subject: hi\r\n\r\nhello\r\n.\r\n") == [250]
    (envelope, data), = s.intake.committed
    event = s.record("queued")
    assert event["queueId"] == envelope.queueId
    assert event["sender"] == "a@remote.test"
    assert event["recipients"] == ["alice@example.org", "bob@example.org"]
    assert event["size"] == envelope.size == len(data)
    assert event["client"] == "192.0.2.1"
    assert event["record"] == (
        f"result=queued qid={envelope.queueId} from=<a@remote.test> "
        f"to=<alice@example.org>,<bob@example.org> size={envelope.size} "
        "client=192.0.2.1 listener=smtp")


def test_refusals_are_logged():
    """
    Refused commands are mail-log records too, with the stage, the reply
    and what refused: an unknown recipient, a bad MAIL, a message with a
    bare LF.  The client's text is quoted so a record stays one line.
    """
    s = CountingSession()
    s.send(b"EHLO client.test\r\n")
    assert s.send(b"MAIL FROM:<a@remote.test> BOGUS=1\r\n") == [555]
    assert s.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<nobody@example.org>\r\n"
                  b"RCPT TO:<alice@example.org>\r\nDATA\r\n") == [250, 550, 250, 354]
    assert s.send(b"bare\nLF\r\n.\r\n") == [554]
    mail, rcpt, data = (e for e in s.records if e["result"] == "refused")
    assert (mail["stage"], mail["code"], mail["reason"]) == ("MAIL", 555, None)
    assert (rcpt["stage"], rcpt["code"], rcpt["enhanced"], rcpt["reason"]) == (
        "RCPT", 550, "5.1.1", "unknown_recipient")
    assert rcpt["recipients"] == ["nobody@example.org"]
    assert rcpt["record"].startswith(
        "result=refused stage=RCPT code=550 enhanced=5.1.1 reason=unknown_recipient "
        "from=<a@remote.test> to=<nobody@example.org> client=192.0.2.1 listener=smtp "
        'text="')
    assert (data["stage"], data["code"], data["recipients"]) == (
        "DATA", 554, ["alice@example.org"])
    assert all("\n" not in e["record"] for e in s.records)
    assert not s.intake.committed


class RecordingFile:
    """
    A text file that records each write and the thread it came from, and
    tells L{waitUntil} of each.
    """

    def __init__(self):
        self.writes = []
        self._written = threading.Condition()

    def write(self, text):
        with self._written:
            self.writes.append((threading.current_thread().name, text))
            self._written.notify_all()

    def flush(self):
        pass

    def waitUntil(self, predicate, timeout=5.0):
        """Until C{predicate()} holds, checked after each write."""
        with self._written:
            assert self._written.wait_for(predicate, timeout), "timed out"


def test_log_is_written_in_batches_by_its_own_thread():
    """
    Logging an event costs the logging thread an append: the log's own
    thread formats and writes it (twistd's format), many events in one
    write, soon after.
    """
    out = RecordingFile()
    observer = BufferedLogObserver(out, interval=0.05)
    log = Logger(namespace="pymailer.mail", observer=observer)
    for i in range(100):
        log.info("{record}", record=f"result=queued qid=Q{i}")
    assert out.writes == []
    out.waitUntil(lambda: sum(t.count("\n") for _, t in out.writes) == 100)
    assert len(out.writes) <= 2
    assert {name for name, _ in out.writes} == {"pymailer-log"}
    first = out.writes[0][1].splitlines()[0]
    assert first.endswith(" [pymailer.mail#info] result=queued qid=Q0")


def test_log_is_synchronous_after_the_reactor_stops():
    """
    Once the reactor has stopped (twistd's last lines, then perhaps an exit
    by signal, with no atexit), every event is written as it comes.
    """
    out = RecordingFile()
    observer = BufferedLogObserver(out, interval=60)
    log = Logger(observer=observer)
    log.info("before")
    observer.stop()
    assert "before" in out.writes[-1][1]
    log.info("Server Shut Down.")
    assert "Server Shut Down." in out.writes[-1][1]


def test_twistd_uses_the_buffered_log():
    """
    Under twistd the plugin's service gives twistd its log observer (an
    ILogObserver component of the application, read before logging
    starts), so twistd's own lines go through the buffered log too.
    """
    observer = BufferedLogObserver(io.StringIO())
    application = Application("pymailer")
    LoggingTo(MultiService(), observer, task.Clock()).setServiceParent(application)
    assert application.getComponent(ILogObserver) is observer


def test_small_message_costs_one_thread_hand_off(tmp_path):
    """
    A small message's data, its fsyncs and its envelope go to the disk
    threads in one hand-off at commit, however many pieces it came in:
    before, every piece was a hand-off of its own.  The commit is still
    durable: the data and envelope are on disk when it fires.
    """
    pool = CountingThreadPool()
    spool = Spool(tmp_path / "queue")
    intake = MessageIntake(router=None, spool=spool, reactor=ClockReactor(), threadpool=pool)
    message = intake.openMessage()
    for piece in (b"Subject: hi\r\n", b"\r\n", b"hello\r\n"):
        message.write(piece)
    envelope = Envelope(queueId=message.queueId, sender="a@remote.test",
                        recipients=(Recipient(index=0, address="alice@example.org"),),
                        receivedAt=0.0, size=22)
    committed = []
    message.commit(envelope).addCallback(committed.append)
    assert committed and pool.calls == 1
    assert (tmp_path / "queue" / "data" / message.queueId).read_bytes() == \
        b"Subject: hi\r\n\r\nhello\r\n"
    assert (tmp_path / "queue" / "incoming" / f"{message.queueId}.json").exists()


class MeasuredSpool:
    """A spool whose free space the test sets, counting the looks."""

    def __init__(self, free):
        self.free = free
        self.looks = 0

    def freeSpace(self):
        self.looks += 1
        return self.free


def test_capacity_check_reuses_a_recent_free_space_figure():
    """
    Every MAIL checks the spool's free space; under load one look per
    second serves them all, without a hand-off to the disk threads each,
    and a low figure still refuses (452 4.3.1) until the space is back.
    """
    from pymailer.intake import FreeSpace
    from pymailer.smtp.reply import SMTPReply

    now = [100.0]
    spool = MeasuredSpool(free=10 * 1024 * 1024)
    pool = CountingThreadPool()
    space = FreeSpace(spool, now=lambda: now[0])
    intakes = [MessageIntake(None, spool, ClockReactor(), pool, minFreeSpace=1024 * 1024,
                             freeSpace=space) for _ in range(2)]
    results = []
    for i in range(10):
        intakes[i % 2].checkCapacity(1000).addBoth(results.append)
    assert results == [None] * 10
    assert (spool.looks, pool.calls) == (1, 1)
    spool.free = 1000
    now[0] += FreeSpace.MAX_AGE + 0.1
    refused = []
    for _ in range(3):
        intakes[0].checkCapacity(1000).addErrback(lambda f: refused.append(f.value))
    assert [(e.code, e.enhanced) for e in refused] == [(452, "4.3.1")] * 3
    assert all(isinstance(e, SMTPReply) for e in refused)
    assert (spool.looks, pool.calls) == (2, 2)


def test_local_delivery_costs_one_thread_hand_off(tmp_path):
    """
    The queue hands a message for a local user to the disk threads once:
    the routes are looked up and the message delivered in the same
    hand-off (before: one for the routes, one for the delivery).  The
    message is in the mailbox when the result comes back.
    """
    from pymailer.delivery.dispatch import RoutingAgent
    from pymailer.delivery.local import LocalDeliveryAgent
    from pymailer.delivery.router import Router
    from pymailer.store.maildir import MaildirStore

    reactor = ClockReactor()
    pool = CountingThreadPool()
    router = Router(MemoryDirectory(domains=["example.org"], users=["alice@example.org"]))
    store = MaildirStore(tmp_path / "mail", "mx.example.org")
    store.createUser("alice@example.org")
    local = LocalDeliveryAgent(store, router, "mx.example.org", reactor, pool)
    agent = RoutingAgent(router, local, relay=None, reactor=reactor, threadpool=pool)
    data = b"Subject: hi\r\n\r\nhello\r\n"
    envelope = Envelope(queueId="Q1", sender="a@remote.test", receivedAt=0.0, size=len(data),
                        recipients=(Recipient(index=0, address="alice@example.org"),))
    results = []
    agent.deliver(envelope, envelope.recipients, lambda: io.BytesIO(data),
                  False).addCallback(results.append)
    (result,) = results
    assert result[0].code == 250 and pool.calls == 1
    box = store.mailbox("alice@example.org")
    (info,) = box.messages()
    with box.openMessage(info.uid) as f:
        assert f.read().endswith(data)


def tcpTransport():
    """
    Twisted's TCP transport on one end of a socket pair (its reactor a
    MemoryReactor, which records the sockets it is asked to watch), and the
    other end, as the client's.
    """
    ours, client = socket.socketpair()
    reactor = MemoryReactor()
    transport = tcp.Connection(ours, Protocol(), reactor)
    transport.connected = True
    client.setblocking(False)
    return transport, client, reactor


def received(client):
    try:
        return client.recv(1 << 20)
    except BlockingIOError:
        return b""


def test_reply_is_sent_without_a_turn_of_the_reactor():
    """
    A reply leaves as it is written when nothing waits before it: the
    client has it without the reactor first watching the socket for room
    (two epoll_ctl calls and a loop turn per reply before, each a chance
    for the disk threads to take the GIL from the reactor).
    """
    transport, client, reactor = tcpTransport()
    writeNow(transport, b"250 2.0.0 Ok\r\n")
    assert received(client) == b"250 2.0.0 Ok\r\n"
    assert reactor.getWriters() == []


def test_reply_waits_behind_bytes_already_waiting():
    """
    Bytes a reply follows go first: with data waiting in the transport's
    buffer, the reply is buffered behind it, and the client reads both in
    order once the socket has room.
    """
    transport, client, reactor = tcpTransport()
    transport.write(b"220 first\r\n")
    writeNow(transport, b"250 second\r\n")
    assert received(client) == b""
    transport.doWrite()
    assert received(client) == b"220 first\r\n250 second\r\n"


def test_reply_larger_than_the_socket_takes_is_sent_whole_and_in_order():
    """
    What the socket does not take at once is buffered and sent as it has
    room, before anything written later.
    """
    transport, client, reactor = tcpTransport()
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 4096
    writeNow(transport, big)
    writeNow(transport, b"after")
    assert reactor.getWriters() == [transport]
    got = b""
    while len(got) < len(big) + 5:
        got += received(client)
        transport.doWrite()
    assert got == big + b"after"


def test_reply_on_other_transports_goes_through_write():
    """A transport that is not plain TCP (TLS, a test's) is written as before."""
    transport = StringTransport()
    writeNow(transport, b"250 2.0.0 Ok\r\n")
    assert transport.value() == b"250 2.0.0 Ok\r\n"


def test_delivery_log_line_is_formatted_once():
    """
    A delivery's log line is written as before (Postfix's "to=<...>,
    status=..." manner) and keeps its fields for a JSON log, but the text
    comes formatted with the event: the log thread looks it up instead of
    parsing a format of five fields under the GIL for every message.
    """
    from twisted.logger import eventAsText, globalLogPublisher

    from pymailer.envelope import Session
    from pymailer.events import Events

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        envelope = Envelope(queueId="Q1", sender="a@remote.test", receivedAt=0.0, size=10,
                            session=Session(clientAddress="192.0.2.1"),
                            recipients=(Recipient(index=0, address="alice@example.org",
                                                  attempts=1),))
        Events().recipientOutcome("delivered", envelope, envelope.recipients[0],
                                  "250 2.0.0 delivered to 1 mailbox(es)")
    finally:
        globalLogPublisher.removeObserver(events.append)
    (event,) = [e for e in events if e.get("log_namespace") == "pymailer.delivery"]
    assert eventAsText(event, includeTimestamp=False, includeSystem=False) == (
        "Q1: to=<alice@example.org> status=delivered attempts=1 "
        "(250 2.0.0 delivered to 1 mailbox(es))")
    assert (event["qid"], event["to"], event["status"], event["n"]) == (
        "Q1", "alice@example.org", "delivered", 1)
    assert event["log_format"] == "{record}"


class Closed(Protocol):
    def connectionLost(self, reason):
        self.lost = reason


def test_quit_closes_without_a_turn_of_the_reactor():
    """
    After QUIT's 221 has gone out, the connection is closed at once: the
    client reads the reply and then the end of the stream, and the session
    has ended, without the reactor first watching the socket for room and
    closing on its next turn (three epoll_ctl calls and a loop turn per
    message before, issue 14).
    """
    from twisted.internet.error import ConnectionDone

    from pymailer.sendnow import closeNow

    transport, client, reactor = tcpTransport()
    transport.protocol = protocol = Closed()
    transport.startReading()
    writeNow(transport, b"221 2.0.0 Bye\r\n")
    closeNow(transport)
    assert protocol.lost.check(ConnectionDone)
    assert reactor.getReaders() == [] and reactor.getWriters() == []
    client.setblocking(True)
    assert client.recv(100) == b"221 2.0.0 Bye\r\n" and client.recv(100) == b""


def test_close_waits_for_bytes_not_yet_sent():
    """
    A reply still in the transport's buffer is sent before the close: the
    connection is closed the usual way, once it has gone out.
    """
    from pymailer.sendnow import closeNow

    transport, client, reactor = tcpTransport()
    transport.protocol = protocol = Closed()
    transport.write(b"221 2.0.0 Bye\r\n")
    closeNow(transport)
    assert not hasattr(protocol, "lost") and reactor.getWriters() == [transport]
    assert transport.doWrite() is not None  # CONNECTION_DONE: the reactor closes it
    assert received(client) == b"221 2.0.0 Bye\r\n"
