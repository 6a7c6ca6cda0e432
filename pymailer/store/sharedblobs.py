"""
Message content in files shared by every node (C{[storage] blobs =
"/path"} with C{backend = "postgresql"}): the metadata, reference counts
included, in PostgreSQL as always, the octets in the blob files of
L{pymailer.store.blobs} under a directory every node mounts (one machine,
or NFS), instead of C{blob_chunks} rows.  For installations whose
database should stay small, or whose mail is big.

The rules that keep content from being removed under a new reference
(L{pymailer.store.postgresql.PostgreSQLStore} follows them):
 - a writer first takes the C{blobs} row (C{INSERT ... ON CONFLICT DO
   UPDATE}: the row lock, to the commit), then checks the file is there
   and links it again from its temporary file if not (L{PendingBlob.install});
 - the sweep deletes freed rows and unlinks their files in the same
   transaction, before its commit: a writer of the same content waits on
   the row, then finds the file gone and puts it back;
 - nothing else unlinks a blob file: a file no row names (a crash between
   the file and the commit) is adopted as a freed row (L{orphanFiles}) and
   goes through the sweep like any other.

What it trusts: the directory is ours (its files are 0600); the
database names the blobs.  Blocking file I/O: call from a thread pool.
"""

import os
import time

from pymailer.store.blobs import ORPHAN_AGE, BlobStore

# A temporary file older than this belongs to no delivery still running
# (on any node: they share tmp/).
TEMPORARY_AGE = 3600.0


class SharedFileBlobs(BlobStore):
    """
    The blob files under C{root}; content a node stored in the database
    before the switch to files (and what C{pymailer migrate-storage}
    moved) is read from its chunks (C{chunks}, a
    L{pymailer.store.postgresql.ChunkedBlobs}).
    """

    def __init__(self, root, chunks):
        BlobStore.__init__(self, root)
        self._chunks = chunks

    def open(self, blobId):
        try:
            return BlobStore.open(self, blobId)
        except FileNotFoundError:
            return self._chunks.open(blobId)

    def remove(self, blobId):
        """
        Not now: a file placed for a delivery that turned out a duplicate
        may be another node's, being installed; the orphan sweep takes it
        under the row lock (see the module docstring).
        """

    def unlink(self, blobId):
        """The sweep's removal, inside its transaction (see the module docstring)."""
        BlobStore.remove(self, blobId)

    def orphanFiles(self, now=None, subdirectories=None):
        """
        Blob files older than L{ORPHAN_AGE}, as C{(blobId, size)}, for the
        caller to look up; temporary files older than L{TEMPORARY_AGE} are
        removed on the way.  One directory entry at a time: bounded memory.

        @param subdirectories: only these blob subdirectories (and tmp/);
            all by default.
        """
        now = time.time() if now is None else now
        if subdirectories is None:
            directories = sorted(self.root.iterdir())
        else:
            directories = [self.tmp] + [self.root / name for name in subdirectories]
        for directory in directories:
            if not directory.is_dir():
                continue
            for entry in os.scandir(directory):
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                if directory == self.tmp:
                    if st.st_mtime < now - TEMPORARY_AGE:
                        try:
                            os.unlink(entry.path)
                        except FileNotFoundError:
                            pass
                elif st.st_mtime < now - ORPHAN_AGE:
                    yield directory.name + entry.name, st.st_size
