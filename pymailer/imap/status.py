"""
STATUS items (RFC 3501 6.3.10), shared by STATUS and LIST's RETURN
(STATUS (...)) (LIST-STATUS, RFC 5819), with HIGHESTMODSEQ (RFC 7162) and
SIZE (RFC 8438: the total of the messages' RFC822.SIZE) and DELETED (RFC
9051 6.3.11: the messages flagged C{\\Deleted}) and DELETED-STORAGE (RFC
9208: the room an EXPUNGE would free, in its 1024-octet units).

Read from a store snapshot, which does not claim C{\\Recent}: STATUS must
not change it (RFC 3501 6.3.10).
"""

from pymailer.imap.parser import Atom, ParseError, formatValue
from pymailer.imap.quota import units

ITEMS = (b"MESSAGES", b"RECENT", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN", b"HIGHESTMODSEQ",
         b"SIZE", b"DELETED", b"DELETED-STORAGE", b"MAILBOXID")


def parseItems(tokens):
    """The items of a STATUS list, upper-cased; BAD for any unknown one."""
    if not isinstance(tokens, list) or not tokens:
        raise ParseError("STATUS needs a list of items")
    items = [t.upper() for t in tokens if isinstance(t, Atom)]
    if len(items) != len(tokens) or any(i not in ITEMS for i in items):
        raise ParseError("unknown STATUS item")
    return items


def values(snapshot, items):
    """Blocking only as far as the snapshot was: the items' numbers."""
    messages = snapshot.messages
    compute = {
        b"MESSAGES": lambda: len(messages),
        b"RECENT": lambda: len(snapshot.recent),
        b"UIDNEXT": lambda: snapshot.uidNext,
        b"UIDVALIDITY": lambda: snapshot.uidValidity,
        b"UNSEEN": lambda: sum(1 for i in messages if "\\Seen" not in i.flags),
        b"HIGHESTMODSEQ": lambda: snapshot.highestModSeq,
        b"SIZE": lambda: sum(i.size for i in messages),
        b"DELETED": lambda: sum(1 for i in messages if "\\Deleted" in i.flags),
        b"DELETED-STORAGE": lambda: units(sum(i.size for i in messages if "\\Deleted" in i.flags)),
        b"MAILBOXID": lambda: snapshot.mailboxId,  # RFC 8474 4.3
    }
    return {i: compute[i]() for i in items}


def statusLine(encodedName, items, numbers):
    parts = b" ".join(b"MAILBOXID (%s)" % numbers[i].encode() if i == b"MAILBOXID"
                      else b"%s %d" % (i, numbers[i]) for i in items)
    return b"* STATUS %s (%s)" % (formatValue(encodedName), parts)
