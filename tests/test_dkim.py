"""
Tests for L{pymailer.policy.dkim} (verifying and signing) and
L{pymailer.policy.dkimkeys} (keys on disk and their DNS records).

Keys come from L{dkimkeys.generateKeys}; the public keys are served from the
zone-file lines L{dkimkeys.dnsRecord} prints, parsed back by dnspython, so a
record that would not work in a real zone fails here too.
"""

import base64
import hashlib
import os
import re
import stat
import time
import tracemalloc

import dkim as dkimpy
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import given, settings
from hypothesis import strategies as st

from pymailer.config import DNSConfig
from pymailer.dns import Resolver
from pymailer.policy import dkim, dkimkeys
from pymailer.testing import FakeTXT

from dnsserver import DNSServer

DOMAIN = "example.org"

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: lunch\r\n"
    b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"Received: from somewhere\r\n"
    b"\r\n"
    b"See you at noon.\r\n"
)


def zoneTXT(lines, origin):
    """
    C{{name-without-dot: [TXT content]}} from zone-file lines, parsed by
    dnspython as a zone with C{$ORIGIN origin}; each record's strings joined
    as a resolver does.
    """
    text = f"$ORIGIN {origin}.\n$TTL 300\n" + "\n".join(lines) + "\n"
    zone = dns.zone.from_text(text, origin=origin, relativize=False,
                              check_origin=False)
    records = {}
    for name, rdataset in zone.iterate_rdatasets(dns.rdatatype.TXT):
        records[name.to_text().rstrip(".")] = [
            b"".join(r.strings).decode("ascii") for r in rdataset]
    return records



@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """An RSA and an Ed25519 key for example.org, selector "sel"."""
    return dkimkeys.generateKeys(tmp_path_factory.mktemp("data"), DOMAIN, "sel")


@pytest.fixture(scope="module")
def published(keys):
    """The TXT records of both keys, as the printed zone lines give them."""
    return zoneTXT([dkimkeys.dnsRecord(DOMAIN, k) for k in keys], DOMAIN)


def signed(keys, message=MESSAGE):
    return dkim.sign(message, DOMAIN, keys) + message


