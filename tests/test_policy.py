"""
The policy seam at the protocol level: the real SMTP server on a
L{StringTransport} asks a chain of pieces at each stage and turns their
decisions into replies; the chain, the streaming header filter and the rate
limits on their own, with time from L{task.Clock}.
"""

import pytest
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from pymailer.policy.authresults import (
    ForgedResultsFilter, authenticationResults, claimedAuthservId)
from pymailer.policy.chain import PolicyChain
from pymailer.policy.decision import AuthResult, Decision, Facts, Policy
from pymailer.policy.headerfilter import HeaderFilter
import dataclasses

from pymailer.config import RateLimitConfig
from pymailer.policy.ratelimit import RateLimit, TokenBuckets

from test_smtp_server import Client, assertReply


class Scripted(Policy):
    """A piece answering each stage from a dict of decisions."""

    name = "scripted"

    def __init__(self, **decisions):
        self.decisions = decisions
        self.seen = []

    def _answer(self, stage, facts, *args):
        self.seen.append((stage, facts.sender, list(facts.recipients)) + args)
        decision = self.decisions.get(stage, Decision.accept())
        if isinstance(decision, Exception):
            raise decision
        return decision

    def checkConnect(self, facts):
        return self._answer("connect", facts)

    def checkHelo(self, facts):
        return self._answer("helo", facts)

    def checkMail(self, facts):
        return self._answer("mail", facts)

    def checkRecipient(self, facts, recipient):
        return self._answer("rcpt", facts, recipient)

    def checkData(self, facts, message):
        with message.openData() as f:
            facts.notes["data"] = f.read()
        return self._answer("data", facts)


def clientWith(*pieces, **kwargs):
    chain = PolicyChain([ForgedResultsFilter("mx.example.org")] + list(pieces), "mx.example.org")
    return Client(factoryArgs={"policy": chain}, **kwargs)


REJECT = Decision.reject(550, "5.7.1", "Go away", "test.reject")


def test_connect_refusal_replaces_greeting_and_closes():
    """A client refused at connect sees the reason instead of 220, and is cut off."""
    c = clientWith(Scripted(connect=Decision.tempfail(
        421, "4.7.0", "Too busy", "test", disconnect=True)))
    assert c.greeting == [(421, ["4.7.0 Too busy"])]
    assert c.transport.disconnecting


def test_helo_refusal():
    """A piece that refuses the HELO name gets its code and text to the client."""
    c = clientWith(Scripted(helo=Decision.reject(550, "5.7.1", "Bad HELO", "test")))
    assertReply(c.one("EHLO bad.test\r\n"), 550, "5.7.1")


def test_mail_tempfail_reaches_client():
    """MAIL refused by policy: the client sees 450 4.7.1 and the reason."""
    c = clientWith(Scripted(mail=Decision.tempfail(450, "4.7.1", "Slow down", "test")))
    c.ehlo()
    reply = c.one("MAIL FROM:<a@remote.test>\r\n")
    assert reply == (450, ["4.7.1 Slow down"])


def test_recipient_refusal_is_per_recipient():
    """A recipient refused by policy gets 550; the transaction goes on with others."""
    class OnlyBob(Policy):
        name = "onlybob"

        def checkRecipient(self, facts, recipient):
            return Decision.accept() if recipient.startswith("bob") else REJECT

    c = clientWith(OnlyBob())
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    assertReply(c.one("RCPT TO:<alice@example.org>\r\n"), 550, "5.7.1")
    assertReply(c.one("RCPT TO:<bob@example.org>\r\n"), 250, "2.1.5")
    c.one("DATA\r\n")
    assertReply(c.one("Subject: x\r\n\r\nhi\r\n.\r\n"), 250, "2.0.0")
    [(envelope, _)] = c.intake.committed
    assert [r.address for r in envelope.recipients] == ["bob@example.org"]


