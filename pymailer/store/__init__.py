"""
Mailbox backends behind L{pymailer.interfaces.IMailStore}.

Backends live in submodules (C{maildir}, later others) and are imported
lazily by the composition root; this package only holds the value objects
they share.
"""

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from typing import NamedTuple

from pymailer import listeners

__all__ = [
    "INBOX", "SPECIAL_USE", "SPECIAL_USES", "ImportedMessage", "KeywordLimit", "MailboxGone", "MailboxNameTooLong",
    "MailboxSnapshot", "MaildropLocked", "MessageInfo", "canonicalName",
    "openStore",
]

INBOX = "INBOX"
OBJECTID_DIGITS = 24
# The folders every account has from the start (RFC 6154 special-use).
SPECIAL_USE = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
# The uses a mailbox may be given (CREATE-SPECIAL-USE, RFC 6154 3): those
# of the standard folders.  \All and \Flagged name virtual mailboxes
# (every message, the flagged ones), which no backend here keeps.
SPECIAL_USES = frozenset(SPECIAL_USE.values())


def specialUseOf(name, specialUse=None):
    """
    The uses a new mailbox C{name} gets (L{IMailStore.createMailbox}'s
    rule): C{specialUse} in its canonical spelling (attributes are
    case-insensitive, RFC 6154 2), or by default its name's standard use.

    @return: a C{frozenset}, perhaps empty.
    @raise ValueError: an attribute not in L{SPECIAL_USES}.
    """
    if specialUse is None:
        return frozenset([SPECIAL_USE[name]]) if name in SPECIAL_USE else frozenset()
    spelled = {use.lower(): use for use in SPECIAL_USES}
    try:
        return frozenset(spelled[use.lower()] for use in specialUse)
    except KeyError as e:
        raise ValueError(f"unsupported special use {e.args[0]}") from None


def encodeSpecialUse(uses):
    """Uses as one column/file value (C{None} for none), and back: L{decodeSpecialUse}."""
    return " ".join(sorted(uses)) or None


def decodeSpecialUse(text):
    return frozenset(text.split()) if text else frozenset()


def openStore(config):
    """
    The L{pymailer.interfaces.IMailStore} of a L{pymailer.config.Config}:
    the server's and the admin command's (which makes a new user's
    mailboxes) are the same.  C{[storage] backend} picks it; backends are
    imported only when chosen.
    """
    if config.storage.backend == "postgresql":
        # Every node on the database shares the store (issue 19).
        from pymailer.pg.pool import poolFor
        from pymailer.store.postgresql import PostgreSQLStore

        return PostgreSQLStore(poolFor(config.storage),
                               blobDirectory=config.storage.blobDirectory())
    if config.storage.backend == "sqlite":
        from pymailer.store.maildir_io import migrateLegacyMaildirs
        from pymailer.store.sqlite import SQLiteStore

        store = SQLiteStore(config.data_dir / "store")
        # The first start after the switch from the Maildir backend (the
        # old default) brings its mail along, once.
        migrateLegacyMaildirs(store, config.data_dir, config.hostname)
        return store
    from pymailer.store.maildir import MaildirStore

    return MaildirStore(config.data_dir / "mail", config.hostname,
                        stateDir=config.data_dir)


def checkDeliveryKey(uniqueKey, checkDuplicate):
    """
    The argument checks of L{IMailStore.deliver}: a C{uniqueKey} of
    C{[A-Za-z0-9_-]} only, and one whenever C{checkDuplicate}.

    @raise ValueError: either is wrong.
    """
    if checkDuplicate and uniqueKey is None:
        raise ValueError("checkDuplicate needs a uniqueKey")
    if uniqueKey is not None and not (
            uniqueKey and all(c.isascii() and (c.isalnum() or c in "_-")
                              for c in uniqueKey)):
        raise ValueError(f"bad uniqueKey {uniqueKey!r}")


# What a new mailbox's name may not contain, though a name already stored
# with it stays reachable (Dovecot refuses these only in new names too; a
# folder made by an older version, or imported, can still be renamed away):
# - the LIST wildcards: RFC 9051 5.1 allows them but says they are hard to
#   use, since a LIST pattern cannot address such a name by itself;
# - C1 controls and U+2028/U+2029, which RFC 6855 3 (via RFC 5198 2) keeps
#   out of UTF-8 mailbox names like the C0 controls;
# - the bidirectional formatting characters (Unicode's Bidi_Control, UAX #9),
#   with which a name displays as another (U+202E turns "gpj.exe" around);
# - lone surrogates, which are no characters at all.
WILDCARDS = "*%"
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")
LINE_SEPARATORS = frozenset("\u2028\u2029")


