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

from dataclasses import dataclass

from pymailer.imap import status
from pymailer.imap.errors import CommandFailed
from pymailer.imap.parser import Atom, ParseError, astring, isAtom
from pymailer.store import INBOX, SPECIAL_USES, specialUseOf

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


def levelsShown(missing, existing, matches):
    """
    The parents in C{missing} (not mailboxes themselves) that LIST shows:
    RFC 9051 6.3.9.3 (RFC 5258 3) lists a name that is not selected only
    if some mailbox below it is and does not match the pattern, so C{%}
    shows C{Fruit} for C{Fruit/Apple} and C{*}, which lists C{Fruit/Apple}
    itself, does not.
    """
    return {p for p in missing
            if any(n.startswith(p + "/") and not matches(n) for n in existing)}


def _ordered(names):
    return sorted(names, key=lambda n: (n != INBOX, n))


def _uses(uses, names):
    """The store's special uses, or (not given) the standard folders' by name."""
    return uses if uses is not None else {n: specialUseOf(n) for n in names}


def _useAttributes(uses, name):
    return [use.encode() for use in sorted(uses.get(name, ()))]


def listEntries(names, reference, pattern, uses=None, rev2=False):
    """
    LIST: C{[(name, [attribute bytes])]} for the existing C{names};
    C{uses}: the store's L{IMailStore.specialUses}; for an IMAP4rev2
    session (C{rev2}), a parent that does not exist only where a child of
    it does not match (L{levelsShown}).
    """
    uses = _uses(uses, names)
    matches = patternMatcher(reference, pattern)
    existing = set(names)
    above = parents(names)
    shown = levelsShown(above - existing, existing, matches) if rev2 else above
    entries = []
    for name in _ordered(existing | shown):
        if not matches(name):
            continue
        if name not in existing:
            entries.append((name, [b"\\Noselect", b"\\HasChildren"]))
            continue
        attrs = [b"\\HasChildren" if name in above else b"\\HasNoChildren"]
        entries.append((name, attrs + _useAttributes(uses, name)))
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


# -- LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154)

_SELECTION = (b"SUBSCRIBED", b"REMOTE", b"RECURSIVEMATCH", b"SPECIAL-USE")
_RETURN = (b"SUBSCRIBED", b"CHILDREN", b"SPECIAL-USE", b"STATUS")


@dataclass(frozen=True)
class ListRequest:
    """A LIST command's parts, raw names still in modified UTF-7."""
    selection: frozenset
    reference: bytes
    patterns: tuple
    returns: frozenset
    statusItems: tuple  # RETURN (STATUS (...)) items, or ()
    extended: bool      # any RFC 5258 syntax: answer with its attributes

    @property
    def subscribedOnly(self):
        return b"SUBSCRIBED" in self.selection

    @property
    def specialUseOnly(self):
        return b"SPECIAL-USE" in self.selection


def parseList(args):
    """
    C{LIST [(selection)] reference (pattern | (patterns)) [RETURN (options)]}
    (RFC 5258 6).  BAD for what the RFC calls a syntax error, including
    RECURSIVEMATCH alone (3.1: it only modifies another option).
    """
    args = list(args)
    selection, extended = set(), False
    if args and isinstance(args[0], list):
        extended = True
        selection = _options(args.pop(0), _SELECTION, "selection")
        if b"RECURSIVEMATCH" in selection and not selection - {b"RECURSIVEMATCH", b"REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another selection option")
    returns, statusItems = set(), ()
    if len(args) == 4 and isAtom(args[2], b"RETURN") and isinstance(args[3], list):
        extended = True
        options = list(args.pop(3))
        args.pop(2)
        for i, option in enumerate(options):
            if isAtom(option, b"STATUS") and i + 1 < len(options) \
                    and isinstance(options[i + 1], list):
                statusItems = tuple(status.parseItems(options.pop(i + 1)))
                break
        returns = _options(options, _RETURN, "return")
    if len(args) != 2:
        raise ParseError("LIST needs a reference and a pattern")
    reference = astring(args[0], "reference")
    if isinstance(args[1], list):
        extended = True
        patterns = tuple(astring(p, "pattern") for p in args[1])
        if not patterns:
            raise ParseError("LIST needs a pattern")
    else:
        patterns = (astring(args[1], "pattern"),)
    if b"SUBSCRIBED" in selection:
        returns.add(b"SUBSCRIBED")  # RFC 5258 3.1: implied
    return ListRequest(frozenset(selection), reference, patterns, frozenset(returns),
                       statusItems, extended)


