"""
The accounts directory: domains, users (with password hashes) and aliases,
in one SQLite file (C{data_dir/accounts.sqlite3}); L{SQLAccountDirectory}
holds the rules and queries that the PostgreSQL directory of many nodes
(L{pymailer.auth.directory_pg}) shares.

Why SQLite: the server reads this database from a thread pool while the
C{pymailer} admin command changes it from another process.  SQLite gives
cross-process atomic writes (C{BEGIN IMMEDIATE} under its file lock) and, in
WAL mode, readers that never block the writer and see every committed change
on their next statement -- so a user added with C{pymailer user add} can log
in at once, without a restart or a reload signal.  Nothing is cached here for
the same reason.

What it trusts: nothing.  Every address and domain is normalised and
validated here (L{normaliseAddress}, L{normaliseDomain}) whatever the caller
already did, because addresses become mailbox directory names in the store;
all SQL is parameterised.  Query methods (C{hasUser}, C{passwordHash}...)
answer "no" to malformed input instead of raising, since the server passes
them whatever a client sent.

One connection per thread (L{pymailer.sqlitedb.ThreadConnections}):
C{sqlite3} connections must not be shared between threads.  All methods
are blocking.
"""

from __future__ import annotations

import abc
import os
import sqlite3
import unicodedata

from zope.interface import implementer

from pymailer.interfaces import IAccountDirectory
from pymailer.sqlitedb import ThreadConnections

__all__ = [
    "SQLiteAccountDirectory",
    "normaliseAddress",
    "normaliseDomain",
    "checkMailboxName",
    "openDirectory",
    "ACCOUNTS_FILENAME",
]

