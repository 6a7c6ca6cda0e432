"""
A thread pool for the disk work, cheaper to hand work to than Twisted's.

Every message costs the reactor several hand-offs to the disk threads (the
commit, a route lookup, the delivery, the queue's bookkeeping).  With
Twisted's L{twisted.python.threadpool.ThreadPool} each hand-off runs its
team coordination and a Python-level C{Condition.notify} on the reactor
thread: under load, py-spy put 15-20 % of the reactor's time there.  Here a
hand-off is one C{SimpleQueue.put} (C code) that a waiting thread takes.

It offers what C{deferToThreadPool} and L{pymailer.service.ThreadPoolService}
use (C{callInThreadWithCallback}, C{callInThread}, C{start}, C{stop}), with
Twisted's semantics: work queued before C{start} waits for it; C{stop} lets
the work already queued finish, then joins the threads; work handed over
after C{stop} is dropped, as Twisted's pool drops it.  Threads are started
on demand, up to C{maxthreads}, when no thread is idle.

L{deferToPool} is C{deferToThreadPool} with a cheaper way back: each
result is queued for the reactor as C{callFromThread} would queue it (so
results keep their order with whatever the work itself handed to the
reactor, such as the store's change notices), but the reactor is woken once
for every result that comes back while it has not yet run the ones before
(one write to its waker pipe, one read, one event, instead of one each per
result: issue 13).  What the Deferred's callbacks write through a
L{pymailer.sendnow.Outbox} (IMAP's replies) is sent in one write per
connection once they have run (L{pymailer.sendnow.hold}).
"""

import threading
import weakref
from queue import SimpleQueue

from twisted.internet._signals import _UnixWaker
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pymailer import sendnow

log = Logger()

_STOP = object()


def deferToPool(reactor, pool, f, *args, **kwargs):
    """
    C{deferToThreadPool(reactor, pool, f, *args, **kwargs)}, the result
    coming back through L{ReactorReturns} when C{pool} is a
    L{LightThreadPool} and C{reactor} a Twisted reactor with its
    thread-call queue (tests' clocks and inline pools take Twisted's way).
    """
    returns = getattr(pool, "returnsTo", None)
    if returns is not None:
        returns = returns(reactor)
    if returns is None:
        return deferToThreadPool(reactor, pool, f, *args, **kwargs)
    d = Deferred()
    pool.callInThreadWithCallback(returns, f, *args, _deferred=d, **kwargs)
    return d


