"""
Worker processes (C{[server] workers = 2}), end to end: a real twistd
supervisor and its two workers on loopback, real clients.

Which worker accepts a connection is the kernel's choice; a test that needs
a client on a given worker stops the other one (SIGSTOP) until the client
has its greeting, so that only that worker is in accept().
"""

import contextlib
import os
import poplib
import re
import signal
import smtplib

import pytest
from twisted.python.failure import Failure

from imapwire import Wire
from mailserver import PASSWORD, MailServer, waitFor

ALICE = "alice@example.org"
BOB = "bob@example.org"
LOCKOUT_TIME = 3

_STARTED = re.compile(r"worker (\d+) started, pid (\d+)")


def workerPids(server):
    """C{{index: pid}} of the workers running now, from the supervisor's log."""
    pids = {}
    for index, pid in _STARTED.findall(server.log(settle=0)):
        pids[int(index)] = int(pid)
    return pids


def waitForWorkers(server, count=2, timeout=60):
    """Wait until C{count} workers say they are ready; return their pids."""
    def ready():
        pids = workerPids(server)
        log = server.log(settle=0)
        return len(pids) == count and all(
            f"[worker {i} pid {pid}] [pymailer.workers#info] worker {i} ready" in log
            for i, pid in pids.items()) and pids
    return waitFor(ready, timeout,
                   message=lambda: f"{count} workers ready:\n{server.log(settle=0)}")


@contextlib.contextmanager
def onlyWorker(server, index):
    """
    Only worker C{index} accepts connections in the block (the others are
    stopped): connect and read the greeting inside it.
    """
    pids = workerPids(server)
    others = [pid for i, pid in pids.items() if i != index]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids[index]
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def serving(server, **provision):
    """C{server} provisioned, started, its workers ready; stopped after the block."""
    server.provision(**provision)
    server.start()
    waitForWorkers(server)
    try:
        yield server
    finally:
        server.stop()


