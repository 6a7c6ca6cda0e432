"""
Server-side web sessions and their CSRF tokens.

A session is a random 256-bit id (the cookie's only content) mapped to
who is logged in, a per-session CSRF token and a one-shot notice for the
next page.  They live in this process's memory: a restart logs everyone
out, and with several worker processes a session is known only to the one
that made it (good enough for the admin pages of one server; a shared
store is a later step).

A session expires after L{IDLE_TIMEOUT} seconds without a request; the
number kept is bounded (the least recently used go first), so clients
that open sessions and never come back cannot grow memory.

Trust: the cookie value is the client's; it is only ever used as a
dictionary key.  The CSRF token a form sends back is compared in constant
time (L{hmac.compare_digest}).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Optional

# The cookie's name.  The __Host- prefix makes browsers refuse it unless it
# is Secure, has Path=/ and no Domain (RFC 6265bis §4.1.3.2): no subdomain
# or plain-HTTP page can plant or overwrite it.
COOKIE = b"__Host-pymailer"
IDLE_TIMEOUT = 30 * 60.0
MAX_SESSIONS = 10_000
# 32 bytes: 256 bits from the OS's CSPRNG.
ID_BYTES = 32


@dataclass
class Session:
    """
    @ivar user: the logged-in address, or C{None} before login (the login
        form's session exists only for its CSRF token).
    @ivar csrf: the token every form of this session carries.
    @ivar notice: C{(kind, text)} shown once on the next page, or C{None}.
    """

    id: str
    csrf: str
    lastSeen: float
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


class SessionStore:
    """
    The sessions of one process.

    @param clock: an C{IReactorTime} (the reactor, or a L{task.Clock}).
    """

    def __init__(self, clock, idleTimeout=IDLE_TIMEOUT, maxSessions=MAX_SESSIONS):
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.maxSessions = maxSessions
        # Insertion order is last-use order: get() moves a session to the end.
        self._sessions: dict[str, Session] = {}

    def __len__(self):
        return len(self._sessions)

    def new(self, user=None) -> Session:
        """A fresh session (a new id whenever someone logs in: no fixation)."""
        now = self.clock.seconds()
        session = Session(secrets.token_urlsafe(ID_BYTES), secrets.token_urlsafe(ID_BYTES),
                          now, user)
        self._sessions[session.id] = session
        while len(self._sessions) > self.maxSessions:
            del self._sessions[next(iter(self._sessions))]
        return session

    def get(self, sessionId) -> Optional[Session]:
        """The live session of this id (and mark it used), or C{None}."""
        if isinstance(sessionId, bytes):
            sessionId = sessionId.decode("ascii", "replace")
        session = self._sessions.pop(sessionId, None) if sessionId else None
        if session is None:
            return None
        now = self.clock.seconds()
        if now - session.lastSeen >= self.idleTimeout:
            return None
        session.lastSeen = now
        self._sessions[session.id] = session
        self._expire(now)
        return session

    def end(self, session):
        self._sessions.pop(session.id, None)

    def _expire(self, now):
        # The oldest-used come first: stop at the first live one.
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.lastSeen < self.idleTimeout:
                break
            del self._sessions[oldest.id]
