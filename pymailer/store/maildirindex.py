"""
The per-mailbox index of the Maildir store (L{pymailer.store.maildir}):
UIDs, mod-sequences (RFC 7162 CONDSTORE), the first C{\\Recent} UID, and
the keyword names behind the lower-case letters of file names.  Two small
files next to C{cur/}, each replaced atomically (temporary file, fsync,
rename, directory fsync) and changed only under the mailbox lock.

C{pymailer-uidlist}, version 2::

    2 V<uidvalidity> N<uidnext> M<highestmodseq> R<first recent uid> X<forgotten>
    <uid> <modseq> :<info letters> <basename>
    -<uid> <modseq>

A C{-} line is an expunged UID with the mod-sequence of its expunge (RFC
7162 3.2: QRESYNC's VANISHED), the last L{EXPUNGES_KEPT} of them; C{X} is
the highest mod-sequence of those forgotten beyond that, so a question
about changes since an older one is answered with a whole scan.  Readers
written before these lines skip them (no C{:} field).

The info letters are what the file name said (after C{:2,}) when the
index last looked: a rename by another Maildir tool (mutt setting \\Seen)
shows up as a difference at the next scan and gets a new mod-sequence, so
a CONDSTORE client asking what changed is told.  Version 1 files
(C{1 V<uidvalidity> N<uidnext>}, then C{<uid> <basename>}), written before
CONDSTORE, are read with modseq 1 and unknown letters: the next scan
records the letters it finds without counting them as a change.

Messages with a UID at or above the first-recent UID are C{\\Recent}
(RFC 3501 2.3.2): no session has been told of them yet.  A read-write
SELECT claims them by moving the mark to UIDNEXT.

C{dovecot-keywords}: keywords as Dovecot stores them in Maildir, one
C{<index> <name>} per line, index 0 being letter C{a} in file names and 25
letter C{z}; using Dovecot's format keeps keywords across a move to or
from Dovecot.  A letter is never given to another keyword.  Keywords are
compared case-insensitively (as Cyrus and Dovecot do), spelt as first
stored.

Trust: the files are ours, but a corrupt uidlist is not fatal (the caller
starts a new UIDVALIDITY, RFC 3501 2.3.1.1) and malformed lines are
skipped.
"""

import os
import string

from twisted.logger import Logger

from pymailer.fsutil import fsyncDirectory, writeDurably
from pymailer.store import KeywordLimit

log = Logger()

UIDLIST = "pymailer-uidlist"
KEYWORDS = "dovecot-keywords"
KEYWORD_LETTERS = string.ascii_lowercase
# Expunged UIDs the uidlist remembers: the file is rewritten on each
# change, so the history is bounded; beyond it QRESYNC still works, from
# the client's known UIDs (RFC 7162 3.2.5.2), at the cost of a scan.
EXPUNGES_KEPT = 1000


class Entry:
    """One message in the index; C{info} is C{None} until first seen."""

    __slots__ = ("uid", "modseq", "info")

    def __init__(self, uid, modseq, info):
        self.uid, self.modseq, self.info = uid, modseq, info


class Index:
    """
    The contents of C{pymailer-uidlist}.

    @ivar entries: C{{basename: Entry}}.
    @ivar expunged: C{{uid: modseq of its expunge}}, the last
        L{EXPUNGES_KEPT}.
    @ivar forgotten: the highest modseq of an expunge no longer in
        C{expunged} (C{0}: none forgotten).
    """

    def __init__(self, validity, uidNext, highestModSeq=1, firstRecent=1,
                 entries=None):
        self.validity = validity
        self.uidNext = uidNext
        self.highestModSeq = highestModSeq
        self.firstRecent = firstRecent
        self.entries = entries if entries is not None else {}
        self.expunged = {}
        self.forgotten = 0

    def expunge(self, keys):
        """
        Forget the messages C{keys} (basenames), remembering their UIDs
        with one new modseq (RFC 7162 3.2).
        """
        modseq = self.nextModSeq()
        for key in keys:
            self.expunged[self.entries.pop(key).uid] = modseq
        if len(self.expunged) > EXPUNGES_KEPT:
            oldest = sorted(self.expunged.items(), key=lambda item: item[1])
            for uid, gone in oldest[:len(self.expunged) - EXPUNGES_KEPT]:
                del self.expunged[uid]
                self.forgotten = max(self.forgotten, gone)

    def nextModSeq(self):
        """A mod-sequence higher than any given so far (RFC 7162 3.1)."""
        self.highestModSeq += 1
        return self.highestModSeq

    def add(self, key, info):
        """Give the new message C{key} the next UID and a new modseq."""
        entry = self.entries[key] = Entry(self.uidNext, self.nextModSeq(), info)
        self.uidNext += 1
        return entry

    def byUid(self):
        return {entry.uid: (key, entry) for key, entry in self.entries.items()}


