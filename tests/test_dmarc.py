"""
Tests for L{pymailer.policy.dmarc}: policy discovery, alignment, pct and
sp, and the From domain, on a fake TXT lookup.
"""

import time

import pytest

from pymailer.testing import FakeTXT
from pymailer.policy import dmarc
from pymailer.policy.dkim import DKIMResult



def dkimPass(domain):
    return DKIMResult("pass", domain, "sel", "rsa-sha256", "signature verified")


def dkimFail(domain):
    return DKIMResult("fail", domain, "sel", "rsa-sha256", "body hash did not verify")


REJECT = FakeTXT({"_dmarc.example.com": ["v=DMARC1; p=reject; rua=mailto:d@example.com"]})


def never():
    raise AssertionError("pct sampling must not run")


class TestOrganisationalDomain:
    @pytest.mark.parametrize("domain, org", [
        ("example.com", "example.com"),
        ("mail.example.com", "example.com"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("Mail.Example.COM.", "example.com"),
        ("co.uk", "co.uk"),
        ("x.example.test", "example.test"),
        ("site.blogspot.com", "site.blogspot.com"),
    ])
    def test_publicSuffixList(self, domain, org):
        """
        The organisational domain is the public suffix plus one label (RFC
        7489 §3.2): otherwise subdomains would not align with their parent,
        or unrelated sites under one suffix would align with each other.
        """
        assert dmarc.organisationalDomain(domain) == org


class TestEvaluate:
    def test_passViaSPF(self):
        """
        An SPF pass for a subdomain of the From domain passes (relaxed
        alignment): otherwise bounces-domain setups common at providers
        fail DMARC.
        """
        r = dmarc.evaluate("example.com", "pass", "bounces.example.com", [], REJECT,
                           random=never)
        assert (r.result, r.disposition, r.spfAligned, r.dkimAligned) == (
            "pass", "none", True, False)
        assert r.fromDomain == "example.com"
        assert r.policy == "reject"

    def test_passViaDKIM(self):
        """
        An aligned DKIM pass passes even with SPF failing (forwarded mail):
        otherwise forwarded mail of p=reject domains would be refused.
        """
        r = dmarc.evaluate("example.com", "fail", "forwarder.net",
                           [dkimFail("other.net"), dkimPass("mail.example.com")], REJECT,
                           random=never)
        assert (r.result, r.disposition, r.dkimAligned) == ("pass", "none", True)

    def test_failRejects(self):
        """
        Neither SPF nor DKIM aligned with p=reject gives fail/reject:
        otherwise forged mail from protected domains is delivered.
        """
        r = dmarc.evaluate("example.com", "pass", "evil.net",
                           [dkimPass("evil.net"), dkimFail("example.com")], REJECT)
        assert (r.result, r.policy, r.disposition) == ("fail", "reject", "reject")
        assert r.reason == "no aligned SPF or DKIM pass"

    def test_spfSoftfailIsNotPass(self):
        """
        Only an SPF pass counts: otherwise softfail or neutral would vouch
        for a From domain.
        """
        for spf in ("softfail", "neutral", "none", "temperror"):
            r = dmarc.evaluate("example.com", spf, "example.com", [], REJECT)
            assert r.result == "fail", spf

    def test_strictAlignment(self):
        """
        adkim=s / aspf=s need the exact domain (RFC 7489 §3.1): otherwise a
        domain owner's strict policy would be ignored.
        """
        txt = FakeTXT({"_dmarc.example.com": ["v=DMARC1; p=reject; adkim=s; aspf=s"]})
        sub = dmarc.evaluate("example.com", "pass", "bounces.example.com",
                             [dkimPass("mail.example.com")], txt)
        assert sub.result == "fail"
        exact = dmarc.evaluate("example.com", "fail", "x.net",
                               [dkimPass("EXAMPLE.com.")], txt)
        assert exact.result == "pass"

    def test_relaxedDoesNotCrossOrganisations(self):
        """
        Relaxed alignment needs the same organisational domain:
        example.com.evil.net must not align with example.com.
        """
        r = dmarc.evaluate("example.com", "pass", "example.com.evil.net", [], REJECT)
        assert r.result == "fail"

    def test_subdomainPolicy(self):
        """
        For a subdomain covered by its organisational domain's record, sp
        applies (p=none sp=reject rejects mail from sub.example.com but not
        from example.com): otherwise owners cannot protect unused
        subdomains.
        """
        txt = FakeTXT({"_dmarc.example.com": ["v=DMARC1; p=none; sp=reject"]})
        sub = dmarc.evaluate("sub.example.com", "fail", "x.net", [], txt)
        assert (sub.result, sub.policy, sub.disposition) == ("fail", "reject", "reject")
        assert sub.record.domain == "example.com"
        top = dmarc.evaluate("example.com", "fail", "x.net", [], txt)
        assert (top.result, top.policy, top.disposition) == ("fail", "none", "none")

    def test_subdomainWithOwnRecordIgnoresSp(self):
        """
        A subdomain's own record applies, not the parent's sp (RFC 7489
        §6.6.3): otherwise a subdomain owner's policy would be overridden.
        """
        txt = FakeTXT({"_dmarc.example.com": ["v=DMARC1; p=reject; sp=reject"],
                       "_dmarc.sub.example.com": ["v=DMARC1; p=none; sp=reject"]})
        r = dmarc.evaluate("sub.example.com", "fail", "x.net", [], txt)
        assert (r.policy, r.disposition) == ("none", "none")

    def test_fallbackToOrganisationalDomain(self):
        """
        Without a record at _dmarc.FROM, the organisational domain's record
        is used (RFC 7489 §6.6.3): otherwise a subdomain would escape its
        parent's policy.
        """
        REJECT.queries.clear()
        r = dmarc.evaluate("a.b.example.com", "fail", "x.net", [], REJECT)
        assert (r.result, r.disposition) == ("fail", "reject")
        assert REJECT.queries == ["_dmarc.a.b.example.com", "_dmarc.example.com"]

    def test_pctZeroNeverRejects(self):
        """
        pct=0 never applies the policy: failing mail gets the next policy
        down (reject -> quarantine, RFC 7489 §6.6.4): otherwise a domain
        testing DMARC would lose mail.
        """
        txt = FakeTXT({"_dmarc.example.com": ["v=DMARC1; p=reject; pct=0"]})
        for value in (0.0, 0.5, 0.999999):
            r = dmarc.evaluate("example.com", "fail", "x.net", [], txt,
                               random=lambda: value)
            assert (r.policy, r.disposition) == ("reject", "quarantine")
            assert "pct=0" in r.reason

    def test_pctSampling(self):
        """
        pct=50 applies the policy to the sampled half only, and quarantine
        outside the sample becomes none: otherwise pct means nothing.
        """
        txt = FakeTXT({"_dmarc.example.com": ["v=DMARC1; p=quarantine; pct=50"]})
        inside = dmarc.evaluate("example.com", "fail", "x.net", [], txt, random=lambda: 0.49)
        outside = dmarc.evaluate("example.com", "fail", "x.net", [], txt, random=lambda: 0.5)
        assert (inside.disposition, outside.disposition) == ("quarantine", "none")

    def test_noRecord(self):
        """
        No DMARC record anywhere gives none: otherwise mail from domains
        without DMARC would be judged by a policy nobody published.
        """
        r = dmarc.evaluate("example.org", "fail", "x.net", [], FakeTXT())
        assert (r.result, r.policy, r.disposition) == ("none", "none", "none")

    def test_nonDMARCRecordsIgnored(self):
        """
        TXT records that are not v=DMARC1 are discarded before counting
        (RFC 7489 §6.6.3): otherwise an SPF record at _dmarc would hide the
        policy.
        """
        txt = FakeTXT({"_dmarc.example.com": ["v=spf1 -all", "v=DMARC1; p=reject"]})
        assert dmarc.evaluate("example.com", "fail", "x.net", [], txt).disposition == "reject"

    def test_severalRecords(self):
        """
        Two DMARC records mean no policy (RFC 7489 §6.6.3): otherwise the
        result would depend on DNS answer order.
        """
        txt = FakeTXT({"_dmarc.example.com": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]})
        assert dmarc.evaluate("example.com", "fail", "x.net", [], txt).result == "none"

    def test_temporaryDNSError(self):
        """
        A DNS timeout gives temperror and no disposition: otherwise a DNS
        hiccup would reject legitimate mail (or let forged mail through as
        none).
        """
        txt = FakeTXT(temporary={"_dmarc.example.com"})
        r = dmarc.evaluate("example.com", "fail", "x.net", [], txt)
        assert (r.result, r.disposition) == ("temperror", "none")
        assert "no server answered" in r.reason

    def test_temporaryDNSErrorOnFallback(self):
        """A timeout on the organisational domain's record is temperror too."""
        txt = FakeTXT(temporary={"_dmarc.example.com"})
        assert dmarc.evaluate("sub.example.com", "fail", "x.net", [], txt).result == "temperror"

    def test_noFromDomain(self):
        """
        No usable From domain gives permerror: the caller can then reject
        or mark instead of crashing.
        """
        r = dmarc.evaluate(None, "pass", "example.com", [], REJECT)
        assert (r.result, r.disposition, r.fromDomain) == ("permerror", "none", None)


