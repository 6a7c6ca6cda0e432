"""
What IMAP needs of a message without opening it again: the formatted
ENVELOPE, BODYSTRUCTURE and BODY (RFC 3501 7.4.2), and the fields SORT and
THREAD use (RFC 5256, RFC 5957), computed once from the header section and
MIME structure when the content is written, and kept by the store per
content (L{pymailer.interfaces.IMailbox.summaries}).

The stored format is this module's: the three structures are kept in
RFC 3501's syntax (L{encodeStructure}), which FETCH sends as it is; a
change to what is stored bumps L{VERSION}.

Pure computation on octets (no files, no reactor): the stores call
L{summarize} in their thread pool; protocol code only reads the result.

Trusts nothing: the message is whatever a sender or an APPEND gave.  Header
fields are bounded (L{MAX_REFERENCES} ids), malformed values give empty
fields, never an exception.
"""

import calendar
import email.utils
import re
from typing import NamedTuple

from pymailer.message.mime import MultipartBody, Part, messageOctets, parseAddressList
from pymailer.message.words import decodeEncodedWords

# Bumped when what L{summarize} computes changes: a stored summary of an
# older version is computed again on its first read.
VERSION = 1
# Ids of a References field kept (the last ones: the nearest ancestors).
# Real threads carry tens; a hostile message may carry a megabyte of them.
MAX_REFERENCES = 1000
_MSG_ID = re.compile(rb"<([^<>]*)>")
_SPACE = re.compile(r"\s+")


# Named tuples, not dataclasses: a session's first SORT builds 10,000 of
# each, and a frozen dataclass's __init__ was half of that read.

class Address(NamedTuple):
    """The first address of a field: display name (decoded), mailbox, host."""

    name: str = ""
    mailbox: str = ""
    host: str = ""

    def addrSpec(self):
        return f"{self.mailbox}@{self.host}" if self.host else self.mailbox

    def display(self):
        """RFC 5957 3: the display name, else the addr-spec."""
        return self.name or self.addrSpec()


NOBODY = Address()


class MessageSummary(NamedTuple):
    """
    One message's summary.

    @ivar envelope: the ENVELOPE value, formatted as FETCH sends it.
    @ivar bodystructure: BODYSTRUCTURE, formatted.
    @ivar body: BODY (BODYSTRUCTURE without extension data), formatted.
        These three are C{None} when the reader asked for the sort fields
        only.
    @ivar date: the Date field as seconds since the epoch (UTC), or
        C{None} if missing or unparsable (RFC 5256 2.2: then the internal
        date counts).
    @ivar subject: the Subject, RFC 2047 words decoded.
    @ivar baseSubject: RFC 5256 2.1's base subject of C{subject}.
    @ivar isReply: whether extracting the base subject removed a reply or
        forward marker (C{Re:}, C{Fwd:}, C{(fwd)}, C{[fwd: ...]}).
    @ivar sender: the first From L{Address}; C{to}, C{cc} likewise.
    @ivar messageId: the Message-ID without its angle brackets, or C{""}.
    @ivar inReplyTo: the first id of In-Reply-To, or C{""}.
    @ivar references: the ids of References, in order (at most
        L{MAX_REFERENCES}, the last ones).
    @ivar hasAttachments: a part is an attachment (a disposition of
        C{attachment}, or a named non-text leaf).
    """

    envelope: bytes
    bodystructure: bytes
    body: bytes
    date: int
    subject: str
    baseSubject: str
    isReply: bool
    sender: Address
    to: Address
    cc: Address
    messageId: str
    inReplyTo: str
    references: tuple
    hasAttachments: bool


