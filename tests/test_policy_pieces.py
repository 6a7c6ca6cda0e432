"""
Our authentication pieces (SPF, DKIM, ARC, DMARC) through the policy chain,
on a L{FakeResolver} zone and a synchronous thread pool: which results they
record, and what DMARC decides for enforcing and mark-only recipients.
"""

import io

import dkim
import pytest

from pymailer.config import default
from pymailer.policy import dkimkeys
from pymailer.policy.chain import PolicyChain
from pymailer.policy.decision import Facts, PolicyContext
from pymailer.policy.pieces import MAX_CRYPTO_SIZE, ARCCheck, DKIMCheck, DMARCCheck, SPFCheck
from pymailer.testing import (
    ClockReactor, CountingThreadPool, FakeResolver, rsaSigningKey, txtEntry)


class Message:
    def __init__(self, data):
        self.data = data

    def openData(self):
        return io.BytesIO(self.data)


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return rsaSigningKey(tmp_path_factory.mktemp("k"), "good.test", "s1")


@pytest.fixture
def run(tmp_path, key):
    resolver = FakeResolver({
        "good.test": [txtEntry("v=spf1 ip4:192.0.2.1 -all")],
        "s1._domainkey.good.test": [txtEntry(dkimkeys.publicKeyRecord(key))],
        "_dmarc.good.test": [txtEntry("v=DMARC1; p=reject")],
        "bad.test": [txtEntry("v=spf1 -all")],
        "_dmarc.bad.test": [txtEntry("v=DMARC1; p=reject")],
        "soft.test": [txtEntry("v=spf1 -all")],
        "_dmarc.soft.test": [txtEntry("v=DMARC1; p=quarantine")],
    })
    pool = CountingThreadPool()
    context = PolicyContext(default(tmp_path), ClockReactor(), pool, resolver)
    options = {"mark_only_domains": ("marked.test",)}
    chain = PolicyChain([SPFCheck(context), DKIMCheck(context), ARCCheck(context),
                         DMARCCheck(context, options)], "mx.test")

    def run(sender, data, recipients=("a@local.test",), client="192.0.2.1", size=None, user=None):
        facts = Facts(clientAddress=client, helo="client.test", sender=sender,
                      recipients=list(recipients), authenticatedAs=user)
        facts.size = len(data) if size is None else size
        results = []
        chain.checkData(facts, Message(data)).addBoth(results.append)
        return results[0], facts

    run.pool = pool
    return run


def message(fromDomain, body=b"Hello.\r\n"):
    return (f"From: <news@{fromDomain}>\r\nTo: <a@local.test>\r\nSubject: hi\r\n\r\n").encode() + body


def sign(key, data):
    return dkim.sign(data, b"s1", b"good.test", key.privateKey, include_headers=[b"from", b"subject"])


def header(decision):
    return b"".join(decision.headers).decode()


def test_aligned_spf_and_dkim_pass(run, key):
    """A message from its own domain's address and signed by it passes all three."""
    data = message("good.test")
    decision, facts = run("news@good.test", sign(key, data) + data)
    assert not decision.refuses and decision.folder is None
    text = header(decision)
    for expected in ("spf=pass", "dkim=pass", "header.d=good.test", "arc=none", "dmarc=pass",
                     "header.from=good.test"):
        assert expected in text, text
    assert text.startswith("Authentication-Results: mx.test;")


def test_dmarc_reject_when_every_recipient_enforces(run):
    """p=reject with no aligned pass refuses the message with 550 5.7.1."""
    decision, _ = run("ceo@bad.test", message("bad.test"))
    assert (decision.action, decision.code, decision.enhanced) == ("reject", 550, "5.7.1")
    assert "bad.test" in decision.text and decision.reason == "dmarc.reject"


def test_dmarc_reject_with_mark_only_recipient_files_the_others_into_junk(run):
    """A mark-only domain's user still gets it; enforcing recipients get it in Junk."""
    decision, _ = run("ceo@bad.test", message("bad.test"),
                      recipients=("a@local.test", "b@marked.test"))
    assert not decision.refuses
    assert (decision.folder, decision.recipients) == ("Junk", ("a@local.test",))
    assert "dmarc=fail" in header(decision)


