"""
What the webmail does to a user's folders: create, rename, delete, empty,
and the cheap state a page polls to see changes made elsewhere (IMAP).

Blocking (the store is): callers run these in the thread pool.  The user
is always the session's, and a name is looked up among that user's
folders only, so no name reaches another user's mail.  Errors are
L{ValueError} or L{KeyError} with the text the page shows.
"""

from __future__ import annotations

import hashlib

from pymailer.web.html import isolatedText as shown
from pymailer.web.webmail.mailbox import INBOX, JUNK, TRASH

# Folders whose special use (RFC 6154) mail clients rely on: deleting one
# needs a second word from the user.
PROTECTED_USES = frozenset({"\\Sent", "\\Drafts", TRASH, JUNK, "\\Archive"})
# Folders that may be emptied in one go (their mail is on its way out).
EMPTIED_USES = frozenset({TRASH, JUNK})
NO_FOLDER = "No such folder."
INBOX_STAYS = "INBOX cannot be renamed or deleted."


def _canonical(store, name, new=False):
    """C{new}: the name of a folder being made (no wildcards, no invisible controls)."""
    try:
        return store.canonicalName(name.strip(), new=new)
    except ValueError as e:
        raise ValueError(f"Not a folder name: {e}") from None


def _exists(store, user, name):
    if name not in store.listMailboxes(user):
        raise KeyError(NO_FOLDER)


def createFolder(store, user, name):
    name = _canonical(store, name, new=True)
    try:
        store.createMailbox(user, name)
    except KeyError:
        raise ValueError(f"{shown(name)} exists already.") from None
    return f"Folder {shown(name)} created."


def renameFolder(store, user, old, new):
    old, new = _canonical(store, old), _canonical(store, new, new=True)
    if INBOX in (old, new):
        raise ValueError(INBOX_STAYS)
    _exists(store, user, old)
    try:
        store.renameMailbox(user, old, new)
    except KeyError as e:
        if e.args and e.args[0] == old:
            raise KeyError(NO_FOLDER) from None
        raise ValueError(f"{shown(new)} exists already.") from None
    return f"Folder {shown(old)} renamed to {shown(new)}."


def deleteFolder(store, user, name, confirmed=False):
    """
    Delete folder C{name} and its messages; a special-use folder only when
    C{confirmed} (clients file sent mail and drafts there).
    """
    name = _canonical(store, name)
    if name == INBOX:
        raise ValueError(INBOX_STAYS)
    _exists(store, user, name)
    uses = store.specialUses(user).get(name, frozenset())
    if uses & PROTECTED_USES and not confirmed:
        useNames = "/".join(sorted(u.lstrip(chr(92)) for u in uses))
        raise ValueError(f"{shown(name)} is your {useNames} folder: tick the box to confirm"
                         " that it goes.")
    try:
        store.deleteMailbox(user, name)
    except KeyError:
        raise KeyError(NO_FOLDER) from None
    return f"Folder {shown(name)} deleted with its messages."


def emptyFolder(store, user, name):
    """Expunge every message of a Trash or Junk folder."""
    name = _canonical(store, name)
    _exists(store, user, name)
    if not store.specialUses(user).get(name, frozenset()) & EMPTIED_USES:
        raise ValueError("Only Trash and Junk can be emptied.")
    mailbox = store.mailbox(user, name)
    uids = [m.uid for m in mailbox.messages()]
    mailbox.expunge(uids)
    return f"{shown(name)} emptied ({len(uids)} message{'' if len(uids) == 1 else 's'} deleted)."


def state(store, user, name):
    """
    A short token that changes when folder C{name} changes (a message
    arrives, goes, or has its flags changed: UIDVALIDITY, UIDNEXT and
    HIGHESTMODSEQ, RFC 7162 3.1.2) or any folder's counts change (one
    aggregate query): what an open page polls to know it should reload.
    Three cheap reads, whatever the folder's size.
    """
    parts = [repr(sorted(store.mailboxCounts(user).items()))]
    try:
        mailbox = store.mailbox(user, name)
        parts += [mailbox.uidValidity(), mailbox.uidNext(), mailbox.highestModSeq()]
    except (KeyError, ValueError):
        parts.append("gone")
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:24]


def pageState(store, user, name):
    """C{(L{state}, the special uses of folder C{name})}: what a folder page adds."""
    return state(store, user, name), store.specialUses(user).get(name, frozenset())
