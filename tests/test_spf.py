"""
SPF (RFC 7208): every result code, the lookup limits, macros, exp=,
redirect=, include and IPv6, each run through both resolvers ("one suite,
both resolvers", so the fake stays honest):

  - "fake": L{pymailer.testing.FakeResolver} over L{ZONE};
  - "real": the real L{pymailer.dns.Resolver} querying L{DNSServer}, a DNS
    server on loopback serving the same L{ZONE}.

The real resolver runs with L{ClockReactor} and L{SynchronousThreadPool}
(both shipped in L{pymailer.testing}) instead of a reactor and a thread
pool: its own C{lookup} runs, C{deferToThreadPool} included, and only the
thread hop is gone, so its Deferreds fire at once and the tests need
neither pytest-twisted nor trial nor the global reactor.  That is simpler
than an adapter around C{lookupBlocking} and tests one more line of the
real path.  Names marked C{TIMEOUT} get SERVFAIL from the server (at once),
which the real resolver reports as the same temporary error a timeout
gives.

The macro table of RFC 7208 §7.4 is also checked on the pure expansion
layer, and the fake is compared with the real resolver query by query.
"""

import ipaddress

import dns.reversename
import pytest
from twisted.internet import defer, task

from dnsserver import DNSServer
from pymailer.config import DNSConfig
from pymailer.dns import DNSError, Resolver
from pymailer.policy.spf import DEFAULT_EXPLANATION, SPFResult, checkHost, evaluate
from pymailer.policy.spfrecord import (
    SPFSyntaxError,
    expand,
    parseDomainSpec,
    parseMacroString,
    parseRecord,
)
from pymailer.testing import ClockReactor, FakeResolver, SynchronousThreadPool

GOOD = "192.0.2.10"  # allowed by example.test
BAD = "198.51.100.7"  # allowed by nobody
GOOD6 = "2001:db8:1::5"
NOW = 1700000000


def spf(text):
    return ("TXT", f'"{text}"')


def reverse(ip):
    return dns.reversename.from_address(ip).to_text()


