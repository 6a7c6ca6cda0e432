"""
ARC sealing (RFC 8617) of the copies our aliases forward to other domains,
so that the next hop can trust the SPF and DKIM results we saw even though
forwarding breaks SPF (a new client address) and DMARC with it.

The forwarded copy already carries our Authentication-Results (with its
C{arc=} result, which becomes the seal's C{cv=}); we seal with the RSA key
of the alias's domain, when it has one.  Blocking: called by the local
delivery agent in its thread.
"""

from twisted.logger import Logger

from pymailer.policy import arc, dkimkeys
from pymailer.policy.pieces import MAX_CRYPTO_SIZE


class ForwardSealer:
    log = Logger()

    def __init__(self, config, authservId):
        self.config = config
        self.authservId = authservId

    def seal(self, domain, prefix, source, size):
        """
        @param prefix: our headers on top of the message (Authentication-Results).
        @param source: the message (a binary file, read from where it is).
        @return: the ARC set (CRLF-ended header lines), or C{b""} when the
            domain has no RSA key, the message is too large, or has none of
            our results to seal (mail our own users submitted).
        """
        if size > MAX_CRYPTO_SIZE or not prefix.startswith(b"Authentication-Results:"):
            return b""
        try:
            keys = [k for k in dkimkeys.signingKeys(self.config, domain)
                    if k.algorithm == "rsa-sha256"]
        except ValueError as e:
            self.log.warn("no ARC seal for {domain}: {e}", domain=domain, e=e)
            return b""
        if not keys:
            return b""
        data = prefix + source.read()
        try:
            return arc.seal(data, domain, keys[0].selector, keys[0].privateKey, self.authservId)
        except ValueError as e:
            self.log.warn("no ARC seal for {domain}: {e}", domain=domain, e=e)
            return b""
