"""
ESEARCH (RFC 4731) and SEARCHRES (RFC 5182): C{SEARCH RETURN (...)} result
options, the C{* ESEARCH} response, and the saved result C{$}.

The saved result is kept as a set of UIDs, not sequence numbers: RFC 5182
2.1 says it is a set of messages that loses the ones expunged, and a UID
names a message for the life of the selection.  C{$} is then turned into
sequence numbers or UIDs of the messages still there when a command uses it.

Trust: the options are client input, checked against the RFC's list; the
saved set only ever holds UIDs the server found.
"""

from pymailer.imap.parser import Atom, ParseError, SequenceSet, formatSet, isAtom

SAVED = b"$"
MIN, MAX, COUNT, ALL, SAVE = b"MIN", b"MAX", b"COUNT", b"ALL", b"SAVE"
_OPTIONS = (MIN, MAX, COUNT, ALL, SAVE)


def parseReturn(args):
    """
    C{SEARCH [RETURN (options)] ...}: the result options (a frozenset, or
    C{None} for a plain SEARCH answered with C{* SEARCH}) and the rest.
    """
    if not args or not isAtom(args[0], b"RETURN"):
        return None, args
    if len(args) < 2 or not isinstance(args[1], list):
        raise ParseError("RETURN needs a list of result options")
    options = set()
    for option in args[1]:
        if not isinstance(option, Atom) or option.upper() not in _OPTIONS:
            raise ParseError("unknown SEARCH result option")
        options.add(option.upper())
    # RFC 4731 3.1: RETURN () means RETURN (ALL).
    return frozenset(options or {ALL}), args[2:]


def toSave(options, found):
    """
    RFC 5182 2.4: with MIN and/or MAX and neither ALL nor COUNT, only the
    minimum/maximum is saved; otherwise every message found.  C{found} are
    UIDs in ascending order.
    """
    if not found or ALL in options or COUNT in options or not options & {MIN, MAX}:
        return set(found)
    return {u for option, u in ((MIN, found[0]), (MAX, found[-1])) if option in options}


def esearchResponse(tag, uid, options, found):
    """
    The C{* ESEARCH} line for C{found}, C{[(number, modseq)]} ascending, or
    C{None} when SAVE is the only option (RFC 5182 2.1: no response).
    C{modseq} is C{None} unless the search used MODSEQ (RFC 7162 3.1.5:
    the highest mod-sequence of the messages returned).
    """
    if options == {SAVE}:
        return None
    line = b'* ESEARCH (TAG "%s")' % tag
    if uid:
        line += b" UID"
    reported = found
    if found:
        if MIN in options:
            line += b" MIN %d" % found[0][0]
        if MAX in options:
            line += b" MAX %d" % found[-1][0]
        if ALL not in options and COUNT not in options:
            reported = [f for f in (found[0], found[-1])]
    if ALL in options and found:
        line += b" ALL " + formatSet([n for n, _ in found])
    if COUNT in options:
        line += b" COUNT %d" % len(found)
    modseqs = [m for _, m in reported if m is not None]
    if modseqs:
        line += b" MODSEQ %d" % max(modseqs)
    return line


def resolveSaved(saved, uids, uid):
    """
    C{$} as a L{SequenceSet} over the selected mailbox's C{uids} (ascending):
    the saved messages still there, as UIDs or sequence numbers.
    """
    if uid:
        values = [u for u in uids if u in saved]
    else:
        values = [s for s, u in enumerate(uids, 1) if u in saved]
    return SequenceSet([(v, v) for v in values])


def parseSet(token, saved, uids, uid):
    """A sequence set, where C{$} (RFC 5182 2.1) is the saved result."""
    if token == SAVED:
        return resolveSaved(saved, uids, uid)
    return SequenceSet.parse(token)
