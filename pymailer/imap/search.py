"""
SEARCH keys (RFC 3501 6.4.4) compiled into a predicate over one message.

Strings are matched case-insensitively as substrings (RFC 3501 says so),
after decoding RFC 2047 encoded words in headers and the transfer encoding
of text parts, so a search for "Grüße" finds what the user sees.  Only
C{US-ASCII} and C{UTF-8} charsets are accepted (others: C{NO [BADCHARSET]}).
"""

import calendar
import datetime
import email
import email.header
import email.policy
import email.utils
import re
import time

from pymailer.message.stdlib import parseMessage
from pymailer.message.mime import parseAddressList, parseHeader
from pymailer.message.words import decodeEncodedWords
from pymailer.imap.objectid import parseObjectId
from pymailer.imap.parser import (
    Atom, ParseError, SequenceSet, String, astring, isAtom, modSequence, number,
)

# A search program's size: every key costs a call per message, and NOT and
# OR recurse.  Real clients send a handful of keys; a line of 64 KiB could
# hold 16,000.
MAX_KEYS = 1000
MAX_DEPTH = 64
# A search costing more key tests than this (messages x keys) runs in the
# thread pool rather than on the reactor thread.
INLINE_SEARCH = 20000
# Octets of an address field parsed into addresses for FROM/TO/CC/BCC
# (Message.addresses): some 1,500 addresses, where a real list of
# recipients has tens; a 2 MB field would take seconds.
ADDRESSES_PARSED = 64 * 1024

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_FLAG_KEYS = {
    b"ANSWERED": ("\\Answered", True), b"UNANSWERED": ("\\Answered", False),
    b"DELETED": ("\\Deleted", True), b"UNDELETED": ("\\Deleted", False),
    b"DRAFT": ("\\Draft", True), b"UNDRAFT": ("\\Draft", False),
    b"FLAGGED": ("\\Flagged", True), b"UNFLAGGED": ("\\Flagged", False),
    b"SEEN": ("\\Seen", True), b"UNSEEN": ("\\Seen", False),
}


# RFC 3501 9: date-text = date-day "-" date-month "-" date-year, date-day
# 1*2DIGIT, date-year 4DIGIT; date-time's day is date-day-fixed (SP DIGIT /
# 2DIGIT), then time (2DIGIT ":" 2DIGIT ":" 2DIGIT) and zone ("+"/"-" 4DIGIT).
_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATE_TIME = re.compile(
    r"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")


def _epoch(text, pattern, what, example):
    """
    C{text} matched against C{pattern} as seconds since the epoch (UTC), or
    L{ParseError}: every field is checked for range (years 1 to 9999, real
    days of the month) before any arithmetic, so no input can overflow.
    """
    m = pattern.fullmatch(text)
    if m is None:
        raise ParseError(f"bad {what} {text[:40]!r}: expected {example}")
    day, month, year, *rest = m.groups()
    if month.lower() not in _MONTHS:
        raise ParseError(f"bad {what} {text[:40]!r}: unknown month {month!r}")
    try:
        stamp = datetime.datetime(int(year), _MONTHS.index(month.lower()) + 1, int(day),
                                  *(int(x) for x in rest[:3]), tzinfo=datetime.timezone.utc)
    except ValueError as e:  # "day is out of range for month", "year 0 is out of range"
        raise ParseError(f"bad {what} {text[:40]!r}: {e}") from None
    offset = 0
    if rest:
        sign, hours, minutes = rest[3:]
        if int(hours) > 23 or int(minutes) > 59:
            raise ParseError(f"bad {what} {text[:40]!r}: zone out of range")
        offset = (int(hours) * 60 + int(minutes)) * 60 * (-1 if sign == "-" else 1)
    return calendar.timegm(stamp.timetuple()) - offset


def parseDate(token):
    """C{1-Feb-1994} (SEARCH's date) -> days since the epoch."""
    try:
        text = astring(token, "date").decode("ascii")
    except UnicodeDecodeError:
        raise ParseError("bad date: not ASCII") from None
    return _epoch(text, _DATE, "date", "d-Mon-yyyy, e.g. 1-Feb-1994") // 86400


