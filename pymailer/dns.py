"""
The one DNS resolver of the server: MX lookups now, SPF/DKIM/DMARC later.

dnspython does the protocol work; its synchronous resolver runs in a thread
pool of its own so a slow DNS server never stalls the reactor (nor the disk
pool).  C{[dns] servers} points every lookup elsewhere (tests run a DNS
server on loopback).
"""

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
from twisted.internet.threads import deferToThreadPool

from pymailer.config import parseHostPort


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
            resolver = dns.resolver.Resolver()
        resolver.lifetime = dnsConfig.timeout
        resolver.cache = dns.resolver.LRUCache()
        self._resolver = resolver

    def lookup(self, name, rdtype):
        """
        @return: a C{Deferred} firing with the C{list} of rdata (empty when
            the name exists without records of that type), or failing with
            L{DNSError}.
        """
        return deferToThreadPool(self.reactor, self.threadpool, self.lookupBlocking, name, rdtype)

    def lookupBlocking(self, name, rdtype):
        try:
            answer = self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
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
