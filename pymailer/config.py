"""
The configuration file: parsed and validated into frozen dataclasses.

Everything a user can get wrong is caught here, before any socket is opened,
and reported as one line naming the file, the key and the reason (a
L{ConfigError}), so that C{pymailer check-config} and C{twistd pymailer} fail
the same way.  No sockets, no reactor: endpoint strings are checked
syntactically (type, port, C{key=value} form) and bound later by the service.

The file is TOML (stdlib L{tomllib}); see C{etc/pymailer.toml} for every key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import pathlib
import socket
import tomllib
import urllib.parse
from dataclasses import dataclass, field

__all__ = [
    "ConfigError",
    "ListenConfig",
    "SMTPConfig",
    "ConnectionLimits",
    "DeliveryConfig",
    "QueueConfig",
    "MTASTSConfig",
    "DoctorConfig",
    "Config",
    "load",
    "default",
    "loadOrDefault",
    "validateEndpoint",
]


class ConfigError(Exception):
    """
    A configuration problem.  C{str()} is one line:
    C{"<file>: <key>: <reason>"}, or C{"<file>: <reason>"} for a problem with
    the file as a whole.

    @ivar source: the config file path (C{str}), or C{"embedded default"}.
    @ivar key: the dotted key (C{"smtp.max_message_size"}) or C{None}.
    @ivar reason: what is wrong.
    """

    def __init__(self, source, key, reason):
        # One line, always: tomllib and OS messages are, but be sure.
        reason = " ".join(str(reason).split())
        self.source = source
        self.key = key
        self.reason = reason
        parts = [str(source)] + ([key] if key else []) + [reason]
        super().__init__(": ".join(parts))


# --- the dataclasses -------------------------------------------------------

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
class DeliveryConfig:
    """
    Local delivery.  C{recipient_delimiter}: C{"+"} makes C{bob+tag@x} reach
    C{bob@x}; C{""} turns plus-addressing off.
    """

    recipient_delimiter: str = "+"
    # RFC 5321 §4.5.1: postmaster@ every local domain (and a bare
    # "postmaster") must be accepted; without a user or alias of that name,
    # it goes here.
    postmaster: str | None = None
    # Deliver to local mailboxes at the end of DATA, before the 250, when
    # every recipient is a local mailbox (pymailer.intake): no spool file
    # and no second trip through the queue.  False: every message is
    # queued first and delivered by the queue runner.
    direct: bool = True


STORAGE_BACKENDS = ("maildir", "sqlite", "postgresql")
POSTGRESQL = "postgresql"
# What a PostgreSQL DSN may start with (libpq's URI schemes).
_DSN_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class StorageConfig:
    """
    Where the server keeps its state.  C{backend}: C{"sqlite"}, the default
    (metadata in C{data_dir/store/index.sqlite}, content in immutable blob
    files beside it; see L{pymailer.store.sqlite}), C{"maildir"}
    (C{data_dir/mail}, one Maildir per user), or C{"postgresql"}: the mail
    queue, the accounts directory and the message store (content too) in
    the PostgreSQL database at C{dsn} (a libpq URI), shared by every node
    using it, through a pool of at most C{pool_size} connections per
    process (see L{pymailer.store.postgresql}).
    C{queue_lease}: seconds a node's claim on a queued message lasts
    unless renewed (every quarter of it), so how long the mail of a node
    that died waits before another node delivers it.
    C{blobs}: where a PostgreSQL store keeps message content: C{"postgresql"}
    (the default: in the database, so nodes share everything through the
    DSN) or an absolute directory path every node mounts (one machine, or
    NFS), the metadata staying in the database (L{pymailer.store.sharedblobs}).
    """

    backend: str = "sqlite"
    dsn: str | None = None
    pool_size: int = 10
    queue_lease: float = 120.0
    blobs: str = POSTGRESQL

    def blobDirectory(self):
        """The shared directory of message content, or C{None}: in the database."""
        return None if self.blobs == POSTGRESQL else pathlib.Path(self.blobs)


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
class QueueConfig:
    """
    Queue runner.  Times are seconds: retries back off from C{retry_min} to
    C{retry_max}; a message still undelivered after C{max_queue_lifetime}
    bounces.
    """

    max_active: int = 100
    retry_min: float = 300
    retry_max: float = 14400
    max_queue_lifetime: float = 432000
    delay_warning: float = 14400


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
    [auth]: password logins (SMTP AUTH, and IMAP/POP3 later).

    After max_failures failed logins within failure_window seconds, the
    client IP (or the account) is locked out for lockout_time seconds.
    """

    max_failures: int = 5
    failure_window: float = 60
    lockout_time: float = 300
    failure_delay: float = 2.0
    allow_plaintext_on_loopback: bool = False


@dataclass(frozen=True)
class DNSConfig:
    """
    [dns]: the servers every lookup of the server goes to (MX, and SPF,
    DKIM, DMARC later), as "ip" or "ip:port" ("[v6]:port"); empty means the
    system's resolv.conf.
    """

    servers: tuple = ()
    timeout: float = 5.0


