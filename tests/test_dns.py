"""
The real resolver (L{pymailer.dns.Resolver}, dnspython underneath) against
real DNS servers on loopback: one that never answers, one that says
SERVFAIL, a stub that says a bare NXDOMAIN to everything (what a machine
without DNS has in resolv.conf), and an authoritative one whose NXDOMAIN
carries the zone's SOA.  Only the last may bounce mail at once.
"""

import socket
import threading

import dns.message
import dns.rcode
import dns.resolver
import pytest
from twisted.internet import defer

from dnsserver import DNSServer
from pymailer.config import DNSConfig
from pymailer.dns import DNSError, Resolver
from pymailer.queue.mx import NoMailHosts, mailHosts
from pymailer.testing import ClockReactor, CountingThreadPool


class SilentDNSServer:
    """A UDP socket on loopback that reads every query and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._drop, daemon=True)
        self.thread.start()

    def _drop(self):
        while True:
            try:
                self.sock.recvfrom(4096)
            except OSError:
                return

    def stop(self):
        self.sock.close()
        self.thread.join(2)


class ServfailDNSServer(DNSServer):
    def answer(self, query):
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return response


class StubDNSServer(DNSServer):
    """NXDOMAIN for every name, without an SOA: a resolver that cannot reach DNS."""

    nxdomainSOA = False


@pytest.fixture(params=["silent", "servfail", "stub"])
def unreachableDNS(request):
    server = {"silent": SilentDNSServer, "servfail": lambda: ServfailDNSServer({}),
              "stub": lambda: StubDNSServer({})}[request.param]()
    yield server.address
    server.stop()


def resolverFor(address, timeout=0.5):
    return Resolver(DNSConfig(servers=(address,), timeout=timeout), None, None)


class BlockingResolver:
    """L{Resolver.lookup} without a thread pool, so L{mailHosts} runs synchronously."""

    def __init__(self, resolver):
        self.resolver = resolver

    def lookup(self, name, rdtype):
        return defer.maybeDeferred(self.resolver.lookupBlocking, name, rdtype)


def mailHostsFailure(resolver, domain):
    results = []
    mailHosts(BlockingResolver(resolver), domain).addBoth(results.append)
    (failure,) = results
    assert failure.check(NoMailHosts), failure
    return failure.value


def test_unreachable_dns_defers_mail(unreachableDNS):
    """
    When DNS does not answer, answers SERVFAIL, or is a stub that says
    NXDOMAIN without the zone's SOA, mail to another domain is deferred with
    451 4.4.3 and retried; if this fails, a machine with broken DNS bounces
    every outgoing message at once with "domain does not exist".
    """
    resolver = resolverFor(unreachableDNS)
    with pytest.raises(DNSError) as raised:
        resolver.lookupBlocking("example.net", "MX")
    assert raised.value.temporary
    e = mailHostsFailure(resolver, "example.net")
    assert (e.temporary, e.code, e.enhanced) == (True, 451, "4.4.3")


def test_authoritative_nxdomain_bounces():
    """
    An NXDOMAIN backed by the zone's SOA (RFC 2308 §3) is final: 550 5.1.2
    at once; if this fails, a typo in a domain is retried for days.
    """
    with DNSServer({"exists.test": [("A", "127.0.0.2")]}) as server:
        e = mailHostsFailure(resolverFor(server.address), "typo.test")
    assert (e.temporary, e.code, e.enhanced) == (False, 550, "5.1.2")
    assert "does not exist" in e.text


def test_no_nameserver_configured(monkeypatch):
    """
    A resolv.conf without any nameserver still lets the server start, and
    every lookup is a temporary failure; if this fails, pymailer does not
    start at all on a machine without DNS.
    """
    def noNameserver(self, filename):
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    monkeypatch.setattr(dns.resolver.Resolver, "read_resolv_conf", noNameserver)
    resolver = Resolver(DNSConfig(), None, None)
    e = mailHostsFailure(resolver, "example.net")
    assert (e.temporary, e.enhanced) == (True, "4.4.3")


def _result(d):
    results = []
    d.addBoth(results.append)
    (result,) = results
    return result


def test_a_cached_answer_takes_no_thread(monkeypatch):
    """
    An answer in the resolver's cache (records, or none of that type) is
    given on the spot, without a thread; one expired, or a name error,
    goes to the DNS server again.  If this fails, every message's SPF and
    DMARC look-ups cost a hand-off to a DNS thread and back even when the
    answers are known: 15 % of the reactor's time under SMTP load with
    the policy checks.
    """
    import time

    with DNSServer({"remote.test": [("A", "127.0.0.2")]}) as server:
        pool = CountingThreadPool()
        resolver = Resolver(DNSConfig(servers=(server.address,), timeout=2), ClockReactor(),
                            pool)
        first = [r.to_text() for r in _result(resolver.lookup("remote.test", "A"))]
        assert first == ["127.0.0.2"]
        assert [r.to_text() for r in _result(resolver.lookup("remote.test", "A"))] == first
        assert _result(resolver.lookup("remote.test", "MX")) == []
        assert _result(resolver.lookup("remote.test", "MX")) == []
        assert (pool.calls, len(server.queries)) == (2, 2)
        for _ in range(2):
            assert _result(resolver.lookup("typo.test", "A")).check(DNSError)
        assert pool.calls == 4
        later = time.time() + 61  # past the records' TTL of 60 s
        monkeypatch.setattr(time, "time", lambda: later)
        assert [r.to_text() for r in _result(resolver.lookup("remote.test", "A"))] == first
        assert pool.calls == 5
