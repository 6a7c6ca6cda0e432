"""
Brute-force protection for logins, shared by every protocol: failed logins
are counted per client IP and per account in a sliding window, answered
after a delay, and past a limit the IP or account is locked out for a while.

The counts live in an L{pymailer.interfaces.ILimitStore}: in memory with
one process (a restart forgets only the counters, never a password), in a
file every worker process shares when there are several, so that a guesser
whose connections land on different workers is counted and stopped once.
"""

import ipaddress

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pymailer.events import PROMETHEUS_ONLY
from pymailer.limits import MemoryLimits, caller


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

    def blocked(self, ip, account=None):
        """
        @return: a C{Deferred} firing with C{"ip"} or C{"account"} if that
            is locked out, else C{None}.
        """
        return defer.maybeDeferred(self._call, self._blocked, ip, account,
                                   self.clock.seconds())

    def _blocked(self, ip, account, now):
        # In the store's thread when it blocks: two questions, one hop.
        for kind, key in (("ip", ip), ("account", account)):
            if key is not None and self.store.lockedOut(kind, key, now):
                return kind
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
        keys = [(kind, key) for kind, key in (("ip", ip), ("account", account))
                if key is not None]
        counted = defer.maybeDeferred(self._call, self._record, keys, now)
        counted.addCallback(self._lockedOut, ip, account)
        counted.addErrback(lambda f: self.log.failure("counting a failed login", f))
        delay = deferLater(self.clock, self.config.failure_delay, lambda: None)
        return defer.gatherResults([counted, delay]).addCallback(lambda _: None)

    def _record(self, keys, now):
        config = self.config
        return [(kind, key) for kind, key in keys
                if self.store.recordFailure(kind, key, now, config.failure_window,
                                            config.max_failures, config.lockout_time)]

    def _lockedOut(self, keys, ip, account):
        for kind, key in keys:
            self.events.lockedOut(kind, key, ip, account)
            self.log.warn(
                "{kind} {value!r} locked out for {t:g} s after {n} failed logins",
                kind=kind, value=key, t=self.config.lockout_time,
                n=self.config.max_failures,
            )

    def succeeded(self, account):
        """
        A good login: forget the account's failures.  Nobody waits for it
        (a C{Deferred} when the store blocks, for tests).
        """
        return defer.maybeDeferred(self._call, self.store.clearFailures,
                                   "account", account).addErrback(
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
