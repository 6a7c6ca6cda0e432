"""
Email authentication end to end: a real pymailer whose resolver asks a real
DNS server on loopback serving SPF, DKIM and DMARC records; mail arrives over
SMTP from 127.0.0.1 and is judged, marked, refused or filed into Junk; mail
our users submit leaves DKIM-signed; a forward through an alias leaves
ARC-sealed and the next hop (a second pymailer) verifies the seal.
"""

import email
import email.policy
import smtplib

import dkim
import pytest

from dnsserver import DNSServer
from mailserver import HOSTNAME, PASSWORD, loopbackRelayPort
from pymailer.policy import dkimkeys
from pymailer.testing import rsaSigningKey, txtEntry

ALICE = "alice@example.org"


@pytest.fixture(scope="module")
def signerKey(tmp_path_factory):
    """The key of signed.test, a remote domain that signs its mail."""
    return rsaSigningKey(tmp_path_factory.mktemp("remote"), "signed.test", "sel")


@pytest.fixture
def zone(signerKey):
    return DNSServer({
        "spf-fail.test": [txtEntry("v=spf1 -all")],
        "spf-pass.test": [txtEntry("v=spf1 ip4:127.0.0.1 -all")],
        "signed.test": [txtEntry("v=spf1 -all")],
        "sel._domainkey.signed.test": [txtEntry(dkimkeys.publicKeyRecord(signerKey))],
        "reject.test": [txtEntry("v=spf1 -all")],
        "_dmarc.reject.test": [txtEntry("v=DMARC1; p=reject")],
        "quarantine.test": [txtEntry("v=spf1 -all")],
        "_dmarc.quarantine.test": [txtEntry("v=DMARC1; p=quarantine")],
        "remote.test": [("MX", "10 mx.remote.test.")],
        "mx.remote.test": [("A", "127.0.0.2")],
    })


@pytest.fixture
def mx(makeMailServer, zone):
    server = makeMailServer(
        roles=("submission",), start=False,
        sections={
            "auth": {"allow_plaintext_on_loopback": True, "failure_delay": 0},
            "dns": {"servers": [zone.address], "timeout": 2.0},
            "policy": {"dmarc": {"mark_only_domains": ["marked.test"]}},
        },
    )
    server.admin("domain", "add", "marked.test")
    server.addUser("carol@marked.test")
    server.start()
    yield server
    zone.stop()


def send(server, sender, recipients, message):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=20) as client:
        client.ehlo("client.test")
        client.sendmail(sender, recipients, message)


def message(fromAddress, subject="hello", body="Hi there.\r\n", extra=""):
    return (f"From: <{fromAddress}>\r\nTo: <{ALICE}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@test>\r\n{extra}\r\n{body}").encode()


def delivered(server, user=ALICE, count=1, folder=None):
    found = server.waitForMessages(user, count, folder=folder)
    return [email.message_from_bytes(data, policy=email.policy.compat32)
            for data in found]


def results(msg):
    """Our Authentication-Results, unfolded, as one string."""
    fields = [" ".join(v.split()) for v in msg.get_all("Authentication-Results", [])]
    ours = [f for f in fields if f.lower().startswith(HOSTNAME + ";")]
    assert len(ours) == 1, fields
    return ours[0]


def signed(key, data):
    return dkim.sign(data, key.selector.encode(), b"signed.test", key.privateKey,
                     include_headers=[b"from", b"to", b"subject"])


def test_spf_fail_marked(mx):
    """Mail from a domain whose SPF is -all, sent from 127.0.0.1, is marked spf=fail."""
    send(mx, "a@spf-fail.test", [ALICE], message("a@spf-fail.test"))
    [msg] = delivered(mx)
    assert "spf=fail" in results(msg)
    assert "smtp.mailfrom=a@spf-fail.test" in results(msg)


def test_spf_pass_marked(mx):
    """A sender whose SPF lists 127.0.0.1 is marked spf=pass."""
    send(mx, "a@spf-pass.test", [ALICE], message("a@spf-pass.test"))
    [msg] = delivered(mx)
    assert "spf=pass" in results(msg)


def test_dkim_pass_and_one_changed_byte_fails(mx, signerKey):
    """A message signed with dkimpy gets dkim=pass; the same with one body byte changed, dkim=fail."""
    data = message("news@signed.test", "signed mail", "Original body.\r\n")
    signature = signed(signerKey, data)
    send(mx, "news@signed.test", [ALICE], signature + data)
    send(mx, "news@signed.test", [ALICE], signature + data.replace(b"Original", b"Origina1"))
    first, second = sorted(delivered(mx, count=2), key=lambda m: "Origina1" in m.get_payload())
    assert "dkim=pass" in results(first) and "header.d=signed.test" in results(first)
    assert "dkim=fail" in results(second)


def test_dmarc_reject_refused(mx):
    """A p=reject domain failing SPF and DKIM gets 550 5.7.1 at the end of data."""
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(mx, "ceo@reject.test", [ALICE], message("ceo@reject.test"))
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 ")
    assert b"reject.test" in refused.value.smtp_error
    assert mx.messages(ALICE) == []