def refusedInNewName(char):
    """Why C{char} may not be in a new mailbox's name (words a user reads), or C{None}."""
    if char in WILDCARDS:
        return f"{char} is not allowed in a new mailbox name (mail programs read it as a wildcard)"
    code = ord(char)
    if 0x80 <= code <= 0x9F or char in LINE_SEPARATORS or char in BIDI_CONTROLS:
        what = unicodedata.name(char, "CONTROL").lower()
        return f"the invisible character U+{code:04X} ({what}) is not allowed in a new mailbox name"
    if 0xD800 <= code <= 0xDFFF:
        return f"the lone surrogate U+{code:04X} is not allowed in a new mailbox name"
    return None


def canonicalName(name, new=False):
    """
    The backend-independent part of L{IMailStore.canonicalName}: validate
    an external mailbox name and return its canonical form (C{INBOX} in any
    case becomes C{INBOX}, also as first component); with C{new}, the name
    of a mailbox being made (created, renamed to), which may not contain
    what L{refusedInNewName} refuses.

    @raise ValueError: the name is unsafe or malformed.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("empty mailbox name")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ValueError("control character in mailbox name")
    if new:
        for char in name:
            reason = refusedInNewName(char)
            if reason is not None:
                raise ValueError(reason)
    if name.startswith("/"):
        raise ValueError("mailbox name starts with /")
    components = name.split("/")
    if any(c in ("", ".", "..") for c in components):
        raise ValueError("empty, . or .. component in mailbox name")
    if components[0].upper() == INBOX:
        components[0] = INBOX
    return "/".join(components)


def canonicalNameWithin(name, limit, new=False):
    """
    L{canonicalName}, for a backend that stores names of at most C{limit}
    octets of UTF-8.

    @raise MailboxNameTooLong: longer.
    """
    canonical = canonicalName(name, new)
    if len(canonical.encode("utf-8", "surrogatepass")) > limit:
        raise MailboxNameTooLong(f"mailbox name longer than {limit} octets")
    return canonical


def renameMoves(names, old, new, canonical):
    """
    The C{(from, to)} names of renaming C{old} to C{new} with its children
    (RFC 3501 6.3.5), checked: C{canonical} accepts each new name.

    @raise KeyError: C{new} (or a child's new name) is one of C{names}.
    """
    moves = [(name, new + name[len(old):]) for name in sorted(names)
             if name == old or name.startswith(old + "/")]
    for _, target in moves:
        canonical(target)  # the children's names grow too
        if target in names:
            raise KeyError(new)
    return moves


class Listeners(listeners.Listeners):
    """
    The listener half of L{pymailer.interfaces.IMailStore}, for backends to
    inherit: C{_notify(user, mailboxName)} after each change.
    """

    def _notify(self, user, mailboxName):
        self._tell(user, mailboxName)


def openEach(mailbox, uids):
    """
    L{pymailer.interfaces.IMailbox.openMessages} for a backend without an
    index to look several messages up at once: L{openMessage} each, in
    turn, leaving out those gone.
    """
    for uid in uids:
        try:
            content = mailbox.openMessage(uid)
        except KeyError:
            continue  # expunged
        yield uid, content


class MessageInfo(NamedTuple):
    """
    One message of a mailbox as the protocols see it.  A named tuple, not
    a frozen dataclass: a SELECT of 100,000 messages makes 100,000 of
    them, and a frozen dataclass's C{__init__} cost six times as much.

    @ivar uid: the IMAP UID, stable while the mailbox's UIDVALIDITY holds.
    @ivar key: the backend's stable name for the message (for Maildir, the
        file name up to the first C{:}); also a fine POP3 UIDL.
    @ivar flags: IMAP system flags and keywords, e.g.
        C{frozenset({"\\\\Seen", "$Junk"})}.
    @ivar size: size in bytes.
    @ivar internalDate: IMAP INTERNALDATE, seconds since the epoch.
    @ivar modseq: the message's mod-sequence (RFC 7162): raised whenever
        its flags change; C{0} from a backend that keeps none.
    @ivar path: the backend's own locator (Maildir: the file as scanned),
        for the backend and its tests only: protocol code reads content
        through L{pymailer.interfaces.IMailbox.openMessage}.
    @ivar saveDate: when the message was saved into this mailbox (RFC 8514
        3: delivery, APPEND, COPY and MOVE each set it anew), seconds since
        the epoch; C{None} when the backend cannot tell for this message.
    """

    uid: int
    key: str
    flags: frozenset
    size: int
    internalDate: float
    modseq: int = 0
    path: str = None
    saveDate: float = None


@dataclass(frozen=True)
class ImportedMessage:
    """
    One message coming from elsewhere (L{pymailer.interfaces.IMailImport}).

    @ivar uid: its UID there (kept when the UIDVALIDITY is), or C{None}.
    @ivar flags: IMAP system flags and keywords.
    @ivar internalDate: seconds since the epoch.
    @ivar open: a callable returning a binary file object (a context
        manager) on the octets, called once, when the message is stored.
    """

    uid: int
    flags: frozenset
    internalDate: float
    open: object


def importTarget(uidValidity, boxValidity, hasMessages, name):
    """
    How L{pymailer.interfaces.IMailImport.importMailbox} treats a mailbox
    (the same rule for every backend).

    @return: C{(takeValidity, keepUids, resuming)}: the (empty) mailbox
        takes C{uidValidity} and restarts at UID 1; messages keep their
        UIDs; messages already there from an interrupted run are skipped.
    @raise ValueError: it holds messages under another UIDVALIDITY.
    """
    if uidValidity is None:
        return False, False, False
    if uidValidity == boxValidity:
        return False, True, hasMessages
    if hasMessages:
        raise ValueError(f"mailbox {name} already holds messages under"
                         f" UIDVALIDITY {boxValidity}: import into another folder")
    return True, True, False


def importPlan(keepUids, resuming, uidNext, uid):
    """
    @return: C{"keep"} (store under C{uid}), C{"skip"} (there from an
        interrupted run) or C{"new"} (the next UID) for one message.
    @raise ValueError: UIDs not ascending (a broken source).
    """
    if not keepUids or uid is None:
        return "new"
    if uid >= uidNext:
        return "keep"
    if resuming:
        return "skip"
    raise ValueError(f"UID {uid} not above UID {uidNext - 1}: the source's UIDs do not ascend")


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
    @ivar changeStamp: the mailbox's
        L{pymailer.interfaces.IMailbox.changeStamp} as this snapshot saw it
        (C{None}: the backend keeps none).
    @ivar since: C{None} for the whole mailbox; for the answer of
        L{pymailer.interfaces.IMailbox.changedSince}, its mod-sequence:
        C{messages} then holds only the messages changed after it.
    @ivar vanished: with C{since}, the UIDs expunged after it, ascending.
    @ivar mailboxId: the mailbox's L{pymailer.interfaces.IMailbox.mailboxId}.
    """

    messages: list
    uidValidity: int
    uidNext: int
    highestModSeq: int
    recent: frozenset = frozenset()
    keywords: tuple = ()
    keywordsFull: bool = False
    changeStamp: object = None
    since: int = None
    vanished: tuple = ()
    mailboxId: str = None