def _options(tokens, known, what):
    options = set()
    for t in tokens:
        if not isinstance(t, Atom) or t.upper() not in known:
            raise ParseError(f"unknown LIST {what} option")
        options.add(t.upper())
    return options


def extendedEntries(request, names, subscribed, reference, patterns, uses=None):
    """
    LIST with RFC 5258 options: C{[(name, [attribute bytes], childInfo)]},
    C{childInfo} the CHILDINFO tags (RFC 5258 3.5) of a name listed only
    because, with RECURSIVEMATCH, some mailbox below it was selected.
    C{reference} and C{patterns} are decoded; C{uses} as for L{listEntries}.
    """
    uses = _uses(uses, names)
    matchers = [patternMatcher(reference, p) for p in patterns]

    def matches(name):
        return any(m(name) for m in matchers)

    existing, subscribed = set(names), set(subscribed)
    above = parents(names)
    if request.subscribedOnly or request.specialUseOnly:
        chosen = set(existing | subscribed) if request.subscribedOnly else set(existing)
        tags = []
        if request.subscribedOnly:
            chosen &= subscribed
            tags.append(b'"SUBSCRIBED"')
        if request.specialUseOnly:
            chosen = {n for n in chosen if uses.get(n)}
            tags.append(b'"SPECIAL-USE"')
    else:
        chosen, tags = existing | levelsShown(above - existing, existing, matches), []
    recursive = b"RECURSIVEMATCH" in request.selection
    extra = parents(chosen) - chosen if recursive else set()
    entries = []
    for name in _ordered(chosen | extra):
        if not matches(name):
            continue
        if name in existing:
            attrs = [b"\\HasChildren" if name in above else b"\\HasNoChildren"]
            attrs += _useAttributes(uses, name)
        else:
            # RFC 5258 3: \NonExistent implies \Noselect; both are said
            # for a client that only knows RFC 3501's.
            attrs = [b"\\NonExistent", b"\\Noselect"]
            if name in above:
                attrs.append(b"\\HasChildren")
        if b"SUBSCRIBED" in request.returns and name in subscribed:
            attrs.append(b"\\Subscribed")
        entries.append((name, attrs, tags if name in extra else []))
    return entries


def createUses(parameters):
    """
    The special uses of C{CREATE name (USE (attrs))} (RFC 6154 3): any of
    L{SPECIAL_USES}, for any folder.  C{\\All} and C{\\Flagged} would be
    virtual mailboxes, which the store does not keep, and other attributes
    are not uses: C{NO [USEATTR]}, before anything is created (RFC 6154 3).

    @return: the attributes as C{str}s.
    @raise ParseError: not C{(USE (attributes))}.
    """
    if (not isinstance(parameters, list) or len(parameters) != 2
            or not isAtom(parameters[0], b"USE") or not isinstance(parameters[1], list)
            or not all(isinstance(a, Atom) and a.startswith(b"\\") for a in parameters[1])):
        raise ParseError("CREATE takes only (USE (special-use attributes))")
    wanted = [a.decode("ascii", "replace") for a in parameters[1]]
    try:
        specialUseOf("", wanted)
    except ValueError:
        raise CommandFailed("[USEATTR] Only %s can be given to a folder" % " ".join(
            sorted(SPECIAL_USES))) from None
    return wanted
