"""
A C{multipart/form-data} body (RFC 7578) read from a file: its parts'
names, file names, media types and octets, within bounds.

Why not the standard library's C{email} parser, which this replaced: it
builds a message object per part and keeps every line it read, about
3 KB of memory and 0.2 ms of CPU per part, with no limit on the number
of parts or the size of a part's header section.  A logged-in user's
50 MB form of 900,000 tiny parts held the compose page (and 3 GB) for
minutes.  Here a part costs what its octets cost, the body is read a
chunk at a time and searched with C{bytes.find} (linear), and a form
with more than L{MAX_PARTS} parts or a part header section over
L{MAX_HEADER} octets is refused.

Trust: nothing in the body or its Content-Type.  Every refusal is a
L{ValueError} with L{BAD_FORM}'s text.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
from dataclasses import dataclass
from typing import Optional

# The webmail's compose form has a dozen fields, one box per part of the
# message it starts from, and the files chosen: generous.
MAX_PARTS = 1000
# One part's header section (Content-Disposition, Content-Type): a file
# name of a few hundred characters fits many times over.
MAX_HEADER = 8 * 1024
READ_CHUNK = 64 * 1024
# RFC 2046 5.1.1: a boundary is 1 to 70 characters.
MAX_BOUNDARY = 70
BAD_FORM = "The form could not be read."
CRLF = b"\r\n"


@dataclass
class FormPart:
    """One part: the form field's C{name}, a file's C{filename} (or C{None}), its octets."""

    name: str
    filename: Optional[str]
    contentType: str
    data: bytes


class _Reader:
    """The body a chunk at a time, searched for one marker after another."""

    def __init__(self, body):
        self.body = body
        # A delimiter is CRLF "--" boundary (RFC 2046 5.1.1), but the first
        # may open the body: a CRLF in front makes it look like the others.
        self.buffer = CRLF
        self.ended = False

    def until(self, marker, limit):
        """
        The octets up to C{marker}, consumed with it.

        @raise ValueError: the body ends first, or more than C{limit}
            octets come before it.
        """
        pieces, size = [], 0
        keep = len(marker) - 1
        while True:
            found = self.buffer.find(marker)
            if found >= 0:
                if size + found > limit:
                    raise ValueError(BAD_FORM)
                pieces.append(self.buffer[:found])
                self.buffer = self.buffer[found + len(marker):]
                return b"".join(pieces)
            if self.ended:
                raise ValueError(BAD_FORM)
            # All but the last len(marker) - 1 octets are known to hold no
            # marker: set them aside, so that nothing is searched twice.
            if len(self.buffer) > keep:
                cut = len(self.buffer) - keep
                pieces.append(self.buffer[:cut])
                size += cut
                self.buffer = self.buffer[cut:]
                if size > limit:
                    raise ValueError(BAD_FORM)
            chunk = self.body.read(READ_CHUNK)
            if chunk:
                self.buffer += chunk
            else:
                self.ended = True

    def startsWith(self, octets):
        """Whether what comes next is C{octets} (nothing consumed)."""
        while len(self.buffer) < len(octets) and not self.ended:
            chunk = self.body.read(READ_CHUNK)
            self.buffer += chunk
            self.ended = not chunk
        return self.buffer.startswith(octets)

    def pushBack(self, octets):
        self.buffer = octets + self.buffer


def boundaryOf(contentType):
    """The boundary of a C{multipart/form-data} Content-Type (bytes); L{ValueError} if none."""
    header = email.message.Message()
    header["Content-Type"] = contentType.decode("latin-1")
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) \
            or not 0 < len(boundary) <= MAX_BOUNDARY or not boundary.isascii():
        raise ValueError(BAD_FORM)
    return boundary.encode("ascii")


def _described(header):
    """C{(name, filename, contentType)} of a part's header section (bytes)."""
    # RFC 7578 4.2: a file name may be UTF-8 as is (browsers send that).
    fields = email.parser.HeaderParser(policy=email.policy.HTTP).parsestr(
        header.decode("utf-8", "replace") + "\r\n\r\n")
    name = fields.get_param("name", header="content-disposition")
    filename = fields.get_filename()
    if filename is not None:
        # Old browsers sent the whole path: C:\Users\...\name.pdf.
        filename = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return (name if isinstance(name, str) else None), filename, fields.get_content_type()


def parse(contentType, body, maxParts=MAX_PARTS):
    """
    The parts of the form C{body} (a file) whose Content-Type header is
    C{contentType} (bytes): a list of L{FormPart}s, in order; parts
    without a name are left out.

    @raise ValueError: not C{multipart/form-data}, a part header section
        over L{MAX_HEADER} octets, more than C{maxParts} parts, or the
        body ends before its close delimiter.
    """
    delimiter = CRLF + b"--" + boundaryOf(contentType)
    reader = _Reader(body)
    reader.until(delimiter, MAX_HEADER)  # the preamble, ignored
    parts = []
    count = 0
    while True:
        # "--" closes (what follows is the epilogue, ignored); else the rest
        # of the delimiter line is transport padding.
        if reader.startsWith(b"--"):
            return parts
        if reader.until(CRLF, MAX_HEADER).strip(b" \t"):
            raise ValueError(BAD_FORM)
        count += 1
        if count > maxParts:
            raise ValueError(BAD_FORM)
        # The CRLF given back: a part without header fields is then found too.
        reader.pushBack(CRLF)
        header = reader.until(CRLF + CRLF, MAX_HEADER)
        data = reader.until(delimiter, float("inf"))
        name, filename, partType = _described(header[2:])
        if name:
            parts.append(FormPart(name, filename, partType, data))
