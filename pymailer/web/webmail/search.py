"""
Searching a folder: from, to, subject (the store's summaries, its index
of the fields SORT and THREAD use: no message is opened) and body text
(read from the store, decoded as IMAP SEARCH BODY decodes it,
L{pymailer.imap.search.Message}).

The store keeps no full-text index, so a body search reads messages:
newest first, in the thread pool, and only until one more match than the
page asked for is found (the next page is then known to exist), so a
search's cost follows the page shown, not the folder's size, unless the
words are rare.  Matching is case-insensitive substring matching, as
IMAP's (RFC 3501 6.4.4).

Blocking: callers run it in the thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymailer.imap.search import Message
from pymailer.web.webmail.mailbox import PAGE_SIZE, Row
from pymailer.web.webmail.names import webName

FIELDS = ("all", "from", "to", "subject", "body")
# Summaries read per store call.
CHUNK = 200
# Bytes of a message read for a body search: the text is at the start.
MAX_BODY = 1024 * 1024
MAX_QUERY = 200


@dataclass
class Results:
    """One page of matches, newest first; C{more}: a next page exists."""

    name: str
    rows: list
    page: int
    more: bool


def _address(address):
    """The display name and the address, as SEARCH FROM matches both."""
    return f"{address.name} {address.addrSpec()}" if address is not None else ""


def _headerText(summary, field):
    fields = {"from": _address(summary.sender), "to": _address(summary.to),
              "subject": summary.subject or ""}
    if field in fields:
        return fields[field].casefold()
    return "\n".join(fields.values()).casefold()


def _bodyText(mailbox, info):
    def load(uid):
        with mailbox.openMessage(uid) as source:
            return source.read(MAX_BODY)

    return Message(0, info, info.flags, load).bodyText()


def search(mailbox, query, field="all", page=0):
    """
    The L{Results} page C{page} of messages of C{mailbox} (an
    L{pymailer.interfaces.IMailbox}) whose C{field} (one of L{FIELDS})
    contains C{query}.
    """
    words = query.strip()[:MAX_QUERY].casefold()
    if not words:
        raise ValueError("Type what to search for.")
    if field not in FIELDS:
        field = "all"
    messages = sorted(mailbox.messages(), key=lambda m: (m.internalDate, m.uid), reverse=True)
    wanted = (page + 1) * PAGE_SIZE + 1
    found = []
    for start in range(0, len(messages), CHUNK):
        chunk = messages[start:start + CHUNK]
        summaries = mailbox.summaries([m.uid for m in chunk], structure=False)
        for info in chunk:
            summary = summaries.get(info.uid)
            if summary is None:
                continue  # expunged meanwhile
            hit = field != "body" and words in _headerText(summary, field)
            if not hit and field in ("body", "all"):
                try:
                    hit = words in _bodyText(mailbox, info)
                except KeyError:
                    continue
            if hit:
                found.append(Row(info.uid, summary.sender.display(), summary.subject,
                                 summary.date if summary.date is not None
                                 else info.internalDate,
                                 info.size, info.flags, summary.hasAttachments))
        if len(found) >= wanted:
            break
    return Results(webName(mailbox.name), found[page * PAGE_SIZE:(page + 1) * PAGE_SIZE], page,
                   len(found) > (page + 1) * PAGE_SIZE)
