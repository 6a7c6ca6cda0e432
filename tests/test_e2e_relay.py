"""
Relay end to end: a user submits mail for other domains; a real DNS server
on loopback serves their MX records; real receiving servers (a second
pymailer on 127.0.0.2, a scripted one on 127.0.0.3) take it, retry it or
refuse it; refusals come back to the sender as RFC 3464 reports.
"""

import email
import email.policy
import smtplib

import pytest

from dnsserver import DNSServer
from mailserver import PASSWORD, loopbackRelayPort, relaySenderOptions, waitFor
from scriptedsmtp import ScriptedSMTP

ALICE = "alice@example.org"




@pytest.fixture
def world(makeMailServer):
    port = loopbackRelayPort()
    dns = DNSServer({
        "remote.test": [("MX", "10 mx.remote.test.")],
        "mx.remote.test": [("A", "127.0.0.2")],
        "implicit.test": [("A", "127.0.0.2")],
        "scripted.test": [("MX", "10 mx.scripted.test."), ("MX", "20 dead.scripted.test.")],
        "mx.scripted.test": [("A", "127.0.0.3")],
        "dead.scripted.test": [("A", "127.0.0.4")],
        "nullmx.test": [("MX", "0 .")],
    })
    receiver = makeMailServer(name="receiver", interface="127.0.0.2", port=port,
                              provision=False, start=False)
    receiver.provision(domain="remote.test", users=("carol@remote.test",))
    receiver.admin("domain", "add", "implicit.test")
    receiver.addUser("dave@implicit.test")
    receiver.start()
    sender = makeMailServer(name="sender", **relaySenderOptions(dns.address, port))

    class World:
        pass

    w = World()
    w.dns, w.receiver, w.sender, w.port = dns, receiver, sender, port
    w.scripted = None
    yield w
    if w.scripted is not None:
        w.scripted.stop()
    dns.stop()


def submit(world, to, body="Hello over there.\r\n", mail_options=(), data=None):
    with smtplib.SMTP("127.0.0.1", world.sender.ports["submission"], timeout=10) as c:
        c.login(ALICE, PASSWORD)
        data = data or f"From: {ALICE}\r\nTo: {', '.join(to)}\r\nSubject: relay\r\n\r\n{body}"
        c.sendmail(ALICE, to, data.encode() if isinstance(data, str) else data, mail_options)


def reports(world):
    """The delivery reports in alice's mailbox, parsed."""
    out = []
    for data in world.sender.messages("alice"):
        msg = email.message_from_bytes(data, policy=email.policy.default)
        if msg.get_content_type() == "multipart/report":
            out.append(msg)
    return out


def statusFields(report):
    part = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    text = part.as_bytes().decode()
    return {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
        for line in text.splitlines() if ":" in line and not line.startswith(" ")
    }


def test_relayed_to_mx_with_received_line(world):
    """Mail to another domain reaches its MX (found through DNS), with our Received: line on top."""
    submit(world, ["carol@remote.test"])
    waitFor(lambda: world.receiver.messages("carol@remote.test"), timeout=20, message="relayed mail")
    data = world.receiver.messages("carol@remote.test")[0]
    received = [l for l in data.split(b"\r\n") if l.startswith(b"Received:")]
    assert len(received) == 2  # the receiver's and ours
    # Ours: authenticated submission in plaintext on loopback (RFC 3848
    # ESMTPA); theirs: our relay hop, upgraded by opportunistic STARTTLS.
    assert b"with ESMTPA id" in received[1] or b"with ESMTPA id" in data
    assert b"with ESMTPS id" in data
    assert data.endswith(b"Hello over there.\r\n")
    assert ("remote.test.", "MX") in world.dns.queries


def test_no_mx_falls_back_to_address(world):
    """A domain without MX gets its mail at its own A record (RFC 5321 §5.1)."""
    submit(world, ["dave@implicit.test"])
    waitFor(lambda: world.receiver.messages("dave@implicit.test"), timeout=20, message="implicit MX")


