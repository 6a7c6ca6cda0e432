"""
The per-address connection limit across processes (L{pymailer.connlimit}'s
L{SharedConnections}): SMTP listeners of two "processes" sharing one limit
store, driven through string transports, with the store's answers given at
once or held by the test.
"""

from twisted.internet import defer, task

from pymailer.config import SMTPConfig
from pymailer.connlimit import SharedConnections
from pymailer.limits import SQLiteLimits
from pymailer.smtp.factory import SMTPFactory
from pymailer.testing import (
    ClockReactor, MemoryDirectory, MemoryIntake, SynchronousThreadPool, connectSMTP,
    memoryPortal)


def smtpListener(shared, perIP=2, total=1000):
    """One process's SMTP listener (port 25), sharing its counts through C{shared}."""
    intake = MemoryIntake(MemoryDirectory(domains=["example.org"], users=["a@example.org"]))
    factory = SMTPFactory("mx.example.org", SMTPConfig(max_connections_per_ip=perIP,
                                                       max_connections=total),
                          memoryPortal(intake, {}), task.Clock())
    factory.shareCounts(shared, "smtp")
    return factory


def sharedStore(tmp_path):
    """The counts of one more process on the store in C{tmp_path}."""
    store = SQLiteLimits(tmp_path / "limits.sqlite")
    return SharedConnections(store, ClockReactor(), SynchronousThreadPool())


def test_limit_holds_across_processes(tmp_path):
    """
    With two connections allowed per address, one open on each of two
    processes: a third, on either, is told 421 4.7.0 and closed, and a
    connection that ends frees its slot for every process: otherwise a
    client would get twice the limit by landing on both.
    """
    one, two = smtpListener(sharedStore(tmp_path)), smtpListener(sharedStore(tmp_path))
    first, t1 = connectSMTP(one)
    _, t2 = connectSMTP(two)
    assert t1.value().startswith(b"220 ") and t2.value().startswith(b"220 ")
    _, t3 = connectSMTP(one)
    assert t3.value() == b"421 4.7.0 Too many connections from your address, try again later\r\n"
    assert t3.disconnecting
    _, t3again = connectSMTP(two)  # the refusal freed nobody's slot
    assert t3again.value().startswith(b"421 4.7.0")
    _, other = connectSMTP(two, host="192.0.2.77")
    assert other.value().startswith(b"220 ")
    first.connectionLost(None)
    _, t4 = connectSMTP(two)
    assert t4.value().startswith(b"220 ")
    assert two.connections == {"192.0.2.1": 2, "192.0.2.77": 1}
    assert one.connections == {}


def test_total_limit_holds_across_processes(tmp_path):
    """
    With three connections allowed in all, two open on one process and
    one on the other (from different addresses): a fourth, on either, is
    told 421 "Too many connections", and one that ends frees its slot for
    every process.  Otherwise with N workers a limit of 3 meant 3N.
    """
    one = smtpListener(sharedStore(tmp_path), perIP=10, total=3)
    two = smtpListener(sharedStore(tmp_path), perIP=10, total=3)
    first, _ = connectSMTP(one, host="192.0.2.1")
    connectSMTP(one, host="192.0.2.2")
    _, t3 = connectSMTP(two, host="192.0.2.3")
    assert t3.value().startswith(b"220 ")
    for factory in (one, two):
        _, refused = connectSMTP(factory, host="192.0.2.4")
        assert refused.value() == b"421 4.7.0 Too many connections, try again later\r\n"
    assert two.connections == {"192.0.2.3": 1} and two.total == 1
    first.connectionLost(None)
    _, admitted = connectSMTP(two, host="192.0.2.4")
    assert admitted.value().startswith(b"220 ")


class HeldAnswers:
    """A L{SharedConnections} whose answers the test gives."""

    def __init__(self):
        self.asked = []
        self.released = []

    def admit(self, scope, host, limit, total=None):
        d = defer.Deferred()
        self.asked.append(d)
        return d

    def release(self, scope, host):
        self.released.append((scope, host))


def test_connection_waits_for_the_answer_and_keeps_its_input():
    """
    Until the shared store answers, the connection is paused and hears
    nothing; once admitted, the session greets, then gets what the client
    sent meanwhile (a pipelining client's EHLO is not lost).
    """
    shared = HeldAnswers()
    factory = smtpListener(shared)
    protocol, transport = connectSMTP(factory)
    assert transport.value() == b"" and transport.producerState == "paused"
    protocol.dataReceived(b"EHLO client.example\r\n")
    shared.asked[0].callback(True)
    assert transport.producerState == "producing"
    lines = transport.value().split(b"\r\n")
    assert lines[0].startswith(b"220 ") and lines[1].startswith(b"250-mx.example.org")
    protocol.connectionLost(None)
    assert shared.released == [("smtp", "192.0.2.1")]
    assert factory.connections == {} and factory.total == 0


