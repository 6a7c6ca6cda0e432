"""
An L{IMailStore} around another that tells an L{IMailboxObserver} of what
users do to messages (copies, moves, flag changes).

The learning spam filter needs "moved into Junk" with the message; change
events (L{IMailStore.addListener}) only say which mailbox changed.  Rather
than have each backend call spam code, the composition root wraps
whichever store it opened: every backend gets it, none imports policy.
Everything else passes through untouched (and the wrapper provides the
wrapped store's interfaces, L{IExternalChanges} included).
"""

from twisted.logger import Logger
from zope.interface import directlyProvides, providedBy

from pymailer.store import INBOX

log = Logger()


def _inner(mailbox):
    return mailbox._mailbox if isinstance(mailbox, ObservedMailbox) else mailbox


class ObservedStore:
    def __init__(self, store, observer):
        self._store = store
        self._observer = observer
        directlyProvides(self, providedBy(store))

    def __getattr__(self, name):
        return getattr(self._store, name)

    def mailbox(self, user, name=INBOX):
        return ObservedMailbox(self._store.mailbox(user, name), user, self._observer)


class ObservedMailbox:
    def __init__(self, mailbox, user, observer):
        self._mailbox = mailbox
        self._user = user
        self._observer = observer
        directlyProvides(self, providedBy(mailbox))

    def __getattr__(self, name):
        return getattr(self._mailbox, name)

    def copy(self, uids, target):
        return self._transfer(self._mailbox.copy, uids, target, False)

    def move(self, uids, target):
        return self._transfer(self._mailbox.move, uids, target, True)

    def _transfer(self, operation, uids, target, move):
        target = _inner(target)
        pairs = operation(uids, target)
        self._tell("transferred", self._user, self._mailbox.name, target, pairs, move)
        return pairs

    def storeFlags(self, uids, mode, flags, unchangedSince=None):
        result = self._mailbox.storeFlags(uids, mode, flags, unchangedSince)
        self._flagged(result, mode, flags)
        return result

    def storeFlagsWithChanges(self, uids, mode, flags, unchangedSince=None, since=0,
                              claimRecent=False):
        result = self._mailbox.storeFlagsWithChanges(uids, mode, flags, unchangedSince,
                                                     since, claimRecent)
        self._flagged(result[0], mode, flags)
        return result

    def _flagged(self, stored, mode, flags):
        self._tell("flagged", self._user, self._mailbox, sorted(stored[0]), mode,
                   frozenset(flags))

    def _tell(self, method, *args):
        # What the user did is done: an observer's failure must not turn
        # it into an error the client sees.
        try:
            getattr(self._observer, method)(*args)
        except Exception:
            log.failure("mailbox observer {method} failed", method=method)
