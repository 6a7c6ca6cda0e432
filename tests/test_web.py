"""
The web listener (issue 16, first step): Thunderbird autoconfig, Outlook
Autodiscover, the MTA-STS policy, security headers, and Prometheus metrics.

Unit tests build the documents from a config in memory; end-to-end tests
start a real server (twistd) and fetch with curl over TLS, as a mail
client or Prometheus would.
"""

import imaplib
import pathlib
import re
import select
import smtplib
import socket
import subprocess
import time
from email.message import EmailMessage
from xml.etree import ElementTree

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.test.requesthelper import DummyRequest

from pymailer import config as configModule
from pymailer.web import autoconfig, mtasts
from pymailer.web.metrics import MetricsPage, isLoopback

from mailserver import DOMAIN, PASSWORD, insecureTLS, readVm, waitFor

LISTEN = configModule.ListenConfig(
    smtp="tcp:25", submission="tcp:587", submissions="ssl:465",
    imap="tcp:143", imaps="ssl:993", pop3s="ssl:995", https="ssl:443")

# An Autodiscover request whose address comes from an entity of its DTD,
# in UTF-16 (with a BOM): no "<!DOCTYPE" byte string in it.
UTF16_DOCTYPE_REQUEST = (
    '<?xml version="1.0" encoding="UTF-16"?>'
    '<!DOCTYPE x [<!ENTITY a "bob@example.org">]><Autodiscover><Request>'
    '<EMailAddress>&a;</EMailAddress></Request></Autodiscover>').encode("utf-16")


def makeConfig(listen=LISTEN, **options):
    return configModule.Config(hostname="mail.example.org", data_dir=pathlib.Path("/nonexistent"),
                               listen=listen, **options)


def readAsThunderbird(xml):
    """
    Read a config-v1.1.xml the way Thunderbird's readFromXML does: the
    first emailProvider of clientConfig, its incomingServer (imap, pop3)
    and outgoingServer (smtp) elements in order, each with hostname, port,
    socketType, username and authentication.

    @return: C{(domains, incoming, outgoing)}, servers as dicts.
    """
    root = ElementTree.fromstring(xml)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id")
    domains = [d.text for d in provider.findall("domain")]

    def server(element, kinds):
        kind = element.get("type")
        assert kind in kinds
        fields = {"type": kind}
        for name in ("hostname", "port", "socketType", "username", "authentication"):
            child = element.find(name)
            assert child is not None and child.text, name
            fields[name] = child.text
        assert fields["socketType"] in ("plain", "SSL", "STARTTLS")
        fields["port"] = int(fields["port"])
        return fields

    incoming = [server(e, ("imap", "pop3")) for e in provider.findall("incomingServer")]
    outgoing = [server(e, ("smtp",)) for e in provider.findall("outgoingServer")]
    return domains, incoming, outgoing


