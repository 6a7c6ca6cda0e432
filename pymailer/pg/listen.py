"""
Hearing other nodes: a thread with a connection of its own in C{LISTEN} on
one channel (the message store's, the queue's), reconnecting after a
failure.

PostgreSQL delivers a C{NOTIFY} only to sessions listening when it is
committed: what is sent while the listener is disconnected is lost.  So
after every reconnection (and after a first connection that only came
after failures) the owner is told C{reconnected()}, once C{LISTEN} is in
place again, and treats it as "anything may have changed": whatever was
committed before is then found by looking (the store's sessions refresh
through C{changedSince}, the queue runner scans), and whatever is committed
after is heard.
"""

import threading
import time

from twisted.logger import Logger

log = Logger()

RETRY = 1.0  # seconds between connection attempts
WAKE = 1.0   # seconds between looks at whether to stop (and idle work)


class ChannelListener:
    """
    @param conninfo: the database's DSN.
    @param channel: the channel to C{LISTEN} on (an identifier of ours).
    @param heard: called with each notification's payload (C{str}), in
        the listener thread.
    @param reconnected: called in the listener thread when notifications
        may have been missed.
    @param idle: called in the listener thread every C{idleEvery}
        seconds (the store sweeps freed blobs), or C{None}.
    """

    def __init__(self, conninfo, channel, heard, reconnected, name,
                 idle=None, idleEvery=None):
        self.conninfo, self.channel, self.name = conninfo, channel, name
        self.heard, self.reconnected = heard, reconnected
        self.idle, self.idleEvery = idle, idleEvery
        self.listening = threading.Event()
        self._closed = threading.Event()
        self._thread = None
        self._connection = None  # while listening (tests cut it)

    def start(self, wait):
        """Start listening; wait at most C{wait} seconds for C{LISTEN} to be in place."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)
            self._thread.start()
        self.listening.wait(wait)

    def close(self):
        """Stop (the thread ends within L{WAKE} seconds)."""
        self._closed.set()

    def _run(self):
        import psycopg

        from pymailer.pg.pool import DatabaseUnavailable, connect

        missed = False
        while not self._closed.is_set():
            try:
                with connect(self.conninfo) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self._connection = conn
                    self.listening.set()
                    if missed:
                        self.reconnected()
                    missed = False
                    self._listen(conn)
            except (psycopg.Error, DatabaseUnavailable):
                missed = True
                if not self._closed.is_set():
                    log.failure("listening on {channel} failed; again in a second",
                                channel=self.channel)
                    self._closed.wait(RETRY)
            finally:
                self._connection = None

    def _listen(self, conn):
        idled = time.monotonic()
        while not self._closed.is_set():
            for note in conn.notifies(timeout=WAKE):
                self.heard(note.payload)
            if self.idle is not None and time.monotonic() - idled > self.idleEvery:
                idled = time.monotonic()
                self.idle()
