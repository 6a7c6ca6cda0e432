"""
CATENATE (RFC 4469): an APPEND whose message is built on the server from
TEXT literals and URL parts naming messages, or sections of them, in the
user's own mailboxes (IMAP URLs, RFC 5092), so a client forwarding an
attachment or saving a draft does not download and upload it again.

  append-data =/ "CATENATE" SP "(" cat-part *(SP cat-part) ")"
  cat-part    = text-literal / url
  text-literal = "TEXT" SP literal
  url          = "URL" SP astring

URLs taken: the absolute path C{/mailbox[;UIDVALIDITY=n]/;UID=n
[/;SECTION=s][/;PARTIAL=o[.l]]} and the same after C{imap://[user@]host}
when the user (if named) is the session's: the client names the host it
connected to, which only it knows (a C{hostname} given to L{parseURL}
is checked).  Names, sections and
numbers are percent-decoded (RFC 5092 3: mailbox names in UTF-8).  A URL
naming another server, a URLAUTH URL, another mailbox than the user's, a
UIDVALIDITY that no longer holds, a message that is not there, or a
section that is not there is refused with C{NO [BADURL url]} (RFC 4469
4.1), and the whole APPEND with it (every message of a MULTIAPPEND).

Bounded as APPEND is: TEXT literals arrive like APPEND's (each checked
against the message size limit before its C{+}, spooled to disk past
256 KiB); the message is written to a scratch file from the store
(L{IMailStore.newAppendSpool}) in chunks, URL content read with
C{readAt} chunk by chunk, and a message growing past the limit stops at
once with C{NO [TOOBIG]} (RFC 4469 4.2).  All of it runs in the thread
pool.

Trust: URLs come from the client; they are parsed here, never handed to
anything else, and can only reach the logged-in user's mailboxes through
the store (whose names L{canonicalName} checks).
"""

import io
import re
from urllib.parse import unquote_to_bytes

from pymailer.imap.errors import CommandFailed
from pymailer.imap.fetch import _parseSection, _sectionRange
from pymailer.message.mime import Part, messageOctets
from pymailer.imap.parser import FileLiteral, Literal, ParseError, isAtom

CHUNK = 256 * 1024
CAPABILITY = b"CATENATE"
_PATH = re.compile(
    rb"/(?P<mailbox>[^;/?#]+(?:/[^;/?#]+)*)(?:;UIDVALIDITY=(?P<validity>[0-9]{1,10}))?"
    rb"/;UID=(?P<uid>[0-9]{1,10})"
    rb"(?:/;SECTION=(?P<section>[^/;?#]+))?"
    rb"(?:/;PARTIAL=(?P<offset>[0-9]{1,10})(?:\.(?P<length>[0-9]{1,10}))?)?",
    re.IGNORECASE)
_SERVER = re.compile(rb"imap://(?:(?P<user>[^@/;]*)(?:;AUTH=[^@/]*)?@)?(?P<host>[^/:]+)"
                     rb"(?::[0-9]{1,5})?(?P<path>/.*)", re.IGNORECASE | re.DOTALL)


class BadURL(Exception):
    """A URL part that cannot be used; C{args[0]} is the URL as sent."""


class Catenation:
    """
    One CATENATE message: C{parts} are C{(b"TEXT", literal)} and
    C{(b"URL", url bytes)}, in order.
    """

    def __init__(self, parts):
        self.parts = parts

    def fileLiterals(self):
        return [value for kind, value in self.parts if isinstance(value, FileLiteral)]


def parseCatenation(tokens):
    """
    The list after C{CATENATE} -> a L{Catenation}; L{ParseError} (BAD) for
    anything RFC 4469 5 does not allow: no parts, a TEXT that is not a
    literal, an unknown part.
    """
    if not isinstance(tokens, list) or not tokens or len(tokens) % 2:
        raise ParseError("CATENATE needs (TEXT literal / URL url ...)")
    parts = []
    for kind, value in zip(tokens[::2], tokens[1::2]):
        if isAtom(kind, b"TEXT") and isinstance(value, (Literal, FileLiteral)):
            parts.append((b"TEXT", value))
        elif isAtom(kind, b"URL") and isinstance(value, bytes):  # an astring
            parts.append((b"URL", bytes(value)))
        else:
            raise ParseError("CATENATE parts are TEXT literal or URL url")
    return Catenation(parts)