ZONE = {
    # One domain per result code.
    "example.test": [spf("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8:1::/48 -all")],
    "soft.test": [spf("v=spf1 ip4:192.0.2.0/24 ~all")],
    "neutral.test": [spf("v=spf1 ip4:192.0.2.0/24 ?all")],
    "default.test": [spf("v=spf1 ip4:192.0.2.0/24")],
    "nospf.test": [("TXT", '"google-site-verification=abc"'), ("A", "203.0.113.1")],
    "timeout.test": ["TIMEOUT"],
    "syntax.test": [spf("v=spf1 ip4:192.0.2.10 -all ip4:192.0.2.300")],
    "two.test": [spf("v=spf1 -all"), spf("v=spf1 +all")],
    "caps.test": [spf("V=SpF1 IP4:192.0.2.0/24 -ALL")],
    # §3.3: one record in several strings, joined without spaces.
    "split.test": [("TXT", '"v=spf1 ip4:192.0.2.0" "/24 -all"'), ("TXT", '"v=spf10 +all"')],
    # §4.6.4: 10 DNS-querying terms pass, the 11th is a permerror.
    "h.test": [("A", "203.0.113.1")],
    "terms10.test": [spf("v=spf1 " + "a:h.test " * 10 + "ip4:192.0.2.10 -all")],
    "terms11.test": [spf("v=spf1 " + "a:h.test " * 11 + "ip4:192.0.2.10 -all")],
    "include10.test": [spf("v=spf1 include:terms10.test -all")],
    # §4.6.4: two void lookups are fine, a third is a permerror; NXDOMAIN
    # and an empty answer both count.
    "void2.test": [spf("v=spf1 a:nx1.test mx:nospf.test ip4:192.0.2.10 -all")],
    "void3.test": [spf("v=spf1 a:nx1.test mx:nospf.test a:nx3.test ip4:192.0.2.10 -all")],
    # §4.6.4: at most 10 MX names per "mx".
    "mx10.test": [spf("v=spf1 mx -all")] + [("MX", f"{i} m{i}.test.") for i in range(1, 11)],
    "mx11.test": [spf("v=spf1 mx -all")] + [("MX", f"{i} m{i}.test.") for i in range(1, 12)],
    **{f"m{i}.test": [("A", f"203.0.113.{i}")] for i in range(1, 10)},
    "m10.test": [("A", "192.0.2.10")],
    "m11.test": [("A", "192.0.2.11")],
    # include (§5.2) and redirect (§6.1).
    "inc-pass.test": [spf("v=spf1 include:example.test -all")],
    "inc-fail.test": [spf("v=spf1 include:example.test ~all")],
    "inc-none.test": [spf("v=spf1 include:nospf.test ~all")],
    "inc-nx.test": [spf("v=spf1 include:nx.test ~all")],
    "inc-temp.test": [spf("v=spf1 include:timeout.test ~all")],
    "inc-perm.test": [spf("v=spf1 include:syntax.test ~all")],
    "redirect.test": [spf("v=spf1 ip4:203.0.113.0/24 redirect=example.test")],
    "redirect-none.test": [spf("v=spf1 redirect=nospf.test")],
    "redirect-exp.test": [spf("v=spf1 exp=why.ignored.test redirect=explained.test")],
    # exp= (§6.2) and macros (§7) in it.
    "explained.test": [spf("v=spf1 ip4:192.0.2.0/24 -all exp=why.%{d}")],
    "why.explained.test": [("TXT", '"%{L} at %{o} may not send from %{c} (%{i}, %{v}, helo %{h}; '
                                   'checked by %{r} at %{t} for %{d})"')],
    "why.ignored.test": [("TXT", '"never shown"')],
    "exp-bad.test": [spf("v=spf1 -all exp=why.exp-bad.test")],
    "why.exp-bad.test": [("TXT", '"%{x} is no macro"')],
    "exp-nx.test": [spf("v=spf1 -all exp=nothing.exp-nx.test")],
    # Macros in domain-specs (§7.3): transformers, delimiters, %{i} of
    # IPv4 and IPv6, %{v}, %{p}.
    "macro.test": [spf("v=spf1 exists:%{ir}.%{l1r-}.%{d2}._spf.example.test "
                       "exists:%{ir}.%{v}._spf.%{d2} -all")],
    "10.2.0.192.john.macro.test._spf.example.test": [("A", "127.0.0.2")],
    reverse(GOOD6).replace("ip6.arpa.", "ip6._spf.macro.test"): [("A", "127.0.0.2")],
    "p.test": [spf("v=spf1 exists:%{p}._ok.p.test -all")],
    "mail.p.test._ok.p.test": [("A", "127.0.0.2")],
    reverse(GOOD): [("PTR", "mail.p.test."), ("PTR", "mx.ptr.test.")],
    reverse(BAD): [("PTR", "mail.p.test."), ("PTR", "mx.ptr.test.")],
    "mail.p.test": [("A", GOOD)],
    "mx.ptr.test": [("A", GOOD), ("AAAA", GOOD6)],
    reverse(GOOD6): [("PTR", "mx.ptr.test.")],
    "ptr.test": [spf("v=spf1 ptr -all")],
    # IPv6: ip6 networks, a with a dual CIDR length.
    "v6.test": [spf("v=spf1 ip6:2001:db8:1::/48 a:host6.test//64 -all")],
    "host6.test": [("AAAA", "2001:db8:2::1"), ("A", "192.0.2.99")],
    # HELO identity (§2.3, §2.4).
    "mail.helo.test": [spf("v=spf1 a -all"), ("A", GOOD)],
    # CNAMEs are followed by the resolver (and loops are errors).
    "alias.test": [("CNAME", "example.test.")],
    "loop.test": [("CNAME", "loop.test.")],
    "dup.test": [("A", "192.0.2.1"), ("A", "192.0.2.1")],
}


