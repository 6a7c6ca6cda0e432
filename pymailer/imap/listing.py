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

from pymailer.store import INBOX, SPECIAL_USE

DELIMITER = "/"
_WILDCARDS = ("*", "%")


def patternMatcher(reference, pattern):
    """
    A function telling whether a mailbox name is one that C{reference
    pattern} names.

    Not a regular expression: C{*%*%*%...>} turned into C{.*[^/]*.*...}
    backtracks exponentially on a name that does not match (25 s for one
    LIST, the reactor stalled for every client).  This walks the name once,
    keeping the set of pattern positions reached as the bits of one integer
    (a bit-parallel NFA, as in Shift-And): each character of the name costs a
    few integer operations whatever the pattern, so a name costs
    C{len(name)} steps of at most C{len(pattern)} bits each.
    """
    full = pattern if pattern.startswith(DELIMITER) else reference + pattern
    head, sep, rest = full.partition(DELIMITER)
    if head.upper() == INBOX:  # INBOX is case-insensitive (RFC 3501 5.1)
        full = INBOX + sep + rest
    tokens = []
    for c in full:
        if c in _WILDCARDS and tokens and tokens[-1] in _WILDCARDS:
            # "*%", "%*" and "**" all match what "*" does; "%%" what "%" does.
            if c == "*":
                tokens[-1] = "*"
            continue
        tokens.append(c)
    if not any(t in _WILDCARDS for t in tokens):
        literal = "".join(tokens)
        return lambda name: name == literal
    # Bit i set: "the name so far matches tokens[:i]".  A wildcard at i may
    # stay at i (it eats the character) or be skipped (it matches nothing).
    star = percent = 0
    literal = {}
    for i, t in enumerate(tokens):
        if t == "*":
            star |= 1 << i
        elif t == "%":
            percent |= 1 << i
        else:
            literal[t] = literal.get(t, 0) | 1 << i
    wild = star | percent
    accept = 1 << len(tokens)
    literals = len(tokens) - bin(wild).count("1")

    def skipWildcards(states):
        # Runs of wildcards were merged, so one skip reaches past each.
        return states | (states & wild) << 1

    initial = skipWildcards(1)

    def matches(name):
        if len(name) < literals:  # every literal character needs its own
            return False
        states = initial
        for c in name:
            stay = states & (star if c == DELIMITER else wild)
            states = skipWildcards(stay | (states & literal.get(c, 0)) << 1)
            if not states:
                return False
        return bool(states & accept)

    return matches


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
    matches = patternMatcher(reference, pattern)
    existing = set(names)
    above = parents(names)
    entries = []
    for name in _ordered(existing | above):
        if not matches(name):
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
    matches = patternMatcher(reference, pattern)
    candidates = set(subscribed)
    if pattern.endswith("%"):
        candidates |= parents(subscribed)
    existing = set(names)
    return [(name, [] if name in subscribed and name in existing else [b"\\Noselect"])
            for name in _ordered(candidates) if matches(name)]
