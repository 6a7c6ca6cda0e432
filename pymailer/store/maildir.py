"""
Maildir++ mail store: one directory tree per user, shared safely by several
pymailer processes and by outside Maildir tools (mutt, Dovecot-style readers).

Layout: user C{local@domain} lives at C{root/domain/local/}; INBOX is that
directory (C{cur/ new/ tmp/}), other mailboxes are C{.Name} subdirectories
(C{Archive/2026} is C{.Archive.2026}; each name component escapes C{.}, C{%}
as C{%XX}, so the mapping is reversible).  See
U{https://cr.yp.to/proto/maildir.html} and Courier's Maildir++ notes.

Trust:
  - user addresses are validated and normalised by the caller (the account
    directory); we only re-check cheaply that they cannot leave C{root};
  - mailbox names come from IMAP clients and are B{not} trusted: names with
    empty, C{.} or C{..} components, a leading C{/}, NUL or control characters
    are refused with L{ValueError}, and every resulting path is checked with
    C{os.path.realpath} to lie inside the user's directory (Apache James
    CVE-2022-22931 class).

Durability: a delivered or appended message is written to C{tmp/}, the file
is fsynced, renamed into C{new/} (or C{cur/}) and that directory is fsynced
before the call returns.  The index is rewritten through a temporary file,
fsynced, renamed and its directory fsynced, so a UID or mod-sequence handed
out is never handed out again after a crash.

UIDs, mod-sequences (CONDSTORE), \\Recent and keywords: each mailbox has an
index (L{pymailer.store.maildirindex}: C{pymailer-uidlist} and
C{dovecot-keywords}) changed only under C{flock} on
C{pymailer-uidlist.lock}.  The basename (file name before the first C{:})
survives flag changes made by any Maildir tool, so UIDs do too; the flag
letters a scan finds changed get a new mod-sequence.  A new index takes
its UIDVALIDITY from a per-user counter (C{pymailer-uidvalidity}, under its
own lock), so a name deleted and created again never gets one it had.

All methods block: call them from a thread pool.
"""

import dataclasses
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from zope.interface import implementer

from pymailer.fsutil import exclusiveLock, fsyncDirectory, writeDurably
from pymailer.interfaces import IMailbox, IMaildropLock, IMailStore
from pymailer.store import (
    INBOX, OBJECTID_DIGITS, SPECIAL_USE, Listeners, MailboxGone, MailboxNameTooLong,
    MailboxSnapshot, MaildropLocked, MessageInfo, canonicalName as _genericName,
    decodeSpecialUse, encodeSpecialUse, objectId, openEach, specialUseOf,
)
from pymailer.store.content import FileContent
from pymailer.message.summary import summarize
from pymailer.store.maildirindex import UIDLIST, Index, Keywords, readIndex, writeIndex


# Maildir info letters <-> IMAP system flags (maildir spec, "info" semantics).
FLAG_LETTERS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
LETTER_FLAGS = {letter: flag for flag, letter in FLAG_LETTERS.items()}

CHUNK = 64 * 1024
UIDLIST_LOCK = UIDLIST + ".lock"
# In the user's directory once createUser has made INBOX and the special-use
# folders: an account made by an older version (or a Maildir copied in) gets
# them on first access, and a folder the user deleted later stays deleted.
ACCOUNT_MARK = "pymailer-account"
# The last UIDVALIDITY given to a mailbox of the user (see nextUidValidity).
UIDVALIDITY = "pymailer-uidvalidity"
_DELETED_PREFIX = "..pymailer-deleted-"
# In a folder: its special uses (RFC 6154), space-separated, so they move
# with a rename and go with a delete.  A folder without one (made by an
# older version or another tool) has its name's standard use.
SPECIAL_USE_FILE = "pymailer-special-use"
NAME_MAX = 255  # octets in one directory entry (Linux, BSD, macOS)
# Message summaries kept in memory (a Maildir has nowhere to keep them):
# about 1-2 KB each.
SUMMARIES_CACHED = 20_000
_UNIQUE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DELIVERY_TIME = re.compile(r"(\d+)(?:\.M(\d+))?")
_EMAIL_ID = re.compile(r",E=(M[0-9a-f]{%d})" % OBJECTID_DIGITS)
_ESCAPED = re.compile(r"%([0-9A-F]{2})")