def test_data_refusal_stores_nothing():
    """A message refused at the end of data gets 550 5.7.1 and is not queued."""
    c = clientWith(Scripted(data=REJECT))
    c.startMail()
    assert c.one("Subject: x\r\n\r\nhi\r\n.\r\n") == (550, ["5.7.1 Go away"])
    assert c.intake.committed == []
    assert c.intake.opened[0].aborted


def test_data_stage_sees_message_and_facts():
    """The end-of-data check reads the message and knows sender and recipients."""
    piece = Scripted()
    c = clientWith(piece)
    c.startMail(sender="<a@remote.test>", rcpts=("alice@example.org",))
    c.one("Subject: x\r\n\r\nhello\r\n.\r\n")
    assert ("data", "a@remote.test", ["alice@example.org"]) in piece.seen


def test_headers_and_folder_go_into_envelope():
    """Added headers ride in the envelope; the folder applies to the recipients named."""
    piece = Scripted(data=Decision(headers=(b"X-Test: 1\r\n",), folder="Junk",
                                   recipients=("bob@example.org",)))
    c = clientWith(piece)
    c.startMail(rcpts=("alice@example.org", "bob@example.org"))
    c.one("Subject: x\r\n\r\nhi\r\n.\r\n")
    [(envelope, _)] = c.intake.committed
    assert envelope.headers == "X-Test: 1\r\n"
    assert [r.folder for r in envelope.recipients] == [None, "Junk"]


def test_authentication_results_written_from_recorded_results():
    """Results pieces record end up in one Authentication-Results header with our id."""
    class Records(Policy):
        name = "records"

        def checkData(self, facts, message):
            facts.authResults.append(AuthResult(
                "spf", "fail", "not permitted", (("smtp.mailfrom", "remote.test"),)))

    c = clientWith(Records())
    c.startMail()
    c.one("Subject: x\r\n\r\nhi\r\n.\r\n")
    [(envelope, _)] = c.intake.committed
    assert envelope.headers == (
        "Authentication-Results: mx.example.org;\r\n"
        "\tspf=fail (not permitted) smtp.mailfrom=remote.test\r\n")


def test_forged_authentication_results_dropped_while_streaming():
    """An incoming A-R claiming our id (even folded, split across packets) never reaches disk."""
    c = clientWith()
    c.startMail()
    for part in (b"Authentication-Results: MX.example.org;\r\n", b"\tdkim=pass\r\n",
                 b"Authentication-Results: other.test; spf=pass\r\n",
                 b"Subject: x\r\n\r\nAuthentication-Results: mx.example.org; body\r\n.\r\n"):
        c.send(part)
    [(_, data)] = c.intake.committed
    assert data == (b"Authentication-Results: other.test; spf=pass\r\n"
                    b"Subject: x\r\n\r\nAuthentication-Results: mx.example.org; body\r\n")


def test_piece_crash_is_a_temporary_refusal():
    """A buggy piece costs the client a 451 4.3.5 retry, never a bounce."""
    c = clientWith(Scripted(mail=RuntimeError("bug")))
    c.ehlo()
    assertReply(c.one("MAIL FROM:<a@remote.test>\r\n"), 451, "4.3.5")


def test_first_refusal_wins():
    """Pieces after a refusing one are not asked."""
    later = Scripted()
    chain = PolicyChain([Scripted(mail=REJECT), later], "mx.test")
    facts = Facts(sender="a@b.test")
    decision = chain.checkMail(facts)
    assert self_result(decision) == REJECT
    assert later.seen == []


