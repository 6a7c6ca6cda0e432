"""
Connections to the shared PostgreSQL database: one pool per process
(psycopg_pool), shared by every thread of the server's thread pool and by
every backend on the database (queue, accounts).

What it trusts: the DSN comes from the administrator's configuration; the
database is a trusted peer (it holds the accounts), reached with whatever
libpq's DSN, C{~/.pgpass} and C{PG*} environment variables say (use
C{sslmode=verify-full} in the DSN across an untrusted network).
"""

import threading

from pymailer.pg.schema import SchemaError, checkSchema

# Seconds to wait for the database when the server or a command starts.
CONNECT_TIMEOUT = 10
# Seconds a thread waits for a connection (all pool_size busy, or the
# database down): an SMTP client then gets a temporary 451, not silence.
POOL_TIMEOUT = 10


class DatabaseUnavailable(SchemaError):
    """The database cannot be reached: one line saying where and why."""


def _describe(dsn):
    """Where C{dsn} points, without its password (for messages and logs)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception:
        return "the configured database"
    host = info.get("host") or "the local socket"
    port = f":{info['port']}" if info.get("port") else ""
    return f"database {info.get('dbname') or '(default)'} on {host}{port}"


def importPsycopg():
    """
    @return: the psycopg module.
    @raise DatabaseUnavailable: not installed (an optional dependency).
    """
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise DatabaseUnavailable(
            '[storage] backend = "postgresql" needs psycopg 3 and psycopg_pool:'
            " pip install 'pymailer[postgresql]'") from None
    return psycopg


def connect(dsn):
    """
    One connection, in autocommit mode (for L{pymailer.pg.schema.migrate},
    which opens its own transaction, and checks).

    @raise DatabaseUnavailable: with libpq's reason.
    """
    psycopg = importPsycopg()
    try:
        return psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT, autocommit=True,
                               application_name="pymailer")
    except psycopg.Error as e:
        reason = " ".join(str(e).split())
        raise DatabaseUnavailable(f"cannot connect to {_describe(dsn)}: {reason}") from None


def openPool(storage, check=True):
    """
    The pool of a L{pymailer.config.StorageConfig} (a L{Pool}).

    @param check: first make sure the schema is the one this pymailer
        knows (L{checkSchema}); the server and the admin commands do,
        C{pymailer db migrate} does not.
    @raise SchemaError: the database is unreachable or its schema is not
        this version's (the message says what to do).
    """
    importPsycopg()
    if check:
        with connect(storage.dsn) as db:
            checkSchema(db)
    return Pool(storage)


class Pool:
    """
    At most C{pool_size} connections (psycopg_pool), each checked before use
    (a node outlives a database restart or fail-over: a dead connection is
    replaced, not handed out).

    The connections are made on first use, not when the server is built:
    C{twistd} builds the service, then forks into the background, and a
    connection (or the pool's own threads) would not survive the fork.
    """

    def __init__(self, storage):
        self.conninfo = storage.dsn
        self.size = storage.pool_size
        self._pool = None
        self._lock = threading.Lock()
        self.closed = False

    def _open(self):
        from psycopg_pool import ConnectionPool

        with self._lock:
            if self.closed:
                raise DatabaseUnavailable("the database connections are closed (shutting down)")
            if self._pool is None:
                options = {}
                if hasattr(ConnectionPool, "check_connection"):  # psycopg_pool 3.2+
                    options["check"] = ConnectionPool.check_connection
                self._pool = ConnectionPool(
                    self.conninfo, min_size=1, max_size=self.size, open=True,
                    timeout=POOL_TIMEOUT, name="pymailer",
                    # Autocommit: a read is never left inside an open
                    # transaction; the backends open theirs explicitly
                    # (connection.transaction()).
                    kwargs={"application_name": "pymailer",
                            "connect_timeout": CONNECT_TIMEOUT, "autocommit": True},
                    **options)
            return self._pool

    def connection(self):
        """A context manager lending one connection (see psycopg_pool)."""
        return (self._pool or self._open()).connection()

    def close(self):
        with self._lock:
            self.closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


_pools = {}
_poolsLock = threading.Lock()


def poolFor(storage):
    """
    This process's pool for a L{pymailer.config.StorageConfig}, opened (and
    the schema checked) on first use: the queue and the accounts directory
    of one server, or of one admin command, share it.
    """
    with _poolsLock:
        pool = _pools.get(storage)
        if pool is None or pool.closed:
            pool = _pools[storage] = openPool(storage)
        return pool


def closePools():
    """Close every pool L{poolFor} opened (at shutdown)."""
    with _poolsLock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()
