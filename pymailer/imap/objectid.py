"""
OBJECTID (RFC 8474) and SAVEDATE (RFC 8514): the message and mailbox
attributes they add to FETCH, SEARCH, STATUS, CREATE and SELECT, read from
the store (L{pymailer.interfaces.IMailbox.mailboxId},
L{pymailer.interfaces.IMailbox.emailIds},
L{pymailer.store.MessageInfo.saveDate}).

THREADID: not computed.  RFC 8474 5.2 lets a server without threading
answer C{THREADID NIL} to every FETCH and match no message on C{SEARCH
THREADID}; that is what we do.  The THREAD command (RFC 5256) builds its
threads per command from the cached headers, and an ObjectID that must
never change once told (5.2) would need the store to keep thread
membership, which it does not.

Trust: an ObjectID from the client (SEARCH EMAILID) is only compared, after
a check of its syntax (RFC 8474 7).
"""

import re

from pymailer.imap.parser import ParseError, astring

SAVEDATE = b"SAVEDATE"
OBJECTID = b"OBJECTID"
CAPABILITIES = (SAVEDATE, OBJECTID)

# RFC 8474 5.3: data items needing no message content (SAVEDATE, RFC 8514
# 4.2, is formatted with INTERNALDATE in pymailer.imap.fetch).
FETCH_ITEMS = frozenset({"EMAILID", "THREADID"})

_OBJECTID = re.compile(rb"[A-Za-z0-9_-]{1,255}")


def parseObjectId(token):
    """RFC 8474 7: C{objectid = 1*255(ALPHA / DIGIT / "_" / "-")}, case-sensitive."""
    raw = astring(token, "objectid")
    if not _OBJECTID.fullmatch(raw):
        raise ParseError("bad objectid")
    return raw.decode("ascii")


def needsEmailIds(items):
    """Whether a FETCH asks for EMAILID (read from the store first)."""
    return any(i.name == "EMAILID" for i in items)


def loadEmailIds(selected, uids):
    """
    Blocking: the EMAILIDs of C{uids} not yet known to the session, into
    C{selected.emailIds} (immutable for a UID, RFC 8474 5.1: kept while the
    mailbox stays selected).
    """
    missing = [u for u in uids if u not in selected.emailIds]
    if missing:
        selected.emailIds.update(selected.mailbox.emailIds(missing))
    return selected.emailIds


def fetchPiece(name, selected, u):
    """One of L{FETCH_ITEMS} for message C{u}, as a response piece."""
    if name == "EMAILID":
        emailId = selected.emailIds.get(u)
        # Expunged by another session before its id was read: no id to give.
        return b"EMAILID (%s)" % emailId.encode() if emailId else b"EMAILID NIL"
    return b"THREADID NIL"  # RFC 8474 5.2: see the module docstring


def mailboxIdCode(mailboxId):
    """RFC 8474 4.1, 4.2: the C{MAILBOXID} response code."""
    return b"[MAILBOXID (%s)]" % mailboxId.encode()
