"""
TLS for every listener: one certificate, one hardened context, reloadable;
and the client side of the relay: verifying (a smarthost) or opportunistic
(MX hosts).

Shared by SMTP (STARTTLS on 25/587, implicit on 465), and by IMAP and POP3.
TLS 1.2 or newer only, with Mozilla's "intermediate" cipher list for TLS 1.2
(TLS 1.3 suites are fixed by OpenSSL).  Without a configured certificate a
self-signed one is made in C{data_dir/tls} on first start and reused.

Reload: L{ReloadableContextFactory.reload} builds a new context from the files;
connections made before keep theirs, new ones get the new one, so an ACME
client can renew the certificate and send SIGHUP without dropping anybody.
"""

import datetime
import ipaddress
import os

from OpenSSL import SSL
# Twisted's interface for trust anchors, not re-exported by twisted.internet.ssl;
# implementing it lets OpenSSL read a CA file of any number of certificates.
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import CertificateOptions, TLSVersion, optionsForClientTLS
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

# https://ssl-config.mozilla.org/ "intermediate" (TLS 1.2 part).
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"
    "DHE-RSA-CHACHA20-POLY1305"
)


# What a self-signed certificate covers besides the configured hostname:
# a new install is first tried on the machine itself, by name or address
# (openssl s_client -connect 127.0.0.1:993 -verify_ip 127.0.0.1, a client
# told to trust the file).  Clients match an address only against an IP
# subjectAltName, never a DNS one (RFC 6125 6.2.1, RFC 9525 6.2).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def subjectAltNames(hostname, extra=LOOPBACK_NAMES):
    """
    C{hostname} and C{extra} as subjectAltName entries, each once, in that
    order: an IP address as an C{IPAddress} entry, a name as a C{DNSName}.
    """
    from cryptography import x509

    entries = []
    for name in (hostname.rstrip("."), *extra):
        try:
            entry = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            entry = x509.DNSName(name.lower())
        if entry not in entries:
            entries.append(entry)
    return entries


def makeSelfSigned(certPath, keyPath, hostname, alsoFor=LOOPBACK_NAMES):
    """
    Write a self-signed certificate for C{hostname} and the names and
    addresses C{alsoFor} (C{localhost}, 127.0.0.1 and ::1 unless told),
    and its key (0600).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(subjectAltNames(hostname, alsoFor)),
                       False)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(os.path.dirname(keyPath), exist_ok=True)
    fd = os.open(keyPath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(certPath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def certificatePaths(config):
    """
    @return: C{(certPath, keyPath)} from C{[tls]}, or the self-signed pair in
        C{data_dir/tls}, made on first use.
    """
    if config.tls.cert is not None:
        return str(config.tls.cert), str(config.tls.key)
    directory = os.path.join(config.data_dir, "tls")
    certPath = os.path.join(directory, "selfsigned-cert.pem")
    keyPath = os.path.join(directory, "selfsigned-key.pem")
    if not (os.path.exists(certPath) and os.path.exists(keyPath)):
        makeSelfSigned(certPath, keyPath, config.hostname)
        log.warn(
            "no [tls] cert/key configured: made a self-signed certificate in "
            "{dir}; clients will not trust it", dir=directory,
        )
    return certPath, keyPath


def buildContext(certPath, keyPath):
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(
        SSL.OP_NO_COMPRESSION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_NO_RENEGOTIATION
    )
    ctx.set_cipher_list(INTERMEDIATE_CIPHERS.encode("ascii"))
    ctx.use_certificate_chain_file(certPath)
    ctx.use_privatekey_file(keyPath)
    ctx.check_privatekey()
    ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    ctx.set_session_id(b"pymailer")
    return ctx


@implementer(IOpenSSLContextFactory)
class ReloadableContextFactory:
    """
    A server context factory (C{getContext}, as C{startTLS} and
    C{TLSMemoryBIOFactory} take) whose context can be swapped.
    """

    def __init__(self, certPath, keyPath):
        self.certPath = certPath
        self.keyPath = keyPath
        self._context = buildContext(certPath, keyPath)

    def getContext(self):
        return self._context

    def reload(self):
        """
        Read the certificate files again.  A broken new file is logged and
        the old context kept: a bad renewal must not take the server down.
        """
        try:
            self._context = buildContext(self.certPath, self.keyPath)
        except (OSError, SSL.Error) as e:
            log.error("TLS reload failed, keeping the old certificate: {e}", e=e)
            return False
        log.info("TLS certificate reloaded from {path}", path=self.certPath)
        return True


def describeConnection(transport):
    """
    @return: C{(version, cipher)} of a TLS transport, or C{(None, None)}.
    """
    try:
        connection = transport.getHandle()
        version = connection.get_protocol_version_name()
        cipher = connection.get_cipher_name()
    except (AttributeError, SSL.Error):
        return None, None
    if not cipher:
        return None, None
    return version, cipher


@implementer(IOpenSSLTrustRoot)
class CAFile:
    """
    The certificates of a PEM file (a private CA, or a server's self-signed
    certificate) as the only trust anchors.
    """

    def __init__(self, path):
        self.path = str(path)

    def _addCACertsToContext(self, context):
        context.load_verify_locations(self.path)


def opportunisticClientOptions():
    """
    Client TLS that accepts any certificate: RFC 7435 opportunistic
    security, as MX hosts are reached (no name to check one against, and
    plaintext would be the alternative).
    """
    return CertificateOptions(verify=False, raiseMinimumTo=TLSVersion.TLSv1_2)


def verifyingClientOptions(hostname, caFile=None):
    """
    Client TLS that fails the handshake unless the server's certificate is
    valid for C{hostname} and chains to the system's CAs (or to those of
    C{caFile}).  Builds the context at once: call it when starting up.
    """
    trustRoot = CAFile(caFile) if caFile is not None else None
    return optionsForClientTLS(
        hostname, trustRoot=trustRoot,
        extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2})
