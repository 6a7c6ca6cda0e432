"""
The spam pieces without a network: C{dnsbl} on a L{FakeResolver} zone,
C{greylist} on a SQLite file and a C{task.Clock}, C{rules} on messages in
memory; the chain's X-Spam headers and Junk filing; their config tables.
"""

import dataclasses
import io
import time

import pytest
from twisted.internet import defer

from pymailer.config import (
    ConfigError, DNSBLConfig, DNSBLZone, GreylistConfig, _parse, default)
from pymailer.policy.chain import PolicyChain
from pymailer.policy.decision import Facts, PolicyContext
from pymailer.policy.dnsbl import DNSBL, reversedName
from pymailer.policy.greylist import Greylist, GreylistStore
from pymailer.policy.rules import Rules
from pymailer.testing import (
    ClockReactor, FakeResolver, MemoryDirectory, SynchronousThreadPool, txtEntry)


class Message:
    queueId = "QID1"

    def __init__(self, data):
        self.data = data

    def openData(self):
        return io.BytesIO(self.data)


def result(d):
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred did not fire"
    return out[0]


ZONE = {
    "2.0.0.127.bl.test": [("A", "127.0.0.2")],
    "2.0.0.127.score.test": [("A", "127.0.0.4")],
    "2.0.0.127.coded.test": [("A", "127.0.0.3")],
    "2.0.0.127.bl2.test": [("A", "127.0.0.2"), txtEntry("see https://bl2.test/q")],
    # CR, LF and NUL as zone-file escapes (RFC 1035 §5.1 \DDD), then 5,000 x.
    "2.0.0.127.hostile.test": [("A", "127.0.0.2"),
                               ("TXT", '"listed\\013\\010250 ok\\000" '
                                + txtEntry("x" * 5000)[1])],
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test":
        [("A", "127.0.0.2")],
    "5.0.0.127.wl.test": [("A", "127.0.10.1")],
    "5.0.0.127.bl.test": [("A", "127.0.0.2")],
    "spammer.test.dbl.test": [("A", "127.0.1.2")],
    "evil.test.dbl.test": [("A", "127.0.1.2")],
    "9.0.0.127.bl.test": ["TIMEOUT"],
}


@pytest.fixture
def dnsbl(tmp_path):
    reactor = ClockReactor()
    resolver = FakeResolver(ZONE)

    def make(**options):
        config = DNSBLConfig(**options)
        context = PolicyContext(default(tmp_path), reactor, SynchronousThreadPool(), resolver)
        return DNSBL(context, config)

    make.resolver, make.reactor = resolver, reactor
    return make


def rcpt(piece, ip, sender="x@remote.test", user=None, recipient="a@local.test"):
    facts = Facts(clientAddress=ip, sender=sender, authenticatedAs=user)
    return result(defer.maybeDeferred(piece.checkRecipient, facts, recipient)), facts


def test_reversed_names():
    """A list is asked the RFC 5782 name, or every lookup misses and spam flows in."""
    assert reversedName("192.0.2.1") == "1.2.0.192"
    assert reversedName("2001:db8::1") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2")
    assert reversedName("::ffff:192.0.2.1") == "1.2.0.192"


def test_listed_ip_refused_with_postfix_text(dnsbl):
    """A client on a blocklist gets 554 5.7.1 naming the list, as from Postfix."""
    decision, _ = rcpt(dnsbl(zones=(DNSBLZone("bl.test"),)), "127.0.0.2")
    assert (decision.code, decision.enhanced) == (554, "5.7.1")
    assert decision.text == "Client host [127.0.0.2] blocked using bl.test; 127.0.0.2"


def test_listed_ipv6_refused(dnsbl):
    """An IPv6 spammer is looked up by nibbles and refused like an IPv4 one."""
    decision, _ = rcpt(dnsbl(zones=(DNSBLZone("bl.test"),)), "2001:db8::1")
    assert decision.code == 554


def test_return_code_meanings(dnsbl):
    """The reason is the operator's name for the code; codes not mapped are no listing."""
    zone = DNSBLZone("coded.test", codes=(("127.0.0.3", "CSS"),))
    decision, _ = rcpt(dnsbl(zones=(zone,)), "127.0.0.2")
    assert decision.text.endswith("blocked using coded.test; CSS")
    other = DNSBLZone("coded.test", codes=(("127.0.0.9", "XBL"),))
    assert rcpt(dnsbl(zones=(other,)), "127.0.0.2")[0] is None


