"""
The one composition root: builds every part of pymailer from a
L{pymailer.config.Config} and wires them into one C{MultiService}.

Reading this function top to bottom is reading one message's path:
listener -> SMTP -> intake (router, spool) -> queue runner -> local delivery
-> store.
"""

import gc
import os
import signal
import sys
from dataclasses import dataclass

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.mail.interfaces import IMailboxPOP3
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.threadpool import ThreadPool

from pymailer.auth.checkers import MAX_CONCURRENT_CHECKS, PasswordChecker
from pymailer.config import POSTGRESQL, usesOwnCertificate, withBacklog
from pymailer.connlimit import SharedConnections
from pymailer.auth.directory import openDirectory
from pymailer.auth.guard import LoginGuard
from pymailer.auth.realm import MailRealm
from pymailer.delivery.dispatch import RoutingAgent
from pymailer.delivery.local import LocalDeliveryAgent
from pymailer.delivery.relay import RelayDeliveryAgent
from pymailer.dns import Resolver
from pymailer.events import Events
from pymailer.limits import openLimits
from pymailer.monitoring import openMonitoring
from pymailer.delivery.router import Router
from pymailer.intake import FreeSpace, MessageIntake, RouteCache
from pymailer.memdebug import tracingService
from pymailer.quota import Quotas
from pymailer.threadpool import LightThreadPool, coalesceWakeUps
from pymailer.queue.notify import Reporter
from pymailer.queue.runner import QueueRunner
from pymailer.queue.backend import openSpool
from pymailer.queue.model import STATES as QUEUE_STATES
from pymailer.smtp.factory import ROLES as SMTP_ROLES
from pymailer.shutdown import GoodbyeListener
from pymailer.policy.authresults import ForgedResultsFilter
from pymailer.policy.chain import PolicyChain
from pymailer.policy.decision import PolicyContext
from pymailer.policy.forwarding import ForwardSealer
from pymailer.policy.plugins import buildPieces
from pymailer.smtp.factory import SMTPFactory
from pymailer.pop3.server import buildMaildrops, buildPOP3
from pymailer.imap.factory import buildAccount, buildIMAP
from pymailer.web.admin import buildWebUser
from pymailer.web.app import buildMetrics, buildPlainHTTP, buildWeb
from pymailer.interfaces import IWebUser
from pymailer import metrics
from twisted.mail.interfaces import IAccountIMAP
from pymailer import serverlock
from pymailer.store import openStore
from pymailer.store.notify import ChangeNotifier
from pymailer.store.observed import ObservedStore
from pymailer.spam.db import ClassifierDB, dbPath
from pymailer.spam.stats import VerdictRecorder
from pymailer.spam.training import Trainer, inThreadPool
from pymailer.tls import ReloadableContextFactory, certificatePaths

log = Logger()


@dataclass(frozen=True)
class Parts:
    """
    The shared parts a listener is built from: each protocol's builder takes
    what it needs from here and nothing else.
    """

    config: object
    reactor: object
    threadpool: object
    portal: object
    guard: object
    tls: object
    store: object
    directory: object
    notifier: object  # mailbox changes -> sessions (IMAP IDLE)
    policy: object  # the policy chain every SMTP listener asks
    # The scrape-time metrics (connections per listener, queue sizes).
    metricsRegistry: object = None
    spool: object = None  # the mail queue (the web admin's queue pages)
    resolver: object = None  # the server's DNS resolver (the web admin's DNS page)
    events: object = None  # records mail and login events (metrics, monitoring)
    monitoring: object = None  # the persistent counters and recent events (admin page)
    spamDB: object = None  # the spam classifier's state (the account page's training)


def buildSMTP(role, parts):
    config = parts.config
    return SMTPFactory(
        config.hostname, config.smtp, parts.portal, parts.reactor,
        role=SMTP_ROLES[role], tls=parts.tls, guard=parts.guard,
        authConfig=config.auth, hideClientIP=config.submission.hide_client_ip,
        policy=parts.policy, events=parts.events,
    )


# Listener role -> builder(role, parts) of its protocol factory.  Roles in
# the config but not here are accepted (the contract is fixed) and reported
# as not yet available.
LISTENER_BUILDERS = {
    "smtp": buildSMTP,
    "submission": buildSMTP,
    "submissions": buildSMTP,
    "pop3": buildPOP3,
    "pop3s": buildPOP3,
    "imap": buildIMAP,
    "imaps": buildIMAP,
    "https": buildWeb,
    "http": buildPlainHTTP,
    "metrics": buildMetrics,
}

