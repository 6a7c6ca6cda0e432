"""
Connection limits for a listener: at most so many open connections from one
client IP and so many in all (Postfix's smtpd_client_connection_count_limit
and process limit; Dovecot's mail_max_userip_connections and
client_limit).  A connection over a limit is told why in the protocol's
own words and closed before any session starts.

One L{LimitedFactory} subclass per protocol (SMTP, IMAP, POP3): it says how
a refusal is worded (L{LimitedFactory.refusal}) and builds the session
(L{LimitedFactory.buildSession}); the session calls
L{LimitedFactory.connectionClosed} with its peer's host from
C{connectionLost}.

Across processes: with several workers, or several nodes on one
PostgreSQL, a client's connections land on any of them, and a count kept
per process would allow N times C{max_connections_per_ip}.  Then the
listener's factory also has a L{SharedConnections} (the composition root
gives it one when the limit store is shared): once the cheap count of this
process admits a connection, the shared store is asked in the thread pool
whether every process together has room for it, and the connection waits
(L{Admission}: its input paused, nothing said) until the answer.  The
total C{max_connections} is shared the same way, as the count of the
address L{ALL} (one store transaction for both, in one thread hand-off):
with N workers a user's limit of 100 means 100, not N x 100.  If the
shared store cannot be reached, this process's count alone decides (a
database outage must not refuse every client).

Trust: the peer address is the transport's (never anything the client
says); limits count per listener (its role, across processes).
"""

from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger

from pymailer.threadpool import deferToPool

log = Logger()

# A closed connection's slot in the shared store is held this long (seconds)
# for this process's next connection from the same address (L{SharedConnections.release}),
# while the address holds fewer than its limit // HOLD_SHARE slots here.
HOLD = 0.1
HOLD_SHARE = 4

# The "address" under which the shared store counts every connection of a
# listener, for its C{max_connections}: not an address a peer can have.
ALL = "*"
# L{SharedConnections.admit}'s answer when the listener's total is reached.
FULL = "full"


def hostOf(addr):
    """The peer's host, or the address as text when it has none (a UNIX socket)."""
    host = getattr(addr, "host", None)
    # Not getattr's default: that would format every address to text.
    return str(addr) if host is None else host


class Refusal(Protocol):
    """Writes one line saying why the connection is refused, and closes."""

    def __init__(self, line):
        self.line = line

    def connectionMade(self):
        self.transport.write(self.line + b"\r\n")
        self.transport.loseConnection()


TOO_MANY = "Too many connections, try again later"
TOO_MANY_FROM_YOU = "Too many connections from your address, try again later"


class LimitedFactory(ServerFactory):
    """
    @ivar limits: anything with C{max_connections} and
        C{max_connections_per_ip} (L{pymailer.config.SMTPConfig},
        L{pymailer.config.ConnectionLimits}).
    @ivar connections: C{{host: open connections}}.
    @ivar total: open connections in all.

    A subclass defines C{refusal(reason)}, the C{bytes} line (no CRLF)
    refusing with the text C{reason}, and C{buildSession(addr)}, the
    protocol for an admitted connection.
    """

    # The counts shared with other processes (L{shareCounts}), or None.
    shared = None
    scope = None

    def __init__(self, limits):
        self.limits = limits
        self.connections = {}
        self.total = 0

    def shareCounts(self, shared, scope):
        """
        Count connections per address across processes too, in the
        L{SharedConnections} C{shared}, as the listener C{scope} (its role).
        """
        self.shared, self.scope = shared, scope

    def buildProtocol(self, addr):
        host = hostOf(addr)
        if self.total >= self.limits.max_connections:
            return Refusal(self.refusal(TOO_MANY))
        if self.connections.get(host, 0) >= self.limits.max_connections_per_ip:
            return Refusal(self.refusal(TOO_MANY_FROM_YOU))
        self.total += 1
        self.connections[host] = self.connections.get(host, 0) + 1
        if self.shared is not None:
            return Admission(self, addr, host)
        return self.buildSession(addr)

    def connectionClosed(self, host):
        """An admitted connection from C{host} has gone: free its slot."""
        self.total -= 1
        left = self.connections.get(host, 1) - 1
        if left:
            self.connections[host] = left
        else:
            self.connections.pop(host, None)


