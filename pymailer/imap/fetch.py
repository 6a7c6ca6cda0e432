"""
FETCH (RFC 3501 6.4.5, 7.4.2; RFC 7162 3.1.4): the data items a client
asks for, parsed, and one message's response built from its octets.

Response pieces are C{bytes}, or L{Range}s for sections too large to hold
in memory (the protocol streams them from the file).
"""

import re

from pymailer.imap import binary, objectid, search
from pymailer.message.mime import MultipartBody as _Concat, Part
from pymailer.imap.parser import (
    Atom, ParseError, String, astring, formatValue, isAtom, modSequence, number, tokenize,
)
from pymailer.imap.selected import formatFlags

STREAM_THRESHOLD = 256 * 1024    # sections above this are streamed from the store


class Range:
    """
    A part of a message to stream: C{length} octets at C{offset} of
    C{file}, an L{pymailer.interfaces.IMessageContent} of its own on the
    message as it was opened (a flag change or an expunge meanwhile does
    not disturb it).
    """

    def __init__(self, file, offset, length):
        self.file, self.offset, self.length = file, offset, length


class FetchItem:
    def __init__(self, name, needsContent=False, setsSeen=False, section=None,
                 label=None, partial=None, needsSummary=False):
        self.name = name
        self.needsContent = needsContent
        # Answered from the store's summary (L{pymailer.message.summary}),
        # without opening the message.
        self.needsSummary = needsSummary
        self.setsSeen = setsSeen
        self.section = section
        self.label = label
        self.partial = partial


def fetchPieces(selected, seq, u, items, data, reopen, extras=(), summary=None):
    """
    The response to FETCH for one message, as pieces.

    @param selected: the session's L{pymailer.imap.selected.Selected}.
    @param items: the L{FetchItem}s asked for.
    @param data: the message octets (C{bytes} or a
        L{pymailer.message.mime.ContentView}), or C{None} if no item needs
        them.
    @param reopen: returns a new L{pymailer.interfaces.IMessageContent} on
        the message, for the sections too big to hold in the response (see
        L{Range}).
    @param extras: names of items the response must carry even if not
        asked for (C{FLAGS} after an implicit \\Seen; C{UID} and C{MODSEQ}
        once CONDSTORE is enabled, RFC 7162 3.1).
    @param summary: the message's
        L{pymailer.message.summary.MessageSummary}, for ENVELOPE, BODY and
        BODYSTRUCTURE (parsed from C{data} if C{None}).
    """
    info = selected.infos.get(u)
    part = None
    items = list(items) + [FetchItem(name) for name in extras
                           if not any(i.name == name for i in items)]
    pieces = [b"* %d FETCH (" % seq]
    for n, item in enumerate(items):
        if n:
            pieces.append(b" ")
        name = item.name
        if name == "UID":
            pieces.append(b"UID %d" % u)
        elif name == "FLAGS":
            pieces.append(b"FLAGS " + formatFlags(selected.shownFlags(u)))
        elif name == "MODSEQ":
            pieces.append(b"MODSEQ (%d)" % selected.modseq.get(u, 0))
        elif name == "INTERNALDATE":
            pieces.append(b'INTERNALDATE "%s"' % search.formatInternalDate(
                info.internalDate if info else 0).encode())
        elif name == "SAVEDATE":
            # RFC 8514 4.2: NIL where the store cannot tell.
            saved = info.saveDate if info else None
            pieces.append(b"SAVEDATE NIL" if saved is None else
                          b'SAVEDATE "%s"' % search.formatInternalDate(saved).encode())
        elif name in objectid.FETCH_ITEMS:
            pieces.append(objectid.fetchPiece(name, selected, u))
        elif name == "RFC822.SIZE":
            pieces.append(b"RFC822.SIZE %d" % (len(data) if data is not None else info.size))
        elif name in ("ENVELOPE", "BODYSTRUCTURE", "BODY") and summary is not None:
            pieces.append(name.encode() + b" " + getattr(summary, name.lower()))
        elif _wholeMessage(item):
            # BODY[], RFC822: the octets as stored, no MIME parse.
            pieces += _sectionPieces(item, None, data, reopen)
        else:
            if part is None:
                part = Part(data, 0, len(data))
            if name in ("BINARY", "BINARY.SIZE"):
                pieces += binary.binaryPieces(item, part, data, reopen)
            elif name in ("ENVELOPE", "BODYSTRUCTURE", "BODY"):
                value = (part.envelope() if name == "ENVELOPE"
                         else part.bodystructure(name == "BODYSTRUCTURE"))
                pieces.append(name.encode() + b" " + formatStructure(value))
            else:
                pieces += _sectionPieces(item, part, data, reopen)
    pieces.append(b")\r\n")
    return joinPieces(pieces)


