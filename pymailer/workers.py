"""
Worker processes: every core serving the same listeners.

With C{[server] workers = N} above 1, the process twistd runs (the
I{supervisor}) serves no client itself.  It

 1. binds every listener in C{privilegedStartService} (as root for a low
    port; twistd drops privileges afterwards, as with one process) and
    never accepts on them;
 2. starts N worker processes (C{python -m pymailer.workers}) that inherit
    the listening sockets (C{spawnProcess} C{childFDs}) and adopt them
    (C{reactor.adoptStreamPort}, Twisted's documented way); the kernel
    gives each new connection to one of the processes waiting in accept();
 3. restarts a worker that dies (logged; with a growing pause when it
    keeps dying), without touching the other workers or their clients;
 4. passes SIGHUP on to every worker (each reloads its certificate), and on
    SIGTERM stops them all (each says goodbye to its clients,
    L{pymailer.shutdown}), then exits.

Why inherited sockets rather than C{SO_REUSEPORT}: one bind, by the process
that has the privileges, in the order twistd expects (bind, then drop
privileges), so a restarted worker never needs root; and no client is lost
when a worker dies: with C{SO_REUSEPORT} each process has its own accept
queue, and the connections the kernel already put in a dead worker's queue
are reset, while one shared queue is simply served by the others.

The queue runner runs in worker 0 alone, so each message is delivered once
(the spool's claims are file locks, safe across processes anyway: worker 0
restarted, or the admin command, never delivers a message twice).  Every
worker enqueues: a commit in another worker writes a byte to a pipe to the
supervisor, which writes it to worker 0's stdin, and worker 0 looks at new
mail at once.  Both hops are batched (L{Teller}): the first wake-up of a
5 ms window at once, the rest as one at its end.  The pipes are
non-blocking: when one is full a look is due anyway, so the byte is
dropped.  Every worker's stdin is a pipe from the
supervisor: its end of file means the supervisor is gone, and the worker
stops too.

Workers log one line per event to pipes read by the supervisor, which logs
each line under C{[worker N pid P]}: one log, wherever twistd writes it.

State a user sees across workers is kept where every worker sees it: rate
limits, login failures and open connections per address in
C{data_dir/limits.sqlite} (L{pymailer.limits}, L{pymailer.connlimit}), the
POP3 maildrop lock as a file lock, IMAP IDLE through the store's change
counter (L{pymailer.store.notify}): a worker that changed the store writes
L{CHANGED} to the supervisor, which passes it on to the other workers, and
they read the change at once.
"""

import argparse
import os
import socket
import sys
import time

from twisted.application.service import Service
from twisted.internet import defer, error, fdesc, protocol
from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer
from twisted.internet.interfaces import IReadDescriptor, IStreamServerEndpoint

from pymailer.config import _BUILTIN_ENDPOINTS, splitEndpoint, withBacklog

# Named: a worker runs this module as __main__.
log = Logger(namespace="pymailer.workers")

# The worker's end of the pipe telling the supervisor "a message was queued"
# (QUEUED) or "I changed the store" (CHANGED); the supervisor writes the same
# bytes to a worker's stdin: QUEUED to worker 0, CHANGED to the others.
KICK_FD = 3
QUEUED = b"k"
CHANGED = b"c"
# The listening sockets follow, in the order of the command line.
FIRST_LISTENER_FD = 4

# A worker that dies is started again after this pause, doubled each time
# it dies within STABLE_AFTER seconds of starting, up to MAX_RESTART_DELAY.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 10.0
# How long the supervisor waits for its workers at shutdown before SIGKILL:
# longer than a worker's own goodbye (3 s) plus the queue runner's grace (5 s).
STOP_TIMEOUT = 15.0

# Endpoint types whose socket can be handed over (adoptStreamPort takes
# AF_INET, AF_INET6 and AF_UNIX stream sockets).
HANDED_OVER = ("tcp", "tcp6", "ssl", "unix")


class WorkerSetupError(Exception):
    """A listener cannot be shared with worker processes."""


