"""
SORT (RFC 5256 3), SORT=DISPLAY (RFC 5957) and ESORT (RFC 5267 3:
C{SORT RETURN (MIN MAX ALL COUNT SAVE)}), and what THREAD shares with
them: the search keys (L{pymailer.imap.search}) and the messages'
summaries (L{pymailer.message.summary}) read from the store, never by parsing
the messages per command.

CONTEXT=SORT and CONTEXT=SEARCH (RFC 5267 4, 5) are not offered: their
UPDATE results need the search re-evaluated after every change of the
mailbox for every open context, which is not cheap here.

Collation: i;ascii-casemap, RFC 5256's default (ASCII letters fold, other
characters compare by code point).  Ties go to the lower sequence number
(RFC 5256 3).

Trust: the criteria are client input, checked against the RFCs' lists;
sorting is done in the thread pool, so a large mailbox does not hold the
reactor.
"""

from pymailer.imap import esearch, objectid, search
from pymailer.imap.errors import CommandFailed
from pymailer.imap.parser import Atom, ParseError, isAtom

CAPABILITIES = (b"SORT", b"SORT=DISPLAY", b"ESORT", b"THREAD=ORDEREDSUBJECT",
                b"THREAD=REFERENCES")
SUMMARIES_KEPT_EXTRA = 1000  # expunged UIDs a session's cache may keep
_KEYS = frozenset({b"ARRIVAL", b"CC", b"DATE", b"FROM", b"SIZE", b"SUBJECT", b"TO",
                   b"DISPLAYFROM", b"DISPLAYTO"})


def fold(text):
    """i;ascii-casemap: ASCII letters folded, the rest by code point."""
    return text.encode("utf-8", "surrogatepass").lower()


def sentDate(info, summary):
    """RFC 5256 2.2: the Date field, else the internal date."""
    return summary.date if summary.date is not None else int(info.internalDate)


_KEY_FUNCTIONS = {
    b"ARRIVAL": lambda info, s: info.internalDate,
    b"CC": lambda info, s: fold(s.cc.mailbox),
    b"DATE": sentDate,
    b"FROM": lambda info, s: fold(s.sender.mailbox),
    b"SIZE": lambda info, s: info.size,
    b"SUBJECT": lambda info, s: fold(s.baseSubject),
    b"TO": lambda info, s: fold(s.to.mailbox),
    # RFC 5957 3: the display name, else the addr-spec.
    b"DISPLAYFROM": lambda info, s: fold(s.sender.display()),
    b"DISPLAYTO": lambda info, s: fold(s.to.display()),
}


def parseCriteria(token):
    """
    C{(REVERSE DATE SUBJECT)} -> C{[(b"DATE", True), (b"SUBJECT", False)]}.
    """
    if not isinstance(token, list) or not token:
        raise ParseError("SORT needs a list of sort criteria")
    criteria, reverse = [], False
    for item in token:
        if not isinstance(item, Atom):
            raise ParseError("bad sort criterion")
        name = item.upper()
        if name == b"REVERSE" and not reverse:
            reverse = True
            continue
        if name not in _KEYS:
            raise ParseError(f"unknown sort criterion {name.decode('ascii', 'replace')[:20]}")
        criteria.append((name, reverse))
        reverse = False
    if reverse:
        raise ParseError("REVERSE must precede a sort key")
    return criteria


def sortOrder(criteria, matched):
    """
    The positions of C{matched}'s messages (a L{Matched}, in sequence
    order) sorted by C{criteria}: one stable sort per key, the last key
    first (a stable sort keeps equal messages, reversed or not, in their
    earlier order, so ties end in sequence order).  Keys are lists of
    bytes and numbers, which the garbage collector does not track.
    """
    order = list(range(len(matched.uids)))
    for name, reverse in reversed(criteria):
        get = _KEY_FUNCTIONS[name]
        keys = [get(info, summary) for info, summary in zip(matched.infos, matched.summaries)]
        order.sort(key=keys.__getitem__, reverse=reverse)
    return order


class Matched:
    """
    The messages a search found, as columns in sequence order: C{seqs},
    C{uids}, C{modseqs}, C{infos} (L{pymailer.store.MessageInfo}) and
    C{summaries}.  Columns, not a tuple per message: a SORT of 10,000
    messages made tens of thousands of tuples, and the collector swept the
    whole heap for them.
    """

    def __init__(self, seqs, uids, modseqs, infos, summaries):
        self.seqs, self.uids, self.modseqs = seqs, uids, modseqs
        self.infos, self.summaries = infos, summaries

    def keep(self, positions):
        """Only the messages at C{positions} (all: this one)."""
        if len(positions) == len(self.uids):
            return self
        return Matched(*([column[i] for i in positions] for column in (
            self.seqs, self.uids, self.modseqs, self.infos)), None)


