"""
A stored message parsed by Python's C{email} package, for the code that
wants its object model (SEARCH's text keys, the webmail reader, the
classifier's tokens, the content rules), with the one failure the package
has on hostile input kept out: it parses nested multiparts and
C{message/rfc822} parts by recursion, so a message nested a few hundred
levels deep (any sender can write one; a few KB do it) raises
C{RecursionError}, which became an internal error in every SEARCH of the
mailbox and a 500 in the webmail.  Its C{walk()}, C{get_body()} and
generator recurse too, some several frames a level: a message that parses
may still fail there (300 C{message/rfc822} levels did), so one nested
deeper than L{MAX_DEPTH} is flattened as well.

Trust: none; the octets are whatever a sender wrote.
"""

import email.parser
import email.policy

from pymailer.message.mime import MAX_DEPTH

# What a message too deeply nested to parse is shown as: its body as one
# text part (its source), its top-level fields as they are.
FLATTENED_TYPE = "text/plain"


def parseMessage(data, policy=email.policy.compat32):
    """
    C{data} as an C{email.message.Message} of C{policy}; never raises
    C{RecursionError}.

    A message nested deeper than L{MAX_DEPTH} (or than the parser's
    recursion can go) is parsed headers only: its top-level fields as written, and its body one
    C{text/plain} part holding the rest of the octets as they are (the
    nested parts' fields and boundaries included), so a text search still
    finds the words in it and a reader still shows it.  Its other fields
    are kept as they are; only Content-Type is replaced.
    """
    try:
        message = email.message_from_bytes(data, policy=policy)
        if not _deeperThan(message, MAX_DEPTH):
            return message
    except RecursionError:
        pass
    message = email.parser.BytesParser(policy=policy).parsebytes(data, headersonly=True)
    del message["Content-Type"]
    message["Content-Type"] = FLATTENED_TYPE + '; charset="utf-8"'
    return message


def _deeperThan(message, limit):
    """Whether C{message} has parts nested more than C{limit} levels (no recursion)."""
    stack = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > limit:
            return True
        payload = part.get_payload()
        if isinstance(payload, list):  # a multipart's parts, or message/rfc822's message
            stack.extend((child, depth + 1) for child in payload)
    return False
