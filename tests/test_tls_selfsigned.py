"""
The self-signed certificate a new install makes in data_dir/tls: it names
the configured hostname, localhost, 127.0.0.1 and ::1, so that a client
told to trust the file can verify the server on the machine itself, by
name or by address.
"""

import ipaddress
import socket
import ssl

from cryptography import x509

from mailserver import HOSTNAME


def selfSignedCert(server):
    return server.dataDir / "tls" / "selfsigned-cert.pem"


def verifiedHandshake(server, role, address):
    """
    A TLS handshake with C{role}'s listener at C{address}, verifying the
    certificate against the self-signed file as the only CA, the address
    as the name to match: the TLS version.
    """
    context = ssl.create_default_context(cafile=str(selfSignedCert(server)))
    # What Python 3.13's default context asks, stricter than 3.11's.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection((address, server.ports[role]), timeout=20) as sock:
        with context.wrap_socket(sock, server_hostname=address) as tls:
            return tls.version()


def test_self_signed_certificate_names_hostname_and_loopback(makeMailServer):
    """
    The certificate's subjectAltNames are the hostname and localhost (DNS)
    and 127.0.0.1 and ::1 (IP): with localhost alone, a client connecting
    to 127.0.0.1 and verifying the file it was told to trust is refused
    ("IP address mismatch").
    """
    server = makeMailServer(roles=("imaps",))
    cert = x509.load_pem_x509_certificate(selfSignedCert(server).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [HOSTNAME, "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def test_tls_verifies_against_the_self_signed_cert_by_address(makeMailServer):
    """
    IMAPS on 127.0.0.1 and POP3S on ::1 pass a verifying handshake that
    trusts the self-signed file and expects the address: what `openssl
    s_client -CAfile ... -verify_ip 127.0.0.1` or a script on the machine
    does.
    """
    server = makeMailServer(roles=("imaps", "pop3s"), interfaces={"pop3s": "::1"})
    assert verifiedHandshake(server, "imaps", "127.0.0.1").startswith("TLSv1.")
    assert verifiedHandshake(server, "pop3s", "::1").startswith("TLSv1.")
