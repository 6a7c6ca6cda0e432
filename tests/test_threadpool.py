"""
L{pymailer.threadpool.LightThreadPool}, the disk threads' pool: work is
done, concurrently (group commit of fsyncs needs the threads at once),
in Twisted's pool's order of start and stop.
"""

import threading

from twisted.internet.threads import deferToThreadPool

from pymailer.testing import ClockReactor
from pymailer.threadpool import LightThreadPool


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


def test_defer_to_thread_pool():
    """deferToThreadPool works with it, as the whole server uses it."""
    pool = LightThreadPool(name="t")
    pool.start()
    got = threading.Event()
    try:
        # ClockReactor runs callFromThread at once, in the pool's thread.
        deferToThreadPool(ClockReactor(), pool, lambda: 42).addCallback(
            lambda v: v == 42 and got.set())
        assert got.wait(10)
    finally:
        pool.stop()
