"""
[listen], [server], [smtp], [submission], [imap], [pop3], [web], [tls] and
[auth]: what the server listens on and what it allows the clients there.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

from pymailer.config.endpoints import validateEndpoint
from pymailer.config.reader import checkReadable


# Order matters: ListenConfig.roles() and the sample file follow it.
ROLES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s",
         "https", "http", "metrics")


@dataclass(frozen=True)
class ListenConfig:
    """
    Twisted server endpoint strings per role; C{None} means the role is off.
    """

    smtp: str | None = None
    submission: str | None = None
    submissions: str | None = None
    imap: str | None = None
    imaps: str | None = None
    pop3: str | None = None
    pop3s: str | None = None
    # The web listener (autoconfig, MTA-STS, metrics; L{pymailer.web}), and
    # the same pages over plain HTTP (Thunderbird asks for autoconfig there).
    https: str | None = None
    http: str | None = None
    # Prometheus /metrics on a listener of its own; without it, /metrics is
    # on the web listener for loopback clients only.
    metrics: str | None = None

    def roles(self) -> dict[str, str]:
        """
        @return: C{{role: endpoint}} for the configured roles only, in the
            canonical order (smtp, submission, submissions, imap, imaps,
            pop3, pop3s, https, http, metrics).
        """
        return {
            role: getattr(self, role)
            for role in ROLES
            if getattr(self, role) is not None
        }


@dataclass(frozen=True)
class SMTPConfig:
    """
    SMTP server limits.  Times are seconds.  C{min_free_disk_factor}: accept a
    message only if free space on the spool is at least this many times the
    declared/maximum size (0 disables the check).
    """

    max_message_size: int = 52428800
    max_recipients: int = 1000
    idle_timeout: float = 300
    max_connections_per_ip: int = 50
    max_connections: int = 1000
    max_errors: int = 20
    min_free_disk_factor: float = 1.5


@dataclass(frozen=True)
class ConnectionLimits:
    """
    [imap], [pop3], [web]: open connections allowed per client IP and in all, per
    listener (L{pymailer.connlimit}).  Generous: Thunderbird opens about
    five IMAP connections per account, and an office behind one NAT
    address has many clients.
    """

    max_connections_per_ip: int = 50
    max_connections: int = 1000


@dataclass(frozen=True)
class WebConfig(ConnectionLimits):
    """
    [web]: the connection limits of each web listener, and
    C{max_uploads_per_user}: how many bodies over
    L{pymailer.web.site.MAX_BODY} (the webmail's attachments, up to
    C{[smtp] max_message_size} each) one logged-in user may be sending
    at once, over every worker process (and node); more get 429 until
    one is done.
    """

    max_uploads_per_user: int = 2


def defaultWorkers():
    """One worker process per CPU core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServerConfig:
    """
    [server]: C{workers} processes serve every listener (see
    L{pymailer.workers}); 1 is one process, as before workers existed.
    C{None} (the key left out) means one per CPU core, decided at start.
    """

    workers: int | None = None

    def workerCount(self):
        return self.workers if self.workers is not None else defaultWorkers()


@dataclass(frozen=True)
class TLSConfig:
    """
    [tls]: one certificate for every TLS listener and STARTTLS.  Without
    cert/key a self-signed certificate is made in data_dir on first start.
    """

    cert: pathlib.Path | None = None
    key: pathlib.Path | None = None


@dataclass(frozen=True)
class AuthConfig:
    """
    [auth]: password logins (SMTP AUTH, IMAP, POP3, the web pages).

    Failed logins are counted within failure_window seconds, and past a
    limit the client is locked out for lockout_time seconds
    (L{pymailer.auth.guard}).  A client address is an IPv4 address or an
    IPv6 /64.  max_failures counts the failures of one account from one
    address: that address is locked out for that account only, so a
    guesser cannot lock the owner out from elsewhere.  Guessing spread over
    many addresses is bounded by max_failures_per_account (the account,
    from every address), and one address guessing many accounts by
    max_failures_per_address (that address, for every account): both
    default to ten times max_failures.
    """

    max_failures: int = 5
    max_failures_per_account: int = 50
    max_failures_per_address: int = 50
    failure_window: float = 60
    lockout_time: float = 300
    failure_delay: float = 2.0
    allow_plaintext_on_loopback: bool = False


