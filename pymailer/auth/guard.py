"""
Brute-force protection for logins, shared by every protocol: failed logins
are counted per client IP and per account in a sliding window, answered
after a delay, and past a limit the IP or account is locked out for a while.

In memory, per process: a guessing client is slowed and stopped here, and a
restart forgets only the counters, never a password.
"""

import ipaddress
from collections import deque

from twisted.internet.task import deferLater
from twisted.logger import Logger

from pymailer.events import PROMETHEUS_ONLY

# Bound on remembered keys, so a flood of distinct addresses cannot grow
# memory without limit; the oldest entries go first.
MAX_KEYS = 100_000


class LoginGuard:
    log = Logger()

    def __init__(self, authConfig, clock, events=None):
        self.config = authConfig
        self.clock = clock
        # Failed logins and lockouts are recorded here (metrics, monitoring).
        self.events = events if events is not None else PROMETHEUS_ONLY
        self._failures = {}
        self._lockedUntil = {}

    def blocked(self, ip, account=None):
        """
        @return: C{"ip"} or C{"account"} if that is locked out, else C{None}.
        """
        now = self.clock.seconds()
        for kind, key in (("ip", ("ip", ip)), ("account", ("account", account))):
            if key[1] is None:
                continue
            until = self._lockedUntil.get(key)
            if until is not None:
                if now < until:
                    return kind
                del self._lockedUntil[key]
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
        for key in (("ip", ip), ("account", account)):
            if key[1] is None:
                continue
            window = self._failures.setdefault(key, deque())
            window.append(now)
            while window and window[0] <= now - self.config.failure_window:
                window.popleft()
            if len(window) >= self.config.max_failures:
                self._lockedUntil[key] = now + self.config.lockout_time
                self.events.lockedOut(key[0], key[1], ip, account)
                window.clear()
                self.log.warn(
                    "{kind} {value!r} locked out for {t:g} s after {n} failed logins",
                    kind=key[0], value=key[1], t=self.config.lockout_time,
                    n=self.config.max_failures,
                )
        self._prune()
        return deferLater(self.clock, self.config.failure_delay, lambda: None)

    def succeeded(self, account):
        self._failures.pop(("account", account), None)

    def _prune(self):
        for table in (self._failures, self._lockedUntil):
            while len(table) > MAX_KEYS:
                del table[next(iter(table))]


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
