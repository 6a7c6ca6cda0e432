"""
Tests for L{pymailer.policy.arc}: sealing forwarded mail and verifying ARC
chains (RFC 8617), with keys from L{dkimkeys.generateKeys} and a fake TXT
lookup.
"""

import re

import pytest

from pymailer.testing import FakeTXT
from pymailer.policy import arc, dkim, dkimkeys

MESSAGE = (
    b"From: Alice <alice@origin.example>\r\n"
    b"To: list@forwarder.example\r\n"
    b"Subject: hello\r\n"
    b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@origin.example>\r\n"
    b"\r\n"
    b"Forward me.\r\n"
)



@pytest.fixture(scope="module")
def hops(tmp_path_factory):
    """RSA keys of two forwarding domains, and the TXT records of both."""
    data = tmp_path_factory.mktemp("data")
    first = dkimkeys.generateKeys(data, "forwarder.example", "arc")[0]
    second = dkimkeys.generateKeys(data, "second.example", "arc")[0]
    records = {
        "arc._domainkey.forwarder.example": [dkimkeys.publicKeyRecord(first)],
        "arc._domainkey.second.example": [dkimkeys.publicKeyRecord(second)],
    }
    return first, second, FakeTXT(records)


def sealAs(message, domain, key, authservId, results):
    """Prepend our A-R header, then the ARC set, as the server would."""
    message = f"Authentication-Results: {authservId}; {results}\r\n".encode() + message
    return arc.seal(message, domain, key.selector, key.privateKey, authservId) + message


class TestARC:
    def test_sealAndVerify(self, hops):
        """
        A message we seal verifies as arc=pass at the next hop: otherwise
        our forwarding gains nothing at receivers that honour ARC.
        """
        first, _, txt = hops
        sealed = sealAs(MESSAGE, "forwarder.example", first, "mx.forwarder.example",
                        "spf=pass smtp.mailfrom=origin.example; arc=none")
        assert sealed.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256;")
        assert b"\r\nARC-Authentication-Results: i=1; mx.forwarder.example;" in sealed
        r = arc.verifyChain(sealed, txt)
        assert (r.result, r.instances, r.domains) == ("pass", 1, ("forwarder.example",))

    def test_tamperedFails(self, hops):
        """
        A body changed after sealing gives arc=fail: otherwise an ARC chain
        would vouch for altered mail.
        """
        first, _, txt = hops
        sealed = sealAs(MESSAGE, "forwarder.example", first, "mx.forwarder.example",
                        "arc=none")
        r = arc.verifyChain(sealed.replace(b"Forward me.", b"Forward mE."), txt)
        assert r.result == "fail"

    def test_secondHop(self, hops):
        """
        A second sealer extends a passing chain with i=2 and cv=pass, and
        the two-set chain verifies: otherwise mail forwarded twice loses
        its ARC evidence.
        """
        first, second, txt = hops
        once = sealAs(MESSAGE, "forwarder.example", first, "mx.forwarder.example",
                      "arc=none")
        assert arc.verifyChain(once, txt).result == "pass"
        twice = sealAs(once, "second.example", second, "mx.second.example", "arc=pass")
        assert twice.startswith(b"ARC-Seal: i=2; cv=pass;")
        r = arc.verifyChain(twice, txt)
        assert (r.result, r.instances) == ("pass", 2)
        assert r.domains == ("second.example", "forwarder.example")

    def test_noChain(self, hops):
        """An unsealed message is arc=none, not fail."""
        assert arc.verifyChain(MESSAGE, hops[2]).result == "none"

    def test_missingKeyFails(self, hops):
        """
        A seal whose key is not in DNS fails the chain: otherwise anyone
        could claim a chain from any domain.
        """
        first, _, _ = hops
        sealed = sealAs(MESSAGE, "forwarder.example", first, "mx.forwarder.example",
                        "arc=none")
        r = arc.verifyChain(sealed, FakeTXT({}))
        assert (r.result, r.temporary) == ("fail", False)

    def test_temporaryDNSError(self, hops):
        """
        A DNS timeout while fetching a seal's key is fail with temporary
        set: otherwise the caller cannot tell a DNS hiccup from a broken
        chain.
        """
        first, _, txt = hops
        sealed = sealAs(MESSAGE, "forwarder.example", first, "mx.forwarder.example",
                        "arc=none")
        flaky = FakeTXT(txt.records, temporary={"arc._domainkey.forwarder.example"})
        r = arc.verifyChain(sealed, flaky)
        assert (r.result, r.temporary) == ("fail", True)
        assert "no server answered" in r.reason

    def test_sealNeedsOurAuthenticationResults(self, hops):
        """
        Sealing without our A-R header is refused with a reason: otherwise
        we would seal with no results (or someone else's).
        """
        first, _, _ = hops
        message = b"Authentication-Results: other.example; spf=pass\r\n" + MESSAGE
        with pytest.raises(ValueError, match="mx.forwarder.example"):
            arc.seal(message, "forwarder.example", first.selector, first.privateKey,
                     "mx.forwarder.example")

    def test_sealCoversDKIMSignature(self, hops, tmp_path):
        """
        The ARC-Message-Signature covers the DKIM-Signature fields present
        (RFC 8617 §4.1.2), and the chain still verifies: otherwise the next
        hop cannot trust which signatures we saw.
        """
        first, _, txt = hops
        keys = dkimkeys.generateKeys(tmp_path, "origin.example", "s")
        signed = dkim.sign(MESSAGE, "origin.example", keys[1:]) + MESSAGE
        sealed = sealAs(signed, "forwarder.example", first, "mx.forwarder.example",
                        "dkim=pass header.d=origin.example; arc=none")
        ams = re.search(rb"ARC-Message-Signature:(.*?)\r\n(?! )", sealed, re.S).group(1)
        assert b"dkim-signature" in b" ".join(ams.split())
        assert arc.verifyChain(sealed, txt).result == "pass"