def test_chain_of_quick_pieces_answers_at_once():
    """
    Pieces that answer from memory cost no Deferred: the chain's answer is
    the decision itself (IPolicy allows it), headers merged in order, so
    every SMTP command of a session without slow checks is answered in the
    same turn of the reactor, without Deferred or generator machinery
    (issue 14).  Before, every stage of every message went through
    inlineCallbacks.
    """
    first = Scripted(mail=Decision.addHeaders([b"X-A: 1\r\n"]))
    chain = PolicyChain([first, Scripted(), Policy(),
                         Scripted(mail=Decision.addHeaders([b"X-B: 2\r\n"], "b"))], "mx.test")
    decision = chain.checkMail(Facts(sender="a@b.test"))
    assert isinstance(decision, Decision)
    assert decision.headers == (b"X-A: 1\r\n", b"X-B: 2\r\n") and decision.reason == "b"
    assert not decision.refuses
    assert PolicyChain([], "mx.test").checkConnect(Facts()) is Decision.accept()


def test_pieces_after_a_slow_one_wait_for_it():
    """
    A piece answering later (DNS) holds the pieces after it: they are
    asked once it has answered, in order, and a refusal after it still
    wins; a slow piece that fails is a 451 4.3.5, never a bounce.
    """
    held = defer.Deferred()

    class Slow(Policy):
        name = "slow"

        def checkMail(self, facts):
            return held

    later = Scripted(mail=REJECT)
    answer = PolicyChain([Slow(), later], "mx.test").checkMail(Facts(sender="a@b.test"))
    assert isinstance(answer, defer.Deferred) and later.seen == []
    held.callback(Decision.addHeaders([b"X-Slow: 1\r\n"]))
    assert self_result(answer) == REJECT
    assert [stage for stage, *_ in later.seen] == ["mail"]

    failing = defer.Deferred()
    Slow.checkMail = lambda self, facts: failing
    chain = PolicyChain([Slow()], "mx.test")
    answer = chain.checkMail(Facts(sender="a@b.test"))
    failing.errback(RuntimeError("resolver bug"))
    refusal = self_result(answer)
    assert (refusal.code, refusal.enhanced, refusal.reason) == (451, "4.3.5", "slow.error")


def test_slow_piece_holds_pipelined_commands():
    """A piece answering later (DNS) keeps pipelined replies in order."""
    held = defer.Deferred()

    class Slow(Policy):
        name = "slow"

        def checkMail(self, facts):
            return held

    c = clientWith(Slow())
    c.ehlo()
    assert c.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.org>\r\n") == []
    held.callback(Decision.accept())
    assert [code for code, _ in c.replies()] == [250, 250]


def self_result(d):
    """The decision, whether the chain answered at once or with a Deferred (IPolicy)."""
    results = []
    defer.maybeDeferred(lambda: d).addCallback(results.append)
    return results[0]


# -- the header filter ----------------------------------------------------

def filtered(chunks, keep, **kwargs):
    f = HeaderFilter(keep, **kwargs)
    return b"".join(f.feed(c) for c in chunks) + f.finish()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_header_filter_any_chunking(size):
    """Whatever the packet boundaries, the same fields are dropped and the rest is exact."""
    message = (b"A: 1\r\nX-Drop: a\r\n b\r\nC: 3\r\n\r\nX-Drop: body\r\n")
    chunks = [message[i:i + size] for i in range(0, len(message), size)]
    out = filtered(chunks, lambda field: not field.startswith(b"X-Drop"))
    assert out == b"A: 1\r\nC: 3\r\n\r\nX-Drop: body\r\n"


def test_header_filter_bare_lf_and_no_body():
    """BINARYMIME bare-LF headers and a message without a body are handled."""
    out = filtered([b"A: 1\nX-Drop: 2\nB: 3"], lambda f: not f.startswith(b"X-Drop"))
    assert out == b"A: 1\nB: 3"


def test_header_filter_bounded_field():
    """A huge folded field is judged on its start and dropped whole, without holding it."""
    f = HeaderFilter(lambda field: not field.startswith(b"X-Drop"), maxField=100)
    out = f.feed(b"X-Drop: x\r\n")
    for _ in range(100):
        out += f.feed(b" " + b"y" * 50 + b"\r\n")
        assert len(f._field) <= 200
    out += f.feed(b"B: 1\r\n\r\nbody") + f.finish()
    assert out == b"B: 1\r\n\r\nbody"