class TestRecord:
    def test_tags(self):
        """
        Every RFC 7489 §6.3 tag is read, with defaults: otherwise reports
        and alignment modes would be ignored.
        """
        r = dmarc.parseRecord(
            "v=DMARC1;p=Quarantine; sp=reject ;pct=20;adkim=s;aspf=s;"
            " rua=mailto:a@example.com,mailto:b@example.net!10m; ruf=mailto:f@example.com;"
            " fo=1; rf=afrf; ri=3600; unknown=tag", "Example.com.")
        assert (r.domain, r.p, r.sp, r.pct, r.adkim, r.aspf, r.fo, r.ri) == (
            "example.com", "quarantine", "reject", 20, "s", "s", "1", 3600)
        assert r.rua == ("mailto:a@example.com", "mailto:b@example.net!10m")
        assert r.ruf == ("mailto:f@example.com",)
        d = dmarc.parseRecord("v=DMARC1; p=none", "example.com")
        assert (d.sp, d.pct, d.adkim, d.aspf, d.ri, d.rua) == (None, 100, "r", "r", 86400, ())

    def test_invalidPWithRua(self):
        """
        An invalid p= with a valid rua is read as p=none (RFC 7489 §6.6.3):
        otherwise the owner's reports would stop.
        """
        r = dmarc.parseRecord("v=DMARC1; p=block; rua=mailto:a@example.com", "example.com")
        assert (r.p, r.pInvalid) == ("none", True)

    def test_invalidPWithoutRua(self):
        """An invalid p= without rua means no DMARC processing at all."""
        assert dmarc.parseRecord("v=DMARC1; p=block", "example.com") is None
        assert dmarc.parseRecord("v=DMARC1", "example.com") is None

    def test_vMustComeFirst(self):
        """
        v=DMARC1 must be the first tag (RFC 7489 §6.3): otherwise anything
        with DMARC1 somewhere would count.
        """
        assert dmarc.parseRecord("p=reject; v=DMARC1", "example.com") is None
        assert dmarc.parseRecord("v=DMARC2; p=reject", "example.com") is None

    def test_hugeNumbersDefault(self):
        """A record with 5000-digit pct or ri falls back to defaults: mail from that domain is still judged."""
        r = dmarc.parseRecord(f"v=DMARC1; p=reject; pct={'1' * 5000}; ri={'9' * 5000}",
                              "example.com")
        assert (r.p, r.pct, r.ri) == ("reject", 100, 86400)

    def test_badValuesDefault(self):
        """Bad pct, adkim or ri values fall back to defaults, not errors."""
        r = dmarc.parseRecord("v=DMARC1; p=reject; pct=150; adkim=x; ri=soon", "example.com")
        assert (r.pct, r.adkim, r.ri) == (100, "r", 86400)