@pytest.fixture(scope="module")
def dnsServer():
    with DNSServer(ZONE) as server:
        yield server
    assert not server.errors


@pytest.fixture(params=["fake", "real"])
def resolver(request):
    """Each test runs once per resolver."""
    if request.param == "fake":
        return FakeResolver(ZONE)
    server = request.getfixturevalue("dnsServer")
    return Resolver(DNSConfig(servers=(server.address,), timeout=5.0), ClockReactor(), SynchronousThreadPool())


def fired(d):
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred did not fire synchronously"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def check(resolver, ip, domain, local="alice", helo="mail.client.test", **kwargs):
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("receivingHost", "mx.receiver.test")
    return fired(checkHost(resolver, ip, domain, f"{local}@{domain}", helo=helo, **kwargs))


# -- result codes -------------------------------------------------------------


def test_pass(resolver):
    """An allowed client passes; if not, mail from our users' own servers would look forged."""
    result = check(resolver, GOOD, "example.test")
    assert (result.result, result.mechanism) == ("pass", "ip4:192.0.2.0/24")
    assert result.reason == "domain of alice@example.test designates 192.0.2.10 as permitted sender"
    assert result.explanation is None


def test_fail_with_default_explanation(resolver):
    """
    A client the domain denies gets fail and our default explanation: if
    not, forged mail would be accepted (or rejected without a reason).
    """
    result = check(resolver, BAD, "example.test")
    assert (result.result, result.mechanism) == ("fail", "-all")
    assert result.explanation == "example.test does not authorise 198.51.100.7 to send its mail (SPF)"
    assert DEFAULT_EXPLANATION.startswith("%{o}")


def test_softfail(resolver):
    """~all gives softfail, not fail: otherwise we would reject mail the domain only wants marked."""
    result = check(resolver, BAD, "soft.test")
    assert (result.result, result.mechanism, result.explanation) == ("softfail", "~all", None)


def test_neutral(resolver):
    """?all gives neutral: a domain saying "no opinion" must not have its mail treated as failing."""
    assert check(resolver, BAD, "neutral.test").result == "neutral"


def test_neutral_when_nothing_matches(resolver):
    """A record with no match and no redirect is neutral (§4.7), shown as the "default" mechanism."""
    result = check(resolver, BAD, "default.test")
    assert (result.result, result.mechanism) == ("neutral", "default")


@pytest.mark.parametrize("domain", ["nospf.test", "nx.test"])
def test_none(resolver, domain):
    """A domain without an SPF record (or not existing) is none: its mail must not be judged by SPF."""
    result = check(resolver, BAD, domain)
    assert (result.result, result.mechanism) == ("none", None)
    assert result.reason == f"domain of alice@{domain} does not designate permitted sender hosts"


@pytest.mark.parametrize("domain", ["[192.0.2.1]", "localhost", "a..test", "x" * 64 + ".test", ""])
def test_none_for_malformed_domains(resolver, domain):
    """§4.3: a domain literal, single-label or malformed name is none without a lookup (no error, no crash)."""
    assert check(resolver, GOOD, domain).result == "none"


def test_temperror(resolver):
    """A DNS server failure is temperror, so the client retries later instead of being rejected."""
    result = check(resolver, GOOD, "timeout.test")
    assert result.result == "temperror"
    assert result.reason.startswith("temporary error in processing during lookup of timeout.test: ")


def test_permerror_syntax_anywhere(resolver):
    """
    A syntax error anywhere in the record is permerror even after a match
    (§4.6): a broken record must be reported, not half-used.
    """
    result = check(resolver, GOOD, "syntax.test")
    assert result.result == "permerror"
    assert "192.0.2.300" in result.reason


def test_permerror_two_records(resolver):
    """Two SPF records are permerror (§4.5): we must not pick one to the forger's liking."""
    assert check(resolver, GOOD, "two.test").result == "permerror"