class Message:
    """
    What a predicate looks at; the content is loaded only if needed.  One
    object serves a whole search (L{moveTo} the next message): a new one
    per message made the garbage collector sweep the session's heap
    several times per SEARCH or SORT of a large mailbox.
    """

    __slots__ = ("seq", "uid", "size", "internalDate", "saveDate", "emailId", "flags",
                 "modseq", "_loader", "_data", "_parsed", "_fields")

    def __init__(self, seq, info, flags, loader, modseq=0):
        self._loader = loader
        self.moveTo(seq, info, flags, modseq)

    def moveTo(self, seq, info, flags, modseq=0):
        """Look at another message (the same loader, told the new UID)."""
        self.seq = seq
        self.uid = info.uid
        self.size = info.size
        self.internalDate = info.internalDate
        # RFC 8514 4.3: where the store cannot tell, the internal date.
        self.saveDate = info.internalDate if info.saveDate is None else info.saveDate
        self.emailId = None  # set by the caller when usesEmailId
        self.flags = flags  # \Recent included when it applies
        self.modseq = modseq
        self._data = None
        self._parsed = None
        self._fields = None

    @property
    def data(self):
        if self._data is None:
            self._data = self._loader(self.uid)
        return self._data

    @property
    def parsed(self):
        if self._parsed is None:
            # A message nested too deep for the email package is searched
            # as its source (parseMessage), not an internal error.
            self._parsed = parseMessage(self.data, email.policy.compat32)
        return self._parsed

    def fields(self):
        """
        The header fields, C{[(lower-case name, unfolded raw value, raw)]},
        read once per message in one linear pass (L{parseHeader}): not the
        C{email} package's parse, which took a third of a second for a
        header folded 500,000 times.
        """
        if self._fields is None:
            self._fields, _ = parseHeader(self.data, 0, len(self.data))
        return self._fields

    def header(self, name):
        """
        Every C{name} field's value as the user sees it, one per line:
        raw UTF-8 (RFC 6532, as UTF8=ACCEPT clients append it, RFC 6855)
        and RFC 2047 words decoded, casefolded.  Linear in the field's
        length (L{decodeEncodedWords}).
        """
        key = name.lower().encode("ascii", "replace")
        return "\n".join(
            decodeEncodedWords(value.decode("utf-8", "replace").strip())
            for field, value, _ in self.fields() if field == key).casefold()

    def addresses(self, name):
        """
        An address field as the user may search it: its display text (as
        L{header}) and its addresses as ENVELOPE shows them, C{mailbox@host}
        with comments, quoting and routes gone, so that C{FROM a@b.org}
        finds C{<a (comment)@ (comment) b.org>}.  The addresses are parsed
        from the first L{ADDRESSES_PARSED} octets of each field only: the
        parse costs some 50 times what the display text does, and a field
        of megabytes (anyone may send one) held a thread for seconds per
        message.  Past that, an address is still found as written.
        """
        key = name.encode()
        found = [mailbox + (b"@" + host if host is not None else b"")
                 for field, value, _ in self.fields() if field == key
                 for _, _, mailbox, host in parseAddressList(value[:ADDRESSES_PARSED])
                 if mailbox is not None]
        return "\n".join([self.header(name)] + [
            a.decode("utf-8", "replace").casefold() for a in found])

    def headersText(self):
        return "\n".join(f"{k}: {self.header(k)}" for k in set(self.parsed.keys())).casefold()

    def bodyText(self):
        out = []
        for part in self.parsed.walk():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            try:
                out.append(payload.decode(charset, "replace"))
            except LookupError:
                out.append(payload.decode("utf-8", "replace"))
        return "\n".join(out).casefold()

    def sentDay(self):
        value = self.parsed.get("date")
        try:
            stamp = email.utils.parsedate_to_datetime(str(value))
        except (TypeError, ValueError, IndexError):
            return None
        return calendar.timegm(stamp.date().timetuple()) // 86400


