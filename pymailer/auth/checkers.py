"""
The password checker behind every login (SMTP AUTH, IMAP, POP3).

argon2 verification is slow by design, so it runs in the thread pool, never
on the reactor; and it holds its memory cost (19 MiB) while it runs, so at
most L{MAX_CONCURRENT_CHECKS} run at once and other logins wait their turn
(ten clients logging in at once used to take ten times 64 MiB).  An unknown user costs the same verification as a known one
(against a dummy hash) so timing does not tell which addresses exist; so
does a disabled account (C{pymailer user disable}), which may not log in
anywhere but still receives mail.

A verified login is remembered for a minute (a mail client that logs in
every few seconds would otherwise pay argon2 each time), keyed by an HMAC
under a per-process random key of the address, the password and the stored
hash: the password is never kept, and changing it forgets the entry at once.
"""

import hashlib
import hmac
import secrets
import threading
import time

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import DeferredSemaphore
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from pymailer.auth.directory import normaliseAddress
from pymailer.auth.passwords import hashPassword, needsRehash, verifyPassword


# Password checks running at once; the rest queue (FIFO).  Two keep both
# cores of a small server busy with logins while bounding their memory.
MAX_CONCURRENT_CHECKS = 2


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


class VerifiedLogins:
    """Logins verified in the last C{ttl} seconds (thread-safe)."""

    def __init__(self, ttl=60.0, maxEntries=10000, now=time.monotonic):
        self.ttl = ttl
        self.maxEntries = maxEntries
        self.now = now
        self._key = secrets.token_bytes(32)
        self._entries = {}
        self._lock = threading.Lock()

    def _digest(self, address, password, stored):
        material = "\0".join((address, password, stored)).encode("utf-8")
        return hmac.new(self._key, material, hashlib.sha256).digest()

    def known(self, address, password, stored):
        with self._lock:
            expires = self._entries.get(self._digest(address, password, stored))
        return expires is not None and self.now() < expires

    def remember(self, address, password, stored):
        with self._lock:
            if len(self._entries) >= self.maxEntries:
                self._entries.clear()
            self._entries[self._digest(address, password, stored)] = self.now() + self.ttl


@implementer(ICredentialsChecker)
class PasswordChecker:
    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, directory, reactor, threadpool, verified=None,
                 concurrency=MAX_CONCURRENT_CHECKS):
        self.directory = directory
        self.reactor = reactor
        self.threadpool = threadpool
        self.verified = verified if verified is not None else VerifiedLogins()
        self._slots = DeferredSemaphore(concurrency)

    def requestAvatarId(self, credentials):
        return self._slots.run(
            deferToThreadPool, self.reactor, self.threadpool, self.check,
            credentials.username, credentials.password,
        )

    def check(self, username, password):
        """
        Blocking.  @return: the user's normalised address.
        @raise UnauthorizedLogin: wrong user name or password, or a
            disabled account.
        """
        try:
            address = normaliseAddress(_text(username))
            passwordText = _text(password)
        except (UnicodeDecodeError, ValueError):
            address, passwordText = None, ""
        # A disabled account is checked as an unknown one (against the
        # dummy hash): the same reply and the same time as a wrong password,
        # and before the verified-login cache, so disabling applies at once.
        if address and not self.directory.isDisabled(address):
            stored = self.directory.passwordHash(address)
        else:
            stored = None
        if stored is not None and self.verified.known(address, passwordText, stored):
            return address
        if verifyPassword(stored, passwordText) and stored is not None:
            if needsRehash(stored):
                # Hashed with weaker parameters than today's: upgrade it
                # now that we have the password.
                stored = hashPassword(passwordText)
                self.directory.setPasswordHash(address, stored)
            self.verified.remember(address, passwordText, stored)
            return address
        raise UnauthorizedLogin("wrong user name or password")