def objectId(prefix, *parts):
    """
    An RFC 8474 ObjectID (a letter, then lower-case hex: never starting
    with a digit or a dash, never differing from another only by case, 8.1)
    that names C{parts} and reveals nothing of them: a SHA-256 of the parts,
    cut to 24 digits (96 bits: no two collide in practice).
    """
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode(
        "utf-8", "surrogatepass")).hexdigest()
    return prefix + digest[:OBJECTID_DIGITS]


def newObjectId(prefix):
    """A random ObjectID of the same form (RFC 8474 4: never reused)."""
    return prefix + secrets.token_hex(OBJECTID_DIGITS // 2)


class KeywordLimit(ValueError):
    """The mailbox cannot hold another keyword (IMAP: C{NO [LIMIT]})."""


class MailboxNameTooLong(ValueError):
    """A mailbox name the backend cannot store (IMAP: C{NO [LIMIT]})."""


class MaildropLocked(Exception):
    """
    Another session holds the user's POP3 maildrop lock (POP3: C{-ERR
    [IN-USE]}, RFC 2449 8.1.2).
    """


class MailboxGone(KeyError):
    """
    An open mailbox was deleted or renamed away (by this session, another
    one, or an outside tool) since it was opened.  A C{KeyError}, like any
    missing mailbox; C{name} says which one.
    """

    @property
    def name(self):
        return self.args[0]