class TestVerify:
    def test_rsaAndEd25519Pass(self, keys, published):
        """
        Mail we sign with both keys verifies against the records we print:
        otherwise receivers see our users' mail as forged (spam folder, or
        DMARC rejection).
        """
        results = dkim.verifyAll(signed(keys), FakeTXT(published))
        assert [(r.result, r.domain, r.selector, r.algorithm) for r in results] == [
            ("pass", DOMAIN, "sel", "rsa-sha256"),
            ("pass", DOMAIN, "sel-ed25519", "ed25519-sha256"),
        ]
        assert all(r.headerB and len(r.headerB) == 8 for r in results)

    def test_bodyByteChangedFails(self, keys, published):
        """
        One changed body byte gives dkim=fail: otherwise a tampered message
        would pass as authentic.
        """
        message = signed(keys).replace(b"noon", b"nooN")
        results = dkim.verifyAll(message, FakeTXT(published))
        assert [r.result for r in results] == ["fail", "fail"]
        assert results[0].reason == "body hash did not verify"

    def test_signedHeaderChangedFails(self, keys, published):
        """
        A changed Subject fails: otherwise a forger could reuse a signed
        message with his own subject line.
        """
        message = signed(keys).replace(b"Subject: lunch", b"Subject: pay me")
        results = dkim.verifyAll(message, FakeTXT(published))
        assert [r.result for r in results] == ["fail", "fail"]
        assert results[0].reason == "signature did not verify"

    def test_addedFromFails(self, keys, published):
        """
        A second From added above the signed one fails (From is
        over-signed): otherwise a forger could show his own From to the
        reader above a valid signature.
        """
        message = signed(keys)
        end = message.index(b"From: Alice")
        message = message[:end] + b"From: evil@example.com\r\n" + message[end:]
        results = dkim.verifyAll(message, FakeTXT(published))
        assert [r.result for r in results] == ["fail", "fail"]

    def test_refoldedHeaderPasses(self, keys, published):
        """
        Whitespace changes by relays do not break our signatures
        (relaxed/relaxed): otherwise mail through some relays arrives as
        forged.
        """
        message = signed(keys).replace(b"Subject: lunch", b"Subject:\r\n   lunch")
        results = dkim.verifyAll(message, FakeTXT(published))
        assert [r.result for r in results] == ["pass", "pass"]

    def test_ed25519Only(self, keys, published):
        """
        An Ed25519-only signature (RFC 8463) verifies: otherwise mail from
        domains that sign only with Ed25519 would fail DKIM here.
        """
        message = dkim.sign(MESSAGE, DOMAIN, [keys[1]]) + MESSAGE
        results = dkim.verifyAll(message, FakeTXT(published))
        assert [(r.result, r.algorithm) for r in results] == [("pass", "ed25519-sha256")]

    def test_missingKeyIsPermerror(self, keys, published):
        """
        A selector without a key record (NXDOMAIN, or no TXT) is permerror,
        not fail or temperror: otherwise a sender's DNS mistake would look
        like forgery, or mail would be retried forever.
        """
        for records in ({}, {"sel._domainkey.example.org": []}):
            results = dkim.verifyAll(dkim.sign(MESSAGE, DOMAIN, [keys[0]]) + MESSAGE,
                                     FakeTXT(records))
            assert [(r.result, r.reason) for r in results] == [
                ("permerror", "no key for signature")]

    def test_temporaryDNSErrorIsTemperror(self, keys, published):
        """
        A DNS timeout gives temperror: otherwise a DNS hiccup here would
        turn legitimate mail into dkim=fail and DMARC rejections.
        """
        txt = FakeTXT(published, temporary={"sel._domainkey.example.org"})
        results = dkim.verifyAll(signed(keys), txt)
        assert [r.result for r in results] == ["temperror", "pass"]
        assert "no server answered" in results[0].reason

    def test_revokedKey(self, keys):
        """
        An empty p= (a revoked key, RFC 6376 §3.6.1) is permerror "key
        revoked": otherwise an admin cannot tell why old mail fails.
        """
        txt = FakeTXT({"sel._domainkey.example.org": ["v=DKIM1; k=rsa; p="]})
        results = dkim.verifyAll(dkim.sign(MESSAGE, DOMAIN, [keys[0]]) + MESSAGE, txt)
        assert [(r.result, r.reason) for r in results] == [("permerror", "key revoked")]

    def test_garbageKeyRecord(self, keys):
        """
        A key record that does not parse is permerror: otherwise junk in
        DNS would crash verification or read as forgery.
        """
        txt = FakeTXT({"sel._domainkey.example.org": ["v=DKIM1; k=rsa; p=!!!notbase64"]})
        results = dkim.verifyAll(dkim.sign(MESSAGE, DOMAIN, [keys[0]]) + MESSAGE, txt)
        assert [r.result for r in results] == ["permerror"]

    def test_severalKeyRecords(self, keys, published):
        """
        Two valid key records at one selector are permerror (RFC 6376
        §3.6.2.2: undefined): otherwise the result would change with DNS
        answer order.
        """
        rsaRecord = published["sel._domainkey.example.org"][0]
        # The same key, spelled differently: two valid records.
        other = rsaRecord.replace("k=rsa; ", "k=rsa;  ")
        txt = FakeTXT({"sel._domainkey.example.org": [rsaRecord, other]})
        results = dkim.verifyAll(dkim.sign(MESSAGE, DOMAIN, [keys[0]]) + MESSAGE, txt)
        assert [(r.result, r.reason) for r in results] == [
            ("permerror", "several key records")]

    def test_junkBesideKeyRecord(self, keys, published):
        """
        A non-key TXT record beside the key is ignored: otherwise a stray
        record in the sender's DNS would break all its signatures.
        """
        txt = FakeTXT({"sel._domainkey.example.org":
                       ["hello world", published["sel._domainkey.example.org"][0]]})
        results = dkim.verifyAll(dkim.sign(MESSAGE, DOMAIN, [keys[0]]) + MESSAGE, txt)
        assert [r.result for r in results] == ["pass"]

    def test_unsigned(self, published):
        """
        An unsigned message gives no results (A-R dkim=none) and no DNS
        lookups: otherwise unsigned mail would be reported as failing.
        """
        txt = FakeTXT(published)
        assert dkim.verifyAll(MESSAGE, txt) == []
        assert txt.queries == []

    def test_malformedSignatureIsNeutral(self, published):
        """
        A signature missing required tags is neutral (RFC 8601 §2.7.1,
        syntax error) and names its d=: otherwise junk signatures would
        crash the check or count as forgery.
        """
        message = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel\r\n" + MESSAGE
        results = dkim.verifyAll(message, FakeTXT(published))
        assert [(r.result, r.domain, r.selector) for r in results] == [
            ("neutral", "example.org", "sel")]
        assert "missing" in results[0].reason

    def test_junkDomainIsNeutral(self, keys, published):
        """
        A signature whose d= is not a DNS name is neutral, with no domain
        reported and no lookup: otherwise its junk would go into our
        Authentication-Results header or our DNS queries.
        """
        header = b" ".join(dkim.sign(MESSAGE, DOMAIN, [keys[0]]).split(b"\r\n "))
        header = header.replace(b"d=example.org;", b"d=exa mple.org (x);")
        txt = FakeTXT(published)
        results = dkim.verifyAll(header + MESSAGE, txt)
        assert [(r.result, r.domain) for r in results] == [("neutral", None)]
        assert txt.queries == []

    def test_reasonIsCommentSafe(self):
        """
        Reasons carry no parentheses, backslashes or newlines, whatever
        dkimpy or DNS said: otherwise they would break the A-R comment.
        """
        # dkimpy's message: "b= value is not valid base64 (b'...')".
        header = (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel;"
                  b" h=from; bh=AAAA; b=" + b"!\\" * 200 + b"\r\n")
        [result] = dkim.verifyAll(header + MESSAGE, FakeTXT({}))
        assert result.result == "neutral"
        assert "base64" in result.reason
        assert not set("()\\\r\n") & set(result.reason) and len(result.reason) <= 100

    def test_unparseableHeader(self, published):
        """
        A header dkimpy cannot split (a continuation line first) still
        gives one neutral result per signature line, no exception:
        otherwise one odd message would break the check for everyone.
        """
        message = b" folded\r\nDKIM-Signature: v=1\r\n" + MESSAGE
        results = dkim.verifyAll(message, FakeTXT(published))
        assert [r.result for r in results] == ["neutral"]

    def test_rsaSha1IsPolicy(self, keys, published):
        """
        rsa-sha1 signatures are not accepted (RFC 8301 §3.1), reported as
        policy: otherwise a broken hash would authenticate mail.
        """
        header = dkimpy.sign(MESSAGE, b"sel", DOMAIN.encode(), keys[0].privateKey,
                             signature_algorithm=b"rsa-sha1",
                             include_headers=[b"from", b"subject"])
        results = dkim.verifyAll(header + MESSAGE, FakeTXT(published))
        assert [r.result for r in results] == ["policy"]

    def test_fromNotSigned(self, keys, published):
        """
        A signature whose h= lacks From is permerror (RFC 6376 §6.1.1):
        otherwise a valid signature would vouch for any From.
        """
        # The check comes before any cryptography, so a real signature
        # with its h= rewritten shows it.
        header = b" ".join(dkim.sign(MESSAGE, DOMAIN, [keys[0]]).split(b"\r\n "))
        header = re.sub(rb"h=[^;]*;", b"h=subject : date;", header)
        results = dkim.verifyAll(header + MESSAGE, FakeTXT(published))
        assert [(r.result, r.reason) for r in results] == [
            ("permerror", "From header not signed")]

    def test_signatureCap(self, keys, published):
        """
        At most MAX_SIGNATURES signatures are checked: otherwise a message
        with thousands of signatures costs thousands of DNS lookups and RSA
        operations.
        """
        header = dkim.sign(MESSAGE, DOMAIN, [keys[1]])
        message = header * (dkim.MAX_SIGNATURES + 5) + MESSAGE
        results = dkim.verifyAll(message, FakeTXT(published))
        assert len(results) == dkim.MAX_SIGNATURES

    def test_realDNSServer(self, keys, published):
        """
        Keys served by a real DNS server, read through the server's
        Resolver and txtLookupFromResolver (2048-bit RSA keys span two TXT
        strings), verify: otherwise the adapter would pass the unit tests
        and fail on the wire.
        """
        server = DNSServer({
            name: [("TXT", dkimkeys.zoneTXT(value[0]))]
            for name, value in published.items()})
        try:
            resolver = Resolver(DNSConfig(servers=(server.address,), timeout=2),
                                reactor=None, threadpool=None)
            txt = dkim.txtLookupFromResolver(resolver)
            assert len(resolver.lookupBlocking("sel._domainkey.example.org",
                                               "TXT")[0].strings) == 2
            results = dkim.verifyAll(signed(keys), txt)
            assert [r.result for r in results] == ["pass", "pass"]
            missing = dkim.verifyAll(
                signed(keys).replace(b"s=sel;", b"s=nokey;", 1), txt)
            assert missing[0].result == "permerror"
        finally:
            server.stop()


