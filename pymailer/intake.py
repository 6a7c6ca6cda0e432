"""
The intake: where an SMTP session's transactions go.

One message's path starts here: the SMTP server asks the intake about the
sender and each recipient (routing and policy), streams the data into the
spool, and commits it; the queue runner takes it from there.  The intake
knows nothing of the SMTP wire format, and the SMTP server nothing of disks.

A message for local mailboxes only, still held in memory at its commit, is
delivered into them there and then, as mox does, instead of being spooled
and delivered from the queue afterwards: one durable write (the store's)
instead of two, in the same hand-off to the disk threads.  Its recipients
are recorded as delivered in the envelope the commit returns; any whose
mailbox could not take it are queued as before, with no spool file for a
message delivered to all.
"""

import dataclasses
import io
import time

from twisted.internet import defer
from zope.interface import implementer

from pymailer.delivery.router import Local, Reject, Relay
from pymailer.envelope import DELIVERED
from pymailer.events import PROMETHEUS_ONLY
from pymailer.interfaces import IIncomingMessage, IMessageIntake
from pymailer.smtp.reply import SMTPReply
from pymailer.threadpool import deferToPool

# RFC 3463 3.3: X.2.2 "Mailbox full"; 4.x.x so the sender's server keeps
# the message and retries (RFC 5321 4.2.3: 452, insufficient system storage).
MAILBOX_FULL = SMTPReply(452, "4.2.2", "Mailbox full, try again later")


# Message bytes held in memory before a write to the spool: a message under
# this goes to disk in one thread hop with its commit.
HOLD_IN_MEMORY = 256 * 1024


@implementer(IIncomingMessage)
class IncomingMessage:
    """
    One message being received.  Its data is held in memory up to
    L{HOLD_IN_MEMORY} octets and written with the commit, so that a small
    message costs one hand-off to the disk threads (write, fsyncs, envelope)
    instead of one per chunk; a larger one is written in batches as it comes.
    """

    def __init__(self, writer, intake, routes=None):
        """
        @param routes: C{{address: route}} of the recipients routed at RCPT
            time (reused at the commit rather than looked up again).
        """
        self._writer = writer
        self._intake = intake
        self._routes = routes or {}
        self.queueId = writer.queueId
        self._held = []
        self._heldSize = 0
        # Some data went to the spool: the message is no longer all here.
        self._spilled = False

    def write(self, data):
        if data:
            self._held.append(data)
            self._heldSize += len(data)
        if self._heldSize < HOLD_IN_MEMORY:
            return defer.succeed(None)
        self._spilled = True
        return self._intake._inThread(self._writer.write, self._takeHeld())

    def _takeHeld(self):
        data = b"".join(self._held)
        self._held = []
        self._heldSize = 0
        return data

    def commit(self, envelope):
        """
        @return: a Deferred firing with the envelope as recorded: the
            recipients delivered at once are L{DELIVERED} in it.
        """
        intake = self._intake
        data = self._takeHeld()
        if self._spilled or not intake.mayDeliverAtOnce(envelope):
            d = intake._inThread(self._writeAndCommit, data, envelope)
            return d.addCallback(lambda _: envelope)
        d = intake._inThread(self._deliverOrQueue, data, envelope)
        return d.addCallback(intake._recordDelivered)

    def _writeAndCommit(self, data, envelope):
        """Blocking: the rest of the data, then the durable commit."""
        if data:
            self._writer.write(data)
        self._writer.commit(envelope)

    def _deliverOrQueue(self, data, envelope):
        """
        Blocking: deliver C{data} (the whole message) into the mailboxes of
        recipients that are all local, and queue those that could not take
        it (or all of them, if one is not a local mailbox).

        @return: the envelope, its recipients delivered marked so.
        """
        intake = self._intake
        routes = [self._routes.get(r.address) or intake.router.route(r.address)
                  for r in envelope.recipients]
        if not all(isinstance(route, Local) and route.users and not route.forwards
                   for route in routes):
            # Another domain (even through an alias), or no longer
            # deliverable: the queue's agents route, relay and bounce.
            self._writeAndCommit(data, envelope)
            return envelope
        results = intake.localAgent.deliverAtOnce(envelope, envelope.recipients, data, routes)
        envelope = envelope.withRecipients(
            dataclasses.replace(r, state=DELIVERED, attempts=1,
                                lastError=results[r.index].describe())
            if results[r.index].ok else
            dataclasses.replace(r, lastError=results[r.index].describe())
            for r in envelope.recipients)
        if envelope.pending():
            # Queued with the others marked delivered: the runner takes
            # the pending ones only (and reports on them as today).
            self._writeAndCommit(data, envelope)
        else:
            # A file only if policy read the data before the commit.
            self._writer.abort()
        return envelope

    def abort(self):
        self._takeHeld()
        return self._intake._inThread(self._writer.abort)

    def openData(self):
        # Blocking, in a pool thread: policy reads the message before its
        # commit, while the session waits (nothing is written meanwhile).
        if not self._spilled:
            # All here: read from memory, and it stays there (a message
            # delivered at once needs no spool file at all).
            data = b"".join(self._held)
            self._held = [data] if data else []
            return io.BytesIO(data)
        data = self._takeHeld()
        if data:
            self._writer.write(data)
        return self._writer.openData()


