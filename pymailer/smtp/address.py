"""
Parsing the arguments of MAIL FROM and RCPT TO (RFC 5321 §4.1.2, §4.1.1.2-3),
with UTF-8 addresses per RFC 6531 §3.3.

Trusts nothing: the text comes straight from the client.  Source routes
(``<@a.test:u@b.test>``) are accepted and ignored as RFC 5321 §C asks, so the
route cannot be used to relay.
"""

import re

from pymailer.smtp.reply import SMTPReply

# atext of RFC 5322 §3.2.3, widened to UTF-8 by RFC 6531 §3.3.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"'
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
_ROUTE = rf"(?:@{_DOMAIN}(?:,@{_DOMAIN})*:)?"
_MAILBOX = rf"(?P<local>{_DOT_STRING}|{_QUOTED})@(?P<domain>{_DOMAIN}|{_LITERAL})"
_PATH = re.compile(rf"<{_ROUTE}{_MAILBOX}>")
_POSTMASTER = re.compile(r"<postmaster>", re.I)
_PARAM = re.compile(r"(?P<key>[A-Za-z0-9][A-Za-z0-9\-]*)(?:=(?P<value>[^= \x00-\x1f]+))?")


def parsePathCommand(text, keyword, allowNull, allowPostmaster=False):
    """
    Parse ``FROM:<path> params`` or ``TO:<path> params``.

    @param text: the decoded command argument.
    @return: C{(address, params)}: the address (C{""} for the null path,
        C{"postmaster"} for RCPT TO:<Postmaster>) and a C{dict} of the
        upper-cased ESMTP parameter names to their values (or C{None}).
    @raise SMTPReply: 501 on bad syntax.
    """
    head, sep, rest = text.partition(":")
    if not sep or head.strip().upper() != keyword:
        raise SMTPReply(501, "5.5.4", f"Syntax: {keyword}:<address>")
    rest = rest.lstrip(" ")
    if allowNull and rest.startswith("<>"):
        address, paramText = "", rest[2:]
    elif allowPostmaster and _POSTMASTER.match(rest):
        address, paramText = "postmaster", rest[len("<postmaster>"):]
    else:
        m = _PATH.match(rest)
        if m is None:
            raise SMTPReply(501, "5.1.3", "Bad address syntax")
        address = m.group("local") + "@" + m.group("domain")
        paramText = rest[m.end():]
    if paramText and not paramText.startswith(" "):
        raise SMTPReply(501, "5.1.3", "Bad address syntax")
    if len(address) > 320:
        raise SMTPReply(501, "5.1.3", "Address too long")
    return address, parseParams(paramText)


def parseParams(text):
    params = {}
    for word in text.split():
        m = _PARAM.fullmatch(word)
        if m is None:
            raise SMTPReply(501, "5.5.4", f"Bad parameter syntax: {word[:40]}")
        params[m.group("key").upper()] = m.group("value")
    return params


def unquoteLocalPart(address):
    """
    C{"john.doe"@x} -> C{john.doe@x}: the canonical form (RFC 5321 §4.1.2)
    when the quoting was not needed; otherwise unchanged.
    """
    local, _, domain = address.rpartition("@")
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if re.fullmatch(_DOT_STRING, inner):
            return inner + "@" + domain
    return address
