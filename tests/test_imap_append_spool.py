"""
A large APPEND literal is spooled to the store's scratch file in the
thread pool: a slow disk stops the session reading instead of piling the
message up in memory, a failing disk gets the client a clean NO, and a
client that hangs up mid-upload leaves no file open behind a write.
Store calls here run only when the test says so (L{HeldPool}).
"""

import gc

from twisted.internet import defer
from twisted.logger import globalLogPublisher

from imapharness import Client
from pymailer.imap.server import CHUNK, SPOOL_THRESHOLD
from pymailer.imap.spool import MAX_PENDING_WRITES


class HeldPool:
    """C{factory.run} whose jobs wait until C{release} runs them, in order."""

    def __init__(self):
        self.jobs = []

    def run(self, function, *args):
        d = defer.Deferred()
        self.jobs.append((function, args, d))
        return d

    def release(self, n=None):
        while self.jobs and (n is None or n > 0):
            function, args, d = self.jobs.pop(0)
            try:
                result = function(*args)
            except Exception:
                d.errback()
            else:
                d.callback(result)
            if n is not None:
                n -= 1


class SpyFile:
    """A scratch file recording what is done to it, and when."""

    def __init__(self, failWrites=False):
        self.data = bytearray()
        self.closed = False
        self.writesAfterClose = 0
        self.failWrites = failWrites
        self.position = 0

    def write(self, data):
        if self.closed:
            self.writesAfterClose += 1
            raise ValueError("I/O operation on closed file")
        if self.failWrites:
            raise OSError(28, "No space left on device")
        self.data += data

    def seek(self, pos):
        self.position = pos

    def read(self, n=-1):
        out = bytes(self.data[self.position:] if n < 0 else self.data[self.position:self.position + n])
        self.position += len(out)
        return out

    def close(self):
        self.closed = True


def session(tmp_path, spy):
    c = Client(tmp_path, secure=True)
    c.login()
    pool = HeldPool()
    c.factory.run = pool.run
    c.factory.maxMessageSize = 50 << 20
    c.factory.store.newAppendSpool = lambda: spy
    return c, pool


class LogCatcher:
    def __init__(self):
        self.events = []

    def __enter__(self):
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc):
        gc.collect()  # an unhandled Deferred failure is logged when collected
        globalLogPublisher.removeObserver(self.events.append)

    def failures(self):
        return [e for e in self.events if e.get("log_failure") is not None]


def test_slow_disk_stops_reading(tmp_path):
    """
    While the disk has not taken the chunks already read, the server stops
    reading the upload (its memory holds a few chunks, not the message),
    and reads again once they are written; the message is stored whole.
    """
    spy = SpyFile()
    c, pool = session(tmp_path, spy)
    size = 12 * CHUNK
    message = b"Subject: big\r\n\r\n" + b"x" * (size - 16)
    c.send(b"a APPEND INBOX {%d}\r\n" % size)
    assert c.transport.producerState == "producing"
    sent = 0
    while c.transport.producerState == "producing" and sent < size:
        c.protocol.dataReceived(message[sent:sent + CHUNK])
        sent += CHUNK
    assert c.transport.producerState == "paused"
    assert len(pool.jobs) == 1  # one write at a time, the rest queued behind it
    assert sent < size
    pool.release(2)
    assert c.transport.producerState == "paused"
    pool.release(1)
    assert c.transport.producerState == "producing"
    while sent < size:
        c.protocol.dataReceived(message[sent:sent + CHUNK])
        sent += CHUNK
        pool.release()
    out = c.send(b"\r\n")
    pool.release()
    out += c.read()
    assert b"a OK [APPENDUID" in out, out
    assert bytes(spy.data) == message
    assert spy.closed and spy.writesAfterClose == 0


def test_failing_disk_answers_no(tmp_path):
    """
    A disk that fails the writes (full) gets the client a tagged NO
    [UNAVAILABLE] and the session goes on; the server logs the failure
    once, and nothing ends up as an unhandled error.
    """
    spy = SpyFile(failWrites=True)
    c, pool = session(tmp_path, spy)
    size = 3 * CHUNK
    with LogCatcher() as logs:
        c.send(b"a APPEND INBOX {%d+}\r\n" % size + b"y" * size + b"\r\nn NOOP\r\n")
        pool.release()
        out = c.read()
    assert b"a NO [UNAVAILABLE]" in out, out
    assert b"n OK" in out
    assert spy.closed
    failures = logs.failures()
    assert len(failures) == 1, [e.get("log_format") for e in failures]
    assert "Unhandled" not in failures[0]["log_format"]


def test_hangup_mid_append_closes_after_writes(tmp_path):
    """
    A client hanging up while its upload's chunks still wait for the disk:
    the scratch file is closed, but only after those writes ran (no write
    into a closed file, no error logged).
    """
    spy = SpyFile()
    c, pool = session(tmp_path, spy)
    size = 8 * CHUNK
    with LogCatcher() as logs:
        c.send(b"a APPEND INBOX {%d}\r\n" % size)
        c.protocol.dataReceived(b"z" * (3 * CHUNK))
        assert len(pool.jobs) == 1
        c.protocol.connectionLost(ConnectionError("gone"))
        assert not spy.closed
        pool.release()
    assert spy.closed
    assert spy.writesAfterClose == 0
    assert len(spy.data) == 3 * CHUNK
    assert logs.failures() == []


def test_threshold_literal_is_not_spooled(tmp_path):
    """A small APPEND stays in memory: no scratch file, no pool job."""
    spy = SpyFile()
    c, pool = session(tmp_path, spy)
    m = b"Subject: s\r\n\r\n" + b"s" * (SPOOL_THRESHOLD - 20)
    out = c.send(b"a APPEND INBOX {%d+}\r\n" % len(m) + m + b"\r\n")
    assert b"a OK [APPENDUID" in out and not pool.jobs and not spy.data
