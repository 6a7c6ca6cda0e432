"""
Server-side web sessions and their CSRF tokens, shared by every process
on one C{data_dir}.

A session is a random 256-bit id (the cookie's only content) mapped to
who is logged in, a per-session CSRF token and a one-shot notice for the
next page.  They are kept in SQLite (C{DATA_DIR/websessions.sqlite}, WAL),
so that a second C{twistd pymailer} on the same data directory, or a
worker process, accepts the cookie another one issued, and a logout or
an expiry anywhere applies everywhere; a restart keeps everyone logged in.
Only a SHA-256 hash of the id is stored (a copy of the file, a backup,
opens no session): the id has 256 random bits, so no salt or slow hash
is needed against guessing it back.

A session expires after L{IDLE_TIMEOUT} seconds without a request; its
expiry moves on at most once per L{TOUCH_INTERVAL} (a write per request
would serialise every page on the database's lock).  The number kept is
bounded: past L{MAX_SESSIONS} the least recently used go first, the
not-logged-in ones (a login form's) before any logged-in one, so that a
client opening login forms cannot log the admins out.

All database work runs in the thread pool; every method returns a
Deferred.

Trust: the cookie value is the client's; it is only ever hashed and used
as a bound parameter.  The CSRF token a form sends back is compared in
constant time (L{hmac.compare_digest}).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Optional

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from pymailer.sqlitedb import ThreadConnections

# The cookie's name.  The __Host- prefix makes browsers refuse it unless it
# is Secure, has Path=/ and no Domain (RFC 6265bis §4.1.3.2): no subdomain
# or plain-HTTP page can plant or overwrite it.
COOKIE = b"__Host-pymailer"
IDLE_TIMEOUT = 30 * 60.0
TOUCH_INTERVAL = 60.0
MAX_SESSIONS = 10_000
# 32 bytes: 256 bits from the OS's CSPRNG.
ID_BYTES = 32
FILENAME = "websessions.sqlite"
# A cookie longer than this is not one of ours: not even hashed.
MAX_ID_LENGTH = 128

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id_hash BLOB PRIMARY KEY,
    csrf TEXT NOT NULL,
    user TEXT,
    expires REAL NOT NULL,
    notice TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);
"""


def hashId(sessionId: str) -> bytes:
    return hashlib.sha256(sessionId.encode("ascii")).digest()


@dataclass
class Session:
    """
    @ivar user: the logged-in address, or C{None} before login (the login
        form's session exists only for its CSRF token).
    @ivar csrf: the token every form of this session carries.
    @ivar expires: when it ends unless used (POSIX time).
    @ivar notice: C{(kind, text)} shown once on this request's page, or
        C{None} (taken from the store when the session was read).
    """

    id: str
    csrf: str
    expires: float
    user: Optional[str] = None
    notice: Optional[tuple] = field(default=None)

    def csrfMatches(self, token) -> bool:
        if isinstance(token, bytes):
            token = token.decode("ascii", "replace")
        return hmac.compare_digest(self.csrf.encode("ascii"),
                                   str(token or "").encode("ascii", "replace"))

    def popNotice(self):
        notice, self.notice = self.notice, None
        return notice


