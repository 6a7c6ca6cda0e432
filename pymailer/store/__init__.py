"""
Mailbox backends behind L{pymailer.interfaces.IMailStore}.

Backends live in submodules (C{maildir}, later others) and are imported
lazily by the composition root; this package only holds the value objects
they share.
"""

from dataclasses import dataclass

__all__ = [
    "KeywordLimit", "MailboxGone", "MailboxNameTooLong", "MailboxSnapshot",
    "MessageInfo", "openStore",
]


def openStore(config):
    """
    The L{pymailer.interfaces.IMailStore} of a L{pymailer.config.Config}:
    the server's and the admin command's (which makes a new user's
    mailboxes) are the same.
    """
    from pymailer.store.maildir import MaildirStore

    return MaildirStore(config.data_dir / "mail", config.hostname)


@dataclass(frozen=True)
class MessageInfo:
    """
    One message of a mailbox as the protocols see it.

    @ivar uid: the IMAP UID, stable while the mailbox's UIDVALIDITY holds.
    @ivar key: the backend's stable name for the message (for Maildir, the
        file name up to the first C{:}); also a fine POP3 UIDL.
    @ivar flags: IMAP system flags and keywords, e.g.
        C{frozenset({"\\\\Seen", "$Junk"})}.
    @ivar size: size in bytes.
    @ivar internalDate: IMAP INTERNALDATE, seconds since the epoch.
    @ivar path: where the message was when the mailbox was scanned (it may
        since have been renamed by a flag change); use
        L{IMailbox.openMessage} to read it.
    @ivar modseq: the message's mod-sequence (RFC 7162): raised whenever
        its flags change; C{0} from a backend that keeps none.
    """

    uid: int
    key: str
    flags: frozenset
    size: int
    internalDate: float
    path: str
    modseq: int = 0


@dataclass(frozen=True)
class MailboxSnapshot:
    """
    A mailbox as one scan saw it (L{pymailer.interfaces.IMailbox.snapshot}).

    @ivar messages: L{MessageInfo}s ascending by UID.
    @ivar highestModSeq: the mailbox's HIGHESTMODSEQ (RFC 7162 3.1.2.1):
        at least every message's modseq, raised by expunges too.
    @ivar recent: the UIDs that are C{\\Recent} for the caller (RFC 3501
        2.3.2): not yet claimed by any session, or claimed by this scan.
    @ivar keywords: the keywords defined in the mailbox (for C{FLAGS}).
    @ivar keywordsFull: no new keyword can be defined (C{PERMANENTFLAGS}
        then has no C{\\*}).
    """

    messages: list
    uidValidity: int
    uidNext: int
    highestModSeq: int
    recent: frozenset = frozenset()
    keywords: tuple = ()
    keywordsFull: bool = False


class KeywordLimit(ValueError):
    """The mailbox cannot hold another keyword (IMAP: C{NO [LIMIT]})."""


class MailboxNameTooLong(ValueError):
    """A mailbox name the backend cannot store (IMAP: C{NO [LIMIT]})."""


class MailboxGone(KeyError):
    """
    An open mailbox was deleted or renamed away (by this session, another
    one, or an outside tool) since it was opened.  A C{KeyError}, like any
    missing mailbox; C{name} says which one.
    """

    @property
    def name(self):
        return self.args[0]
