"""
An incremental decoder for the text after DATA (RFC 5321 §4.5.2, §2.3.8).

It works on whole chunks rather than line by line, so a 50 MB message costs a
handful of C-level scans per transport read, and it holds at most one line of
pending input.

Trusts nothing: the client may send bare CR or LF (SMTP smuggling,
CVE-2023-51764 class), NUL bytes, or endless lines.  Only CR LF "." CR LF ends
the message; anything else that looks like an ending is data, and a message
containing a bare CR, a bare LF or a NUL is refused once its real end arrives,
so no malformed ending can ever get a 250 and nothing after it runs as a
command.
"""

import re

# RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CR LF.
MAX_TEXT_LINE = 1000

_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")

BARE_NEWLINE = "bare CR or LF"
NUL = "NUL character"
LONG_LINE = "line longer than 1000 octets"


class DataDecoder:
    """
    Turn the stuffed, CRLF-framed DATA stream into message bytes.

    @ivar problem: C{None}, or the first reason the message must be refused
        (one of L{BARE_NEWLINE}, L{NUL}, L{LONG_LINE}).
    @ivar size: message octets decoded so far.
    """

    def __init__(self, maxLine=MAX_TEXT_LINE):
        self.maxLine = maxLine
        self.problem = None
        self.size = 0
        self._pending = b""  # the incomplete last line
        self._skippingLine = False  # the current line was too long: drop it

    def feed(self, data):
        """
        Decode some more of the stream.

        @return: C{(payload, rest)}: the un-stuffed message bytes decoded from
            C{data}, and C{None} while the message goes on, or the bytes that
            followed the end-of-data line once it has been seen.
        """
        buf = self._pending + data
        cut = buf.rfind(b"\r\n")
        if cut < 0:
            self._pending = self._holdIncomplete(buf)
            return b"", None
        # Every region handed on starts at a line start and ends with CR LF,
        # so the end marker is always "\r\n.\r\n" once a CR LF is put in front.
        region = b"\r\n" + buf[: cut + 2]
        end = region.find(b"\r\n.\r\n")
        if end >= 0:
            rest = region[end + 5 :] + buf[cut + 2 :]
            region = region[: end + 2]
            self._pending = b""
        else:
            rest = None
            self._pending = self._holdIncomplete(buf[cut + 2 :])
        self._check(region, leadingLineContinues=self._skippingLine)
        self._skippingLine = False
        # RFC 5321 §4.5.2: a leading period on a line is removed.
        payload = region.replace(b"\r\n.", b"\r\n")[2:]
        self.size += len(payload)
        if self.problem is not None:
            payload = b""
        return payload, rest

    def _holdIncomplete(self, tail):
        """
        Keep the incomplete last line, but never more than one line's worth:
        a longer one is a problem, and only its last octet (a CR that may
        start the CR LF) matters any more.
        """
        if len(tail) > self.maxLine:
            self._fail(LONG_LINE)
            self._skippingLine = True
            self.size += len(tail) - 1
            return tail[-1:]
        return tail

    def _check(self, region, leadingLineContinues):
        if self.problem is not None:
            return
        # Counts and a split in C rather than a regex with look-arounds and
        # a generator over every line: this runs on every chunk of every
        # message (issue 14).  CR, LF and CR LF counted equal mean every CR
        # and every LF is part of a CR LF pair.
        pairs = region.count(b"\r\n")
        if b"\x00" in region:
            self._fail(NUL)
        elif (region.count(b"\r") != pairs or region.count(b"\n") != pairs) \
                and _BARE_CR_OR_LF.search(region, 2):
            self._fail(BARE_NEWLINE)
        elif leadingLineContinues:
            self._fail(LONG_LINE)
        elif len(region) > self.maxLine \
                and max(map(len, region[2:].split(b"\r\n"))) + 2 > self.maxLine:
            self._fail(LONG_LINE)

    def _fail(self, problem):
        if self.problem is None:
            self.problem = problem
