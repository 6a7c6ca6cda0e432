"""
C{pymailer doctor}: what a loopback DNS server publishes, compared with
what C{pymailer dns} says the domain needs, through the server's own
resolver (C{[dns] servers}).
"""

import pytest

from pymailer import doctor
from pymailer.config import loadOrDefault

from dnsserver import DNSServer

DOMAIN = "example.org"
HOST = "mail.example.org"
ADDRESS = "192.0.2.10"
PTR_NAME = "10.2.0.192.in-addr.arpa."

LISTEN = """
[listen]
smtp = "tcp:25"
submissions = "ssl:port=465"
imaps = "ssl:port=993"
https = "ssl:port=443"
"""


def goodZone(run):
    """Every record `pymailer dns` prints, plus the host's address and its PTR."""
    assert run("domain", "add", DOMAIN)[0] == 0
    assert run("dkim", "keygen", DOMAIN, "--selector", "s1")[0] == 0
    code, out, _ = run("dns", DOMAIN)
    assert code == 0
    records = {}
    for line in out.splitlines():
        if line and not line.startswith(";"):
            name, _, rdtype, text = line.split(None, 3)
            records.setdefault(name, []).append((rdtype, text))
    records.setdefault(HOST + ".", []).append(("A", ADDRESS))
    records[PTR_NAME] = [("PTR", HOST + ".")]
    return records


@pytest.fixture
def dnsServer():
    with DNSServer({}) as server:
        yield server


@pytest.fixture
def confExtra(dnsServer):
    return LISTEN + f'\n[dns]\nservers = ["{dnsServer.address}"]\ntimeout = 3\n'


def test_goodZone(cli, dnsServer):
    """
    With every record published as `pymailer dns` prints it and a PTR
    naming the host, doctor marks all ok and exits 0: otherwise a correct
    setup would be reported broken.
    """
    dnsServer.records.update(goodZone(cli))
    code, out, err = cli("doctor")
    assert (code, err) == (0, ""), out
    assert "all records as needed" in out
    for kind in (f"OK       {DOMAIN}. MX 10 {HOST}.", f'{DOMAIN}. TXT "v=spf1 mx -all"',
                 f"s1._domainkey.{DOMAIN}.", f"_dmarc.{DOMAIN}.", f"_mta-sts.{DOMAIN}.",
                 f"_smtp._tls.{DOMAIN}.", f"_imaps._tcp.{DOMAIN}.", f"autoconfig.{DOMAIN}.",
                 f"OK       {PTR_NAME} PTR {HOST}."):
        assert kind in out
    assert "MISSING" not in out and "WRONG" not in out


def test_brokenZone(cli, dnsServer):
    """
    Another MX host, an SPF record without our MX, no DKIM key, no
    autoconfig name and a PTR naming another host are each marked (wrong or
    missing, with what is published), and doctor exits 1: otherwise an
    operator would not learn why mail to or from the domain fails.
    """
    zone = goodZone(cli)
    zone[DOMAIN + "."] = [("MX", "10 mx.elsewhere.example."),
                          ("TXT", '"v=spf1 a -all"'), ("TXT", '"unrelated text"')]
    del zone[f"s1._domainkey.{DOMAIN}."], zone[f"autoconfig.{DOMAIN}."]
    zone[PTR_NAME] = [("PTR", "host.isp.example.")]
    dnsServer.records.update(zone)
    code, out, _ = cli("doctor", DOMAIN)
    assert code == 1
    lines = out.splitlines()

    def status(needle):
        return next(line for line in lines if needle in line).split()[0]

    assert status(f"{DOMAIN}. MX") == "WRONG"
    assert "published: 10 mx.elsewhere.example." in out
    assert status(f'{DOMAIN}. TXT "v=spf1') == "WRONG"
    assert "published: v=spf1 a -all" in out and "unrelated" not in out
    assert status(f"s1._domainkey.{DOMAIN}.") == "MISSING"
    assert status(f"autoconfig.{DOMAIN}.") == "MISSING"
    assert status(f"_dmarc.{DOMAIN}.") == "OK"
    assert status(f"{PTR_NAME} PTR") == "WRONG"
    assert "published: host.isp.example." in out


@pytest.mark.parametrize("confExtra", ['[listen]\nsmtp = "tcp:25:interface=127.0.0.1"\n'])
def test_loopbackOnly(conf):
    """
    With every listener on loopback, doctor says there is no public address
    to check instead of failing on the PTR: otherwise a test or private
    setup would get a misleading reverse-DNS error.
    """
    (check,) = doctor.checkPTR(loadOrDefault(conf), None, set())
    assert check.good and "bound to loopback" in check.note


SECOND = "192.0.2.11"


def test_blocklists(cli, dnsServer):
    """
    With two addresses for the host and one of them listed in
    zen.spamhaus.org (with the list's TXT reason), doctor marks that one
    LISTED, every other address and list OK, explains port 25, and exits 1:
    otherwise an operator would not learn why receivers refuse the
    server's mail.
    """
    zone = goodZone(cli)
    zone[HOST + "."].append(("A", SECOND))
    zone["11.2.0.192.in-addr.arpa."] = [("PTR", HOST + ".")]
    zone["11.2.0.192.zen.spamhaus.org."] = [("A", "127.0.0.2"), ("TXT", '"listed: test"')]
    dnsServer.records.update(zone)
    code, out, _ = cli("doctor")
    assert code == 1
    lines = out.splitlines()

    def status(needle):
        return next(line for line in lines if needle in line).split()[0]

    assert status("11.2.0.192.zen.spamhaus.org.") == "LISTED"
    assert "published: 127.0.0.2 | listed: test" in out
    for zone in ("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"):
        assert status(f"10.2.0.192.{zone}. A not listed") == "OK"
    assert status("11.2.0.192.bl.spamcop.net.") == "OK"
    assert status(f"{HOST}:25 TCP") == "INFO"
    assert f"swaks --server {HOST}:25 --quit-after banner" in out
    assert "1 record not as needed" in out
    # The same list, delisted: all good.
    del dnsServer.records["11.2.0.192.zen.spamhaus.org."]
    assert cli("doctor")[0] == 0


@pytest.mark.parametrize("confExtra", [
    '[listen]\nsmtp = "tcp:25:interface=127.0.0.1"\n[doctor]\nblocklists = ["bl.test"]\n'])
def test_loopbackOnlyBlocklistsAndPort25(conf):
    """
    With every listener on loopback, the blocklist check says there is no
    public address instead of looking one up, and port 25 is explained as
    unreachable from outside: otherwise a private setup would get
    misleading failures.
    """
    config = loadOrDefault(conf)
    assert config.doctor.blocklists == ("bl.test",)
    (check,) = doctor.checkBlocklists(config, None, {ADDRESS})
    assert check.good and "bound to loopback" in check.note and "bl.test" in check.name
    port25 = doctor.checkPort25(config)
    assert port25.good and port25.status == "info"
    assert "bound to loopback: other servers cannot reach it" in port25.note


@pytest.mark.parametrize("confExtra", ['[doctor]\nblocklists = ["not a zone"]\n'])
def test_badBlocklistRefused(cli):
    """
    A blocklist that is not a DNS zone is a config error naming the key:
    otherwise doctor would look up nonsense and call it not listed.
    """
    code, _, err = cli("check-config")
    assert code != 0 and "doctor.blocklists" in err