@dataclass(frozen=True)
class RelayConfig:
    """
    [relay]: delivery to other domains.

    @ivar port: the destination port (25; tests point it at loopback high
        ports).
    @ivar smarthost: "host:port" to send everything through, or None for
        MX delivery.
    @ivar smarthost_tls: "starttls" (required), "tls" (implicit, RFC 8314),
        or "opportunistic".
    @ivar smarthost_tls_verify: the smarthost's certificate must be valid
        for its host name and signed by a trusted CA (the system's, or
        C{smarthost_ca_file}); C{False} accepts any certificate.  Mail to MX
        hosts stays opportunistic and unverified (RFC 7435).
    @ivar smarthost_auth_plaintext: send the password (AUTH) to the smarthost
        without TLS too; it never goes over a certificate that failed.
    """

    port: int = 25
    smarthost: str | None = None
    smarthost_user: str | None = None
    smarthost_password: str | None = None
    smarthost_tls: str = "opportunistic"
    smarthost_tls_verify: bool = True
    smarthost_ca_file: pathlib.Path | None = None
    smarthost_auth_plaintext: bool = False
    connect_timeout: float = 30.0
    max_connections: int = 20


@dataclass(frozen=True)
class SubmissionConfig:
    """[submission]: ports 587/465 (RFC 6409, RFC 8314)."""

    hide_client_ip: bool = False


@dataclass(frozen=True)
class RateLimitConfig:
    """
    [policy.ratelimit]: per client IP and per authenticated user; 0 turns a
    limit off.

    The defaults never slow a well-behaved peer: a stock Postfix opens one
    connection per message (500 messages = 500 connections within seconds),
    so the connection rate is only a cap on floods (Postfix's own
    smtpd_client_connection_rate_limit is off); what a peer never does is
    guess addresses, hence the tight C{unknown_recipients_per_minute}.
    Concurrent connections per IP are C{[smtp] max_connections_per_ip}.
    """

    connections_per_minute: int = 600
    unknown_recipients_per_minute: int = 20
    messages_per_hour: int = 500
    recipients_per_hour: int = 2000


@dataclass(frozen=True)
class DMARCConfig:
    """
    [policy.dmarc]: C{mark_only_domains} are local domains whose recipients
    get failing mail marked (Authentication-Results) instead of refused or
    filed into Junk.
    """

    mark_only_domains: tuple = ()


@dataclass(frozen=True)
class DNSBLZone:
    """
    One DNS list: C{action} "reject" (554 at RCPT) or "score" (adds
    C{[policy.dnsbl] listing_score}); C{codes}: C{(("127.0.0.2", "SBL"),
    ...)}, the answers that mean listed and their reasons (empty: any
    127.0.0.0/8 answer lists).
    """

    name: str
    action: str = "reject"
    codes: tuple = ()


DNSBL_ACTIONS = ("reject", "score")


@dataclass(frozen=True)
class DNSBLConfig:
    """
    [policy.dnsbl]: C{zones} list client IPs, C{domain_zones} list domains
    (the sender's, and the URLs' in the body); C{allow_zones} (DNSWL) and
    C{allow} (IPs and networks) exempt a client.  A lookup that takes
    longer than C{timeout} counts as not listed; answers are kept
    C{cache_ttl} seconds, at most C{cache_size} of them.
    """

    zones: tuple = ()
    domain_zones: tuple = ()
    allow_zones: tuple = ()
    allow: tuple = ()
    listing_score: float = 3.0
    timeout: float = 5.0
    cache_ttl: float = 300.0
    cache_size: int = 10000


@dataclass(frozen=True)
class GreylistConfig:
    """
    [policy.greylist]: an unknown (client /24 or /64, sender, recipient)
    triplet waits C{delay} seconds; a retry within C{expire} passes and
    the triplet is remembered C{keep} seconds since its last use.
    C{allow}: IPs and networks that never wait.
    """

    delay: float = 300.0
    expire: float = 86400.0
    keep: float = 35 * 86400.0
    allow: tuple = ()


@dataclass(frozen=True)
class RulesConfig:
    """
    [policy.rules]: a message whose spam score (every check's points) is at
    least C{junk_score} is filed into Junk.
    """

    junk_score: float = 5.0


@dataclass(frozen=True)
class ClassifierConfig:
    """
    [policy.classifier]: each user's Bayesian filter, trained by what they
    move into and out of Junk.  A message whose spam probability for a
    recipient is at least C{junk_threshold} goes to that recipient's Junk;
    at least C{reject_threshold} (off unless set) for every recipient, it
    is refused.  A filter trained on fewer than C{min_training} spam or
    ham judges nothing.  A sender (address with SPF or DKIM pass, DKIM
    domain, client IP) with at least C{reputation_min} past verdicts for a
    user, all ham, scores C{reputation_score} and is not filed into Junk.
    """

    junk_threshold: float = 0.95
    reject_threshold: float | None = None
    min_training: int = 10
    reputation_min: int = 3
    reputation_score: float = -2.0


SCANNER_FAIL_MODES = ("open", "closed")


@dataclass(frozen=True)
class ClamAVConfig:
    """
    [policy.clamav]: clamd at C{socket} (a Unix socket path) or C{address}
    ("host:port", TCP; wins when given).  A scan that has not answered in
    C{timeout} seconds, a clamd that is down or refuses the message (over
    its StreamMaxLength) costs, with C{fail = "open"}, nothing but an
    C{X-Virus-Scanned: unscanned (reason)} header; with C{"closed"}, a
    451 4.7.0 the sender retries.
    """

    socket: str = "/run/clamav/clamd.ctl"
    address: str | None = None
    timeout: float = 30.0
    fail: str = "open"


@dataclass(frozen=True)
class RspamdConfig:
    """
    [policy.rspamd]: rspamd's normal worker at C{url} (its C{/checkv2}).
    C{timeout} and C{fail} as in L{ClamAVConfig}; unscanned mail gets
    C{X-Spam-Scanned: unscanned (reason)}.
    """

    url: str = "http://127.0.0.1:11333"
    timeout: float = 30.0
    fail: str = "open"


