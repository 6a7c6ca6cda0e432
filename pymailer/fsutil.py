"""
Durability helpers: fsync of files and directories, atomic file replacement,
and group commit of directory fsyncs.

Why group commit: after a rename, the directory must be fsynced before the
rename is durable.  Twenty threads each fsyncing the same directory pay for
twenty journal commits; one fsync started after all twenty renames covers them
all.  L{DirectorySync} lets concurrent callers share one.
"""

import fcntl
import os
import threading
from contextlib import contextmanager, suppress


@contextmanager
def exclusiveLock(path):
    """
    Hold an exclusive C{flock} on C{path} (created if missing) for the
    block: other threads and processes taking it wait.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def fsyncDirectory(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writeDurably(path, data, mode=0o600):
    """
    Write C{data} to C{path} atomically (temporary file, fsync, rename).
    The caller fsyncs the directory (or uses L{DirectorySync}).
    """
    os.close(openDurablyWritten(path, data, mode))


def openDurablyWritten(path, data, mode=0o600, locked=False):
    """
    L{writeDurably}, keeping the new file open: its descriptor is returned
    (the caller closes it).  With C{locked}, the file is C{flock}ed
    (exclusive) before it takes the name, so that it is never there
    unlocked.
    """
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        if locked:
            fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return fd


class DirectorySync:
    """
    Group commit for the fsync of one directory, shared by threads.

    A caller that made a change in the directory calls L{sync}; it returns
    once an fsync that began after the call has completed.  Callers that
    arrive while an fsync runs share the next one.
    """

    def __init__(self, path):
        self.path = path
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._running = False

    def sync(self):
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while True:
                if self._completed >= ticket:
                    return
                if not self._running:
                    self._running = True
                    covers = self._requested
                    break
                self._cond.wait()
        succeeded = False
        try:
            fsyncDirectory(self.path)
            succeeded = True
        finally:
            with self._cond:
                self._running = False
                if succeeded:
                    self._completed = max(self._completed, covers)
                self._cond.notify_all()