def login(wire, password=PASSWORD):
    return wire.command(f'LOGIN {ALICE} "{password}"')[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MailServer(
        tmp_path_factory.mktemp("workers"), roles=("imap", "pop3"), workers=2,
        sections={"auth": {"allow_plaintext_on_loopback": True, "failure_delay": 0.1,
                           "max_failures": 3, "lockout_time": LOCKOUT_TIME}})
    with serving(server):
        yield server


def test_every_worker_accepts_and_each_message_is_delivered_once(server):
    """
    With two workers, SMTP clients are served by both (the log names the
    worker of each accepted message) and each message reaches the mailbox
    exactly once, delivered at once by the worker that accepted it (local
    mail skips the queue): a second delivery by worker 0's queue runner
    would make a duplicate.
    """
    before = len(server.messages(BOB))
    for index in (0, 1):
        with onlyWorker(server, index):
            client = smtplib.SMTP("127.0.0.1", server.port, timeout=20)
        with client:
            client.sendmail(f"carol{index}@example.net", [BOB],
                            f"Subject: via worker {index}\r\n\r\nhello\r\n".encode())
    server.waitForMessages(BOB, before + 2)
    for index in (0, 1):
        qid = server.waitForLog(re.compile(
            rf"result=delivered qid=(\S+) from=<carol{index}@example.net>"))[1]
        server.waitForLog(f"{qid}: to=<{BOB}> status=delivered")
    log = server.log(settle=0)
    for index in (0, 1):
        accepted = re.findall(
            rf"\[worker {index} pid \d+\] \[pymailer.mail#info\] result=delivered "
            rf"qid=(\S+) from=<carol{index}@example.net>", log)
        assert len(accepted) == 1, log
        delivered = re.findall(
            rf"\[worker (\d+) pid \d+\] \[pymailer.delivery#info\] "
            rf"{re.escape(accepted[0])}: to=<{BOB}> status=delivered", log)
        assert delivered == [str(index)], log
        copies = [m for m in server.messages(BOB) if f"via worker {index}".encode() in m]
        assert len(copies) == 1


def test_lockout_counts_failures_made_on_every_worker(server):
    """
    Failed logins on different workers add up: two on worker 0 and one on
    worker 1 reach max_failures (3), and then even the right password is
    refused on worker 0; with counts kept per process a guesser got
    max_failures tries per worker.  After lockout_time the address may log
    in again.
    """
    for index in (0, 0, 1):
        with onlyWorker(server, index):
            wire = Wire(server.ports["imap"], timeout=20)
        assert b" NO " in login(wire, "wrong")
        wire.close()
    with onlyWorker(server, 0):
        wire = Wire(server.ports["imap"], timeout=20)
    assert b" OK " not in login(wire, PASSWORD)
    wire.close()

    def loginWorks():
        w = Wire(server.ports["imap"], timeout=20)
        try:
            return b" OK " in login(w)
        finally:
            w.close()
    waitFor(loginWorks, timeout=LOCKOUT_TIME + 10, interval=0.5,
            message="the lockout to end")


def test_idle_on_one_worker_sees_mail_delivered_by_the_other(server):
    """
    An IMAP client in IDLE on worker 1 hears `* N EXISTS` for a message
    that worker 0 accepted and delivered at once: a change made in one
    process reaches sessions in every other, so mail shows up without a
    poll.
    """
    with onlyWorker(server, 1):
        wire = Wire(server.ports["imap"], timeout=20)
    assert b" OK " in login(wire)
    untagged, _ = wire.command("SELECT INBOX")
    exists = next(int(line.split()[1]) for line in untagged if line.endswith(b" EXISTS\r\n"))
    wire.sock.sendall(b"i1 IDLE\r\n")
    assert wire.file.readline().startswith(b"+")
    with onlyWorker(server, 0):
        client = smtplib.SMTP("127.0.0.1", server.port, timeout=20)
    with client:
        client.sendmail("carol@example.net", [ALICE], b"Subject: idle\r\n\r\nhi\r\n")
    line = wire.file.readline()
    while not line.endswith(b" EXISTS\r\n"):
        line = wire.file.readline()
    assert int(line.split()[1]) > exists
    wire.sock.sendall(b"DONE\r\n")
    wire.close()
    assert re.search(r"\[worker 0 pid \d+\] \[pymailer.mail#info\] result=delivered "
                     r"qid=\S+ from=<carol@example.net> to=<alice@example.org>", server.log())


def test_pop3_lock_holds_across_workers(server):
    """
    While a POP3 session on worker 1 holds alice's maildrop, a second login
    on worker 0 gets `-ERR [IN-USE]` (RFC 2449 §8.1.2): two sessions on
    different workers must not both delete messages.
    """
    with onlyWorker(server, 1):
        first = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=20)
    first.user(ALICE)
    first.pass_(PASSWORD)
    with onlyWorker(server, 0):
        second = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=20)
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"IN-USE"):
        second.pass_(PASSWORD)
    second.close()
    first.quit()


def test_killed_worker_is_restarted_and_others_keep_their_clients(server):
    """
    SIGKILL worker 0: the supervisor logs it and starts a new worker 0,
    an IMAP client on worker 1 keeps its session, and mail sent afterwards
    is still delivered (the new worker 0 runs the queue).  Before, a dead
    process meant every client gone and no server.
    """
    with onlyWorker(server, 1):
        wire = Wire(server.ports["imap"], timeout=20)
    assert b" OK " in login(wire)
    killed = workerPids(server)[0]
    os.kill(killed, signal.SIGKILL)
    pids = waitFor(lambda: workerPids(server)[0] != killed and waitForWorkers(server),
                   timeout=60, message="worker 0 restarted")
    server.waitForLog(re.compile(rf"worker 0 \(pid {killed}\) died .* restarting"))
    assert b" OK " in wire.command("SELECT INBOX")[1]
    assert b" OK " in wire.command("NOOP")[1]
    wire.close()
    before = len(server.messages(BOB))
    with smtplib.SMTP("127.0.0.1", server.port, timeout=20) as client:
        client.sendmail("carol@example.net", [BOB], b"Subject: after\r\n\r\nhi\r\n")
    server.waitForMessages(BOB, before + 1)
    assert server.running() and pids[0] != killed


