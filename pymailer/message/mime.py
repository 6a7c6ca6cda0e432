"""
MIME structure of a stored message, read from its raw octets: its parts,
header fields and addresses, as values (no protocol syntax), for the
stored summary (L{pymailer.message.summary}) and IMAP FETCH (BODYSTRUCTURE,
BODY, ENVELOPE, RFC822.SIZE and C{BODY[section]<partial>}, RFC 3501 6.4.5
and 7.4.2), CATENATE and SEARCH.

Works on offsets into the original octets (a C{bytes}, or a L{ContentView}
reading a large message from the store in pages), never re-serialises:
sizes, line counts and sections are exactly the stored octets, as the RFC asks, and a 50 MB message is never copied whole
to find its structure.  Header values are reported raw (unfolded, not
decoded), as RFC 3501 asks for ENVELOPE.

Trusts nothing: malformed headers, missing boundaries and absurd nesting
(capped at L{MAX_DEPTH}) give a best-effort structure, never an exception.
"""

import re

MAX_DEPTH = 64
_HEADER_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
WHOLE_LIMIT = 4 * 1024 * 1024   # messages up to this are read whole
PAGE = 64 * 1024
CACHED_PAGES = 64


def messageOctets(content):
    """
    What L{Part} parses for an opened L{pymailer.interfaces.IMessageContent}:
    its C{bytes} if small, else a L{ContentView} that reads pages as the
    parser needs them (a 50 MB attachment is not read to find the
    structure around it).  Blocking.
    """
    if content.size <= WHOLE_LIMIT:
        return content.readAt(0, content.size)
    return ContentView(content)


class ContentView:
    """
    The part of C{bytes}' interface L{Part} uses (C{len}, slices, C{find})
    over an L{pymailer.interfaces.IMessageContent}, read in cached pages
    with C{readAt}.  Blocking; valid while the content is open.
    """

    def __init__(self, content):
        self._content = content
        self._size = content.size
        self._pages = {}

    def __len__(self):
        return self._size

    def _page(self, number):
        page = self._pages.get(number)
        if page is None:
            if len(self._pages) >= CACHED_PAGES:
                del self._pages[next(iter(self._pages))]  # the oldest
            page = self._pages[number] = self._content.readAt(number * PAGE, PAGE)
        return page

    def __getitem__(self, index):
        if not isinstance(index, slice):
            raise TypeError("ContentView takes slices only")
        start, stop, step = index.indices(self._size)
        if step != 1:
            raise ValueError("ContentView slices have step 1")
        if stop <= start:
            return b""
        if stop - start > CACHED_PAGES * PAGE:  # big: not through the cache
            return self._content.readAt(start, stop - start)
        first, last = start // PAGE, (stop - 1) // PAGE
        joined = b"".join(self._page(n) for n in range(first, last + 1))
        offset = first * PAGE
        return joined[start - offset:stop - offset]

    def find(self, sub, start=0, end=None):
        end = self._size if end is None else min(end, self._size)
        pos = max(start, 0)
        while pos < end:
            # Windows overlap by len(sub) - 1, so no match is cut in two.
            window = self[pos:min(end, pos + PAGE + len(sub) - 1)]
            found = window.find(sub)
            if found >= 0:
                return pos + found
            if pos + len(window) >= end:
                break
            pos += PAGE
        return -1



