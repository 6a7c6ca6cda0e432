"""
The one DNS resolver of the server: MX lookups now, SPF/DKIM/DMARC later.

dnspython does the protocol work; its synchronous resolver runs in a thread
pool of its own so a slow DNS server never stalls the reactor (nor the disk
pool).  C{[dns] servers} points every lookup elsewhere (tests run a DNS
server on loopback).

Trust: answers come from whatever server resolv.conf or C{[dns] servers}
names.  Only a name error that a server backs with its zone's SOA is taken
as final: everything else (timeouts, SERVFAIL, refusals, no server
configured, a bare NXDOMAIN with no SOA as sandboxes and captive stubs
synthesise) is temporary, so mail waits in the queue instead of bouncing.
"""

import dns.exception
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver
from twisted.internet.defer import succeed

from pymailer.config import parseHostPort
from pymailer.threadpool import deferToPool


class DNSError(Exception):
    """
    A lookup failed.  C{temporary} is C{True} for timeouts and server
    failures (worth retrying), C{False} for a name that does not exist.
    """

    def __init__(self, name, reason, temporary):
        Exception.__init__(self, f"{name}: {reason}")
        self.name = name
        self.reason = reason
        self.temporary = temporary


class Resolver:
    def __init__(self, dnsConfig, reactor, threadpool):
        self.reactor = reactor
        self.threadpool = threadpool
        if dnsConfig.servers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parseHostPort(server, 53))
                for server in dnsConfig.servers
            ]
        else:
            try:
                resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                # A machine without DNS (no nameserver in resolv.conf) still
                # starts: local mail works, and every lookup is a temporary
                # failure (mail to other domains waits) until DNS returns.
                resolver = dns.resolver.Resolver(configure=False)
        resolver.lifetime = dnsConfig.timeout
        resolver.cache = dns.resolver.LRUCache()
        self._resolver = resolver

    def lookup(self, name, rdtype):
        """
        @return: a C{Deferred} firing with the C{list} of rdata (empty when
            the name exists without records of that type), or failing with
            L{DNSError}.
        """
        cached = self._cached(name, rdtype)
        if cached is not None:
            return succeed(cached)
        return deferToPool(self.reactor, self.threadpool, self.lookupBlocking, name, rdtype)

    def _cached(self, name, rdtype):
        """
        The answer the resolver's cache holds, unexpired, or C{None}: read
        on the reactor (a dictionary look-up under the cache's lock), not
        through a thread and back.  The policy checks ask the same few
        names for every message (the sender domain's SPF and DMARC
        records): the hand-offs were 15 % of the reactor's time under
        load.  Only answers (with records or without): a name error is
        cached under another key and taken the long way, as is every
        miss.
        """
        try:
            rdtype = dns.rdatatype.RdataType.make(rdtype)
            key = (dns.name.from_text(name), rdtype, dns.rdataclass.IN)
        except (dns.exception.DNSException, ValueError):
            return None
        if rdtype == dns.rdatatype.ANY:
            return None  # the key a name error is cached under
        answer = self._resolver.cache.get(key)
        if answer is None:
            return None
        return [] if answer.rrset is None else list(answer)

    def lookupBlocking(self, name, rdtype):
        if not self._resolver.nameservers:
            raise DNSError(name, "no DNS server configured", temporary=True)
        try:
            answer = self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN as e:
            if not all(_hasSOA(r) for r in e.responses().values()):
                # RFC 2308 §3: a server reporting a name error MUST include
                # the zone's SOA.  One without it did not ask the zone (a
                # sandbox's or captive portal's stub answers NXDOMAIN for
                # everything when it cannot reach DNS): a permanent bounce
                # on its word (RFC 5321 §5.1) would lose mail, so retry.
                raise DNSError(name, "no such domain, said without the zone's SOA; "
                               "is DNS reachable?", temporary=True)
            raise DNSError(name, "no such domain", temporary=False)
        except dns.resolver.NoAnswer:
            return []
        except dns.resolver.NoNameservers as e:
            raise DNSError(name, f"no server answered ({e})", temporary=True)
        except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
            raise DNSError(name, "timed out", temporary=True)
        except dns.exception.DNSException as e:
            raise DNSError(name, str(e), temporary=True)
        return list(answer)


def _hasSOA(response):
    return any(rrset.rdtype == dns.rdatatype.SOA for rrset in response.authority)
