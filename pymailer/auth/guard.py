"""
Brute-force protection for logins, shared by every protocol: failed logins
are counted in a sliding window and answered after a delay, and past a
limit the client is locked out for a while.  Three counts, each with its
limit (L{pymailer.config.AuthConfig}):

  - C{"login"}: one account from one client address (an IPv4 address, an
    IPv6 /64: one host's share, L{clientAddress}), C{max_failures}.  Past
    it that address is locked out for that account only: a guesser locks
    out themselves, not the owner logging in from elsewhere (as Dovecot's
    and mox's limits are per client address);
  - C{"account"}: one account from every address, C{max_failures_per_account}
    (higher): bounds a guesser spread over many addresses.  Past it the
    account's logins are refused from everywhere (answered like a wrong
    password, so the guesser learns nothing);
  - C{"ip"}: one address for every account, C{max_failures_per_address}
    (higher): bounds one address trying a password on many accounts.

The counts live in an L{pymailer.interfaces.ILimitStore}: in memory with
one process (a restart forgets only the counters, never a password), in a
file every worker process shares when there are several, so that a guesser
whose connections land on different workers is counted and stopped once.
"""

import ipaddress
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pymailer.events import PROMETHEUS_ONLY
from pymailer.limits import MemoryLimits, caller


# What is locked out (L{LoginGuard.blocked}).
ADDRESS = "ip"          # the client address, for every account
LOGIN = "login"         # the client address, for one account
ACCOUNT = "account"     # the account, from every address

# IPv6 clients are counted per /64: one host (one customer, RFC 6177) may use
# every address of its /64, so counting per address would give it 2**64
# tries.
IPV6_PREFIX = 64


def clientAddress(ip):
    """
    The client as the guard counts it (C{str}): an IPv4 address (also when
    a dual-stack listener reports it as C{::ffff:a.b.c.d}), or an IPv6
    address's /64; anything else (not an IP address) as it is.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


@dataclass(frozen=True)
class Count:
    """One count a failure adds to: C{kind}, C{key} and its limit."""

    kind: str
    key: str
    limit: int


class LoginGuard:
    """
    @param store: where failures and lockouts are counted (an
        L{pymailer.interfaces.ILimitStore}): in memory unless given; the
        one every worker process shares when there are several.
    @param threadpool: where a C{store} that blocks is asked.
    """

    log = Logger()

    def __init__(self, authConfig, clock, events=None, store=None, threadpool=None):
        self.config = authConfig
        self.clock = clock
        # Failed logins and lockouts are recorded here (metrics, monitoring).
        self.events = events if events is not None else PROMETHEUS_ONLY
        self.store = store if store is not None else MemoryLimits()
        self._call = caller(self.store, clock, threadpool)

    def counts(self, ip, account):
        """
        The L{Count}s a failed login of C{account} (or C{None}: not known
        yet) from C{ip} adds to, the narrowest first.
        """
        config, address = self.config, clientAddress(ip)
        counts = [Count(ADDRESS, address, config.max_failures_per_address)]
        if account is not None:
            counts[:0] = [Count(LOGIN, f"{address} {account}", config.max_failures),
                          Count(ACCOUNT, account, config.max_failures_per_account)]
        return counts

    def blocked(self, ip, account=None):
        """
        @return: a C{Deferred} firing with what is locked out, L{ADDRESS},
            L{LOGIN} or L{ACCOUNT}, or C{None}.
        """
        return defer.maybeDeferred(self._call, self._blocked, self.counts(ip, account),
                                   self.clock.seconds())

    def _blocked(self, counts, now):
        # In the store's thread when it blocks: every question, one hop.
        for count in counts:
            if self.store.lockedOut(count.kind, count.key, now):
                return count.kind
        return None

    def failed(self, ip, account, protocol):
        """
        Count a failed login, lock out past the limit, and return a
        C{Deferred} that fires after the failure delay.
        """
        now = self.clock.seconds()
        self.events.loginFailed(protocol, ip, account)
        self.log.warn(
            "{protocol} login failed for {account!r} from {ip}",
            protocol=protocol, account=account, ip=ip,
        )
        counted = defer.maybeDeferred(self._call, self._record,
                                      self.counts(ip, account), now)
        counted.addCallback(self._lockedOut, ip, account)
        counted.addErrback(lambda f: self.log.failure("counting a failed login", f))
        delay = deferLater(self.clock, self.config.failure_delay, lambda: None)
        return defer.gatherResults([counted, delay]).addCallback(lambda _: None)

    def _record(self, counts, now):
        config = self.config
        return [count for count in counts
                if self.store.recordFailure(count.kind, count.key, now, config.failure_window,
                                            count.limit, config.lockout_time)]

    def _lockedOut(self, counts, ip, account):
        for count in counts:
            self.events.lockedOut(count.kind, count.key, ip, account)
            self.log.warn(
                "{kind} {value!r} locked out for {t:g} s after {n} failed logins",
                kind=count.kind, value=count.key, t=self.config.lockout_time,
                n=count.limit,
            )

    def succeeded(self, ip, account):
        """
        A good login: forget the failures of C{account} from C{ip} (a typo
        or two before).  Those from other addresses still count towards
        C{max_failures_per_account}: the owner logging in says nothing
        about the guesses made elsewhere.  Nobody waits for it (a
        C{Deferred} when the store blocks, for tests).
        """
        login = self.counts(ip, account)[0]
        return defer.maybeDeferred(self._call, self.store.clearFailures,
                                   login.kind, login.key).addErrback(
            lambda f: self.log.failure("forgetting failed logins", f))


def plaintextLoginAllowed(authConfig, peerHost):
    """
    May a client log in with a password on an unencrypted connection?  Only
    from loopback, and only when the config says so (local tools).
    """
    if not authConfig.allow_plaintext_on_loopback:
        return False
    try:
        return ipaddress.ip_address(peerHost).is_loopback
    except ValueError:
        return False
