"""
BINARY (RFC 3516): C{FETCH BINARY[part]<partial>}, C{BINARY.PEEK} and
C{BINARY.SIZE}: a body part with its Content-Transfer-Encoding undone, so a
client downloading an attachment gets its octets and not base64.

Trust: the part's header and body come from the stored message, which came
from anyone; a base64 body with junk in it is decoded leniently (junk
skipped, as Dovecot does) rather than refused, an encoding we do not know
is refused with C{NO [UNKNOWN-CTE]} (RFC 3516 4.3), never guessed.
"""

import binascii
import re

from pymailer.imap import fetch
from pymailer.imap.parser import ParseError, number, Atom

# RFC 3516 4.2: encodings whose octets are already the content.
_IDENTITY = (b"", b"7bit", b"8bit", b"binary")
_ITEM = re.compile(
    rb"(BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([0-9.]*)\](?:<(\d{1,10})\.(\d{1,10})>)?$", re.I)
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


class UnknownTransferEncoding(Exception):
    """The part's Content-Transfer-Encoding is not one we can undo."""


def parseItem(token):
    """
    The L{fetch.FetchItem} for a C{BINARY*} fetch-att, C{None} if C{token}
    is not one, or L{ParseError}.  RFC 3516 9: section-binary holds part
    numbers only (no HEADER, TEXT, MIME), and BINARY.SIZE takes no partial.
    """
    raw = bytes(token)
    if not raw.upper().startswith(b"BINARY"):
        return None
    m = _ITEM.match(raw)
    if m is None:
        raise ParseError("bad BINARY item (BINARY[part]<partial>, BINARY.SIZE[part])")
    kind = m[1].upper()
    numbers = [number(Atom(p), "section part", allowZero=False)
               for p in m[2].split(b".")] if m[2] else []
    label = b"[" + b".".join(b"%d" % n for n in numbers) + b"]"
    if kind == b"BINARY.SIZE":
        if m[3] is not None:
            raise ParseError("BINARY.SIZE takes no partial")
        return fetch.FetchItem("BINARY.SIZE", True, False, numbers, b"BINARY.SIZE" + label)
    partial = None
    if m[3] is not None:
        partial = (int(m[3]), int(m[4]))
        if partial[1] == 0:
            raise ParseError("partial length must not be 0")
    return fetch.FetchItem("BINARY", True, kind == b"BINARY", numbers, b"BINARY" + label, partial)


def _encoding(part):
    value = part.header(b"content-transfer-encoding")
    return (value or b"").strip().lower()


def decode(body, encoding):
    """C{body} with C{encoding} undone, or L{UnknownTransferEncoding}."""
    if encoding in _IDENTITY:
        return bytes(body)
    if encoding == b"base64":
        clean = _BASE64_JUNK.sub(b"", bytes(body))  # "=" too: padding is ours
        clean = clean[:len(clean) - (len(clean) % 4 == 1)]  # a lone 6 bits is no octet
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    if encoding == b"quoted-printable":
        return binascii.a2b_qp(bytes(body))
    raise UnknownTransferEncoding(encoding.decode("ascii", "replace")[:40])


def _encodedLeaves(part):
    """The parts below (or at) C{part} whose body is encoded, in order."""
    if part.children:
        for child in part.children:
            yield from _encodedLeaves(child)
    elif part.message is not None:
        yield from _encodedLeaves(part.message)
    elif _encoding(part) not in _IDENTITY:
        yield part


def _decodeTree(data, start, end, leaves):
    """
    C{data[start:end]}, a multipart or a whole message, with each encoded
    leaf's body decoded and its Content-Transfer-Encoding field saying
    C{binary} -- what Dovecot answers (its sizes are the reference data's)
    for BINARY on a part that is not a leaf.
    """
    out, pos = [], start
    for leaf in leaves:
        decoded = decode(data[leaf.bodyStart:leaf.end], _encoding(leaf))
        header = bytes(data[leaf.start:leaf.bodyStart])
        for name, _, raw in leaf.headers:
            if name == b"content-transfer-encoding":
                header = header.replace(raw, raw[:raw.index(b":") + 1] + b" binary\r\n", 1)
        out += [bytes(data[pos:leaf.start]), header, decoded]
        pos = leaf.end
    out.append(bytes(data[pos:end]))
    return b"".join(out)


def _decoded(part, numbers, data):
    """
    C{(start, end, decoded)} for BINARY[numbers]: C{decoded} is C{None}
    when the octets C{data[start:end]} are the answer as stored.
    """
    target = part.find(numbers) if numbers else part
    if target is None:
        return 0, 0, b""  # a part that does not exist is empty, as BODY[] (Dovecot)
    start = target.bodyStart if numbers else part.start  # BINARY[]: the whole message
    if not numbers or target.children or target.message is not None:
        leaves = list(_encodedLeaves(target))
        if not leaves:
            return start, target.end, None
        return start, target.end, _decodeTree(data, start, target.end, leaves)
    encoding = _encoding(target)
    if encoding in _IDENTITY:
        return start, target.end, None
    return start, target.end, decode(data[start:target.end], encoding)


def binaryPieces(item, part, data, reopen):
    """The response pieces of one C{BINARY*} item for one message."""
    start, end, decoded = _decoded(part, item.section, data)
    if item.name == "BINARY.SIZE":
        return [item.label + b" %d" % ((end - start) if decoded is None else len(decoded))]
    if decoded is not None:
        start, end, data = 0, len(decoded), decoded
    label = item.label
    if item.partial is not None:
        offset, length = item.partial
        start = min(start + offset, end)
        end = min(start + length, end)
        label += b"<%d>" % offset
    # RFC 3516 4.2 / RFC 9051 4.3: octets with NUL go in a literal8.
    tilde = b"~" if data.find(b"\x00", start, end) >= 0 else b""
    head = label + b" " + tilde + b"{%d}\r\n" % (end - start)
    if decoded is None and end - start > fetch.STREAM_THRESHOLD:
        return [head, fetch.Range(reopen(), start, end - start)]
    return [head, bytes(data[start:end])]
