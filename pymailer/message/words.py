"""
RFC 2047 encoded words (C{=?charset?Q?...?=}, C{=?charset?B?...?=}) in a
header value, decoded in one pass.

C{email.header.decode_header} does the same in time quadratic in the
number of words (it pops each from the front of a list and grows the
decoded bytes one word at a time): a 2 MB To field of encoded display
names, which anyone may send, took some 20 s of a core at every SEARCH.
Here the pattern cannot cross white space or a C{?} (RFC 2047 2: an
encoded word is one token) and each word is decoded once, so the work is
linear in the value's length.

Trusts nothing: a word that does not decode (bad base64, an unknown
charset) is shown as its undecoded text or with replacement characters;
this never raises.
"""

import binascii
import re

# RFC 2047 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?=";
# charset may carry an RFC 2231 language ("utf-8*en").
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([^?\s]*)\?=")


def _wordOctets(encoding, text):
    """The octets of one word's encoded text, or C{None} if they do not decode."""
    raw = text.encode("ascii", "replace")
    if encoding in "Qq":
        # RFC 2047 4.2: "_" is a space, "=XX" an octet.
        return binascii.a2b_qp(raw, header=True)
    try:
        # Postel: missing padding added, as email.header does.
        return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)
    except binascii.Error:
        return None


def _decoded(octets, charset):
    try:
        return octets.decode(charset, "replace")
    except LookupError:
        return octets.decode("utf-8", "replace")


def decodeEncodedWords(text):
    """
    C{text} (a C{str}, unfolded) with its encoded words decoded: adjacent
    words separated only by white space are joined without it (RFC 2047
    6.2), and words of one charset are decoded together, so a character
    split between two words comes out whole.
    """
    if "=?" not in text:
        return text
    pieces = []
    run = None  # [charset, bytearray]: adjacent words not yet decoded
    end = 0
    for m in _ENCODED_WORD.finditer(text):
        charset, encoding, encoded = m.groups()
        octets = _wordOctets(encoding, encoded)
        if octets is None:
            continue  # left as it is, part of the text around it
        between = text[end:m.start()]
        charset = charset.lower()
        if run is not None and not between.strip():
            if run[0] != charset:
                pieces.append(_decoded(run[1], run[0]))
                run = [charset, bytearray()]
        else:
            if run is not None:
                pieces.append(_decoded(run[1], run[0]))
            pieces.append(between)
            run = [charset, bytearray()]
        run[1] += octets
        end = m.end()
    if run is not None:
        pieces.append(_decoded(run[1], run[0]))
    pieces.append(text[end:])
    return "".join(pieces)
