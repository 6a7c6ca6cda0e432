"""
An APPEND literal on its way into the store's scratch file
(C{IMailStore.newAppendSpool}).

The file is written in the thread pool (never block the reactor), one
chunk after another, and used from one thread at a time: every write,
the rewind and the close are links of one chain, so the file is closed
only after the last write has run, whether the command completed, failed
or the connection was lost.  A write that fails (disk full) is logged
once; the chunks after it are dropped and the APPEND is answered
C{NO [UNAVAILABLE]}, a temporary failure (RFC 5530 3).

The session stops reading while more than L{MAX_PENDING_WRITES} chunks
wait (a slow disk must not pile up the message in memory) and reads again
as they are written: L{SpoolingLiteral.pending} and C{onWritten}.
"""

from twisted.internet import defer
from twisted.logger import Logger

from pymailer.imap.parser import FileLiteral

log = Logger()

# Chunks queued for the pool before the session stops reading.
MAX_PENDING_WRITES = 4


class SpoolFailed(Exception):
    """The literal could not be spooled; the text is the answer's."""


class SpoolingLiteral(FileLiteral):
    """
    A L{FileLiteral} being written.

    @param file: the store's scratch file.
    @param run: runs C{function(*args)} in the thread pool, a Deferred.
    @param onWritten: called on the reactor thread after each chunk (or
        the failure of one), to read again when fewer are pending.
    """

    def __init__(self, file, size, run, onWritten=lambda: None):
        FileLiteral.__init__(self, file, size)
        self._run = run
        self._onWritten = onWritten
        self._chain = defer.succeed(None)   # never fails: failures end in self.failure
        self.pending = 0
        self.failure = None
        self._closed = False

    def write(self, data):
        self.pending += 1
        self._chain.addCallback(self._write, data)

    def _write(self, _, data):
        if self.failure is not None:
            d = defer.succeed(None)   # dropped: the APPEND fails anyway
        else:
            d = self._run(self.file.write, data)
        return d.addErrback(self._failed).addBoth(self._written)

    def _written(self, _):
        self.pending -= 1
        self._onWritten()

    def _failed(self, failure):
        if self.failure is None:
            log.failure("IMAP APPEND: cannot spool the message", failure)
            self.failure = failure

    def finish(self):
        """All octets are in: rewind for reading (after the last write)."""
        self._chain.addCallback(
            lambda _: None if self.failure else self._run(self.file.seek, 0).addErrback(self._failed))

    @property
    def ready(self):
        """A Deferred: fires once spooled and rewound, fails with L{SpoolFailed}."""
        d = defer.Deferred()

        def tell(_):
            if self.failure is None:
                d.callback(None)
            else:
                d.errback(SpoolFailed("[UNAVAILABLE] Cannot store the message now, try again later"))

        self._chain.addCallback(tell)
        return d

    def close(self):
        """Close the file after whatever is still queued (once)."""
        if self._closed:
            return
        self._closed = True

        def close(_):
            return self._run(self.file.close).addErrback(
                lambda f: log.failure("IMAP APPEND: closing the spool failed", f))

        self._chain.addCallback(close)