ACCOUNTS_FILENAME = "accounts.sqlite3"

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS domains (
        name TEXT PRIMARY KEY,
        catch_all TEXT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS users (
        address TEXT PRIMARY KEY,
        domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
        password_hash TEXT NOT NULL,
        admin INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0,
        quota INTEGER NULL
    )""",
    # 'domain' is the alias's domain, so removeDomain can cascade without
    # parsing addresses in SQL.
    """CREATE TABLE IF NOT EXISTS aliases (
        alias TEXT NOT NULL,
        target TEXT NOT NULL,
        domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
        PRIMARY KEY (alias, target)
    )""",
    "CREATE INDEX IF NOT EXISTS users_domain ON users(domain)",
    "CREATE INDEX IF NOT EXISTS aliases_domain ON aliases(domain)",
]
# Version 2: users.admin (issue 16: who may use the web admin pages).
# Version 3: users.disabled (issue 16: accounts that may not log in).
# Version 4: users.quota (issue 18: storage limit in octets, NULL: none).
_SCHEMA_VERSION = 4
# Changes that bring an older file up to date: version -> statements that
# make it the next version.  CREATE TABLE IF NOT EXISTS leaves an existing
# table as it was, so a column added later needs its ALTER here.
_MIGRATIONS = {
    1: ["ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0"],
    2: ["ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0"],
    3: ["ALTER TABLE users ADD COLUMN quota INTEGER NULL"],
}

# The users table's yes/no columns, and those read one at a time (the only
# column names put into SQL text, from these fixed tables).
_FLAGS = {"admin": "admin", "disabled": "disabled"}
_COLUMNS = {**_FLAGS, "password_hash": "password_hash", "quota": "quota"}


# --- normalisation ---------------------------------------------------------

def _hasUnsafeChars(text):
    """Control, format, separator (whitespace) characters: never in names."""
    return any(
        c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl",
                                                   "Zp", "Cs", "Co", "Cn")
        for c in text)


def normaliseDomain(domain: str) -> str:
    """
    Canonical form of a domain: trailing dot stripped, lower-cased, and
    IDNA A-labels (C{xn--...}) decoded to Unicode, so C{Example.ORG.},
    C{example.org} and the punycode and Unicode spellings of one IDN are the
    same domain.

    @raise ValueError: empty or malformed.
    """
    if not isinstance(domain, str):
        raise ValueError(f"domain must be a string, not {type(domain).__name__}")
    d = domain
    if d.endswith("."):
        d = d[:-1]
    d = d.lower()
    if not d:
        raise ValueError("empty domain")
    if "xn--" in d:
        try:
            d = ".".join(
                label.encode("ascii").decode("idna")
                if label.startswith("xn--") else label
                for label in d.split("."))
        except UnicodeError:
            raise ValueError(f"invalid IDNA domain {domain!r}") from None
        d = d.lower()
    d = unicodedata.normalize("NFC", d)
    if (_hasUnsafeChars(d) or any(c in d for c in "@/\\\0[]")
            or any(not label for label in d.split("."))
            or len(d.encode("utf-8")) > 255):
        raise ValueError(f"invalid domain {domain!r}")
    return d


def normaliseAddress(address: str) -> str:
    """
    Canonical form of C{local@domain}: split at the last C{@}, the domain
    through L{normaliseDomain}, the local part Unicode-casefolded and NFC
    normalised (so C{Jösé@Example.org} in any Unicode spelling is one
    mailbox; RFC 6531 addresses are allowed).

    @raise ValueError: no C{@}, empty local part, bad domain.
    """
    if not isinstance(address, str):
        raise ValueError(
            f"address must be a string, not {type(address).__name__}")
    local, at, domain = address.rpartition("@")
    if not at:
        raise ValueError(f"not an address (no '@'): {address!r}")
    if not local:
        raise ValueError(f"empty local part: {address!r}")
    if not domain:
        raise ValueError(f"empty domain: {address!r}")
    local = unicodedata.normalize("NFC", local.casefold())
    return f"{local}@{normaliseDomain(domain)}"


def _checkSyntax(address, what="address"):
    """
    Checks any address we store must pass (targets may be remote).
    C{address} is already normalised.
    """
    local, _, _ = address.rpartition("@")
    if _hasUnsafeChars(address) or "\0" in address:
        raise ValueError(f"{what} contains control or space characters:"
                         f" {address!r}")
    if len(local.encode("utf-8")) > 64:
        raise ValueError(f"{what} local part longer than 64 octets:"
                         f" {address!r}")
    if len(address.encode("utf-8")) > 255:
        raise ValueError(f"{what} longer than 255 octets: {address!r}")


def checkMailboxName(address, what="address"):
    """
    Stricter checks for local names (users, aliases): the address becomes
    a directory name in the store, so nothing that could walk the file
    system or confuse a shell or a log line.

    @param address: a L{normaliseAddress}d address.
    @raise ValueError: with the reason.
    """
    _checkSyntax(address, what)
    local, _, _ = address.rpartition("@")
    if any(c in local for c in "/\\@"):
        raise ValueError(f"{what} local part may not contain '/', '\\' or"
                         f" '@': {address!r}")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError(f"{what} local part may not start or end with '.'"
                         f" or contain '..': {address!r}")


# --- the directory ---------------------------------------------------------

@implementer(IAccountDirectory)
class SQLAccountDirectory(abc.ABC):
    """
    L{IAccountDirectory} in SQL: the rules, checks and queries every
    database backend shares.  A subclass connects: L{_one} and L{_rows}
    read (each seeing every change committed before), L{_write} gives a
    transaction that no other writer interleaves with (so "exists?" then
    "insert" is safe across processes and nodes).  SQL here is written with
    C{?} placeholders and portable to SQLite and PostgreSQL.
    """

    @abc.abstractmethod
    def _one(self, sql, *args):
        """The first row of a query, or C{None}."""

    @abc.abstractmethod
    def _rows(self, sql, *args):
        """Every row of a query, as a C{list}."""

    @abc.abstractmethod
    def _write(self):
        """
        A context manager giving a handle with C{execute(sql, args)}
        (returning a cursor: C{fetchone}, C{rowcount}) and
        C{executemany(sql, rows)}; committed at the end, rolled back on an
        exception.
        """

    def close(self):
        """Release connections (at shutdown, when no thread uses this)."""

    def version(self):
        """
        C{None}: a backend that cannot tell cheaply whether another node
        changed the data (PostgreSQL would need LISTEN/NOTIFY) keeps
        nothing cached outside.
        """
        return None

    # -- queries (untrusted input: malformed means "no") --

    def hasDomain(self, domain):
        try:
            domain = normaliseDomain(domain)
        except ValueError:
            return False
        return self._one("SELECT 1 FROM domains WHERE name=?",
                         domain) is not None

    def hasUser(self, address):
        try:
            address = normaliseAddress(address)
        except ValueError:
            return False
        return self._one("SELECT 1 FROM users WHERE address=?",
                         address) is not None

    def aliasTargets(self, address):
        try:
            address = normaliseAddress(address)
        except ValueError:
            return ()
        rows = self._rows(
            "SELECT target FROM aliases WHERE alias=? ORDER BY target", address)
        return tuple(row[0] for row in rows)

    def catchAll(self, domain):
        try:
            domain = normaliseDomain(domain)
        except ValueError:
            return None
        row = self._one("SELECT catch_all FROM domains WHERE name=?", domain)
        return row[0] if row else None

    def _userColumn(self, column, address):
        """A user's C{column} (one of L{_COLUMNS}), or C{None} for a non-user."""
        try:
            address = normaliseAddress(address)
        except ValueError:
            return None
        # column is one of _COLUMNS, never the caller's text.
        row = self._one(f"SELECT {_COLUMNS[column]} FROM users WHERE address=?", address)
        return row[0] if row else None

    def passwordHash(self, address):
        return self._userColumn("password_hash", address)

    def _flag(self, column, address):
        return bool(self._userColumn(column, address))

    def isAdmin(self, address):
        return self._flag("admin", address)

    def isDisabled(self, address):
        return self._flag("disabled", address)

    def quota(self, address):
        return self._userColumn("quota", address)

    def setQuota(self, address, limit):
        address = normaliseAddress(address)
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"a quota is a number of octets, not {limit!r}")
        with self._write() as db:
            cursor = db.execute("UPDATE users SET quota=? WHERE address=?", (limit, address))
            if cursor.rowcount == 0:
                raise KeyError(f"no such user: {address}")

    def listDomains(self):
        return [row[0] for row in self._rows("SELECT name FROM domains ORDER BY name")]

    def listUsers(self, domain=None):
        if domain is None:
            rows = self._rows("SELECT address FROM users ORDER BY address")
        else:
            rows = self._rows("SELECT address FROM users WHERE domain=? ORDER BY address",
                              normaliseDomain(domain))
        return [row[0] for row in rows]

    def listAliases(self):
        aliases = {}
        for alias, target in self._rows(
                "SELECT alias, target FROM aliases ORDER BY alias, target"):
            aliases.setdefault(alias, []).append(target)
        return [(alias, tuple(targets)) for alias, targets in aliases.items()]

    # -- changes (validated; errors raised) --

    def _normaliseTarget(self, db, target):
        """
        A target's domain is always normalised; its local part is casefolded
        only if the domain is ours (remote local parts are the remote's
        business, RFC 5321 section 2.4).
        """
        local, at, domain = str(target).rpartition("@")
        if not at or not local:
            raise ValueError(f"not an address: {target!r}")
        domain = normaliseDomain(domain)
        if db.execute("SELECT 1 FROM domains WHERE name=?",
                      (domain,)).fetchone():
            address = normaliseAddress(f"{local}@{domain}")
        else:
            address = f"{local}@{domain}"
        _checkSyntax(address, "target")
        return address

    def _requireDomain(self, db, domain):
        if db.execute("SELECT 1 FROM domains WHERE name=?",
                      (domain,)).fetchone() is None:
            raise KeyError(f"no such domain: {domain}")

    def addDomain(self, domain, catchAll=None):
        domain = normaliseDomain(domain)
        with self._write() as db:
            if db.execute("SELECT 1 FROM domains WHERE name=?",
                          (domain,)).fetchone():
                raise KeyError(f"domain exists: {domain}")
            db.execute("INSERT INTO domains (name) VALUES (?)", (domain,))
            if catchAll is not None:
                db.execute("UPDATE domains SET catch_all=? WHERE name=?",
                           (self._normaliseTarget(db, catchAll), domain))

    def setCatchAll(self, domain, target):
        """
        Set (or with C{None} clear) the address receiving mail for unknown
        local parts of C{domain}.  L{KeyError} if the domain is unknown.
        """
        domain = normaliseDomain(domain)
        with self._write() as db:
            self._requireDomain(db, domain)
            if target is not None:
                target = self._normaliseTarget(db, target)
            db.execute("UPDATE domains SET catch_all=? WHERE name=?",
                       (target, domain))

    def removeDomain(self, domain):
        domain = normaliseDomain(domain)
        with self._write() as db:
            self._requireDomain(db, domain)
            # Explicit rather than relying on foreign_keys=ON in every
            # process that ever opened the file.
            db.execute("DELETE FROM users WHERE domain=?", (domain,))
            db.execute("DELETE FROM aliases WHERE domain=?", (domain,))
            db.execute("DELETE FROM domains WHERE name=?", (domain,))

    def addUser(self, address, passwordHash):
        address = normaliseAddress(address)
        checkMailboxName(address)
        _checkHash(passwordHash)
        domain = address.rpartition("@")[2]
        with self._write() as db:
            self._requireDomain(db, domain)
            if db.execute("SELECT 1 FROM users WHERE address=?",
                          (address,)).fetchone():
                raise KeyError(f"user exists: {address}")
            if db.execute("SELECT 1 FROM aliases WHERE alias=?",
                          (address,)).fetchone():
                raise ValueError(f"{address} is an alias; remove the alias"
                                 " first")
            db.execute(
                "INSERT INTO users (address, domain, password_hash)"
                " VALUES (?, ?, ?)", (address, domain, passwordHash))

    def setPasswordHash(self, address, passwordHash):
        address = normaliseAddress(address)
        _checkHash(passwordHash)
        with self._write() as db:
            cursor = db.execute(
                "UPDATE users SET password_hash=? WHERE address=?",
                (passwordHash, address))
            if cursor.rowcount == 0:
                raise KeyError(f"no such user: {address}")

    def _setFlag(self, column, address, value):
        address = normaliseAddress(address)
        with self._write() as db:
            cursor = db.execute(f"UPDATE users SET {_FLAGS[column]}=? WHERE address=?",
                                (bool(value), address))
            if cursor.rowcount == 0:
                raise KeyError(f"no such user: {address}")

    def setAdmin(self, address, admin=True):
        self._setFlag("admin", address, admin)

    def setDisabled(self, address, disabled=True):
        self._setFlag("disabled", address, disabled)

    def removeUser(self, address):
        address = normaliseAddress(address)
        with self._write() as db:
            cursor = db.execute("DELETE FROM users WHERE address=?",
                                (address,))
            if cursor.rowcount == 0:
                raise KeyError(f"no such user: {address}")
            # Their forwarding goes with them.
            db.execute("DELETE FROM aliases WHERE alias=?", (address,))

    def forwarding(self, address):
        """
        A user's forwarding: the other addresses their mail goes to, and
        whether their own mailbox keeps a copy.

        @return: C{(targets, keepCopy)}; C{((), True)} without forwarding.
        """
        targets = self.aliasTargets(address)
        try:
            address = normaliseAddress(address)
        except ValueError:
            return (), True
        others = tuple(t for t in targets if t != address)
        return others, not others or address in targets

    def setForwarding(self, address, targets, keepCopy=True):
        """
        Forward a user's mail to C{targets} (none: forwarding off).  It is
        kept as alias rows from the user's own address, with the user among
        the targets when their mailbox keeps a copy; the router reads a
        user's alias rows this way (L{pymailer.delivery.router}).

        @raise KeyError: no such user.
        @raise ValueError: a malformed target, or the user's own address.
        """
        address = normaliseAddress(address)
        if isinstance(targets, str):
            targets = [targets]
        with self._write() as db:
            row = db.execute("SELECT domain FROM users WHERE address=?",
                             (address,)).fetchone()
            if row is None:
                raise KeyError(f"no such user: {address}")
            normalised = [self._normaliseTarget(db, t) for t in targets]
            if address in normalised:
                raise ValueError(f"{address} cannot forward to itself")
            db.execute("DELETE FROM aliases WHERE alias=?", (address,))
            if normalised and keepCopy:
                normalised.append(address)
            db.executemany(
                "INSERT INTO aliases (alias, target, domain)"
                " VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [(address, t, row[0]) for t in normalised])

    def addAlias(self, alias, targets):
        alias = normaliseAddress(alias)
        checkMailboxName(alias, "alias")
        if isinstance(targets, str):
            targets = [targets]
        if not targets:
            raise ValueError("an alias needs at least one target")
        domain = alias.rpartition("@")[2]
        with self._write() as db:
            if db.execute("SELECT 1 FROM domains WHERE name=?",
                          (domain,)).fetchone() is None:
                raise KeyError(f"alias {alias} is not in a local domain"
                               f" (no such domain: {domain})")
            if db.execute("SELECT 1 FROM users WHERE address=?",
                          (alias,)).fetchone():
                raise ValueError(f"{alias} is a user; an alias cannot have"
                                 " the same address")
            for target in targets:
                target = self._normaliseTarget(db, target)
                if target == alias:
                    raise ValueError(f"alias {alias} cannot target itself")
                db.execute(
                    "INSERT INTO aliases (alias, target, domain)"
                    " VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (alias, target, domain))

    def removeAlias(self, alias, targets=()):
        alias = normaliseAddress(alias)
        if isinstance(targets, str):
            targets = [targets]
        with self._write() as db:
            if db.execute("SELECT 1 FROM aliases WHERE alias=?",
                          (alias,)).fetchone() is None:
                raise KeyError(f"no such alias: {alias}")
            if not targets:
                db.execute("DELETE FROM aliases WHERE alias=?", (alias,))
                return
            for target in targets:
                target = self._normaliseTarget(db, target)
                cursor = db.execute(
                    "DELETE FROM aliases WHERE alias=? AND target=?",
                    (alias, target))
                if cursor.rowcount == 0:
                    raise KeyError(f"{target} is not a target of {alias}")


@implementer(IAccountDirectory)
class SQLiteAccountDirectory(SQLAccountDirectory):
    """
    L{IAccountDirectory} over one SQLite file shared by every process.

    @param path: the database file; its directory and the schema are created
        if missing.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        # Password hashes are secrets: readable by the owner only.
        self.connections = ThreadConnections(self.path, durable=True, private=True,
                                             foreignKeys=True, busyTimeout=5.0)
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            existing = db.execute(
                "SELECT 1 FROM sqlite_master WHERE name='users'").fetchone()
            for statement in _SCHEMA:
                db.execute(statement)
            # A new file gets today's schema at once; an older one is
            # migrated step by step, in the same transaction (another
            # process opening it meanwhile waits, then sees it done).
            if existing:
                for step in range(max(version, 1), _SCHEMA_VERSION):
                    for statement in _MIGRATIONS[step]:
                        db.execute(statement)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    # -- connections (autocommit: every read sees the latest commit) --

    def _write(self):
        return self.connections.transaction()

    def close(self):
        self.connections.close()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()

    _watcher = None

    def version(self):
        """
        SQLite's C{PRAGMA data_version} on a connection of its own: it
        changes when any other connection, of any process, has committed
        to the file since this one last asked.  In WAL mode it reads the
        shared-memory index (two C{fcntl} calls, ~3 us): no disk I/O, and
        with a zero busy timeout it never waits on a lock; busy or broken,
        it answers C{None}.
        """
        try:
            if self._watcher is None:
                self._watcher = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                                check_same_thread=False)
            # fetchall: the statement runs to its end, so no read
            # transaction stays open (one would pin the version).
            return self._watcher.execute("PRAGMA data_version").fetchall()[0][0]
        except sqlite3.Error:
            return None

    def _one(self, sql, *args):
        return self.connections.db().execute(sql, args).fetchone()

    def _rows(self, sql, *args):
        return self.connections.db().execute(sql, args).fetchall()


def _checkHash(passwordHash):
    """
    Refuse anything that is not an encoded hash: a guard against a caller
    passing the password itself.
    """
    if not isinstance(passwordHash, str) or not passwordHash.startswith("$"):
        raise ValueError("expected an encoded password hash ($argon2id$...)")


def openDirectory(config) -> SQLAccountDirectory:
    """
    The accounts directory of a L{pymailer.config.Config}: the server and the
    admin command both open it this way, so they share one file (or, with
    C{[storage] backend = "postgresql"}, one database with every node).

    @raise pymailer.pg.schema.SchemaError: PostgreSQL cannot be used as it is.
    """
    if config.storage.backend == "postgresql":
        from pymailer.auth.directory_pg import PostgreSQLAccountDirectory
        from pymailer.pg.pool import poolFor

        return PostgreSQLAccountDirectory(poolFor(config.storage))
    return SQLiteAccountDirectory(config.data_dir / ACCOUNTS_FILENAME)
