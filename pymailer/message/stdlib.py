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
deeper than L{MAX_DEPTH} is flattened as well.  And its address parser
(what C{message["From"]} runs with the default policy) takes time growing
with the square of the field: a From of 60 KB took a second, one of 2 MB
minutes, so a field longer than L{MAX_FIELD} is cut there for it.

Trust: none; the octets are whatever a sender wrote.
"""

import email.parser
import email.policy

from pymailer.message.mime import MAX_DEPTH

# The longest field (as written, folded) the email package's header
# classes parse: one address is well under 1 KiB; 8 KiB take 0.03 s (and
# each look-up parses the field again).
MAX_FIELD = 8 * 1024

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

    With a policy that parses fields into objects (C{email.policy.default}),
    the top-level fields longer than L{MAX_FIELD} are cut to that length.
    """
    try:
        message = email.message_from_bytes(data, policy=policy)
        if not _deeperThan(message, MAX_DEPTH):
            return _cutLongFields(message, policy)
    except RecursionError:
        pass
    message = email.parser.BytesParser(policy=policy).parsebytes(data, headersonly=True)
    del message["Content-Type"]
    message["Content-Type"] = FLATTENED_TYPE + '; charset="utf-8"'
    return _cutLongFields(message, policy)


def _cutLongFields(message, policy):
    """C{message} with its fields over L{MAX_FIELD} cut, for a parsing policy."""
    if not isinstance(policy, email.policy.EmailPolicy):
        return message  # compat32 keeps fields as strings: nothing slow
    fields = list(message.raw_items())
    if all(len(value) <= MAX_FIELD for _, value in fields):
        return message
    for name in {name for name, _ in fields}:
        del message[name]
    for name, value in fields:
        # set_raw keeps the order and stores the value unparsed, as read.
        message.set_raw(name, value[:MAX_FIELD])
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
