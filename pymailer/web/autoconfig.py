"""
Mail client self-configuration: Thunderbird's autoconfig file
(C{clientConfig} version 1.1), Microsoft Outlook's Autodiscover response
and an Apple configuration profile (for a logged-in user's own address),
generated from the listeners actually configured.

Both name only servers (host name, port, TLS kind) and say that the login
is the full address; neither looks up the user, so the answer for an
existing and a made-up address of a local domain is the same.

Trust: the requested address comes from the client; it is only split into
its domain (the caller checks that the domain is local) and written into
XML through L{xml.etree.ElementTree}, which escapes it.  The Autodiscover
request body is untrusted XML: it is size-capped, and parsed by expat
with handlers that refuse any DOCTYPE or entity declaration the moment
the parser meets one (entity expansion), in whatever encoding it comes.
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass
from xml.etree import ElementTree
from xml.parsers import expat

from pymailer.policy.dnsrecords import SERVICES, endpointPort

# Autodiscover requests are a few hundred bytes.
MAX_REQUEST = 16384

AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE_NS = ("http://schemas.microsoft.com/exchange/autodiscover/outlook/"
                       "responseschema/2006a")


@dataclass(frozen=True)
class Server:
    """
    One way in: C{kind} is C{imap}, C{pop3} or C{smtp}; C{implicitTLS}
    distinguishes imaps/pop3s/submissions (TLS from the first byte) from
    the STARTTLS ones.
    """

    kind: str
    hostname: str
    port: int
    implicitTLS: bool

    @property
    def socketType(self):
        """Thunderbird's name for the TLS kind."""
        return "SSL" if self.implicitTLS else "STARTTLS"


# Listener role -> server kind.  The plain smtp listener (port 25, no AUTH)
# is not for clients: only submission(s) is offered for sending.
_KINDS = {"imaps": "imap", "imap": "imap", "pop3s": "pop3", "pop3": "pop3",
          "submissions": "smtp", "submission": "smtp"}


def servers(config) -> list[Server]:
    """
    The configured client listeners, implicit TLS first within each kind
    (RFC 8314 §5.1 prefers it; clients try the first entry first), IMAP
    before POP3, sending last.  A listener whose port cannot be read from its endpoint
    (a unix socket behind a proxy) is announced on its standard port.
    """
    listen = config.listen.roles()
    host = config.hostname.rstrip(".")
    found = []
    # SERVICES lists submission first; clients read incoming servers first.
    ordered = sorted(SERVICES, key=lambda service: _KINDS[service[1]] == "smtp")
    for _, role, standard, _priority in ordered:
        endpoint = listen.get(role)
        if endpoint is None:
            continue
        port = endpointPort(endpoint) or standard
        found.append(Server(_KINDS[role], host, port, role.endswith("s")))
    return found


