"""
An in-memory L{IMailStore}: everything the store interfaces promise, kept in
dictionaries of one process, for tests and for trying protocol code without
a disk.  It runs the same contract suite as the production backends
(C{tests/store_contract.py}), so it cannot drift from them.

Thread-safe: one lock guards all state, so pool threads may call it at once;
listeners are called after the lock is released, in the calling thread.
Nothing survives the process, so "durable" means "visible to every later
call"; the maildrop lock is per store object.

Keywords use the Maildir backend's L{Keywords} map, so the per-mailbox
keyword limit (26) and case-insensitive matching are the same everywhere.
"""

import itertools
import secrets
import tempfile
import threading
import time

from zope.interface import implementer

from pymailer.interfaces import IMailbox, IMaildropLock, IMailImport, IMailStore
from pymailer.store import (
    INBOX, SPECIAL_USE, KeywordLimit, Listeners, MailboxGone, MailboxSnapshot, MaildropLocked,
    MessageInfo, canonicalNameWithin, checkDeliveryKey, importPlan, importTarget, newObjectId,
    openEach, renameMoves, specialUseOf,
)
from pymailer.store.content import BytesContent
from pymailer.message.summary import summarize
from pymailer.store.maildirindex import KEYWORD_LETTERS, Keywords


NAME_LIMIT = 1000                 # octets of UTF-8 in a mailbox name
SPOOL_IN_MEMORY = 1024 * 1024     # APPEND spools above this go to a file
CHUNK = 64 * 1024
_SYSTEM = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class _Message:
    __slots__ = ("uid", "key", "data", "system", "letters", "internalDate",
                 "modseq", "uniqueKey", "summary", "saveDate", "emailId")

    def __init__(self, uid, key, data, system, letters, internalDate, modseq,
                 uniqueKey=None, summary=None, emailId=None):
        self.uid, self.key, self.data = uid, key, data
        self.summary = summary  # shared by copies: the content is the same
        self.system, self.letters = system, letters
        self.internalDate, self.modseq = internalDate, modseq
        self.uniqueKey = uniqueKey
        self.saveDate = time.time()  # RFC 8514 3: a copy is saved anew
        # RFC 8474 5.1: a copy keeps the EMAILID of its source.
        self.emailId = emailId or newObjectId("M")


class _Box:
    """One mailbox's state; a rename moves it, a delete drops it."""

    def __init__(self, validity, specialUse=frozenset()):
        self.validity = validity
        self.specialUse = specialUse
        self.uidNext = 1
        self.highestModSeq = 1
        self.firstRecent = 1
        self.messages = {}  # uid -> _Message, in ascending UID order
        # uid -> the mod-sequence of its expunge, for changedSince: kept
        # for the mailbox's life, unbounded (a test store is small).
        self.expunged = {}
        self.keywords = Keywords()
        self.objectId = newObjectId("F")  # RFC 8474 4: the box's, renamed or not

    def nextModSeq(self):
        self.highestModSeq += 1
        return self.highestModSeq


class _Account:
    def __init__(self):
        self.boxes = {}
        self.subscriptions = set()
        self.lastValidity = 0
        self.maildropLocked = False


@implementer(IMaildropLock)
class _MaildropLock:
    def __init__(self, store, user):
        self._store, self._user = store, user
        self._held = True

    def release(self):
        with self._store._lock:
            if self._held:
                self._held = False
                self._store._accounts[self._user].maildropLocked = False


