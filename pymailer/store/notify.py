"""
Mailbox change notification for sessions in this process (IMAP IDLE, and
any protocol that wants it): the store calls its listeners in whichever
thread made the change; this hops to the reactor and calls the sessions
subscribed to that mailbox.  It knows nothing of any protocol.
"""

from twisted.logger import Logger
from zope.interface import implementer

from pymailer.interfaces import IChangeNotifier

log = Logger()


@implementer(IChangeNotifier)
class ChangeNotifier:
    """
    Listens to the store (called in whichever thread made the change) and
    calls the subscribed sessions' callbacks on the reactor thread.
    """

    def __init__(self, store, reactor):
        self.reactor = reactor
        self._subscribers = {}
        store.addListener(self._changed)

    def _changed(self, user, mailboxName):
        self.reactor.callFromThread(self._dispatch, user, mailboxName)

    def _dispatch(self, user, mailboxName):
        for callback in list(self._subscribers.get((user, mailboxName), ())):
            try:
                callback()
            except Exception:
                log.failure("mailbox change callback failed")

    def subscribe(self, user, mailboxName, callback):
        self._subscribers.setdefault((user, mailboxName), []).append(callback)

    def unsubscribe(self, user, mailboxName, callback):
        callbacks = self._subscribers.get((user, mailboxName), [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            self._subscribers.pop((user, mailboxName), None)