def test_dot_lines_around_chunk_boundaries_byte_exact(world):
    """
    Lines starting with "." at every offset around 16 KiB chunk boundaries
    arrive byte-exact (no early end of data, no lost dots).
    """
    lines = []
    size = 0
    n = 0
    while size < 70000:
        line = (b"." * (1 + n % 3)) + b"x" * (n % 97) + b"\r\n"
        lines.append(line)
        size += len(line)
        n += 1
    body = b"".join(lines)
    data = b"From: alice@example.org\r\nSubject: dots\r\n\r\n" + body
    submit(world, ["carol@remote.test"], data=data)
    waitFor(lambda: world.receiver.messages("carol@remote.test"), timeout=20, message="dots")
    assert world.receiver.messages("carol@remote.test")[0].endswith(body)


def test_tempfail_retried_then_delivered(world):
    """A 4xx from the MX is retried on schedule and then delivered."""
    world.scripted = ScriptedSMTP("127.0.0.3", world.port,
                                  rcptReplies=["451 4.3.0 try later", "250 2.1.5 ok"])
    submit(world, ["someone@scripted.test"])
    waitFor(lambda: world.scripted.messages, timeout=30, message="retried delivery")
    assert len(world.scripted.transcripts) >= 2
    assert reports(world) == []


def test_permanent_failure_bounces_with_dsn(world):
    """A 5xx from the MX comes back to the sender as a report: Action failed, Status 5.1.1, Diagnostic-Code."""
    world.scripted = ScriptedSMTP("127.0.0.3", world.port,
                                  rcptReplies=["550 5.1.1 no such user here"])
    submit(world, ["nobody@scripted.test"])
    waitFor(lambda: reports(world), timeout=30, message="bounce")
    (report,) = reports(world)
    fields = statusFields(report)
    assert fields["Action"] == "failed"
    assert fields["Status"] == "5.1.1"
    assert "550 5.1.1 no such user here" in fields["Diagnostic-Code"]
    assert report["From"].addresses[0].username.upper() == "MAILER-DAEMON"
    assert world.sender.queueEmpty(envelopesOnly=True) or waitFor(
        lambda: world.sender.queueEmpty(envelopesOnly=True), timeout=10)


def test_null_mx_bounces_at_once(world):
    """A domain with a null MX (RFC 7505) bounces at once with 5.1.10, without retries."""
    submit(world, ["x@nullmx.test"])
    waitFor(lambda: reports(world), timeout=20, message="null MX bounce")
    assert statusFields(reports(world)[0])["Status"] == "5.1.10"


def test_8bit_message_to_peer_without_8bitmime_bounces(world):
    """An 8-bit message to a server without 8BITMIME is bounced with 5.6.3, not mangled."""
    world.scripted = ScriptedSMTP("127.0.0.3", world.port, extensions=("PIPELINING",))
    submit(world, ["someone@scripted.test"], body="Grüße\r\n", mail_options=["BODY=8BITMIME"])
    waitFor(lambda: reports(world), timeout=20, message="5.6.3 bounce")
    assert statusFields(reports(world)[0])["Status"] == "5.6.3"
    assert world.scripted.messages == []


def test_unreachable_host_skipped_for_next_mx(world):
    """When the first MX is down the next one is tried (here the order is reversed by preference)."""
    world.dns.records["scripted.test."] = [("MX", "5 dead.scripted.test."), ("MX", "10 mx.scripted.test.")]
    world.scripted = ScriptedSMTP("127.0.0.3", world.port)
    submit(world, ["someone@scripted.test"])
    waitFor(lambda: world.scripted.messages, timeout=20, message="second MX")


def test_dns_stub_nxdomain_defers_not_bounces(world):
    """
    On a machine whose resolver cannot reach DNS and says NXDOMAIN (without
    the zone's SOA) to every name, mail to another domain waits in the queue
    with 4.4.3 instead of bouncing; if this fails, the sender gets "domain
    example.net does not exist" for a domain that exists.
    """
    world.dns.nxdomainSOA = False
    submit(world, ["someone@example.net"])

    def deferredWith443():
        for qid in world.sender.queueEnvelopes(("deferred",)).get("deferred", []):
            text = (world.sender.queueDir("deferred") / f"{qid}.json").read_text()
            if "4.4.3" in text:
                return text
    text = waitFor(deferredWith443, timeout=20, message="a deferred envelope with 4.4.3")
    assert "does not exist" not in text
    assert reports(world) == []