def domainOf(address: str) -> str | None:
    """The lower-cased domain of C{local@domain}, or C{None} if malformed."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        return None
    return domain.rstrip(".").lower()


def _text(parent, tag, value):
    element = ElementTree.SubElement(parent, tag)
    element.text = str(value)
    return element


def _serialise(root):
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def clientConfig(config, domain: str) -> bytes:
    """
    Thunderbird's C{config-v1.1.xml} for C{domain} (the schema on the
    Mozilla wiki, "Autoconfig file format").
    """
    root = ElementTree.Element("clientConfig", version="1.1")
    provider = ElementTree.SubElement(root, "emailProvider", id=domain)
    _text(provider, "domain", domain)
    _text(provider, "displayName", f"{domain} mail")
    _text(provider, "displayShortName", domain)
    for server in servers(config):
        tag = "outgoingServer" if server.kind == "smtp" else "incomingServer"
        element = ElementTree.SubElement(provider, tag, type=server.kind)
        _text(element, "hostname", server.hostname)
        _text(element, "port", server.port)
        _text(element, "socketType", server.socketType)
        # The password goes inside TLS (every server here is SSL or
        # STARTTLS), so cleartext mechanisms are what we offer.
        _text(element, "authentication", "password-cleartext")
        _text(element, "username", "%EMAILADDRESS%")
    return _serialise(root)


class BadRequest(ValueError):
    """The Autodiscover request is not one we read."""


def autodiscoverAddress(body: bytes) -> str:
    """
    The C{EMailAddress} of an Outlook Autodiscover request
    (C{<Autodiscover><Request><EMailAddress>}).

    @raise BadRequest: too large, a DOCTYPE, not XML, or no address.
    """
    if len(body) > MAX_REQUEST:
        raise BadRequest("request too large")
    # The namespace separator makes an element's name "uri local" (or
    # "local" unqualified): clients differ in the request namespace.
    parser = expat.ParserCreate(namespace_separator=" ")
    # No DTDs at all: they are how entity-expansion attacks arrive, and no
    # Outlook request has one.  Asked of the parser, not of the raw bytes:
    # a UTF-16 (or UTF-32, EBCDIC...) body spells "<!DOCTYPE" in other bytes.
    parser.StartDoctypeDeclHandler = _refuseDeclaration
    parser.EntityDeclHandler = _refuseDeclaration
    addresses = []
    inside = []  # the text pieces of the EMailAddress element we are in

    def start(name, attributes):
        if name.rsplit(" ", 1)[-1] == "EMailAddress" and not addresses:
            inside.append([])

    def text(data):
        if inside:
            inside[-1].append(data)

    def end(name):
        if name.rsplit(" ", 1)[-1] == "EMailAddress" and inside:
            address = "".join(inside.pop()).strip()
            if address:
                addresses.append(address)

    parser.StartElementHandler = start
    parser.CharacterDataHandler = text
    parser.EndElementHandler = end
    try:
        parser.Parse(body, True)
    except expat.ExpatError:
        raise BadRequest("not XML") from None
    if not addresses:
        raise BadRequest("no EMailAddress")
    return addresses[0]


def _refuseDeclaration(*args):
    raise BadRequest("DOCTYPE not allowed")


# Autodiscover protocol types per server kind.
_OUTLOOK_TYPES = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}


def autodiscover(config, address: str) -> bytes:
    """
    The Outlook Autodiscover response ("outlook" response schema 2006a)
    for C{address}: one C{Protocol} per configured client listener.
    """
    root = ElementTree.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    response = ElementTree.SubElement(root, "Response", xmlns=OUTLOOK_RESPONSE_NS)
    account = ElementTree.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for server in servers(config):
        protocol = ElementTree.SubElement(account, "Protocol")
        _text(protocol, "Type", _OUTLOOK_TYPES[server.kind])
        _text(protocol, "Server", server.hostname)
        _text(protocol, "Port", server.port)
        _text(protocol, "LoginName", address)
        _text(protocol, "DomainRequired", "off")
        _text(protocol, "SPA", "off")
        _text(protocol, "SSL", "on")
        # "SSL" is TLS from the first byte, "TLS" is STARTTLS.
        _text(protocol, "Encryption", "SSL" if server.implicitTLS else "TLS")
        _text(protocol, "AuthRequired", "on")
        if server.kind == "smtp":
            _text(protocol, "UsePOPAuth", "off")
            _text(protocol, "SMTPLast", "off")
    return _serialise(root)


# The profile's MIME type: iOS and macOS offer to install it.
MOBILECONFIG_TYPE = b"application/x-apple-aspen-config"


def appleProfile(config, address):
    """
    An Apple configuration profile (a plist) with one
    C{com.apple.mail.managed} payload: IMAP and SMTP submission from the
    listeners configured (implicit TLS first), the login the full address,
    and no password (the device asks for it).  The UUIDs are derived from
    the host and address, so installing it again replaces the same profile.

    @return: the plist's bytes, or C{None} without an IMAP or submission
        listener (a profile must name both).
    """
    configured = servers(config)
    incoming = next((s for s in configured if s.kind == "imap"), None)
    outgoing = next((s for s in configured if s.kind == "smtp"), None)
    if incoming is None or outgoing is None:
        return None
    host = config.hostname.rstrip(".").lower()
    identifier = ".".join(reversed(host.split("."))) + ".pymailer.mail"

    def uuidOf(what):
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pymailer:{host}:{address}:{what}")).upper()

    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier + ".account",
        "PayloadUUID": uuidOf("account"),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerHostName": incoming.hostname,
        "IncomingMailServerPortNumber": incoming.port,
        # UseSSL: TLS from the first byte on an implicit-TLS port, STARTTLS
        # otherwise; we never offer either without TLS.
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": outgoing.hostname,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": uuidOf("profile"),
        "PayloadDisplayName": f"Mail: {address}",
        "PayloadDescription": f"The mail account {address} on {host}",
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile)
