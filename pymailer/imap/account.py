"""
The C{IAccountIMAP} avatar (what a logged-in IMAP user gets from the realm)
and the change notifier that turns store changes into IMAP updates.

Every store call blocks, so the avatar runs them in the shared thread pool
and returns C{Deferred}s; the protocol never touches the disk itself.
"""

from twisted.mail.interfaces import IAccountIMAP
from zope.interface import implementer

from pymailer.threadpool import deferToPool


@implementer(IAccountIMAP)
class IMAPAccount:
    """
    One user's view of the store.  Unlike Twisted's in-memory examples the
    methods here return C{Deferred}s from the thread pool (Twisted's own
    server calls them synchronously, one reason we subclass it).

    @ivar user: the normalised address (the avatar id).
    """

    def __init__(self, user, store, reactor, threadpool, notifier, sharedRefresh=None):
        self.user = user
        self.store = store
        self.reactor = reactor
        self.threadpool = threadpool
        self.notifier = notifier
        self.sharedRefresh = sharedRefresh

    def run(self, function, *args, **kwargs):
        """Run a blocking function in the disk thread pool."""
        return deferToPool(self.reactor, self.threadpool, function, *args, **kwargs)

    def refreshWithOthers(self, selected, callback):
        """
        C{callback(changes, selected)} with C{selected.refresh()} (or a
        L{Failure}), read once for every session of this process asking
        in the same reactor turn (L{pymailer.imap.fanout}): what an IDLE
        session does when its mailbox changes.
        """
        if self.sharedRefresh is None:
            self.run(selected.refresh).addBoth(callback, selected)
        else:
            self.sharedRefresh.refresh(self.user, selected, callback)

    def readWithOthers(self, key, read, need, callback):
        """
        C{callback(read(needs))} (or a L{Failure}), C{read} run once in
        the pool for every caller asking under C{key} in this reactor turn,
        C{needs} their C{need}s (L{pymailer.imap.fanout.SharedRefresh.readTogether}).
        """
        if self.sharedRefresh is None:
            self.run(read, [need]).addBoth(callback)
        else:
            self.sharedRefresh.readTogether(key, read, need, callback)

    # Blocking helpers (called through run()).

    def openMailbox(self, name):
        """Blocking: the store's mailbox (L{KeyError} if there is none)."""
        return self.store.mailbox(self.user, name)

    def subscriptions(self):
        """
        Blocking.  Kept by the store, apart from the mailboxes: RFC 3501
        6.3.6 says they outlive the mailboxes they name.
        """
        return self.store.subscriptions(self.user)

    def setSubscribed(self, name, subscribed):
        """Blocking: (un)subscribe C{name}."""
        if subscribed:
            self.store.subscribe(self.user, name)
        else:
            self.store.unsubscribe(self.user, name)
