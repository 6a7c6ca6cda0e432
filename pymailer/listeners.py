"""
Listeners told of changes (a message committed to the queue, a mailbox
changed in the store), for the spools and stores to inherit.
"""

from twisted.logger import Logger

log = Logger()


class Listeners:
    """
    C{addListener}/C{removeListener}, and C{_tell(*args)} calling each
    listener in the telling thread; one that fails is logged and does not
    keep the others from hearing.
    """

    # A tuple replaced on change: pool threads tell while the reactor adds
    # or removes listeners.
    _listeners = ()

    def addListener(self, listener):
        self._listeners = self._listeners + (listener,)

    def removeListener(self, listener):
        listeners = list(self._listeners)
        listeners.remove(listener)
        self._listeners = tuple(listeners)

    def _tell(self, *args):
        for listener in self._listeners:
            try:
                listener(*args)
            except Exception:
                log.failure("Listener {listener!r} failed: {args!r}", listener=listener, args=args)
