"""
Goodbyes at shutdown: a listener that, once it stops accepting, tells every
client it still has that the server is going away, and waits briefly for
them to close.

Without it, SIGTERM dropped every connection with no word: IMAP clients
saw a reset instead of C{* BYE} (RFC 3501 §7.1.5), SMTP clients no C{421}
(RFC 5321 §3.8), POP3 clients no C{-ERR}, and could not tell a shutdown
from a network fault.

Each protocol factory keeps a L{Connections}; its protocols (providers of
L{pymailer.interfaces.IGoodbye}) join it when made and leave it when lost.
"""

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.logger import Logger

# How long a listener waits for its clients to close after the goodbye;
# then what is left is cut.  Short: twistd waits for every listener.
GOODBYE_TIMEOUT = 3.0


class Connections:
    """
    The open connections of one listener.

    @ivar accepted: how many have opened in all (the connections counter
        of L{pymailer.metrics}).
    """

    log = Logger()

    def __init__(self, reactor):
        self.reactor = reactor
        self.open = set()
        self.accepted = 0
        self._waiting = []

    def opened(self, protocol):
        self.open.add(protocol)
        self.accepted += 1

    def closed(self, protocol):
        self.open.discard(protocol)
        if not self.open:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def sayGoodbye(self, timeout=GOODBYE_TIMEOUT):
        """
        Say goodbye to every open connection.

        @return: a Deferred that fires once all of them have closed, or
            after C{timeout} seconds, when those left are aborted.
        """
        for protocol in list(self.open):
            try:
                protocol.sayGoodbye()
            except Exception:
                self.log.failure("saying goodbye to {protocol}", protocol=protocol)
                protocol.transport.abortConnection()
        if not self.open:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiting.append(d)

        def late():
            self.log.warn("{n} connection(s) still open {t} s after the goodbye: cut",
                          n=len(self.open), t=timeout)
            for protocol in list(self.open):
                protocol.transport.abortConnection()
            if d in self._waiting:
                self._waiting.remove(d)
                d.callback(None)

        call = self.reactor.callLater(timeout, late)
        return d.addBoth(lambda _: call.cancel() if call.active() else None)


class GoodbyeListener(StreamServerEndpointService):
    """
    A listener that, when stopped, stops accepting, then says goodbye to
    the connections in C{connections}.
    """

    def __init__(self, endpoint, factory, connections):
        StreamServerEndpointService.__init__(self, endpoint, factory)
        self.connections = connections

    def stopService(self):
        d = defer.maybeDeferred(StreamServerEndpointService.stopService, self)
        return d.addCallback(lambda _: self.connections.sayGoodbye())
