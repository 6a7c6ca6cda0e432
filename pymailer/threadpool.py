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
"""

import threading
from queue import SimpleQueue

from twisted.logger import Logger

log = Logger()

_STOP = object()


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

    def callInThreadWithCallback(self, onResult, func, *args, **kw):
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
        self._queue.put((onResult, func, args, kw))

    def _work(self):
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            onResult, func, args, kw = item
            try:
                result = func(*args, **kw)
                ok = True
            except BaseException:
                from twisted.python.failure import Failure

                result, ok = Failure(), False
            item = func = args = kw = None
            if onResult is not None:
                try:
                    onResult(ok, result)
                except BaseException:
                    log.failure("in a thread pool's result callback")
            elif not ok:
                log.failure("in a thread pool's work", result)
            result = onResult = None
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