class TestSign:
    def test_headerLines(self, keys):
        """
        sign() returns complete CRLF-ended DKIM-Signature fields, RSA
        first, relaxed/relaxed, From over-signed, trace fields left out:
        otherwise the queue would store a broken header block.
        """
        header = dkim.sign(MESSAGE, DOMAIN, keys)
        assert header.endswith(b"\r\n") and b"\n" not in header.replace(b"\r\n", b"")
        fields = [f for f in header.split(b"DKIM-Signature: ") if f]
        assert len(fields) == 2
        assert b"a=rsa-sha256" in fields[0] and b"a=ed25519-sha256" in fields[1]
        tags = dkimpy.util.parse_tag_value(b" ".join(fields[0].split()))
        assert tags[b"c"] == b"relaxed/relaxed"
        assert tags[b"d"] == b"example.org"
        h = [x.strip() for x in tags[b"h"].split(b":")]
        assert h.count(b"from") == 2
        assert {b"to", b"subject", b"date", b"message-id"} <= set(h)
        assert b"received" not in h

    def test_noKeys(self):
        """
        No keys, no signature: a domain without keys sends unsigned mail
        instead of failing.
        """
        assert dkim.sign(MESSAGE, DOMAIN, []) == b""

    def test_noFrom(self, keys):
        """
        A message without From cannot be signed (RFC 6376 §5.4) and says
        so: otherwise a submission would crash the signer.
        """
        with pytest.raises(ValueError, match="no From"):
            dkim.sign(b"Subject: x\r\n\r\nbody\r\n", DOMAIN, keys)

    def test_badKey(self):
        """
        A broken key gives a ValueError naming the selector: otherwise the
        admin has no clue which key file to fix.
        """
        with pytest.raises(ValueError, match="broken"):
            dkim.sign(MESSAGE, DOMAIN, [("broken", "rsa-sha256", b"junk")])


