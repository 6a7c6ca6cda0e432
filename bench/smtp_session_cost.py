"""
The reactor's CPU per accepted SMTP message, without the network and
without the disk's time (issue 14): with smtp-source's load (a new
connection per message) one worker accepts at most so many messages per
second of its reactor thread, which runs every session's admission,
parsing, policy stages, replies, mail log and events under the GIL.

    python bench/smtp_session_cost.py [--sessions 3000] [--profile FILE]

Each session is one of smtp-source's: connect, EHLO, MAIL, RCPT, DATA, a
message of about 4 KiB, QUIT, disconnect, each command sent after the
previous reply.  The server side is the production one on a
C{StringTransport}: the listener's factory with the shared connection
counts of a worker (L{pymailer.limits.SQLiteLimits}), the policy chain
without checks, the intake with its route cache delivering at once into a
memory store for a local user, the events and the mail log (to a buffered
observer writing to /dev/null).  Work handed to the disk threads runs at
once in a pool that measures its CPU: what is printed is the reactor
thread's CPU less that, per message, and the disk side apart (the spool,
routing and delivery; the store is a memory one, its cost is not this
figure's).  C{--profile} writes a cProfile of the sessions (C{python -m
pstats FILE}), the disk side left out.
"""

import argparse
import cProfile
import os
import sys
import tempfile
import time

sys.path[:0] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), d)
                for d in ("../tests", "..")]

from twisted.cred.checkers import AllowAnonymousAccess  # noqa: E402
from twisted.cred.portal import Portal  # noqa: E402
from twisted.internet import task  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.logger import eventAsText, globalLogBeginner  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from benchlib import TimedPool, makeMessage  # noqa: E402
from pymailer.auth.realm import MailRealm  # noqa: E402
from pymailer.config import SMTPConfig  # noqa: E402
from pymailer.connlimit import SharedConnections  # noqa: E402
from pymailer.delivery.local import LocalDeliveryAgent  # noqa: E402
from pymailer.delivery.router import Router  # noqa: E402
from pymailer.events import Events  # noqa: E402
from pymailer.intake import FreeSpace, MessageIntake  # noqa: E402
from pymailer.limits import SQLiteLimits  # noqa: E402
from pymailer.logs import BufferedLogObserver  # noqa: E402
from pymailer.policy.authresults import ForgedResultsFilter  # noqa: E402
from pymailer.policy.chain import PolicyChain  # noqa: E402
from pymailer.queue.spool_files import Spool  # noqa: E402
from pymailer.quota import Quotas  # noqa: E402
from pymailer.smtp.factory import SMTPFactory  # noqa: E402
from pymailer.store.memory import MemoryStore  # noqa: E402
from pymailer.testing import MemoryDirectory, connectSMTP  # noqa: E402

DEBUG = []
HOSTNAME = "mx.example.org"
USER = "alice@example.org"
# smtp-source's pace per worker in the side-by-side bench: ~150 messages/s.
SESSION_SECONDS = 1 / 150


class Reactor(task.Clock):
    """A clock that also takes C{callFromThread} (the pool runs at once)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class Sink:
    """The monitoring recorder's side of the events: kept in memory."""

    def __init__(self):
        self.events = 0

    def record(self, event):
        self.events += 1


def buildFactory(tmp, reactor, pool):
    directory = MemoryDirectory(domains=["example.org"], users=[USER])
    router = Router(directory)
    store = MemoryStore()
    store.createUser(USER)
    spool = Spool(os.path.join(tmp, "queue"))
    events = Events(reactor, Sink())
    agent = LocalDeliveryAgent(store, router, HOSTNAME, reactor, pool, spool)
    # Shared by the sessions of a server, as the service does.
    sharedByIntakes = {"freeSpace": FreeSpace(spool, now=reactor.seconds)}
    try:
        from pymailer.intake import RouteCache
    except ImportError:  # a tree from before the route cache (OTHER)
        pass
    else:
        sharedByIntakes["routeCache"] = RouteCache(directory.version)

    def intakeFor(user):
        return MessageIntake(router, spool, reactor, pool, user=user, relayAvailable=True,
                             quotas=Quotas(directory, store), localAgent=agent,
                             events=events, **sharedByIntakes)

    portal = Portal(MailRealm(intakeFor), [AllowAnonymousAccess()])
    factory = SMTPFactory(HOSTNAME, SMTPConfig(max_connections_per_ip=1000), portal, reactor,
                          policy=PolicyChain([ForgedResultsFilter(HOSTNAME)], HOSTNAME),
                          events=events)
    shared = SharedConnections(SQLiteLimits(os.path.join(tmp, "limits.sqlite")), reactor, pool)
    shared.startService()
    factory.shareCounts(shared, "smtp")
    return factory


def oneSession(factory, reactor, body):
    """One smtp-source session; raises unless the message got its 250."""
    proto, transport = connectSMTP(factory, host="127.0.0.1")
    replies = [transport.value()]
    for line in (b"EHLO client.test\r\n", b"MAIL FROM:<bench@remote.test>\r\n",
                 b"RCPT TO:<" + USER.encode() + b">\r\n", b"DATA\r\n", body + b".\r\n",
                 b"QUIT\r\n"):
        transport.clear()
        proto.dataReceived(line)
        replies.append(transport.value())
    proto.connectionLost(Failure(ConnectionDone()))
    reactor.advance(SESSION_SECONDS)
    if not replies[5].startswith(b"250 2.0.0 Ok: queued as"):
        raise RuntimeError(f"no 250 for the message: {replies!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--profile", metavar="FILE")
    options = parser.parse_args()
    # The worker's log: formatted and written by a thread of its own.
    out = open(os.devnull, "w")
    globalLogBeginner.beginLoggingTo([BufferedLogObserver(
        out, lambda event: eventAsText(event, includeTimestamp=False) + "\n")] + DEBUG,
        redirectStandardIO=False)
    _, body = makeMessage("bench@remote.test", USER, 0, 0, 4096)
    with tempfile.TemporaryDirectory(prefix="smtp-cost-") as tmp:
        os.fsync = lambda fd: None  # the disk is not what is measured
        reactor, pool = Reactor(), TimedPool()
        factory = buildFactory(tmp, reactor, pool)
        for _ in range(300):  # warm-up
            oneSession(factory, reactor, body)
        pool.cpu, pool.calls = 0.0, 0
        profile = pool.profile = cProfile.Profile() if options.profile else None
        cpu0 = time.thread_time()
        if profile:
            profile.enable()
        for _ in range(options.sessions):
            oneSession(factory, reactor, body)
        if profile:
            profile.disable()
            profile.dump_stats(options.profile)
        total = time.thread_time() - cpu0
    n = options.sessions
    print(f"{n} smtp-source sessions (one message each){' (profiled)' if profile else ''}:")
    print(f"  reactor side : {(total - pool.cpu) / n * 1e6:7.1f} us CPU per message")
    print(f"  disk side    : {pool.cpu / n * 1e6:7.1f} us CPU per message"
          f" ({pool.calls / n:.2f} hand-offs per message; memory store, no fsync)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