def test_case_insensitive(resolver):
    """"V=SpF1 IP4:... -ALL" is a valid record (§4.5, §12): otherwise such domains would get none."""
    assert check(resolver, GOOD, "caps.test").result == "pass"
    assert check(resolver, BAD, "caps.test").result == "fail"


def test_record_in_several_strings(resolver):
    """
    TXT strings are joined without spaces (§3.3), and "v=spf10" is not an
    SPF record: long records split by their publisher must still work.
    """
    assert check(resolver, GOOD, "split.test").result == "pass"
    assert check(resolver, BAD, "split.test").result == "fail"


# -- limits (§4.6.4) ----------------------------------------------------------


def test_ten_dns_terms_allowed(resolver):
    """Ten DNS-querying terms are allowed: big providers' records sit at the limit."""
    assert check(resolver, GOOD, "terms10.test").result == "pass"


def test_eleventh_dns_term_is_permerror(resolver):
    """The 11th DNS-querying term is permerror, so a record cannot make us do unbounded lookups."""
    result = check(resolver, GOOD, "terms11.test")
    assert result.result == "permerror"
    assert "more than 10 DNS-querying terms" in result.reason


def test_dns_terms_counted_across_include(resolver):
    """The limit counts include's own lookup and those inside it, for the whole check."""
    assert check(resolver, GOOD, "include10.test").result == "permerror"


def test_two_void_lookups_allowed(resolver):
    """Two lookups with no answer (NXDOMAIN, or no record) are allowed."""
    assert check(resolver, GOOD, "void2.test").result == "pass"


def test_third_void_lookup_is_permerror(resolver):
    """A third void lookup is permerror: records cannot be used to make us hammer dead names."""
    result = check(resolver, GOOD, "void3.test")
    assert result.result == "permerror"
    assert "void lookups" in result.reason


def test_ten_mx_names_allowed(resolver):
    """An "mx" with ten MX hosts is evaluated (the 10th host matches)."""
    assert check(resolver, GOOD, "mx10.test").result == "pass"


def test_more_than_ten_mx_names_is_permerror(resolver):
    """An "mx" with eleven MX hosts is permerror, whatever the hosts are."""
    result = check(resolver, "192.0.2.11", "mx11.test")
    assert result.result == "permerror"
    assert "more than 10 MX records" in result.reason


def test_timeout_with_clock():
    """
    With a clock, a check that runs past its timeout is temperror (§4.6.4:
    at least 20 s): a DNS server that never answers must not hold the SMTP
    session forever.
    """
    class Silent:
        def lookup(self, name, rdtype):
            return defer.Deferred()

    clock = task.Clock()
    results = []
    checkHost(Silent(), GOOD, "example.test", "a@example.test", clock=clock).addBoth(results.append)
    clock.advance(19)
    assert results == []
    clock.advance(1)
    assert results[0].result == "temperror"
    assert "no answer within 20 s" in results[0].reason


# -- include and redirect -----------------------------------------------------


def test_include_pass_matches(resolver):
    """An include whose target passes matches (§5.2): the usual "include:_spf.provider" setup."""
    result = check(resolver, GOOD, "inc-pass.test")
    assert (result.result, result.mechanism) == ("pass", "include:example.test")


def test_include_fail_does_not_match(resolver):
    """An include whose target fails does not match; the record goes on (§5.2)."""
    result = check(resolver, BAD, "inc-fail.test")
    assert (result.result, result.mechanism) == ("softfail", "~all")


@pytest.mark.parametrize("domain", ["inc-none.test", "inc-nx.test"])
def test_include_of_none_is_permerror(resolver, domain):
    """An include of a domain without SPF record is permerror (§5.2), not a silent no-match."""
    assert check(resolver, GOOD, domain).result == "permerror"


def test_include_errors_propagate(resolver):
    """temperror and permerror inside an include are the result (§5.2)."""
    assert check(resolver, GOOD, "inc-temp.test").result == "temperror"
    assert check(resolver, GOOD, "inc-perm.test").result == "permerror"