MTA_STS_MODES = ("testing", "enforce", "none")


@dataclass(frozen=True)
class MTASTSConfig:
    """
    [mta_sts]: the MTA-STS policy served for every local domain (RFC 8461
    §3.2).  C{testing}: senders report TLS failures (TLS-RPT) but deliver
    anyway; C{enforce}: they refuse to deliver without valid TLS to our MX;
    C{none}: a published policy is withdrawn.  C{max_age}: how long senders
    cache it (RFC 8461 §3.2 allows up to 31557600 s).
    """

    mode: str = "testing"
    max_age: int = 604800


# Widely used lists of IPs that send spam: a listed server's mail is
# refused or scored down by many receivers.
DEFAULT_BLOCKLISTS = ("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org")


@dataclass(frozen=True)
class DoctorConfig:
    """
    [doctor]: what C{pymailer doctor} and C{/admin/dns} check beyond the
    records.  C{blocklists}: the DNS blocklist zones the server's public
    addresses are looked up in (RFC 5782).
    """

    blocklists: tuple = DEFAULT_BLOCKLISTS


DEFAULT_CHECKS = ("ratelimit", "spf", "dkim", "arc", "dmarc")


@dataclass(frozen=True)
class PolicyConfig:
    """
    [policy]: the pieces on a message's path, in order (ours and Twisted
    plugins, by name), and their options.

    @ivar authserv_id: the RFC 8601 authserv-id of our Authentication-Results
        (the hostname when not set).
    @ivar plugins: C{{name: dict}}: the C{[policy.NAME]} tables of pieces
        that are not ours, passed to them as they are.
    """

    checks: tuple = DEFAULT_CHECKS
    authserv_id: str | None = None
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    dmarc: DMARCConfig = field(default_factory=DMARCConfig)
    dnsbl: DNSBLConfig = field(default_factory=DNSBLConfig)
    greylist: GreylistConfig = field(default_factory=GreylistConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    clamav: ClamAVConfig = field(default_factory=ClamAVConfig)
    rspamd: RspamdConfig = field(default_factory=RspamdConfig)
    plugins: dict = field(default_factory=dict)

    def options(self):
        """Every piece's options as a C{dict} of C{dict}s."""
        return dict(self.plugins, ratelimit=dataclasses.asdict(self.ratelimit),
                    dmarc=dataclasses.asdict(self.dmarc))


@dataclass(frozen=True)
class Config:
    """
    The whole configuration.

    @ivar data_dir: absolute L{pathlib.Path}: mailboxes, queue, accounts
        database, generated keys.
    @ivar source: the config file path, or C{None} for the embedded default.
    """

    hostname: str
    data_dir: pathlib.Path
    listen: ListenConfig = field(default_factory=ListenConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    source: str | None = None
    tls: TLSConfig = field(default_factory=TLSConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    imap: ConnectionLimits = field(default_factory=ConnectionLimits)
    pop3: ConnectionLimits = field(default_factory=ConnectionLimits)
    web: ConnectionLimits = field(default_factory=ConnectionLimits)
    mta_sts: MTASTSConfig = field(default_factory=MTASTSConfig)
    doctor: DoctorConfig = field(default_factory=DoctorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    @property
    def authservId(self):
        return self.policy.authserv_id or self.hostname


# --- endpoint strings ------------------------------------------------------

# Parameters of Twisted's built-in server endpoint parsers, in positional
# order (twisted.internet.endpoints._parseTCP/_parseSSL/_parseUNIX and the
# tcp6 plugin).  Keeping the signatures lets us catch "tcp:25:bogus=1" now
# rather than as a TypeError at startup.
_BUILTIN_ENDPOINTS = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface",
            "backlog", "extraCertChain", "dhParameters"),
    "unix": ("address", "mode", "backlog", "lockfile"),
}


# The listen backlog when an endpoint names none.  Twisted's is 50: a
# burst of clients above that (every IMAP client reconnecting after a
# restart) overflows the accept queue, and with SYN cookies a client whose
# handshake the kernel then forgot believes it is connected and waits
# forever for a greeting that never comes (seen with 500 IMAP connections
# at once, bench/imap_idle_many.py).  The kernel caps it at somaxconn.
LISTEN_BACKLOG = 1024


def withBacklog(description, backlog=LISTEN_BACKLOG):
    """
    C{description} with C{backlog=} added if it is a built-in endpoint
    (tcp, tcp6, ssl, unix) that names none; anything else unchanged.
    """
    kind = description.partition(":")[0].lower()
    params = _BUILTIN_ENDPOINTS.get(kind)
    if params is None:
        return description
    args, kwargs = splitEndpoint(description)
    if "backlog" in kwargs or len(args) - 1 > params.index("backlog"):
        return description
    return f"{description}:backlog={backlog}"


def splitEndpoint(description):
    """
    Split an endpoint string like Twisted's C{_parse} does: C{:} separates
    arguments, the first C{=} of an argument makes it C{key=value}, and a
    backslash escapes the next character.

    @return: C{(args, kwargs)}.
    @raise ValueError: a trailing backslash.
    """
    args, kwargs = [], {}
    parts, current, ops = [], "", ":="
    chars = iter(description)
    for c in chars:
        if c in ops:
            parts.append(current)
            current = ""
            if c == ":":
                _addArg(parts, args, kwargs)
                parts, ops = [], ":="
            else:
                ops = ":"
        elif c == "\\":
            try:
                current += next(chars)
            except StopIteration:
                raise ValueError("trailing backslash") from None
        else:
            current += c
    parts.append(current)
    _addArg(parts, args, kwargs)
    return args, kwargs


def usesOwnCertificate(description):
    """
    Does an C{ssl:} endpoint name its own key (C{privateKey=}/C{certKey=})?
    If not, the service wraps it in the C{[tls]} certificate.
    """
    _, kwargs = splitEndpoint(description)
    return "privateKey" in kwargs or "certKey" in kwargs


def _addArg(parts, args, kwargs):
    if len(parts) == 1:
        args.append(parts[0])
    else:
        key, value = parts
        if key in kwargs:
            raise ValueError(f"{key} given twice")
        kwargs[key] = value


def _pluginPrefixes():
    """
    @return: the lower-cased prefixes of installed
        C{IStreamServerEndpointStringParser} plugins.  Scanned only when an
        endpoint names a type we do not know, because plugin discovery
        imports every plugin module.
    """
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    return {p.prefix.lower()
            for p in getPlugins(IStreamServerEndpointStringParser)}


def validateEndpoint(description: str) -> None:
    """
    Check a server endpoint string without a reactor.

    @raise ValueError: with the reason, e.g. C{"port must be an integer
        0-65535"}.
    """
    if not description.strip():
        raise ValueError("empty endpoint")
    args, kwargs = splitEndpoint(description)
    if not args or not args[0]:
        raise ValueError("missing endpoint type (e.g. 'tcp:25')")
    kind, positional = args[0], args[1:]
    params = _BUILTIN_ENDPOINTS.get(kind)
    if params is None:
        if kind.lower() not in _pluginPrefixes():
            raise ValueError(
                f"unknown endpoint type {kind!r} (expected tcp, tcp6, ssl,"
                " unix or an installed endpoint plugin)")
        return  # The plugin parses its own arguments.
    if len(positional) > len(params):
        raise ValueError(f"too many arguments for {kind}")
    bound = dict(zip(params, positional))
    for key, value in kwargs.items():
        if key not in params:
            raise ValueError(f"unknown argument {key!r} for {kind}")
        if key in bound:
            raise ValueError(f"{key} given twice")
        bound[key] = value
    if params[0] not in bound:
        raise ValueError(f"missing {params[0]}")
    if kind == "unix":
        if not bound["address"]:
            raise ValueError("missing address")
        return
    port = bound["port"]
    if not (port.isascii() and port.isdigit() and 0 <= int(port) <= 65535):
        raise ValueError("port must be an integer 0-65535")
    if "backlog" in bound and not (bound["backlog"].isascii()
                                   and bound["backlog"].isdigit()):
        raise ValueError("backlog must be a non-negative integer")


# --- loading ---------------------------------------------------------------

def _show(value):
    """Render a bad value the way the user wrote it (TOML spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class _Reader:
    """Typed access to one TOML table, naming keys in errors."""

    def __init__(self, source, table, prefix=""):
        self.source = source
        self.table = table
        self.prefix = prefix
        self.seen = set()

    def error(self, key, reason):
        return ConfigError(self.source, self.prefix + key, reason)

    def get(self, key):
        self.seen.add(key)
        return self.table.get(key)

    def checkUnknown(self, known):
        for key in self.table:
            if key not in known:
                raise self.error(key, "unknown key")

    def positiveInt(self, key, default):
        value = self.get(key)
        if value is None:
            return default
        # bool is a subclass of int: 'true' is not a size.
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(
                key, f"expected a positive integer, got {_show(value)}")
        return value

    def number(self, key, default, minimum=0.0, strict=True):
        value = self.get(key)
        if value is None:
            return default
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and value == value and value != float("inf"))
        if ok:
            ok = value > minimum if strict else value >= minimum
        if not ok:
            what = ("a positive number" if (strict and minimum == 0)
                    else f"a number >= {minimum:g}" if not strict
                    else f"a number > {minimum:g}")
            raise self.error(key, f"expected {what}, got {_show(value)}")
        return float(value)

    def string(self, key, required=False):
        value = self.get(key)
        if value is None:
            if required:
                raise self.error(key, "missing required key")
            return None
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_show(value)}")
        return value

    def hostPort(self, key, defaultPort):
        """A C{"host:port"} string (checked by L{parseHostPort}), or C{None}."""
        value = self.string(key)
        if value is not None:
            try:
                parseHostPort(value, defaultPort)
            except ValueError as e:
                raise self.error(key, f"bad host:port {value!r}: {e}")
        return value

    def boolean(self, key, default):
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_show(value)}")
        return value

    def path(self, key, baseDir):
        value = self.string(key)
        if value is None:
            return None
        if not value or "\0" in value:
            raise self.error(key, "expected a file path")
        path = pathlib.Path(value)
        return path if path.is_absolute() else baseDir / path

    def table_(self, key):
        value = self.get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_show(value)}")
        return _Reader(self.source, value, self.prefix + key + ".")


def _checkHostname(reader, hostname):
    """
    The EHLO name: a dotted DNS name (letters, digits, '-', '_').  Checked
    because it goes verbatim into every EHLO and Received: header.
    """
    labels = hostname.rstrip(".").split(".")
    ok = 0 < len(hostname) <= 253 and all(
        0 < len(label) <= 63
        and label.isascii()
        and all(c.isalnum() or c in "-_" for c in label)
        and not label.startswith("-") and not label.endswith("-")
        for label in labels)
    if not ok:
        raise reader.error(
            "hostname", f"not a valid host name: {_show(hostname)}")


def _checkReadable(reader, key, path):
    if not os.access(path, os.R_OK):
        reason = "no such file" if not path.exists() else "not readable"
        raise reader.error(key, f"cannot read {path}: {reason}")


def _parse(data, source, baseDir):
    top = _Reader(source, data)
    top.checkUnknown(
        {"hostname", "data_dir", "listen", "smtp", "delivery", "queue",
         "tls", "auth", "submission", "dns", "relay", "policy", "imap", "pop3", "web",
         "mta_sts", "storage", "doctor", "server"})

    hostname = top.string("hostname", required=True)
    _checkHostname(top, hostname)

    dataDir = top.string("data_dir", required=True)
    if not dataDir or "\0" in dataDir:
        raise top.error("data_dir", "expected a directory path")
    dataDirPath = pathlib.Path(dataDir)
    if not dataDirPath.is_absolute():
        # Relative to the config file, not to wherever twistd was started.
        dataDirPath = baseDir / dataDirPath

    listenT = top.table_("listen")
    listenT.checkUnknown(set(ROLES))
    endpoints = {}
    for role in ROLES:
        endpoint = listenT.string(role)
        if endpoint is None:
            continue
        try:
            validateEndpoint(endpoint)
        except ValueError as e:
            raise listenT.error(role, f"bad endpoint {endpoint!r}: {e}")
        endpoints[role] = endpoint
    listen = ListenConfig(**endpoints)

    smtpT = top.table_("smtp")
    d = SMTPConfig()
    smtp = SMTPConfig(
        max_message_size=smtpT.positiveInt(
            "max_message_size", d.max_message_size),
        max_recipients=smtpT.positiveInt("max_recipients", d.max_recipients),
        idle_timeout=smtpT.number("idle_timeout", d.idle_timeout),
        **_connectionLimits(smtpT, d),
        max_errors=smtpT.positiveInt("max_errors", d.max_errors),
        min_free_disk_factor=smtpT.number(
            "min_free_disk_factor", d.min_free_disk_factor, strict=False),
    )
    smtpT.checkUnknown(smtpT.seen)

    deliveryT = top.table_("delivery")
    delimiter = deliveryT.string("recipient_delimiter")
    if delimiter is None:
        delimiter = DeliveryConfig().recipient_delimiter
    if delimiter and (len(delimiter) != 1 or delimiter.isalnum()
                      or not delimiter.isprintable() or delimiter.isspace()
                      or delimiter in '@"'):
        raise deliveryT.error(
            "recipient_delimiter",
            "expected one punctuation character (e.g. '+') or '' for none,"
            f" got {_show(delimiter)}")
    postmaster = deliveryT.string("postmaster")
    if postmaster is not None and (postmaster.count("@") != 1 or postmaster.startswith("@")
                                   or postmaster.endswith("@")):
        raise deliveryT.error("postmaster", f"expected an address, got {_show(postmaster)}")
    delivery = DeliveryConfig(recipient_delimiter=delimiter, postmaster=postmaster,
                              direct=deliveryT.boolean("direct", DeliveryConfig.direct))
    deliveryT.checkUnknown(deliveryT.seen)

    queueT = top.table_("queue")
    d = QueueConfig()
    queue = QueueConfig(
        max_active=queueT.positiveInt("max_active", d.max_active),
        retry_min=queueT.number("retry_min", d.retry_min),
        retry_max=queueT.number("retry_max", d.retry_max),
        max_queue_lifetime=queueT.number(
            "max_queue_lifetime", d.max_queue_lifetime),
        delay_warning=queueT.number("delay_warning", d.delay_warning),
    )
    queueT.checkUnknown(queueT.seen)
    if queue.retry_max < queue.retry_min:
        raise queueT.error(
            "retry_max",
            f"must be >= queue.retry_min ({queue.retry_min:g}),"
            f" got {queue.retry_max:g}")

    tlsT = top.table_("tls")
    tls = TLSConfig(cert=tlsT.path("cert", baseDir), key=tlsT.path("key", baseDir))
    tlsT.checkUnknown(tlsT.seen)
    if (tls.cert is None) != (tls.key is None):
        raise tlsT.error("cert" if tls.cert is None else "key",
                         "tls.cert and tls.key go together")
    for key, path in (("cert", tls.cert), ("key", tls.key)):
        if path is not None:
            _checkReadable(tlsT, key, path)

    authT = top.table_("auth")
    d = AuthConfig()
    auth = AuthConfig(
        max_failures=authT.positiveInt("max_failures", d.max_failures),
        failure_window=authT.number("failure_window", d.failure_window),
        lockout_time=authT.number("lockout_time", d.lockout_time),
        failure_delay=authT.number("failure_delay", d.failure_delay, strict=False),
        allow_plaintext_on_loopback=authT.boolean(
            "allow_plaintext_on_loopback", d.allow_plaintext_on_loopback),
    )
    authT.checkUnknown(authT.seen)

    submissionT = top.table_("submission")
    submission = SubmissionConfig(
        hide_client_ip=submissionT.boolean(
            "hide_client_ip", SubmissionConfig().hide_client_ip))
    submissionT.checkUnknown(submissionT.seen)

    dnsT = top.table_("dns")
    servers = dnsT.get("servers")
    if servers is None:
        servers = []
    if not isinstance(servers, list) or not all(isinstance(x, str) for x in servers):
        raise dnsT.error("servers", f"expected an array of strings, got {_show(servers)}")
    for server in servers:
        try:
            parseHostPort(server, 53)
        except ValueError as e:
            raise dnsT.error("servers", f"bad server {server!r}: {e}")
    dns = DNSConfig(servers=tuple(servers),
                    timeout=dnsT.number("timeout", DNSConfig().timeout))
    dnsT.checkUnknown(dnsT.seen)

    relayT = top.table_("relay")
    d = RelayConfig()
    port = relayT.get("port")
    if port is None:
        port = d.port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise relayT.error("port", f"expected a port number 1-65535, got {_show(port)}")
    smarthost = relayT.hostPort("smarthost", 25)
    smarthostTLS = relayT.string("smarthost_tls") or d.smarthost_tls
    if smarthostTLS not in ("starttls", "tls", "opportunistic"):
        raise relayT.error("smarthost_tls",
                           f"expected starttls, tls or opportunistic, got {_show(smarthostTLS)}")
    relay = RelayConfig(
        port=port,
        smarthost=smarthost,
        smarthost_user=relayT.string("smarthost_user"),
        smarthost_password=relayT.string("smarthost_password"),
        smarthost_tls=smarthostTLS,
        smarthost_tls_verify=relayT.boolean("smarthost_tls_verify", d.smarthost_tls_verify),
        smarthost_ca_file=relayT.path("smarthost_ca_file", baseDir),
        smarthost_auth_plaintext=relayT.boolean(
            "smarthost_auth_plaintext", d.smarthost_auth_plaintext),
        connect_timeout=relayT.number("connect_timeout", d.connect_timeout),
        max_connections=relayT.positiveInt("max_connections", d.max_connections),
    )
    relayT.checkUnknown(relayT.seen)
    if relay.smarthost_ca_file is not None:
        _checkReadable(relayT, "smarthost_ca_file", relay.smarthost_ca_file)

    policy = _parsePolicy(top.table_("policy"))

    limits = {}
    for section in ("imap", "pop3", "web"):
        reader = top.table_(section)
        limits[section] = ConnectionLimits(**_connectionLimits(reader, ConnectionLimits()))
        reader.checkUnknown(reader.seen)

    stsT = top.table_("mta_sts")
    d = MTASTSConfig()
    mode = stsT.string("mode") or d.mode
    if mode not in MTA_STS_MODES:
        raise stsT.error("mode", f"expected testing, enforce or none, got {_show(mode)}")
    maxAge = stsT.positiveInt("max_age", d.max_age)
    if maxAge > 31557600:
        # RFC 8461 §3.2: max_age is at most 31557600 (about a year).
        raise stsT.error("max_age", f"at most 31557600 (RFC 8461), got {maxAge}")
    stsT.checkUnknown(stsT.seen)

    doctorT = top.table_("doctor")
    doctor = DoctorConfig(blocklists=tuple(
        _zoneName(doctorT, "blocklists", zone)
        for zone in _stringList(doctorT, "blocklists", DEFAULT_BLOCKLISTS)))
    doctorT.checkUnknown(doctorT.seen)

    storage = _parseStorage(top.table_("storage"))

    serverT = top.table_("server")
    server = ServerConfig(workers=serverT.positiveInt("workers", None))
    serverT.checkUnknown(serverT.seen)

    return Config(
        hostname=hostname,
        data_dir=dataDirPath,
        listen=listen,
        smtp=smtp,
        delivery=delivery,
        queue=queue,
        source=source,
        tls=tls,
        auth=auth,
        submission=submission,
        dns=dns,
        relay=relay,
        policy=policy,
        mta_sts=MTASTSConfig(mode=mode, max_age=maxAge),
        doctor=doctor,
        storage=storage,
        server=server,
        **limits,
    )


def _parseStorage(reader):
    backend = reader.string("backend") or StorageConfig().backend
    if backend not in STORAGE_BACKENDS:
        raise reader.error(
            "backend", f"expected {', '.join(STORAGE_BACKENDS[:-1])} or"
            f" {STORAGE_BACKENDS[-1]}, got {_show(backend)}")
    dsn = reader.string("dsn")
    poolSize = reader.positiveInt("pool_size", StorageConfig().pool_size)
    # At least a second: renewals (every quarter) must fit in it.
    lease = reader.number("queue_lease", StorageConfig().queue_lease, minimum=1.0, strict=False)
    blobs = reader.string("blobs") or POSTGRESQL
    if blobs != POSTGRESQL and (not os.path.isabs(blobs) or "\0" in blobs):
        raise reader.error("blobs", f'expected "{POSTGRESQL}" or an absolute directory path,'
                           f" got {_show(blobs)}")
    if backend != POSTGRESQL:
        for key in ("dsn", "pool_size", "queue_lease", "blobs"):
            if reader.get(key) is not None:
                raise reader.error(key, f'only for backend = "{POSTGRESQL}"')
    elif dsn is None:
        raise reader.error("dsn", f'missing: backend = "{POSTGRESQL}" needs the'
                           ' database\'s address, e.g. "postgresql://pymailer@db.example.org/mail"')
    else:
        _checkDSN(reader, dsn)
    reader.checkUnknown(reader.seen)
    return StorageConfig(backend=backend, dsn=dsn, pool_size=poolSize, queue_lease=lease,
                         blobs=blobs)


def _checkDSN(reader, dsn):
    """
    A libpq URI (C{postgresql://[user@][host][:port][/dbname][?param=value]},
    libpq's "Connection URIs"); checked for form only: no connection here.
    The password is better in C{~/.pgpass} or C{PGPASSWORD} than here.
    """
    try:
        parsed = urllib.parse.urlsplit(dsn)
        parsed.port  # noqa: B018 (raises on a bad port)
    except ValueError as e:
        raise reader.error("dsn", f"not a postgresql:// URI: {e}") from None
    if parsed.scheme not in _DSN_SCHEMES or "\0" in dsn or any(c.isspace() for c in dsn):
        raise reader.error("dsn", "expected a URI starting with postgresql://,"
                           f" got {_show(dsn.split(':', 1)[0] + ':...')}")


def _connectionLimits(reader, defaults):
    """The connection-limit keys of a listener's table (L{ConnectionLimits})."""
    return {key: reader.positiveInt(key, getattr(defaults, key))
            for key in ("max_connections_per_ip", "max_connections")}


def _stringList(reader, key, default):
    value = reader.get(key)
    if value is None:
        return tuple(default)
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise reader.error(key, f"expected an array of strings, got {_show(value)}")
    return tuple(value)


def _nonNegativeInt(reader, key, default):
    value = reader.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise reader.error(key, f"expected an integer >= 0, got {_show(value)}")
    return value


def _parsePolicy(policyT):
    checks = _stringList(policyT, "checks", DEFAULT_CHECKS)
    repeated = sorted({c for c in checks if checks.count(c) > 1})
    if repeated:
        raise policyT.error("checks", f"names {', '.join(map(repr, repeated))} twice")
    if "dmarc" in checks:
        # DMARC judges the SPF and DKIM results of the pieces before it.
        for needed in ("spf", "dkim"):
            if needed not in checks[:checks.index("dmarc")]:
                raise policyT.error(
                    "checks", f"'dmarc' needs {needed!r} before it (it judges their results)")
    authservId = policyT.string("authserv_id")
    if authservId is not None and (not authservId or any(c in authservId for c in " ;()\"\\")):
        raise policyT.error("authserv_id", f"not a valid authserv-id: {_show(authservId)}")

    rateT = policyT.table_("ratelimit")
    d = RateLimitConfig()
    ratelimit = RateLimitConfig(**{
        key: _nonNegativeInt(rateT, key, getattr(d, key))
        for key in (f.name for f in dataclasses.fields(RateLimitConfig))
    })
    rateT.checkUnknown(rateT.seen)

    dmarcT = policyT.table_("dmarc")
    dmarc = DMARCConfig(mark_only_domains=tuple(
        x.lower() for x in _stringList(dmarcT, "mark_only_domains", ())))
    dmarcT.checkUnknown(dmarcT.seen)

    dnsbl = _parseDNSBL(policyT.table_("dnsbl"))
    greylistT = policyT.table_("greylist")
    d = GreylistConfig()
    greylist = GreylistConfig(
        delay=greylistT.number("delay", d.delay, strict=False),
        expire=greylistT.number("expire", d.expire),
        keep=greylistT.number("keep", d.keep),
        allow=_networks(greylistT, "allow"))
    greylistT.checkUnknown(greylistT.seen)
    rulesT = policyT.table_("rules")
    rules = RulesConfig(junk_score=rulesT.number("junk_score", RulesConfig.junk_score))
    rulesT.checkUnknown(rulesT.seen)
    classifier = _parseClassifier(policyT.table_("classifier"))
    clamav = _parseClamAV(policyT.table_("clamav"))
    rspamd = _parseRspamd(policyT.table_("rspamd"))

    plugins = {}
    for key, value in policyT.table.items():
        if key in policyT.seen:
            continue
        if not isinstance(value, dict):
            raise policyT.error(key, "unknown key")
        if key not in checks:
            raise policyT.error(key, f"options for {key!r}, which policy.checks does not name")
        plugins[key] = dict(value)
    return PolicyConfig(checks=checks, authserv_id=authservId, ratelimit=ratelimit,
                        dmarc=dmarc, dnsbl=dnsbl, greylist=greylist, rules=rules,
                        classifier=classifier, clamav=clamav, rspamd=rspamd, plugins=plugins)


def _parseClassifier(reader):
    d = ClassifierConfig()

    def probability(key, default):
        value = reader.number(key, default)
        if value is not None and not 0.5 < value <= 1.0:
            # At or below 0.5 the filter would act on mail it thinks is ham.
            raise reader.error(key, f"expected a probability above 0.5 and at most 1, got {value}")
        return value

    config = ClassifierConfig(
        junk_threshold=probability("junk_threshold", d.junk_threshold),
        reject_threshold=probability("reject_threshold", None),
        min_training=_nonNegativeInt(reader, "min_training", d.min_training),
        reputation_min=_nonNegativeInt(reader, "reputation_min", d.reputation_min),
        reputation_score=reader.number("reputation_score", d.reputation_score,
                                       minimum=-100.0))
    reader.checkUnknown(reader.seen)
    return config


def _scannerFail(reader):
    fail = reader.string("fail") or "open"
    if fail not in SCANNER_FAIL_MODES:
        raise reader.error("fail", f"expected open or closed, got {_show(fail)}")
    return fail


def _parseClamAV(reader):
    d = ClamAVConfig()
    path = reader.string("socket")
    if path is not None and not path.startswith("/"):
        raise reader.error("socket", f"expected an absolute path, got {_show(path)}")
    address = reader.hostPort("address", 3310)
    config = ClamAVConfig(socket=path or d.socket, address=address,
                          timeout=reader.number("timeout", d.timeout),
                          fail=_scannerFail(reader))
    reader.checkUnknown(reader.seen)
    return config


def _parseRspamd(reader):
    d = RspamdConfig()
    url = reader.string("url") or d.url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise reader.error("url", f"expected an http:// or https:// URL, got {_show(url)}")
    config = RspamdConfig(url=url.rstrip("/"), timeout=reader.number("timeout", d.timeout),
                          fail=_scannerFail(reader))
    reader.checkUnknown(reader.seen)
    return config


def _networks(reader, key):
    """An array of IPs and networks ("192.0.2.0/24", "2001:db8::1")."""
    nets = _stringList(reader, key, ())
    for net in nets:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise reader.error(key, f"not an IP address or network: {_show(net)}") from None
    return nets


def _zoneName(reader, key, name):
    labels = name.rstrip(".").split(".")
    if not all(0 < len(label) <= 63 and label.isascii() and " " not in label
               for label in labels) or len(labels) < 2:
        raise reader.error(key, f"not a DNS zone: {_show(name)}")
    return name.rstrip(".").lower()


def _parseDNSBL(reader):
    """
    [policy.dnsbl]: C{zones = ["zen.spamhaus.org=reject", "bl.test=score"]}
    (reject when no action is named), and return codes with reasons in
    C{[policy.dnsbl.zone."zen.spamhaus.org"] "127.0.0.2" = "SBL"}.
    """
    codesT = reader.table_("zone")
    codes = {}
    for zone, table in codesT.table.items():
        codesT.get(zone)
        name = _zoneName(codesT, zone, zone)
        if not isinstance(table, dict):
            raise codesT.error(zone, f"expected a table, got {_show(table)}")
        for code, reason in table.items():
            try:
                ok = ipaddress.ip_address(code).version == 4 and isinstance(reason, str)
            except ValueError:
                ok = False
            if not ok:
                raise codesT.error(
                    f"{zone}.{code}", 'expected "127.0.0.N" = "reason"')
        codes[name] = tuple(table.items())

    def zones(key):
        out = []
        for entry in _stringList(reader, key, ()):
            name, _, action = entry.partition("=")
            action = action or "reject"
            if action not in DNSBL_ACTIONS:
                raise reader.error(
                    key, f"{_show(entry)}: action must be one of {', '.join(DNSBL_ACTIONS)}")
            name = _zoneName(reader, key, name)
            out.append(DNSBLZone(name, action, codes.get(name, ())))
        return tuple(out)

    d = DNSBLConfig()
    config = DNSBLConfig(
        zones=zones("zones"),
        domain_zones=zones("domain_zones"),
        allow_zones=tuple(_zoneName(reader, "allow_zones", z)
                          for z in _stringList(reader, "allow_zones", ())),
        allow=_networks(reader, "allow"),
        listing_score=reader.number("listing_score", d.listing_score, strict=False),
        timeout=reader.number("timeout", d.timeout),
        cache_ttl=reader.number("cache_ttl", d.cache_ttl, strict=False),
        cache_size=_nonNegativeInt(reader, "cache_size", d.cache_size))
    named = {z.name for z in config.zones + config.domain_zones}
    for name in codes:
        if name not in named:
            raise codesT.error(name, "return codes for a zone that zones and domain_zones do not name")
    reader.checkUnknown(reader.seen)
    return config


def parseHostPort(text, defaultPort):
    """
    "host", "host:port", "[v6]" or "[v6]:port" -> C{(host, port)}.
    @raise ValueError: malformed.
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("expected [address]:port")
        portText = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, portText = text.split(":")
    else:
        host, portText = text, None
    if not host:
        raise ValueError("empty host")
    if portText is None:
        return host, defaultPort
    if not portText.isdigit() or not 0 < int(portText) < 65536:
        raise ValueError("port must be an integer 1-65535")
    return host, int(portText)


def load(path) -> Config:
    """
    Read and validate a config file.

    @param path: C{str} or L{pathlib.Path}.
    @raise ConfigError: one line naming the file, the key and the reason.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(
            source, None,
            f"cannot read config file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            source, None,
            f"cannot read config file: not UTF-8 (byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, None, f"TOML syntax error: {e}") from None
    baseDir = pathlib.Path(os.path.abspath(source)).parent
    return _parse(data, source, baseDir)


def default(cwd=None) -> Config:
    """
    The embedded default: every role on 127.0.0.1 high ports (no root
    needed, nothing exposed), data in C{<cwd>/pymailer-data}.  For trying
    pymailer out, not for production.
    """
    if cwd is None:
        cwd = os.getcwd()
    local = ":interface=127.0.0.1"
    return Config(
        hostname=socket.getfqdn() or "localhost",
        data_dir=pathlib.Path(os.path.abspath(cwd)) / "pymailer-data",
        listen=ListenConfig(
            smtp="tcp:2525" + local,
            submission="tcp:2587" + local,
            submissions="ssl:2465" + local,
            imap="tcp:1143" + local,
            imaps="ssl:1993" + local,
            pop3="tcp:1110" + local,
            pop3s="ssl:1995" + local,
            https="ssl:8443" + local,
        ),
        smtp=SMTPConfig(),
        delivery=DeliveryConfig(),
        queue=QueueConfig(),
        source=None,
    )


def loadOrDefault(path: str | None) -> Config:
    """
    L{load} C{path}, or the embedded L{default} if C{path} is C{None}.
    """
    if path is None:
        return default()
    return load(path)
