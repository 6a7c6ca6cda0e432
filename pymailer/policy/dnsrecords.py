"""
The DNS records a mail domain served by this server needs, in zone-file
form (C{pymailer dns DOMAIN}): MX, SPF, DKIM, DMARC and the SRV records
that let mail clients configure themselves (RFC 6186, RFC 8314 §5.1).

Names are absolute (trailing dot) and carry no TTL, so the lines paste
into any zone file (which gives them its C{$TTL}).  Explanations are zone
file comments (C{;}), so the whole output is itself a valid zone fragment.

Reads the configuration and the DKIM key files; no DNS, no network.
"""

from __future__ import annotations

from pymailer import config as configModule
from pymailer.policy import dkimkeys
from pymailer.web import mtasts

__all__ = ["zoneRecords", "endpointPort", "SERVICES", "DMARC_POLICY"]

# RFC 6186 §3.1-3.3 and RFC 8314 §5.1: (SRV service, listener role,
# standard port, priority).  Implicit TLS first: RFC 6186 §3.4 lets a
# client that finds both services pick by priority across them, and
# RFC 8314 recommends implicit TLS over STARTTLS.
SERVICES = (
    ("_submissions._tcp", "submissions", 465, 0),
    ("_submission._tcp", "submission", 587, 10),
    ("_imaps._tcp", "imaps", 993, 0),
    ("_imap._tcp", "imap", 143, 10),
    ("_pop3s._tcp", "pop3s", 995, 0),
    ("_pop3._tcp", "pop3", 110, 10),
)

# The DMARC policy we suggest.  quarantine, not none: every message this
# server sends for the domain carries an aligned DKIM signature and comes
# from the MX host SPF names, so the domain's own mail passes; forged mail
# then goes to the receiver's spam folder.  Not reject: mail that breaks
# alignment legitimately (a mailing list that rewrites the body, a
# forwarder without ARC) is filed as spam rather than bounced, which is the
# safer first step; raise it to reject once the aggregate reports (rua)
# show only your own mail passing.
DMARC_POLICY = "quarantine"

_LOOPBACK = {"127.0.0.1", "::1", "localhost", "0:0:0:0:0:0:0:1"}


def endpointPort(description: str) -> int | None:
    """
    The TCP port of a server endpoint string (C{tcp:587}, C{ssl:port=993}),
    or C{None} for one without (C{unix:...}, plugin types we cannot read).
    """
    args, kwargs = configModule.splitEndpoint(description)
    if not args or args[0] not in ("tcp", "tcp6", "ssl"):
        return None
    port = kwargs.get("port", args[1] if len(args) > 1 else None)
    if port is None or not (port.isascii() and port.isdigit()):
        return None
    return int(port)


def _interface(description):
    args, kwargs = configModule.splitEndpoint(description)
    if "interface" in kwargs:
        return kwargs["interface"]
    # tcp:PORT:INTERFACE (tcp6 and ssl put other things second).
    if args and args[0] == "tcp" and len(args) > 2:
        return args[2]
    return None


def _within(name, domain):
    return name == domain or name.endswith("." + domain)


