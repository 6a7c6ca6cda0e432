"""
RFC 8601 Authentication-Results: writing ours, and removing anyone else's
that claims to be ours.

§5: a receiver must not trust an Authentication-Results field carrying its
own authserv-id that it did not add itself; it is removed as the message
arrives (a DKIM signature that covered it breaks, which §5 accepts).
"""

import re

from pymailer.policy.decision import Policy

_COMMENT = re.compile(rb"\([^()]*\)")


def authenticationResults(authservId, results):
    """@return: the header field (CRLF-ended bytes) for C{results}."""
    parts = [authservId]
    for r in results:
        text = f"{r.method}={r.result}"
        if r.reason:
            text += f" ({_commentSafe(r.reason)})"
        for name, value in r.properties:
            text += f" {name}={_value(value)}"
        parts.append(text)
    if len(parts) == 1:
        parts.append("none")
    return ("Authentication-Results: " + ";\r\n\t".join(parts) + "\r\n").encode("utf-8")


def _commentSafe(text):
    return re.sub(r"[()\\\r\n]", " ", text)


def _value(value):
    # RFC 8601 §2.2: pvalue is a value (token or quoted-string) or an address.
    if re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-./=?^_`{|}~@]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def claimedAuthservId(field):
    """
    The authserv-id an Authentication-Results field (bytes, with its name)
    claims, lower-cased, or C{None} if it is not one.
    """
    name, sep, value = field.partition(b":")
    if not sep or name.strip().lower() != b"authentication-results":
        return None
    value = re.sub(rb"\s+", b" ", value)
    while True:
        stripped = _COMMENT.sub(b" ", value)
        if stripped == value:
            break
        value = stripped
    token = value.strip().split(b";", 1)[0].strip().split(b" ", 1)[0]
    return token.strip(b'"').decode("utf-8", "replace").lower()


class ForgedResultsFilter(Policy):
    """Drops incoming Authentication-Results fields that claim our id."""

    name = "authentication-results"

    def __init__(self, authservId):
        self.authservId = authservId.lower()

    def keepHeader(self, facts, field):
        # Asked for every field of every message: most are told apart by
        # their first letter (anything else, white space first, is looked at).
        first = field[:1]
        if first.isalpha() and first not in (b"A", b"a"):
            return True
        return claimedAuthservId(field) != self.authservId
