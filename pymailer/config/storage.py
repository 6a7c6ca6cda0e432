"""
[storage]: where the server keeps its state (SQLite, Maildir or PostgreSQL).
"""

from __future__ import annotations

import os
import pathlib
import urllib.parse
from dataclasses import dataclass

from pymailer.config.reader import showValue


STORAGE_BACKENDS = ("maildir", "sqlite", "postgresql")
POSTGRESQL = "postgresql"
# What a PostgreSQL DSN may start with (libpq's URI schemes).
_DSN_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class StorageConfig:
    """
    Where the server keeps its state.  C{backend}: C{"sqlite"}, the default
    (metadata in C{data_dir/store/index.sqlite}, content in immutable blob
    files beside it; see L{pymailer.store.sqlite}), C{"maildir"}
    (C{data_dir/mail}, one Maildir per user), or C{"postgresql"}: the mail
    queue, the accounts directory and the message store (content too) in
    the PostgreSQL database at C{dsn} (a libpq URI), shared by every node
    using it, through a pool of at most C{pool_size} connections per
    process (see L{pymailer.store.postgresql}).
    C{queue_lease}: seconds a node's claim on a queued message lasts
    unless renewed (every quarter of it), so how long the mail of a node
    that died waits before another node delivers it.
    C{blobs}: where a PostgreSQL store keeps message content: C{"postgresql"}
    (the default: in the database, so nodes share everything through the
    DSN) or an absolute directory path every node mounts (one machine, or
    NFS), the metadata staying in the database (L{pymailer.store.sharedblobs}).
    """

    backend: str = "sqlite"
    dsn: str | None = None
    pool_size: int = 10
    queue_lease: float = 120.0
    blobs: str = POSTGRESQL

    def blobDirectory(self):
        """The shared directory of message content, or C{None}: in the database."""
        return None if self.blobs == POSTGRESQL else pathlib.Path(self.blobs)


def parseStorage(reader):
    backend = reader.string("backend") or StorageConfig().backend
    if backend not in STORAGE_BACKENDS:
        raise reader.error(
            "backend", f"expected {', '.join(STORAGE_BACKENDS[:-1])} or"
            f" {STORAGE_BACKENDS[-1]}, got {showValue(backend)}")
    dsn = reader.string("dsn")
    poolSize = reader.positiveInt("pool_size", StorageConfig().pool_size)
    # At least a second: renewals (every quarter) must fit in it.
    lease = reader.number("queue_lease", StorageConfig().queue_lease, minimum=1.0, strict=False)
    blobs = reader.string("blobs") or POSTGRESQL
    if blobs != POSTGRESQL and (not os.path.isabs(blobs) or "\0" in blobs):
        raise reader.error("blobs", f'expected "{POSTGRESQL}" or an absolute directory path,'
                           f" got {showValue(blobs)}")
    if backend != POSTGRESQL:
        for key in ("dsn", "pool_size", "queue_lease", "blobs"):
            if reader.get(key) is not None:
                raise reader.error(key, f'only for backend = "{POSTGRESQL}"')
    elif dsn is None:
        raise reader.error("dsn", f'missing: backend = "{POSTGRESQL}" needs the'
                           ' database\'s address, e.g. "postgresql://pymailer@db.example.org/mail"')
    else:
        _checkDSN(reader, dsn)
    reader.checkUnknown(reader.seen)
    return StorageConfig(backend=backend, dsn=dsn, pool_size=poolSize, queue_lease=lease,
                         blobs=blobs)


def _checkDSN(reader, dsn):
    """
    A libpq URI (C{postgresql://[user@][host][:port][/dbname][?param=value]},
    libpq's "Connection URIs"); checked for form only: no connection here.
    The password is better in C{~/.pgpass} or C{PGPASSWORD} than here.
    """
    try:
        parsed = urllib.parse.urlsplit(dsn)
        parsed.port  # noqa: B018 (raises on a bad port)
    except ValueError as e:
        raise reader.error("dsn", f"not a postgresql:// URI: {e}") from None
    if parsed.scheme not in _DSN_SCHEMES or "\0" in dsn or any(c.isspace() for c in dsn):
        raise reader.error("dsn", "expected a URI starting with postgresql://,"
                           f" got {showValue(dsn.split(':', 1)[0] + ':...')}")
