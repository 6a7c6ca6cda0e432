"""
Maildir and mbox in and out of a store (L{pymailer.interfaces.IMailImport}):
C{pymailer import}, C{pymailer export maildir}, and the move of the Maildir
backend's tree into the SQLite store at the first start after the switch.

Maildir comes in two dialects, told apart per folder by their index file:
  - ours, from the Maildir backend (L{pymailer.store.maildirindex}):
    C{pymailer-uidlist}, folder names with C{%XX} escapes in UTF-8;
  - Dovecot's: C{dovecot-uidlist} (version 3, C{3 V<uidvalidity> N<uidnext>}
    then C{<uid> [<ext>...] :<file name>}; version 1, C{1 <uidvalidity>
    <uidnext>} then C{<uid> <file name>}), folder names in modified UTF-7
    (RFC 3501 5.1.3).
Both keep keywords in C{dovecot-keywords} and system flags as the letters
after C{:2,} (U{https://cr.yp.to/proto/maildir.html}); the internal date is
the file's mtime.  UIDVALIDITY and UIDs are kept, so a client's cache stays
valid (RFC 3501 2.3.1.1); a file the index does not list (delivered after
the last scan) gets a new UID after the listed ones.

mbox (mboxrd and mboxo): messages split at C{From } lines, C{>From } lines
unescaped one level, flags from C{Status:} (C{R} seen) and C{X-Status:}
(C{A} answered, C{F} flagged, C{T} draft, C{D} deleted), the internal date
from the C{From } line; new UIDs.

Line ends become CRLF (RFC 5322 2.3; IMAP sends the octets as stored, and
Maildirs written by Dovecot or mutt and every mbox use bare LF).

Trust: the files are the administrator's, but may be damaged: malformed
index lines and folder names that are not mailbox names are skipped.
All functions block: run them in a thread, or from the admin command.
"""

import calendar
import io
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import twisted.mail.imap4  # noqa: F401 (registers the "imap4-utf-7" codec)
from twisted.logger import Logger

from pymailer.fsutil import exclusiveLock, fsyncDirectory, writeDurably
from pymailer.store import INBOX, ImportedMessage
from pymailer.store.maildir import (
    FLAG_LETTERS, LETTER_FLAGS, _basename, _decodeComponent, _deliveryOrder,
    _encodeComponent, _externalName, _infoLetters, _listNames, writeMessage,
)
from pymailer.store.maildirindex import UIDLIST, Keywords, readIndex

log = Logger()

CHUNK = 64 * 1024
DOVECOT_UIDLIST = "dovecot-uidlist"
# The Maildir backend's tree, once moved into the SQLite store.
LEGACY_DONE = "mail.imported"
_BARE_LF = re.compile(rb"(?<!\r)\n")


# -- reading ------------------------------------------------------------------

class CrlfReader:
    """A binary file's octets with every bare LF made CRLF, streamed."""

    def __init__(self, f):
        self._f = f
        self._lastCR = False

    def read(self, size=-1):
        chunk = self._f.read(CHUNK if size is None or size < 0 else size)
        if not chunk:
            return chunk
        head = b""
        if self._lastCR and chunk[:1] == b"\n":  # a CRLF split by the chunking
            head, chunk = b"\n", chunk[1:]
        self._lastCR = chunk[-1:] == b"\r"
        return head + _BARE_LF.sub(b"\r\n", chunk)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _opener(path):
    return lambda: CrlfReader(open(path, "rb"))


@dataclass
class SourceMailbox:
    """One mailbox read from elsewhere, ready for L{IMailImport.importMailbox}."""

    name: str
    uidValidity: int = None
    uidNext: int = None
    messages: list = field(default_factory=list)