@pytest.mark.parametrize("limit, refusal", [
    ("max_connections_per_ip", b"Too many connections from your address, try again later"),
    ("max_connections", b"Too many connections, try again later")])
def test_connections_limited_across_workers(makeMailServer, limit, refusal):
    """
    With two IMAP connections allowed per address (or in all), one on
    each worker fills the quota: a third, on either worker, gets `* BYE
    [UNAVAILABLE]`, and once one closes a new one is admitted.  Otherwise
    a limit set to 2 meant 2 per worker (N times the limit in all).
    """
    server = makeMailServer(roles=("imap",), workers=2, sections={
        "imap": {"max_connections_per_ip": 50, "max_connections": 50, limit: 2}})
    waitForWorkers(server)
    held = []
    for index in (0, 1):
        with onlyWorker(server, index):
            held.append(Wire(server.ports["imap"], timeout=20))
    for index in (0, 1):
        with onlyWorker(server, index):
            refused = Wire(server.ports["imap"], timeout=20)
        assert refused.greeting == b"* BYE [UNAVAILABLE] " + refusal + b"\r\n"
    held.pop().close()

    def admitted():
        wire = Wire(server.ports["imap"], timeout=20)
        wire.close()
        return wire.greeting.startswith(b"* OK")

    waitFor(admitted, 10, message="the closed connection's slot")


def test_sighup_reloads_and_sigterm_says_goodbye_in_every_worker(makeMailServer):
    """
    SIGHUP to twistd reloads the certificate in both workers; SIGTERM gives
    IMAP clients on both workers `* BYE`, and twistd exits cleanly after its
    workers: otherwise a renewed certificate served by one worker only,
    or clients cut without a word and worker processes left behind.
    """
    server = makeMailServer(roles=("imap",), workers=2, sections={
        "auth": {"allow_plaintext_on_loopback": True}})
    pids = waitForWorkers(server)
    os.kill(server.pid, signal.SIGHUP)
    for i, pid in pids.items():
        server.waitForLog(re.compile(rf"\[worker {i} pid {pid}\] .*TLS certificate reloaded"),
                          timeout=20)
    clients = []
    for index in (0, 1):
        with onlyWorker(server, index):
            clients.append(Wire(server.ports["imap"], timeout=20))
    for wire in clients:
        assert b" OK " in login(wire)
    # twistd re-raises the SIGTERM it handled, after a clean shutdown.
    assert server.stop() in (0, -15)
    for wire in clients:
        rest = wire.file.read()
        assert b"* BYE" in rest
    log = server.log()
    for index, pid in pids.items():
        assert f"worker {index} (pid {pid}) exited" in log
    assert log.index("worker 1 (pid") < log.index("Server Shut Down.")
    for pid in pids.values():
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def test_workers_stop_when_twistd_is_killed_and_a_restart_binds_again(makeMailServer):
    """
    SIGKILL twistd (a crash of the supervisor): its workers notice at once
    and exit, so the server can be started again on the same ports; workers
    left behind would keep serving with nobody watching them, and hold the
    ports against the restart.
    """
    server = makeMailServer(workers=2)
    pids = waitForWorkers(server)
    server.kill9()
    waitFor(lambda: all(not os.path.exists(f"/proc/{pid}") or _zombie(pid)
                        for pid in pids.values()),
            timeout=20, message="the workers to exit")
    server.start()
    assert server.running()


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


# -- the kick from a worker's commit to worker 0, piece by piece -------------


class _Transport:
    def __init__(self):
        self.written = []
        self.pid = 4242

    def writeToChild(self, fd, data):
        self.written.append((fd, data))