def joinPieces(pieces, limit=65536):
    """
    C{pieces} with each run of adjacent C{bytes} joined (one copy, not one
    per piece), a run closed once it holds C{limit} octets; L{Range}s as
    they are.
    """
    merged, run, size = [], [], 0
    for p in pieces:
        if isinstance(p, bytes):
            run.append(p)
            size += len(p)
            if size < limit:
                continue
        if run:
            merged.append(run[0] if len(run) == 1 else b"".join(run))
            run, size = [], 0
        if not isinstance(p, bytes):
            merged.append(p)
    if run:
        merged.append(run[0] if len(run) == 1 else b"".join(run))
    return merged


def _wholeMessage(item):
    """Whether C{item} is the whole message: C{BODY[]}, C{BODY.PEEK[]}, C{RFC822}."""
    return item.name in ("BODY[]", "RFC822") and item.section[1] == "" and not item.section[0]


def _sectionPieces(item, part, data, reopen):
    """C{BODY[section]<partial>} and C{RFC822*}: the label and literal."""
    name = item.name
    numbers, spec, fields = item.section
    if name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        label = name.encode()
        numbers, spec = [], {"RFC822": "", "RFC822.HEADER": "HEADER",
                             "RFC822.TEXT": "TEXT"}[name]
    else:
        label = item.label
    if part is None:  # the whole message (L{_wholeMessage})
        start, end = 0, len(data)
    else:
        start, end = _sectionRange(part, numbers, spec, fields, data)
    content = None
    if start is None:
        content = part.section(numbers, spec, fields)
        start, end = 0, len(content)
    if item.partial is not None:
        offset, length = item.partial
        s = min(start + offset, end)
        e = min(s + length, end)
        label += b"<%d>" % offset
    else:
        s, e = start, end
    head = label + b" {%d}\r\n" % (e - s)
    if content is not None:
        return [head, bytes(content[s:e])]
    if e - s > STREAM_THRESHOLD:
        return [head, Range(reopen(), s, e - s)]
    return [head, bytes(data[s:e])]


def parseModifiers(token, name):
    """
    A FETCH or STORE modifier list of RFC 7162 (C{(CHANGEDSINCE n)},
    C{(UNCHANGEDSINCE n)}): the number, or L{ParseError}.
    """
    if (not isinstance(token, list) or len(token) != 2
            or not isAtom(token[0], name.encode())):
        raise ParseError(f"expected ({name} mod-sequence)")
    # CHANGEDSINCE takes mod-sequence-value (non-zero), UNCHANGEDSINCE
    # mod-sequence-valzer (RFC 7162 7, formal syntax).
    return modSequence(token[1], allowZero=(name == "UNCHANGEDSINCE"))


def _sectionRange(part, numbers, spec, fields, data):
    """C{(start, end)} of a section lying in C{data} as one range, else Nones."""
    if spec in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return None, None
    target = part.find(numbers)
    if target is None:
        return None, None
    if spec == "" and not numbers:
        return 0, len(data)
    if spec == "":
        return target.bodyStart, target.end
    if spec == "MIME":
        return (target.start, target.bodyStart) if numbers else (None, None)
    if numbers:
        if target.message is None:
            return None, None
        target = target.message
    if spec == "TEXT":
        return target.bodyStart, target.end
    if spec == "HEADER":
        return target.start, target.bodyStart
    return None, None


def formatStructure(value):
    if isinstance(value, _Concat):
        kids, rest = value[:value.parts], value[value.parts:]
        return (b"(" + b"".join(formatStructure(k) for k in kids) + b" "
                + b" ".join(formatStructure(v) for v in rest) + b")")
    if isinstance(value, list):
        return b"(" + b" ".join(formatStructure(v) for v in value) + b")"
    return formatValue(value)


_SECTION = re.compile(
    rb"(BODY|BODY\.PEEK)\[([^\]]*)\](?:<(\d{1,10})\.(\d{1,10})>)?$", re.I)
