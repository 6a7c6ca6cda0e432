"""
L{pymailer.threadpool.LightThreadPool}, the disk threads' pool: work is
done, concurrently (group commit of fsyncs needs the threads at once),
in Twisted's pool's order of start and stop; and L{deferToPool}'s way
back, results that finish together waking the reactor once.
"""

import io
import threading

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from pymailer.testing import ClockReactor
from pymailer.threadpool import LightThreadPool, deferToPool


def results(pool, n, func):
    done = threading.Event()
    out = []

    def onResult(ok, value):
        out.append((ok, value))
        if len(out) == n:
            done.set()

    for i in range(n):
        pool.callInThreadWithCallback(onResult, func, i)
    assert done.wait(10), out
    return out


def test_work_runs_and_errors_come_back():
    """Each piece of work's result, or its exception, reaches its caller."""
    pool = LightThreadPool(maxthreads=4, name="t")
    pool.start()
    try:
        out = results(pool, 50, lambda i: i * 2)
        assert sorted(v for ok, v in out if ok) == [i * 2 for i in range(50)]
        (ok, failure), = results(pool, 1, lambda i: 1 / 0)
        assert not ok and failure.check(ZeroDivisionError)
    finally:
        pool.stop()
    assert pool.threads == []


def test_blocked_work_runs_concurrently_up_to_the_limit():
    """
    Ten commits waiting on the disk at once occupy ten threads (so one
    directory fsync can cover them all), never more than maxthreads.
    """
    pool = LightThreadPool(maxthreads=10, name="t")
    pool.start()
    barrier = threading.Barrier(10, timeout=10)
    try:
        out = results(pool, 10, lambda i: barrier.wait())
        assert all(ok for ok, _ in out), out
        assert len(pool.threads) == 10
        results(pool, 30, lambda i: i)
        assert len(pool.threads) == 10
    finally:
        pool.stop()


def test_work_before_start_waits_and_stop_finishes_queued_work():
    """
    Work handed over before start() runs once the pool starts; stop()
    returns after the queued work is done; work after stop() is dropped
    (as Twisted's pool does).
    """
    pool = LightThreadPool(maxthreads=2, name="t")
    done = []
    gate = threading.Event()
    pool.callInThread(done.append, "early")
    pool.start()
    pool.callInThread(lambda: gate.wait(10))
    for i in range(5):
        pool.callInThread(done.append, i)
    gate.set()
    pool.stop()
    assert sorted(map(str, done)) == ["0", "1", "2", "3", "4", "early"]
    pool.callInThread(done.append, "late")
    assert "late" not in done


@pytest.mark.parametrize("defer", [deferToThreadPool, deferToPool])
def test_defer_to_thread_pool(defer):
    """deferToThreadPool works with it, as the whole server uses it; and
    deferToPool on a test's clock (no thread-call queue) takes its way."""
    pool = LightThreadPool(name="t")
    pool.start()
    got = threading.Event()
    try:
        # ClockReactor runs callFromThread at once, in the pool's thread.
        defer(ClockReactor(), pool, lambda: 42).addCallback(
            lambda v: v == 42 and got.set())
        assert got.wait(10)
    finally:
        pool.stop()