# Avatar interface -> factory(parts) of avatarFactory(user), for the realm:
# each protocol registers how a logged-in user is served.
AVATAR_BUILDERS = {IMailboxPOP3: buildMaildrops, IAccountIMAP: buildAccount,
                   IWebUser: buildWebUser}
BUILT_ROLES = tuple(LISTENER_BUILDERS)


class StopInOrder(MultiService):
    """
    A MultiService that stops its children one at a time, last added first,
    each once the one before has finished stopping.

    Twisted's MultiService stops them all at once: the thread pools would
    stop while the queue runner still waits on deliveries queued to them,
    which then never run, and the process never exits.  Here listeners
    stop first, then the runner (finishing its deliveries), then the pools.
    The listeners are one group that stops together (a plain MultiService):
    each says goodbye to its clients and waits a little for them, at the
    same time as the others.
    """

    @defer.inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        for service in reversed(list(self)):
            try:
                yield defer.maybeDeferred(service.stopService)
            except Exception:
                log.failure("stopping {service}", service=service)


class FreezeAfterStart(Service):
    """
    Once the server has started (the reactor's first turn), what start-up
    made (modules, config, the server's parts: ~80,000 objects, alive as
    long as the process) is moved out of the cyclic collector's sight
    (C{gc.freeze}): with thousands of IMAP sessions open, every full
    collection scanned it all again (one during an IDLE fan-out took 1-2
    s, issue 14).  In a worker process as in a single one.
    """

    def __init__(self, reactor):
        self.reactor = reactor

    def startService(self):
        Service.startService(self)
        self.reactor.callLater(0, self._freeze)

    def _freeze(self):
        gc.freeze()
        log.info("{n} start-up objects kept out of the garbage collector's scans",
                 n=gc.get_freeze_count())


class ThreadPoolService(Service):
    """Starts and stops the thread pool that takes the blocking disk work."""

    def __init__(self, pool):
        self.pool = pool

    def startService(self):
        Service.startService(self)
        self.pool.start()

    def stopService(self):
        Service.stopService(self)
        self.pool.stop()


class SharedDatabaseService(Service):
    """
    With C{[storage] backend = "postgresql"}: at start, start listening to
    other nodes (C{starters}); at the very end of shutdown
    (it is the first child of L{StopInOrder}, so it stops last, after the
    thread pools), stop renewing the queue's claims (C{closers}) and close
    this process's database connections.
    """

    def __init__(self):
        self.starters = []
        self.closers = []

    def startService(self):
        # Started first (after twistd's fork: no thread or connection
        # survives it), before the queue runner.
        Service.startService(self)
        for start in self.starters:
            start()

    def stopService(self):
        Service.stopService(self)
        from pymailer.pg.pool import closePools

        for close in self.closers:
            close()
        closePools()


def makeService(config, reactor=None):
    """
    The service twistd runs: the whole server in this process, or with
    C{[server] workers} above 1 the supervisor of that many worker
    processes (L{pymailer.workers}), each running L{buildServer}.
    """
    if reactor is None:
        from twisted.internet import reactor
    count = config.server.workerCount()
    if count <= 1:
        return buildServer(config, reactor)
    from pymailer.workers import Supervisor

    os.makedirs(config.data_dir, exist_ok=True)
    serverlock.holdForServer(config.data_dir)
    # Made here, once: N workers starting together would each make one.
    certificatePaths(config)
    args = ["--config", os.path.abspath(config.source)] if config.source else []
    roles = {role: description for role, description in config.listen.roles().items()
             if role in LISTENER_BUILDERS}
    return Supervisor(roles, count, reactor, args, onHangup=onHangup)


