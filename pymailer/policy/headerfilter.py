"""
Streaming removal of header fields while a message arrives.

The header section is cut into fields (a line and its folded continuation
lines, RFC 5322 §2.2.3) as the data streams by; each whole field is offered
to C{keep(field)}, and the body passes through untouched.  Memory is bounded:
a field longer than C{maxField} is judged on its first C{maxField} octets
and the rest of it follows that judgement.  Lines may end in CRLF or, for
BINARYMIME data, a bare LF.
"""


class HeaderFilter:
    def __init__(self, keep, maxField=64 * 1024):
        self.keep = keep
        self.maxField = maxField
        self._inBody = False
        self._partial = b""
        self._field = b""
        self._overflow = None  # True/False: passing/dropping a too-long field
        self._midLine = False  # the last octets fed were part of a line still going on

    def feed(self, data):
        """@return: the bytes to write for C{data}."""
        if self._inBody:
            return data
        out = []
        data = self._partial + data
        self._partial = b""
        start = 0
        while not self._inBody and start < len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end + 1]
            start += len(piece)
            if self._midLine:
                # More of a line too long to hold: it belongs to the field
                # already judged, whatever it starts with (not a new line:
                # taken as one, it ended the header section early and let
                # every later field through unfiltered).
                self._append(piece, out)
                self._midLine = end < 0
            elif end >= 0:
                self._line(piece, out)
            elif len(piece) > self.maxField:
                self._line(piece, out)
                self._midLine = not self._inBody
            else:
                self._partial = piece
        if self._inBody:
            out.append(data[start:])
        return b"".join(out)

    def finish(self):
        """The end of the message: @return: whatever is still held."""
        out = []
        if self._partial:
            self._line(self._partial, out)
            self._partial = b""
        self._endField(out)
        return b"".join(out)

    def _line(self, line, out):
        if line[:1] in (b" ", b"\t") and (self._field or self._overflow is not None):
            self._append(line, out)
            return
        self._endField(out)
        if line in (b"\r\n", b"\n") or b":" not in line:
            # The empty line (or a line that is no header field: the
            # section is malformed, and readers take it as the body).
            self._inBody = True
            out.append(line)
            return
        self._append(line, out)

    def _append(self, line, out):
        if self._overflow is not None:
            if self._overflow:
                out.append(line)
            return
        self._field += line
        if len(self._field) > self.maxField:
            self._overflow = bool(self.keep(self._field))
            if self._overflow:
                out.append(self._field)
            self._field = b""

    def _endField(self, out):
        if self._field and self.keep(self._field):
            out.append(self._field)
        self._field = b""
        self._overflow = None


class FilteredMessage:
    """
    An L{pymailer.interfaces.IIncomingMessage} whose header section passes
    through a L{HeaderFilter} on its way to the spool.
    """

    def __init__(self, message, headerFilter):
        self._message = message
        self._filter = headerFilter
        self.queueId = message.queueId

    def write(self, data):
        return self._message.write(self._filter.feed(data))

    def finish(self):
        """The data is complete: write what the filter still holds."""
        return self._message.write(self._filter.finish())

    def openData(self):
        return self._message.openData()

    def commit(self, envelope):
        """@return: a Deferred of the envelope as committed (see L{IIncomingMessage})."""
        return self._message.commit(envelope).addCallback(
            lambda committed: envelope if committed is None else committed)

    def abort(self):
        return self._message.abort()