def summariesOf(selected, uids):
    """
    I{Blocking}: the sort fields of C{uids} (C{{uid: summary}}), from the
    session's cache, the rest from the store: a summary never changes for
    a UID, so a second SORT or THREAD reads only new messages.
    """
    cache = selected.summaries
    missing = [u for u in uids if u not in cache]
    if missing:
        cache.update(selected.mailbox.summaries(missing, structure=False))
    if len(cache) > len(uids) + SUMMARIES_KEPT_EXTRA:
        keep = set(uids)
        for u in [u for u in cache if u not in keep]:
            del cache[u]
    return cache


def parseCharset(token):
    """A SORT/THREAD charset (required there, RFC 5256 3), or C{NO}."""
    if token is None:
        raise ParseError("missing charset")
    charset = search.parseCharset(token)
    if charset is None:
        raise CommandFailed(search.BAD_CHARSET)
    return charset


def matchedWithSummaries(server, charset, tokens, saved):
    """
    The messages the search program C{tokens} finds, with their summaries:
    a C{Deferred} firing with C{(compiler, L{Matched})}, worked out in the
    thread pool.  C{ALL}, what clients send with SORT and THREAD, skips
    the search.
    """
    selected = server.selected
    compiler, predicate = search.compileFor(selected, charset, saved, tokens)
    if compiler.usesModSeq:
        server.condstore = True  # RFC 7162 3.1.5: an enabling command
    known = selected.infos
    if len(tokens) == 1 and isAtom(tokens[0], b"ALL"):
        candidates = None
        seqs = [seq for seq, u in enumerate(selected.uids, 1) if u in known]
        uids = [u for u in selected.uids if u in known]
    else:
        candidates = search.candidates(selected)
        seqs = [seq for seq, _, _, _ in candidates]
        uids = [info.uid for _, info, _, _ in candidates]
    infos = [known[u] for u in uids]
    modseqs = [selected.modseq.get(u, 0) for u in uids]

    def work():
        found = Matched(seqs, uids, modseqs, infos, None)
        if candidates is not None:
            emailIds = objectid.loadEmailIds(selected, uids) if compiler.usesEmailId else None
            hits = {u for _, u, _ in search.evaluate(
                candidates, predicate, selected.mailbox, emailIds)}
            found = found.keep([i for i, u in enumerate(uids) if u in hits])
        summaries = summariesOf(selected, uids)
        found = found.keep([i for i, u in enumerate(found.uids) if u in summaries])
        found.summaries = [summaries[u] for u in found.uids]  # not expunged meanwhile
        return compiler, found

    return server.account.run(work)


def command(server, tag, args, uid):
    """
    C{[UID] SORT [RETURN (options)] (criteria) charset search-key...}:
    C{* SORT} or, with RETURN, C{* ESEARCH} (RFC 5267 3.2: MIN and MAX are
    the first and last in sort order, ALL is in sort order).
    """
    try:
        options, args = esearch.parseReturn(list(args))
    except ParseError:
        server.searchResult = frozenset()  # RFC 5182 2.1: a failed SAVE empties $
        raise
    if options and esearch.SAVE in options:
        saved, server.searchResult = server.searchResult, frozenset()
    else:
        saved = server.searchResult
    if len(args) < 3:
        raise ParseError("SORT needs criteria, a charset and search keys")
    criteria = parseCriteria(args[0])
    charset = parseCharset(args[1])

    def answer(result):
        compiler, matched = result
        order = sortOrder(criteria, matched)
        numbers = matched.uids if uid else matched.seqs
        if options is None and not compiler.usesModSeq:
            server.sendLine(b"* SORT" + b"".join(b" %d" % numbers[i] for i in order))
            return
        found = [(numbers[i], matched.modseqs[i], matched.uids[i]) for i in order]
        if options is not None:
            return server._esearchAnswer(tag, uid, options, found, compiler.usesModSeq)
        server.sendLine(search.resultLine(b"SORT", found, compiler.usesModSeq))

    return matchedWithSummaries(server, charset, args[2:], saved).addCallback(answer)