def test_connection_gone_before_the_answer_frees_its_slots():
    """
    A client that hangs up while the store is asked leaves no count behind,
    here or in the store: otherwise impatient clients would use up their
    address's slots.
    """
    shared = HeldAnswers()
    factory = smtpListener(shared)
    protocol, _ = connectSMTP(factory)
    protocol.connectionLost(None)
    shared.asked[0].callback(True)
    assert shared.released == [("smtp", "192.0.2.1")]
    assert factory.connections == {} and factory.total == 0


def test_store_failure_admits_on_this_process_count():
    """
    When the shared store cannot be reached, this process's own count
    decides (the connection is served, and nothing is uncounted at its
    end): a database outage must not turn every client away.
    """
    class Broken:
        lease = 30.0

        released = []

        def openConnection(self, scope, host, limit):
            raise OSError("database down")

        def closeConnection(self, scope, host):
            self.released.append(host)

    shared = SharedConnections(Broken(), ClockReactor(), SynchronousThreadPool())
    factory = smtpListener(shared)
    protocol, transport = connectSMTP(factory)
    assert transport.value().startswith(b"220 ")
    protocol.connectionLost(None)
    assert factory.connections == {}
    connectSMTP(factory)
    connectSMTP(factory)
    _, third = connectSMTP(factory)
    assert third.value().startswith(b"421 4.7.0")
    assert Broken.released == []


class CountingLimits(SQLiteLimits):
    """The shared store, counting the transactions asked of it."""

    calls = 0

    def _change(self, f):
        self.calls += 1
        return super()._change(f)


def reconnectingClientSetup(tmp_path):
    """
    Two processes' listeners (8 per address) on one store; the first's
    store transactions counted.  @return: C{(store, reactor, one, two)}.
    """
    store = CountingLimits(tmp_path / "limits.sqlite")
    reactor = ClockReactor()
    shared = SharedConnections(store, reactor, SynchronousThreadPool())
    shared.startService()
    return (store, reactor, smtpListener(shared, perIP=8),
            smtpListener(sharedStore(tmp_path), perIP=8))


def test_reconnecting_client_costs_no_store_transaction_per_connection(tmp_path):
    """
    A client far below its limit that connects once per message (as
    smtp-source and busy relays do) reuses the slot its last connection
    held in this process: no shared-store write per connection (two per
    connection made a second worker slower than one).  The slot still
    counts everywhere until it is given back, within 0.1 s; then the other
    process can use every slot again.
    """
    store, reactor, one, two = reconnectingClientSetup(tmp_path)
    before = store.calls
    for _ in range(20):
        protocol, transport = connectSMTP(one)
        assert transport.value().startswith(b"220 ")
        protocol.connectionLost(None)
    # The first connection's counts (its address's and the listener's total), kept since.
    assert store.calls - before == 2
    reactor.advance(0.1)
    opened = [connectSMTP(two) for _ in range(8)]
    assert all(t.value().startswith(b"220 ") for _, t in opened)
    _, ninth = connectSMTP(one)
    assert ninth.value().startswith(b"421 4.7.0")


def test_client_connecting_without_pause_keeps_its_slot(tmp_path):
    """
    A client that keeps connecting once per message for longer than the
    hold (a load generator, a relay with a backlog) keeps reusing the slot
    its last connection gave back: no shared-store write however long it
    goes on (before, every slot went back to the store each 0.1 s, and the
    next connection paid two store transactions to count itself again).
    Once it pauses, the slot goes back within 0.1 s.
    """
    store, reactor, one, two = reconnectingClientSetup(tmp_path)
    before = store.calls
    for _ in range(40):
        protocol, transport = connectSMTP(one)
        assert transport.value().startswith(b"220 ")
        protocol.connectionLost(None)
        reactor.advance(0.05)
    assert store.calls - before == 2
    reactor.advance(0.1)
    assert store.calls - before == 4  # both slots (address, total) given back
    opened = [connectSMTP(two) for _ in range(8)]
    assert all(t.value().startswith(b"220 ") for _, t in opened)


def test_admitted_connection_reads_straight_into_the_session(tmp_path):
    """
    Once admitted, what the transport reads goes to the SMTP session with
    no forwarding call of the admission's in between (it ran on every read
    of every connection): the protocol the transport holds answers
    C{dataReceived} with the session's own method, and commands work.
    """
    protocol, transport = connectSMTP(smtpListener(sharedStore(tmp_path)))
    assert protocol.dataReceived == protocol.session.dataReceived
    protocol.dataReceived(b"EHLO client.example\r\n")
    assert transport.value().split(b"\r\n")[1].startswith(b"250-mx.example.org")
