"""
IMAP command tokenizer and response formatting (RFC 3501 section 9).

Twisted's C{IMAP4Server} parses each argument with ad-hoc splitting: quoted
strings ignore C{\\"} escapes, parenthesised lists cannot nest, and a
literal's size is trusted before a continuation is sent.  Here a complete
command (its lines and the literals between them, already received under
the size limits of L{pymailer.imap.server}) is turned into a list of tokens:

  - L{Atom} (C{bytes}): atoms, flags like C{\\Seen}, list wildcards and,
    in FETCH only, C{BODY[...]<...>} items whose brackets may hold spaces
    and parentheses (elsewhere C{[} and C{]} are plain atom characters:
    C{SELECT a[b} names the mailbox C{a[b});
  - L{String} (C{bytes}): quoted strings and in-memory literals;
  - L{FileLiteral}: a large literal spooled to a temporary file (APPEND);
  - C{list}: a parenthesised list, nested as written.

Trusts nothing: every malformation raises L{ParseError}, answered with BAD.
"""

import bisect
import re


class ParseError(ValueError):
    """The command does not follow the grammar; the text says why."""


class Atom(bytes):
    def __repr__(self):
        return "Atom(%s)" % bytes.__repr__(self)


class String(bytes):
    def __repr__(self):
        return "String(%s)" % bytes.__repr__(self)


class Literal(String):
    """A string sent as an in-memory literal (APPEND tells it from a date)."""

    def __repr__(self):
        return "Literal(%s)" % bytes.__repr__(self)


class FileLiteral:
    """A literal spooled to C{file} (positioned at 0), C{size} octets."""

    def __init__(self, file, size):
        self.file = file
        self.size = size


# Parentheses nest this deep at most: no command needs more (BODYSTRUCTURE
# is the server's), and the SEARCH compiler recurses once per level.
MAX_NESTING = 32

