"""
QRESYNC (RFC 7162 3.2): the SELECT/EXAMINE parameter, the VANISHED
modifier of UID FETCH, and the C{VANISHED (EARLIER)} responses they bring.
The server (L{pymailer.imap.server}) dispatches; what changed comes from
the store's L{pymailer.interfaces.IMailbox.changedSince}.

Trust: the parameters come from the client.  Sets may name up to 2^32 UIDs
(C{1:4294967295}): nothing here enumerates a client's range; gaps are
computed span by span against the mailbox's UIDs, and a seq-match-data
walk stops at the end of the mailbox.
"""

import bisect
import itertools
from dataclasses import dataclass

from pymailer.imap.parser import Atom, ParseError, SequenceSet, modSequence

# A VANISHED line is cut after about this many octets of UIDs (RFC 7162
# 3.2.10 lets a server send several; RFC 2683's 8,000-octet line advice).
LINE_OCTETS = 4000


@dataclass(frozen=True)
class Resync:
    """
    C{(QRESYNC (uidvalidity modseq [known-uids] [seq-match-data]))}, RFC
    7162 3.2.5.

    @ivar knownUids: a L{SequenceSet}, or C{None} (every UID).
    @ivar seqMatch: C{(known-sequence-set, known-uid-set)} as
        L{SequenceSet}s, or C{None}.
    """

    uidValidity: int
    modseq: int
    knownUids: SequenceSet = None
    seqMatch: tuple = None


def _uidSet(token):
    """A sequence set without C{*} (RFC 7162 7: known-uids and the two sets of seq-match-data)."""
    parsed = SequenceSet.parse(token)
    if parsed.hasStar():
        raise ParseError("* is not allowed in QRESYNC sets")
    return parsed


def parseSelectParameter(tokens):
    """
    The list after C{QRESYNC} in SELECT/EXAMINE (RFC 7162 7,
    C{qresync-param}).

    @return: a L{Resync}.
    @raise ParseError: malformed (the command gets BAD).
    """
    if not isinstance(tokens, list) or not 2 <= len(tokens) <= 4:
        raise ParseError("QRESYNC takes (uidvalidity modseq [known-uids] [seq-match-data])")
    validity = tokens[0]
    if not isinstance(validity, Atom) or not validity.isdigit() or not (
            0 < int(validity) < 2**32):
        raise ParseError("QRESYNC needs a UIDVALIDITY")
    # mod-sequence-value: zero is not one (RFC 7162 7).
    modseq = modSequence(tokens[1])
    knownUids = seqMatch = None
    rest = tokens[2:]
    if rest and not isinstance(rest[0], list):
        knownUids = _uidSet(rest.pop(0))
    if rest:
        match = rest.pop(0)
        if not isinstance(match, list) or len(match) != 2 or rest:
            raise ParseError("seq-match-data is (known-sequence-set known-uid-set)")
        seqMatch = (_uidSet(match[0]), _uidSet(match[1]))
        if _size(seqMatch[0]) != _size(seqMatch[1]):
            raise ParseError("seq-match-data sets differ in size")
    return Resync(int(validity), modseq, knownUids, seqMatch)


def _members(sequenceSet):
    """The numbers of a set in the order written (lazily: a range may be huge)."""
    return itertools.chain.from_iterable(
        range(lo, hi + 1) if lo <= hi else range(lo, hi - 1, -1)
        for lo, hi in sequenceSet.ranges)


def _size(sequenceSet):
    return sum(abs(hi - lo) + 1 for lo, hi in sequenceSet.ranges)


def confirmedUpTo(seqMatch, uids):
    """
    RFC 7162 3.2.5.2: where the client's message numbers and UIDs, pair by
    pair, agree with the mailbox, nothing at or below that UID was
    expunged since the client looked (its numbers would have moved).  The
    walk ends at the first pair that disagrees, at the latest past the
    end of the mailbox.

    @param uids: the mailbox's UIDs, ascending.
    @return: the highest UID so confirmed, or C{0}.
    """
    confirmed = 0
    for seq, uid in zip(*map(_members, seqMatch)):
        if seq > len(uids) or uids[seq - 1] != uid:
            break
        confirmed = max(confirmed, uid)
    return confirmed


def missing(spans, uids):
    """
    The spans of C{spans} (sorted, disjoint C{(lo, hi)}) holding none of
    the ascending C{uids}: what a client that knew C{spans} must forget.
    """
    out = []
    for lo, hi in spans:
        i = bisect.bisect_left(uids, lo)
        while lo <= hi:
            if i < len(uids) and uids[i] <= hi:
                if uids[i] > lo:
                    out.append((lo, uids[i] - 1))
                lo = uids[i] + 1
                i += 1
            else:
                out.append((lo, hi))
                break
    return out


def spansOf(numbers):
    """Ascending ints as C{(lo, hi)} spans."""
    spans = []
    for n in numbers:
        if spans and spans[-1][1] + 1 == n:
            spans[-1] = (spans[-1][0], n)
        else:
            spans.append((n, n))
    return spans


def vanishedEarlier(spans):
    """
    C{* VANISHED (EARLIER) ...} lines for C{spans} (RFC 7162 3.2.10): no
    line when empty, more than one when long.
    """
    lines, pieces, size = [], [], 0
    for lo, hi in spans:
        piece = b"%d" % lo if lo == hi else b"%d:%d" % (lo, hi)
        if pieces and size + len(piece) > LINE_OCTETS:
            lines.append(b"* VANISHED (EARLIER) " + b",".join(pieces))
            pieces, size = [], 0
        pieces.append(piece)
        size += len(piece) + 1
    if pieces:
        lines.append(b"* VANISHED (EARLIER) " + b",".join(pieces))
    return lines


def vanishedSince(changes, selected, within, largest, seqMatch=None):
    """
    The UIDs a client that knew C{within} (a L{SequenceSet}, or C{None}
    for every UID) should forget, from C{changes} (the answer of
    L{pymailer.interfaces.IMailbox.changedSince}) and the session's view
    L{pymailer.imap.selected.Selected}: those the store says were expunged
    since, and none the session still shows (those come as VANISHED when
    the session tells them).  When the store's history no longer reaches
    back (C{changes.since} is C{None}), every UID of C{within} not in the
    mailbox (RFC 7162 3.2.5.2 allows the superset), above those that
    C{seqMatch} (see L{confirmedUpTo}) shows were not expunged.

    @param largest: the highest UID C{*} and "every UID" stand for.
    @return: sorted, disjoint C{(lo, hi)} spans.
    """
    uids = selected.uids
    if changes.since is None:
        spans = within.spans(largest) if within is not None else [(1, largest)]
        floor = confirmedUpTo(seqMatch, uids) if seqMatch is not None else 0
        return missing([(max(lo, floor + 1), hi) for lo, hi in spans if hi > floor], uids)

    def shown(uid):
        i = bisect.bisect_left(uids, uid)
        return i < len(uids) and uids[i] == uid

    return spansOf(u for u in changes.vanished if not shown(u) and (
        within is None or within.contains(u, largest)))