class Part:
    """
    One MIME entity: C{data[start:bodyStart]} is its header (with the empty
    line), C{data[bodyStart:end]} its body.
    """

    def __init__(self, data, start, end, depth=0, defaultType=(b"text", b"plain")):
        self.data = data
        self.start = start
        self.end = end
        self.headers, self.bodyStart = parseHeader(data, start, end)
        self._first = None  # field name -> its first value, made on the first look-up
        ctype = self.header(b"content-type")
        self.type, self.subtype, self.params = parseContentType(ctype, defaultType)
        self.children = []
        self.message = None
        self.closeEnd = None
        if depth >= MAX_DEPTH:
            return
        if self.type == b"multipart":
            self._splitMultipart(depth)
        elif self.type == b"message" and self.subtype == b"rfc822":
            self.message = Part(data, self.bodyStart, end, depth + 1)

    # -- headers -------------------------------------------------------------

    def header(self, name):
        """The unfolded raw value of the first C{name} field, or C{None}."""
        # A summary looks up some 30 names: one pass, not one per name.
        first = self._first
        if first is None:
            first = self._first = {}
            for field, value, _ in reversed(self.headers):
                first[field] = value
        return first.get(name)

    # -- structure -----------------------------------------------------------

    def _splitMultipart(self, depth):
        boundary = dict(self.params or ()).get(b"boundary")
        default = (b"message", b"rfc822") if self.subtype == b"digest" else (b"text", b"plain")
        data, end = self.data, self.end
        bounds = []
        rawEnds = []
        if boundary:
            marker = b"--" + boundary
            pos = self.bodyStart
            partStart = None
            while True:
                p = data.find(marker, pos, end)
                if p < 0:
                    break
                pos = p + len(marker)
                if p != self.bodyStart and data[p - 1:p] != b"\n":
                    continue
                after = data[pos:pos + 2]
                closing = after == b"--"
                lineEnd = data.find(b"\n", pos, end)
                lineEnd = end if lineEnd < 0 else lineEnd + 1
                if partStart is not None:
                    partEnd = p
                    if partEnd > partStart and data[partEnd - 1:partEnd] == b"\n":
                        partEnd -= 1
                        if partEnd > partStart and data[partEnd - 1:partEnd] == b"\r":
                            partEnd -= 1
                    bounds.append((partStart, max(partStart, partEnd)))
                    rawEnds.append(p)
                if closing:
                    partStart = None
                    self.closeEnd = lineEnd
                    break
                partStart = lineEnd
                pos = lineEnd
            if partStart is not None:
                bounds.append((partStart, end))
        if not bounds:
            # RFC 2046 5.1.1 needs a boundary; like Dovecot, a multipart
            # without any shows as one empty text/plain part.
            bounds = [(self.bodyStart, self.bodyStart)]
            if not boundary:
                self.params = None
        self.children = [Part(data, s, e, depth + 1, default) for s, e in bounds]
        # A nested multipart whose closing boundary line runs right up to our
        # next boundary keeps that line's CRLF (Dovecot's reading of RFC
        # 2046 5.1.1: the CRLF was the inner delimiter's, not ours).
        for child, rawEnd in zip(self.children, rawEnds):
            if child.children and child.closeEnd == child.end:
                child.end = rawEnd

    def isMultipart(self):
        return bool(self.children)

    def body(self):
        return self.data[self.bodyStart:self.end]

    def headerBytes(self):
        return self.data[self.start:self.bodyStart]

    def size(self):
        return self.end - self.bodyStart

    def lines(self):
        return countLines(self.data, self.bodyStart, self.end)

    # -- FETCH items ---------------------------------------------------------

    def bodystructure(self, extensible=True):
        """BODYSTRUCTURE (or BODY, without extension data) as a value."""
        if self.children:
            out = [c.bodystructure(extensible) for c in self.children]
            out.append(self.subtype)
            if extensible:
                out += [_paramList(self.params)] + self._extension()
            result = MultipartBody(out)
            result.parts = len(self.children)
            return result
        cte = self.header(b"content-transfer-encoding")
        cte = cte.strip() if cte and cte.strip() else b"7bit"
        desc = self.header(b"content-description")
        cid = self.header(b"content-id")
        out = [
            self.type, self.subtype, _paramList(self.params),
            _strip(cid), _strip(desc), cte, self.size(),
        ]
        if self.type == b"text":
            out.append(self.lines())
        elif self.message is not None:
            inner = self.message
            out += [inner.envelope(), inner.bodystructure(extensible), self.lines()]
        if extensible:
            out += [_strip(self.header(b"content-md5"))] + self._extension()
        return out

    def _extension(self):
        disposition = self.header(b"content-disposition")
        if disposition is not None and disposition.strip():
            kind, params = parseParameters(disposition)
            disposition = [kind, _paramList(params)]
        else:
            disposition = None
        language = self.header(b"content-language")
        if language is not None:
            tags = [t.strip() for t in re.split(rb"[,\s]+", _uncomment(language)) if t.strip()]
            language = tags or None
        location = _strip(self.header(b"content-location"))
        if location is not None:
            location = re.sub(rb"\s+", b"", location)
        return [disposition, language, location]

    def envelope(self):
        def text(name):
            return _strip(self.header(name))

        def addresses(name):
            value = self.header(name)
            if value is None:
                return None
            return parseAddressList(value) or None

        sender = addresses(b"sender")
        replyTo = addresses(b"reply-to")
        from_ = addresses(b"from")
        return [
            text(b"date"), text(b"subject"), from_,
            sender or from_, replyTo or from_,
            addresses(b"to"), addresses(b"cc"), addresses(b"bcc"),
            text(b"in-reply-to"), text(b"message-id"),
        ]

    # -- sections --------------------------------------------------------------

    def find(self, numbers):
        """
        The part at C{numbers} (e.g. C{[2, 1]}), or C{None}.

        RFC 3501 6.4.5: the numbers of a message address its body: the
        children of a multipart, or, for any other message, its one part 1
        (the message itself seen as a body part, with its header as that
        part's MIME header).  A message/rfc822 part is numbered through
        its encapsulated message the same way, at any depth, the top-level
        message included (a message whose own type is message/rfc822).
        """
        current, isMessage = self, True
        for n in numbers:
            if not isMessage and not current.children and current.message is not None:
                current, isMessage = current.message, True
            if current.children:
                if not 1 <= n <= len(current.children):
                    return None
                current = current.children[n - 1]
            elif n != 1 or (current is self and not isMessage):
                # Only part 1 below a non-multipart.  As Dovecot answers,
                # nothing lies below the top-level message's part 1 (its
                # body), while a leaf part's part 1 is the part itself.
                return None
            isMessage = False
        return current

    def section(self, numbers, spec, fields=()):
        """
        The octets of C{BODY[numbers.spec]}: C{spec} is C{""}, C{"MIME"},
        C{"HEADER"}, C{"HEADER.FIELDS"}, C{"HEADER.FIELDS.NOT"} or C{"TEXT"}.
        A part that does not exist is the empty string (as Dovecot answers).
        """
        part = self.find(numbers)
        if part is None:
            return b""
        if spec == "":
            return part.body() if numbers else self.data[self.start:self.end]
        if spec == "MIME":
            return part.headerBytes()
        if numbers:
            # HEADER/TEXT of a part are those of its encapsulated message.
            if part.message is None:
                return b""
            part = part.message
        if spec == "TEXT":
            return part.body()
        if spec == "HEADER":
            return part.headerBytes()
        wanted = {f.lower() for f in fields}
        keep = spec == "HEADER.FIELDS"
        out = [raw for name, _, raw in part.headers if (name in wanted) == keep]
        return b"".join(out) + b"\r\n"


