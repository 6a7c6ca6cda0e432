"""
[delivery], [queue], [dns] and [relay]: how accepted mail reaches its
recipients, here or elsewhere.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from pymailer.config.reader import checkReadable, parseHostPort, showValue


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


@dataclass(frozen=True)
class QueueConfig:
    """
    Queue runner.  Times are seconds: retries back off from C{retry_min} to
    C{retry_max}; a message still undelivered after C{max_queue_lifetime}
    bounces.  A message whose delivery was taken over from a process that
    stopped mid-delivery C{max_takeovers} times in a row (a message that
    crashes the server) is put on hold.
    """

    max_active: int = 100
    retry_min: float = 300
    retry_max: float = 14400
    max_queue_lifetime: float = 432000
    delay_warning: float = 14400
    max_takeovers: int = 5


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


def parseDelivery(reader):
    delimiter = reader.string("recipient_delimiter")
    if delimiter is None:
        delimiter = DeliveryConfig().recipient_delimiter
    if delimiter and (len(delimiter) != 1 or delimiter.isalnum()
                      or not delimiter.isprintable() or delimiter.isspace()
                      or delimiter in '@"'):
        raise reader.error(
            "recipient_delimiter",
            "expected one punctuation character (e.g. '+') or '' for none,"
            f" got {showValue(delimiter)}")
    postmaster = reader.string("postmaster")
    if postmaster is not None and (postmaster.count("@") != 1 or postmaster.startswith("@")
                                   or postmaster.endswith("@")):
        raise reader.error("postmaster", f"expected an address, got {showValue(postmaster)}")
    delivery = DeliveryConfig(recipient_delimiter=delimiter, postmaster=postmaster,
                              direct=reader.boolean("direct", DeliveryConfig.direct))
    reader.checkUnknown(reader.seen)
    return delivery


def parseQueue(reader):
    d = QueueConfig()
    queue = QueueConfig(
        max_active=reader.positiveInt("max_active", d.max_active),
        retry_min=reader.number("retry_min", d.retry_min),
        retry_max=reader.number("retry_max", d.retry_max),
        max_queue_lifetime=reader.number(
            "max_queue_lifetime", d.max_queue_lifetime),
        delay_warning=reader.number("delay_warning", d.delay_warning),
        max_takeovers=reader.positiveInt("max_takeovers", d.max_takeovers),
    )
    reader.checkUnknown(reader.seen)
    if queue.retry_max < queue.retry_min:
        raise reader.error(
            "retry_max",
            f"must be >= queue.retry_min ({queue.retry_min:g}),"
            f" got {queue.retry_max:g}")
    return queue


def parseDNS(reader):
    servers = reader.get("servers")
    if servers is None:
        servers = []
    if not isinstance(servers, list) or not all(isinstance(x, str) for x in servers):
        raise reader.error("servers", f"expected an array of strings, got {showValue(servers)}")
    for server in servers:
        try:
            parseHostPort(server, 53)
        except ValueError as e:
            raise reader.error("servers", f"bad server {server!r}: {e}")
    dns = DNSConfig(servers=tuple(servers),
                    timeout=reader.number("timeout", DNSConfig().timeout))
    reader.checkUnknown(reader.seen)
    return dns


def parseRelay(reader, baseDir):
    d = RelayConfig()
    port = reader.get("port")
    if port is None:
        port = d.port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise reader.error("port", f"expected a port number 1-65535, got {showValue(port)}")
    smarthost = reader.hostPort("smarthost", 25)
    smarthostTLS = reader.string("smarthost_tls") or d.smarthost_tls
    if smarthostTLS not in ("starttls", "tls", "opportunistic"):
        raise reader.error("smarthost_tls",
                           f"expected starttls, tls or opportunistic, got {showValue(smarthostTLS)}")
    relay = RelayConfig(
        port=port,
        smarthost=smarthost,
        smarthost_user=reader.string("smarthost_user"),
        smarthost_password=reader.string("smarthost_password"),
        smarthost_tls=smarthostTLS,
        smarthost_tls_verify=reader.boolean("smarthost_tls_verify", d.smarthost_tls_verify),
        smarthost_ca_file=reader.path("smarthost_ca_file", baseDir),
        smarthost_auth_plaintext=reader.boolean(
            "smarthost_auth_plaintext", d.smarthost_auth_plaintext),
        connect_timeout=reader.number("connect_timeout", d.connect_timeout),
        max_connections=reader.positiveInt("max_connections", d.max_connections),
    )
    reader.checkUnknown(reader.seen)
    if relay.smarthost_ca_file is not None:
        checkReadable(reader, "smarthost_ca_file", relay.smarthost_ca_file)
    return relay