def test_header_filter_too_long_line_split_across_reads():
    """
    If this fails, a header line longer than the filter holds, split across
    reads, ends the header section early: a forged field after it (here a
    second X-Bad, in real mail a forged Authentication-Results) gets through,
    or the long line is written twice.
    """
    message = b"X-Bad: " + b"a" * 30 + b"b" * 30 + b"\r\nX-Bad: c\r\nSubject: s\r\n\r\nbody"
    keep = lambda field: not field.startswith(b"X-Bad")  # noqa: E731
    for size in range(1, len(message) + 1):
        chunks = [message[i:i + size] for i in range(0, len(message), size)]
        assert filtered(chunks, keep, maxField=10) == b"Subject: s\r\n\r\nbody", size
    long = b"Long: " + b"x" * 40 + b"\r\nX-Bad: c\r\nB: 1\r\n\r\nbody"
    for size in range(1, len(long) + 1):
        chunks = [long[i:i + size] for i in range(0, len(long), size)]
        out = filtered(chunks, keep, maxField=10)
        assert out == b"Long: " + b"x" * 40 + b"\r\nB: 1\r\n\r\nbody", size


@pytest.mark.parametrize("field, claimed", [
    (b"Authentication-Results: mx.example.org; spf=pass", "mx.example.org"),
    (b"authentication-results:  (comment) \"MX.Example.Org\" 1 ;none", "mx.example.org"),
    (b"Authentication-Results:\r\n\tmx.example.org;\r\n\tdkim=pass", "mx.example.org"),
    (b"Authentication-Results: other.test; spf=pass", "other.test"),
    (b"Subject: Authentication-Results: mx.example.org", None),
])
def test_claimed_authserv_id(field, claimed):
    """The authserv-id is found through comments, folding, quotes and case."""
    assert claimedAuthservId(field) == claimed


def test_authentication_results_quoting():
    """Property values that are not tokens are quoted (RFC 8601 §2.2)."""
    header = authenticationResults("mx.test", [
        AuthResult("dkim", "pass", "ok", (("header.d", "x.test"), ("header.s", "a b")))])
    assert header == b'Authentication-Results: mx.test;\r\n\tdkim=pass (ok) header.d=x.test header.s="a b"\r\n'


# -- rate limits ----------------------------------------------------------

LIMITS = {"connections_per_minute": 3, "unknown_recipients_per_minute": 2,
          "messages_per_hour": 2, "recipients_per_hour": 3}


def test_token_bucket_refills_evenly():
    """After using the allowance, one more event is allowed per period/limit seconds."""
    clock = task.Clock()
    buckets = TokenBuckets(3, 60, clock)
    assert [buckets.take("k") for _ in range(4)] == [True, True, True, False]
    clock.advance(19)
    assert not buckets.take("k")
    clock.advance(1)
    assert buckets.take("k")
    assert buckets.take("other")


def test_connection_rate_limit_per_ip():
    """The 4th connection in a minute from one IP gets 421 4.7.0 and is closed; others are not."""
    clock = task.Clock()
    c = clientWith(RateLimit(LIMITS, clock))
    for _ in range(2):
        assert c.reconnect().greeting[0][0] == 220
    refused = c.reconnect()
    assertReply(refused.greeting[0], 421, "4.7.0")
    assert "per minute" in refused.greeting[0][1][0]
    assert refused.transport.disconnecting
    assert c.reconnect(host="192.0.2.9").greeting[0][0] == 220
    clock.advance(20)
    assert c.reconnect().greeting[0][0] == 220