def readDovecotUidlist(directory):
    """
    @return: C{(uidvalidity, uidnext, {basename: uid})} of C{directory}'s
        C{dovecot-uidlist}, or C{None} without a readable one.
    """
    try:
        with open(os.path.join(directory, DOVECOT_UIDLIST), encoding="utf-8",
                  errors="surrogateescape") as f:
            header = f.readline().split()
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    try:
        if header[0] == "1":
            validity, uidNext = int(header[1]), int(header[2])
        elif header[0] == "3":
            fields = {h[0]: h[1:] for h in header[1:]}
            validity, uidNext = int(fields["V"]), int(fields["N"])
        else:
            raise ValueError(header)
    except (ValueError, IndexError, KeyError):
        log.warn("Unreadable {path}: new UIDs", path=os.path.join(directory, DOVECOT_UIDLIST))
        return None
    uids = {}
    for line in lines:
        uid, _, rest = line.partition(" ")
        if header[0] == "3":
            # Extension fields (W<size>, S<size>, G<guid>...) come before
            # the name, which starts with ":".
            tokens = rest.split(" ")
            starts = [i for i, t in enumerate(tokens) if t.startswith(":")]
            if not starts:
                continue
            rest = " ".join(tokens[starts[0]:])[1:]
        if uid.isdigit() and rest:
            uids[_basename(rest)] = int(uid)
    return validity, uidNext, uids


def _ourIndex(directory):
    index = readIndex(directory)
    if index is None:
        return None
    return index.validity, index.uidNext, {k: e.uid for k, e in index.entries.items()}


def readMaildir(directory, name):
    """
    One Maildir folder as a L{SourceMailbox}: messages with their UIDs
    (listed ones ascending, then unlisted ones in delivery order), flags,
    keywords and dates.
    """
    index = _ourIndex(directory) or readDovecotUidlist(directory)
    validity, uidNext, uids = index if index is not None else (None, None, {})
    keywords = Keywords.read(directory)
    listed, unlisted = [], []
    for sub in ("cur", "new"):
        for fileName in _listNames(os.path.join(directory, sub)):
            path = os.path.join(directory, sub, fileName)
            try:
                mtime = os.stat(path).st_mtime
            except FileNotFoundError:
                continue  # moved by a running tool: seen in the other directory
            letters = _infoLetters(fileName)
            flags = frozenset({LETTER_FLAGS[c] for c in letters if c in LETTER_FLAGS}
                              | keywords.decode(letters))
            key = _basename(fileName)
            uid = uids.get(key)
            message = ImportedMessage(uid=uid, flags=flags, internalDate=mtime,
                                      open=_opener(path))
            if uid is None:
                unlisted.append((_deliveryOrder(key), message))
            else:
                listed.append((uid, message))
    listed.sort(key=lambda pair: pair[0])
    unlisted.sort(key=lambda pair: pair[0])
    return SourceMailbox(name, validity, uidNext,
                         [m for _, m in listed] + [m for _, m in unlisted])


def _dovecotName(diskName):
    """C{.a&AOk-.b} -> C{a\u00e9/b} (modified UTF-7, then our C{%XX}), or C{None}."""
    if not diskName.startswith(".") or diskName.startswith(".."):
        return None
    try:
        return "/".join(_decodeComponent(c.encode("ascii").decode("imap4-utf-7"))
                        for c in diskName[1:].split("."))
    except (UnicodeError, ValueError):
        return None


def _isMaildir(path):
    return os.path.isdir(os.path.join(path, "cur"))


def readMaildirTree(root):
    """
    Every folder of the Maildir++ tree at C{root}: C{root} itself is INBOX,
    C{.Sent} is C{Sent}, C{.a.b} is C{a/b}.

    @return: a list of L{SourceMailbox}, INBOX first.
    """
    root = Path(root)
    boxes = [readMaildir(root, INBOX)] if _isMaildir(root) else []
    for entry in sorted(os.listdir(root)):
        path = root / entry
        if not _isMaildir(path):
            continue
        # A folder our backend indexed has our names; anything else is
        # named the Dovecot way.
        if (path / UIDLIST).exists() or (root / UIDLIST).exists():
            name = _externalName(entry) or _dovecotName(entry)
        else:
            name = _dovecotName(entry)
        if name is None:
            log.warn("Skipping {path}: not a mailbox name", path=str(path))
            continue
        boxes.append(readMaildir(path, name))
    return boxes