def plainDescription(role, description):
    """
    The endpoint string of the bare listening socket for C{description}:
    C{ssl:} becomes C{tcp:} with the same port, interface and backlog (the
    worker adds TLS).

    @raise WorkerSetupError: an endpoint type whose socket we cannot pass on.
    """
    kind, _, rest = description.partition(":")
    kind = kind.lower()
    if kind not in HANDED_OVER:
        raise WorkerSetupError(
            f"listener {role} ({description}): with [server] workers above 1 a "
            f"listener must be one of {', '.join(HANDED_OVER)}")
    if kind != "ssl":
        return description
    args, kwargs = splitEndpoint(rest)
    named = dict(zip(_BUILTIN_ENDPOINTS["ssl"], args), **kwargs)
    parts = ["tcp", quoteStringArgument(named["port"])]
    parts += [f"{key}={quoteStringArgument(named[key])}"
              for key in ("interface", "backlog") if key in named]
    return ":".join(parts)


class _NeverServed(protocol.Factory):
    """The supervisor's listening ports never accept: workers do."""

    noisy = False

    def logPrefix(self):
        return "pymailer (for the workers)"


class BoundListener:
    """One listening socket the supervisor holds for its workers."""

    def __init__(self, role, port):
        self.role = role
        self.port = port

    @property
    def family(self):
        return self.port.addressFamily

    def fileno(self):
        return self.port.fileno()


def bindListeners(reactor, roles):
    """
    Bind every listener of C{roles} (role -> endpoint string) without
    accepting on it.

    @return: a C{list} of L{BoundListener}.
    @raise error.CannotListenError: a port cannot be bound (the start fails).
    """
    bound = []
    for role, description in roles.items():
        endpoint = serverFromString(reactor, withBacklog(plainDescription(role, description)))
        results = []
        endpoint.listen(_NeverServed()).addBoth(results.append)
        port = results[0]  # TCP and UNIX endpoints answer at once
        if isinstance(port, Failure):
            port.raiseException()
        # Bound and listening (the kernel queues connections), but this
        # process never calls accept(): the workers do.
        port.stopReading()
        bound.append(BoundListener(role, port))
    return bound


class WorkerProcess(protocol.ProcessProtocol):
    """One worker, as the supervisor sees it: its log lines and its end."""

    def __init__(self, supervisor, index):
        self.supervisor = supervisor
        self.index = index
        self.started = supervisor.reactor.seconds()
        # Wake-ups relayed to this worker, batched as the workers batch
        # theirs: a burst of N commits elsewhere is two writes here, not N.
        self._teller = Teller(supervisor.reactor, clock=supervisor.reactor.seconds,
                              write=self._writeToChild, fromThreads=False)
        self.ended = defer.Deferred()
        self.pid = None  # kept: the transport forgets it at the end
        self._partial = {1: b"", 2: b""}

    def connectionMade(self):
        self.pid = self.transport.pid

    def childDataReceived(self, childFD, data):
        if childFD == KICK_FD:
            if QUEUED in data:
                self.supervisor.queued()
            if CHANGED in data:
                self.supervisor.storeChanged(self)
            return
        lines = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._partial[childFD] = lines.pop()
        for line in lines:
            self._logLine(line)

    def _logLine(self, line):
        log.info("{line}", line=line.decode("utf-8", "replace").rstrip("\r"),
                 log_system=f"worker {self.index} pid {self.pid}")

    def kick(self, what=QUEUED):
        """
        Tell this worker that mail was queued (worker 0), or the store
        changed: at once, or at the end of the current L{TELL_WINDOW}.
        """
        self._teller.tell(what)

    def _writeToChild(self, what):
        try:
            self.transport.writeToChild(0, what)
        except (KeyError, OSError, AttributeError):
            pass

    def processEnded(self, reason):
        for fd, rest in self._partial.items():
            if rest:
                self._logLine(rest)
        self.supervisor.workerEnded(self, reason)
        self.ended.callback(reason.value)