def test_dmarc_quarantine_lands_in_junk(mx):
    """A p=quarantine domain failing SPF and DKIM is delivered into Junk, marked dmarc=fail."""
    send(mx, "promo@quarantine.test", [ALICE], message("promo@quarantine.test"))
    [msg] = delivered(mx, folder="Junk")
    assert "dmarc=fail" in results(msg) and "header.from=quarantine.test" in results(msg)
    assert mx.messages(ALICE) == []


def test_dmarc_mark_only_domain_gets_it_in_inbox(mx):
    """A local domain set to mark only receives even p=reject failures, marked dmarc=fail."""
    send(mx, "ceo@reject.test", ["carol@marked.test"], message("ceo@reject.test"))
    [msg] = delivered(mx, user="carol@marked.test")
    assert "dmarc=fail" in results(msg)


def test_dmarc_passes_with_aligned_dkim(mx, zone, signerKey):
    """A p=reject domain's mail with a valid signature of its own passes DMARC although SPF fails."""
    zone.records["_dmarc.signed.test."] = [txtEntry("v=DMARC1; p=reject")]
    data = message("news@signed.test", "aligned")
    send(mx, "news@signed.test", [ALICE], signed(signerKey, data) + data)
    [msg] = delivered(mx)
    assert "dkim=pass" in results(msg) and "spf=fail" in results(msg)
    assert "dmarc=pass" in results(msg)


def test_forged_authentication_results_stripped(mx):
    """An incoming Authentication-Results claiming our authserv-id is removed; others stay."""
    forged = (f"Authentication-Results: {HOSTNAME};\r\n\tdkim=pass header.d=bank.test\r\n"
              "Authentication-Results: other.test; spf=pass\r\n")
    send(mx, "a@spf-fail.test", [ALICE], forged.encode() + message("a@spf-fail.test"))
    [msg] = delivered(mx)
    assert "bank.test" not in results(msg)
    assert "spf=fail" in results(msg)
    assert "other.test; spf=pass" in msg.get_all("Authentication-Results")


def keygenRecords(server, domain, selector):
    """Run `pymailer dkim keygen`, and parse the zone lines it printed into {name: txt}."""
    out = server.admin("dkim", "keygen", domain, "--selector", selector).stdout
    records = {}
    for line in out.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        name, _, rest = line.partition(" IN TXT ")
        assert rest, line
        records[name.strip()] = "".join(part for part in rest.split('"')[1::2])
    assert len(records) == 2, out
    return records


def test_submitted_mail_dkim_signed_verifiable_with_printed_record(mx):
    """
    A message alice submits carries rsa-sha256 and ed25519-sha256 signatures
    that dkimpy verifies against the records `pymailer dkim keygen` printed.
    """
    records = keygenRecords(mx, "example.org", "t")
    with smtplib.SMTP("127.0.0.1", mx.ports["submission"], timeout=20) as client:
        client.login(ALICE, PASSWORD)
        client.sendmail(ALICE, ["bob@example.org"], message(ALICE, "signed by us"))
    raw = mx.waitForMessages("bob@example.org", 1)[0]
    signatures = [v for k, v in email.message_from_bytes(raw).items() if k == "DKIM-Signature"]
    assert len(signatures) == 2
    assert any("a=rsa-sha256" in s for s in signatures)
    assert any("a=ed25519-sha256" in s for s in signatures)

    def dnsfunc(name, timeout=5):
        return records.get(name.decode().rstrip(".") + ".", "").encode()

    verifier = dkim.DKIM(raw)
    assert all(verifier.verify(idx=i, dnsfunc=dnsfunc) for i in range(2))


def test_alias_forward_arc_sealed_and_verified_next_hop(mx, zone, makeMailServer, signerKey):
    """
    Mail forwarded by an alias to another domain leaves with an ARC seal the
    next hop verifies (arc=pass), so forwarding does not break DMARC there.
    """
    port = loopbackRelayPort()
    records = keygenRecords(mx, "example.org", "arc")
    for name, text in records.items():
        zone.records[name] = [txtEntry(text)]
    receiver = makeMailServer(
        name="receiver", interface="127.0.0.2", port=port, provision=False, start=False,
        sections={"dns": {"servers": [zone.address], "timeout": 2.0}})
    receiver.provision(domain="remote.test", users=("dan@remote.test",))
    receiver.start()
    mx.stop()
    mx.sections["relay"] = {"port": port, "connect_timeout": 2.0}
    mx.writeConfig()
    mx.start()
    mx.admin("alias", "add", "fwd@example.org", "dan@remote.test")

    data = message("news@signed.test", "forwarded")
    send(mx, "news@signed.test", ["fwd@example.org"], signed(signerKey, data) + data)
    [msg] = delivered(receiver, user="dan@remote.test")
    assert msg["ARC-Seal"] is not None and "d=example.org" in msg["ARC-Seal"]
    assert "dkim=pass" in msg["ARC-Authentication-Results"]
    theirs = [v for v in msg.get_all("Authentication-Results") if "arc=" in v]
    assert any("arc=pass" in " ".join(v.split()) for v in theirs), theirs