def buildServer(config, reactor=None, worker=None):
    """
    Every part of the server, in this process.

    @param worker: a L{pymailer.workers.WorkerRole} when this process is
        one of several workers: its listeners are inherited sockets, its
        rate limits and login counts are shared with the other workers,
        and only worker 0 runs the queue.
    """
    if reactor is None:
        from twisted.internet import reactor
    os.makedirs(config.data_dir, exist_ok=True)
    # While this process runs, `pymailer migrate-storage` refuses to move
    # the data from under it (and a running migration stops this start).
    serverlock.holdForServer(config.data_dir)
    top = StopInOrder()
    tracing = tracingService()
    if tracing is not None:
        tracing.setServiceParent(top)
    shared = None
    if config.storage.backend == POSTGRESQL:
        shared = SharedDatabaseService()
        shared.setServiceParent(top)

    # Disk and database work (fsync, Maildir, SQLite, argon2) runs here, so
    # the reactor never waits on the disk.
    # A light pool (pymailer.threadpool): a message costs several hand-offs.
    pool = LightThreadPool(minthreads=2, maxthreads=20, name="pymailer-disk")
    # Results and notices from threads share the reactor's wake-ups.
    coalesceWakeUps(reactor)
    ThreadPoolService(pool).setServiceParent(top)
    # Stops after the listeners and the runner (StopInOrder), so that their
    # last events are in its final flush, and before the pool it writes in.
    monitoring = openMonitoring(config, reactor, pool)
    monitoring.setServiceParent(top)
    events = Events(reactor, monitoring)

    directory = openDirectory(config)
    router = Router(directory, config.delivery.recipient_delimiter,
                    config.delivery.postmaster)
    store = openStore(config)
    if shared is not None:
        shared.closers.append(store.close)  # its LISTEN thread
    spamDB = ClassifierDB(dbPath(config.data_dir))
    if "classifier" in config.policy.checks:
        # Users train their filter by moving mail into and out of Junk:
        # the store tells the trainer, which works in the pool.
        store = ObservedStore(store, Trainer(spamDB, inThreadPool(reactor, pool)))
    spool = openSpool(config)
    if shared is not None:
        shared.closers.append(spool.close)

    # DNS waits on the network, not the disk: a pool of its own, light
    # too (the policy checks hand it several calls a message).
    dnsPool = LightThreadPool(minthreads=1, maxthreads=10, name="pymailer-dns")
    ThreadPoolService(dnsPool).setServiceParent(top)
    resolver = Resolver(config.dns, reactor, dnsPool)

    runner = QueueRunner(spool, None, config.queue, reactor, pool,
                         reporter=Reporter(spool, config.hostname, config.queue),
                         events=events)
    runner.setName("queue")
    # One queue runner among the workers, so each message is delivered
    # once; the others tell it (through the supervisor) what they queue.
    runsQueue = worker is None or worker.runsQueue
    if not runsQueue:
        spool.addListener(worker.queued)
    elif shared is not None:
        # Other nodes tell it through the database what they queue.
        shared.starters.append(spool.listen)

    localAgent = LocalDeliveryAgent(store, router, config.hostname, reactor, pool, spool,
                                    sealer=ForwardSealer(config, config.authservId))
    relayAgent = RelayDeliveryAgent(config.relay, resolver, config.hostname, reactor, pool)
    runner.agent = RoutingAgent(router, localAgent, relayAgent, reactor, pool)
    # Stops after the runner (StopInOrder): its idle sessions get QUIT once
    # no delivery can want them.
    if runsQueue:
        relayAgent.cache.setServiceParent(top)
        runner.setServiceParent(top)

    minFree = int(config.smtp.max_message_size * config.smtp.min_free_disk_factor)
    quotas = Quotas(directory, store)

    freeSpace = FreeSpace(spool)
    # RCPT answered from memory while the directory is unchanged.
    routeCache = RouteCache(directory.version)

    # Mail for local mailboxes goes into them at the end of DATA, through
    # the same agent the queue uses (in every worker: the store tells the
    # others' IDLE sessions), unless [delivery] direct is off.
    directAgent = localAgent if config.delivery.direct else None

    def intakeFor(user):
        return MessageIntake(
            router, spool, reactor, pool,
            minFreeSpace=minFree, user=user, relayAvailable=True, quotas=quotas,
            freeSpace=freeSpace, localAgent=directAgent, events=events,
            routeCache=routeCache,
        )

    # argon2id holds 19 MiB per verification by design: a pool of its own
    # keeps password guessing from starving the disk work of delivering
    # mail; the checker runs at most MAX_CONCURRENT_CHECKS at once.
    authPool = ThreadPool(minthreads=0, maxthreads=MAX_CONCURRENT_CHECKS, name="pymailer-auth")
    ThreadPoolService(authPool).setServiceParent(top)
    checker = PasswordChecker(directory, reactor, authPool)
    realm = MailRealm(intakeFor)
    portal = Portal(realm, [AllowAnonymousAccess(), checker])
    # Rate limits and login failures: in memory, or shared by the workers
    # (and by the nodes on PostgreSQL).
    limits = openLimits(config, shared=worker is not None)
    sharedConnections = None
    if limits.blocking:
        # Shared by other processes: so are the connections per address.
        # Stops after the listeners (StopInOrder), before the pool.
        sharedConnections = SharedConnections(limits, reactor, pool)
        sharedConnections.setServiceParent(top)
    guard = LoginGuard(config.auth, reactor, events, limits, pool)
    tls = ReloadableContextFactory(*certificatePaths(config))
    onHangup(reactor, tls.reload)
    policy = buildPolicy(config, reactor, pool, resolver, directory, limits)
    # Verdict counts for `pymailer spam stats`; stops (and flushes) after
    # the listeners.
    VerdictRecorder(spamDB, reactor, pool).setServiceParent(top)
    # role -> its listener's open connections, filled below, read by scrapes.
    connections = {}
    registry = metrics.serviceRegistry(
        metrics.ServerCollector(connections, spool, QUEUE_STATES))
    notifier = ChangeNotifier(store, reactor, pool)
    notifier.setName("notifier")
    notifier.setServiceParent(top)
    if worker is not None:
        # The other workers' sessions hear of our changes at once
        # (through the supervisor), not at their next poll.
        store.addListener(worker.changed)
    parts = Parts(config, reactor, pool, portal, guard, tls, store, directory,
                  notifier, policy, registry, spool, resolver, events, monitoring, spamDB)
    for interface, build in AVATAR_BUILDERS.items():
        realm.avatarFactories[interface] = build(parts)

    listeners = MultiService()
    listeners.setServiceParent(top)
    for role, description in config.listen.roles().items():
        build = LISTENER_BUILDERS.get(role)
        if build is None:
            log.warn("listener {role} ({desc}) is configured but not available in "
                     "this version", role=role, desc=description)
            continue
        factory = build(role, parts)
        if sharedConnections is not None:
            factory.shareCounts(sharedConnections, role)
        connections[role] = factory.clients
        inherited = worker.listeners.get(role) if worker is not None else None
        listen(listeners, reactor, role, description, factory, tls, inherited)
    FreezeAfterStart(reactor).setServiceParent(top)
    return top


