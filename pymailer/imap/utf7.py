"""
Modified UTF-7 for mailbox names (RFC 3501 5.1.3), strict both ways.

Decoding refuses every non-canonical form (a base64 run that encodes a
printable ASCII character, C{&} not written C{&-}, two adjacent encoded runs,
padding, non-zero trailing bits): two spellings of one name must never name
two different mailboxes, nor slip a C{/} or C{..} past a check done on the
other spelling.
"""

import base64
import binascii


class UTF7Error(ValueError):
    """A mailbox name that is not canonical modified UTF-7."""


def _printable(c):
    return 0x20 <= ord(c) <= 0x7E


def encode(name):
    """C{str} -> C{bytes} in modified UTF-7."""
    out = []
    run = []

    def flush():
        if run:
            data = "".join(run).encode("utf-16-be")
            b64 = base64.b64encode(data).rstrip(b"=").replace(b"/", b",")
            out.append(b"&" + b64 + b"-")
            run.clear()

    for c in name:
        if _printable(c):
            flush()
            out.append(b"&-" if c == "&" else c.encode("ascii"))
        else:
            run.append(c)
    flush()
    return b"".join(out)


def decode(data):
    """
    C{bytes} in modified UTF-7 -> C{str}.

    @raise UTF7Error: malformed or non-canonical.
    """
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise UTF7Error("8-bit character in mailbox name") from None
    out = []
    i = 0
    previousWasRun = False
    while i < len(data):
        c = data[i]
        if c >= 0x80:
            raise UTF7Error("8-bit character in mailbox name")
        if c != 0x26:  # '&'
            if not 0x20 <= c <= 0x7E:
                raise UTF7Error("control character in mailbox name")
            out.append(chr(c))
            previousWasRun = False
            i += 1
            continue
        end = data.find(b"-", i + 1)
        if end < 0:
            raise UTF7Error("unterminated &... sequence")
        chunk = data[i + 1:end]
        i = end + 1
        if not chunk:
            out.append("&")
            previousWasRun = False
            continue
        if previousWasRun:
            raise UTF7Error("adjacent encoded sequences")
        if len(chunk) % 4 == 1 or not all(
                ch in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"
                for ch in chunk):
            raise UTF7Error("bad modified base64")
        padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
        try:
            raw = base64.b64decode(padded, validate=True)
        except binascii.Error:
            raise UTF7Error("bad modified base64") from None
        if len(raw) % 2:
            raise UTF7Error("odd number of UTF-16 octets")
        try:
            text = raw.decode("utf-16-be")
        except UnicodeDecodeError:
            raise UTF7Error("bad UTF-16 in mailbox name") from None
        if any(_printable(ch) for ch in text):
            raise UTF7Error("printable ASCII encoded in base64")
        # Canonical: re-encoding gives the same bytes (no stray bits).
        if encode(text) != b"&" + chunk + b"-":
            raise UTF7Error("non-canonical modified base64")
        out.append(text)
        previousWasRun = True
    return "".join(out)