@dataclass(frozen=True)
class SubmissionConfig:
    """[submission]: ports 587/465 (RFC 6409, RFC 8314)."""

    hide_client_ip: bool = False


def connectionLimits(reader, defaults):
    """The connection-limit keys of a listener's table (L{ConnectionLimits})."""
    return {key: reader.positiveInt(key, getattr(defaults, key))
            for key in ("max_connections_per_ip", "max_connections")}


def parseListen(reader):
    reader.checkUnknown(set(ROLES))
    endpoints = {}
    for role in ROLES:
        endpoint = reader.string(role)
        if endpoint is None:
            continue
        try:
            validateEndpoint(endpoint)
        except ValueError as e:
            raise reader.error(role, f"bad endpoint {endpoint!r}: {e}")
        endpoints[role] = endpoint
    return ListenConfig(**endpoints)


def parseSMTP(reader):
    d = SMTPConfig()
    smtp = SMTPConfig(
        max_message_size=reader.positiveInt(
            "max_message_size", d.max_message_size),
        max_recipients=reader.positiveInt("max_recipients", d.max_recipients),
        idle_timeout=reader.number("idle_timeout", d.idle_timeout),
        **connectionLimits(reader, d),
        max_errors=reader.positiveInt("max_errors", d.max_errors),
        min_free_disk_factor=reader.number(
            "min_free_disk_factor", d.min_free_disk_factor, strict=False),
    )
    reader.checkUnknown(reader.seen)
    return smtp


def parseConnectionLimits(reader):
    """[imap], [pop3], [web]."""
    limits = ConnectionLimits(**connectionLimits(reader, ConnectionLimits()))
    reader.checkUnknown(reader.seen)
    return limits


def parseWeb(reader):
    """[web]."""
    d = WebConfig()
    web = WebConfig(**connectionLimits(reader, d),
                    max_uploads_per_user=reader.positiveInt("max_uploads_per_user",
                                                            d.max_uploads_per_user))
    reader.checkUnknown(reader.seen)
    return web


def parseTLS(reader, baseDir):
    tls = TLSConfig(cert=reader.path("cert", baseDir), key=reader.path("key", baseDir))
    reader.checkUnknown(reader.seen)
    if (tls.cert is None) != (tls.key is None):
        raise reader.error("cert" if tls.cert is None else "key",
                           "tls.cert and tls.key go together")
    for key, path in (("cert", tls.cert), ("key", tls.key)):
        if path is not None:
            checkReadable(reader, key, path)
    return tls


# The spread-out bounds' default, as a multiple of max_failures.  However
# many addresses guess, an account gets at most max_failures_per_account guesses
# per failure_window + lockout_time (with the defaults 50 per 6 minutes,
# where one address gets 5); and locking the owner out everywhere takes
# ten addresses guessing, not one, while the owner's own typos (at most
# max_failures per address, their devices on a few addresses) stay far
# below it.
SPREAD_FACTOR = 10


def parseAuth(reader):
    d = AuthConfig()
    maxFailures = reader.positiveInt("max_failures", d.max_failures)
    spread = {}
    for key in ("max_failures_per_account", "max_failures_per_address"):
        spread[key] = reader.positiveInt(key, SPREAD_FACTOR * maxFailures)
        if spread[key] < maxFailures:
            raise reader.error(key, f"must be at least max_failures ({maxFailures})")
    auth = AuthConfig(
        max_failures=maxFailures,
        **spread,
        failure_window=reader.number("failure_window", d.failure_window),
        lockout_time=reader.number("lockout_time", d.lockout_time),
        failure_delay=reader.number("failure_delay", d.failure_delay, strict=False),
        allow_plaintext_on_loopback=reader.boolean(
            "allow_plaintext_on_loopback", d.allow_plaintext_on_loopback),
    )
    reader.checkUnknown(reader.seen)
    return auth


def parseSubmission(reader):
    submission = SubmissionConfig(
        hide_client_ip=reader.boolean(
            "hide_client_ip", SubmissionConfig().hide_client_ip))
    reader.checkUnknown(reader.seen)
    return submission


def parseServer(reader):
    server = ServerConfig(workers=reader.positiveInt("workers", None))
    reader.checkUnknown(reader.seen)
    return server