def test_redirect(resolver):
    """redirect= gives the target's result when nothing matched (§6.1)."""
    assert check(resolver, GOOD, "redirect.test").result == "pass"
    assert check(resolver, "203.0.113.5", "redirect.test").result == "pass"
    result = check(resolver, BAD, "redirect.test")
    assert (result.result, result.mechanism) == ("fail", "-all")


def test_redirect_to_none_is_permerror(resolver):
    """A redirect to a domain without SPF record is permerror (§6.1)."""
    assert check(resolver, GOOD, "redirect-none.test").result == "permerror"


# -- exp= and macros ----------------------------------------------------------


def test_explanation_with_macros(resolver):
    """
    A fail carries the domain's exp= text with its macros expanded (§6.2,
    §7), to be shown in our rejection: the sender's postmaster learns why.
    """
    result = check(resolver, BAD, "explained.test", local="jane&co", helo="EHLO.client.test")
    assert result.result == "fail"
    assert result.explanation == (
        "jane%26co at explained.test may not send from 198.51.100.7 (198.51.100.7, in-addr, "
        "helo EHLO.client.test; checked by mx.receiver.test at 1700000000 for explained.test)"
    )


def test_explanation_ipv6_macros(resolver):
    """%{i} of an IPv6 client is its 32 nibbles dotted, %{v} "ip6", %{c} the usual form."""
    result = check(resolver, "2001:db8:9::1", "explained.test", local="x")
    nibbles = ".".join("20010db8000900000000000000000001".upper())
    assert result.explanation == (
        f"x at explained.test may not send from 2001:db8:9::1 ({nibbles}, ip6, "
        "helo mail.client.test; checked by mx.receiver.test at 1700000000 for explained.test)"
    )


def test_redirect_uses_the_targets_explanation(resolver):
    """After redirect=, the target's exp= counts, not the redirecting record's (§6.2)."""
    result = check(resolver, BAD, "redirect-exp.test")
    assert result.result == "fail"
    assert result.explanation.startswith("alice at redirect-exp.test may not send")
    assert result.explanation.endswith("for explained.test)")


@pytest.mark.parametrize("domain", ["exp-bad.test", "exp-nx.test"])
def test_broken_explanation_falls_back_to_default(resolver, domain):
    """A missing or invalid exp= text gives the default explanation, never an error (§6.2)."""
    result = check(resolver, BAD, domain)
    assert result.result == "fail"
    assert result.explanation == f"{domain} does not authorise 198.51.100.7 to send its mail (SPF)"


def test_no_explanation_but_for_fail(resolver):
    """exp= is for fail only: a pass carries no explanation."""
    assert check(resolver, GOOD, "explained.test").explanation is None


def test_macros_in_domain_specs(resolver):
    """
    %{ir}, %{l1r-} (split on "-", reversed, last part) and %{d2} build the
    exists: name as the RFC says (§7.3): per-user SPF policies depend on it.
    """
    result = check(resolver, GOOD, "macro.test", local="john-smith")
    assert (result.result, result.mechanism) == ("pass", "exists:%{ir}.%{l1r-}.%{d2}._spf.example.test")
    assert check(resolver, GOOD, "macro.test", local="smith-john").result == "fail"


def test_ipv6_macro_in_domain_spec(resolver):
    """%{ir}.%{v} of an IPv6 client is its reversed nibbles and "ip6" (§7.3)."""
    result = check(resolver, GOOD6, "macro.test", local="nobody")
    assert (result.result, result.mechanism) == ("pass", "exists:%{ir}.%{v}._spf.%{d2}")


def test_p_macro(resolver):
    """%{p} is the client's validated PTR name, "unknown" when none validates (§7.3)."""
    assert check(resolver, GOOD, "p.test").result == "pass"
    assert check(resolver, BAD, "p.test").result == "fail"


def test_ptr_mechanism(resolver):
    """ptr matches a validated PTR name under the domain (§5.5), for IPv4 and IPv6 clients."""
    assert check(resolver, GOOD, "ptr.test").result == "pass"
    assert check(resolver, GOOD6, "ptr.test").result == "pass"
    # 198.51.100.7 has the PTR names but they do not resolve back to it.
    assert check(resolver, BAD, "ptr.test").result == "fail"