class Supervisor(Service):
    """
    Holds the listening sockets and keeps C{count} workers running.

    @param roles: role -> endpoint string of every listener.
    @param workerArgs: extra command-line arguments of every worker (the
        config file).
    """

    def __init__(self, roles, count, reactor, workerArgs=(), onHangup=None):
        self.roles = dict(roles)
        for role, description in self.roles.items():
            plainDescription(role, description)  # a listener we cannot share: say so now
        self.count = count
        self.reactor = reactor
        self.workerArgs = list(workerArgs)
        self.listeners = []
        self.workers = {}
        self._restarts = {}
        self._delays = {}
        self._stopping = False
        self._onHangup = onHangup

    # -- start and stop -------------------------------------------------------

    def privilegedStartService(self):
        # Binding here is binding as root (twistd --uid drops privileges
        # between privilegedStartService and startService).
        self.listeners = bindListeners(self.reactor, self.roles)
        Service.privilegedStartService(self)

    def startService(self):
        Service.startService(self)
        if self._onHangup is not None:
            self._onHangup(self.reactor, self.hangup)
        log.info("starting {n} worker processes", n=self.count)
        for index in range(self.count):
            self.spawn(index)

    def stopService(self):
        """
        SIGTERM every worker (each says goodbye to its clients), wait for
        them (SIGKILL after L{STOP_TIMEOUT}), then close the sockets.
        """
        Service.stopService(self)
        self._stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        waiting = []
        for worker in list(self.workers.values()):
            self._signal(worker, "TERM")
            waiting.append(worker.ended)
        d = defer.DeferredList(waiting)
        timer = self.reactor.callLater(STOP_TIMEOUT, self._killAll)
        d.addBoth(lambda _: timer.cancel() if timer.active() else None)
        d.addBoth(lambda _: self._closeListeners())
        return d

    def _killAll(self):
        for worker in list(self.workers.values()):
            log.warn("worker {i} (pid {pid}) still running {t:g} s after SIGTERM: killed",
                     i=worker.index, pid=worker.pid, t=STOP_TIMEOUT)
            self._signal(worker, "KILL")

    def _closeListeners(self):
        for listener in self.listeners:
            listener.port.stopListening()
        self.listeners = []

    # -- workers --------------------------------------------------------------

    def spawn(self, index):
        """Start worker C{index} (again)."""
        self._restarts.pop(index, None)
        if self._stopping:
            return
        worker = WorkerProcess(self, index)
        childFDs = {0: "w", 1: "r", 2: "r", KICK_FD: "r"}
        listenArgs = []
        for offset, listener in enumerate(self.listeners):
            fd = FIRST_LISTENER_FD + offset
            childFDs[fd] = listener.fileno()
            listenArgs += ["--listener", f"{listener.role}={fd}:{int(listener.family)}"]
        args = [sys.executable, "-m", "pymailer.workers", "--index", str(index),
                *listenArgs, *self.workerArgs]
        env = dict(os.environ)
        # The worker imports the same pymailer as this process.
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            [here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.reactor.spawnProcess(worker, sys.executable, args, env=env, childFDs=childFDs)
        self.workers[index] = worker
        log.info("worker {i} started, pid {pid}", i=index, pid=worker.pid)

    def workerEnded(self, worker, reason):
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self._stopping:
            log.info("worker {i} (pid {pid}) exited", i=worker.index, pid=worker.pid)
            return
        uptime = self.reactor.seconds() - worker.started
        delay = self._delays.get(worker.index, RESTART_DELAY / 2) * 2
        if uptime >= STABLE_AFTER:
            delay = RESTART_DELAY
        delay = min(delay, MAX_RESTART_DELAY)
        self._delays[worker.index] = delay
        log.error("worker {i} (pid {pid}) died ({why}) after {up:.1f} s: restarting it in "
                  "{delay:g} s; the other workers' clients are not affected",
                  i=worker.index, pid=worker.pid, why=reason.value, up=uptime, delay=delay)
        self._restarts[worker.index] = self.reactor.callLater(delay, self.spawn, worker.index)

    def queued(self):
        """A worker queued mail: worker 0 runs the queue."""
        runner = self.workers.get(0)
        if runner is not None:
            runner.kick()

    def storeChanged(self, changer):
        """
        A worker changed the store: the others look at once, so their IMAP
        IDLE sessions hear of it without waiting for their poll.
        """
        for worker in list(self.workers.values()):
            if worker is not changer:
                worker.kick(CHANGED)

    def hangup(self):
        """SIGHUP: every worker reloads its certificate."""
        log.info("SIGHUP: passing it on to {n} workers", n=len(self.workers))
        for worker in list(self.workers.values()):
            self._signal(worker, "HUP")

    def _signal(self, worker, name):
        try:
            worker.transport.signalProcess(name)
        except (error.ProcessExitedAlready, OSError):
            pass


# -- in the worker --------------------------------------------------------------


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """A listening socket inherited from the supervisor, as an endpoint."""

    def __init__(self, reactor, fd, family):
        self.reactor = reactor
        self.fd = fd
        self.family = family

    def listen(self, factory):
        def adopt():
            port = self.reactor.adoptStreamPort(self.fd, self.family, factory)
            # adoptStreamPort works on a duplicate: ours is not needed.
            os.close(self.fd)
            return port
        return defer.execute(adopt)


class WorkerRole:
    """
    What a worker process is told by the supervisor, and how it tells the
    supervisor that it queued mail or changed the store (L{Teller}).

    @ivar index: 0 to N-1; worker 0 runs the queue.
    @ivar listeners: role -> L{AdoptedEndpoint}.
    """

    def __init__(self, index, listeners, reactor=None, kickFD=KICK_FD):
        self.index = index
        self.listeners = listeners
        self._teller = Teller(reactor, kickFD)

    @property
    def runsQueue(self):
        return self.index == 0

    def queued(self, queueId=None):
        """
        Tell the queue's worker, through the supervisor, that mail was
        queued (called in the committing thread).
        """
        self._teller.tell(QUEUED)

    def changed(self, user=None, mailboxName=None):
        """
        Tell the other workers, through the supervisor, that this one
        changed the store (a store listener: called in the committing
        thread).
        """
        self._teller.tell(CHANGED)


# Wake-ups of one kind are written at most once per this many seconds; one
# asked for in between is written at the end of the window.  At a few
# hundred messages a second, one byte per message cost three processes a
# wake-up each per message (issue 14); the queue runner and IDLE sessions
# elsewhere hear of new mail at most this much later.
TELL_WINDOW = 0.005


class Teller:
    """
    Writes wake-up bytes, batched per L{TELL_WINDOW}: the first of a window
    at once, the rest as one at the window's end.  A worker's tells the
    supervisor (C{fd}), called in any thread (the committing ones); the
    supervisor's tells a worker (C{write}, C{fromThreads=False}: called on
    the reactor).  Without a reactor (tests of the parts) every byte is
    written at once.

    @param write: C{write(what)}; default: C{os.write} to C{fd}.
    """

    def __init__(self, reactor, fd=KICK_FD, clock=time.monotonic, write=None,
                 fromThreads=True):
        self.reactor, self.fd, self.clock = reactor, fd, clock
        self._write = write or self._writeFD
        self._fromThreads = fromThreads
        self._last = {}  # kind -> when its last byte was written
        self._trailing = set()  # kinds with a write due at a window's end

    def tell(self, what):
        if self.reactor is not None:
            if what in self._trailing:
                return  # the write due at the window's end covers this one
            if self.clock() - self._last.get(what, -TELL_WINDOW) < TELL_WINDOW:
                self._trailing.add(what)
                if self._fromThreads:
                    self.reactor.callFromThread(self.reactor.callLater, TELL_WINDOW,
                                                self._trailingWrite, what)
                else:
                    self.reactor.callLater(TELL_WINDOW, self._trailingWrite, what)
                return
            self._last[what] = self.clock()
        self._write(what)

    def _trailingWrite(self, what):
        # Cleared before the write: a change after this point asks anew.
        self._trailing.discard(what)
        self._last[what] = self.clock()
        self._write(what)

    def _writeFD(self, what):
        # Non-blocking: a full pipe means the reader has a look due anyway.
        try:
            os.write(self.fd, what)
        except (BlockingIOError, OSError):
            pass


@implementer(IReadDescriptor)
class SupervisorPipe:
    """
    The worker's stdin, a pipe from the supervisor: L{QUEUED} means "mail
    was queued" (for worker 0), L{CHANGED} "another worker changed the
    store", its end that the supervisor is gone.
    """

    def __init__(self, onKick, onClosed, fd=0, onChanged=lambda: None):
        self.fd = fd
        self.onKick = onKick
        self.onClosed = onClosed
        self.onChanged = onChanged
        fdesc.setNonBlocking(fd)

    def fileno(self):
        return self.fd

    def doRead(self):
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            return error.ConnectionDone()
        if not data:
            return error.ConnectionDone()
        if QUEUED in data:
            self.onKick()
        if CHANGED in data:
            self.onChanged()
        return None

    def connectionLost(self, reason):
        # Our own end of file, not the reactor closing everything at its
        # shutdown.
        if reason.check(error.ConnectionDone):
            self.onClosed()

    def logPrefix(self):
        return "supervisor-pipe"


def _logToSupervisor(out):
    """
    Log one line per event to C{out} (a pipe the supervisor reads and
    stamps with the time and this worker's name), in batches written by a
    thread of their own (L{pymailer.logs}).
    """
    from twisted.logger import eventAsText, globalLogBeginner

    from pymailer.logs import BufferedLogObserver

    def format(event):
        return eventAsText(event, includeTimestamp=False, includeSystem=True) + "\n"

    observer = BufferedLogObserver(out, format)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    return observer


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pymailer.workers",
                                     description="A pymailer worker process (started by twistd).")
    parser.add_argument("--config")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--listener", action="append", default=[],
                        help="ROLE=FD:FAMILY, a listening socket inherited")
    options = parser.parse_args(argv)
    # Its own process group: a Ctrl-C in twistd's terminal reaches the
    # supervisor, which stops the workers in order.
    os.setpgrp()
    logObserver = _logToSupervisor(sys.stdout)

    from twisted.internet import reactor

    from pymailer import config as configModule
    from pymailer.service import buildServer

    listeners = {}
    for spec in options.listener:
        role, _, where = spec.partition("=")
        fd, _, family = where.partition(":")
        listeners[role] = AdoptedEndpoint(reactor, int(fd), socket.AddressFamily(int(family)))
    fdesc.setNonBlocking(KICK_FD)
    config = configModule.loadOrDefault(options.config)
    role = WorkerRole(options.index, listeners, reactor)
    top = buildServer(config, reactor, worker=role)

    def supervisorGone():
        log.warn("the supervisor is gone: stopping")
        if reactor.running:
            reactor.stop()

    reactor.addReader(SupervisorPipe(lambda: queueKick(top), supervisorGone,
                                     onChanged=lambda: changedElsewhere(top)))
    top.privilegedStartService()
    top.startService()  # start-up objects frozen at the first turn (FreezeAfterStart)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.addSystemEventTrigger("after", "shutdown", logObserver.stop)
    started = time.monotonic()
    log.info("worker {i} ready ({n} listeners{queue})", i=options.index, n=len(listeners),
             queue=", runs the queue" if role.runsQueue else "")
    reactor.run()
    log.info("worker {i} exits after {t:.0f} s", i=options.index, t=time.monotonic() - started)


def changedElsewhere(top):
    """Another worker changed the store: look for its changes now."""
    if "notifier" in top.namedServices:
        top.getServiceNamed("notifier").changedElsewhere()


def queueKick(top):
    """The supervisor says mail was queued in another worker: look now."""
    runner = top.getServiceNamed("queue") if "queue" in top.namedServices else None
    if runner is not None:
        runner.kick()


if __name__ == "__main__":
    main()