def test_reason_from_txt(dnsbl):
    """Without a code map, the list's TXT record is the reason the sender reads."""
    decision, _ = rcpt(dnsbl(zones=(DNSBLZone("bl2.test"),)), "127.0.0.2")
    assert decision.text.endswith("bl2.test; see https://bl2.test/q")


def test_txt_reason_sanitised(dnsbl):
    """
    A list whose TXT holds CRLF, controls and 5,000 characters cannot put a
    forged "250 ok" line or a huge reply on our SMTP session: the sender
    reads one short printable line.
    """
    decision, _ = rcpt(dnsbl(zones=(DNSBLZone("hostile.test"),)), "127.0.0.2")
    assert decision.code == 554
    assert not any(c in decision.text for c in "\r\n\x00")
    reason = decision.text.split("blocked using hostile.test; ", 1)[1]
    assert reason.startswith("listed 250 ok x")
    assert len(reason) <= 200


def test_not_listed_and_unreachable_pass(dnsbl):
    """A clean client, or a list that fails, never costs a sender its mail."""
    piece = dnsbl(zones=(DNSBLZone("bl.test"),))
    assert rcpt(piece, "127.0.0.7")[0] is None
    assert rcpt(piece, "127.0.0.9")[0] is None


def test_timeout_is_not_listed(dnsbl):
    """A list that never answers lets the session go on after the timeout."""
    piece = dnsbl(zones=(DNSBLZone("bl.test"),), timeout=2.0)
    piece.context.resolver.lookup = lambda name, rdtype: defer.Deferred()
    facts = Facts(clientAddress="127.0.0.2", sender="x@remote.test")
    out = []
    piece.checkRecipient(facts, "a@local.test").addBoth(out.append)
    assert out == []
    dnsbl.reactor.advance(2.0)
    assert out == [None]


def test_allowlists_exempt(dnsbl):
    """A client on a DNSWL or in the local allowlist is never refused."""
    zones = (DNSBLZone("bl.test"),)
    assert rcpt(dnsbl(zones=zones, allow_zones=("wl.test",)), "127.0.0.5")[0] is None
    assert rcpt(dnsbl(zones=zones, allow=("127.0.0.0/24",)), "127.0.0.2")[0] is None
    assert rcpt(dnsbl(zones=zones, allow=("127.0.0.0/24",)), "::ffff:127.0.0.2")[0] is None


def test_allowlisted_client_gets_dnswl_result(dnsbl):
    """
    A client on a DNS allowlist is reported in Authentication-Results as
    RFC 8904 says (dnswl=pass dns.zone=... policy.ip=...): otherwise the
    user cannot tell why a blocklisted-looking sender got through.
    """
    from pymailer.policy.authresults import authenticationResults

    decision, facts = rcpt(dnsbl(allow_zones=("wl.test",)), "127.0.0.5")
    assert decision is None
    assert authenticationResults("mx.test", facts.authResults) == (
        b"Authentication-Results: mx.test;\r\n\tdnswl=pass dns.zone=wl.test"
        b" policy.ip=127.0.10.1\r\n")


def test_authenticated_not_judged(dnsbl):
    """A user submitting from a listed home IP can still send."""
    assert rcpt(dnsbl(zones=(DNSBLZone("bl.test"),)), "127.0.0.2", user="a@local.test")[0] is None


def test_sender_domain_listed(dnsbl):
    """Mail from a domain on a domain list is refused at RCPT, naming the domain."""
    decision, _ = rcpt(dnsbl(domain_zones=(DNSBLZone("dbl.test"),)), "127.0.0.7",
                       sender="x@spammer.test")
    assert decision.text.startswith("Sender address domain spammer.test blocked using dbl.test")


def test_answers_cached(dnsbl):
    """A second transaction from the same client costs no DNS query."""
    piece = dnsbl(zones=(DNSBLZone("bl.test"),), cache_ttl=60.0)
    rcpt(piece, "127.0.0.7")
    asked = len(dnsbl.resolver.queries)
    rcpt(piece, "127.0.0.7")
    assert len(dnsbl.resolver.queries) == asked
    dnsbl.reactor.advance(61)
    rcpt(piece, "127.0.0.7")
    assert len(dnsbl.resolver.queries) == asked + 1


