"""
Outgoing SMTP sessions kept open between deliveries, as Postfix's
connection cache (scache) does.

After a transaction the relay agent gives the session back: it sends RSET
(RFC 5321 §4.1.1.5: the server is back in its initial state, and the reply
shows the connection still works) and keeps it idle for a few seconds; the
next delivery to the same destination takes it instead of connecting, so a
burst of mail to one MX costs one connection and one TLS handshake per
parallel delivery, not per message.  A destination is the MX host, its
address and port, and the TLS and AUTH parameters the session was made
with: a session is never reused for anything it was not opened for.

Bounded: idle sessions per destination and in all, seconds idle, and
messages per session (then QUIT and a fresh connection).  Stopping the
service sends QUIT on every idle session.

Trusts nothing of the remote server: a session it closed while idle is
simply dropped (L{SMTPClientProtocol.connected}).
"""

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger


class ConnectionCache(Service):
    """
    @ivar idleTimeout: seconds an idle session is kept (Postfix's
        smtp_connection_cache_time_limit is 2 s).
    @ivar maxMessages: transactions per session before it is closed.
    @ivar maxIdlePerDestination: idle sessions kept for one destination
        (Postfix delivers to one destination over at most 20 at once).
    @ivar maxIdle: idle sessions kept in all (C{[relay] max_connections}:
        as many as may be busy, so a burst finds one for each delivery).
    """

    log = Logger()
    idleTimeout = 5.0
    maxMessages = 100
    maxIdlePerDestination = 20
    # QUIT on shutdown waits this long for the replies.
    closeTimeout = 2.0

    def __init__(self, reactor, maxIdle):
        self.reactor = reactor
        self.maxIdle = maxIdle
        self._idle = {}  # destination -> [(client, expiry call)], newest last
        self._count = 0
        # Counters for logs and benchmarks.
        self.reused = 0
        self.kept = 0

    def take(self, destination):
        """
        @return: an idle, still connected session to C{destination}, now
            the caller's, or C{None}.
        """
        idle = self._idle.get(destination, [])
        while idle:
            client, expiry = idle.pop()
            self._count -= 1
            if expiry.active():
                expiry.cancel()
            if client.connected:
                if not idle:
                    del self._idle[destination]
                self.reused += 1
                return client
        self._idle.pop(destination, None)
        return None

    @defer.inlineCallbacks
    def give(self, destination, client):
        """
        The caller is done with C{client}: keep it for the next delivery
        if it can take more, else QUIT.  Fires once that is settled.
        """
        if not self._canKeep(destination, client):
            yield client.quit()
            return
        try:
            reply = yield client.command("RSET")
        except Exception:
            # Lost or timed out: nothing to keep (connectionLost cleaned up).
            client.transport.abortConnection()
            return
        if reply.code != 250 or not self._canKeep(destination, client):
            yield client.quit()
            return
        expiry = self.reactor.callLater(self.idleTimeout, self._expire, destination, client)
        self._idle.setdefault(destination, []).append((client, expiry))
        self._count += 1
        self.kept += 1

    def _canKeep(self, destination, client):
        return (self.running and client.connected
                and client.transactions < self.maxMessages
                and self._count < self.maxIdle
                and len(self._idle.get(destination, ())) < self.maxIdlePerDestination)

    def _expire(self, destination, client):
        idle = self._idle.get(destination, [])
        for i, (c, _) in enumerate(idle):
            if c is client:
                del idle[i]
                self._count -= 1
                break
        if not idle:
            self._idle.pop(destination, None)
        client.quit()

    def stopService(self):
        """QUIT every idle session; fires when they answered (or soon after)."""
        Service.stopService(self)
        quits = []
        for idle in self._idle.values():
            for client, expiry in idle:
                if expiry.active():
                    expiry.cancel()
                quits.append(client.quit())
        self._idle.clear()
        self._count = 0
        d = defer.DeferredList(quits)
        d.addTimeout(self.closeTimeout, self.reactor)
        d.addErrback(lambda f: f.trap(defer.CancelledError))
        return d