class CallQueue(list):
    """
    A reactor's C{threadCallQueue} that tells waiters of each call a
    thread queues (Twisted appends to it, and runs and removes calls in
    place), so a test waits for the hand-back itself, not in polls.
    """

    def __init__(self):
        super().__init__()
        self.changed = threading.Condition()

    def append(self, call):
        with self.changed:
            super().append(call)
            self.changed.notify_all()

    def waitFor(self, predicate, timeout=10):
        """Wait until C{predicate()} holds, or C{timeout}: whether it holds."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


class WakeCountingReactor:
    """
    A real (epoll) reactor, not running: its thread calls run when the
    test calls C{runUntilCurrent}, as the reactor's loop does, and its
    wake-ups are counted (each is a write to its waker pipe).
    """

    def __init__(self):
        from twisted.internet.epollreactor import EPollReactor

        self.reactor = EPollReactor()
        self.reactor.threadCallQueue = self.calls = CallQueue()
        self.wakeUps = 0
        wakeUp = self.reactor.wakeUp

        def counted():
            with self.calls.changed:
                self.wakeUps += 1
                self.calls.changed.notify_all()
            wakeUp()

        self.reactor.wakeUp = counted

    def queued(self, n, wakeUps=1):
        """
        Wait (10 s at most) until C{n} calls wait for the reactor and it
        was asked to wake up C{wakeUps} times (a result's wake-up comes
        after the result and the marker are queued).
        """
        assert self.calls.waitFor(
            lambda: len(self.calls) >= n and self.wakeUps >= wakeUps), (self.calls, self.wakeUps)


@pytest.fixture
def running():
    pool = LightThreadPool(maxthreads=8, name="t")
    pool.start()
    yield pool
    pool.stop()


def test_results_finished_together_wake_the_reactor_once(running):
    """
    If this fails, each store call that finishes while the reactor is busy
    writes to the reactor's waker again (a system call in the pool thread,
    an event and a read in the reactor): under IMAP load that was most of
    a command's hand-off cost (issue 13).
    """
    r = WakeCountingReactor()
    gate = threading.Event()
    got = []
    for i in range(8):
        deferToPool(r.reactor, running, lambda i=i: gate.wait(10) and i).addCallback(got.append)
    gate.set()
    r.queued(9)  # the eight results and the marker of their wake-up
    assert r.wakeUps == 1
    assert got == []  # nothing runs in the pool's threads
    r.reactor.runUntilCurrent()
    assert sorted(got) == list(range(8))
    deferToPool(r.reactor, running, lambda: "next").addCallback(got.append)
    r.queued(2, wakeUps=2)
    assert r.wakeUps == 2  # the reactor had run the others: woken again
    r.reactor.runUntilCurrent()
    assert got[-1] == "next"


def test_a_result_comes_back_after_what_its_work_handed_to_the_reactor(running):
    """
    If this fails, a command's result overtakes the store's change notice
    that its own work sent (C{callFromThread}) while an earlier wake-up was
    pending: the session then reads the mailbox again for its own change
    (one more store trip per command).
    """
    r = WakeCountingReactor()
    events = []
    first = deferToPool(r.reactor, running, lambda: "first")
    r.queued(2)  # a wake-up is pending

    def work():
        r.reactor.callFromThread(events.append, "notice")
        return "result"

    deferToPool(r.reactor, running, work).addCallback(events.append)
    r.queued(4, wakeUps=2)
    assert r.wakeUps == 2  # the first result's, and callFromThread's own
    r.reactor.runUntilCurrent()
    assert first.called and events == ["notice", "result"]


def test_a_change_notice_and_its_commands_result_share_one_wake_up(running, tmp_path):
    """
    If this fails, every IMAP command that changes a mailbox (STORE,
    APPEND, EXPUNGE) wakes the reactor twice (a write to its waker pipe, an
    event, a read, a turn of its loop each): once for the store's change
    notice and once for the command's result; or the notice comes after
    the result, and the session reads the mailbox again for its own change.
    """
    from pymailer.store.memory import MemoryStore
    from pymailer.store.notify import ChangeNotifier

    r = WakeCountingReactor()
    store = MemoryStore()
    notifier = ChangeNotifier(store, r.reactor)
    events = []
    notifier.subscribe("u@example.org", "INBOX", lambda stamp: events.append("notice"))

    def work():
        store.mailbox("u@example.org").append(io.BytesIO(b"Subject: x\r\n\r\nx\r\n"))
        return "result"

    deferToPool(r.reactor, running, work).addCallback(events.append)
    r.queued(3)  # the notice, the result, and the marker of their wake-up
    assert r.wakeUps == 1
    r.reactor.runUntilCurrent()
    assert events == ["notice", "result"]


def test_a_result_queued_during_the_reactors_turn_is_not_lost(running):
    """
    If this fails, a result that a pool thread queues while the reactor
    runs the results before it waits until something else wakes the
    reactor (a session hangs until its next timer).  Pins what the batch
    relies on in Twisted: C{runUntilCurrent} runs the calls queued when it
    began, and wakes the reactor again for those queued meanwhile.
    """
    from pymailer.threadpool import ReactorReturns

    r = WakeCountingReactor()
    returns = running.returnsTo(r.reactor)
    assert isinstance(returns, ReactorReturns)
    late = Deferred()
    # While the first result's callbacks run, a pool thread queues another
    # (as one finishing at that moment would).
    deferToPool(r.reactor, running, lambda: "first").addCallback(
        lambda _: returns(True, "late", late))
    r.queued(2)
    r.reactor.runUntilCurrent()
    assert not late.called and r.wakeUps == 2  # Twisted's own wake-up for it
    r.reactor.runUntilCurrent()
    assert late.result == "late"


def test_failures_come_back_as_errbacks(running):
    """If this fails, an exception in a store call is lost or raised in
    the reactor instead of reaching the command's errback."""
    r = WakeCountingReactor()
    d = deferToPool(r.reactor, running, lambda: 1 / 0)
    r.queued(2)
    r.reactor.runUntilCurrent()
    failures = []
    d.addErrback(failures.append)
    assert failures[0].check(ZeroDivisionError)