class Compiler:
    """
    Turns search keys into C{predicate(message) -> bool}.  C{needsContent}
    tells whether any key reads the message octets, C{usesModSeq} whether
    the search has a C{MODSEQ} key (RFC 7162 3.1.6: the answer then tells
    the highest mod-sequence found).
    """

    def __init__(self, charset, largestSeq, largestUid, saved=frozenset()):
        self.charset = charset
        self.saved = saved  # SEARCHRES (RFC 5182): the UIDs "$" stands for
        self.largestSeq = largestSeq
        self.largestUid = largestUid
        self.needsContent = False
        self.usesModSeq = False
        self.usesEmailId = False  # EMAILID (RFC 8474 6): ids read from the store
        self.keys = 0  # how many keys the program has (its cost per message)
        self._depth = 0

    def compile(self, tokens):
        tokens = list(tokens)
        if not tokens:
            raise ParseError("missing search key")
        preds = []
        while tokens:
            preds.append(self._nested(tokens))
        if len(preds) == 1:
            return preds[0]
        return lambda m: all(p(m) for p in preds)

    def _nested(self, tokens):
        """One key, within the program's limits of size and nesting."""
        self.keys += 1
        if self.keys > MAX_KEYS:
            raise ParseError(f"too many search keys (at most {MAX_KEYS})")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ParseError("search keys nested too deeply")
            return self._one(tokens)
        finally:
            self._depth -= 1

    def _modseq(self, tokens):
        """
        RFC 7162 3.1.5: C{MODSEQ ["entry-name" entry-type] n} matches a
        mod-sequence >= n.  The store keeps one mod-sequence per message,
        which the RFC says then stands for every entry: the entry is only
        checked for form.
        """
        if tokens and isinstance(tokens[0], String):
            tokens.pop(0)
            if not tokens or not isAtom(tokens.pop(0), b"PRIV", b"SHARED", b"ALL"):
                raise ParseError("MODSEQ entry type must be priv, shared or all")
        least = modSequence(tokens.pop(0) if tokens else None, allowZero=True)
        self.usesModSeq = True
        return lambda m: m.modseq >= least

    def _string(self, tokens):
        if not tokens:
            raise ParseError("missing search string")
        raw = astring(tokens.pop(0), "search string")
        try:
            return raw.decode(self.charset).casefold()
        except UnicodeDecodeError:
            raise ParseError("search string not in the given charset") from None

    def _one(self, tokens):
        key = tokens.pop(0)
        if isinstance(key, list):
            return self.compile(key)
        if not isinstance(key, Atom):
            raise ParseError("search key expected")
        name = key.upper()
        if name == b"$":  # RFC 5182 2.1: the saved result
            return lambda m: m.uid in self.saved
        if name[:1].isdigit() or name[:1] == b"*":
            seqset = SequenceSet.parse(key)
            return lambda m: seqset.contains(m.seq, self.largestSeq)
        if name == b"ALL":
            return lambda m: True
        if name in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[name]
            return lambda m: (flag in m.flags) == present
        if name == b"RECENT":
            return lambda m: "\\Recent" in m.flags
        if name == b"NEW":  # RFC 3501 6.4.4: RECENT UNSEEN
            return lambda m: "\\Recent" in m.flags and "\\Seen" not in m.flags
        if name == b"OLD":
            return lambda m: "\\Recent" not in m.flags
        if name in (b"KEYWORD", b"UNKEYWORD"):
            word = astring(tokens.pop(0) if tokens else None, "keyword").decode("ascii", "replace")
            word, want = word.lower(), name == b"KEYWORD"  # the store's keywords ignore case
            return lambda m: any(f.lower() == word for f in m.flags) == want
        if name == b"MODSEQ":
            return self._modseq(tokens)
        if name in (b"LARGER", b"SMALLER"):
            n = number(tokens.pop(0) if tokens else None, name.decode())
            if name == b"LARGER":
                return lambda m: m.size > n
            return lambda m: m.size < n
        if name == b"UID":
            if tokens and tokens[0] == b"$":
                tokens.pop(0)
                return lambda m: m.uid in self.saved
            seqset = SequenceSet.parse(tokens.pop(0) if tokens else None)
            return lambda m: seqset.contains(m.uid, self.largestUid)
        if name == b"NOT":
            if not tokens:
                raise ParseError("NOT needs a key")
            p = self._nested(tokens)
            return lambda m: not p(m)
        if name == b"OR":
            if len(tokens) < 2:
                raise ParseError("OR needs two keys")
            a = self._nested(tokens)
            b = self._nested(tokens)
            return lambda m: a(m) or b(m)
        if name in (b"BEFORE", b"ON", b"SINCE"):
            day = parseDate(tokens.pop(0) if tokens else None)
            internal = lambda m: int(m.internalDate) // 86400  # noqa: E731
            return _dateTest(name, day, internal)
        if name in (b"SAVEDBEFORE", b"SAVEDON", b"SAVEDSINCE"):  # RFC 8514 4.3
            day = parseDate(tokens.pop(0) if tokens else None)
            return _dateTest(name[5:], day, lambda m: int(m.saveDate) // 86400)
        if name == b"SAVEDATESUPPORTED":  # every store keeps save dates
            return lambda m: True
        if name == b"EMAILID":
            wanted = parseObjectId(tokens.pop(0) if tokens else None)
            self.usesEmailId = True
            return lambda m: m.emailId == wanted
        if name == b"THREADID":  # RFC 8474 5.2: no THREADID, no match
            parseObjectId(tokens.pop(0) if tokens else None)
            return lambda m: False
        if name in (b"SENTBEFORE", b"SENTON", b"SENTSINCE"):
            day = parseDate(tokens.pop(0) if tokens else None)
            self.needsContent = True
            test = _dateTest(name[4:], day, lambda m: m.sentDay())
            return lambda m: m.sentDay() is not None and test(m)
        if name in (b"FROM", b"TO", b"CC", b"BCC"):
            text = self._string(tokens)
            field = name.decode().lower()
            self.needsContent = True
            return lambda m: text in m.addresses(field)
        if name == b"SUBJECT":
            text = self._string(tokens)
            self.needsContent = True
            return lambda m: text in m.header("subject")
        if name == b"HEADER":
            field = astring(tokens.pop(0) if tokens else None, "header name").decode("ascii", "replace")
            text = self._string(tokens)
            self.needsContent = True
            if not text:
                key = field.lower().encode("ascii", "replace")
                return lambda m: any(name == key for name, _, _ in m.fields())
            return lambda m: text in m.header(field)
        if name == b"BODY":
            text = self._string(tokens)
            self.needsContent = True
            return lambda m: text in m.bodyText()
        if name == b"TEXT":
            text = self._string(tokens)
            self.needsContent = True
            return lambda m: text in m.headersText() or text in m.bodyText()
        raise ParseError(f"unknown search key {name.decode('ascii', 'replace')}")


def compileFor(selected, charset, saved, tokens):
    """
    The search program C{tokens} over the selected mailbox (a
    L{pymailer.imap.selected.Selected}): C{(compiler, predicate)}.
    SEARCH, SORT and THREAD take the same keys (RFC 5256 3).
    """
    uids = selected.uids
    compiler = Compiler(charset, len(uids), uids[-1] if uids else 0, saved)
    return compiler, compiler.compile(tokens)


def candidates(selected):
    """
    On the reactor thread: the messages as the client knows them now,
    C{[(seq, MessageInfo, shown flags, modseq)]}, for L{evaluate}.
    """
    return [(seq, selected.infos[u], selected.shownFlags(u), selected.modseq.get(u, 0))
            for seq, u in enumerate(selected.uids, 1) if u in selected.infos]


def inPool(compiler, candidates):
    """Whether evaluating is for the thread pool (content, or many tests)."""
    return (compiler.needsContent or compiler.usesEmailId
            or len(candidates) * compiler.keys > INLINE_SEARCH)


def evaluate(candidates, predicate, mailbox, emailIds=None):
    """
    The L{candidates} that match, C{[(seq, uid, modseq)]}.  I{Blocking}
    when the program reads content (L{Compiler.needsContent}); a message
    expunged meanwhile does not match.  C{emailIds}: uid -> EMAILID, for
    a program that tests them (L{Compiler.usesEmailId}).
    """
    def load(u):
        with mailbox.openMessage(u) as f:
            return f.read()

    found = []
    m = None
    for seq, info, flags, modseq in candidates:
        if m is None:
            m = Message(seq, info, flags, load, modseq)
        else:
            m.moveTo(seq, info, flags, modseq)
        if emailIds is not None:
            m.emailId = emailIds.get(info.uid)
        try:
            if predicate(m):
                found.append((seq, info.uid, modseq))
        except KeyError:
            continue
    return found


def resultLine(name, found, usesModSeq):
    """
    C{* SEARCH} or C{* SORT} with the numbers of C{found}, C{[(number,
    modseq, uid)]} in answer order; after a MODSEQ key, the highest
    mod-sequence of those found (RFC 7162 3.1.5, 3.1.6).
    """
    line = b"* " + name + b"".join(b" %d" % n for n, _, _ in found)
    if usesModSeq and found:
        line += b" (MODSEQ %d)" % max(m for _, m, _ in found)
    return line


BAD_CHARSET = "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"


def parseCharset(token):
    """
    The codec of a SEARCH/SORT/THREAD charset argument, or C{None} if we
    do not take it (C{NO [BADCHARSET]}, RFC 3501 6.4.4).
    """
    name = astring(token, "charset").decode("ascii", "replace").lower()
    return {"utf-8": "utf-8", "us-ascii": "ascii"}.get(name)


def _dateTest(kind, day, get):
    if kind == b"BEFORE":
        return lambda m: get(m) < day
    if kind == b"ON":
        return lambda m: get(m) == day
    return lambda m: get(m) >= day


def formatInternalDate(seconds):
    t = time.gmtime(seconds)
    return "%02d-%s-%04d %02d:%02d:%02d +0000" % (
        t.tm_mday, _MONTHS[t.tm_mon - 1].capitalize(), t.tm_year,
        t.tm_hour, t.tm_min, t.tm_sec)


def parseInternalDate(text):
    """APPEND's C{"23-Nov-2026 10:00:00 +0000"} -> epoch seconds."""
    return _epoch(text, _DATE_TIME, "date-time", "dd-Mon-yyyy hh:mm:ss +zzzz")


__all__ = ["Compiler", "Message", "String", "formatInternalDate", "parseInternalDate"]