def countLines(data, start, end, step=1 << 20):
    """LF count of C{data[start:end]} (a L{ContentView} has no C{count})."""
    if isinstance(data, bytes):
        return data.count(b"\n", start, end)
    return sum(data[i:min(i + step, end)].count(b"\n") for i in range(start, end, step))


class MultipartBody(list):
    """
    A multipart's BODYSTRUCTURE: its first C{parts} items are the children,
    written without spaces between them (RFC 3501 9, body-type-mpart).
    """


_FOLD = re.compile(rb"\r?\n[ \t]+")


def parseHeader(data, start, end):
    """
    @return: C{([(lower-case name, unfolded value, raw field)], bodyStart)}.
    """
    headers = []
    pos = start
    current = None
    while pos < end:
        nl = data.find(b"\n", pos, end)
        lineEnd = end if nl < 0 else nl + 1
        line = data[pos:lineEnd]
        if line in (b"\r\n", b"\n"):
            pos = lineEnd
            break
        if line[:1] in (b" ", b"\t") and current is not None:
            # Lines joined once at the end: adding each to the field
            # copied it again, a header folded 400,000 times (1.2 MB,
            # anyone may send it) took 10 s of a core at every FETCH.
            current[1].append(line)
        else:
            current = None
            m = _HEADER_NAME.match(line)
            if m:
                current = (m[1].lower(), [line])
                headers.append(current)
        pos = lineEnd
    else:
        pos = end
    out = []
    for name, lines in headers:
        raw = lines[0] if len(lines) == 1 else b"".join(lines)
        value = raw.split(b":", 1)[1]
        # Unfold (RFC 5322 2.2.3); like Dovecot, each fold becomes one space.
        if b"\n" in value[:-1]:  # most fields are one line: no regex for them
            value = _FOLD.sub(b" ", value)
        value = value.replace(b"\r", b"").replace(b"\n", b"")
        if raw[-1:] != b"\n":
            raw += b"\r\n"
        out.append((name, value, raw))
    return out, pos


