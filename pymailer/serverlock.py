"""
Who is using a data directory: every server process (the supervisor and
each worker) holds a shared C{flock} on C{data_dir/server.lock} for as
long as it runs; a command that must have the data to itself (C{pymailer
migrate-storage}) takes it exclusively, without waiting, and so refuses
to run beside a server, and a server refuses to start during it.

Why a lock rather than a pid file: the kernel drops a process's locks when
it dies, however it dies, so a crashed server never leaves the directory
"in use"; and a lock is inherited across twistd's fork into the
background (the open file is shared), so the daemon keeps it.
"""

import fcntl
import os
from contextlib import contextmanager

FILENAME = "server.lock"

# This process's shared lock (its file stays open to the end of the process).
_held = {}


class DataDirectoryBusy(Exception):
    """The data directory is in use by another party: one line saying who."""


def _open(dataDir):
    os.makedirs(dataDir, exist_ok=True)
    # Read-only: flock needs no more, so the admin command (the server's
    # user) can lock the file a server started as root made.
    return os.open(os.path.join(dataDir, FILENAME), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC,
                   0o644)


def holdForServer(dataDir):
    """
    Take the shared lock for this server process (once; kept to the end).

    @raise DataDirectoryBusy: a storage migration holds it.
    """
    key = os.path.abspath(dataDir)
    if key in _held:
        return
    fd = _open(key)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirectoryBusy(
            f"{key} is being moved to another storage backend (pymailer migrate-storage):"
            " start the server once it has finished") from None
    _held[key] = fd


@contextmanager
def exclusive(dataDir):
    """
    Have the data directory to this command alone for the block.

    @raise DataDirectoryBusy: a server runs on it.
    """
    fd = _open(dataDir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirectoryBusy(
                f"a pymailer server is running on {dataDir}: stop it (and every worker)"
                " first") from None
        yield
    finally:
        os.close(fd)