def test_cache_bounded(dnsbl):
    """The cache holds at most cache_size names, so a botnet cannot grow it without end."""
    piece = dnsbl(zones=(DNSBLZone("bl.test"),), cache_size=3)
    for i in range(10):
        rcpt(piece, f"10.0.0.{i}")
    assert len(piece.cache._entries) == 3


def test_score_zone_adds_headers(dnsbl):
    """A 'score' list marks the message instead of refusing it."""
    piece = dnsbl(zones=(DNSBLZone("score.test", "score"),), listing_score=2.5)
    decision, facts = rcpt(piece, "127.0.0.2")
    assert decision is None
    facts.recipients = ["a@local.test"]
    final = result(PolicyChain([piece], "mx.test").checkData(facts, Message(b"\r\nhi\r\n")))
    assert final.folder is None
    assert b"X-Spam-Score: 2.5\r\n" in final.headers
    assert any(h.startswith(b"X-Spam-Status: No, score=2.5 required=5") for h in final.headers)


def test_url_domain_listed(dnsbl):
    """A link to a listed domain in the body refuses the message at end of data."""
    piece = dnsbl(domain_zones=(DNSBLZone("dbl.test"),))
    facts = Facts(clientAddress="127.0.0.7", sender="x@remote.test", recipients=["a@local.test"])
    body = b"Subject: hi\r\n\r\nclick http://Evil.test/login now\r\n"
    decision = result(PolicyChain([piece], "mx.test").checkData(facts, Message(body)))
    assert decision.code == 554
    assert "URL domain evil.test blocked using dbl.test" in decision.text


# -- greylist -------------------------------------------------------------------


@pytest.fixture
def greylist(tmp_path):
    reactor = ClockReactor()

    def make(**options):
        config = dataclasses.replace(GreylistConfig(delay=300, expire=86400, keep=35 * 86400),
                                     **options)
        return Greylist(config, GreylistStore(tmp_path / "greylist.sqlite"), reactor,
                        SynchronousThreadPool())

    make.reactor = reactor
    return make


def test_greylist_defers_then_accepts(greylist):
    """A first attempt waits; a retry after the delay passes, and later ones at once."""
    piece = greylist()
    first, _ = rcpt(piece, "192.0.2.10")
    assert (first.code, first.enhanced) == (451, "4.7.1")
    assert first.text == "Greylisted, try again in 300 seconds"
    greylist.reactor.advance(100)
    assert rcpt(piece, "192.0.2.10")[0].text == "Greylisted, try again in 200 seconds"
    greylist.reactor.advance(200)
    assert rcpt(piece, "192.0.2.99")[0] is None  # the same /24 retried
    greylist.reactor.advance(30 * 86400)
    assert rcpt(piece, "192.0.2.10")[0] is None


def test_greylist_survives_restart(greylist):
    """A server restart neither forgets passed senders nor resets waiting ones."""
    rcpt(greylist(), "192.0.2.10")
    greylist.reactor.advance(300)
    assert rcpt(greylist(), "192.0.2.10")[0] is None
    assert rcpt(greylist(), "192.0.2.10")[0] is None


def test_greylist_known_sender_other_recipient(greylist):
    """A sender that passed once is not delayed again for a colleague."""
    piece = greylist()
    rcpt(piece, "192.0.2.10")
    greylist.reactor.advance(300)
    rcpt(piece, "192.0.2.10")
    assert rcpt(piece, "192.0.2.10", recipient="b@local.test")[0] is None


def test_greylist_expired_retry_waits_again(greylist):
    """A retry after expire starts over (a spammer's day-late retry is not enough)."""
    piece = greylist()
    rcpt(piece, "2001:db8::1")
    greylist.reactor.advance(86401)
    assert rcpt(piece, "2001:db8::2")[0].code == 451