def _listNames(directory):
    """File names in a Maildir subdirectory, without hidden or odd ones."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [n for n in names if not n.startswith(".") and "\n" not in n]


def _basename(fileName):
    return fileName.split(":", 1)[0]


def _infoLetters(fileName):
    """The flag letters of a C{name:2,LETTERS} file name, else C{""}."""
    _, _, info = fileName.partition(":")
    return info[2:] if info.startswith("2,") else ""


def _saveDate(key, internalDate):
    """
    RFC 8514: when a file was saved into its mailbox, from the time our
    names start with (L{MaildirStore.uniqueName}: each delivery, APPEND,
    COPY and MOVE writes a new file).  A name without one (another tool's)
    gets the internal date, as the SQLite store's older rows do: RFC 8514
    4.3 has the search keys use it where the save date is unknown, and
    FETCH has no per-message "unknown".
    """
    match = _DELIVERY_TIME.match(key)
    if match is None:
        return internalDate
    return int(match[1]) + int(match[2] or 0) / 1e6


def _emailId(user, key):
    """
    RFC 8474 5.1: a copy carries its source's EMAILID in its name
    (C{,E=...}, L{MaildirStore.uniqueName}); any other file's is derived
    from its own name, which no other message has.
    """
    match = _EMAIL_ID.search(key)
    return match[1] if match else objectId("M", user, key)


def _deliveryOrder(key):
    """Sort key putting C{sec.Musec...} names in delivery-time order."""
    match = _DELIVERY_TIME.match(key)
    if match is None:
        return (float("inf"), 0, key)
    return (int(match[1]), int(match[2] or 0), key)


def _encodeComponent(component):
    return "".join("%%%02X" % ord(c) if c in ".%" else c for c in component)


def _decodeComponent(component):
    return _ESCAPED.sub(lambda m: chr(int(m[1], 16)), component)


def canonicalName(name, new=False):
    """
    Validate an external mailbox name and return its canonical form
    (C{INBOX} in any case becomes C{INBOX}, also as first component);
    C{new}: see L{pymailer.store.canonicalName}.

    @raise ValueError: the name is unsafe or malformed.
    @raise MailboxNameTooLong: its directory name would not fit.
    """
    canonical = _genericName(name, new)
    _checkDiskName(_diskName(canonical))
    return canonical


def _checkDiskName(diskName):
    """
    A folder is one directory entry (Maildir++ keeps the hierarchy in the
    name): over the file system's NAME_MAX it could never be made.
    """
    if len(diskName.encode("utf-8", "surrogatepass")) > NAME_MAX:
        raise MailboxNameTooLong(f"mailbox name longer than {NAME_MAX} octets on disk")


def _diskName(canonical):
    """C{Archive/2026} -> C{.Archive.2026}; C{INBOX} -> C{""}."""
    if canonical == INBOX:
        return ""
    return "." + ".".join(_encodeComponent(c) for c in canonical.split("/"))


def _externalName(diskName):
    """Inverse of L{_diskName}, or C{None} for a directory not ours."""
    if not diskName.startswith(".") or diskName.startswith(".."):
        return None
    name = "/".join(_decodeComponent(c) for c in diskName[1:].split("."))
    try:
        canonical = canonicalName(name)
    except ValueError:
        return None
    return canonical if _diskName(canonical) == diskName else None


def _inside(path, directory):
    """Whether C{path} resolves to somewhere strictly below C{directory}."""
    top = os.path.realpath(directory).rstrip(os.sep) + os.sep
    return os.path.realpath(path).startswith(top)


def _makeMaildir(path, folder, uses=frozenset()):
    """
    Create the Maildir C{path}; C{cur/} is made last, so its presence means
    the mailbox is complete.  A folder's special C{uses} are written before.
    @raise FileExistsError: C{path} exists.
    """
    os.mkdir(path, 0o700)
    if folder:
        writeDurably(os.path.join(path, SPECIAL_USE_FILE),
                     (encodeSpecialUse(uses) or "").encode("ascii"))
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), 0o700, exist_ok=True)
    if folder:  # Maildir++ marker read by Courier-style delivery agents
        open(os.path.join(path, "maildirfolder"), "ab").close()


def _isMaildir(path):
    return os.path.isdir(os.path.join(path, "cur"))


@implementer(IMaildropLock)
class FlockMaildropLock:
    """
    A maildrop lock as an exclusive, non-blocking C{flock} on a file of
    its own: shared by every process, released by the kernel if the
    process dies.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._fd = None
        self._guard = threading.Lock()  # release() may race acquire's thread

    def acquire(self):
        """@raise MaildropLocked: somebody else holds it."""
        os.makedirs(os.path.dirname(self.path), 0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise MaildropLocked(self.path) from None
            raise
        with self._guard:
            self._fd = fd
        return self

    def release(self):
        with self._guard:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # releases the flock


@implementer(IMailStore)
class MaildirStore(Listeners):
    """
    L{IMailStore} on Maildir++ directories under C{root}.

    @param hostname: this machine's name, used in message file names.
    @param stateDir: where what is not mail lives (default: C{root}'s
        parent, the server's C{data_dir}): C{tmp/} for APPEND spools,
        C{imap-subscriptions/} (one JSON list per user), C{pop3/locks/}.
    """

    def __init__(self, root, hostname, stateDir=None):
        self.root = Path(root)
        self.hostname = hostname.replace("/", "\\057").replace(":", "\\072")
        state = self.root.parent if stateDir is None else Path(stateDir)
        self._scratch = state / "tmp"
        self._subscriptions = state / "imap-subscriptions"
        self._locks = state / "pop3" / "locks"
        # (mailbox path, message key) -> MessageSummary: a Maildir file's
        # octets never change, only its name's flags.
        self._summaries = {}
        self._summariesGuard = threading.Lock()

    def canonicalName(self, name, new=False):
        return canonicalName(name, new)

    # -- paths ------------------------------------------------------------

    def _userDir(self, user):
        local, _, domain = user.rpartition("@")
        for part in (local, domain):
            if not part or part.startswith(".") or "/" in part or "\0" in part:
                raise ValueError(f"bad user {user!r}")
        path = self.root / domain / local
        if not _inside(path, self.root):
            raise ValueError(f"bad user {user!r}")
        return path

    def _resolve(self, user, name, new=False):
        """@return: C{(canonical name, mailbox directory)}; C{new}: see L{canonicalName}."""
        canonical = canonicalName(name, new)
        userDir = self._userDir(user)
        if canonical == INBOX:
            return canonical, userDir
        path = userDir / _diskName(canonical)
        if not _inside(path, userDir):
            raise ValueError(f"mailbox {name!r} leaves the user's maildir")
        return canonical, path

    # -- users and mailboxes ---------------------------------------------

    def createUser(self, user):
        """
        INBOX and the special-use folders (RFC 6154), as every account has
        from the start; folders that exist are left alone.  Safe when
        several processes do it at once.
        """
        userDir = self._userDir(user)
        userDir.mkdir(0o700, parents=True, exist_ok=True)
        for sub in ("tmp", "new", "cur"):
            (userDir / sub).mkdir(0o700, exist_ok=True)
        for name in SPECIAL_USE:
            try:
                _makeMaildir(userDir / _diskName(name), folder=True, uses=specialUseOf(name))
            except FileExistsError:
                pass
        for directory in (userDir, userDir.parent, self.root):
            fsyncDirectory(directory)
        # Last, once the folders are durable: the mark says they were made.
        open(userDir / ACCOUNT_MARK, "ab").close()
        fsyncDirectory(userDir)

    def nextUidValidity(self, user):
        """
        A UIDVALIDITY for a new (or re-indexed) mailbox of C{user}, higher
        than any handed out before to that user: RFC 3501 2.3.1.1 forbids
        reusing one for a mailbox name, and the current second alone
        repeats when a mailbox is deleted and created again within it (a
        caching client would then show the old messages for the new ones).
        A counter per user, under a lock shared by every process; the
        clock keeps it ahead of values given before the counter existed.
        """
        path = self._account(user) / UIDVALIDITY
        with exclusiveLock(f"{path}.lock"):
            try:
                with open(path, encoding="ascii") as f:
                    previous = int(f.read().strip())
            except (FileNotFoundError, ValueError):
                previous = 0
            # UIDVALIDITY is a 32-bit nz-number (RFC 3501 9).
            value = max(previous + 1, int(time.time())) % 2**32 or 1
            writeDurably(path, b"%d\n" % value)
            fsyncDirectory(path.parent)
        return value

    def _account(self, user):
        """
        The user's directory, with INBOX and the special-use folders made
        on the first access to an account that does not have them yet.
        """
        userDir = self._userDir(user)
        if not os.path.exists(userDir / ACCOUNT_MARK):
            self.createUser(user)
        return userDir

    def mailbox(self, user, name=INBOX):
        canonical, path = self._resolve(user, name)
        self._account(user)
        if not _isMaildir(path):
            raise KeyError(name)
        return MaildirMailbox(self, user, canonical, path)

    def listMailboxes(self, user):
        userDir = self._account(user)
        try:
            entries = os.listdir(userDir)
        except FileNotFoundError:
            return []
        names = sorted(
            name
            for name in map(_externalName, entries)
            if name is not None
            and _isMaildir(userDir / _diskName(name))
            and _inside(userDir / _diskName(name), userDir)
        )
        return ([INBOX] if _isMaildir(userDir) else []) + names

    def createMailbox(self, user, name, specialUse=None):
        canonical, path = self._resolve(user, name, new=True)
        if canonical == INBOX:
            raise KeyError(name)
        uses = specialUseOf(canonical, specialUse)
        self._account(user)
        try:
            _makeMaildir(path, folder=True, uses=uses)
        except FileExistsError:
            raise KeyError(name) from None
        fsyncDirectory(path.parent)
        self._notify(user, canonical)

    def specialUses(self, user):
        found = {}
        for name in self.listMailboxes(user):
            if name == INBOX:
                continue
            try:
                with open(self._resolve(user, name)[1] / SPECIAL_USE_FILE,
                          encoding="ascii") as f:
                    uses = decodeSpecialUse(f.read())
            except FileNotFoundError:
                uses = specialUseOf(name)
            if uses:
                found[name] = uses
        return found

    def deleteMailbox(self, user, name):
        canonical, path = self._resolve(user, name)
        if canonical == INBOX:
            raise ValueError("INBOX cannot be deleted")
        if not _isMaildir(path):
            raise KeyError(name)
        # Rename first so no reader ever sees a half-deleted mailbox; names
        # starting with ".." are never mailboxes (components escape ".").
        trash = path.parent / (_DELETED_PREFIX + secrets.token_hex(8))
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            raise KeyError(name) from None
        fsyncDirectory(path.parent)
        shutil.rmtree(trash, ignore_errors=True)
        # Sessions that have it open learn it is gone (IMAP: BYE).
        self._notify(user, canonical)

    def renameMailbox(self, user, oldName, newName):
        """
        Rename a mailbox and its children; the uidlist moves along, so
        UIDVALIDITY is kept.  Renaming INBOX (RFC 3501 6.3.5 special case)
        is not supported: L{ValueError}.
        """
        oldCanonical, oldPath = self._resolve(user, oldName)
        newCanonical, newPath = self._resolve(user, newName, new=True)
        if INBOX in (oldCanonical, newCanonical):
            raise ValueError("renaming to or from INBOX is not supported")
        if not _isMaildir(oldPath):
            raise KeyError(oldName)
        userDir = oldPath.parent
        oldDisk, newDisk = oldPath.name, newPath.name
        moves = [(oldDisk, newDisk)] + [
            (entry, newDisk + entry[len(oldDisk):])
            for entry in sorted(os.listdir(userDir))
            if entry.startswith(oldDisk + ".")
        ]
        for _, target in moves:
            # The children's names grow too: refuse before moving any.
            _checkDiskName(target)
            if os.path.lexists(userDir / target):
                raise KeyError(newName)
        for source, target in moves:
            os.rename(userDir / source, userDir / target)
        fsyncDirectory(userDir)
        self._notify(user, oldCanonical)

    def usage(self, user):
        # A scan of new/ and cur/ (a Maildir keeps no total: Dovecot's
        # maildirsize file is a cache of the same scan); read-only, so the
        # admin command may ask while the server delivers.
        userDir = self._userDir(user)
        if not os.path.isdir(userDir):
            return 0
        total = 0
        for name in self.listMailboxes(user):
            folder = self._resolve(user, name)[1]
            for sub in ("new", "cur"):
                try:
                    entries = list(os.scandir(folder / sub))
                except FileNotFoundError:
                    continue  # deleted meanwhile
                for entry in entries:
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:
                        pass  # expunged, or renamed by a flag change and seen again
        return total

    def mailboxCounts(self, user):
        # The file names say it all (RFC-less Maildir convention: new/ is
        # unseen, cur/ names carry ":2,S" once seen): a scan of the
        # directories, no file opened.
        counts = {}
        for name in self.listMailboxes(user):
            folder = self._resolve(user, name)[1]
            new = _listNames(folder / "new")
            cur = _listNames(folder / "cur")
            unseen = len(new) + sum("S" not in _infoLetters(n) for n in cur)
            counts[name] = (len(new) + len(cur), unseen)
        return counts

    # -- subscriptions, maildrop lock, spools ------------------------------

    def _subscriptionsPath(self, user):
        return self._subscriptions / (user.encode("utf-8").hex() + ".json")

    def subscriptions(self, user):
        try:
            with open(self._subscriptionsPath(user), encoding="utf-8") as f:
                return set(json.load(f))
        except (FileNotFoundError, ValueError):
            return set()

    def _setSubscribed(self, user, name, subscribed):
        path = self._subscriptionsPath(user)
        self._subscriptions.mkdir(0o700, parents=True, exist_ok=True)
        # Two sessions of one user (in two pool threads, or two processes)
        # must not lose each other's change: read-modify-write under a lock.
        with exclusiveLock(f"{path}.lock"):
            names = self.subscriptions(user)
            if (name in names) == subscribed:
                return
            if subscribed:
                names.add(name)
            else:
                names.discard(name)
            writeDurably(path, json.dumps(sorted(names)).encode("utf-8"))
            fsyncDirectory(self._subscriptions)
        self._notify(user, name)

    def subscribe(self, user, name):
        self._setSubscribed(user, name, True)

    def unsubscribe(self, user, name):
        self._setSubscribed(user, name, False)

    def lockMaildrop(self, user):
        self._userDir(user)  # refuses a user that could leave the directory
        name = quote(user, safe="@.+-_") + ".lock"
        return FlockMaildropLock(self._locks / name).acquire()

    def newAppendSpool(self):
        self._scratch.mkdir(0o700, parents=True, exist_ok=True)
        return tempfile.TemporaryFile(dir=self._scratch)

    # -- delivery ----------------------------------------------------------

    def uniqueName(self, uniqueKey=None, emailId=None):
        """
        A new Maildir file name, as the spec asks; with C{emailId} (a
        copy's, RFC 8474 5.1) as a C{,E=} field, as Dovecot adds C{,S=}.
        """
        seconds, nanoseconds = divmod(time.time_ns(), 10**9)
        if uniqueKey is None:
            unique = "R" + secrets.token_hex(8)
        else:
            unique = "Q" + uniqueKey
        return (
            f"{seconds}.M{nanoseconds // 1000}P{os.getpid()}{unique}"
            f".{self.hostname}" + (f",E={emailId}" if emailId else "")
        )

    def deliver(self, user, prefix, source, mailbox=INBOX, uniqueKey=None,
                checkDuplicate=False):
        if uniqueKey is not None and not _UNIQUE_KEY.fullmatch(uniqueKey):
            raise ValueError(f"bad uniqueKey {uniqueKey!r}")
        if checkDuplicate and uniqueKey is None:
            raise ValueError("checkDuplicate needs a uniqueKey")
        canonical, path = self._resolve(user, mailbox)
        self._account(user)
        if not _isMaildir(path):
            raise KeyError(mailbox)
        if checkDuplicate:
            # Match "P<pid>Q<key>." so a key cannot match inside another.
            mark = re.compile(r"P\d+Q" + re.escape(uniqueKey) + r"\.")
            for sub in ("new", "cur"):
                if any(mark.search(n) for n in _listNames(path / sub)):
                    return False
        writeMessage(path, "new", self.uniqueName(uniqueKey), prefix, source)
        self._notify(user, canonical)
        return True



def writeMessage(mailboxDir, subdir, fileName, prefix, source,
                 internalDate=None):
    """
    Durably write C{prefix} + C{source} as C{mailboxDir/subdir/fileName},
    through C{tmp/}; never holds more than one chunk in memory.
    On any error nothing is left behind and the error is re-raised.
    """
    current = os.path.join(mailboxDir, "tmp", _basename(fileName))
    final = os.path.join(mailboxDir, subdir, fileName)
    fd = os.open(current, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(prefix)
            while chunk := source.read(CHUNK):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if internalDate is not None:
            os.utime(current, (internalDate, internalDate))
        os.rename(current, final)
        current = final
        fsyncDirectory(os.path.join(mailboxDir, subdir))
    except BaseException:
        try:
            os.unlink(current)
        except OSError:
            pass
        raise


@implementer(IMailbox)
class MaildirMailbox:
    """One Maildir (INBOX or a C{.Name} folder) of one user."""

    def __init__(self, store, user, name, path):
        self.store = store
        self.user = user
        self.name = name
        self.path = Path(path)
        self._fileNames = {}  # uid -> file name in cur/, as last scanned

    # -- the index (see maildirindex) ----------------------------------------

    @contextmanager
    def _locked(self):
        """
        The mailbox lock, for the block.  @raise MailboxGone: the mailbox
        was deleted or renamed since it was opened (its files vanish under
        the lock or before it).
        """
        try:
            with exclusiveLock(self.path / UIDLIST_LOCK):
                yield
        except FileNotFoundError:
            if _isMaildir(self.path):
                raise
            raise MailboxGone(self.name) from None

    def _lockedIndex(self):
        """Under the lock: the index, created if missing."""
        index = readIndex(self.path)
        if index is None:
            index = Index(self.store.nextUidValidity(self.user), 1)
            writeIndex(self.path, index)
        return index

    def _index(self):
        index = readIndex(self.path)
        if index is None:
            with self._locked():
                index = self._lockedIndex()
        return index

    def uidValidity(self):
        return self._index().validity

    def mailboxId(self):
        # RFC 8474 4: the UIDVALIDITY is never given twice to the user's
        # mailboxes (nextUidValidity) and moves with a renamed one.
        return objectId("F", self.user, self._index().validity)

    def emailIds(self, uids):
        if any(u not in self._fileNames for u in uids):
            self._sync()
        names = self._fileNames
        return {u: _emailId(self.user, _basename(names[u])) for u in uids if u in names}

    def uidNext(self):
        return self._index().uidNext

    def highestModSeq(self):
        return self._index().highestModSeq

    def changeStamp(self):
        # Deliveries and other programs change the files behind the
        # index's back: only a scan can tell.
        return None

    # -- scanning ----------------------------------------------------------

    def _scanLocked(self):
        """
        Under the lock: move C{new/} into C{cur/}, give unseen files UIDs,
        forget vanished ones, and give a new modseq to files whose flag
        letters another tool changed.  The caller writes the index if
        C{changed}.  @return: C{(index, {basename: name in cur/}, changed)}.
        """
        new, cur = self.path / "new", self.path / "cur"
        index = self._lockedIndex()
        for name in _listNames(new):
            target = name if ":" in name else name + ":2,"
            try:
                os.rename(new / name, cur / target)
            except FileNotFoundError:
                pass  # another reader moved it: it is in cur/ now
        files = {_basename(n): n for n in _listNames(cur)}
        entries = index.entries
        gone = [key for key in entries if key not in files]
        if gone:
            index.expunge(gone)  # by another tool: see expunge()
        changed = bool(gone)
        for key, entry in entries.items():
            info = _infoLetters(files[key])
            if entry.info != info:
                if entry.info is not None:
                    entry.modseq = index.nextModSeq()
                entry.info = info
                changed = True
        for key in sorted((k for k in files if k not in entries), key=_deliveryOrder):
            index.add(key, _infoLetters(files[key]))
            changed = True
        return index, files, changed

    def _remember(self, index, files):
        self._fileNames = {e.uid: files[k] for k, e in index.entries.items()}

    def _sync(self, claimRecent=False):
        """
        Scan under the lock (see L{_scanLocked}); with C{claimRecent}, this
        caller is the session told of the recent messages (RFC 3501 2.3.2).
        @return: C{(index, first recent UID before any claim)}.
        """
        with self._locked():
            index, files, changed = self._scanLocked()
            firstRecent = index.firstRecent
            if claimRecent and index.firstRecent < index.uidNext:
                index.firstRecent = index.uidNext
                changed = True
            if changed:
                writeIndex(self.path, index)
        self._remember(index, files)
        return index, firstRecent

    def _find(self, uid):
        """The current file name of C{uid} in cur/, rescanning once."""
        if uid not in self._fileNames:
            self._sync()
        try:
            return self._fileNames[uid]
        except KeyError:
            raise KeyError(uid) from None

    def _retry(self, uid, action):
        """
        Call C{action(fileName)}; if another tool renamed the file meanwhile
        (a flag change), rescan and try again.
        """
        for _ in range(3):
            name = self._find(uid)
            try:
                return action(name)
            except FileNotFoundError:
                self._sync()
        raise KeyError(uid)

    def _flags(self, fileName, keywords):
        letters = _infoLetters(fileName)
        return frozenset({LETTER_FLAGS[c] for c in letters if c in LETTER_FLAGS}
                         | keywords.decode(letters))

    def snapshot(self, claimRecent=False):
        index, firstRecent = self._sync(claimRecent)
        keywords = Keywords.read(self.path)
        # Plain strings, not Path objects: on a 100,000-message mailbox
        # pathlib was a third of SELECT's CPU.
        cur = os.path.join(self.path, "cur", "")
        infos = []
        for uid, (key, entry) in sorted(index.byUid().items()):
            for _ in range(3):
                name = self._fileNames.get(uid)
                if name is None:
                    break  # expunged meanwhile
                try:
                    st = os.stat(cur + name)
                    break
                except FileNotFoundError:  # renamed by a flag change?
                    index = self._sync()[0]
                    entry = index.entries.get(key, entry)
            else:
                name = None
            if name is None:
                continue
            infos.append(MessageInfo(
                uid=uid, key=key, flags=self._flags(name, keywords),
                size=st.st_size, internalDate=st.st_mtime, modseq=entry.modseq,
                path=cur + name, saveDate=_saveDate(key, st.st_mtime),
            ))
        return MailboxSnapshot(
            messages=infos, uidValidity=index.validity, uidNext=index.uidNext,
            highestModSeq=index.highestModSeq,
            recent=frozenset(i.uid for i in infos if i.uid >= firstRecent),
            keywords=keywords.defined(), keywordsFull=keywords.full(),
            mailboxId=objectId("F", self.user, index.validity),
        )

    def changedSince(self, modseq, claimRecent=False):
        # The scan (deliveries and other tools change files behind the
        # index's back) lists directories; only the changed files are
        # looked at.
        index, firstRecent = self._sync(claimRecent)
        if modseq >= index.forgotten:
            keywords = Keywords.read(self.path)
            cur = os.path.join(self.path, "cur", "")
            infos = []
            try:
                for uid, (key, entry) in sorted(index.byUid().items()):
                    name = self._fileNames.get(uid)
                    if entry.modseq > modseq and name is not None:
                        st = os.stat(cur + name)
                        infos.append(MessageInfo(
                            uid=uid, key=key, flags=self._flags(name, keywords),
                            size=st.st_size, internalDate=st.st_mtime, modseq=entry.modseq,
                            path=cur + name, saveDate=_saveDate(key, st.st_mtime)))
            except FileNotFoundError:
                pass  # renamed or expunged by another tool meanwhile: see below
            else:
                return MailboxSnapshot(
                    messages=infos, uidValidity=index.validity, uidNext=index.uidNext,
                    highestModSeq=index.highestModSeq,
                    recent=frozenset(i.uid for i in infos if i.uid >= firstRecent),
                    keywords=keywords.defined(), keywordsFull=keywords.full(),
                    since=modseq, vanished=tuple(
                        sorted(u for u, m in index.expunged.items() if m > modseq)))
        # Expunges after modseq no longer all known (or a file moved under
        # our feet): the whole mailbox, and the caller compares UIDs.  The
        # recent messages were claimed above.
        whole = self.snapshot()
        return dataclasses.replace(whole, recent=frozenset(
            i.uid for i in whole.messages if i.uid >= firstRecent))

    def messages(self):
        return self.snapshot().messages

    # -- reading and changing ---------------------------------------------

    def openMessage(self, uid):
        return self._retry(uid, lambda n: FileContent.open(self.path / "cur" / n))

    def openMessages(self, uids):
        return openEach(self, uids)

    def summaries(self, uids, structure=True):
        """
        Computed from the file on the first read in this process, then
        kept in memory (L{SUMMARIES_CACHED} of them, the oldest go first):
        the Maildir has no index to keep them in.
        """
        store, out = self.store, {}
        for uid in uids:
            name = self._fileNames.get(uid)
            if name is None:
                try:
                    name = self._find(uid)
                except KeyError:
                    continue
            cacheKey = (str(self.path), _basename(name))
            summary = store._summaries.get(cacheKey)
            if summary is None:
                try:
                    with self.openMessage(uid) as content:
                        summary = summarize(content)
                except KeyError:
                    continue
                with store._summariesGuard:
                    if len(store._summaries) >= SUMMARIES_CACHED:
                        del store._summaries[next(iter(store._summaries))]
                    store._summaries[cacheKey] = summary
            out[uid] = summary
        return out

    def copy(self, uids, target):
        """
        Copy each message through L{append} on C{target}: the file is
        written again (a Maildir has no reference counting to share it).
        """
        pairs = []
        for uid in sorted(set(uids)):
            try:
                content = self.openMessage(uid)
            except KeyError:
                continue
            with content:
                # The flags and date as they are now, not as last scanned.
                info = self._info(uid)
                if info is None:
                    continue
                pairs.append((uid, target.append(content, info.flags, info.internalDate,
                                                 emailId=_emailId(self.user, info.key))))
        return pairs

    def _info(self, uid):
        """The L{MessageInfo} of C{uid} now, or C{None}."""
        try:
            name, st = self._retry(uid, lambda n: (n, os.stat(self.path / "cur" / n)))
        except KeyError:
            return None
        keywords = Keywords.read(self.path)
        return MessageInfo(uid=uid, key=_basename(name), flags=self._flags(name, keywords),
                           size=st.st_size, internalDate=st.st_mtime)

    def move(self, uids, target):
        pairs = self.copy(uids, target)
        if pairs:
            self.expunge([uid for uid, _ in pairs])
        return pairs

    def _keywordLetters(self, flags, allocate):
        """Under the lock: the letters of the keywords among C{flags}."""
        keywords = Keywords.read(self.path)
        letters, changed = keywords.encode(
            sorted(f for f in flags if not f.startswith("\\")), allocate)
        if changed:
            keywords.write(self.path)
        return keywords, letters

    def storeFlags(self, uids, mode, flags, unchangedSince=None):
        """
        Change the flags of messages: C{mode} C{"set"} replaces them,
        C{"add"} and C{"remove"} add or remove C{flags}.  Letters of file
        names we do not manage (C{P}, keywords not in the keyword file) are
        kept; C{\\Recent} is not a stored flag and is ignored.

        @return: C{({uid: (flags, modseq)}, [uids left alone])}: every
            message found, changed or not; those whose modseq is above
            C{unchangedSince} are left alone (RFC 7162 3.1.3).
        @raise KeywordLimit: a new keyword does not fit (nothing changed).
        """
        system = {FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS}
        cur = self.path / "cur"
        results, failed, renamed = {}, [], False
        with self._locked():
            keywords, words = self._keywordLetters(flags, allocate=(mode != "remove"))
            managed = set(LETTER_FLAGS) | keywords.letters()
            index, files, changed = self._scanLocked()
            byUid = index.byUid()
            for uid in uids:
                if uid not in byUid:
                    continue
                key, entry = byUid[uid]
                if unchangedSince is not None and entry.modseq > unchangedSince:
                    failed.append(uid)
                    continue
                old = set(_infoLetters(files[key]))
                if mode == "set":
                    new = (old - managed) | system | words
                elif mode == "add":
                    new = old | system | words
                else:
                    new = old - system - words
                if new != old:
                    info = "".join(sorted(new))  # ASCII order, per the spec
                    try:
                        os.rename(cur / files[key], cur / (key + ":2," + info))
                    except FileNotFoundError:
                        continue  # expunged by another tool under our feet
                    files[key] = key + ":2," + info
                    entry.info, entry.modseq = info, index.nextModSeq()
                    changed = renamed = True
                results[uid] = (self._flags(files[key], keywords), entry.modseq)
            if changed:
                writeIndex(self.path, index)
        self._remember(index, files)
        if renamed:
            self.store._notify(self.user, self.name)
        return results, failed

    def setFlags(self, uid, flags):
        """
        Replace the flags of one message (see L{storeFlags}).
        @raise KeyError: no such message.
        """
        if uid not in self.storeFlags([uid], "set", flags)[0]:
            raise KeyError(uid)

    def expunge(self, uids):
        uids = set(uids)
        self._expunge(lambda index, files: [
            key for key, e in index.entries.items() if e.uid in uids])

    def appendWithChanges(self, source, flags=(), internalDate=None, since=0,
                          claimRecent=False):
        uid = self.append(source, flags, internalDate)  # not atomic, as storeFlagsWithChanges
        return uid, self.changedSince(since, claimRecent)

    def storeFlagsWithChanges(self, uids, mode, flags, unchangedSince=None, since=0,
                              claimRecent=False):
        # Not atomic (nothing is, in a Maildir): the change, then what
        # changed since, the change included.
        stored = self.storeFlags(uids, mode, flags, unchangedSince)
        return stored, self.changedSince(since, claimRecent)

    def expungeDeleted(self, uids=None, since=None, claimRecent=False):
        # \Deleted as the file names say now (another tool may have set it).
        deleted = FLAG_LETTERS["\\Deleted"]
        doomed = self._expunge(lambda index, files: [
            key for key, e in index.entries.items()
            if key in files and deleted in _infoLetters(files[key])
            and (uids is None or e.uid in uids)])
        # Not atomic with the expunge (nothing is, in a Maildir): what
        # changed since, the expunge included.
        return doomed, None if since is None else self.changedSince(since, claimRecent)

    def _expunge(self, choose):
        """
        Expunge the messages C{choose(index, {key: fileName})} names (keys).

        @return: their UIDs, ascending.
        """
        cur = self.path / "cur"
        with self._locked():
            index = self._lockedIndex()
            files = {_basename(n): n for n in _listNames(cur)}
            doomed = choose(index, files)
            uids = {index.entries[key].uid for key in doomed}
            for key in doomed:
                # Another tool may rename the file (a flag change) between
                # listing and unlinking: list again and retry.
                for _ in range(3):
                    try:
                        if key in files:
                            os.unlink(cur / files[key])
                        break
                    except FileNotFoundError:
                        files = {_basename(n): n for n in _listNames(cur)}
            if doomed:
                fsyncDirectory(cur)
                # Expunges raise HIGHESTMODSEQ too, so "has anything changed
                # since N" sees them, and are remembered with it (RFC 7162
                # 3.2, QRESYNC, requires it).
                index.expunge(doomed)
                writeIndex(self.path, index)
        self._fileNames = {u: n for u, n in self._fileNames.items()
                           if u not in uids}
        if doomed:
            self.store._notify(self.user, self.name)
        return sorted(uids)

    def append(self, source, flags=(), internalDate=None, emailId=None):
        letters = {FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS}
        if any(not f.startswith("\\") for f in flags):
            with self._locked():
                letters |= self._keywordLetters(flags, allocate=True)[1]
        info = "".join(sorted(letters))
        key = self.store.uniqueName(emailId=emailId)
        fileName = key + ":2," + info
        try:
            writeMessage(self.path, "cur", fileName, b"", source, internalDate)
        except FileNotFoundError:
            if _isMaildir(self.path):
                raise
            raise MailboxGone(self.name) from None
        # Mail waiting in new/ arrived first and gets the lower UIDs: scan.
        # Otherwise (the usual case for Sent, COPY and MOVE) the UID is given
        # here with one write of the index, not a rescan of the whole
        # mailbox per appended message.
        with self._locked():
            waiting = _listNames(self.path / "new")
            if not waiting:
                index = self._lockedIndex()
                entry = index.entries.get(key)  # another process's scan may have listed it
                if entry is None:
                    entry = index.add(key, info)
                    writeIndex(self.path, index)
                uid = entry.uid
        if waiting:
            uid = self._sync()[0].entries[key].uid
        else:
            self._fileNames[uid] = fileName
        self.store._notify(self.user, self.name)
        return uid
