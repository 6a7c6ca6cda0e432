"""
The C{IAccountIMAP} avatar (what a logged-in IMAP user gets from the realm)
and the change notifier that turns store changes into IMAP updates.

Every store call blocks, so the avatar runs them in the shared thread pool
and returns C{Deferred}s; the protocol never touches the disk itself.
"""

import json
import os

from twisted.internet.threads import deferToThreadPool
from twisted.mail.interfaces import IAccountIMAP
from zope.interface import implementer

from pymailer.fsutil import exclusiveLock, fsyncDirectory, writeDurably



@implementer(IAccountIMAP)
class IMAPAccount:
    """
    One user's view of the store.  Unlike Twisted's in-memory examples the
    methods here return C{Deferred}s from the thread pool (Twisted's own
    server calls them synchronously, one reason we subclass it).

    @ivar user: the normalised address (the avatar id).
    """

    def __init__(self, user, store, reactor, threadpool, notifier, dataDir):
        self.user = user
        self.store = store
        self.reactor = reactor
        self.threadpool = threadpool
        self.notifier = notifier
        self._subscriptionsPath = os.path.join(
            dataDir, "imap-subscriptions", user.encode("utf-8").hex() + ".json")

    def run(self, function, *args, **kwargs):
        """Run a blocking function in the disk thread pool."""
        return deferToThreadPool(self.reactor, self.threadpool, function, *args, **kwargs)

    # Blocking helpers (called through run()).

    def openMailbox(self, name):
        """Blocking: the store's mailbox (L{KeyError} if there is none)."""
        return self.store.mailbox(self.user, name)

    def subscriptions(self):
        """
        Blocking.  Subscriptions are kept apart from the store: RFC 3501
        6.3.6 says they outlive the mailboxes they name.
        """
        try:
            with open(self._subscriptionsPath, encoding="utf-8") as f:
                return set(json.load(f))
        except (FileNotFoundError, ValueError):
            return set()

    def setSubscribed(self, name, subscribed):
        directory = os.path.dirname(self._subscriptionsPath)
        os.makedirs(directory, 0o700, exist_ok=True)
        # Two sessions of one user (in two pool threads, or two processes)
        # must not lose each other's change: read-modify-write under a lock.
        with exclusiveLock(self._subscriptionsPath + ".lock"):
            names = self.subscriptions()
            if subscribed:
                names.add(name)
            else:
                names.discard(name)
            writeDurably(self._subscriptionsPath,
                         json.dumps(sorted(names)).encode("utf-8"))
            fsyncDirectory(directory)