def test_greylist_dkim_aligned_domain_never_waits(greylist):
    """
    A domain whose mail came DKIM-signed by itself (aligned with MAIL FROM)
    is a known good sender: its next mail, from any of its hosts, is not
    delayed.  Without a signature, or with a stranger's, it still waits.
    """
    from pymailer.policy.decision import AuthResult

    piece = greylist()
    for signer, result in (("other.test", "pass"), ("remote.test", "fail")):
        facts = Facts(clientAddress="192.0.2.10", sender="x@remote.test",
                      authResults=[AuthResult("dkim", result, "", (("header.d", signer),))])
        assert result_of(piece.checkData(facts, None)) is None
    assert rcpt(piece, "198.51.100.7", sender="y@remote.test")[0].code == 451
    facts = Facts(clientAddress="192.0.2.10", sender="x@remote.test",
                  authResults=[AuthResult("dkim", "pass", "", (("header.d", "mail.remote.test"),))])
    result_of(piece.checkData(facts, None))
    assert rcpt(piece, "203.0.113.9", sender="z@remote.test")[0] is None
    assert rcpt(piece, "203.0.113.9", sender="z@elsewhere.test")[0].code == 451


def result_of(value):
    return result(defer.maybeDeferred(lambda: value))


def test_greylist_exempt(greylist):
    """Authenticated users and allowlisted clients never wait."""
    assert rcpt(greylist(), "192.0.2.10", user="a@local.test")[0] is None
    assert rcpt(greylist(allow=("192.0.2.0/24",)), "192.0.2.10")[0] is None


# -- rules ----------------------------------------------------------------------


@pytest.fixture
def rules(tmp_path):
    context = PolicyContext(default(tmp_path), ClockReactor(), SynchronousThreadPool(),
                            FakeResolver({}), MemoryDirectory(domains=["local.test"]))
    chain = PolicyChain([Rules(context)], "mx.test", junkScore=5.0)

    def run(data, user=None):
        facts = Facts(clientAddress="192.0.2.1", sender="x@remote.test",
                      recipients=["a@local.test"], authenticatedAs=user, size=len(data))
        return result(chain.checkData(facts, Message(data)))

    return run