def _readAll(prefix, source):
    chunks = [prefix]
    while chunk := source.read(CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


@implementer(IMailStore, IMailImport)
class MemoryStore(Listeners):
    """L{IMailStore} in memory (see the module docstring)."""

    def __init__(self):
        self._lock = threading.RLock()
        self._accounts = {}
        self._keys = itertools.count(1)

    # -- accounts and names --------------------------------------------------

    def canonicalName(self, name, new=False):
        return canonicalNameWithin(name, NAME_LIMIT, new)

    def _newValidity(self, account):
        # Never one given before to this user (RFC 3501 2.3.1.1), even for a
        # name deleted and created again within the second.
        account.lastValidity = max(account.lastValidity + 1, int(time.time())) % 2**32 or 1
        return account.lastValidity

    def _account(self, user):
        """Under the lock: the account, made with its folders on first access."""
        if not isinstance(user, str) or "@" not in user:
            raise ValueError(f"bad user {user!r}")
        account = self._accounts.get(user)
        if account is None:
            account = self._accounts[user] = _Account()
            self._makeFolders(account)
        return account

    def _makeFolders(self, account):
        for name in (INBOX, *SPECIAL_USE):
            if name not in account.boxes:
                account.boxes[name] = _Box(self._newValidity(account), specialUseOf(name))

    def createUser(self, user):
        with self._lock:
            self._makeFolders(self._account(user))

    def mailbox(self, user, name=INBOX):
        canonical = self.canonicalName(name)
        with self._lock:
            box = self._account(user).boxes.get(canonical)
            if box is None:
                raise KeyError(name)
        return MemoryMailbox(self, user, canonical, box)

    def listMailboxes(self, user):
        with self._lock:
            names = set(self._account(user).boxes)
        return [INBOX] + sorted(names - {INBOX})

    def createMailbox(self, user, name, specialUse=None):
        canonical = self.canonicalName(name, new=True)
        uses = specialUseOf(canonical, specialUse)
        with self._lock:
            account = self._account(user)
            if canonical in account.boxes:
                raise KeyError(name)
            account.boxes[canonical] = _Box(self._newValidity(account), uses)
        self._notify(user, canonical)

    def specialUses(self, user):
        with self._lock:
            return {name: box.specialUse
                    for name, box in self._account(user).boxes.items() if box.specialUse}

    def deleteMailbox(self, user, name):
        canonical = self.canonicalName(name)
        if canonical == INBOX:
            raise ValueError("INBOX cannot be deleted")
        with self._lock:
            if self._account(user).boxes.pop(canonical, None) is None:
                raise KeyError(name)
        self._notify(user, canonical)

    def renameMailbox(self, user, oldName, newName):
        old, new = self.canonicalName(oldName), self.canonicalName(newName, new=True)
        if INBOX in (old, new):
            raise ValueError("renaming to or from INBOX is not supported")
        with self._lock:
            boxes = self._account(user).boxes
            if old not in boxes:
                raise KeyError(oldName)
            try:
                moves = renameMoves(boxes, old, new, self.canonicalName)
            except KeyError:
                raise KeyError(newName) from None
            moved = {target: boxes.pop(source) for source, target in moves}
            boxes.update(moved)
        self._notify(user, old)

    def usage(self, user):
        with self._lock:
            account = self._accounts.get(user)
            boxes = account.boxes.values() if account is not None else ()
            return sum(len(m.data) for box in boxes for m in box.messages.values())

    def mailboxCounts(self, user):
        with self._lock:
            return {name: (len(box.messages),
                           sum("\\Seen" not in m.system for m in box.messages.values()))
                    for name, box in self._account(user).boxes.items()}

    # -- subscriptions, maildrop lock, spools ------------------------------

    def subscriptions(self, user):
        with self._lock:
            return set(self._account(user).subscriptions)

    def subscribe(self, user, name):
        with self._lock:
            self._account(user).subscriptions.add(name)
        self._notify(user, name)

    def unsubscribe(self, user, name):
        with self._lock:
            self._account(user).subscriptions.discard(name)
        self._notify(user, name)

    def lockMaildrop(self, user):
        with self._lock:
            account = self._account(user)
            if account.maildropLocked:
                raise MaildropLocked(user)
            account.maildropLocked = True
        return _MaildropLock(self, user)

    def newAppendSpool(self):
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)

    # -- delivery ----------------------------------------------------------

    def _newKey(self):
        return "M%d.%s" % (next(self._keys), secrets.token_hex(4))

    def deliver(self, user, prefix, source, mailbox=INBOX, uniqueKey=None,
                checkDuplicate=False):
        checkDeliveryKey(uniqueKey, checkDuplicate)
        canonical = self.canonicalName(mailbox)
        data = _readAll(prefix, source)  # outside the lock: source may block
        summary = summarize(BytesContent(data))
        with self._lock:
            box = self._account(user).boxes.get(canonical)
            if box is None:
                raise KeyError(mailbox)
            if checkDuplicate and any(m.uniqueKey == uniqueKey
                                      for m in box.messages.values()):
                return False
            self._add(box, data, frozenset(), frozenset(), time.time(), uniqueKey,
                      summary)
        self._notify(user, canonical)
        return True

    def _add(self, box, data, system, letters, internalDate, uniqueKey=None, summary=None,
             emailId=None):
        """Under the lock: a new message in C{box}. @return: its UID."""
        uid = box.uidNext
        box.uidNext += 1
        box.messages[uid] = _Message(uid, self._newKey(), data, system, letters,
                                     internalDate, box.nextModSeq(), uniqueKey, summary,
                                     emailId)
        return uid


    def importMailbox(self, user, name, uidValidity, messages, uidNext=None):
        canonical = self.canonicalName(name)
        with self._lock:
            account = self._account(user)
            box = account.boxes.get(canonical)
            if box is None:
                box = account.boxes[canonical] = _Box(self._newValidity(account), specialUseOf(canonical))
            take, keepUids, resuming = importTarget(uidValidity, box.validity,
                                                    bool(box.messages), canonical)
            if take:
                box.validity, box.uidNext, box.firstRecent = uidValidity, 1, 1
                account.lastValidity = max(account.lastValidity, uidValidity)
        mailbox, count = MemoryMailbox(self, user, canonical, box), 0
        for message in messages:
            with message.open() as source:
                data = _readAll(b"", source)  # outside the lock: source may block
            summary = summarize(BytesContent(data))
            with self._lock:
                plan = importPlan(keepUids, resuming, box.uidNext, message.uid)
                if plan == "skip":
                    continue
                if plan == "keep":
                    box.uidNext = message.uid
                system, letters, box.keywords = mailbox._split(box, message.flags, True)
                self._add(box, data, system, letters, message.internalDate,
                          summary=summary)
                count += 1
        with self._lock:
            box.uidNext = max(box.uidNext, uidNext or 0)
            box.firstRecent = box.uidNext
        self._notify(user, canonical)
        return count


