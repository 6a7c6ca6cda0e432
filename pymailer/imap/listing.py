"""
LIST and LSUB (RFC 3501 6.3.8, 6.3.9) over a user's mailbox names: the
wildcards C{*} (anything) and C{%} (anything but the delimiter C{/}), and
the attributes of each answer.

A nested mailbox C{a/b} can exist without C{a} (CREATE a/b where the store
makes no parent, or another tool's Maildir++ folder C{.a.b}).  Such a level
of the hierarchy is listed as C{\\Noselect \\HasChildren} when the pattern
matches it (RFC 3501 6.3.8: C{LIST "" %} must show C{a}, or a client that
walks the tree level by level never finds C{a/b}).  LSUB does the same for
C{%} only (6.3.9).
"""

import re

from pymailer.store import INBOX, SPECIAL_USE


def patternRegex(reference, pattern):
    """The regular expression matching the names C{reference pattern} names."""
    full = pattern if pattern.startswith("/") else reference + pattern
    head, sep, rest = full.partition("/")
    if head.upper() == INBOX:  # INBOX is case-insensitive (RFC 3501 5.1)
        full = INBOX + sep + rest
    return re.compile("".join(
        ".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in full), re.S)


def parents(names):
    """Every level of the hierarchy above some of C{names}."""
    out = set()
    for name in names:
        parts = name.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return out


def _ordered(names):
    return sorted(names, key=lambda n: (n != INBOX, n))


def listEntries(names, reference, pattern):
    """LIST: C{[(name, [attribute bytes])]} for the existing C{names}."""
    regex = patternRegex(reference, pattern)
    existing = set(names)
    above = parents(names)
    entries = []
    for name in _ordered(existing | above):
        if not regex.fullmatch(name):
            continue
        if name not in existing:
            entries.append((name, [b"\\Noselect", b"\\HasChildren"]))
            continue
        attrs = [b"\\HasChildren" if name in above else b"\\HasNoChildren"]
        if name in SPECIAL_USE:
            attrs.append(SPECIAL_USE[name].encode())
        entries.append((name, attrs))
    return entries


def lsubEntries(subscribed, names, reference, pattern):
    """
    LSUB: the subscribed names that match; those that do not exist (any
    more: RFC 3501 6.3.6 keeps them) are C{\\Noselect}.
    """
    regex = patternRegex(reference, pattern)
    candidates = set(subscribed)
    if pattern.endswith("%"):
        candidates |= parents(subscribed)
    existing = set(names)
    return [(name, [] if name in subscribed and name in existing else [b"\\Noselect"])
            for name in _ordered(candidates) if regex.fullmatch(name)]