class FreeSpace:
    """
    The spool's free space, measured in a pool thread at most once per
    L{MAX_AGE} seconds and shared by every session: each MAIL asks, and
    under load most get the answer without a hand-off to the disk threads.
    A figure a second old is close enough: the room kept free
    (C{min_free_disk_factor} times the size limit) is there for the
    messages accepted meanwhile.
    """

    MAX_AGE = 1.0

    def __init__(self, spool, now=time.monotonic):
        self.spool = spool
        self.now = now
        self._measuredAt = None
        self._free = None

    def recent(self):
        """@return: C{(True, free)} when a recent figure is known, else C{(False, None)}."""
        at = self._measuredAt
        if at is not None and self.now() - at < self.MAX_AGE:
            return True, self._free
        return False, None

    def measure(self):
        """Blocking: ask the spool (C{None}: it cannot tell)."""
        free = self.spool.freeSpace()
        self._free, self._measuredAt = free, self.now()
        return free


class RouteCache:
    """
    The routes of recent recipients, shared by every session of one
    worker, kept only while the accounts directory is unchanged: most
    RCPTs are then answered on the reactor thread, without a hand-off to
    the disk threads and the directory queries there (issue 14).

    Before each use it asks the directory's L{version
    <pymailer.interfaces.IAccountDirectory.version>} (SQLite's
    C{data_version}: a few microseconds, no disk I/O); any change, by any
    process, empties it.  So a user, alias or domain removed with the
    admin command is refused by the very next RCPT after the command
    returns, in every worker, as without a cache.  A directory that
    cannot tell (C{None}) keeps nothing.

    A route's quota is not the directory's alone (the usage grows with
    each message): a route to a mailbox with a limit is not kept, and
    is looked up (and its usage measured) each time.
    """

    # Bounded memory: at most this many addresses; when full, it starts over.
    MAX_ENTRIES = 10000

    def __init__(self, version):
        """@param version: the directory's C{version} (a callable)."""
        self._version = version
        self._seen = None  # the version the routes kept were found under
        self._routes = {}  # recipient as given -> route

    def current(self):
        """
        The directory's version now, the routes kept dropped if it changed
        since they were found.  Called on the reactor thread; C{None}: the
        directory cannot tell, keep nothing.
        """
        version = self._version()
        if version is None or version != self._seen:
            self._routes.clear()
            self._seen = version
        return version

    def lookup(self, recipient):
        """
        @return: C{(route, version)}: the route kept for C{recipient} or
            C{None}, and the directory's version now (L{current}), to
            L{put} what a look-up started now finds.
        """
        version = self.current()
        return self._routes.get(recipient), version

    def put(self, recipient, route, version):
        """
        Keep C{route}, found by a look-up started after L{current} answered
        C{version}: if the directory changed since, the next L{current}
        drops it (a route found during a change may be the old one).
        """
        if version is None or version != self._seen:
            return
        if len(self._routes) >= self.MAX_ENTRIES:
            self._routes.clear()
        self._routes[recipient] = route


