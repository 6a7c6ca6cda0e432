"""
Mailbox backends behind L{pymailer.interfaces.IMailStore}.

Backends live in submodules (C{maildir}, later others) and are imported
lazily by the composition root; this package only holds the value objects
they share.
"""

from dataclasses import dataclass

__all__ = ["MessageInfo"]


@dataclass(frozen=True)
class MessageInfo:
    """
    One message of a mailbox as the protocols see it.

    @ivar uid: the IMAP UID, stable while the mailbox's UIDVALIDITY holds.
    @ivar key: the backend's stable name for the message (for Maildir, the
        file name up to the first C{:}); also a fine POP3 UIDL.
    @ivar flags: IMAP system flags, e.g. C{frozenset({"\\\\Seen"})}.
    @ivar size: size in bytes.
    @ivar internalDate: IMAP INTERNALDATE, seconds since the epoch.
    @ivar path: where the message was when the mailbox was scanned (it may
        since have been renamed by a flag change); use
        L{IMailbox.openMessage} to read it.
    """

    uid: int
    key: str
    flags: frozenset
    size: int
    internalDate: float
    path: str