def buildPolicy(config, reactor, threadpool, resolver, directory, limits=None):
    """
    The policy chain: forged Authentication-Results are always dropped;
    then the configured pieces, ours or plugins, in their order.
    """
    context = PolicyContext(config, reactor, threadpool, resolver, directory, limits)
    pieces = buildPieces(config.policy.checks, context, config.policy.options())
    return PolicyChain([ForgedResultsFilter(config.authservId)] + pieces, config.authservId,
                       junkScore=config.policy.rules.junk_score)


def listen(parent, reactor, role, description, factory, tls, inherited=None):
    """
    Add a listener.  An ``ssl:`` endpoint without its own key is a TCP
    endpoint wrapped in TLS with our (reloadable) context, so that
    ``submissions = "ssl:465"`` needs no certificate options.  At shutdown
    it says goodbye to the clients of C{factory.clients}.

    @param inherited: the endpoint of a socket the supervisor bound (a
        worker process), used instead of binding C{description}; TLS is
        still ours to add.
    """
    clients = factory.clients
    description = withBacklog(description)
    if description.startswith("ssl:") and not usesOwnCertificate(description):
        endpoint = serverFromString(reactor, "tcp:" + description[len("ssl:"):])
        factory = TLSMemoryBIOFactory(tls, False, factory)
    elif description.startswith("ssl:") and inherited is not None:
        # Its own certificate: the ssl endpoint's context, on the inherited
        # socket.  Making the endpoint binds nothing.
        ownTLS = serverFromString(reactor, description)._sslContextFactory
        factory = TLSMemoryBIOFactory(ownTLS, False, factory)
        endpoint = None
    else:
        endpoint = serverFromString(reactor, description)
    if inherited is not None:
        endpoint = inherited
    listener = GoodbyeListener(endpoint, factory, clients)
    # A port that cannot be bound stops the start (twistd exits with the
    # error) instead of leaving a server running that listens nowhere.
    listener._raiseSynchronously = True
    listener.setName(role)
    listener.setServiceParent(parent)


def onHangup(reactor, f):
    """
    SIGHUP calls C{f} in the reactor thread: the certificate is re-read
    (after an ACME renewal); a supervisor passes the signal on to its
    workers.
    """
    previous = signal.getsignal(signal.SIGHUP)

    def hungUp(signum, frame):
        reactor.callFromThread(f)
        if callable(previous):
            previous(signum, frame)

    try:
        signal.signal(signal.SIGHUP, hungUp)
    except ValueError:
        # Not the main thread (tests building the service): no signals.
        pass


def describeListeners(config, out=None):
    """Print what listens where (shown at start-up)."""
    out = out or sys.stdout
    source = config.source or "embedded default"
    print(f"pymailer: config {source}, data in {config.data_dir}", file=out)
    for role, description in config.listen.roles().items():
        state = "" if role in BUILT_ROLES else " (not available in this version)"
        print(f"pymailer: {role:<12} {description}{state}", file=out)
    workers = config.server.workerCount()
    if workers > 1:
        print(f"pymailer: {workers} worker processes", file=out)
    out.flush()
