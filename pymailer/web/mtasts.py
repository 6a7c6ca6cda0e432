"""
MTA-STS (RFC 8461): the policy served at
C{https://mta-sts.DOMAIN/.well-known/mta-sts.txt} for every local domain,
and the DNS records that announce it (with TLS-RPT, RFC 8460).

One policy for every domain: they all have the same MX (our hostname).
Pure functions of the configuration: no network, no reactor.
"""

from __future__ import annotations

import hashlib

POLICY_PATH = "/.well-known/mta-sts.txt"
HOST_PREFIX = "mta-sts."


def policyText(config) -> str:
    """
    The policy file (RFC 8461 §3.2): C{key: value} lines ending in CRLF.
    """
    lines = [
        "version: STSv1",
        f"mode: {config.mta_sts.mode}",
        f"mx: {config.hostname.rstrip('.').lower()}",
        f"max_age: {config.mta_sts.max_age}",
    ]
    return "".join(line + "\r\n" for line in lines)


def policyId(config) -> str:
    """
    The C{id} of the C{_mta-sts} TXT record: it must change whenever the
    policy does (RFC 8461 §3.1), so it is a hash of the policy; 1 to 32
    alphanumeric characters, hence hex cut to 32.
    """
    return hashlib.sha256(policyText(config).encode("ascii")).hexdigest()[:32]


def dnsRecords(config, domain: str) -> list[str]:
    """Zone-file lines: the C{_mta-sts} and C{_smtp._tls} TXT records."""
    return [
        f'_mta-sts.{domain}. IN TXT "v=STSv1; id={policyId(config)}"',
        f'_smtp._tls.{domain}. IN TXT "v=TLSRPTv1; rua=mailto:postmaster@{domain}"',
    ]
