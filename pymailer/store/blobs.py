"""
Immutable message files (blobs) of the SQLite store, content-addressed.

A blob is named by the SHA-256 of its octets and lives at
C{root/ab/cdef...}, never rewritten (flags are in the database, not in
names).  Content held in memory (a message at the end of DATA, a small
APPEND) is written straight to that name (L{BlobStore.place}); a stream is
written to C{root/tmp/}, fsynced, linked into place and the directory
fsynced (L{BlobStore.write}).  Identical content is one file: one message
delivered to ten local recipients (ten L{IMailStore.deliver} calls) is
stored once.  Which blobs are referenced, and how often, is the database's
business (L{pymailer.store.sqlite}); this module only knows files.
"""

import hashlib
import os
import pathlib
import secrets
import time
import weakref

from pymailer.fsutil import fsyncDirectory
from pymailer.store.content import BytesContent, FileContent

CHUNK = 64 * 1024
# Content up to this size is read into memory and written straight to its
# name (L{BlobStore.place}): no temporary name to create and unlink.
IN_PLACE_LIMIT = 1024 * 1024
# A blob or temporary file no row names is an orphan (a crash between the
# file and the commit) once it is older than this: younger ones may belong
# to a transaction still running in another thread or process.
ORPHAN_AGE = 60.0


def _writeSynced(fd, octets):
    """Write all C{octets} to C{fd} and fsync it."""
    view = memoryview(octets)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _inode(st):
    return (st.st_dev, st.st_ino)


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

    def content(self):
        """The octets written, for their summary (before L{discard})."""
        return FileContent.open(self.tempPath)


class PlacedBlob:
    """
    A blob written from memory to its name and made durable there
    (L{BlobStore.place}): what L{PendingBlob} is after L{PendingBlob.place},
    without a temporary name.

    @ivar new: this call made the file (no file had this content): no
        summary of it can be in the database yet.
    @ivar inode: C{(st_dev, st_ino)} of the file made durable at the name,
        held open until L{discard}: while it is, no other file can have
        that number (a removed file's number may go to the next file
        made), so L{install} knows whether the name still shows it.
    """

    tempPath = None

    def __init__(self, blobs, blobId, octets, held, new):
        self.blobs, self.blobId, self.octets = blobs, blobId, octets
        self.size = len(octets)
        self.new = new
        self._hold(held)

    def _hold(self, fd):
        self.inode = _inode(os.fstat(fd))
        # Closed by discard, or when this is collected (a failure before
        # the transaction took it).
        self._held = weakref.finalize(self, os.close, fd)

    def place(self):
        """Placed already."""

    def install(self):
        """
        Inside the write transaction, before its commit: the file made
        durable before the lock must still be the one at the name.  A
        removal of the same content (its last reference expunged) may have
        come in between, and none can come while the lock is held; a
        writer that found a half-written file at the name may have replaced
        it (L{BlobStore._adopt}).  Either way it is placed again.
        """
        try:
            st = os.stat(self.blobs.path(self.blobId))
        except FileNotFoundError:
            st = None
        if st is None or _inode(st) != self.inode:
            held, _ = self.blobs._place(self.blobId, self.octets)
            self._held()
            self._hold(held)

    def discard(self):
        """
        After the commit (or instead of it): the file is let go.  Nothing
        to remove: the octets were written to their name only.
        """
        self._held()

    def content(self):
        return BytesContent(self.octets)


class BlobStore:
    """The blob files under C{root}."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, blobId):
        return self.root / blobId[:2] / blobId[2:]

    def place(self, octets):
        """
        Write C{octets} (C{bytes}) to their name and make them durable
        there: the file's data by its fsync, its name by its directory's.
        I{Blocking.}

        Straight to the name, not through a temporary one: until both
        fsyncs, the name may show fewer octets than it should (being
        written, or left so by a crash), but only to writers of the same
        content, which compare before they use it (L{_adopt}); no row
        names the blob before the commit, and the commit comes after this.

        @return: a L{PlacedBlob}.
        """
        blobId = hashlib.sha256(octets).hexdigest()
        held, new = self._place(blobId, octets)
        return PlacedBlob(self, blobId, octets, held, new)

    def _place(self, blobId, octets):
        """
        L{place} for a known C{blobId}.

        @return: C{(fd, new)}: an open descriptor of the file made durable
            at the name (the caller closes it), C{new} if this call made it.
        """
        path = self.path(blobId)
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # the first blob of this directory
                try:
                    path.parent.mkdir()
                except FileExistsError:
                    pass
                else:  # the new directory's own name must survive a crash too
                    fsyncDirectory(str(self.root))
                continue
            except FileExistsError:
                fd = self._adopt(path, octets)
                if fd is None:
                    continue  # removed meanwhile
                new = False
            else:
                new = True
                try:
                    _writeSynced(fd, octets)
                except BaseException:
                    os.close(fd)
                    # Half-written: its writer removes it.  (Had another
                    # writer replaced it with a whole copy meanwhile, that
                    # one's install, under the lock, places it again.)
                    os.unlink(path)
                    raise
            try:
                fsyncDirectory(str(path.parent))
            except BaseException:
                os.close(fd)
                raise
            return fd, new

    def _adopt(self, path, octets):
        """
        The file at C{path} is there already: used if it holds C{octets}
        (the same content, stored before or being stored by another
        writer) once it is fsynced (whoever wrote it may not have synced
        yet); else (a crash or a failure left it half-written, or its
        writer is still writing) replaced atomically by a whole copy.

        @return: an open descriptor of the file made durable at C{path}
            (the caller closes it), or C{None} if there is no file at
            C{path} any more.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size == len(octets):
                with os.fdopen(os.dup(fd), "rb") as f:
                    same = f.read() == octets
                if same:
                    os.fsync(fd)
                    return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        # A name no blob id has: an orphan for the sweep if a crash leaves it.
        tempPath = path.parent / f"tmp.{secrets.token_hex(8)}"
        fd = os.open(tempPath, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _writeSynced(fd, octets)
            os.replace(tempPath, path)
        except BaseException:
            os.close(fd)
            os.unlink(tempPath)
            raise
        return fd

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
