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
from queue import Empty, SimpleQueue

from twisted.logger import Logger

log = Logger()

_STOP = object()


class LightThreadPool:
    """
    @ivar threads: the running threads.

    Which threads are idle is counted with tokens in a C{SimpleQueue}: a
    thread that finishes a piece of work puts one, a piece of work handed
    over takes one (C code both: no Python lock that the reactor thread
    would wait on behind a disk thread that lost the GIL while holding it,
    which py-spy showed as 5-10 % of the reactor's time under load).  The
    tokens count idle threads exactly while threads can still be started;
    at C{maxthreads}, work waits in the queue for the next thread free and
    a token may outlive the idleness it stood for, which changes nothing
    there: no thread is started past the limit anyway.
    """

    def __init__(self, minthreads=0, maxthreads=20, name=None):
        self.min = minthreads
        self.max = maxthreads
        self.name = name or "pool"
        self.started = False
        self.joined = False
        self.threads = []
        self._queue = SimpleQueue()
        self._idle = SimpleQueue()  # a token per idle thread
        self._lock = threading.Lock()  # starting a thread
        self._early = 0  # work handed over before start

    def start(self):
        self.joined = False
        with self._lock:
            self.started = True
            for _ in range(self.min):
                self._startThread()
                self._idle.put(None)
            # Work queued before the start, a thread each as far as allowed.
            while self._early and len(self.threads) < self.max:
                self._early -= 1
                self._startThread()
            self._early = 0

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
        # in the queue for the next thread that finishes.
        try:
            self._idle.get_nowait()
        except Empty:
            with self._lock:
                if not self.started:
                    self._early += 1
                elif len(self.threads) < self.max:
                    self._startThread()
        self._queue.put((onResult, func, args, kw))

    def _work(self):
        get = self._queue.get
        idle = self._idle.put
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
            idle(None)

    def stop(self):
        """Let the queued work finish, then end the threads."""
        self.joined = True
        self.started = False
        threads, self.threads = self.threads, []
        for _ in threads:
            self._queue.put(_STOP)
        for thread in threads:
            thread.join()
        self._idle = SimpleQueue()