# "~{n}": a literal8 (RFC 3516 4.4), taken in APPEND only (the server checks).
LITERAL_AT_END = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")
# tag = 1*<any ASTRING-CHAR except "+"> (RFC 3501 9): "]" is one.
_TAG = re.compile(rb"[!#$&',-./0-9:-Z\[\]^-z|~]+")
# fetch-att names whose "[" opens a section that may hold spaces and
# parentheses (RFC 3501 9, fetch-att; RFC 3516 BINARY, answered BAD).
_SECTIONED = (b"BODY", b"BODY.PEEK", b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE")
_SEQUENCE_RANGE = re.compile(rb"(\*|\d{1,10})(?::(\*|\d{1,10}))?")
_SEQUENCE_SET = re.compile(rb"(?:\*|\d{1,10})(?::(?:\*|\d{1,10}))?"
                           rb"(?:,(?:\*|\d{1,10})(?::(?:\*|\d{1,10}))?)*")
_ATOM_RUN = re.compile(rb'[^ (){"\[\x00-\x1f\x7f]*')
# A line of atoms, spaces and parentheses alone, in printable ASCII (no
# quoted string, literal, "[" or control character): most commands of a
# session (STORE, FETCH FLAGS, SELECT of a plain name, EXPUNGE).  Its tokens
# are the runs between spaces and parentheses, found by one findall rather
# than character by character (issue 13); the same as _tokenizeLine's.
_PLAIN_LINE = re.compile(rb"[\x20\x21\x23-\x5a\x5c-\x7a\x7c-\x7e]*")
_PLAIN_TOKEN = re.compile(rb"[()]|[^ ()]+")


def isFetch(firstLine):
    """
    Whether a command's first line is a FETCH, UID FETCH or NOTIFY (whose
    MessageNew takes fetch attributes, RFC 5465 8).
    """
    words = firstLine.upper().split(b" ", 3)
    return words[1:2] in ([b"FETCH"], [b"NOTIFY"]) or words[1:3] == [b"UID", b"FETCH"]


def tokenize(segments, sections=False):
    """
    @param segments: C{[line, literal, line, literal, ..., line]}: the text
        of each line (without CRLF; every line but the last ends with its
        C{{n}} marker) and the literal (C{bytes} or L{FileLiteral}) after it.
    @param sections: whether C{BODY[...]} fetch items may appear (FETCH):
        everywhere else C{[} is an ATOM-CHAR like any other (RFC 3501 9:
        only C{]} is in resp-specials, and astring and list-mailbox take
        both).
    @return: the list of top-level tokens.
    """
    stack = [[]]
    for index in range(0, len(segments), 2):
        line = segments[index]
        literal = segments[index + 1] if index + 1 < len(segments) else None
        if literal is not None:
            marker = LITERAL_AT_END.search(line)
            line = line[:marker.start()]
        if _PLAIN_LINE.fullmatch(line):
            _tokenizePlain(line, stack)
        else:
            _tokenizeLine(line, stack, sections)
        if literal is not None:
            if isinstance(literal, FileLiteral):
                stack[-1].append(literal)
            else:
                stack[-1].append(Literal(literal))
    if len(stack) != 1:
        raise ParseError("unbalanced parentheses")
    return stack[0]


def _openList(stack):
    """A "(": the tokens up to its ")" go into a new list."""
    if len(stack) > MAX_NESTING:
        raise ParseError("parentheses nested too deeply")
    stack.append([])


def _closeList(stack):
    """A ")": the list it closes is a token of the one around it."""
    if len(stack) == 1:
        raise ParseError("unbalanced parentheses")
    done = stack.pop()
    stack[-1].append(done)


def _tokenizePlain(line, stack):
    """L{_tokenizeLine} for a line L{_PLAIN_LINE} matches."""
    for token in _PLAIN_TOKEN.findall(line):
        if token == b"(":
            _openList(stack)
        elif token == b")":
            _closeList(stack)
        else:
            stack[-1].append(Atom(token))


def _tokenizeLine(line, stack, sections):
    i, n = 0, len(line)
    while i < n:
        c = line[i:i + 1]
        if c == b" ":
            i += 1
        elif c == b"(":
            _openList(stack)
            i += 1
        elif c == b")":
            _closeList(stack)
            i += 1
        elif c == b'"':
            out = bytearray()
            i += 1
            while True:
                if i >= n:
                    raise ParseError("unterminated quoted string")
                ch = line[i]
                if ch == 0x5C:  # backslash
                    if i + 1 >= n or line[i + 1] not in (0x5C, 0x22):
                        raise ParseError("bad escape in quoted string")
                    out.append(line[i + 1])
                    i += 2
                elif ch == 0x22:
                    i += 1
                    break
                elif ch == 0:
                    raise ParseError("NUL in quoted string")
                else:
                    out.append(ch)
                    i += 1
            stack[-1].append(String(bytes(out)))
        elif c == b"{":
            raise ParseError("literal not at the end of a line")
        else:
            start = i
            while i < n and line[i:i + 1] not in (b" ", b"(", b")", b'"', b"{"):
                # The plain run at once: a line-long sequence set is one atom.
                i = _ATOM_RUN.match(line, i).end()
                if i >= n or line[i:i + 1] in (b" ", b"(", b")", b'"', b"{"):
                    break
                if line[i] < 0x20 or line[i] == 0x7F:
                    raise ParseError("control character in atom")
                if sections and line[i:i + 1] == b"[" and line[start:i].upper() in _SECTIONED:
                    depth = 0
                    while i < n:
                        if line[i:i + 1] == b"[":
                            depth += 1
                        elif line[i:i + 1] == b"]":
                            depth -= 1
                            if depth == 0:
                                break
                        i += 1
                    if i >= n:
                        raise ParseError("unterminated [")
                i += 1
            stack[-1].append(Atom(line[start:i]))


def isTag(word):
    """Whether C{word} is a well-formed command tag (RFC 3501 9)."""
    return _TAG.fullmatch(word) is not None


def splitCommand(firstLine):
    """C{tag}, C{COMMAND} (upper case) from the first line, or ParseError."""
    tag, _, rest = firstLine.partition(b" ")
    if not tag:
        raise ParseError("empty command line")
    if not isTag(tag):
        raise ParseError("bad tag")
    name = rest.split(b" ", 1)[0]
    if not name:
        raise ParseError("missing command")
    return tag, name.upper()


# -- values ------------------------------------------------------------------

def isAtom(token, *choices):
    if not isinstance(token, Atom):
        return False
    return not choices or token.upper() in choices


def astring(token, what="argument"):
    """An atom or string argument as C{bytes}."""
    if isinstance(token, (Atom, String)):
        return bytes(token)
    raise ParseError(f"{what}: string expected")


def number(token, what="number", allowZero=True):
    if not isinstance(token, Atom) or not token.isdigit() or len(token) > 10:
        raise ParseError(f"{what}: number expected")
    value = int(token)
    if value > 0xFFFFFFFF or (value == 0 and not allowZero):
        raise ParseError(f"{what}: number out of range")
    return value


def modSequence(token, allowZero=False):
    """
    A mod-sequence (RFC 7162 7: C{mod-sequence-value}, a positive 63-bit
    number, or with C{allowZero} C{mod-sequence-valzer}).
    """
    if not isinstance(token, Atom) or not token.isdigit() or len(token) > 19:
        raise ParseError("mod-sequence expected")
    value = int(token)
    if value >= 2**63 or (value == 0 and not allowZero):
        raise ParseError("mod-sequence out of range")
    return value


class SequenceSet:
    """
    A sequence set (RFC 3501 9, C{sequence-set}); C{*} is C{None} until
    resolved against the largest number in use.
    """

    def __init__(self, ranges):
        self.ranges = ranges
        self._spans = None  # (largest, spans, their starts)

    @classmethod
    def parse(cls, token):
        if not isinstance(token, Atom) or not token:
            raise ParseError("sequence set expected")
        # One C-level pass checks the grammar (RFC 3501 9: seq-number is
        # nz-number or "*", nz-number fits 32 bits); a set may fill the line.
        if not _SEQUENCE_SET.fullmatch(token):
            raise ParseError("bad sequence set")
        ranges = []
        for lo, hi in _SEQUENCE_RANGE.findall(token):
            lo = None if lo == b"*" else int(lo)
            hi = lo if not hi else None if hi == b"*" else int(hi)
            if lo == 0 or hi == 0 or (lo or 0) > 0xFFFFFFFF or (hi or 0) > 0xFFFFFFFF:
                raise ParseError("bad sequence set")
            ranges.append((lo, hi))
        return cls(ranges)

    def bounds(self, largest):
        for lo, hi in self.ranges:
            lo = largest if lo is None else lo
            hi = largest if hi is None else hi
            yield (lo, hi) if lo <= hi else (hi, lo)

    def spans(self, largest):
        """
        The set as sorted, disjoint C{(lo, hi)} spans, with C{*} as
        C{largest}.  A client may send thousands of overlapping ranges
        (C{1,2,3,...} or C{1:*,1:*,...} up to the line limit): every lookup
        is then a binary search over these spans, never a walk over the
        ranges as written.
        """
        if self._spans is None or self._spans[0] != largest:
            merged = []
            for lo, hi in sorted(self.bounds(largest)):
                if merged and lo <= merged[-1][1] + 1:
                    if hi > merged[-1][1]:
                        merged[-1] = (merged[-1][0], hi)
                else:
                    merged.append((lo, hi))
            self._spans = (largest, merged, [lo for lo, _ in merged])
        return self._spans[1]

    def contains(self, value, largest):
        spans = self.spans(largest)
        i = bisect.bisect_right(self._spans[2], value) - 1
        return i >= 0 and value <= spans[i][1]

    def select(self, values, largest):
        """The members of sorted C{values} (a list or a range) in the set."""
        out = []
        for lo, hi in self.spans(largest):
            out.extend(values[bisect.bisect_left(values, lo):bisect.bisect_right(values, hi)])
        return out

    def hasStar(self):
        return any(None in r for r in self.ranges)


def formatSet(numbers):
    """Sorted ints -> compact C{1:3,7} (UIDPLUS response codes)."""
    out = []
    numbers = list(numbers)
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(out).encode("ascii")


# -- responses ---------------------------------------------------------------

class Raw(bytes):
    """Bytes written as they are (atoms, flags, pre-formatted parts)."""


_QUOTABLE = re.compile(rb'[\x01-\x09\x0b\x0c\x0e-\x7f]*')


def quoted(value):
    """C{bytes} without CR, LF or NUL as a quoted string (RFC 3501 9)."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def formatValue(value):
    """A Python value as IMAP: C{None} is NIL, C{int} a number, C{Raw} as
    is, C{str}/C{bytes} a quoted string or a literal, lists parenthesised."""
    if value is None:
        return b"NIL"
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        if len(value) < 1024 and _QUOTABLE.fullmatch(value):
            return quoted(value)
        return b"{%d}\r\n" % len(value) + value
    if isinstance(value, (list, tuple)):
        return b"(" + b" ".join(formatValue(v) for v in value) + b")"
    raise TypeError(f"cannot format {value!r}")