def zoneRecords(config, domain: str) -> list[str]:
    """
    Every record C{domain} needs for mail served by this server, with
    comments, as lines of a zone file (no newlines).

    @param config: the L{pymailer.config.Config} (hostname, listeners,
        data_dir for DKIM keys, relay smarthost).
    @raise ValueError: an invalid domain.
    @raise dkimkeys.KeyFileError: an unusable DKIM key file.
    """
    domain = dkimkeys.dnsDomain(domain)
    host = config.hostname.rstrip(".").lower()
    listen = config.listen.roles()
    lines = [f"; DNS records for {domain}, served by {host} (pymailer dns)"]

    lines.append(f"; Mail for {domain} goes to {host} (RFC 5321 §5.1).")
    lines.append(f"{domain}. IN MX 10 {host}.")
    lines.append(f"; {host}. needs A/AAAA records with this server's public"
                 " addresses, and those addresses PTR records naming it.")
    smtp = listen.get("smtp")
    if smtp is None:
        lines.append("; warning: no smtp listener is configured: other servers"
                     " cannot deliver to this one.")
    elif endpointPort(smtp) not in (25, None):
        lines.append(f"; warning: the smtp listener is on port {endpointPort(smtp)};"
                     " other servers deliver to port 25 only.")

    lines.append(f"; SPF (RFC 7208): only the hosts named in the MX records"
                 f" send mail from {domain}; everything else fails.")
    lines.append(f'{domain}. IN TXT "v=spf1 mx -all"')
    smarthost = getattr(getattr(config, "relay", None), "smarthost", None)
    if smarthost:
        lines.append(f"; warning: mail leaves through the smarthost {smarthost}:"
                     " add its SPF mechanism (e.g. include:...) before -all.")
    if host != domain:
        # RFC 7208 §2.3: a HELO name with SPF lets receivers check our
        # bounces (null reverse-path), whose SPF identity is the HELO name.
        helo = f'{host}. IN TXT "v=spf1 a -all"'
        if _within(host, domain):
            lines.append(f"; SPF for the HELO name {host} (RFC 7208 §2.3),"
                         " checked for bounces.")
            lines.append(helo)
        else:
            lines.append(f"; In the zone of {host}: SPF for the HELO name"
                         " (RFC 7208 §2.3), checked for bounces:")
            lines.append(f"; {helo}")

    keys = dkimkeys.signingKeys(config, domain)
    lines.append("; DKIM (RFC 6376; Ed25519 per RFC 8463): the public keys"
                 " that verify this server's signatures.")
    if keys:
        lines.extend(dkimkeys.dnsRecord(domain, key) for key in keys)
    else:
        lines.append(f"; no DKIM key for {domain} yet: run"
                     f" 'pymailer dkim keygen {domain}' and add the records"
                     " it prints.")

    lines.append(f"; DMARC (RFC 7489): p={DMARC_POLICY} files forged mail as"
                 " spam; daily aggregate reports go to postmaster.")
    lines.append(
        f'_dmarc.{domain}. IN TXT "v=DMARC1; p={DMARC_POLICY};'
        f' rua=mailto:postmaster@{domain}"')

    lines.append("; Mail client configuration (RFC 6186, RFC 8314 §5.1):"
                 ' target "." says the service is not offered (RFC 2782).')
    for service, role, standard, priority in SERVICES:
        endpoint = listen.get(role)
        name = f"{service}.{domain}."
        if endpoint is None:
            lines.append(f"{name} IN SRV 0 0 0 .")
            continue
        port = endpointPort(endpoint)
        if port is None:
            lines.append(f"; {role} listens on {endpoint!r}: the record assumes"
                         f" the standard port {standard} in front of it.")
            port = standard
        if _interface(endpoint) in _LOOPBACK:
            lines.append(f"; warning: the {role} listener is bound to loopback"
                         f" ({_interface(endpoint)}): not reachable from outside.")
        lines.append(f"{name} IN SRV {priority} 1 {port} {host}.")
    lines.extend(_webRecords(config, domain, host))
    return lines


def _webRecords(config, domain, host):
    """Autoconfig and MTA-STS names, which need the web listener."""
    if config.listen.https is None:
        return ["; autoconfig/autodiscover (Thunderbird, Outlook) and MTA-STS"
                " need the web listener ([listen] https): without it, clients"
                " fall back to the SRV records."]
    lines = ["; Mail client autoconfig (Thunderbird) and Autodiscover"
             " (Outlook) are served by the web listener under these names:"]
    for name in ("autoconfig", "autodiscover"):
        lines.append(f"{name}.{domain}. IN CNAME {host}.")
    port = endpointPort(config.listen.https) or 443
    lines.append("; Outlook also looks up this SRV record.")
    lines.append(f"_autodiscover._tcp.{domain}. IN SRV 0 1 {port} {host}.")
    lines.append(f"; MTA-STS (RFC 8461), mode {config.mta_sts.mode}: the policy at"
                 f" https://mta-sts.{domain}/.well-known/mta-sts.txt; the id"
                 " changes with the policy. The certificate must cover"
                 f" mta-sts.{domain}. TLS-RPT (RFC 8460) reports go to postmaster.")
    lines.append(f"mta-sts.{domain}. IN CNAME {host}.")
    lines.extend(mtasts.dnsRecords(config, domain))
    return lines
