"""
Tests for C{pymailer dkim keygen} and C{pymailer dns}, run in-process
through L{pymailer.cli.main}.  Their output is parsed by dnspython's zone
parser, as a DNS server loading it would.
"""

import os
import stat

import dkim as dkimpy
import dns.rdatatype
import dns.zone
import pytest

from pymailer.policy import dkim, dkimkeys

DOMAIN = "example.org"

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)

LISTEN = """
[listen]
smtp = "tcp:25"
submission = "tcp:587"
submissions = "ssl:port=465"
imaps = "ssl:993:interface=192.0.2.1"
"""


@pytest.fixture
def confExtra():
    return LISTEN


@pytest.fixture
def run(cli):
    return cli


def parseZone(text, origin=DOMAIN):
    """
    The output pasted into a zone file (after its SOA and NS records):
    dnspython raises on anything a DNS server would refuse.
    """
    head = (f"$ORIGIN {origin}.\n$TTL 3600\n"
            f"@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300\n"
            f"@ IN NS ns.{origin}.\n")
    return dns.zone.from_text(head + text, origin=origin, relativize=False)


def rdatas(zone, name, rdtype):
    rdataset = zone.get_rdataset(f"{name}.", rdtype)
    return [] if rdataset is None else list(rdataset)


def txt(zone, name):
    return [b"".join(r.strings).decode() for r in rdatas(zone, name, "TXT")]


def dnsfuncFor(zone):
    """dkimpy's DNS hook answering from C{zone}."""
    def dnsfunc(name, timeout=5):
        records = txt(zone, name.decode().rstrip("."))
        return records[0].encode() if records else None
    return dnsfunc


def storedKeys(conf):
    return dkimkeys.loadSigningKeys(conf.parent / "data", DOMAIN)


class TestKeygen:
    def test_recordsVerifyDKIMPySignatures(self, run, conf):
        """
        keygen prints one zone line per key; each is a valid DKIM1 record,
        and dkimpy signatures made with the stored keys verify against the
        printed records: otherwise the admin publishes a record that fails
        every message.
        """
        code, out, err = run("dkim", "keygen", DOMAIN, "--selector", "mail")
        assert (code, err) == (0, "")
        lines = [line for line in out.splitlines() if not line.startswith(";")]
        assert len(lines) == 2
        assert lines[0].startswith('mail._domainkey.example.org. IN TXT "v=DKIM1; k=rsa; p=')
        assert lines[1].startswith(
            'mail-ed25519._domainkey.example.org. IN TXT "v=DKIM1; k=ed25519; p=')
        zone = parseZone(out)
        for name in ("mail._domainkey.example.org", "mail-ed25519._domainkey.example.org"):
            [record] = txt(zone, name)
            dkimpy.evaluate_pk(name.encode(), record.encode())  # Raises if invalid.

        keyDir = conf.parent / "data" / "dkim" / DOMAIN
        # The RSA file is what dkimpy signs with directly (PKCS#1 PEM).
        pem = (keyDir / "mail.rsa.key").read_bytes()
        signature = dkimpy.sign(MESSAGE, b"mail", DOMAIN.encode(), pem,
                                canonicalize=(b"relaxed", b"relaxed"))
        assert dkimpy.verify(signature + MESSAGE, dnsfunc=dnsfuncFor(zone))
        ed = [k for k in storedKeys(conf) if k.algorithm == "ed25519-sha256"][0]
        signature = dkimpy.sign(MESSAGE, b"mail-ed25519", DOMAIN.encode(), ed.privateKey,
                                signature_algorithm=b"ed25519-sha256")
        assert dkimpy.verify(signature + MESSAGE, dnsfunc=dnsfuncFor(zone))
        # And the server's own signer, as submission uses it.
        signed = dkim.sign(MESSAGE, DOMAIN, storedKeys(conf)) + MESSAGE
        zoneLookup = lambda name: txt(zone, name)  # noqa: E731
        assert [r.result for r in dkim.verifyAll(signed, zoneLookup)] == ["pass", "pass"]

    def test_keyFilesPrivate(self, run, conf):
        """
        The key files are 0600: otherwise any local user could sign mail
        as our domain.
        """
        assert run("dkim", "keygen", DOMAIN, "--selector", "k")[0] == 0
        keyDir = conf.parent / "data" / "dkim" / DOMAIN
        for name in os.listdir(keyDir):
            assert stat.S_IMODE(os.stat(keyDir / name).st_mode) == 0o600

    def test_defaultSelector(self, run):
        """
        Without --selector the selector is s + year + month, so a later
        keygen makes new selectors (key rotation) instead of failing.
        """
        code, out, _ = run("dkim", "keygen", DOMAIN)
        assert code == 0
        selector = dkimkeys.defaultSelector()
        assert f"\n{selector}._domainkey.example.org. IN TXT " in out
        assert f"\n{selector}-ed25519._domainkey.example.org. IN TXT " in out

    def test_refusesOverwriteUnlessForced(self, run):
        """
        keygen refuses to replace an existing selector (one-line error, exit
        1) unless --force: otherwise a repeated command silently breaks the
        published key.
        """
        first = run("dkim", "keygen", DOMAIN, "--selector", "k")[1]
        code, out, err = run("dkim", "keygen", DOMAIN, "--selector", "k")
        assert (code, out) == (1, "")
        assert err.startswith("pymailer: error: a DKIM key exists already: ")
        assert err.count("\n") == 1 and "--force" in err
        code, second, _ = run("dkim", "keygen", DOMAIN, "--selector", "k", "--force")
        assert code == 0 and second != first

    def test_badDomain(self, run, conf):
        """
        A domain that is no DNS name (or a path) is a one-line error and
        writes nothing: otherwise keygen could write outside data_dir.
        """
        code, out, err = run("dkim", "keygen", "../../etc")
        assert (code, out) == (1, "")
        assert err == "pymailer: error: invalid domain '../../etc'\n"
        assert not (conf.parent / "data").exists()