def curl(*args):
    """Run curl; return C{(status, headers dict (lower-case names), body bytes)}."""
    result = subprocess.run(["curl", "-s", "-i", "--max-time", "20", *args],
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


class TestAutoconfigDocument:
    def test_thunderbirdReadsTheConfiguredListeners(self):
        """
        Thunderbird finds IMAP (SSL first, then STARTTLS), POP3 and
        submission with the configured ports, the address as login and a
        password: otherwise "Configure automatically" sets up a wrong
        server or port, and the user has to type it all in.
        """
        domains, incoming, outgoing = readAsThunderbird(
            autoconfig.clientConfig(makeConfig(), "example.org"))
        assert domains == ["example.org"]
        common = {"hostname": "mail.example.org", "username": "%EMAILADDRESS%",
                  "authentication": "password-cleartext"}
        assert incoming == [
            dict(common, type="imap", port=993, socketType="SSL"),
            dict(common, type="imap", port=143, socketType="STARTTLS"),
            dict(common, type="pop3", port=995, socketType="SSL"),
        ]
        assert outgoing == [
            dict(common, type="smtp", port=465, socketType="SSL"),
            dict(common, type="smtp", port=587, socketType="STARTTLS"),
        ]

    def test_onlyWhatIsConfigured(self):
        """
        A listener that is off is not offered, and port 25 never is:
        otherwise clients would try a port nothing listens on, or send
        without authentication.
        """
        listen = configModule.ListenConfig(smtp="tcp:25", imaps="ssl:10993:interface=::",
                                           submissions="ssl:port=10465")
        _, incoming, outgoing = readAsThunderbird(
            autoconfig.clientConfig(makeConfig(listen), "example.org"))
        assert [(s["type"], s["port"], s["socketType"]) for s in incoming] == [
            ("imap", 10993, "SSL")]
        assert [(s["type"], s["port"], s["socketType"]) for s in outgoing] == [
            ("smtp", 10465, "SSL")]

    def test_everythingIsEscaped(self):
        """
        Markup in a domain comes back as text, not as elements: otherwise
        whoever chooses the name could inject servers into the document.
        """
        hostile = 'x<incomingServer type="imap">&"'
        domains, incoming, _ = readAsThunderbird(autoconfig.clientConfig(makeConfig(), hostile))
        assert domains == [hostile]
        assert len(incoming) == 3

    def test_outlookAutodiscover(self):
        """
        Outlook's request is read and the answer names each server with
        its port, SSL or STARTTLS ("TLS") and the address as login:
        otherwise Outlook's account wizard fails.
        """
        request = (b'<?xml version="1.0" encoding="utf-8"?>'
                   b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/'
                   b'outlook/requestschema/2006"><Request>'
                   b'<EMailAddress>alice@example.org</EMailAddress>'
                   b'<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/'
                   b'autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>'
                   b'</Request></Autodiscover>')
        address = autoconfig.autodiscoverAddress(request)
        assert address == "alice@example.org"
        root = ElementTree.fromstring(autoconfig.autodiscover(makeConfig(), address))
        ns = {"a": autoconfig.AUTODISCOVER_RESPONSE_NS, "o": autoconfig.OUTLOOK_RESPONSE_NS}
        account = root.find("o:Response/o:Account", ns)
        assert account.find("o:Action", ns).text == "settings"
        protocols = [(p.find("o:Type", ns).text, int(p.find("o:Port", ns).text),
                      p.find("o:Encryption", ns).text, p.find("o:LoginName", ns).text,
                      p.find("o:Server", ns).text)
                     for p in account.findall("o:Protocol", ns)]
        login, host = "alice@example.org", "mail.example.org"
        assert protocols == [
            ("IMAP", 993, "SSL", login, host), ("IMAP", 143, "TLS", login, host),
            ("POP3", 995, "SSL", login, host),
            ("SMTP", 465, "SSL", login, host), ("SMTP", 587, "TLS", login, host)]

    @pytest.mark.parametrize("body", [
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><Autodiscover><Request><EMailAddress>&a;'
        b'</EMailAddress></Request></Autodiscover>',
        b"<Autodiscover><Request>" + b"x" * 20000 + b"</Request></Autodiscover>",
        b"not xml",
        b"<Autodiscover><Request></Request></Autodiscover>",
        UTF16_DOCTYPE_REQUEST,
    ])
    def test_autodiscoverRefusesBadRequests(self, body):
        """
        A request with a DTD, too large, not XML or without an address is
        refused before anything is built: otherwise entity expansion or a
        huge body would cost the server memory.
        """
        with pytest.raises(autoconfig.BadRequest):
            autoconfig.autodiscoverAddress(body)

    def test_autodiscoverUTF16DoctypeRefused(self):
        """
        A DTD in a UTF-16 body (where "<!DOCTYPE" is not those bytes) is
        refused as a DTD: otherwise its entities expand, and a billion-laughs
        request costs the server its memory.
        """
        with pytest.raises(autoconfig.BadRequest, match="DOCTYPE"):
            autoconfig.autodiscoverAddress(UTF16_DOCTYPE_REQUEST)


class TestMTASTSPolicy:
    def test_policyFile(self):
        """
        The policy has the RFC 8461 §3.2 fields with CRLF line ends, the
        configured mode and our hostname as mx: otherwise senders ignore
        it, or enforce TLS to the wrong host.
        """
        c = makeConfig(mta_sts=configModule.MTASTSConfig(mode="enforce", max_age=86400))
        assert mtasts.policyText(c) == (
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmax_age: 86400\r\n")

    def test_idChangesWithThePolicy(self):
        """
        The _mta-sts record's id is 1-32 letters and digits and changes
        when the policy does: otherwise senders keep a stale cached policy
        (RFC 8461 §3.1).
        """
        testing = mtasts.policyId(makeConfig())
        enforce = mtasts.policyId(
            makeConfig(mta_sts=configModule.MTASTSConfig(mode="enforce")))
        assert re.fullmatch("[A-Za-z0-9]{1,32}", testing)
        assert testing != enforce
        assert testing == mtasts.policyId(makeConfig())


class TestMetricsAccess:
    @pytest.mark.parametrize("host, loopback", [
        ("127.0.0.1", True), ("127.5.0.1", True), ("::1", True),
        ("::ffff:127.0.0.1", True), ("192.0.2.1", False), ("2001:db8::1", False),
        ("", False)])
    def test_isLoopback(self, host, loopback):
        """Only loopback clients count as local: otherwise /metrics would leak."""
        assert isLoopback(host) is loopback

    def test_remoteClientGets404OnTheWebListener(self):
        """
        Without a metrics listener, a client from another address gets 404
        for /metrics: otherwise anyone could read the failed-login and
        traffic counters.
        """
        class Parts:
            reactor = threadpool = metricsRegistry = None

        page = MetricsPage(Parts(), loopbackOnly=True)
        for address in (IPv4Address("TCP", "192.0.2.1", 4000),
                        IPv6Address("TCP", "2001:db8::1", 4000)):
            request = DummyRequest([b"metrics"])
            request.client = address
            assert page.render(request) == b"Not found\n"
            assert request.responseCode == 404


class TestDNSRecords:
    def test_mtaSTSAndAutoconfigRecords(self, cli, conf):
        """
        'pymailer dns' prints the MTA-STS, TLS-RPT and autoconfig records
        when the web listener is on: otherwise the operator cannot know
        what to publish for them.
        """
        with open(conf, "a") as f:
            f.write('[listen]\nhttps = "ssl:8443"\n')
        code, out, _ = cli("dns", "example.org")
        assert code == 0
        policy = mtasts.policyId(configModule.load(conf))
        assert f'_mta-sts.example.org. IN TXT "v=STSv1; id={policy}"' in out
        assert ('_smtp._tls.example.org. IN TXT "v=TLSRPTv1; '
                'rua=mailto:postmaster@example.org"') in out
        assert "autoconfig.example.org. IN CNAME " in out
        assert "_autodiscover._tcp.example.org. IN SRV 0 1 8443 " in out


# -- end to end: a real server, curl over TLS ---------------------------------

@pytest.fixture
def webServer(makeMailServer):
    return makeMailServer(roles=("https", "http", "imaps", "submission", "submissions"))


class TestWebListener:
    def test_autoconfigOverTLS(self, webServer):
        """
        curl fetches the autoconfig of both of Thunderbird's URLs over TLS,
        verifying the server's certificate, and the ports in it are the
        server's own: otherwise Thunderbird finds no settings or wrong ones.
        """
        port = webServer.ports["https"]
        cert = webServer.dataDir / "tls" / "selfsigned-cert.pem"
        host = f"https://{webServer.hostname}:{port}"
        resolve = f"{webServer.hostname}:{port}:127.0.0.1"
        for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
            status, headers, body = curl("--cacert", str(cert), "--resolve", resolve,
                                         f"{host}{path}?emailaddress=alice%40{DOMAIN}")
            assert status == 200, body
            assert headers["content-type"].startswith("application/xml")
            _, incoming, outgoing = readAsThunderbird(body)
            assert [(s["port"], s["socketType"]) for s in incoming] == [
                (webServer.ports["imaps"], "SSL")]
            assert [(s["port"], s["socketType"]) for s in outgoing] == [
                (webServer.ports["submissions"], "SSL"),
                (webServer.ports["submission"], "STARTTLS")]

    def test_noAnswerForOtherDomainsAndSameForAnyUser(self, webServer):
        """
        An address of a domain we do not serve gets 404, and a made-up
        user of ours gets the same document as a real one: otherwise the
        autoconfig URL would tell anyone which accounts exist.
        """
        base = f"https://127.0.0.1:{webServer.ports['https']}/mail/config-v1.1.xml?emailaddress="
        status, _, real = curl("-k", base + f"alice%40{DOMAIN}")
        assert status == 200
        status, _, madeUp = curl("-k", base + f"nobody-here%40{DOMAIN}")
        assert (status, madeUp) == (200, real)
        status, _, other = curl("-k", base + "alice%40example.net")
        assert status == 404 and b"example" not in other
        request = (b"<Autodiscover><Request><EMailAddress>alice@example.net"
                   b"</EMailAddress></Request></Autodiscover>")
        status, _, _ = curl("-k", "--data-binary", request.decode(),
                            f"https://127.0.0.1:{webServer.ports['https']}"
                            "/autodiscover/autodiscover.xml")
        assert status == 404

    def test_autodiscoverPost(self, webServer):
        """
        Outlook's POST to /autodiscover/autodiscover.xml gets the settings:
        otherwise Outlook users configure by hand.
        """
        request = (b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/'
                   b'outlook/requestschema/2006"><Request><EMailAddress>bob@example.org'
                   b'</EMailAddress></Request></Autodiscover>')
        status, headers, body = curl(
            "-k", "-H", "Content-Type: text/xml", "--data-binary", request.decode(),
            f"https://127.0.0.1:{webServer.ports['https']}/autodiscover/autodiscover.xml")
        assert status == 200
        ns = {"o": autoconfig.OUTLOOK_RESPONSE_NS}
        ports = [int(p.text) for p in ElementTree.fromstring(body).iterfind(
            "o:Response/o:Account/o:Protocol/o:Port", ns)]
        assert ports == [webServer.ports[r] for r in ("imaps", "submissions", "submission")]

    def test_autodiscoverUTF16DoctypeGets400(self, webServer, tmp_path):
        """
        A UTF-16 Autodiscover POST with a DTD gets 400, not the settings:
        otherwise anyone can make the server expand entities (billion laughs).
        """
        body = tmp_path / "request.xml"
        body.write_bytes(UTF16_DOCTYPE_REQUEST)
        status, _, answer = curl(
            "-k", "-H", "Content-Type: text/xml", "--data-binary", f"@{body}",
            f"https://127.0.0.1:{webServer.ports['https']}/autodiscover/autodiscover.xml")
        assert (status, answer) == (400, b"Bad request: DOCTYPE not allowed\n")

    def test_mtaSTSPolicyByHost(self, webServer):
        """
        https://mta-sts.example.org/.well-known/mta-sts.txt is the policy;
        another Host gets 404, plain HTTP only a redirect (RFC 8461 §3.3
        wants HTTPS): otherwise senders would cache a policy from the wrong
        place.
        """
        https = f"https://127.0.0.1:{webServer.ports['https']}/.well-known/mta-sts.txt"
        status, headers, body = curl("-k", "-H", "Host: mta-sts.example.org", https)
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        assert body == (b"version: STSv1\r\nmode: testing\r\nmx: mail.example.org\r\n"
                        b"max_age: 604800\r\n")
        for host in ("mta-sts.example.net", "example.org", "mail.example.org"):
            assert curl("-k", "-H", f"Host: {host}", https)[0] == 404
        http = f"http://127.0.0.1:{webServer.ports['http']}/.well-known/mta-sts.txt"
        status, _, body = curl("-H", "Host: mta-sts.example.org", http)
        assert status == 301 and b"STSv1" not in body

    def test_securityHeaders(self, webServer):
        """
        Every response, 404s too, carries a strict CSP, nosniff and a
        Referrer-Policy, and HSTS over HTTPS only: otherwise a browser
        would run or sniff what it should not.
        """
        https = f"https://127.0.0.1:{webServer.ports['https']}"
        http = f"http://127.0.0.1:{webServer.ports['http']}"
        for url in (https + f"/mail/config-v1.1.xml?emailaddress=a%40{DOMAIN}",
                    https + "/no/such/page", http + "/no/such/page"):
            status, headers, _ = curl("-k", url)
            assert headers["content-security-policy"].startswith("default-src 'none'")
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"
            assert ("strict-transport-security" in headers) == url.startswith("https")
        assert curl("-k", https + "/no/such/page")[0] == 404


class TestPlainHTTP:
    def test_everythingRedirectsToHTTPS(self, webServer):
        """
        Over plain HTTP, pages, the login, the API, POSTs and MTA-STS get a
        301 to the same path and query on the HTTPS listener's port, with
        no cookie and nothing of the page: otherwise a browser typing the
        bare name gets no admin page, or a password or cookie crosses the
        network in clear.
        """
        http = f"http://127.0.0.1:{webServer.ports['http']}"
        https = f"https://127.0.0.1:{webServer.ports['https']}"
        for path in ("/", "/login", "/admin/users?x=1&y=%2F", "/api/users",
                     "/.well-known/mta-sts.txt", "/metrics", "/no/such/page"):
            status, headers, body = curl(http + path)
            assert (status, headers["location"]) == (301, https + path), path
            assert "set-cookie" not in headers and b"<form" not in body
        status, headers, _ = curl("--data", "address=a&password=b", http + "/login")
        assert (status, headers["location"]) == (301, https + "/login")
        # The host the client asked for, on the HTTPS port; never a header's junk.
        port = webServer.ports["https"]
        status, headers, _ = curl("-H", f"Host: mail.{DOMAIN}", http + "/login")
        assert headers["location"] == f"https://mail.{DOMAIN}:{port}/login"
        status, headers, _ = curl("-H", "Host: evil/\\x@y", http + "/login")
        assert headers["location"] == f"https://{webServer.hostname}:{port}/login"
        # Where the redirect leads works.
        assert curl("-k", headers["location"].replace(webServer.hostname, "127.0.0.1"))[0] \
            == 200

    def test_autoconfigServedAndACMEChallenge404(self, webServer):
        """
        Thunderbird's autoconfig URLs answer over plain HTTP as over HTTPS
        (Thunderbird asks there too), and an ACME challenge path gets 404,
        not a redirect: otherwise Thunderbird finds no settings on
        autoconfig.DOMAIN, or a certificate authority is sent elsewhere.
        """
        http = f"http://127.0.0.1:{webServer.ports['http']}"
        https = f"https://127.0.0.1:{webServer.ports['https']}"
        for path in (f"/mail/config-v1.1.xml?emailaddress=alice%40{DOMAIN}",
                     f"/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=bob%40{DOMAIN}"):
            status, headers, body = curl(http + path)
            assert status == 200 and headers["content-type"].startswith("application/xml")
            assert body == curl("-k", https + path)[2]
            assert readAsThunderbird(body)[0] == [DOMAIN]
        status, _, _ = curl("-H", f"Host: autoconfig.{DOMAIN}", http + "/mail/config-v1.1.xml")
        assert status == 200
        assert curl(http + "/mail/config-v1.1.xml?emailaddress=a%40example.net")[0] == 404
        status, headers, _ = curl(http + "/.well-known/acme-challenge/abc123")
        assert status == 404 and "location" not in headers


def bytesWritten(pid):
    """What process C{pid} has written in all (files and sockets), from /proc."""
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("wchar:")).split()[1])