def summarize(content):
    """
    The L{MessageSummary} of an opened
    L{pymailer.interfaces.IMessageContent} (or anything with C{size} and
    C{readAt}).  I{Blocking} (reads the content).
    """
    data = messageOctets(content)
    part = Part(data, 0, len(data))
    # The ENVELOPE's address lists, parsed once: the sort fields' first
    # addresses come from them too.
    envelope = part.envelope()
    subject = decodeWords(part.header(b"subject"))
    base, isReply = baseSubject(subject)
    references = tuple(_ids(part.header(b"references")))[-MAX_REFERENCES:]
    inReplyTo = _ids(part.header(b"in-reply-to"))
    messageId = _ids(part.header(b"message-id"))
    return MessageSummary(
        envelope=encodeStructure(envelope),
        bodystructure=encodeStructure(part.bodystructure(True)),
        body=encodeStructure(part.bodystructure(False)),
        date=sentDate(part.header(b"date")),
        subject=subject, baseSubject=base, isReply=isReply,
        sender=_firstOf(envelope[_FROM]),
        to=_firstOf(envelope[_TO]),
        cc=_firstOf(envelope[_CC]),
        messageId=messageId[0] if messageId else "",
        inReplyTo=inReplyTo[0] if inReplyTo else "",
        references=references,
        hasAttachments=hasAttachments(part),
    )


# RFC 3501 9: a quoted string holds any 7-bit character but CR, LF and NUL.
_QUOTABLE = re.compile(rb'[\x01-\x09\x0b\x0c\x0e-\x7f]*')
# Longer strings are sent as literals, as FETCH does elsewhere.
MAX_QUOTED = 1024


def encodeStructure(value):
    """
    An ENVELOPE or BODYSTRUCTURE value of L{Part} in RFC 3501's syntax:
    C{None} is NIL, an C{int} a number, C{bytes} a quoted string or a
    literal, a list or tuple parenthesised; a multipart's children
    (L{MultipartBody}) follow each other without a space (RFC 3501 9,
    C{body-type-mpart = 1*body SP media-subtype ...}).
    """
    out = []
    _encodeInto(value, out)
    return b"".join(out)


def _encodeInto(value, out):
    """L{encodeStructure}'s pieces appended to C{out}, joined once at the end."""
    kind = type(value)  # exact types first: the usual values, without isinstance chains
    if value is None:
        out.append(b"NIL")
    elif kind is bytes:
        if len(value) < MAX_QUOTED and _QUOTABLE.fullmatch(value):
            if b"\\" in value or b'"' in value:
                value = value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            out += (b'"', value, b'"')
        else:
            out += (b"{%d}\r\n" % len(value), value)
    elif kind is list or kind is tuple:
        out.append(b"(")
        space = False
        for item in value:
            if space:
                out.append(b" ")
            space = True
            if item is None:  # most items are NIL: no call for them
                out.append(b"NIL")
            else:
                _encodeInto(item, out)
        out.append(b")")
    elif kind is int:
        out.append(b"%d" % value)
    elif isinstance(value, MultipartBody):
        out.append(b"(")
        for child in value[:value.parts]:
            _encodeInto(child, out)
        for item in value[value.parts:]:
            out.append(b" ")
            _encodeInto(item, out)
        out.append(b")")
    elif isinstance(value, bool):
        raise TypeError(value)
    elif isinstance(value, (list, tuple)):  # subclasses: as their base
        _encodeInto(list(value), out)
    elif isinstance(value, int):
        _encodeInto(int(value), out)
    elif isinstance(value, bytes):
        _encodeInto(bytes(value), out)
    else:
        raise TypeError(f"cannot encode {value!r}")


def decodeWords(raw):
    """A raw (unfolded) header value with RFC 2047 words decoded; C{""} if absent."""
    if raw is None:
        return ""
    # RFC 6532: raw UTF-8 is allowed.  Decoded in one pass: the email
    # package's decoding is quadratic in the number of words (a Subject of
    # 800 KB of them held a delivery thread for 8 s).
    return decodeEncodedWords(raw.decode("utf-8", "replace").strip())