class TestFromDomain:
    @pytest.mark.parametrize("header, domain", [
        (b"From: Alice <alice@Example.COM>\r\nTo: x@y.org\r\n\r\nbody", "example.com"),
        (b"From: alice@mail.example.com (Alice)\r\n", "mail.example.com"),
        (b'From: "Bob, <bob@evil.net>" <bob@example.com>\r\n', "example.com"),
        (b"From: Folded\r\n <a@folded.example>\r\n", "folded.example"),
        (b"Subject: x\r\nfrom: a@lower.example\r\n", "lower.example"),
        ("From: a@bücher.example\r\n".encode(), "xn--bcher-kva.example"),
    ])
    def test_domain(self, header, domain):
        """
        The From domain is the address's domain, lower case, A-labels:
        otherwise a display name could pick the domain DMARC checks.
        """
        assert dmarc.fromDomain(header) == (domain, "")

    @pytest.mark.parametrize("header, reason", [
        (b"To: x@y.org\r\n\r\nFrom: a@b.org\r\n", "no From header field"),
        (b"From: a@x.org\r\nFrom: b@y.org\r\n", "several From header fields"),
        (b"From: a@x.org, b@y.org\r\n", "From header field has several addresses"),
        (b"From: undisclosed:;\r\n", "From header field has no address"),
        (b"From: a@[192.0.2.1]\r\n", "From address has no domain name"),
        (b"From: <>\r\n", "From address has no domain name"),
    ])
    def test_noSingleDomain(self, header, reason):
        """
        No From, several, several addresses or no domain name give no
        domain and a reason (RFC 7489 §6.6.1): otherwise a forger could pick
        which of two From domains we check.
        """
        assert dmarc.fromDomain(header) == (None, reason)

    @pytest.mark.parametrize("header", [
        # 256 KiB (what the check reads) of addresses in one From field.
        b"From: " + b",\r\n ".join(b"u%d@example.com" % i for i in range(12_000)) + b"\r\n",
        # The same folded 100,000 times in another field before it.
        b"X-Fold: a" + b"\r\n b" * 100_000 + b"\r\nFrom: a@example.com, b@example.com\r\n",
    ], ids=["long-from", "folded-field"])
    def test_hugeHeaderAnsweredQuickly(self, header):
        """
        A From of 12,000 addresses (256 KiB, anyone may send it) gets its
        answer in well under a second: the email package's address parser
        took over a minute of a core per message (time growing with the
        square of the field), in the threads every DNS lookup of the
        inbound checks waits for.
        """
        started = time.monotonic()
        domain, reason = dmarc.fromDomain(header)
        assert time.monotonic() - started < 1.0
        assert domain is None and reason.startswith("From header field"), reason