def test_a_commit_in_any_worker_wakes_worker_zero():
    """
    A byte on a worker's kick pipe makes the supervisor write one to worker
    0's stdin, and worker 0 reading it looks at the queue: without this,
    mail accepted by another worker waited for the runner's next timed scan
    (5 s) instead of going out at once.
    """
    from twisted.internet.task import Clock

    from pymailer.workers import KICK_FD, Supervisor, SupervisorPipe, WorkerProcess

    supervisor = Supervisor({}, 2, Clock())
    workers = [WorkerProcess(supervisor, index) for index in (0, 1)]
    for worker in workers:
        worker.makeConnection(_Transport())
        supervisor.workers[worker.index] = worker
    workers[1].childDataReceived(KICK_FD, b"k")
    assert workers[0].transport.written == [(0, b"k")]
    assert workers[1].transport.written == []

    readEnd, writeEnd = os.pipe()
    kicks, closed = [], []
    pipe = SupervisorPipe(lambda: kicks.append(1), lambda: closed.append(1), fd=readEnd)
    os.write(writeEnd, b"kk")
    assert pipe.doRead() is None and kicks == [1]
    os.close(writeEnd)
    reason = pipe.doRead()
    pipe.connectionLost(Failure(reason))
    assert closed == [1]
    os.close(readEnd)


def test_a_store_change_in_one_worker_wakes_the_others_at_once(tmp_path):
    """
    A worker that changed the store writes CHANGED on its kick pipe; the
    supervisor passes it to every other worker (not to itself, and not as
    a queue kick), whose notifier reads the change at once instead of at
    its next poll: without this, IMAP IDLE sessions on the workers that
    did not deliver heard of new mail up to half a second later.
    """
    import io

    from twisted.internet.task import Clock

    from imapharness import ImmediateReactor, InlinePool
    from pymailer.store.notify import ChangeNotifier
    from pymailer.store.sqlite import SQLiteStore
    from pymailer.workers import CHANGED, KICK_FD, Supervisor, SupervisorPipe, WorkerProcess

    supervisor = Supervisor({}, 3, Clock())
    workers = [WorkerProcess(supervisor, index) for index in (0, 1, 2)]
    for worker in workers:
        worker.makeConnection(_Transport())
        supervisor.workers[worker.index] = worker
    workers[1].childDataReceived(KICK_FD, CHANGED)
    assert [w.transport.written for w in workers] == [[(0, CHANGED)], [], [(0, CHANGED)]]

    here, there = SQLiteStore(tmp_path / "store"), SQLiteStore(tmp_path / "store")
    notifier = ChangeNotifier(here, ImmediateReactor(), InlinePool())
    notifier.startService()  # the first poll: the cursor starts now
    heard = []
    notifier.subscribe(ALICE, "INBOX", lambda stamp: heard.append("INBOX"))
    there.deliver(ALICE, b"", io.BytesIO(b"Subject: x\r\n\r\nhi\r\n"))
    readEnd, writeEnd = os.pipe()
    kicks = []
    pipe = SupervisorPipe(lambda: kicks.append(1), lambda: None, fd=readEnd,
                          onChanged=notifier.changedElsewhere)
    os.write(writeEnd, CHANGED)
    assert pipe.doRead() is None
    assert heard == ["INBOX"] and kicks == []  # no clock advanced: no timed poll
    notifier.stopService()
    os.close(writeEnd)
    os.close(readEnd)


def test_a_wake_up_with_no_session_listening_reads_nothing(tmp_path):
    """
    A worker with no IMAP session listening (one serving SMTP) that hears
    "changed elsewhere" once per message delivered by another worker does
    not read the store for it: that cost every message a thread hand-off
    and two queries, and made two workers slower than one.
    """
    from imapharness import ImmediateReactor, InlinePool
    from pymailer.store.notify import ChangeNotifier
    from pymailer.store.sqlite import SQLiteStore

    class CountingStore(SQLiteStore):
        reads = 0

        def dataVersion(self):
            self.reads += 1
            return super().dataVersion()

    store = CountingStore(tmp_path / "store")
    notifier = ChangeNotifier(store, ImmediateReactor(), InlinePool())
    notifier.startService()
    first = store.reads
    for _ in range(5):
        notifier.changedElsewhere()
    assert store.reads == first
    notifier.subscribe(ALICE, "INBOX", lambda stamp: None)
    notifier.changedElsewhere()
    assert store.reads == first + 1
    notifier.stopService()