def test_dmarc_mark_only_recipients_only_marked(run):
    """Only mark-only recipients: delivered to INBOX, marked dmarc=fail."""
    decision, _ = run("ceo@bad.test", message("bad.test"), recipients=("b@marked.test",))
    assert not decision.refuses and decision.folder is None
    assert "dmarc=fail" in header(decision)


def test_dmarc_quarantine_files_into_junk(run):
    """p=quarantine with no aligned pass goes to Junk."""
    decision, _ = run("promo@soft.test", message("soft.test"))
    assert (decision.folder, decision.recipients) == ("Junk", ("a@local.test",))


def test_changed_body_fails_dkim_and_dmarc(run, key):
    """One body byte changed after signing: dkim=fail, and DMARC (SPF failing too) rejects."""
    data = message("good.test")
    decision, facts = run("news@good.test", sign(key, data) + data.replace(b"Hello", b"Hallo"),
                          client="192.0.2.99")
    assert decision.refuses
    assert facts.result("dkim").result == "fail"
    assert facts.result("spf").result == "fail"


def test_message_over_arc_cap_still_dkim_verified_and_enforced(run, key):
    """
    Inbound mail over the 16 MiB ARC cap is still DKIM-verified (streamed):
    a good signature passes DMARC, an unsigned spoof is refused; ARC says
    it did not look (arc=policy).
    """
    data = message("good.test")
    decision, facts = run("news@good.test", sign(key, data) + data,
                          client="192.0.2.99", size=MAX_CRYPTO_SIZE + 1)
    assert not decision.refuses
    assert [facts.result(m).result for m in ("dkim", "arc", "dmarc")] == [
        "pass", "policy", "pass"]
    decision, facts = run("ceo@bad.test", message("bad.test"), size=MAX_CRYPTO_SIZE + 1)
    assert decision.refuses and facts.result("dmarc").result == "fail"


def test_submitted_message_over_16_mib_is_signed(run, tmp_path):
    """
    A 20 MiB message our user submits leaves with a DKIM signature that
    dkimpy verifies: before, mail over 16 MiB left unsigned and receivers'
    DMARC treated it as forged.
    """
    config = default(tmp_path)
    keys = dkimkeys.generateKeys(config.data_dir, "local.test", "k")
    data = message("local.test", body=(b"A" * 76 + b"\r\n") * (20 * 1024 * 1024 // 78))
    decision, facts = run("a@local.test", data, user="a@local.test")
    signature = header(decision).encode()
    assert signature.count(b"DKIM-Signature:") == 2
    records = {f"{k.selector}._domainkey.local.test": dkimkeys.publicKeyRecord(k).encode()
               for k in keys}
    verifier = dkim.DKIM(signature + data)
    for idx in (0, 1):
        assert verifier.verify(idx, dnsfunc=lambda name, timeout=5: records[
            name.decode().rstrip(".")])


def test_temporary_dns_error_marks_temperror(run):
    """A domain whose DNS fails for now gets spf=temperror and is not refused."""
    decision, facts = run("x@nowhere.test", message("nowhere.test"))
    assert facts.result("spf").result in ("none", "temperror")
    assert not decision.refuses


def test_authenticated_mail_signed_not_judged(run, tmp_path):
    """Mail our user submits is DKIM-signed for its From domain, with no results recorded."""
    config = default(tmp_path)
    dkimkeys.generateKeys(config.data_dir, "local.test", "k")
    decision, facts = run("a@local.test", message("local.test"), user="a@local.test")
    assert facts.authResults == []
    assert header(decision).count("DKIM-Signature:") == 2
    assert "d=local.test" in header(decision)


def test_the_checks_read_the_message_in_the_threads_that_use_it(run):
    """
    The inbound checks of one message take three hand-offs to a thread:
    DKIM's verification, ARC's (which reads the message in the same call,
    for itself and DMARC) and DMARC's.  If this fails, a message costs
    more trips to a thread and back than its checks need (each one a
    queue put and a wake-up of the reactor, under load 15-20 % of its
    time).
    """
    decision, facts = run("news@good.test", message("good.test"))
    assert [r.method for r in facts.authResults] == ["spf", "dkim", "arc", "dmarc"]
    assert run.pool.calls == 3
