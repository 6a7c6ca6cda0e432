"""
What the webmail reads and changes in a user's mail, once per operation,
through L{pymailer.interfaces.IMailStore} and
L{pymailer.interfaces.IMailbox} only: so it works on every store backend,
and a change shows in IMAP as one made there would.

Every method blocks (the store does): callers run them in the thread
pool.  The user is always the session's; a folder, UID or part that is
not the user's (or not there) raises L{KeyError}, which the pages answer
with the same 404 whatever the reason.

A folder page costs one C{messages()} read (flags, sizes, dates of the
index, no content) and the summaries of the 50 messages shown: paging a
folder of 10,000 messages never opens or summarises the other 9,950.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymailer.web.html import isolatedText
from pymailer.web.webmail import content
from pymailer.web.webmail.names import WebNames, webName

PAGE_SIZE = 50
SEEN = "\\Seen"
FLAGGED = "\\Flagged"
ANSWERED = "\\Answered"
TRASH = "\\Trash"
JUNK = "\\Junk"
INBOX = "INBOX"
# action name -> (storeFlags mode, flag)
FLAG_ACTIONS = {
    "read": ("add", SEEN), "unread": ("remove", SEEN),
    "flag": ("add", FLAGGED), "unflag": ("remove", FLAGGED),
}
ACTIONS = tuple(FLAG_ACTIONS) + ("move", "delete", "spam", "notspam")
NO_TRASH = "There is no Trash folder: create one (over IMAP) to delete messages here."
NO_JUNK = "There is no Junk folder: create one to mark messages as spam."
NOTHING_CHOSEN = "No message was chosen."


@dataclass
class Row:
    """One line of a message list."""

    uid: int
    sender: str
    subject: str
    date: float
    size: int
    flags: frozenset
    hasAttachments: bool


@dataclass
class FolderPage:
    """
    One page of a folder, newest first.

    @ivar page: its number, from 0; C{pages} how many there are (at least 1).
    """

    name: str
    rows: list
    page: int
    pages: int
    total: int


class Webmail:
    """
    The webmail's operations on a store.

    @param store: an L{pymailer.interfaces.IMailStore}; the webmail sees
        it through L{WebNames} (folder names a page can carry).
    """

    def __init__(self, store):
        self.store = WebNames(store)

    def _mailbox(self, user, name):
        """The L{IMailbox}; L{KeyError} for a name that is not there or not valid."""
        try:
            return self.store.mailbox(user, name)
        except ValueError:
            raise KeyError(name)

    def folders(self, user):
        """
        C{[(name, unread, total)]} of C{user}'s folders, INBOX first: one
        aggregate query of the store (L{IMailStore.mailboxCounts}), not a
        read of every folder.
        """
        counts = self.store.mailboxCounts(user)
        return [(name, counts[name][1], counts[name][0])
                for name in sorted(counts, key=lambda name: (name != INBOX, name))]

    def folderPage(self, user, name, page=0):
        """
        A L{FolderPage} of folder C{name}: messages newest first by the
        time they arrived (the internal date, which IMAP's SORT ARRIVAL
        uses; a sender's Date field may say anything), UID for ties.
        """
        mailbox = self._mailbox(user, name)
        messages = sorted(mailbox.messages(), key=lambda m: (m.internalDate, m.uid),
                          reverse=True)
        pages = max(1, -(-len(messages) // PAGE_SIZE))
        page = min(max(page, 0), pages - 1)
        shown = messages[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
        summaries = mailbox.summaries([m.uid for m in shown], structure=False)
        rows = []
        for info in shown:
            summary = summaries.get(info.uid)
            if summary is None:
                continue  # expunged between the two reads
            rows.append(Row(info.uid, summary.sender.display(), summary.subject,
                            summary.date if summary.date is not None else info.internalDate,
                            info.size, info.flags, summary.hasAttachments))
        return FolderPage(webName(mailbox.name), rows, page, pages, len(messages))

    def _octets(self, mailbox, uid):
        source = mailbox.openMessage(uid)
        try:
            return source.read()
        finally:
            source.close()

    def message(self, user, name, uid, remote=False, markSeen=True):
        """
        The L{content.Shown} message C{uid} of folder C{name}; reading it
        marks it C{\\Seen} (as an IMAP FETCH of its body does, RFC 3501
        6.4.5).
        """
        mailbox = self._mailbox(user, name)
        shown = content.show(self._octets(mailbox, uid), remote)
        if markSeen:
            mailbox.storeFlags([uid], "add", [SEEN])
        return shown

    def attachment(self, user, name, uid, part):
        """C{(contentType, filename, octets)} of one attachment."""
        mailbox = self._mailbox(user, name)
        return content.attachmentPart(content.parse(self._octets(mailbox, uid)), part)

    def specialName(self, user, use):
        """The name of C{user}'s folder with special use C{use} (RFC 6154), or C{None}."""
        for name, uses in self.store.specialUses(user).items():
            if use in uses:
                return name
        return None

    def trashName(self, user):
        return self.specialName(user, TRASH)

    def act(self, user, name, uids, action, target=None):
        """
        One of L{ACTIONS} on messages C{uids} of folder C{name}: a flag
        change, a move to C{target}, or a delete (a move to Trash; in
        Trash, gone for good).

        @return: the line that says what was done.
        @raise ValueError: no such action, no message chosen, no Trash.
        @raise KeyError: no such folder (or target).
        """
        if not uids:
            raise ValueError(NOTHING_CHOSEN)
        mailbox = self._mailbox(user, name)
        n = len(uids)
        what = f"{n} message{'' if n == 1 else 's'}"
        if action in FLAG_ACTIONS:
            mode, flag = FLAG_ACTIONS[action]
            mailbox.storeFlags(uids, mode, [flag])
            return f"{what} marked {action}."
        if action == "delete":
            trash = self.trashName(user)
            if trash is None:
                raise ValueError(NO_TRASH)
            if trash == webName(mailbox.name):
                mailbox.expunge(uids)
                return f"{what} deleted for good."
            target = trash
        elif action == "spam":
            # A move into Junk: the store's observer (the learning filter,
            # where it is on) trains on it as on the same IMAP MOVE.
            target = self.specialName(user, JUNK)
            if target is None:
                raise ValueError(NO_JUNK)
        elif action == "notspam":
            # Out of Junk into INBOX: trained as ham likewise.
            target = INBOX
        elif action != "move":
            raise ValueError(f"no such action: {action}")
        targetBox = self._mailbox(user, target)
        if targetBox.name == mailbox.name:
            raise ValueError("The messages are in that folder already.")
        moved = mailbox.move(uids, targetBox)
        n = len(moved)
        return f"{n} message{'' if n == 1 else 's'} moved to {isolatedText(webName(targetBox.name))}."