def test_empty_local_part_is_postmaster(resolver):
    """§4.3: a sender without local-part is checked (and shown) as postmaster@domain."""
    result = fired(checkHost(resolver, BAD, "explained.test", "@explained.test", now=NOW))
    assert result.sender == "postmaster@explained.test"
    assert result.explanation.startswith("postmaster at explained.test")


# -- IPv6 -----------------------------------------------------------------------


def test_ip6(resolver):
    """ip6: networks match IPv6 clients; a//64 compares the AAAA records with a /64 (§5.3, §5.6)."""
    assert check(resolver, GOOD6, "v6.test").result == "pass"
    assert check(resolver, "2001:db8:2::77", "v6.test").result == "pass"
    assert check(resolver, "2001:db8:3::1", "v6.test").result == "fail"


def test_ipv4_client_never_matches_ip6(resolver):
    """An IPv4 client is compared with A records only (host6.test has 192.0.2.99)."""
    assert check(resolver, "192.0.2.99", "v6.test").result == "pass"
    assert check(resolver, GOOD, "v6.test").result == "fail"


def test_ipv4_mapped_ipv6_is_ipv4(resolver):
    """
    A client at ::ffff:192.0.2.10 (an IPv6 socket) is the IPv4 client
    192.0.2.10 (§5): otherwise dual-stack listeners would fail good mail.
    """
    result = check(resolver, "::ffff:192.0.2.10", "example.test")
    assert (result.result, result.ip) == ("pass", GOOD)
    assert check(resolver, ipaddress.ip_address("::ffff:192.0.2.10"), "v6.test").result == "fail"


# -- identities (evaluate) ----------------------------------------------------------


def test_evaluate_mail_from(resolver):
    """evaluate() checks the MAIL FROM domain and says so (smtp.mailfrom in Authentication-Results)."""
    result = fired(evaluate(resolver, BAD, "<alice@example.test>", "mail.helo.test"))
    assert (result.result, result.identity, result.domain) == ("fail", "mailfrom", "example.test")
    assert result.authResults() == (
        "spf=fail (domain of alice@example.test does not designate 198.51.100.7 as permitted sender) "
        "smtp.mailfrom=alice@example.test"
    )


@pytest.mark.parametrize("mailFrom", ["", "<>"])
def test_evaluate_null_sender_checks_helo(resolver, mailFrom):
    """
    With a null MAIL FROM (bounces), the HELO name is checked as
    postmaster@helo (§2.4): otherwise bounces could never pass SPF.
    """
    result = fired(evaluate(resolver, GOOD, mailFrom, "mail.helo.test"))
    assert (result.result, result.identity) == ("pass", "helo")
    assert result.sender == "postmaster@mail.helo.test"
    assert result.authResultsProperty == ("smtp.helo", "mail.helo.test")


def test_auth_results_quotes_odd_senders():
    """A sender that is no pvalue is quoted and parentheses in the comment are escaped (RFC 8601)."""
    result = SPFResult("none", "x.test", "a b(c)@x.test", GOOD, reason="domain of a b(c)@x.test")
    assert result.authResults() == 'spf=none (domain of a b\\(c\\)@x.test) smtp.mailfrom="a b(c)@x.test"'


# -- the record language (pure) -----------------------------------------------------

RFC_7208_EXAMPLES = [
    # §7.4, <sender> strong-bad@email.example.com, <ip> 192.0.2.3.
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ("%%%_%-", "% %20"),
    ("%{L}", "strong-bad"),
    ("%{S}", "strong-bad%40email.example.com"),
]