def _strip(value):
    if value is None:
        return None
    return value.strip(b" \t")


def _uncomment(value):
    out, depth = bytearray(), 0
    for ch in value:
        if ch == 0x28:
            depth += 1
        elif ch == 0x29 and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    return bytes(out)


_TOKEN = re.compile(rb'\s*(?:"((?:[^"\\]|\\.)*)"|([^;=\s"]+)|(;)|(=))', re.S)


def parseParameters(value):
    """C{"type; a=1; b=\\"x y\\""} -> C{(b"type", [(b"a", b"1"), ...])}."""
    value = _uncomment(value)
    head, _, rest = value.partition(b";")
    params = []
    for item in _splitParams(rest):
        name, eq, v = item.partition(b"=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        v = v.strip()
        if v[:1] == b'"':
            v = re.sub(rb"\\(.)", rb"\1", v[1:-1] if v[-1:] == b'"' and len(v) > 1 else v[1:])
        params.append((name, v))
    return head.strip().lower(), _joinContinuations(params)


def _joinContinuations(params):
    """
    RFC 2231 3-4: C{name*0*}, C{name*1*}... are one parameter; shown joined
    as C{name*} (still encoded) when any piece is encoded, as Dovecot does.
    """
    pieces, out = {}, []
    for name, value in params:
        m = re.fullmatch(rb"(.+?)\*(\d{1,9})(\*?)", name)
        if m is None:
            out.append((name, value))
            continue
        base = m[1]
        if base not in pieces:
            pieces[base] = []
            out.append((base, None))
        pieces[base].append((int(m[2]), bool(m[3]), value))
    result = []
    for name, value in out:
        if value is None and name in pieces:
            parts = sorted(pieces[name])
            encoded = any(p[1] for p in parts)
            result.append((name + (b"*" if encoded else b""), b"".join(p[2] for p in parts)))
        else:
            result.append((name, value))
    return result


def _splitParams(rest):
    items, current, quoted, escape = [], bytearray(), False, False
    for ch in rest:
        if escape:
            current.append(ch)
            escape = False
        elif ch == 0x5C and quoted:
            current.append(ch)
            escape = True
        elif ch == 0x22:
            quoted = not quoted
            current.append(ch)
        elif ch == 0x3B and not quoted:
            items.append(bytes(current))
            current = bytearray()
        else:
            current.append(ch)
    items.append(bytes(current))
    return [i for i in items if i.strip()]


def parseContentType(value, default):
    if value is not None:
        kind, params = parseParameters(value)
        major, slash, minor = kind.partition(b"/")
        if slash and major and minor and b" " not in kind:
            if major == b"text" and not any(n == b"charset" for n, _ in params):
                params.append((b"charset", b"us-ascii"))
            return major, minor, params
    major, minor = default
    params = [(b"charset", b"us-ascii")] if major == b"text" else []
    return major, minor, params


def _paramList(params):
    if not params:
        return None
    return [x for pair in params for x in pair]


# -- addresses (RFC 5322 3.4), raw, for ENVELOPE ------------------------------

_ADDRESS_TOKEN = re.compile(
    rb'\s*(?:"((?:[^"\\]|\\.)*)"?|(\((?:[^()\\]|\\.|\([^()]*\))*\)?)|([<>@,;:.\[\]])|([^\s"()<>@,;:.\[\]]+))',
    re.S)


_QUOTED_PAIR = re.compile(rb"\\(.)")


def _addressTokens(value):
    tokens, pos = [], 0
    while pos < len(value):
        m = _ADDRESS_TOKEN.match(value, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        if m[1] is not None:
            quoted = m[1]
            if b"\\" in quoted:
                quoted = _QUOTED_PAIR.sub(rb"\1", quoted)
            tokens.append(("quoted", quoted))
        elif m[2] is not None:
            tokens.append(("comment", m[2][1:-1].strip()))
        elif m[3] is not None:
            tokens.append(("special", m[3]))
        elif m[4] is not None:
            tokens.append(("atom", m[4]))
    return tokens


def parseAddressList(value):
    """
    Raw header value -> ENVELOPE address structures C{[name, adl, mailbox,
    host]}, with RFC 3501 group markers.
    """
    tokens = _addressTokens(value)
    out = []
    inGroup = False
    i = 0
    while i < len(tokens):
        phrase, comments = [], []
        while i < len(tokens) and not (
                tokens[i][0] == "special" and tokens[i][1] in (b"<", b":", b"@", b",", b";")):
            kind, text = tokens[i]
            if kind == "comment":
                comments.append(text)
            elif kind == "special" and text == b".":
                phrase.append(b".")
            else:
                phrase.append(text)
            i += 1
        stop = tokens[i][1] if i < len(tokens) else None
        if stop == b":" and not inGroup:
            out.append([None, None, b" ".join(phrase), None])
            inGroup = True
            i += 1
            continue
        if stop == b"<":
            i += 1
            inner = []
            while i < len(tokens) and tokens[i] != ("special", b">"):
                inner.append(tokens[i])
                i += 1
            i += 1
            if any(t == ("special", b":") for t in inner):
                adl_end = max(k for k, t in enumerate(inner) if t == ("special", b":"))
                adl = b"".join(t[1] for t in inner[:adl_end])
                inner = inner[adl_end + 1:]
            else:
                adl = None
            local, domain = _addrSpec(inner)
            name = _phrase(phrase)
            while i < len(tokens) and tokens[i][1] not in (b",", b";"):
                if tokens[i][0] == "comment":
                    comments.append(tokens[i][1])
                i += 1
            out.append([name, adl, local, domain])
        elif stop == b"@":
            rest = []
            while i < len(tokens) and tokens[i][1] not in (b",", b";"):
                if tokens[i][0] == "comment":
                    comments.append(tokens[i][1])
                else:
                    rest.append(tokens[i])
                i += 1
            local = b"".join(phrase)
            _, domain = _addrSpec([("atom", b"")] + rest)
            name = comments[-1] if comments else None
            out.append([name, None, local, domain])
        elif phrase:
            out.append([None, None, b"".join(phrase), None])
        if i < len(tokens) and tokens[i][1] == b";":
            if inGroup:
                out.append([None, None, None, None])
                inGroup = False
        i += 1
    if inGroup:
        out.append([None, None, None, None])
    return out


def _phrase(words):
    if not words:
        return None
    text = b""
    for w in words:
        if w == b"." or text.endswith(b"."):
            text += w
        else:
            text += (b" " if text else b"") + w
    return text


def _addrSpec(tokens):
    tokens = [t for t in tokens if t[0] != "comment"]
    at = max((k for k, t in enumerate(tokens) if t == ("special", b"@")), default=None)
    if at is None:
        return b"".join(t[1] for t in tokens) or None, None
    local = b"".join(t[1] for t in tokens[:at])
    domain = b"".join(t[1] for t in tokens[at + 1:])
    return local or None, domain or None