@implementer(IMessageIntake)
class MessageIntake:
    """
    @ivar user: the authenticated user, or C{None} (port 25).  A user may
        send to other domains, but only as an address of theirs.
    @ivar relayAvailable: is there an agent that delivers to other domains.
    @ivar quotas: the L{pymailer.quota.Quotas} that refuse mail for a full
        mailbox at RCPT time, or C{None} (no quotas).
    @ivar freeSpace: the L{FreeSpace} of C{spool}, shared by the intakes of
        one server (one of its own when not given).
    @ivar routeCache: the L{RouteCache} shared by the intakes of one
        worker, or C{None}: every RCPT is looked up in the directory.
    @ivar localAgent: the L{pymailer.delivery.local.LocalDeliveryAgent}
        that delivers a message for local mailboxes at its commit, or
        C{None}: every message is queued.
    @ivar events: records those deliveries (metrics, monitoring), as the
        queue runner records its own.
    """

    def __init__(self, router, spool, reactor, threadpool,
                 minFreeSpace=0, user=None, relayAvailable=False, quotas=None,
                 freeSpace=None, localAgent=None, events=None, routeCache=None):
        self.router = router
        self.spool = spool
        self.freeSpace = freeSpace if freeSpace is not None else FreeSpace(spool)
        self.routeCache = routeCache
        self.reactor = reactor
        self.threadpool = threadpool
        self.minFreeSpace = minFreeSpace
        self.user = user
        self.relayAvailable = relayAvailable
        self.quotas = quotas
        self.localAgent = localAgent
        self.events = events if events is not None else PROMETHEUS_ONLY
        # The routes of this transaction's recipients, found at RCPT.
        self._routes = {}

    def _inThread(self, f, *args):
        # The results of concurrent sessions' commits share a wake-up of
        # the reactor (L{deferToPool}).
        return deferToPool(self.reactor, self.threadpool, f, *args)

    def checkCapacity(self, size):
        """
        Room for a message of (declared) C{size}: free spool space must stay
        above C{minFreeSpace} (the configured factor times the size limit),
        and above the message itself.
        """
        def judge(free):
            # A backend that cannot tell (a database) admits by size alone.
            if free is not None and free < max(self.minFreeSpace, size):
                raise SMTPReply(452, "4.3.1", "Insufficient system storage")

        known, free = self.freeSpace.recent()
        if known:
            return defer.maybeDeferred(judge, free)
        return self._inThread(self.freeSpace.measure).addCallback(judge)

    def validateSender(self, session, sender, params):
        self._routes = {}  # a new transaction
        if self.user is None:
            return defer.succeed(None)
        d = self._inThread(self.router.owns, self.user, sender)

        def judge(owned):
            if not owned:
                # RFC 6409 §4.1 lets us refuse a sender the user does not own.
                raise SMTPReply(
                    553, "5.7.1",
                    f"Sender address <{sender}> rejected: not owned by {self.user}",
                )

        return d.addCallback(judge)

    def validateRecipient(self, session, sender, recipient, size=0):
        version = None
        if self.routeCache is not None:
            # The version before the look-up: what it finds holds from here.
            route, version = self.routeCache.lookup(recipient)
            if route is not None:
                try:
                    self._remember(self._judgeRoute(route), recipient)
                except SMTPReply:
                    return defer.fail()
                return defer.succeed(None)
        d = self._inThread(self._route, recipient, size)
        d.addCallback(self._found, recipient, version)
        d.addCallback(self._judgeRoute)
        return d.addCallback(self._remember, recipient)

    def _found(self, found, recipient, version):
        """Keep a route that no quota depends on (L{RouteCache})."""
        route, quotaFree = found
        if quotaFree and self.routeCache is not None:
            self.routeCache.put(recipient, route, version)
        return route

    def _remember(self, route, recipient):
        if isinstance(route, Local):
            self._routes[recipient] = route

    def _route(self, recipient, size):
        """
        Blocking: the route, with quotas applied to a local one, and
        whether no quota applied (it may be kept in the L{RouteCache}).
        """
        route = self.router.route(recipient)
        quotaFree = True
        if isinstance(route, Local) and self.quotas is not None and route.users \
                and not route.forwards:
            room, limited = self.quotas.roomAmong(route.users, size)
            if not room:
                # Refused only when the mail would land nowhere with room:
                # an alias reaching one full mailbox among others is
                # delivered to all (pymailer.quota says why an overrun
                # beats a bounce).
                raise MAILBOX_FULL
            quotaFree = not limited
        return route, quotaFree

    def _judgeRoute(self, route):
        if isinstance(route, Reject):
            raise SMTPReply(route.code, route.enhanced, route.text)
        if isinstance(route, Relay):
            if self.user is None:
                raise SMTPReply(554, "5.7.1", f"<{route.address}>: Relay access denied")
            if not self.relayAvailable:
                raise SMTPReply(
                    451, "4.4.0",
                    f"<{route.address}>: delivery to other domains is not "
                    "available on this server yet, try again later",
                )
        assert isinstance(route, (Local, Relay))
        return route

    def openMessage(self):
        routes, self._routes = self._routes, {}
        return IncomingMessage(self.spool.newMessage(), self, routes)

    def mayDeliverAtOnce(self, envelope):
        """
        Whether a message with C{envelope} may be delivered at its commit,
        if its recipients are local mailboxes: not when a recipient asked
        for a success notice (RFC 3461 §4.1 NOTIFY=SUCCESS: the queue's
        reporter owes one then, so it goes that way).
        """
        return self.localAgent is not None and not any(
            r.notify and "SUCCESS" in r.notify for r in envelope.recipients)

    def _recordDelivered(self, envelope):
        """On the reactor thread: count the deliveries made at the commit."""
        for r in envelope.recipients:
            if r.state == DELIVERED:
                self.events.recipientOutcome("delivered", envelope, r, r.lastError)
        return envelope