def rawExchange(port, request, secure=False):
    """
    Send C{request} as is (over TLS if C{secure}); the response that comes
    back (up to its Content-Length), or what came before the server closed.
    """
    raw = socket.create_connection(("127.0.0.1", port), 10)
    s = insecureTLS().wrap_socket(raw) if secure else raw
    answer = b""
    with s:
        try:
            s.sendall(request)
            while data := s.recv(65536):
                answer += data
                head, found, body = answer.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if found and length and len(body) >= int(length[1]):
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
    return answer


class TestWebLimits:
    def test_hugeLoginPostGets413(self, webServer, tmp_path):
        """
        curl POSTing 10 MB to /login gets 413 at once, and the server
        neither spools it to disk nor grows in memory: otherwise anyone
        could fill the server's disk, then its memory, without logging in.
        """
        body = tmp_path / "body"
        body.write_bytes(b"password=" + b"x" * (10 * 1024 * 1024))
        rssBefore, writtenBefore = readVm(webServer.pid, "VmRSS"), bytesWritten(webServer.pid)
        started = time.monotonic()
        result = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
             "--data-binary", f"@{body}",
             f"http://127.0.0.1:{webServer.ports['http']}/login"],
            capture_output=True, timeout=30)
        elapsed = time.monotonic() - started
        assert result.stdout == b"413"
        assert elapsed < 5
        assert bytesWritten(webServer.pid) - writtenBefore < 64 * 1024
        assert readVm(webServer.pid, "VmRSS") - rssBefore < 4 * 1024 * 1024

    def test_hugeChunkedPostGets413(self, webServer):
        """
        A chunked POST with no Content-Length gets 413 and is closed once
        it passes 64 KiB: otherwise a client could stream without end.
        """
        with socket.create_connection(("127.0.0.1", webServer.ports["http"]), 10) as s:
            s.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\n"
                      b"Transfer-Encoding: chunked\r\n"
                      b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
            answer = b""
            try:
                for _ in range(640):  # 10 MB, if nobody stops us
                    s.sendall(chunk)
                    if select.select([s], [], [], 0)[0]:
                        break
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    answer += data
            except (BrokenPipeError, ConnectionResetError):
                pass
        assert answer.startswith(b"HTTP/1.1 413 ")

    def test_oversizedRequestLineAndHeadersAnswered(self, webServer):
        """
        A request line over 16 KiB gets 414 URI Too Long (RFC 9110 15.5.15),
        headers over 16 KiB (one long line, many lines, or over 500 of
        them) 431 (RFC 6585 5), and a malformed request line 400, each with
        the security headers and a body a browser shows, over HTTP and
        HTTPS: otherwise a browser following a huge link shows a blank
        "connection closed" page and the user cannot tell why.
        """
        host = b"Host: x\r\n"
        requests = {
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n" + host + b"\r\n": b"414 URI Too Long",
            b"GET / HTTP/1.1\r\n" + host + b"Cookie: " + b"c" * 20000 + b"\r\n\r\n":
                b"431 Request Header Fields Too Large",
            b"GET / HTTP/1.1\r\n" + host + b"".join(b"X-%d: %s\r\n" % (n, b"v" * 1000)
                                                    for n in range(20)) + b"\r\n":
                b"431 Request Header Fields Too Large",
            b"GET / HTTP/1.1\r\n" + host + b"".join(b"X-%d: v\r\n" % n
                                                    for n in range(600)) + b"\r\n":
                b"431 Request Header Fields Too Large",
            b"NONSENSE\r\n" + host + b"\r\n": b"400 Bad Request",
        }
        for port, secure in ((webServer.ports["http"], False), (webServer.ports["https"], True)):
            for request, status in requests.items():
                answer = rawExchange(port, request, secure)
                head, _, body = answer.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                assert lines[0] == b"HTTP/1.1 " + status, (port, lines[0], request[:40])
                headers = {k.lower(): v for k, _, v in (h.partition(b": ") for h in lines[1:])}
                assert headers[b"content-security-policy"].startswith(b"default-src 'none'")
                assert headers[b"x-content-type-options"] == b"nosniff"
                assert headers[b"connection"] == b"close"
                assert int(headers[b"content-length"]) == len(body) > 0

    def test_connectionsOverTheLimitGet503(self, webServer):
        """
        Of 60 connections from one address, the 10 over the per-IP limit
        (50) get an HTTP 503 and are closed, the others are served, and a
        slot freed is usable again: otherwise one client could hold every
        connection the web listener has.
        """
        port = webServer.ports["http"]
        sockets = [socket.create_connection(("127.0.0.1", port), 10) for _ in range(60)]
        refused = {}

        def readRefusals():
            for s in select.select([s for s in sockets if s not in refused], [], [], 0.2)[0]:
                refused[s] = s.recv(4096)
            return len(refused) >= 10

        try:
            waitFor(readRefusals, 20, message="10 connections refused")
            assert len(refused) == 10
            assert all(r.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
                       and r.endswith(b"Too many connections from your address, "
                                      b"try again later\r\n")
                       for r in refused.values())
            admitted = [s for s in sockets if s not in refused]
            admitted[0].sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            assert admitted[0].recv(4096).startswith(b"HTTP/1.1 301 ")
        finally:
            for s in sockets:
                s.close()

        def served():
            status, _, _ = curl(f"http://127.0.0.1:{port}/nothing")
            return status == 301
        waitFor(served, 20, message="a freed slot serves again")