class Admission(Protocol):
    """
    A connection this process's count admitted, waiting for the shared
    count (L{SharedConnections.admit}): its input is paused and kept;
    then it becomes the factory's session (which gets the transport, and
    the input so far), or is refused in the protocol's words.  Once a
    session, everything the transport says is passed on to it; when it
    ends, its shared count goes (the session frees this process's).
    """

    session = None
    lost = False
    counted = False  # in the shared store (not when the store failed)

    def __init__(self, factory, addr, host):
        self.factory, self.addr, self.host = factory, addr, host
        self._early = []

    def connectionMade(self):
        factory = self.factory
        limits = factory.limits
        answer = factory.shared.admit(factory.scope, self.host, limits.max_connections_per_ip,
                                      limits.max_connections)
        if answer is True:
            # A slot this process held: the session starts now.
            self._answered(True)
            return
        self.transport.pauseProducing()
        self._paused = True
        answer.addCallback(self._answered)

    _paused = False

    def _answered(self, counted):
        factory = self.factory
        self.counted = counted is True
        if self.lost:  # gone while we asked: free what it took
            factory.connectionClosed(self.host)
            self._uncount()
            return
        if counted is False or counted == FULL:
            factory.connectionClosed(self.host)
            self.lost = True  # nothing more to free when it goes
            reason = TOO_MANY if counted == FULL else TOO_MANY_FROM_YOU
            self.transport.write(factory.refusal(reason) + b"\r\n")
            self.transport.loseConnection()
            return
        # Resumed first: a session may pause the transport itself (an SMTP
        # greeting waits on the policy check).
        if self._paused:
            self.transport.resumeProducing()
        self.session = factory.buildSession(self.addr)
        # Every read from now on goes straight to the session: the
        # transport's call finds the session's method on this instance,
        # not a forwarding call of ours (one Python call per read fewer).
        self.dataReceived = self.session.dataReceived
        self.session.makeConnection(self.transport)
        early, self._early = b"".join(self._early), None
        if early:
            self.session.dataReceived(early)

    def dataReceived(self, data):
        """Input before the answer (the session's own method after it)."""
        if self._early is not None:
            self._early.append(data)

    def connectionLost(self, reason):
        if self.session is not None:
            self.session.connectionLost(reason)
            self._uncount()
        elif not self.lost:
            self.lost = True  # freed once the answer comes

    def _uncount(self):
        if self.counted:
            self.counted = False
            self.factory.shared.release(self.factory.scope, self.host)