def test_wake_ups_are_batched_but_never_lost():
    """
    A worker queueing a burst of mail wakes the supervisor (and through it
    the queue's worker) once at once and once more at the end of a 5 ms
    window, not once per message (three processes woken per message made
    two workers slower than one); a message queued after the last write
    still gets its own wake-up, or the queue runner would not look.
    """
    from pymailer.testing import ClockReactor
    from pymailer.workers import CHANGED, QUEUED, Teller

    reactor = ClockReactor()
    readEnd, writeEnd = os.pipe()
    os.set_blocking(readEnd, False)
    teller = Teller(reactor, writeEnd, clock=reactor.seconds)

    def written():
        try:
            return os.read(readEnd, 100)
        except BlockingIOError:
            return b""

    for _ in range(50):
        teller.tell(QUEUED)
    teller.tell(CHANGED)
    assert written() == QUEUED + CHANGED
    reactor.advance(0.005)
    assert written() == QUEUED
    reactor.advance(1)
    assert written() == b""
    teller.tell(QUEUED)  # a later message: told at once
    assert written() == QUEUED
    os.close(readEnd)
    os.close(writeEnd)


def test_the_supervisor_relays_a_burst_of_wake_ups_in_few_writes():
    """
    200 commits in another worker within a few milliseconds (a burst of
    mail under load) reach worker 0 and the third worker as one write at
    once and one at the end of the 5 ms window, each, not 200 writes (a
    wake-up of the receiving process per message); a commit after the
    last write still gets its own, or mail would wait for the runner's
    timed scan and IDLE sessions for the poll.
    """
    from twisted.internet.task import Clock

    from pymailer.workers import (CHANGED, KICK_FD, QUEUED, TELL_WINDOW, Supervisor,
                                  WorkerProcess)

    clock = Clock()
    supervisor = Supervisor({}, 3, clock)
    workers = [WorkerProcess(supervisor, index) for index in (0, 1, 2)]
    for worker in workers:
        worker.makeConnection(_Transport())
        supervisor.workers[worker.index] = worker
    for _ in range(200):
        workers[1].childDataReceived(KICK_FD, QUEUED + CHANGED)
        clock.advance(TELL_WINDOW / 400)  # the burst within one window
    clock.advance(TELL_WINDOW)
    written = [[data for _, data in w.transport.written] for w in workers]
    assert sorted(written[0]) == [CHANGED, CHANGED, QUEUED, QUEUED]
    assert written[1] == [] and written[2] == [CHANGED, CHANGED]
    clock.advance(1)
    workers[2].childDataReceived(KICK_FD, QUEUED)  # later: told at once
    assert workers[0].transport.written[-1] == (0, QUEUED)


def test_start_up_objects_are_frozen_in_workers_and_in_one_process(server, makeMailServer):
    """
    Every worker, and a server of one process, moves what start-up made
    out of the garbage collector's sight once started (gc.freeze).  If
    this fails, each full collection with thousands of IMAP sessions open
    scans those objects again: seconds of a stalled reactor in an IDLE
    fan-out (issue 14).
    """
    frozen = re.compile(r"\[worker (\d) pid \d+\].* (\d+) start-up objects kept out of")
    waitFor(lambda: {i for i, _ in frozen.findall(server.log())} == {"0", "1"}, 20,
            message=server.log)
    single = makeMailServer(roles=("imap",))
    found = re.compile(r"(\d+) start-up objects kept out of the garbage collector")
    waitFor(lambda: found.search(single.log()), 20, message=single.log)
    assert int(found.search(single.log()).group(1)) > 10000
