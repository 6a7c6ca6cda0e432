"""
Immutable message files (blobs) of the SQLite store, content-addressed.

A blob is named by the SHA-256 of its octets and lives at
C{root/ab/cdef...}: written once to C{root/tmp/}, fsynced, renamed into
place, the directory fsynced, and never rewritten (flags are in the
database, not in names).  Identical content is one file: one message
delivered to ten local recipients (ten L{IMailStore.deliver} calls) is
stored once.  Which blobs are referenced, and how often, is the database's
business (L{pymailer.store.sqlite}); this module only knows files.
"""

import hashlib
import os
import pathlib
import secrets
import time

from pymailer.fsutil import fsyncDirectory
from pymailer.store.content import FileContent

CHUNK = 64 * 1024
# A blob or temporary file no row names is an orphan (a crash between the
# file and the commit) once it is older than this: younger ones may belong
# to a transaction still running in another thread or process.
ORPHAN_AGE = 60.0


class PendingBlob:
    """A blob written and fsynced in C{tmp/}, not yet in place."""

    def __init__(self, blobs, tempPath, blobId, size):
        self.blobs, self.tempPath = blobs, tempPath
        self.blobId, self.size = blobId, size
        self.placed = False

    def place(self):
        """
        Hard-link into place and fsync the directory, before the write
        transaction (its lock is not held through that fsync); the
        temporary name stays until L{install}.  Identical content may
        already be there: the octets are the same.
        """
        path = self.blobs.path(self.blobId)
        try:
            path.parent.mkdir()
        except FileExistsError:
            pass
        else:  # the new directory's own name must survive a crash too
            fsyncDirectory(str(self.blobs.root))
        try:
            os.link(self.tempPath, path)
        except FileExistsError:
            pass
        # Even if it was there: whoever linked it may not have synced yet.
        fsyncDirectory(str(path.parent))
        self.placed = True

    def install(self):
        """
        Inside the write transaction, before its commit (see
        L{pymailer.store.sqlite}): the blob is in place and its directory
        fsynced.  After L{place}, only a check: a removal of the same
        content (its last reference expunged) may have come in between,
        and none can come while the lock is held.  The temporary name goes
        after the commit (L{discard}), outside the lock: an unlink waits
        for the file system's journal, a few milliseconds under load, and
        every writer of the process queued behind it.
        """
        path = self.blobs.path(self.blobId)
        if not self.placed or not path.exists():
            self.placed = False
            self.place()

    def discard(self):
        """The temporary name goes (the blob stays if it was installed)."""
        if self.tempPath is not None:
            try:
                os.unlink(self.tempPath)
            except FileNotFoundError:
                pass
            self.tempPath = None


class BlobStore:
    """The blob files under C{root}."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, blobId):
        return self.root / blobId[:2] / blobId[2:]

    def write(self, prefix, source):
        """
        Stream C{prefix} + C{source} into a fsynced temporary file.
        I{Blocking.}

        @return: a L{PendingBlob}.
        """
        digest = hashlib.sha256(prefix)
        size = len(prefix)
        tempPath = self.tmp / f"{time.time():.0f}.{secrets.token_hex(8)}"
        fd = os.open(tempPath, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=True) as f:
                f.write(prefix)
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(tempPath)
            raise
        return PendingBlob(self, tempPath, digest.hexdigest(), size)

    def open(self, blobId):
        """@return: a L{FileContent}. I{Blocking.}"""
        return FileContent.open(self.path(blobId))

    def remove(self, blobId):
        try:
            os.unlink(self.path(blobId))
        except FileNotFoundError:
            pass

    def orphans(self, referenced, now=None):
        """
        The paths of files older than L{ORPHAN_AGE} that are neither a
        blob in C{referenced} (a set of ids) nor younger temporary files.
        """
        cutoff = (time.time() if now is None else now) - ORPHAN_AGE
        for directory in self.root.iterdir():
            if not directory.is_dir():
                continue
            for entry in os.scandir(directory):
                if directory == self.tmp:
                    blobId = None
                else:
                    blobId = directory.name + entry.name
                if blobId in referenced:
                    continue
                try:
                    if entry.stat().st_mtime < cutoff:
                        yield pathlib.Path(entry.path)
                except FileNotFoundError:
                    pass