def parseURL(url, user, hostname=None):
    """
    C{(mailbox, uidValidity or None, uid, section bytes, partial or None)}
    of a URL part, the mailbox decoded (C{str}).

    @param user: the session's user (C{local@domain}).
    @param hostname: this server's name, or C{None} (any host is taken).
    @raise BadURL: not one this server can use.
    """
    path = url
    server = _SERVER.fullmatch(url)
    if server is not None:
        named = unquote_to_bytes(server["user"] or b"").decode("utf-8", "replace").lower()
        host = server["host"].decode("ascii", "replace").lower()
        if named and named not in (user.lower(), user.partition("@")[0].lower()):
            raise BadURL(url)
        if hostname is not None and host != hostname.lower():
            raise BadURL(url)  # another server's message
        path = server["path"]
    if b";URLAUTH=" in path.upper():
        raise BadURL(url)  # RFC 4467: not offered here
    match = _PATH.fullmatch(path)
    if match is None:
        raise BadURL(url)
    try:
        mailbox = unquote_to_bytes(match["mailbox"]).decode("utf-8")
        section = unquote_to_bytes(match["section"] or b"")
    except UnicodeDecodeError:
        raise BadURL(url) from None
    validity = int(match["validity"]) if match["validity"] else None
    partial = None
    if match["offset"] is not None:
        partial = (int(match["offset"]), int(match["length"]) if match["length"] else None)
    return mailbox, validity, int(match["uid"]), section, partial


def build(catenation, openMailbox, newSpool, limit, user, hostname=None):
    """
    Blocking: write the message of C{catenation} to a scratch file.

    @param openMailbox: the user's mailbox by name (L{KeyError} if none).
    @param newSpool: a new scratch file (L{IMailStore.newAppendSpool}).
    @param limit: the largest message allowed, in octets.
    @return: a L{FileLiteral} on the message, positioned at 0 (the caller
        closes its file).
    @raise CommandFailed: C{[BADURL url]} or C{[TOOBIG]}.
    """
    spool = newSpool()
    written = [0]

    def write(data):
        written[0] += len(data)
        if written[0] > limit:
            raise CommandFailed("[TOOBIG] The message would be larger than the limit")
        spool.write(data)

    try:
        for kind, value in catenation.parts:
            if kind == b"TEXT":
                source = value.file if isinstance(value, FileLiteral) else io.BytesIO(bytes(value))
                while chunk := source.read(CHUNK):
                    write(chunk)
            else:
                try:
                    _copyURL(value, openMailbox, write, user, hostname)
                except BadURL:
                    raise CommandFailed(f"[BADURL {_respText(value)}] Cannot catenate this URL") \
                        from None
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return FileLiteral(spool, written[0])


def _respText(url):
    """The URL as RFC 4469 5's url-resp-text: no CR, LF, NUL nor "]"."""
    return "".join(chr(c) for c in url if 0x20 <= c < 0x7F and c != 0x5D) or "-"


def _copyURL(url, openMailbox, write, user, hostname):
    mailbox, validity, uid, section, partial = parseURL(url, user, hostname)
    try:
        box = openMailbox(mailbox)
        if validity is not None and box.uidValidity() != validity:
            raise BadURL(url)  # RFC 5092 6: the UIDs mean other messages now
        content = box.openMessage(uid)
    except (KeyError, ValueError):
        raise BadURL(url) from None
    with content:
        start, end, data = _sectionBounds(content, section, url)
        if partial is not None:
            offset, length = partial
            start = min(start + offset, end)
            end = end if length is None else min(start + length, end)
        if data is not None:
            write(bytes(data[start:end]))
            return
        while start < end:
            chunk = content.readAt(start, min(CHUNK, end - start))
            if not chunk:
                raise BadURL(url)  # shorter than its index says
            write(chunk)
            start += len(chunk)


def _sectionBounds(content, section, url):
    """
    C{(start, end, None)} of the section in C{content}, or C{(0, n, bytes)}
    for one that is not one range (HEADER.FIELDS).
    """
    if not section:
        return 0, content.size, None
    try:
        numbers, spec, fields = _parseSection(section)
    except ParseError:
        raise BadURL(url) from None
    data = messageOctets(content)
    part = Part(data, 0, len(data))
    if part.find(numbers) is None:
        raise BadURL(url)  # RFC 4469 4.1: a section that is not there
    start, end = _sectionRange(part, numbers, spec, fields, data)
    if start is None:
        built = part.section(numbers, spec, fields)
        return 0, len(built), built
    return start, end, None


def resolve(messages, build):
    """
    Blocking: the APPEND messages with every L{Catenation} built by
    C{build(catenation)}; on failure the files built so far are closed.

    @return: C{(messages, built files)}: close the files after appending.
    """
    out, files = [], []
    try:
        for flags, date, message in messages:
            if isinstance(message, Catenation):
                message = build(message)
                files.append(message.file)
            out.append((flags, date, message))
    except BaseException:
        for f in files:
            f.close()
        raise
    return out, files