class SharedConnections(Service):
    """
    This process's side of the connection counts it shares with other
    workers and nodes through an L{pymailer.interfaces.ILimitStore} (one
    that blocks: asked in C{threadpool}).  Running, it renews the store's
    lease on this process's counts every third of it; stopping, it takes
    them away.
    """

    def __init__(self, store, reactor, threadpool):
        self.store, self.reactor, self.threadpool = store, reactor, threadpool
        self._renewer = task.LoopingCall(self._keepAlive)
        self._renewer.clock = reactor
        # (scope, host) -> when each slot held (L{release}) was given back, oldest first
        self._held = {}
        self._limitOf = {}  # scope -> its per-address limit, as last asked
        self._flush = None  # the call giving back held slots

    def _inThread(self, f, *args):
        return deferToPool(self.reactor, self.threadpool, f, *args)

    def _keepAlive(self):
        # A failure is logged; the next round tries again.
        self._inThread(self.store.keepAlive).addErrback(
            lambda f: log.failure("renewing the shared connection counts", f))

    def startService(self):
        Service.startService(self)
        self._renewer.start(self.store.lease / 3, now=True)

    def stopService(self):
        Service.stopService(self)
        if self._renewer.running:
            self._renewer.stop()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._held = {}  # leave() takes every count of this process away
        return self._inThread(self.store.leave).addErrback(
            lambda f: log.failure("removing the shared connection counts", f))

    def admit(self, scope, host, limit, total=None):
        """
        Count a connection from C{host} on the listener C{scope}, at most
        C{limit} from one address and C{total} in all (L{ALL}), over every
        process.

        @return: C{True} at once when this process holds the slots
            (L{release}): they are still counted in the store, which is
            not asked.  Otherwise a C{Deferred} firing with C{True}
            (counted), C{False} (C{limit} open already from C{host}),
            L{FULL} (C{total} open already), or C{None} (the store
            failed: not counted, admit on this process's count).
        """
        self._limitOf[scope] = (limit, total)
        wanted = [(ALL, total)] if total is not None else []
        wanted.append((host, limit))
        taken, ask = [], []
        for key, most in wanted:
            (taken if self._takeHeld((scope, key)) else ask).append((key, most))
        if not ask:
            return True

        def answered(result):
            if result is not True:  # refused, or failed: the held slots go back
                for key, _ in taken:
                    self._releaseKey(scope, key)
            return result

        def failed(f):
            log.failure("counting a connection in the shared store", f)
            return None
        return self._inThread(self._open, scope, ask).addErrback(failed).addCallback(answered)

    def _takeHeld(self, key):
        since = self._held.get(key)
        if not since:
            return False
        # The slot held last: the others keep ageing, and go back to the
        # store once unused for HOLD (L{_releaseHeld}).
        since.pop()
        if not since:
            del self._held[key]
        return True

    def _open(self, scope, wanted):
        """
        Blocking: count C{wanted} (C{[(host, limit)]}) in the store, all
        or none.  @return: as L{admit}.
        """
        opened = []
        try:
            for key, most in wanted:
                if not self.store.openConnection(scope, key, most):
                    for done in opened:
                        self.store.closeConnection(scope, done)
                    return FULL if key == ALL else False
                opened.append(key)
        except Exception:
            for done in opened:
                try:
                    self.store.closeConnection(scope, done)
                except Exception:
                    pass
            raise
        return True

    def release(self, scope, host):
        """
        A counted connection has ended (nobody waits for the store): its
        address's slot and its slot in the listener's total go.

        While an address uses little of its limit here, its slot is held,
        still counted in the store, for this process's next connection
        from that address, and given back once unused for L{HOLD} seconds:
        a client that connects once per message (smtp-source, a busy
        relay) then costs no store transaction and no thread hand-off per
        connection, for as long as it keeps connecting.  The count in the
        store never falls below the connections open, so the limit holds
        exactly; only another process's client near the limit may be
        refused for a held slot, up to L{HOLD} seconds after this
        process's client last used it.
        """
        if self._limitOf.get(scope, (0, None))[1] is not None:
            self._releaseKey(scope, ALL)
        self._releaseKey(scope, host)

    def _releaseKey(self, scope, host):
        key = (scope, host)
        since = self._held.get(key)
        limit, total = self._limitOf.get(scope, (0, None))
        most = total if host == ALL else limit
        if self.running and len(since or ()) < (most or 0) // HOLD_SHARE:
            if since is None:
                since = self._held[key] = []
            since.append(self.reactor.seconds())
            if self._flush is None:
                self._flush = self.reactor.callLater(HOLD, self._releaseHeld)
            return
        self._inThread(self.store.closeConnection, scope, host).addErrback(
            lambda f: log.failure("uncounting a connection in the shared store", f))

    def _releaseHeld(self):
        """
        Give back every slot unused for L{HOLD} seconds, in one thread
        hand-off; look again when the next one will be.
        """
        self._flush = None
        now = self.reactor.seconds()
        # A hair early rather than a second call for a rounding error.
        cutoff = now - HOLD + 1e-6
        expired, nextAt = {}, None
        for key, since in list(self._held.items()):
            # Oldest first: slots are added as they are given back and
            # taken from the end (L{_takeHeld}).
            n = 0
            while n < len(since) and since[n] <= cutoff:
                n += 1
            if n:
                expired[key] = n
                del since[:n]
            if since:
                nextAt = since[0] if nextAt is None else min(nextAt, since[0])
            else:
                del self._held[key]
        if expired:
            self._inThread(self._closeAll, expired).addErrback(
                lambda f: log.failure("uncounting connections in the shared store", f))
        if nextAt is not None:
            self._flush = self.reactor.callLater(max(0.0, nextAt + HOLD - now),
                                                 self._releaseHeld)

    def _closeAll(self, held):
        for (scope, host), count in held.items():
            for _ in range(count):
                self.store.closeConnection(scope, host)