@pytest.mark.parametrize("text, expanded", RFC_7208_EXAMPLES)
def test_rfc_7208_macro_examples(text, expanded):
    """The examples of RFC 7208 §7.4 expand as printed: SPF macros mean what publishers read in the RFC."""
    values = {"s": "strong-bad@email.example.com", "l": "strong-bad", "o": "email.example.com",
              "d": "email.example.com", "i": "192.0.2.3", "v": "in-addr"}
    assert expand(parseMacroString(text), values) == expanded


@pytest.mark.parametrize("record", [
    "v=spf1 -all.", "v=spf1 all:x", "v=spf1 ip4:1.2.3", "v=spf1 ip4:1.2.3.04", "v=spf1 ip4:1.2.3.4/33",
    "v=spf1 ip4:1.2.3.4/032", "v=spf1 ip6:::1/129", "v=spf1 a:museum", "v=spf1 a:1.2.3.4", "v=spf1 a/24/64",
    "v=spf1 include:", "v=spf1 exists", "v=spf1 ptr/24", "v=spf1 redirect=a.test redirect=b.test",
    "v=spf1 exp=", "v=spf1 1up=x", "v=spf1 foo=%x", "v=spf1 a:%{r}.test", "v=spf1 a:%{d0}.test",
    "v=spf1 a:x.test\tip4:1.2.3.4", "v=spf1 redirect:x.test",
])
def test_syntax_errors(record):
    """Each of these breaks the RFC 7208 grammar and must be a permerror, not half-evaluated."""
    with pytest.raises(SPFSyntaxError):
        parseRecord(record)


def test_huge_numbers_in_records():
    """A sender domain's record with 5000-digit numbers is a permerror or a plain macro, never a crash."""
    with pytest.raises(SPFSyntaxError):
        parseRecord("v=spf1 ip4:192.0.2.0/" + "1" * 5000)
    with pytest.raises(SPFSyntaxError):
        parseMacroString("%{d" + "0" * 5000 + "}")
    values = {"d": "a.b.example.com"}
    assert expand(parseMacroString("%{d" + "9" * 5000 + "}"), values) == "a.b.example.com"
    assert expand(parseMacroString("%{d0002}"), values) == "example.com"


def test_syntax_accepted():
    """Unusual but valid records parse: unknown modifiers, a dual CIDR, a "/" inside a domain-spec."""
    record = parseRecord(b"v=spf1 moo.cow-far_out=man:dog/cat a:foo:bar/baz.test/24//64 mx//0  ")
    assert [(d.mechanism, d.cidr4, d.cidr6) for d in record.directives] == [("a", 24, 64), ("mx", 32, 0)]
    assert record.directives[0].domainSpec.text == "foo:bar/baz.test"
    assert parseDomainSpec("%{d}").text == "%{d}"


# -- the fake stays honest --------------------------------------------------------------

PARITY = [
    ("example.test", "TXT"), ("split.test", "TXT"), ("nospf.test", "A"), ("nospf.test", "AAAA"),
    ("nx.test", "A"), ("timeout.test", "TXT"), ("mx10.test", "MX"), (reverse(GOOD), "PTR"),
    ("alias.test", "TXT"), ("loop.test", "A"), ("dup.test", "A"), ("EXAMPLE.Test.", "TXT"),
    ("a..test", "A"), ("x" * 64 + ".test", "A"), ("host6.test", "AAAA"),
]


def answerOf(resolver, name, rdtype):
    try:
        return sorted(r.to_text() for r in resolver.lookupBlocking(name, rdtype))
    except DNSError as e:
        return ("error", e.temporary)


@pytest.mark.parametrize("name, rdtype", PARITY)
def test_fake_resolver_answers_like_the_real_one(dnsServer, name, rdtype):
    """
    The fake answers each query as the real resolver does from the DNS
    server (records, empty, NXDOMAIN, temporary errors, CNAMEs, duplicate
    records): if not, tests on the fake would pass for code that fails on
    real DNS.
    """
    real = Resolver(DNSConfig(servers=(dnsServer.address,), timeout=5.0), None, None)
    assert answerOf(FakeResolver(ZONE), name, rdtype) == answerOf(real, name, rdtype)