class SessionDB:
    """
    The sessions table, one connection per thread.  Every method blocks:
    L{SessionStore} calls them in the thread pool.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        # CSRF tokens and who is logged in: the owner's only.
        self.connections = ThreadConnections(self.path, private=True)
        with self.connections.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def insert(self, idHash, csrf, user, expires, now, maxSessions):
        with self.connections.transaction() as db:
            db.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            db.execute("INSERT INTO sessions (id_hash, csrf, user, expires) VALUES (?, ?, ?, ?)",
                       (idHash, csrf, user, expires))
            (count,), = db.execute("SELECT count(*) FROM sessions")
            if count > maxSessions:
                # Login forms' sessions first, then the least recently
                # used; never the one just made.
                db.execute(
                    "DELETE FROM sessions WHERE id_hash IN (SELECT id_hash FROM sessions"
                    " WHERE id_hash != ? ORDER BY user IS NOT NULL, expires LIMIT ?)",
                    (idHash, count - maxSessions))

    def lookup(self, idHash, now, expires, touchBefore, takeNotice=True):
        """
        The live session's C{(csrf, user, expires, notice)}, or C{None}.
        Its expiry moves to C{expires} if it is before C{touchBefore}, and
        its notice is taken (cleared), so that one page shows it, unless
        C{takeNotice} is false (a look that shows no page).
        """
        db = self.connections.db()
        row = db.execute("SELECT csrf, user, expires, notice FROM sessions"
                         " WHERE id_hash = ? AND expires > ?", (idHash, now)).fetchone()
        if row is None:
            return None
        csrf, user, oldExpires, notice = row
        if not takeNotice:
            return csrf, user, oldExpires, notice
        if notice is not None or oldExpires < touchBefore:
            db.execute("UPDATE sessions SET expires = ?, notice = NULL WHERE id_hash = ?",
                       (expires, idHash))
            oldExpires = expires
        return csrf, user, oldExpires, notice

    def delete(self, idHash):
        self.connections.db().execute("DELETE FROM sessions WHERE id_hash = ?", (idHash,))

    def setNotice(self, idHash, notice):
        self.connections.db().execute("UPDATE sessions SET notice = ? WHERE id_hash = ?",
                                      (notice, idHash))

    def count(self, now):
        (n,), = self.connections.db().execute(
            "SELECT count(*) FROM sessions WHERE expires > ?", (now,))
        return n


class SessionStore:
    """
    The sessions of every process on one data directory.

    @param path: the SQLite file.
    @param reactor: an C{IReactorTime} and C{IReactorThreads} (or a
        L{pymailer.testing.ClockReactor}).
    @param threadpool: where the database work runs.
    """

    def __init__(self, path, reactor, threadpool, idleTimeout=IDLE_TIMEOUT,
                 maxSessions=MAX_SESSIONS, touchInterval=TOUCH_INTERVAL):
        self.db = SessionDB(path)
        self.reactor = reactor
        self.threadpool = threadpool
        self.idleTimeout = idleTimeout
        self.maxSessions = maxSessions
        self.touchInterval = min(touchInterval, idleTimeout / 2)

    def _inThread(self, f, *args):
        return deferToThreadPool(self.reactor, self.threadpool, f, *args)

    def count(self):
        """A Deferred of the number of live sessions."""
        return self._inThread(self.db.count, self.reactor.seconds())

    @defer.inlineCallbacks
    def new(self, user=None):
        """A fresh session (a new id whenever someone logs in: no fixation)."""
        now = self.reactor.seconds()
        session = Session(secrets.token_urlsafe(ID_BYTES), secrets.token_urlsafe(ID_BYTES),
                          now + self.idleTimeout, user)
        yield self._inThread(self.db.insert, hashId(session.id), session.csrf, user,
                             session.expires, now, self.maxSessions)
        return session

    def get(self, sessionId, takeNotice=True):
        """
        A Deferred of the live session of this id (marked used), or C{None}.

        @param takeNotice: whether this look shows a page: it then takes
            the session's notice (see L{SessionDB.lookup}); a look that
            shows none (may this request upload?) must leave it for the
            page that follows, or a notice set just before is lost.
        """
        if isinstance(sessionId, bytes):
            sessionId = sessionId.decode("ascii", "replace")
        if not sessionId or len(sessionId) > MAX_ID_LENGTH or not sessionId.isascii():
            return defer.succeed(None)
        now = self.reactor.seconds()
        expires = now + self.idleTimeout

        def found(row):
            if row is None:
                return None
            csrf, user, expires, notice = row
            return Session(sessionId, csrf, expires, user,
                           tuple(json.loads(notice)) if notice else None)

        return self._inThread(self.db.lookup, hashId(sessionId), now, expires,
                              expires - self.touchInterval, takeNotice).addCallback(found)

    def end(self, session):
        """Log out: a Deferred firing once no process accepts the session."""
        return self._inThread(self.db.delete, hashId(session.id))

    def setNotice(self, session, notice):
        """A Deferred: C{notice} (C{(kind, text)}) shows on the session's next page."""
        return self._inThread(self.db.setNotice, hashId(session.id), json.dumps(notice))


def openSessions(parts):
    """The sessions of the server's C{data_dir} (L{pymailer.service.Parts})."""
    return SessionStore(os.path.join(parts.config.data_dir, FILENAME), parts.reactor,
                        parts.threadpool)