_MACROS = {
    b"ALL": [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE"],
    b"FAST": [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"],
    b"FULL": [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODY"],
}


def parseFetchItems(token, uid):
    if isinstance(token, Atom) and token.upper() in _MACROS:
        tokens = [Atom(t) for t in _MACROS[token.upper()]]
    elif isinstance(token, list):
        tokens = token
    else:
        tokens = [token]
    items = []
    if uid and not any(isAtom(t, b"UID") for t in tokens):
        items.append(FetchItem("UID"))
    for t in tokens:
        if not isinstance(t, Atom):
            raise ParseError("bad FETCH item")
        upper = t.upper()
        if upper in (b"UID", b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"MODSEQ",
                     b"SAVEDATE", b"EMAILID", b"THREADID"):
            items.append(FetchItem(upper.decode()))
        elif upper in (b"ENVELOPE", b"BODYSTRUCTURE", b"BODY"):
            items.append(FetchItem(upper.decode(), needsSummary=True))
        elif upper in (b"RFC822", b"RFC822.TEXT"):
            items.append(FetchItem(upper.decode(), True, True, ([], "", ())))
        elif upper == b"RFC822.HEADER":
            items.append(FetchItem(upper.decode(), True, False, ([], "HEADER", ())))
        elif upper.startswith(b"BINARY"):
            items.append(binary.parseItem(t))
        else:
            m = _SECTION.match(bytes(t))
            if m is None:
                raise ParseError(f"unknown FETCH item {t.decode('ascii', 'replace')[:40]}")
            kind = m[1].upper()
            numbers, spec, fields = _parseSection(m[2])
            label = b"BODY[" + _sectionLabel(m[2]) + b"]"
            partial = None
            if m[3] is not None:
                partial = (int(m[3]), int(m[4]))
                if partial[1] == 0:
                    raise ParseError("partial length must not be 0")
            items.append(FetchItem("BODY[]", True, kind == b"BODY", (numbers, spec, fields),
                                   label, partial))
    return items


def _sectionLabel(raw):
    tokens = tokenize([raw])
    out = []
    for t in tokens:
        if isinstance(t, list):
            out.append(b"(" + b" ".join(formatValue(x) if isinstance(x, String) else bytes(x).upper()
                                        for x in t) + b")")
        else:
            out.append(bytes(t).upper())
    return b" ".join(out)


def _parseSection(raw):
    tokens = tokenize([raw]) if raw else []
    if not tokens:
        return [], "", ()
    head = tokens[0]
    if not isinstance(head, Atom):
        raise ParseError("bad section")
    parts = bytes(head).upper().split(b".")
    numbers = []
    while parts and parts[0].isdigit():
        # section-part = nz-number *("." nz-number) (RFC 3501 9)
        numbers.append(number(Atom(parts.pop(0)), "section part", allowZero=False))
    spec = b".".join(parts).decode("ascii", "replace")
    if spec not in ("", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        raise ParseError("bad section")
    if spec == "MIME" and not numbers:
        raise ParseError("MIME needs a part number")
    fields = ()
    if spec.startswith("HEADER.FIELDS"):
        if len(tokens) != 2 or not isinstance(tokens[1], list) or not tokens[1]:
            raise ParseError("HEADER.FIELDS needs a list of names")
        fields = tuple(astring(f).lower() for f in tokens[1])
    elif len(tokens) != 1:
        raise ParseError("bad section")
    return numbers, spec, fields


_FROM_SESSION = frozenset({"UID", "FLAGS", "MODSEQ"})
_RECENT = frozenset({"\\Recent"})
_SESSION_ITEMS = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "MODSEQ": b"MODSEQ (%d)"}


def sessionFetchLines(selected, targets, items, extras=()):
    """
    The FETCH responses when every item is one the session holds (UID,
    FLAGS, MODSEQ): the lines L{fetchPieces} would give, as one C{bytes},
    each distinct flag list formatted once (C{UID FETCH 1:* (FLAGS)} on
    100,000 messages spent most of its time building them one by one).

    @return: C{None} if an item needs more than the session knows.
    """
    names = [i.name for i in items]
    names += [n for n in extras if n not in names]
    if not _FROM_SESSION.issuperset(names):
        return None
    # One %-template for every line, filled from columns: no list of parts
    # and no join per message.
    template = b"* %d FETCH (" + b" ".join(_SESSION_ITEMS[n] for n in names) + b")\r\n"
    seqs = [seq for seq, _ in targets]
    uids = [u for _, u in targets]
    columns = []
    for name in names:
        if name == "UID":
            columns.append(uids)
        elif name == "FLAGS":
            columns.append(_flagTexts(selected, uids))
        else:
            modseq = selected.modseq.get
            columns.append([modseq(u, 0) for u in uids])
    return b"".join([template % values for values in zip(seqs, *columns)])


def _flagTexts(selected, uids):
    """The formatted FLAGS of each of C{uids}, one C{bytes} per flag set."""
    flags, recent = selected.flags.get, selected.recent
    showRecent = selected.showRecent and recent
    formatted = {}
    texts = []
    append = texts.append
    empty = frozenset()
    for u in uids:
        # The store's frozensets are shared between messages (frozenset()
        # of one is itself); this session's STOREs leave sets.
        shown = frozenset(flags(u, empty))
        if showRecent and u in recent:
            shown = shown | _RECENT
        text = formatted.get(shown)
        if text is None:
            text = formatted[shown] = formatFlags(shown)
        append(text)
    return texts