_FROM_DATE = re.compile(rb"^From \S+\s+(.*?)\s*$")
_QUOTED_FROM = re.compile(rb"^>+From ")


def _fromLineDate(line):
    """The date of an mbox C{From } line (asctime), else now."""
    match = _FROM_DATE.match(line)
    if match:
        try:
            text = " ".join(match[1].decode("ascii").split())
            return float(calendar.timegm(time.strptime(text, "%a %b %d %H:%M:%S %Y")))
        except (UnicodeError, ValueError):
            pass
    return time.time()


def _statusFlags(headerLines):
    """The flags C{Status:} and C{X-Status:} (as mutt and Thunderbird write them) say."""
    flags = set()
    for line in headerLines:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"status" and b"R" in value:
            flags.add("\\Seen")
        elif name == b"x-status":
            for letter, flag in ((b"A", "\\Answered"), (b"F", "\\Flagged"),
                                 (b"T", "\\Draft"), (b"D", "\\Deleted")):
                if letter in value:
                    flags.add(flag)
    return frozenset(flags)


def readMbox(path, name=INBOX):
    """
    An mbox file as a L{SourceMailbox} (no UIDVALIDITY: new UIDs).  One
    message at a time is held in memory, not the whole file.
    """

    def messages():
        with open(path, "rb") as f:
            fromLine, lines = None, []
            for line in f:
                if line.startswith(b"From "):
                    if fromLine is not None:
                        yield _mboxMessage(fromLine, lines)
                    fromLine, lines = line, []
                elif fromLine is not None:
                    lines.append(line[1:] if _QUOTED_FROM.match(line) else line)
            if fromLine is not None:
                yield _mboxMessage(fromLine, lines)

    return SourceMailbox(name, None, None, messages())


def _mboxMessage(fromLine, lines):
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines = lines[:-1]  # the blank line before the next From belongs to mbox
    header = []
    for line in lines:
        if line in (b"\n", b"\r\n"):
            break
        header.append(line)
    data = b"".join(lines)
    return ImportedMessage(uid=None, flags=_statusFlags(header),
                           internalDate=_fromLineDate(fromLine),
                           open=lambda: CrlfReader(io.BytesIO(data)))


def importMailboxes(store, user, boxes, folder=None):
    """
    Import L{SourceMailbox}es into C{store} for C{user}; with C{folder},
    under that name (INBOX becomes C{folder}, C{Sent} C{folder/Sent}).

    @return: C{[(mailbox name, messages added)]}.
    """
    done = []
    for box in boxes:
        name = box.name
        if folder is not None:
            name = folder if name == INBOX else f"{folder}/{name}"
        count = store.importMailbox(user, name, box.uidValidity, box.messages, box.uidNext)
        done.append((store.canonicalName(name), count))
    return done


# -- the Maildir backend's tree, at the first start on SQLite ------------------

def legacyUsers(mailRoot):
    """C{[(user, directory)]} of the Maildir backend's C{root/domain/local}."""
    found = []
    for domain in sorted(_listNames(mailRoot)):
        for local in sorted(_listNames(os.path.join(mailRoot, domain))):
            directory = Path(mailRoot, domain, local)
            if _isMaildir(directory):
                found.append((f"{local}@{domain}", directory))
    return found