def test_message_and_recipient_rate_limits_per_user():
    """An authenticated user over the hourly allowance gets 450 4.7.1 with the reason."""
    clock = task.Clock()
    piece = RateLimit(LIMITS, clock)
    facts = Facts(authenticatedAs="alice@example.org")
    assert [self_result(defer.succeed(piece.checkMail(facts))).action for _ in range(3)] == [
        "accept", "accept", "tempfail"]
    refused = piece.checkMail(facts)
    assert (refused.code, refused.enhanced) == (450, "4.7.1")
    assert "alice@example.org" in refused.text
    assert [piece.checkRecipient(facts, "x@y.test").refuses for _ in range(4)] == [
        False, False, False, True]
    anonymous = Facts()
    assert not any(piece.checkMail(anonymous).refuses for _ in range(10))


def test_default_limits_let_a_peer_open_a_connection_per_message():
    """
    With the default limits, 500 connections in quick succession from one
    IP (a stock Postfix delivering 500 messages, one connection each) are
    all greeted with 220: none is deferred by the rate limit.
    """
    clock = task.Clock()
    c = clientWith(RateLimit(dataclasses.asdict(RateLimitConfig()), clock))
    for i in range(500):
        other = c.reconnect()
        assert other.greeting[0][0] == 220, (i, other.greeting)
        other.send("QUIT\r\n")
        other.proto.connectionLost(Failure(ConnectionDone()))
        clock.advance(0.01)


def harvest(c, count, host="192.0.2.1"):
    """One session naming C{count} unknown recipients: the replies to RCPT."""
    c = c.reconnect(host=host)
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    replies = []
    for i in range(count):
        replies += c.send(f"RCPT TO:<nobody{i}@example.org>\r\n")
        if c.transport.disconnecting:
            break
    return c, replies


def test_directory_harvest_is_cut_off():
    """
    A client guessing addresses gets 550 5.1.1 for its allowance of unknown
    recipients, then 421 4.7.1 and is disconnected; until the allowance
    refills, a real user from that IP gets 450 too (the harvester learns
    nothing), while other IPs are unaffected.
    """
    clock = task.Clock()
    c = clientWith(RateLimit(LIMITS, clock))
    guesser, replies = harvest(c, 5)
    assert [r[0] for r in replies] == [550, 550, 421]
    assertReply(replies[2], 421, "4.7.1")
    assert "unknown recipients" in replies[2][1][0]
    assert guesser.transport.disconnecting

    again = c.reconnect()
    again.ehlo()
    again.one("MAIL FROM:<a@remote.test>\r\n")
    assertReply(again.one("RCPT TO:<alice@example.org>\r\n"), 450, "4.7.1")
    elsewhere = c.reconnect(host="192.0.2.9")
    elsewhere.ehlo()
    elsewhere.one("MAIL FROM:<a@remote.test>\r\n")
    assertReply(elsewhere.one("RCPT TO:<alice@example.org>\r\n"), 250, "2.1.5")

    clock.advance(30)
    assertReply(again.one("RCPT TO:<alice@example.org>\r\n"), 250, "2.1.5")


def test_default_harvest_limit_spares_a_peer_with_a_few_bounces():
    """
    With the default limits, a peer naming a dozen unknown recipients in a
    minute (stale list members) gets the honest 550 5.1.1 for each, and is
    not cut off.
    """
    clock = task.Clock()
    c = clientWith(RateLimit(dataclasses.asdict(RateLimitConfig()), clock))
    peer, replies = harvest(c, 12)
    assert [r[0] for r in replies] == [550] * 12
    assert not peer.transport.disconnecting


def test_unknown_recipient_stage_is_optional_for_plugins():
    """
    A third-party piece written before the unknown-recipient stage existed
    does not turn every unknown recipient into a 451 policy failure.
    """
    class Old:
        """Knows only the stages it cares about, as older plugins may."""

        name = "old"

        def checkRecipient(self, facts, recipient):
            return Decision.accept()

    c = clientWith(Old())
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    assertReply(c.one("RCPT TO:<nobody@example.org>\r\n"), 550, "5.1.1")