class ReactorReturns:
    """
    Results on their way back to one reactor's thread.

    A result is appended to the reactor's C{threadCallQueue}, the list
    C{callFromThread} appends to and C{runUntilCurrent} empties in order,
    so it comes back after everything the work queued there itself.  The
    reactor's waker is written only when no wake-up is pending: a marker
    queued with the wake-up (L{_woken}) says when the reactor has got this
    far.  A result queued before the marker ran is run in the same turn or,
    queued while the turn's calls ran, in the next one, which
    C{runUntilCurrent} wakes the reactor for itself; one queued after it
    finds no wake-up pending and asks for one.  (Twisted's C{ReactorBase}
    internals: C{tests/test_threadpool.py} fails if they change.)
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self._queue = reactor.threadCallQueue
        self._pending = False

    def __call__(self, ok, result, d):
        """In a pool thread: C{d} fires with C{result} in the reactor."""
        self.call(_fire, d, ok, result)

    def call(self, f, *args):
        """
        In any thread: C{f(*args)} in the reactor's thread, as
        C{callFromThread} would call it (in the same order), its wake-up
        shared with the other calls and results on their way.
        """
        self._queue.append((f, args, {}))
        if not self._pending:
            self._pending = True
            self._queue.append((self._woken, (), {}))
            self.reactor.wakeUp()

    def _woken(self):
        self._pending = False


def coalesceWakeUps(reactor):
    """
    Make C{reactor}'s waker write its pipe only when no wake-up is pending
    (L{CoalescingWaker}); a reactor with another waker is left as it is.

    @return: whether it was changed.
    """
    waker = getattr(reactor, "waker", None)
    if type(waker) is not _UnixWaker:
        return False
    CoalescingWaker.adopt(waker)
    return True


class CoalescingWaker(_UnixWaker):
    """
    The reactor's self-pipe waker (Twisted's C{_UnixWaker}), writing its
    pipe only when no wake-up is pending: every C{callFromThread} (a
    thread's result, the store's change notice, a worker's note to the
    supervisor) asks for one, and under load several come while the
    reactor has not yet woken for the first (2.5 writes, reads and loop
    turns per SMTP message before, issue 14).

    The flag is cleared after the pipe is drained and before the reactor
    runs the calls queued (the loop reads the waker, then runs
    C{runUntilCurrent}), so a call queued by a thread that saw the flag
    set is run in that turn; one queued after it was cleared sets it and
    writes again.  Signal handlers that write the pipe themselves only
    add wake-ups.
    """

    _pending = False

    @classmethod
    def adopt(cls, waker):
        """Turn a running C{_UnixWaker} into one of these (same pipe)."""
        waker.__class__ = cls

    def wakeUp(self):
        if not self._pending:
            self._pending = True
            _UnixWaker.wakeUp(self)

    def doRead(self):
        _UnixWaker.doRead(self)
        self._pending = False


# reactor -> its ReactorReturns, one for every pool and for the store's
# change notices (L{pymailer.store.notify}): a write command's notice and
# its result share one wake-up of the reactor.
_returns = weakref.WeakKeyDictionary()


def reactorReturns(reactor):
    """
    The L{ReactorReturns} of C{reactor}, or C{None} for a reactor without
    Twisted's thread-call queue (a test's clock).  Any thread.
    """
    returns = _returns.get(reactor)
    if returns is None and isinstance(getattr(reactor, "threadCallQueue", None), list):
        returns = _returns.setdefault(reactor, ReactorReturns(reactor))
    return returns


def _fire(d, ok, result):
    """
    In the reactor: what C{d}'s callbacks write to connections goes out in
    one write each once they have run.
    """
    outer = sendnow.hold()
    try:
        if ok:
            d.callback(result)
        else:
            d.errback(result)
    finally:
        sendnow.release(outer)


class LightThreadPool:
    """
    @ivar threads: the running threads.
    """

    def __init__(self, minthreads=0, maxthreads=20, name=None):
        self.min = minthreads
        self.max = maxthreads
        self.name = name or "pool"
        self.started = False
        self.joined = False
        self.threads = []
        self._queue = SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work that no one has claimed
        self._backlog = 0  # work queued with no thread claimed for it

    def returnsTo(self, reactor):
        """
        The L{ReactorReturns} of C{reactor} (L{deferToPool}), or C{None}
        for a reactor without Twisted's thread-call queue (a test's clock).
        """
        return reactorReturns(reactor)

    def start(self):
        self.joined = False
        self.started = True
        with self._lock:
            for _ in range(self.min):
                self._startThread()
                self._idle += 1
            # Work queued before the start.
            while self._backlog and len(self.threads) < self.max:
                self._backlog -= 1
                self._startThread()

    def _startThread(self):
        thread = threading.Thread(target=self._work,
                                  name=f"PoolThread-{self.name}-{len(self.threads)}",
                                  daemon=True)
        self.threads.append(thread)
        thread.start()

    def callInThread(self, func, *args, **kw):
        self.callInThreadWithCallback(None, func, *args, **kw)

    def callInThreadWithCallback(self, onResult, func, *args, _deferred=None, **kw):
        """
        C{onResult(ok, result)} in the thread after C{func(*args, **kw)};
        C{onResult(ok, result, _deferred)} when L{deferToPool} gives one.
        """
        if self.joined:
            return
        # Each piece of work claims an idle thread, or a new one, or waits
        # in the backlog for the next thread that finishes.
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self.started and len(self.threads) < self.max:
                self._startThread()
            else:
                self._backlog += 1
        self._queue.put((onResult, func, args, kw, _deferred))

    def _work(self):
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            onResult, func, args, kw, d = item
            try:
                result = func(*args, **kw)
                ok = True
            except BaseException:
                from twisted.python.failure import Failure

                result, ok = Failure(), False
            item = func = args = kw = None
            if onResult is not None:
                try:
                    if d is None:
                        onResult(ok, result)
                    else:
                        onResult(ok, result, d)
                except BaseException:
                    log.failure("in a thread pool's result callback")
            elif not ok:
                log.failure("in a thread pool's work", result)
            result = onResult = d = None
            with self._lock:
                if self._backlog:
                    self._backlog -= 1  # this thread takes one of them next
                else:
                    self._idle += 1

    def stop(self):
        """Let the queued work finish, then end the threads."""
        self.joined = True
        self.started = False
        threads, self.threads = self.threads, []
        for _ in threads:
            self._queue.put(_STOP)
        for thread in threads:
            thread.join()
        with self._lock:
            self._idle = 0