def readIndex(directory):
    """
    @return: the L{Index} in C{directory}, or C{None} if there is none or
        it is unreadable.  Safe without the lock: it is only ever replaced
        by rename.
    """
    path = os.path.join(directory, UIDLIST)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            header = f.readline().split()
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    try:
        fields = {h[0]: int(h[1:]) for h in header[1:]}
        version = header[0]
        if version not in ("1", "2") or not {"V", "N"} <= set(fields):
            raise ValueError(header)
    except (ValueError, IndexError):
        log.warn("Corrupt {path}, starting a new UIDVALIDITY", path=path)
        return None
    index = Index(fields["V"], fields["N"], fields.get("M", 1), fields.get("R", 1))
    index.forgotten = fields.get("X", 0)
    entries = index.entries
    for line in lines:
        if line.startswith("-") and version == "2":
            uid, _, modseq = line[1:].partition(" ")
            if uid.isdigit() and modseq.isdigit():
                index.expunged[int(uid)] = int(modseq)
            continue
        if version == "1":
            uid, _, key = line.partition(" ")
            modseq, info = "1", None
        else:
            uid, modseq, info, key = (line.split(" ", 3) + ["", "", ""])[:4]
            if not info.startswith(":"):
                continue
            info = info[1:]
        if uid.isdigit() and modseq.isdigit() and key:
            entries[key] = Entry(int(uid), int(modseq), info)
    return index


def writeIndex(directory, index):
    """Replace the index file durably (file and directory fsynced)."""
    lines = ["2 V%d N%d M%d R%d X%d\n" % (index.validity, index.uidNext, index.highestModSeq,
                                          index.firstRecent, index.forgotten)]
    for key, entry in sorted(index.entries.items(), key=lambda kv: kv[1].uid):
        lines.append("%d %d :%s %s\n" % (entry.uid, entry.modseq, entry.info or "", key))
    lines.extend("-%d %d\n" % item for item in sorted(index.expunged.items()))
    data = "".join(lines).encode("utf-8", "surrogateescape")
    writeDurably(os.path.join(directory, UIDLIST), data, mode=0o600)
    fsyncDirectory(directory)


def validKeyword(name):
    """An IMAP flag-keyword (an atom, RFC 3501 9) that fits our files."""
    return (bool(name) and not name.startswith("\\") and len(name) <= 128
            and all(33 <= ord(c) < 127 and c not in '(){%*"\\]' for c in name))


class Keywords:
    """The keyword <-> file name letter map of one mailbox."""

    def __init__(self, names=None):
        # index -> name or None
        self.names = list(names) if names is not None else [None] * len(KEYWORD_LETTERS)
        self._byName = {n.lower(): i for i, n in enumerate(self.names) if n}

    @classmethod
    def read(cls, directory):
        names = [None] * len(KEYWORD_LETTERS)
        try:
            with open(os.path.join(directory, KEYWORDS), encoding="utf-8",
                      errors="replace") as f:
                for line in f:
                    number, _, name = line.rstrip("\n").partition(" ")
                    if number.isdigit() and int(number) < len(names) and validKeyword(name):
                        names[int(number)] = name
        except FileNotFoundError:
            pass
        return cls(names)

    def write(self, directory):
        data = "".join(f"{i} {n}\n" for i, n in enumerate(self.names) if n)
        writeDurably(os.path.join(directory, KEYWORDS), data.encode("utf-8"), mode=0o600)
        fsyncDirectory(directory)

    def defined(self):
        return tuple(n for n in self.names if n)

    def full(self):
        return None not in self.names

    def letters(self):
        """The letters that stand for a keyword (others are left alone)."""
        return {KEYWORD_LETTERS[i] for i, n in enumerate(self.names) if n}

    def decode(self, letters):
        """The keyword names of the lower-case C{letters} of a file name."""
        out = set()
        for c in letters:
            i = KEYWORD_LETTERS.find(c)
            if i >= 0 and self.names[i]:
                out.add(self.names[i])
        return out

    def encode(self, names, allocate):
        """
        The letters of the keywords C{names}; with C{allocate}, unknown ones
        get free letters (the caller writes the file if C{changed}).

        @return: C{(letters, changed)}.
        @raise KeywordLimit: no free letter is left.
        @raise ValueError: a name is not a keyword.
        """
        letters, changed = set(), False
        for name in names:
            if not validKeyword(name):
                raise ValueError(f"bad keyword {name!r}")
            i = self._byName.get(name.lower())
            if i is None:
                if not allocate:
                    continue
                if self.full():
                    raise KeywordLimit(
                        f"at most {len(KEYWORD_LETTERS)} keywords per mailbox")
                i = self.names.index(None)
                self.names[i] = name
                self._byName[name.lower()] = i
                changed = True
            letters.add(KEYWORD_LETTERS[i])
        return letters, changed
