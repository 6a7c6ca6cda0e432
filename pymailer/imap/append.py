"""
APPEND's arguments (RFC 3501 6.3.11) with MULTIAPPEND (RFC 3502): one or
more messages, each with optional flags and date, all stored or none.

The store appends one message at a time, so "none" is made good after the
fact: if a later message fails, the ones already appended are expunged
again before the NO (RFC 3502 3 asks that none be seen after a failure;
another session may glimpse them for that moment).

With UTF8=ACCEPT enabled (RFC 6855 4) a message may come as C{UTF8
(~{n})}: the same octets, a message whose headers may hold UTF-8.  With
CATENATE (RFC 4469) it may come as C{CATENATE (...)}, a
L{pymailer.imap.catenate.Catenation} built before the appends.
"""

import io

from pymailer.imap import catenate, search
from pymailer.imap.parser import FileLiteral, Literal, ParseError, String, isAtom


def parseMessages(tokens, flagList, utf8=False):
    """
    C{[(flags, date, message)]} from the tokens after the mailbox name;
    C{flagList} checks a flag list.  A date is a quoted string and a
    message a literal (RFC 3501 9, append-opts and append-data): the
    tokenizer's L{Literal} tells them apart.  C{utf8}: the session enabled
    UTF8=ACCEPT, so C{UTF8 (literal8)} is a message too.
    """
    messages = []
    tokens = list(tokens)
    while tokens:
        flags, date = (), None
        if isinstance(tokens[0], list):
            flags = flagList(tokens.pop(0))
        if tokens and isinstance(tokens[0], String) and not isinstance(tokens[0], Literal):
            date = search.parseInternalDate(tokens.pop(0).decode("ascii", "replace"))
        if tokens and isAtom(tokens[0], b"UTF8"):
            # RFC 6855 4: append-data =/ "UTF8" SP "(" literal8 ")".
            if not utf8:
                raise ParseError("APPEND UTF8 needs ENABLE UTF8=ACCEPT")
            tokens.pop(0)
            inner = tokens.pop(0) if tokens and isinstance(tokens[0], list) else None
            if inner is None or len(inner) != 1:
                raise ParseError("APPEND UTF8 needs (literal8)")
            tokens.insert(0, inner[0])
        if tokens and isAtom(tokens[0], b"CATENATE"):
            tokens.pop(0)
            messages.append((flags, date, catenate.parseCatenation(
                tokens.pop(0) if tokens else None)))
            continue
        if not tokens or not isinstance(tokens[0], (Literal, FileLiteral)):
            raise ParseError("APPEND needs each message as a literal")
        messages.append((flags, date, tokens.pop(0)))
    if not messages:
        raise ParseError("APPEND needs a mailbox and a message")
    return messages


def fileLiterals(messages):
    """The spooled literals of the messages (CATENATE's TEXT parts too)."""
    found = []
    for _, _, message in messages:
        if isinstance(message, catenate.Catenation):
            found += message.fileLiterals()
        elif isinstance(message, FileLiteral):
            found.append(message)
    return found


def size(message):
    """The message's size in octets."""
    return message.size if isinstance(message, FileLiteral) else len(message)


def source(message):
    """A file to read the message from."""
    if isinstance(message, FileLiteral):
        return message.file
    return io.BytesIO(bytes(message))


def appendAll(mailbox, messages):
    """
    Blocking: append every message, or none (RFC 3502 3).  @return: the
    new UIDs, in order.
    """
    uids = []
    try:
        for flags, date, message in messages:
            uids.append(mailbox.append(source(message), flags, date))
    except BaseException:
        if uids:
            mailbox.expunge(uids)
        raise
    return uids
