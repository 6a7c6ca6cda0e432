"""
The IMAP listener factory (Twisted has none: it only sets C{.portal} on
each protocol) and the builders the composition root registers.
"""

import hashlib
import hmac
import os
import secrets

from twisted.internet.protocol import ServerFactory
from twisted.internet.threads import deferToThreadPool

from pymailer.imap.account import ChangeNotifier, IMAPAccount
from pymailer.imap.server import IMAPServer

# One notifier per store object, shared by every IMAP listener.
_notifiers = {}


def notifierFor(parts):
    entry = _notifiers.get(id(parts.store))
    if entry is None or entry[0] is not parts.store:
        entry = (parts.store, ChangeNotifier(parts.store, parts.reactor))
        _notifiers[id(parts.store)] = entry
    return entry[1]


class LoginCache:
    """
    Verified logins remembered for C{ttl} seconds, so a client that logs in
    every few seconds does not pay an argon2 verification each time.  Keyed
    by an HMAC of user name and password under a per-process random key:
    neither the password nor a plain hash of it is ever kept.
    """

    def __init__(self, clock, ttl=60.0, maxEntries=10000):
        self.clock = clock
        self.ttl = ttl
        self.maxEntries = maxEntries
        self._key = secrets.token_bytes(32)
        self._entries = {}

    def _digest(self, username, password):
        return hmac.new(self._key, username + b"\0" + password, hashlib.sha256).digest()

    def get(self, username, password):
        entry = self._entries.get(self._digest(username, password))
        if entry is None:
            return None
        user, expires = entry
        if self.clock.seconds() >= expires:
            return None
        return user

    def put(self, username, password, user):
        if len(self._entries) >= self.maxEntries:
            self._entries.clear()
        self._entries[self._digest(username, password)] = (user, self.clock.seconds() + self.ttl)


class IMAPFactory(ServerFactory):
    """
    @param implicitTLS: the listener is wrapped in TLS (C{imaps}, RFC 8314).
    """

    def __init__(self, parts, implicitTLS=False):
        self.parts = parts
        self.portal = parts.portal
        self.realm = parts.portal.realm
        self.tls = parts.tls
        self.guard = parts.guard
        self.store = parts.store
        self.authConfig = parts.config.auth
        self.implicitTLS = implicitTLS
        self.maxMessageSize = parts.config.smtp.max_message_size
        self.notifier = notifierFor(parts)
        self.tempDir = os.path.join(parts.config.data_dir, "tmp")
        os.makedirs(self.tempDir, 0o700, exist_ok=True)
        self.loginCache = LoginCache(parts.reactor)

    def run(self, function, *args):
        return deferToThreadPool(self.parts.reactor, self.parts.threadpool, function, *args)

    def buildProtocol(self, addr):
        protocol = IMAPServer(self)
        protocol.factory = self
        return protocol


def buildIMAP(role, parts):
    return IMAPFactory(parts, implicitTLS=(role == "imaps"))


def buildAccount(parts):
    notifier = notifierFor(parts)

    def avatarFor(user):
        return IMAPAccount(user, parts.store, parts.reactor, parts.threadpool,
                           notifier, str(parts.config.data_dir))

    return avatarFor