def migrateLegacyMaildirs(store, dataDir, hostname):
    """
    Move the Maildir backend's mail (C{dataDir/mail}) into C{store} once:
    only when the store holds no message yet, under a lock every process
    on C{dataDir} shares, and the tree is renamed C{mail.imported} after,
    so it is neither imported twice nor lost (it stays for the
    administrator to remove).  Subscriptions come along.

    @return: how many messages moved (C{0}: nothing to do).
    """
    mailRoot = Path(dataDir) / "mail"
    if not mailRoot.is_dir():
        return 0
    started = Path(dataDir) / "mail-import.started"
    with exclusiveLock(Path(dataDir) / "mail-import.lock"):
        # An import that stopped half-way (a crash, a full disk) goes on at
        # the next start: the store is no longer empty, but the mark says so.
        if not mailRoot.is_dir() or not (store.isEmpty() or started.exists()):
            return 0
        writeDurably(str(started), b"")
        fsyncDirectory(dataDir)
        from pymailer.store.maildir import MaildirStore
        legacy = MaildirStore(mailRoot, hostname, stateDir=dataDir)
        total = 0
        for user, directory in legacyUsers(mailRoot):
            # The old backend indexes every folder first, as it would on any
            # access: every message then has a UIDVALIDITY and a UID, so
            # clients keep their caches and a resumed import skips what is in.
            for name in legacy.listMailboxes(user):
                legacy.mailbox(user, name).snapshot()
            for name, count in importMailboxes(store, user, readMaildirTree(directory)):
                log.info("Imported {count} messages of {user} {mailbox} from {path}",
                         count=count, user=user, mailbox=name, path=str(directory))
                total += count
            for name in legacy.subscriptions(user):
                store.subscribe(user, name)
        os.rename(mailRoot, Path(dataDir) / LEGACY_DONE)
        started.unlink()
        fsyncDirectory(dataDir)
        log.info("Moved {total} messages from the Maildir backend into the store; the old"
                 " tree is now {done}", total=total, done=str(Path(dataDir) / LEGACY_DONE))
        return total


# -- writing --------------------------------------------------------------------

def _exportDiskName(name):
    """C{a\u00e9/b} -> C{.a&AOk-.b}: what Dovecot's Maildir++ layout reads."""
    return "." + ".".join(_encodeComponent(c).encode("imap4-utf-7").decode("ascii")
                          for c in name.split("/"))


def exportMaildir(store, user, directory):
    """
    Write C{user}'s mailboxes as a Maildir++ tree at C{directory} (new or
    empty) that Dovecot, mutt and Python's C{mailbox.Maildir} read: flags
    as C{:2,} letters (ASCII order), keywords as letters named in
    C{dovecot-keywords}, C{dovecot-uidlist} (version 3) with our UIDs and
    UIDVALIDITY, the internal date as mtime.

    @return: C{[(mailbox name, messages written)]}.
    """
    root = Path(directory)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    done = []
    for name in store.listMailboxes(user):
        path = root if name == INBOX else root / _exportDiskName(name)
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(0o700, parents=True, exist_ok=True)
        if name != INBOX:
            open(path / "maildirfolder", "ab").close()
        mailbox = store.mailbox(user, name)
        snapshot = mailbox.snapshot()
        keywords, lines = Keywords(), []
        for info in snapshot.messages:
            letters, _ = keywords.encode(sorted(f for f in info.flags
                                                if not f.startswith("\\")), True)
            letters |= {FLAG_LETTERS[f] for f in info.flags if f in FLAG_LETTERS}
            base = f"{int(info.internalDate)}.U{info.uid}V{snapshot.uidValidity}.pymailer"
            try:
                content = mailbox.openMessage(info.uid)
            except KeyError:
                continue  # expunged since the snapshot
            with content:
                writeMessage(str(path), "cur", f"{base}:2,{''.join(sorted(letters))}",
                             b"", content, info.internalDate)
            lines.append(f"{info.uid} :{base}\n")
        keywords.write(str(path))
        writeDurably(str(path / DOVECOT_UIDLIST),
                     (f"3 V{snapshot.uidValidity} N{snapshot.uidNext}\n"
                      + "".join(lines)).encode("utf-8"))
        fsyncDirectory(str(path))
        done.append((name, len(lines)))
    fsyncDirectory(str(root))
    return done
