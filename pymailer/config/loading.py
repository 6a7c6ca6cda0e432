"""
The whole configuration (L{Config}): the file read, parsed section by
section, and the embedded default.
"""

from __future__ import annotations

import os
import pathlib
import socket
import tomllib
from dataclasses import dataclass, field

from pymailer.config.delivery import (
    DeliveryConfig, DNSConfig, QueueConfig, RelayConfig, parseDelivery, parseDNS, parseQueue,
    parseRelay)
from pymailer.config.domain import DoctorConfig, MTASTSConfig, parseDoctor, parseMTASTS
from pymailer.config.listening import (
    AuthConfig, ConnectionLimits, ListenConfig, ServerConfig, SMTPConfig, SubmissionConfig,
    TLSConfig, WebConfig, parseAuth, parseConnectionLimits, parseListen, parseServer, parseSMTP,
    parseSubmission, parseTLS, parseWeb)
from pymailer.config.policy import PolicyConfig, parsePolicy
from pymailer.config.reader import ConfigError, TableReader, showValue
from pymailer.config.storage import StorageConfig, parseStorage


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
    web: WebConfig = field(default_factory=WebConfig)
    mta_sts: MTASTSConfig = field(default_factory=MTASTSConfig)
    doctor: DoctorConfig = field(default_factory=DoctorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    @property
    def authservId(self):
        return self.policy.authserv_id or self.hostname


def checkHostname(reader, hostname):
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
            "hostname", f"not a valid host name: {showValue(hostname)}")


def parseConfig(data, source, baseDir):
    """
    The parsed TOML C{data} of C{source} as a L{Config}.  The sections are
    read in a fixed order, so a file with several mistakes always names
    the same one first.
    """
    top = TableReader(source, data)
    top.checkUnknown(
        {"hostname", "data_dir", "listen", "smtp", "delivery", "queue",
         "tls", "auth", "submission", "dns", "relay", "policy", "imap", "pop3", "web",
         "mta_sts", "storage", "doctor", "server"})

    hostname = top.string("hostname", required=True)
    checkHostname(top, hostname)

    dataDir = top.string("data_dir", required=True)
    if not dataDir or "\0" in dataDir:
        raise top.error("data_dir", "expected a directory path")
    dataDirPath = pathlib.Path(dataDir)
    if not dataDirPath.is_absolute():
        # Relative to the config file, not to wherever twistd was started.
        dataDirPath = baseDir / dataDirPath

    listen = parseListen(top.table_("listen"))
    smtp = parseSMTP(top.table_("smtp"))
    delivery = parseDelivery(top.table_("delivery"))
    queue = parseQueue(top.table_("queue"))
    tls = parseTLS(top.table_("tls"), baseDir)
    auth = parseAuth(top.table_("auth"))
    submission = parseSubmission(top.table_("submission"))
    dns = parseDNS(top.table_("dns"))
    relay = parseRelay(top.table_("relay"), baseDir)
    policy = parsePolicy(top.table_("policy"))
    limits = {section: parseConnectionLimits(top.table_(section))
              for section in ("imap", "pop3")}
    limits["web"] = parseWeb(top.table_("web"))
    mtaSTS = parseMTASTS(top.table_("mta_sts"))
    doctor = parseDoctor(top.table_("doctor"))
    storage = parseStorage(top.table_("storage"))
    server = parseServer(top.table_("server"))

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
        mta_sts=mtaSTS,
        doctor=doctor,
        storage=storage,
        server=server,
        **limits,
    )


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
    return parseConfig(data, source, baseDir)


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
