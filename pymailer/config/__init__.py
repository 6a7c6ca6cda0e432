"""
The configuration file: parsed and validated into frozen dataclasses.

Everything a user can get wrong is caught here, before any socket is opened,
and reported as one line naming the file, the key and the reason (a
L{ConfigError}), so that C{pymailer check-config} and C{twistd pymailer} fail
the same way.  No sockets, no reactor: endpoint strings are checked
syntactically (type, port, C{key=value} form) and bound later by the service.

The file is TOML (stdlib L{tomllib}); see C{etc/pymailer.toml} for every key.

One module per concern, every name importable from here:
  - L{reader}: the typed TOML table reader and L{ConfigError};
  - L{endpoints}: Twisted endpoint strings;
  - L{listening}: [listen], [server], [smtp], [submission], [imap], [pop3],
    [web], [tls], [auth];
  - L{delivery}: [delivery], [queue], [dns], [relay];
  - L{storage}: [storage];
  - L{policy}, L{dnsbl}, L{scanners}: [policy] and its tables;
  - L{domain}: [mta_sts], [doctor];
  - L{loading}: the whole L{Config}, L{load}, L{default}.
"""

from pymailer.config.delivery import DeliveryConfig, DNSConfig, QueueConfig, RelayConfig
from pymailer.config.dnsbl import DNSBL_ACTIONS, DNSBLConfig, DNSBLZone
from pymailer.config.domain import DEFAULT_BLOCKLISTS, MTA_STS_MODES, DoctorConfig, MTASTSConfig
from pymailer.config.endpoints import (
    _BUILTIN_ENDPOINTS, LISTEN_BACKLOG, splitEndpoint, usesOwnCertificate, validateEndpoint,
    withBacklog)
from pymailer.config.listening import (
    ROLES, AuthConfig, ConnectionLimits, ListenConfig, ServerConfig, SMTPConfig,
    SubmissionConfig, TLSConfig, WebConfig, defaultWorkers)
from pymailer.config.loading import Config, default, load, loadOrDefault
from pymailer.config.loading import parseConfig as _parse
from pymailer.config.policy import (
    DEFAULT_CHECKS, DMARCConfig, GreylistConfig, PolicyConfig, RateLimitConfig, RulesConfig)
from pymailer.config.reader import ConfigError, parseHostPort
from pymailer.config.scanners import (
    SCANNER_FAIL_MODES, ClamAVConfig, ClassifierConfig, RspamdConfig)
from pymailer.config.storage import POSTGRESQL, STORAGE_BACKENDS, StorageConfig

__all__ = [
    "ConfigError", "Config", "load", "default", "loadOrDefault", "parseHostPort",
    "ListenConfig", "ROLES", "SMTPConfig", "ConnectionLimits", "SubmissionConfig", "TLSConfig",
    "WebConfig", "AuthConfig", "ServerConfig", "defaultWorkers",
    "DeliveryConfig", "QueueConfig", "DNSConfig", "RelayConfig",
    "StorageConfig", "STORAGE_BACKENDS", "POSTGRESQL",
    "PolicyConfig", "DEFAULT_CHECKS", "RateLimitConfig", "DMARCConfig", "GreylistConfig",
    "RulesConfig", "DNSBLConfig", "DNSBLZone", "DNSBL_ACTIONS", "ClassifierConfig",
    "ClamAVConfig", "RspamdConfig", "SCANNER_FAIL_MODES",
    "MTASTSConfig", "MTA_STS_MODES", "DoctorConfig", "DEFAULT_BLOCKLISTS",
    "validateEndpoint", "splitEndpoint", "withBacklog", "usesOwnCertificate", "LISTEN_BACKLOG",
    # Private, but the tests import them from here.
    "_parse", "_BUILTIN_ENDPOINTS",
]