class TestKeys:
    def test_layoutAndModes(self, tmp_path):
        """
        Keys are stored 0600 in a 0700 directory, named SELECTOR.TYPE.key:
        otherwise other local users could read our signing keys.
        """
        dkimkeys.generateKeys(tmp_path, "Example.ORG.", "k1")
        directory = tmp_path / "dkim" / "example.org"
        assert sorted(os.listdir(directory)) == ["k1-ed25519.ed25519.key", "k1.rsa.key"]
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        for name in os.listdir(directory):
            assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600
        assert (directory / "k1.rsa.key").read_bytes().startswith(
            b"-----BEGIN RSA PRIVATE KEY-----")

    def test_loadOrder(self, tmp_path):
        """
        loadSigningKeys gives every key, RSA first, sorted by selector, in
        the form sign() takes: otherwise rotation (two generations on disk)
        would drop a signature.
        """
        dkimkeys.generateKeys(tmp_path, DOMAIN, "b")
        dkimkeys.generateKeys(tmp_path, DOMAIN, "a")
        keys = dkimkeys.loadSigningKeys(tmp_path, DOMAIN)
        assert [(k.selector, k.algorithm) for k in keys] == [
            ("a", "rsa-sha256"), ("b", "rsa-sha256"),
            ("a-ed25519", "ed25519-sha256"), ("b-ed25519", "ed25519-sha256")]
        records = zoneTXT([dkimkeys.dnsRecord(DOMAIN, k) for k in keys], DOMAIN)
        results = dkim.verifyAll(dkim.sign(MESSAGE, DOMAIN, keys) + MESSAGE,
                                 FakeTXT(records))
        assert [r.result for r in results] == ["pass"] * 4

    def test_noKeys(self, tmp_path):
        """A domain without keys loads as [] (unsigned mail), no error."""
        assert dkimkeys.loadSigningKeys(tmp_path, DOMAIN) == []

    def test_refusesOverwrite(self, tmp_path):
        """
        A second keygen with the same selector is refused unless forced:
        otherwise the published key stops matching and all mail fails DKIM.
        """
        first = dkimkeys.generateKeys(tmp_path, DOMAIN, "k")
        with pytest.raises(dkimkeys.KeyExistsError):
            dkimkeys.generateKeys(tmp_path, DOMAIN, "k")
        assert dkimkeys.loadSigningKeys(tmp_path, DOMAIN) == first
        second = dkimkeys.generateKeys(tmp_path, DOMAIN, "k", force=True)
        assert second != first
        assert dkimkeys.loadSigningKeys(tmp_path, DOMAIN) == second

    def test_importedPKCS8Key(self, tmp_path):
        """
        An RSA key made elsewhere (PKCS#8 PEM, as openssl genpkey writes)
        dropped into the directory is used: otherwise migrating a domain
        means a new key and a DNS change.
        """
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        directory = tmp_path / "dkim" / DOMAIN
        directory.mkdir(parents=True)
        (directory / "old.rsa.key").write_bytes(private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        keys = dkimkeys.loadSigningKeys(tmp_path, DOMAIN)
        assert [k.selector for k in keys] == ["old"]
        records = zoneTXT([dkimkeys.dnsRecord(DOMAIN, keys[0])], DOMAIN)
        results = dkim.verifyAll(dkim.sign(MESSAGE, DOMAIN, keys) + MESSAGE,
                                 FakeTXT(records))
        assert [r.result for r in results] == ["pass"]

    def test_wrongKeyTypeInFile(self, tmp_path):
        """
        An Ed25519 key in a .rsa.key file is refused, naming the file:
        otherwise signing fails later with an obscure error.
        """
        keys = dkimkeys.generateKeys(tmp_path, DOMAIN, "k")
        directory = tmp_path / "dkim" / DOMAIN
        os.rename(directory / "k-ed25519.ed25519.key", directory / "z.rsa.key")
        with pytest.raises(dkimkeys.KeyFileError, match="z.rsa.key"):
            dkimkeys.loadSigningKeys(tmp_path, DOMAIN)
        assert keys

    def test_invalidNames(self, tmp_path):
        """
        Domains and selectors that could escape the key directory or are
        not DNS names are refused: otherwise keygen could write anywhere.
        """
        for domain in ("../etc", "a/b.org", "", "localhost", "a..b"):
            with pytest.raises(ValueError):
                dkimkeys.generateKeys(tmp_path, domain, "k")
        for selector in ("../x", "a/b", "", "-x", "a b"):
            with pytest.raises(ValueError):
                dkimkeys.generateKeys(tmp_path, DOMAIN, selector)
        assert not (tmp_path / "dkim").exists() or not any(
            p.is_file() for p in (tmp_path / "dkim").rglob("*"))

    def test_idnDomain(self, tmp_path):
        """
        An internationalised domain is stored and published in A-label
        form (RFC 6376 §3.5): otherwise d= and the DNS name would not match.
        """
        keys = dkimkeys.generateKeys(tmp_path, "bücher.example", "k")
        assert (tmp_path / "dkim" / "xn--bcher-kva.example").is_dir()
        assert dkimkeys.dnsRecord("bücher.example", keys[0]).startswith(
            "k._domainkey.xn--bcher-kva.example. IN TXT ")

    def test_recordLineSplit(self, keys):
        """
        The RSA record is one line of quoted strings of at most 255
        characters: otherwise zone loaders reject it.
        """
        line = dkimkeys.dnsRecord(DOMAIN, keys[0])
        assert "\n" not in line
        strings = re.findall(r'"([^"]*)"', line.split(" IN TXT ", 1)[1])
        assert len(strings) == 2
        assert all(len(s) <= 255 for s in strings)
        assert "".join(strings).startswith("v=DKIM1; k=rsa; p=")

    def test_defaultSelector(self):
        """The default selector is s + year + month (rotation by date)."""
        assert dkimkeys.defaultSelector(0) == "s197001"
        assert dkimkeys.selectorsFor("s197001") == {
            "rsa": "s197001", "ed25519": "s197001-ed25519"}


def _bigMessage(path, size):
    """
    A message of about C{size} bytes on disk, as large mail is: some text
    (with the blanks relaxed canonicalisation rewrites), then a base64
    attachment, then empty lines (which it ignores).
    """
    text = b"Lorem  ipsum\tdolor sit amet, consectetur adipiscing elit, sed do \r\n" * 1000
    attachment = base64.encodebytes(os.urandom(57 * 1000)).replace(b"\n", b"\r\n")
    with open(path, "wb") as f:
        f.write(MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + text)
        for _ in range(size // len(attachment)):
            f.write(attachment)
        f.write(b"\r\n\r\n")
    return path


def _streamedBodies(bodies, cuts, upTo):
    """Hypothesis cases for L{_assertStreamedHashMatchesDkimpy}: C{bodies},
    up to C{cuts} cut points and an C{l=} up to C{upTo}."""
    return given(body=bodies,
                 cuts=st.lists(st.integers(min_value=0, max_value=upTo), max_size=cuts),
                 canonicalization=st.sampled_from([b"simple", b"relaxed"]),
                 length=st.one_of(st.none(), st.integers(min_value=0, max_value=upTo)))


def _assertStreamedHashMatchesDkimpy(body, cuts, canonicalization, length=None):
    """The body hash of C{body} fed to L{dkim.BodyHasher} cut at C{cuts}
    is dkimpy's over the whole body."""
    lines = b"\r\n".join(re.split(rb"\r?\n", body))  # As dkimpy reads a message.
    canonical = CanonicalizationPolicy.from_c_value(
        b"relaxed/" + canonicalization).canonicalize_body(lines)
    if length is not None:
        canonical = canonical[:length]
    hasher = dkim.BodyHasher(canonicalization, "sha256", length)
    start = 0
    for cut in sorted(cuts) + [len(body)]:
        hasher.update(body[start:cut])
        start = max(start, cut)
    assert hasher.digest() == hashlib.sha256(canonical).digest()


class TestStreaming:
    """Signing and verifying read the message once, in chunks, whatever its size."""

    @_streamedBodies(st.lists(st.sampled_from([b"a", b"b ", b" ", b"\t", b"\r\n", b"\n", b"\r"]),
                              max_size=40).map(b"".join), cuts=6, upTo=60)
    @settings(max_examples=400, deadline=None)
    def test_bodyHashMatchesDkimpy(self, body, cuts, canonicalization, length):
        """
        The streamed body hash equals dkimpy's over the whole body, however
        the body is cut into pieces: otherwise a message whose chunk
        boundary falls inside trailing blank lines or whitespace would go
        out with a signature every receiver rejects.
        """
        _assertStreamedHashMatchesDkimpy(body, cuts, canonicalization, length)

    @_streamedBodies(st.lists(st.tuples(st.sampled_from([b"a", b"b ", b" ", b"\t", b"\r\n",
                                                         b"\n", b"\r", b" \r"]),
                                        st.integers(min_value=1, max_value=300))
                              .map(lambda run: run[0] * run[1]),
                              max_size=12).map(b"".join), cuts=12, upTo=4000)
    @settings(max_examples=400, deadline=None)
    def test_longLinesAndBlankRunsAcrossPieces(self, body, cuts, canonicalization, length):
        """
        Long lines and long runs of blanks, CRs and line ends, cut anywhere
        (several cuts inside one line, inside one run of blanks, between a
        CR and its LF), hash as dkimpy hashes the whole body: otherwise
        mail with long lines is signed or verified wrong.
        """
        _assertStreamedHashMatchesDkimpy(body, cuts, canonicalization, length)

    @pytest.mark.parametrize("canonicalization", [b"simple", b"relaxed"])
    @pytest.mark.parametrize("octet", [b"a", b" "])
    def test_longLineHashedInLinearTime(self, canonicalization, octet):
        """
        A 20 MiB body with no line end, fed in 64 KiB chunks, is hashed in
        well under a second of CPU and correctly: before, each chunk
        re-copied the whole unfinished line, so such a message (anyone can
        send one with BDAT and BINARYMIME, and a fake DKIM-Signature makes
        us verify it) took seconds, a minute for 50 MB, stalling the server.
        """
        body = octet * (20 * 1024 * 1024)
        hasher = dkim.BodyHasher(canonicalization, "sha256")
        started = time.thread_time()
        for start in range(0, len(body), 64 * 1024):
            hasher.update(body[start:start + 64 * 1024])
        digest = hasher.digest()
        assert time.thread_time() - started < 0.5
        # Written out, not dkimpy's: its regular expressions take minutes
        # over 20 MiB of blanks (test_longLinesAndBlankRunsAcrossPieces
        # checks these rules against dkimpy).
        if canonicalization == b"relaxed" and octet == b" ":
            canonical = b" \r\n"  # RFC 6376 §3.4.4: the run becomes one SP.
        else:
            canonical = body + b"\r\n"  # §3.4.3: the last line gets its CRLF.
        assert digest == hashlib.sha256(canonical).digest()

    def test_largeMessageSignedInBoundedMemory(self, keys, published, tmp_path):
        """
        A 20 MiB message (over the 16 MiB dkimpy used to be given) is signed
        with both keys, dkimpy verifies both signatures, and signing holds
        no more than a few chunks in memory: before, such mail left
        unsigned and receivers' DMARC treated it as forged.
        """
        path = _bigMessage(tmp_path / "big.eml", 20 * 1024 * 1024)
        tracemalloc.start()
        try:
            with open(path, "rb") as f:
                headers = dkim.signFile(f, DOMAIN, keys)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2 * 1024 * 1024, peak
        message = headers + path.read_bytes()
        verifier = dkimpy.DKIM(message)
        dnsfunc = dkim.dkimpyDNS(FakeTXT(published))
        assert verifier.verify(0, dnsfunc=dnsfunc)
        assert verifier.verify(1, dnsfunc=dnsfunc)

    def test_largeMessageVerifiedInBoundedMemory(self, keys, published, tmp_path):
        """
        Inbound mail over 16 MiB is DKIM-verified too, in bounded memory,
        and a byte changed near its end still fails: before, it was marked
        dkim=policy and DMARC could not act on it.
        """
        path = _bigMessage(tmp_path / "big.eml", 20 * 1024 * 1024)
        signedPath = tmp_path / "signed.eml"
        with open(path, "rb") as f:
            signedPath.write_bytes(dkim.signFile(f, DOMAIN, keys) + path.read_bytes())
        tracemalloc.start()
        try:
            with open(signedPath, "rb") as f:
                results = dkim.verifyFile(f, FakeTXT(published))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert [r.result for r in results] == ["pass", "pass"]
        assert peak < 2 * 1024 * 1024, peak
        with open(signedPath, "r+b") as f:
            f.seek(-20, os.SEEK_END)
            f.write(b"X")
        with open(signedPath, "rb") as f:
            results = dkim.verifyFile(f, FakeTXT(published))
        assert [r.reason for r in results] == ["body hash did not verify"] * 2