class TestDNS:
    def test_everyRecord(self, run):
        """
        dns prints MX, SPF (domain and HELO name), both DKIM keys, DMARC
        and every RFC 6186 SRV record, as one valid zone: otherwise the
        admin misses a record and mail goes to spam or clients cannot set
        themselves up.
        """
        assert run("dkim", "keygen", DOMAIN, "--selector", "k")[0] == 0
        code, out, err = run("dns", DOMAIN)
        assert (code, err) == (0, "")
        zone = parseZone(out)
        [mx] = rdatas(zone, DOMAIN, "MX")
        assert (mx.preference, mx.exchange.to_text()) == (10, "mail.example.org.")
        assert txt(zone, DOMAIN) == ["v=spf1 mx -all"]
        assert txt(zone, "mail.example.org") == ["v=spf1 a -all"]
        for selector in ("k", "k-ed25519"):
            [record] = txt(zone, f"{selector}._domainkey.example.org")
            assert record.startswith("v=DKIM1; k=")
        assert txt(zone, "_dmarc.example.org") == [
            "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org"]

        def srv(service):
            [r] = rdatas(zone, f"{service}._tcp.example.org", "SRV")
            return (r.priority, r.weight, r.port, r.target.to_text())

        assert srv("_submissions") == (0, 1, 465, "mail.example.org.")
        assert srv("_submission") == (10, 1, 587, "mail.example.org.")
        assert srv("_imaps") == (0, 1, 993, "mail.example.org.")
        # Not configured: "service not available" (RFC 2782 target ".").
        for service in ("_imap", "_pop3", "_pop3s"):
            assert srv(service) == (0, 0, 0, ".")

    def test_noDKIMKeyYet(self, run):
        """
        Without keys, dns says to run keygen (as a zone comment): otherwise
        the admin publishes no DKIM record and does not know why.
        """
        code, out, _ = run("dns", DOMAIN)
        assert code == 0
        assert "; no DKIM key for example.org yet: run 'pymailer dkim keygen example.org'" in out
        zone = parseZone(out)
        assert not any("_domainkey" in name.to_text() for name in zone.nodes)

    def test_hostnameOutsideDomain(self, run, conf):
        """
        When the server's hostname is in another zone, its HELO SPF record
        is printed as a comment for that zone and the output still loads
        as the domain's zone: otherwise pasting the output breaks the zone.
        """
        conf.write_text('hostname = "mx.provider.net"\ndata_dir = "data"\n' + LISTEN)
        code, out, _ = run("dns", DOMAIN)
        assert code == 0
        assert '; mx.provider.net. IN TXT "v=spf1 a -all"' in out
        zone = parseZone(out)
        assert rdatas(zone, DOMAIN, "MX")[0].exchange.to_text() == "mx.provider.net."

    def test_warnings(self, run, conf):
        """
        A loopback-only listener or an smtp listener off port 25 is
        pointed out: otherwise the admin publishes records for services the
        world cannot reach.
        """
        conf.write_text('hostname = "mail.example.org"\ndata_dir = "data"\n'
                        '[listen]\nsmtp = "tcp:2525"\nimap = "tcp:143:interface=127.0.0.1"\n')
        code, out, _ = run("dns", DOMAIN)
        assert code == 0
        assert "other servers deliver to port 25 only" in out
        assert "imap listener is bound to loopback (127.0.0.1)" in out
        parseZone(out)

    def test_badDomain(self, run):
        """An invalid domain is a one-line error, exit 1."""
        assert run("dns", "not a domain")[:2] == (1, "")
