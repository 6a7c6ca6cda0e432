"""
Trace headers (RFC 5321 §4.4): the ``Received:`` line every hop adds, and
the ``Return-Path:`` the final delivery adds.  ``with`` per RFC 3848 and,
for SMTPUTF8 transactions, RFC 6531 §3.7.4 (the SMTP server names it).
"""

from email.utils import formatdate

# The last second's date text: formatdate with the local zone costs ~15 us,
# once per delivered message (issue 14); most messages share their second.
_lastStamp = (None, "")


def _dateOf(when):
    """RFC 5322 §3.3 date-time of C{when} (whole seconds), in the local zone."""
    global _lastStamp
    second = int(when)
    cached = _lastStamp
    if cached[0] != second:
        # One tuple, replaced whole: safe from any thread.
        cached = _lastStamp = (second, formatdate(second, localtime=True))
    return cached[1]


def receivedHeader(envelope, hostname, recipient=None):
    """@return: the C{Received:} header (CRLF-ended bytes) for our hop."""
    session = envelope.session
    fromPart = f"from {session.helo or 'unknown'}"
    if session.clientAddress:
        fromPart += f" ({session.clientHostname or 'unknown'} [{session.clientAddress}])"
    tls = ""
    if session.tlsVersion:
        tls = f"\r\n\t(using {session.tlsVersion} with cipher {session.tlsCipher})"
    stamp = _dateOf(envelope.receivedAt)
    forPart = f"\r\n\tfor <{recipient}>" if recipient else ""
    return (
        f"Received: {fromPart}{tls}\r\n"
        f"\tby {hostname} (pymailer) with {session.protocol} id {envelope.queueId}"
        f"{forPart}; {stamp}\r\n"
    ).encode("utf-8")


def policyHeaders(envelope):
    """What policy added at the end of data (Authentication-Results, ...)."""
    return envelope.headers.encode("utf-8")


def returnPath(envelope):
    return f"Return-Path: <{envelope.sender}>\r\n".encode("utf-8")


class PrefixedReader:
    """A binary file object reading C{prefix} and then C{source}."""

    def __init__(self, prefix, source):
        self.prefix = prefix
        self.source = source

    def read(self, n=-1):
        if self.prefix:
            if n < 0:
                data, self.prefix = self.prefix + self.source.read(), b""
                return data
            data, self.prefix = self.prefix[:n], self.prefix[n:]
            return data
        return self.source.read(n)

    def close(self):
        self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