@implementer(IMailbox)
class MemoryMailbox:
    """One mailbox of a L{MemoryStore}."""

    def __init__(self, store, user, name, box):
        self.store = store
        self.user = user
        self.name = name
        self._box = box

    def _state(self):
        """Under the store lock: the box, or L{MailboxGone}."""
        account = self.store._accounts.get(self.user)
        if account is None or account.boxes.get(self.name) is not self._box:
            raise MailboxGone(self.name)
        return self._box

    def uidValidity(self):
        with self.store._lock:
            return self._state().validity

    def uidNext(self):
        with self.store._lock:
            return self._state().uidNext

    def highestModSeq(self):
        with self.store._lock:
            return self._state().highestModSeq

    def changeStamp(self):
        return None  # a scan of memory is as cheap as the stamp would be

    def mailboxId(self):
        with self.store._lock:
            return self._state().objectId

    def emailIds(self, uids):
        with self.store._lock:
            messages = self._state().messages
            return {u: messages[u].emailId for u in uids if u in messages}

    def _flags(self, box, message):
        return message.system | box.keywords.decode(message.letters)

    def _info(self, box, message):
        return MessageInfo(
            uid=message.uid, key=message.key, flags=self._flags(box, message),
            size=len(message.data), internalDate=message.internalDate,
            modseq=message.modseq, saveDate=message.saveDate,
        )

    def snapshot(self, claimRecent=False):
        return self._read(claimRecent)

    def changedSince(self, modseq, claimRecent=False):
        return self._read(claimRecent, modseq)

    def _read(self, claimRecent, since=None):
        """L{snapshot}, or with C{since} the answer of L{changedSince}."""
        with self.store._lock:
            box = self._state()
            firstRecent = box.firstRecent
            if claimRecent:  # RFC 3501 2.3.2: this session is told of them
                box.firstRecent = box.uidNext
            infos = [self._info(box, m) for m in box.messages.values()
                     if since is None or m.modseq > since]
            vanished = () if since is None else tuple(
                sorted(u for u, m in box.expunged.items() if m > since))
            return MailboxSnapshot(
                messages=infos, uidValidity=box.validity, uidNext=box.uidNext,
                highestModSeq=box.highestModSeq,
                recent=frozenset(i.uid for i in infos if i.uid >= firstRecent),
                keywords=box.keywords.defined(), keywordsFull=box.keywords.full(),
                since=since, vanished=vanished,
                mailboxId=box.objectId,
            )

    def messages(self):
        return self.snapshot().messages

    def openMessage(self, uid):
        with self.store._lock:
            message = self._state().messages.get(uid)
            if message is None:
                raise KeyError(uid)
            return BytesContent(message.data)

    def openMessages(self, uids):
        return openEach(self, uids)

    def summaries(self, uids, structure=True):
        with self.store._lock:
            box = self._state()
            found = {uid: box.messages[uid] for uid in uids if uid in box.messages}
        out = {}
        for uid, message in found.items():
            if message.summary is None:  # not made by this store's writers
                message.summary = summarize(BytesContent(message.data))
            out[uid] = message.summary
        return out

    def _split(self, box, flags, allocate):
        """Under the lock: C{(system flags, keyword letters)} of C{flags}."""
        system = frozenset(f for f in flags if f in _SYSTEM)
        keywords = sorted(f for f in flags if not f.startswith("\\"))
        trial = Keywords(box.keywords.names)  # nothing changes on KeywordLimit
        letters, _ = trial.encode(keywords, allocate)
        return system, frozenset(letters), trial

    def storeFlags(self, uids, mode, flags, unchangedSince=None):
        results, failed, changed = {}, [], False
        with self.store._lock:
            box = self._state()
            system, letters, keywords = self._split(box, flags, mode != "remove")
            box.keywords = keywords
            for uid in uids:
                message = box.messages.get(uid)
                if message is None:
                    continue
                if unchangedSince is not None and message.modseq > unchangedSince:
                    failed.append(uid)
                    continue
                if mode == "set":
                    new = (system, letters)
                elif mode == "add":
                    new = (message.system | system, message.letters | letters)
                else:
                    new = (message.system - system, message.letters - letters)
                if new != (message.system, message.letters):
                    message.system, message.letters = new
                    message.modseq = box.nextModSeq()
                    changed = True
                results[uid] = (self._flags(box, message), message.modseq)
        if changed:
            self.store._notify(self.user, self.name)
        return results, failed

    def appendWithChanges(self, source, flags=(), internalDate=None, since=0,
                          claimRecent=False):
        uid = self.append(source, flags, internalDate)  # reads source outside the lock
        return uid, self._read(claimRecent, since)

    def storeFlagsWithChanges(self, uids, mode, flags, unchangedSince=None, since=0,
                              claimRecent=False):
        with self.store._lock:  # re-entered: one atomic step
            stored = self.storeFlags(uids, mode, flags, unchangedSince)
            return stored, self._read(claimRecent, since)

    def setFlags(self, uid, flags):
        if uid not in self.storeFlags([uid], "set", flags)[0]:
            raise KeyError(uid)

    def expunge(self, uids):
        with self.store._lock:
            doomed = self._expunge(self._state(), set(uids))
        if doomed:
            self.store._notify(self.user, self.name)

    def _expunge(self, box, uids):
        """Under the lock: expunge C{uids}. @return: those that were there, ascending."""
        doomed = sorted(u for u in uids if u in box.messages)
        for uid in doomed:
            del box.messages[uid]
        if doomed:
            # Expunges raise HIGHESTMODSEQ too, and are remembered
            # with it (RFC 7162 3.2).
            modseq = box.nextModSeq()
            box.expunged.update(dict.fromkeys(doomed, modseq))
        return doomed

    def expungeDeleted(self, uids=None, since=None, claimRecent=False):
        with self.store._lock:  # re-entered by _read: one atomic step
            box = self._state()
            doomed = self._expunge(box, [
                u for u, m in box.messages.items()
                if "\\Deleted" in m.system and (uids is None or u in uids)])
            changes = None if since is None else self._read(claimRecent, since)
        if doomed:
            self.store._notify(self.user, self.name)
        return doomed, changes

    def append(self, source, flags=(), internalDate=None):
        data = _readAll(b"", source)  # outside the lock: source may block
        summary = summarize(BytesContent(data))
        with self.store._lock:
            box = self._state()
            system, letters, box.keywords = self._split(box, flags, True)
            uid = self.store._add(box, data, system, letters,
                                  time.time() if internalDate is None else internalDate,
                                  summary=summary)
        self.store._notify(self.user, self.name)
        return uid

    def copy(self, uids, target):
        pairs = []
        with self.store._lock:
            source = self._state()
            into = target._state()
            for uid in sorted(set(uids)):
                message = source.messages.get(uid)
                if message is None:
                    continue
                flags = self._flags(source, message)
                try:
                    system, letters, into.keywords = target._split(into, flags, True)
                except KeywordLimit:
                    if pairs:  # what was copied stays, and is told
                        self.store._notify(target.user, target.name)
                    raise
                pairs.append((uid, self.store._add(
                    into, message.data, system, letters, message.internalDate,
                    summary=message.summary, emailId=message.emailId)))
        if pairs:
            self.store._notify(target.user, target.name)
        return pairs

    def move(self, uids, target):
        pairs = self.copy(uids, target)
        if pairs:
            self.expunge([uid for uid, _ in pairs])
        return pairs


assert len(KEYWORD_LETTERS) == 26  # the limit the contract suite expects
