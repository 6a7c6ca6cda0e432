"""
The server's log, written in batches by a thread of its own.

Twisted's file observer formats each event (the time through C{strftime})
and writes and flushes it at once, on the thread that logged: on a busy SMTP
server that is a system call and tens of microseconds of the reactor's time
per message.  L{BufferedLogObserver} only appends the event to a list; a
writer thread wakes at most every L{FLUSH_INTERVAL}, formats what has
gathered (the time text once per second) and writes it with one
C{write}+C{flush}.  The lines are the ones twistd writes (same format, same
order); a process killed with SIGKILL loses at most the last
L{FLUSH_INTERVAL} of them, and a normal exit (twistd's shutdown, C{atexit})
writes everything first.

L{twistdObserver} makes the observer twistd would make from its options
(C{--logfile}, C{--nodaemon}), buffered; L{LoggingTo} hands it to twistd;
L{fromTwistdCommandLine} does the same for a C{.tac} file, which twistd
gives no options.
"""

import atexit
import signal
import sys
import threading
import time

from twisted.application.service import MultiService
from twisted.logger import ILogObserver, formatEventAsClassicLogText, formatTime
from twisted.python import logfile
from twisted.python.components import Componentized
from zope.interface import implementer

# How long an event may wait before it is written.
FLUSH_INTERVAL = 0.1
# Events kept at most while the writer is behind: beyond, the oldest batch
# is written by the thread that logs (bounded memory, as a full pipe).
MAX_PENDING = 20000


class _SecondsCache:
    """C{formatTime}, computed once per second (twistd's format)."""

    def __init__(self):
        self._second = None
        self._text = ""

    def __call__(self, when):
        second = int(when)
        if second != self._second:
            self._second = second
            self._text = formatTime(second)
        return self._text


def classicText():
    """The formatter of twistd's text log: C{TIME [SYSTEM] TEXT\\n}."""
    cached = _SecondsCache()

    def format(event):
        return formatEventAsClassicLogText(event, formatTime=cached)

    return format


@implementer(ILogObserver)
class BufferedLogObserver:
    """
    An L{ILogObserver} that keeps events in memory and has a thread of its
    own format and write them in batches.

    @param outFile: a text file (C{write}, C{flush}).
    @param formatEvent: event -> text with its newline, or C{None}/C{""}
        to skip the event.
    """

    def __init__(self, outFile, formatEvent=None, interval=FLUSH_INTERVAL):
        self.outFile = outFile
        self.formatEvent = formatEvent or classicText()
        self.interval = interval
        self._pending = []
        self._lock = threading.Lock()  # one writer at a time, in order
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="pymailer-log", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def __call__(self, event):
        self._pending.append(event)
        if self._stopped or len(self._pending) > MAX_PENDING:
            self.flush()
        elif not self._wake.is_set():
            self._wake.set()

    def _run(self):
        while not self._stopped:
            self._wake.wait()
            # Gather a batch; events logged meanwhile set nothing new.
            time.sleep(self.interval)
            self._wake.clear()
            self.flush()

    def flush(self):
        """Format and write every event logged so far (any thread)."""
        with self._lock:
            # list.append and this swap are atomic under the GIL: an event
            # is in exactly one batch.
            events, self._pending = self._pending, []
            if not events:
                return
            texts = []
            for event in events:
                try:
                    text = self.formatEvent(event)
                except Exception:
                    text = f"(unformattable log event {event.get('log_format')!r})\n"
                if text:
                    texts.append(text)
            try:
                self.outFile.write("".join(texts))
                self.outFile.flush()
            except (OSError, ValueError):
                pass  # a closed or full log must not stop the server

    def stop(self):
        """
        Write what is left, and from now on each event as it comes: the
        last lines of a process (twistd's "Server Shut Down.") come after
        its reactor stopped, just before it may end with a signal, where no
        C{atexit} handler runs.
        """
        self._stopped = True
        self._wake.set()
        self.flush()


def twistdObserver(serverOptions, reactor):
    """
    The buffered equivalent of the observer twistd makes from its options:
    standard output with C{--nodaemon} and no C{--logfile} (or
    C{--logfile=-}), otherwise C{--logfile} (default C{twistd.log}),
    rotated on SIGUSR1 as twistd does.

    @return: a L{BufferedLogObserver}, or C{None} where twistd should keep
        its own (syslog, a C{--logger} of the user's, C{-} without
        C{--nodaemon}).
    """
    get = getattr(serverOptions, "get", None)
    if get is None or get("syslog") or get("logger"):
        return None
    name = get("logfile") or ""
    nodaemon = bool(get("nodaemon"))
    if name == "-" or (nodaemon and not name):
        if name == "-" and not nodaemon:
            return None  # twistd refuses this combination itself
        return BufferedLogObserver(sys.stdout)
    out = logfile.LogFile.fromFullPath(name or "twistd.log")

    def rotate(signum, frame):
        reactor.callFromThread(out.rotate)

    try:
        signal.signal(signal.SIGUSR1, rotate)
    except ValueError:
        pass  # not the main thread
    return BufferedLogObserver(out)


class LoggingTo(MultiService):
    """
    The service twistd runs, around the real one, giving twistd the log
    observer to use: twistd looks for an L{ILogObserver} component on its
    application (the documented way a C{.tac} file chooses its log) after
    the plugin's service has joined it, before logging starts.  Once the
    reactor has stopped, the observer writes synchronously.
    """

    def __init__(self, child, observer, reactor):
        MultiService.__init__(self)
        self.observer = observer
        self.reactor = reactor
        child.setServiceParent(self)

    def startService(self):
        self.reactor.addSystemEventTrigger("after", "shutdown", self.observer.stop)
        MultiService.startService(self)

    def setServiceParent(self, parent):
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, self.observer)
        return MultiService.setServiceParent(self, parent)


def fromTwistdCommandLine(child, reactor, argv=None):
    """
    C{child} logging as L{twistdObserver} would from twistd's options, for
    a C{.tac} file (C{etc/pymailer.tac}): twistd hands a C{.tac} no
    options, so they are read again from its command line.

    @param argv: twistd's command line (default C{sys.argv}).
    @return: a L{LoggingTo} around C{child}, or C{child} itself where
        twistd should keep its own log (or the command line is not
        twistd's).
    """
    from twisted.python import usage
    from twisted.scripts.twistd import ServerOptions

    options = ServerOptions()
    try:
        options.parseOptions((sys.argv if argv is None else argv)[1:])
    except (usage.UsageError, SystemExit):
        return child
    observer = twistdObserver(options, reactor)
    return child if observer is None else LoggingTo(child, observer, reactor)