CLEAN = (b"From: Bob <bob@remote.test>\r\nTo: a@local.test\r\nSubject: hi\r\n"
         b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@remote.test>\r\n\r\nHello\r\n")


def attachment(disposition):
    return (b"From: bob@remote.test\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            b"--b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: " + disposition + b"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n")


def test_clean_message_scores_zero(rules):
    """An ordinary message is delivered to the INBOX, marked not spam."""
    decision = rules(CLEAN)
    assert decision.folder is None and not decision.refuses
    assert b"X-Spam-Score: 0\r\n" in decision.headers


@pytest.mark.parametrize("disposition", [
    b'attachment; filename="invoice.exe"',
    b"attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.SCR",
    b'attachment; filename*0="inv"; filename*1="oice.js"',
    b'attachment; filename="x.pdf.bat. "',
])
def test_executable_attachment_refused(rules, disposition):
    """Malware by attachment type never reaches a mailbox, however the name is spelled."""
    decision = rules(attachment(disposition))
    assert (decision.code, decision.enhanced) == (554, "5.7.1")
    assert "executable" in decision.text


def test_harmless_attachment_passes(rules):
    """A PDF attachment is delivered."""
    assert not rules(attachment(b'attachment; filename="invoice.pdf"')).refuses


def test_forged_local_display_name_junked(rules):
    """A foreign sender posing as a colleague lands in Junk."""
    data = CLEAN.replace(b"From: Bob <bob@remote.test>",
                         b'From: "boss@local.test" <ceo@remote.test>')
    decision = rules(data)
    assert decision.folder == "Junk"
    assert any(b"rules.forged_display_name" in h for h in decision.headers)


def test_link_mismatch_scores(rules):
    """A link showing one bank but going elsewhere is marked."""
    data = (CLEAN.replace(b"\r\n\r\nHello", b"\r\nContent-Type: text/html\r\n\r\n"
                          b'<a href="http://evil.test/x">https://bank.test/login</a>'))
    decision = rules(data)
    assert b"X-Spam-Score: 3\r\n" in decision.headers
    ok = CLEAN.replace(b"\r\n\r\nHello", b"\r\nContent-Type: text/html\r\n\r\n"
                       b'<a href="https://www.bank.test/login">bank.test</a>')
    assert b"X-Spam-Score: 0\r\n" in rules(ok).headers


def test_malformed_scores(rules):
    """No From, no Date and a doubled Subject add up to Junk."""
    decision = rules(b"To: a@local.test\r\nSubject: a\r\nSubject: b\r\n\r\nhi\r\n")
    assert b"X-Spam-Score: 5\r\n" in decision.headers
    assert decision.folder == "Junk"


def test_deeply_nested_message_judged(rules):
    """
    A message nested 2,000 multiparts deep is delivered, judged on its
    source, not answered 451 (the sender retrying it for days) by a
    RecursionError.
    """
    from test_imap_hostile import deeplyNested
    decision = rules(deeplyNested())
    assert decision.action == "accept", decision
    assert any(h.startswith(b"X-Spam-Score: ") for h in decision.headers)


def test_huge_from_judged_quickly(rules):
    """
    A From of 10,000 addresses (200 KB) is judged in well under a second,
    not the minutes of a core the email package's address parser took.
    """
    data = (b"From: " + b",\r\n ".join(b"u%d@remote.test" % i for i in range(10_000))
            + b"\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: x\r\n\r\nbody\r\n")
    started = time.monotonic()
    decision = rules(data)
    assert time.monotonic() - started < 1.0
    assert decision.action == "accept", decision


def test_submission_not_judged(rules):
    """What our users send is theirs: no refusal, no spam headers."""
    decision = rules(attachment(b'attachment; filename="tool.exe"'), user="a@local.test")
    assert not decision.refuses and decision.headers == ()


def test_forged_spam_headers_dropped(rules, tmp_path):
    """A sender cannot mark its own spam 'X-Spam-Status: No'."""
    piece = Rules(PolicyContext(default(tmp_path), None, None, None))
    assert not piece.keepHeader(Facts(), b"X-Spam-Status: No\r\n")
    assert piece.keepHeader(Facts(), b"Subject: X-Spam-Status\r\n")


# -- config ---------------------------------------------------------------------


def parsePolicy(tmp_path, policy):
    return _parse({"hostname": "mx.test", "data_dir": str(tmp_path), "policy": policy},
                  "test.toml", tmp_path).policy


def test_config_zones(tmp_path):
    """Zones, actions and return-code maps are read as the operator wrote them."""
    policy = parsePolicy(tmp_path, {
        "checks": ["dnsbl", "greylist", "rules"],
        "dnsbl": {"zones": ["zen.spamhaus.org", "b.test=score"], "allow": ["10.0.0.0/8"],
                  "zone": {"zen.spamhaus.org": {"127.0.0.2": "SBL"}}},
        "greylist": {"delay": 1}, "rules": {"junk_score": 7}})
    assert policy.dnsbl.zones == (
        DNSBLZone("zen.spamhaus.org", "reject", (("127.0.0.2", "SBL"),)),
        DNSBLZone("b.test", "score"))
    assert policy.greylist.delay == 1.0 and policy.rules.junk_score == 7.0


@pytest.mark.parametrize("dnsbl, message", [
    ({"zones": ["b.test=drop"]}, "action must be one of reject, score"),
    ({"allow": ["300.1.1.1"]}, "not an IP address or network"),
    ({"zones": ["nodot"]}, "not a DNS zone"),
    ({"zone": {"x.test": {"127.0.0.2": "A"}}}, "zones and domain_zones do not name"),
    ({"zones": ["x.test"], "zone": {"x.test": {"bad": "A"}}}, "127.0.0.N"),
    ({"zonez": []}, "unknown key"),
])
def test_config_errors(tmp_path, dnsbl, message):
    """A mistake in [policy.dnsbl] is named by check-config instead of ignored."""
    with pytest.raises(ConfigError, match=message):
        parsePolicy(tmp_path, {"checks": ["dnsbl"], "dnsbl": dnsbl})


def test_defaults_judge_nothing(tmp_path):
    """The default chain has no list, no greylisting and no content rules."""
    policy = default(tmp_path).policy
    assert not {"dnsbl", "greylist", "rules"} & set(policy.checks)
    assert policy.dnsbl.zones == ()


def test_verdicts_counted_for_metrics(dnsbl):
    """
    If this fails, the operator's Prometheus dashboard shows no spam
    verdicts although the log has them: a refusal by a blocklist moves
    pymailer_spam_verdicts{check="dnsbl",action="reject"}.
    """
    from pymailer import metrics

    def count():
        return metrics.REGISTRY.get_sample_value(
            "pymailer_spam_verdicts_total", {"check": "dnsbl", "action": "reject"}) or 0

    before = count()
    decision, _ = rcpt(dnsbl(zones=(DNSBLZone("bl.test"),)), "127.0.0.2")
    assert decision.code == 554
    assert count() == before + 1