def sentDate(raw):
    """The Date field as UTC seconds, or C{None} (RFC 5256 2.2)."""
    if raw is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(raw.decode("ascii", "replace"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        return int(calendar.timegm(parsed[:6] + (0, 1, -1)) - (parsed[9] or 0))
    except (ValueError, OverflowError):
        return None


def firstAddress(raw):
    """The first real address (not a group marker) of a field, or L{NOBODY}."""
    if raw is None:
        return NOBODY
    return _firstOf(parseAddressList(raw))


# Where the ENVELOPE (RFC 3501 7.4.2) has its From, To and Cc address lists.
_FROM, _TO, _CC = 2, 5, 6


def _firstOf(addresses):
    """L{firstAddress} of a parsed address list (C{None}: no field, or an empty one)."""
    for name, _, mailbox, host in addresses or ():
        if mailbox is not None and host is not None or (mailbox and name):
            return Address(decodeWords(name) if name else "",
                           (mailbox or b"").decode("utf-8", "replace"),
                           (host or b"").decode("utf-8", "replace"))
    return NOBODY


def _ids(raw):
    """The msg-ids of a field, brackets and folding whitespace removed."""
    if raw is None:
        return []
    out = []
    for m in _MSG_ID.finditer(raw):
        value = re.sub(rb"\s+", b"", m[1])
        if value:
            out.append(value.decode("utf-8", "replace"))
    return out


def hasAttachments(part):
    """Whether any part of the tree is an attachment (iteratively)."""
    stack = [part]
    while stack:
        current = stack.pop()
        if current.children:
            stack.extend(current.children)
            continue
        if current.message is not None:
            stack.append(current.message)
            continue
        disposition = current.header(b"content-disposition")
        if disposition is not None and disposition.strip().lower().startswith(b"attachment"):
            return True
        if current is not part and current.type != b"text" and (
                b"name" in dict(current.params or ()) or disposition is not None):
            return True
    return False


# -- RFC 5256 2.1: base subject -----------------------------------------------

# subj-blob = "[" *BLOBCHAR "]" *WSP
_BLOB = r"\[[^\[\]]*\][ ]*"
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_REFWD = r"(?:re|fwd?)[ ]*(?:" + _BLOB + r")?:"
# subj-leader = (*subj-blob subj-refwd) / WSP: the blobs before a
# subj-refwd go one at a time by step (4), which removes a blob whenever a
# subject is left (a subj-refwd is one), so the pattern needs no "*blob"
# (whose backtracking made "[a][a]...[a]x" quadratic).
_LEADER = re.compile(_REFWD + r"|[ ]", re.I)
_BLOB_ONLY = re.compile(_BLOB)


def baseSubject(subject):
    """
    RFC 5256 2.1: the base subject of a (decoded) subject, and whether a
    reply or forward marker was taken off (THREAD=REFERENCES step 5).
    Works with positions, not by copying what is left after each marker:
    linear in the subject's length however many markers a hostile one
    carries.
    """
    # (1) tabs, continuations and runs of spaces become one space.
    text = _SPACE.sub(" ", subject)
    start, end = 0, len(text)
    isReply = False
    while True:
        # (2) subj-trailer = "(fwd)" / WSP, repeatedly; "(fwd)" is a
        # forward marker.
        while end > start:
            if text[end - 1] == " ":
                end -= 1
            elif end - start >= 5 and text[end - 5:end].lower() == "(fwd)":
                end -= 5
                isReply = True
            else:
                break
        # (3)-(5) leaders, and a blob whose removal leaves a subject.
        while start < end:
            m = _LEADER.match(text, start, end)
            if m is not None:
                isReply = isReply or m[0] != " "
                start = m.end()
                continue
            m = _BLOB_ONLY.match(text, start, end)
            if m is not None and m.end() < end:
                start = m.end()
                continue
            break
        # (6) "[fwd:" ... "]": take it off and start again from (2).
        if end - start >= 6 and text[start:start + 5].lower() == "[fwd:" \
                and text[end - 1] == "]":
            start, end = start + 5, end - 1
            isReply = True
            continue
        return text[start:end], isReply