def _pipeBytes(waker):
    """How many bytes wait in a waker's pipe (not read)."""
    import fcntl
    import struct
    import termios

    return struct.unpack("i", fcntl.ioctl(waker.i, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_calls_from_threads_while_a_wake_up_is_pending_share_it():
    """
    If this fails, every call a thread hands to the reactor writes its
    waker pipe again while the reactor has not yet woken for the first
    (a system call in the thread, an event and a read in the reactor
    each): 2.5 per SMTP message under load (issue 14).
    """
    from twisted.internet.epollreactor import EPollReactor

    from pymailer.threadpool import coalesceWakeUps

    reactor = EPollReactor()
    assert coalesceWakeUps(reactor)
    ran = []
    threads = [threading.Thread(target=reactor.callFromThread, args=(ran.append, i))
               for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _pipeBytes(reactor.waker) == 1
    # The loop's turn: the waker read, then the calls queued run.
    reactor.waker.doRead()
    reactor.runUntilCurrent()
    assert sorted(ran) == list(range(5))
    reactor.callFromThread(ran.append, 5)
    assert _pipeBytes(reactor.waker) == 1  # woken again for a call after the turn
    assert not coalesceWakeUps(ClockReactor())  # no waker: left alone


def test_no_call_from_a_thread_waits_for_a_later_wake_up():
    """
    If this fails, a call queued by a thread just as the reactor woke is
    left until something else wakes it (a session hangs until a timer):
    a running reactor gets a thousand calls from a thread in bursts, and
    each burst is run without any other event.
    """
    from twisted.internet.epollreactor import EPollReactor

    from pymailer.threadpool import coalesceWakeUps

    reactor = EPollReactor()
    coalesceWakeUps(reactor)
    ran = []
    seen = threading.Semaphore(0)
    failures = []

    def feed():
        try:
            for n in range(0, 1000, 5):
                for i in range(n, n + 5):
                    reactor.callFromThread(ran.append, i)
                reactor.callFromThread(seen.release)
                # The reactor ran this burst: no later wake-up helped it.
                assert seen.acquire(timeout=5), n
        except BaseException as e:
            failures.append(e)
        reactor.callFromThread(finished.append, True)

    # The reactor's loop, turned here: each turn waits in epoll (10 s at
    # most: longer than the feeder waits for a burst) until the waker.
    finished = []
    feeder = threading.Thread(target=feed)
    feeder.start()
    while not finished:
        reactor.doIteration(10)
        reactor.runUntilCurrent()
    feeder.join()
    assert ran == list(range(1000)) and not failures