def scrape(url):
    status, headers, body = curl("-k", url)
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=")
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


class TestMetrics:
    def test_countersMove(self, makeMailServer):
        """
        /metrics (on the web listener, for a loopback client) shows a
        message accepted and delivered after smtplib sends one, a failed
        IMAP login after one, connections per listener and the queue:
        otherwise a dashboard would show a server doing nothing.
        """
        server = makeMailServer(roles=("https", "imap"), sections={
            "auth": {"allow_plaintext_on_loopback": True, "failure_delay": 0}})
        url = f"https://127.0.0.1:{server.ports['https']}/metrics"
        before = scrape(url)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "x@example.net", f"alice@{DOMAIN}", "metrics"
        msg.set_content("counted\n")
        with smtplib.SMTP("127.0.0.1", server.port) as s:
            s.send_message(msg)
        server.waitForMessages(f"alice@{DOMAIN}", 1)
        imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(f"alice@{DOMAIN}", PASSWORD + "wrong")
        imap.logout()

        def moved():
            after = scrape(url)
            return after if after.get('pymailer_deliveries_total{outcome="delivered"}') else None

        after = waitFor(moved, message="the delivered counter")

        def grew(name):
            return after.get(name, 0) - before.get(name, 0)

        assert grew('pymailer_messages_accepted_total{listener="smtp"}') == 1
        assert grew('pymailer_deliveries_total{outcome="delivered"}') == 1
        assert grew('pymailer_auth_failures_total{protocol="imap"}') == 1
        assert grew('pymailer_smtp_end_of_data_seconds_count{listener="smtp"}') == 1
        assert grew('pymailer_imap_command_seconds_count{command="LOGIN"}') == 1
        assert grew('pymailer_connections_total{listener="smtp"}') >= 1
        assert grew('pymailer_connections_total{listener="imap"}') == 1
        assert after['pymailer_connections_open{listener="https"}'] >= 1
        assert after['pymailer_queue_messages{state="deferred"}'] == 0

    def test_separateListener(self, makeMailServer):
        """
        With [listen] metrics, /metrics is there (for any client of that
        listener) and no longer on the web listener: otherwise the metrics
        would be reachable where the operator did not put them.
        """
        server = makeMailServer(roles=("https", "metrics"))
        values = scrape(f"http://127.0.0.1:{server.ports['metrics']}/metrics")
        assert 'pymailer_connections_open{listener="metrics"}' in values
        assert curl("-k", f"https://127.0.0.1:{server.ports['https']}/metrics")[0] == 404
        assert curl(f"http://127.0.0.1:{server.ports['metrics']}/mail/config-v1.1.xml")[0] == 404
