"""
The durable spool: Postfix-style queue directories with meaning.

Layout under the queue directory::

    data/ID           the message bytes, written once, never moved
    incoming/ID.json  envelope of newly accepted mail (its rename is the commit)
    active/ID.json    claimed by a queue runner, being delivered
    deferred/ID.json  waiting for a retry; the file's mtime is the retry time
    hold/ID.json      kept aside by the administrator
    corrupt/ID.json   unreadable envelopes, kept for inspection

Rules that make several processes on one queue safe:

 - a data file is locked (C{flock}) while it is being received; an unlocked
   data file with no envelope anywhere was never acknowledged and is removed;
 - a runner locks an envelope before renaming it into C{active/} and holds the
   lock while it delivers; an unlocked envelope in C{active/} belonged to a
   process that died, and is delivered again (with duplicate checks).  That
   takeover is counted in the envelope file before the delivery (rewritten
   under a lock taken before the rename, so never unlocked in C{active/}):
   the runner stops a message that kills every process delivering it.

An envelope file is the envelope's JSON (L{Envelope.toJSON}); the spool's
own notes about it (L{_Notes}: takeovers in a row, the runner's hold
reason), when it has any, are one more key, L{_NOTES}, that
L{_readEnvelopeFile} takes off.

L{Spool} implements L{ISpool}; nothing outside this module knows the
directories.  Its file-level methods (L{Spool.claim}, L{Spool.listQueue},
L{Spool.defer}, ...) are for its own tests.

The administrator's operations (L{Spool.hold}, L{Spool.unhold},
L{Spool.delete}, L{Spool.flush}, L{Spool.bounce}) follow the same rules, so
they are safe while the server runs: each locks the envelope without waiting
(a message being delivered is refused with L{MessageBusy}), and changes state
by rename or atomic replacement; the running server notices on its next scan.

Every method here blocks on the disk: call it from a thread pool.
"""

import contextlib
import fcntl
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from typing import Optional

from twisted.logger import Logger
from zope.interface import implementer

from pymailer.envelope import Envelope, dumpJSON
from pymailer.fsutil import DirectorySync, openDurablyWritten, writeDurably
from pymailer.listeners import Listeners
from pymailer.interfaces import ISpool, ISpoolWriter
from pymailer.queue.model import (  # noqa: F401 (the names this module had)
    ADMIN_BOUNCE, STATES, Claim, ClaimOrder, MessageBusy,
    NoSuchMessage, QueueEntry, QueueError, WrongState, adminBounce, bouncedEnvelope,
    refuseCorrupt,
    injectMessage, interleave, isQueueId, newQueueId,
)

_log = Logger()

# Where the administrator's commands look for a message.  C{active/} last: a
# crash (or a runner) inside L{Spool.defer} leaves an active copy next to the
# newer state, and the newer one is the truth (as in L{Spool.claim}).
_LOOKUP_ORDER = ("incoming", "deferred", "hold", "corrupt", "active")

# The key of the spool's notes in an envelope file: L{_Notes} as an object
# of the fields that are set (files without notes are plain envelopes, as
# before there were any).
_NOTES = "spool"


@dataclass(frozen=True)
class _Notes:
    """
    The spool's own notes about a message, kept in its envelope file.

    @ivar takeovers: L{Claim.takeovers} as its last claim counted them.
    @ivar holdReason: L{QueueEntry.holdReason}: why the runner held it.
    """

    takeovers: int = 0
    holdReason: Optional[str] = None


def _readEnvelopeFile(raw):
    """
    Parse an envelope file's bytes, once.

    @return: C{(fields, notes)}: the envelope's JSON object without the
        notes (C{None} if C{raw} is not a JSON object; L{Envelope.fromDict}
        tells whether it is an envelope), and the L{_Notes}.
    """
    try:
        fields = json.loads(raw)
    except ValueError:
        return None, _Notes()
    if not isinstance(fields, dict):
        return None, _Notes()
    notes = fields.pop(_NOTES, None)
    if not isinstance(notes, dict):
        return fields, _Notes()
    return fields, _Notes(notes.get("takeovers", 0), notes.get("holdReason"))


def _envelopeFile(fields, notes):
    """An envelope file's bytes: the JSON object C{fields} and the C{notes} that are set."""
    notes = {key: value for key, value in asdict(notes).items() if value}
    return dumpJSON({**fields, _NOTES: notes} if notes else fields)


def _envelopeOf(fields):
    """The L{Envelope} of C{fields} from L{_readEnvelopeFile}, or C{None}."""
    try:
        return None if fields is None else Envelope.fromDict(fields)
    except (ValueError, TypeError, KeyError):
        return None


@dataclass
class FileClaim(Claim):
    """
    A L{Claim} on a file spool: C{fd} is the locked envelope, whose lock
    the kernel drops if this process dies.  Only this module uses C{fd}.
    """

    fd: int = -1


@implementer(ISpoolWriter)
class SpoolWriter:
    """
    One message being received.  The data file is created on the first
    write, so a transaction that never gets data costs no disk work.
    """

    def __init__(self, spool, queueId):
        self.spool = spool
        self.queueId = queueId
        self._file = None

    def _open(self):
        path = self.spool.dataPath(self.queueId)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._file = os.fdopen(fd, "wb", buffering=256 * 1024)

    def write(self, data):
        if self._file is None:
            self._open()
        self._file.write(data)

    def commit(self, envelope):
        if self._file is None:
            self._open()
        self._file.flush()
        os.fsync(self._file.fileno())
        self.spool._dataSync.sync()
        path = self.spool.envelopePath("incoming", self.queueId)
        writeDurably(path, envelope.toJSON())
        self.spool._stateSync["incoming"].sync()
        self._close()
        self.spool._tell(self.queueId)  # ISpool.addListener

    def openData(self):
        """Blocking: flush, and open what was written for reading."""
        if self._file is None:
            self._open()
        self._file.flush()
        return open(self.spool.dataPath(self.queueId), "rb")

    def abort(self):
        try:
            if self._file is not None:
                os.unlink(self.spool.dataPath(self.queueId))
        except OSError:
            pass
        self._close()

    def _close(self):
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


@implementer(ISpool)
class Spool(Listeners):
    def __init__(self, root):
        self.root = os.fspath(root)
        self._claimOrder = ClaimOrder()
        for name in ("data",) + STATES:
            os.makedirs(os.path.join(self.root, name), exist_ok=True)
        self._dataSync = DirectorySync(os.path.join(self.root, "data"))
        self._stateSync = {
            state: DirectorySync(os.path.join(self.root, state)) for state in STATES
        }

    def dataPath(self, queueId):
        return os.path.join(self.root, "data", queueId)

    def envelopePath(self, state, queueId):
        return os.path.join(self.root, state, queueId + ".json")

    def newMessage(self):
        return SpoolWriter(self, newQueueId())

    def openData(self, queueId):
        if not isQueueId(queueId):
            raise NoSuchMessage(queueId)
        try:
            return open(self.dataPath(queueId), "rb")
        except FileNotFoundError:
            raise NoSuchMessage(queueId) from None

    def freeSpace(self):
        return shutil.disk_usage(self.root).free

    def recover(self):
        return self.removeOrphans()

    def claimDue(self, now, limit, newOnly=False):
        """
        See L{ISpool.claimDue}: C{incoming/}, and unless C{newOnly} the
        unlocked envelopes of C{active/} (their claimer died) first, then
        due C{deferred/} mail interleaved with new mail.
        """
        order = self._claimOrder.order(
            [("incoming", qid) for qid, _ in self.listQueue("incoming")], newOnly,
            lapsed=lambda: [("active", qid) for qid, _ in self.listQueue("active")],
            due=lambda: [("deferred", qid) for qid, retryAt in self.listQueue("deferred")
                         if retryAt <= now])
        claims = []
        seen = set()
        for state, qid in order:
            if len(claims) >= limit:
                break
            if qid in seen:
                continue
            # A message this process is delivering is locked: claim() gives
            # None for it as for another process's.
            claim = self.claim(state, qid)
            if claim is not None:
                seen.add(qid)
                claims.append(claim)
        return claims

    def listQueue(self, state):
        """
        @return: C{[(queueId, mtime)]} of the envelopes in C{state}, oldest
            first.
        """
        directory = os.path.join(self.root, state)
        entries = []
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    try:
                        mtime = entry.stat().st_mtime
                    except FileNotFoundError:
                        continue
                    entries.append((entry.name[:-5], mtime))
        entries.sort(key=lambda e: (e[1], e[0]))
        return entries

    def claim(self, state, queueId):
        """
        Lock the envelope, then move it into C{active/}.

        @return: a L{Claim}, or C{None} if another runner has it.
        """
        source = self.envelopePath(state, queueId)
        target = self.envelopePath("active", queueId)
        try:
            fd = os.open(source, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink == 0:
                raise BlockingIOError("moved away before we locked it")
            if state == "active":
                if self._supersededElsewhere(queueId):
                    # A crash inside defer() left the old active copy next
                    # to the newer state: the newer one is the truth.
                    os.unlink(source)
                    raise FileNotFoundError(source)
            else:
                if os.path.exists(target):
                    # Never overwrite an active entry: it is either being
                    # delivered, or a stale copy that recovery removes first.
                    raise BlockingIOError("already active")
                os.rename(source, target)
            fields, notes = _readEnvelopeFile(self._readRaw(fd))
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        envelope = _envelopeOf(fields)
        if envelope is None:
            os.close(fd)
            self._moveToCorrupt(state if state == "active" else "active", queueId)
            return None
        takenOver = state == "active"
        if takenOver:
            # Counted before the delivery, durably: if it kills this process
            # too, the next claimer counts on from here.
            notes = replace(notes, takeovers=notes.takeovers + 1)
            try:
                fd = self._rewriteLocked(fd, target, _envelopeFile(fields, notes))
            except OSError:
                os.close(fd)
                raise
        return FileClaim(queueId, envelope, takenOver=takenOver, takeovers=notes.takeovers,
                         fd=fd)

    def _rewriteLocked(self, fd, path, data):
        """
        Replace the envelope file at C{path}, locked by us through C{fd},
        by one holding C{data}, locked by us before it takes the name (so
        the envelope is never unlocked there).

        @return: the new file's descriptor (C{fd} is closed).
        """
        newFd = openDurablyWritten(path, data, locked=True)
        self._stateSync["active"].sync()
        os.close(fd)
        return newFd

    def _supersededElsewhere(self, queueId):
        return any(
            os.path.exists(self.envelopePath(state, queueId))
            for state in STATES
            if state != "active"
        )

    def _readRaw(self, fd):
        with os.fdopen(os.dup(fd), "rb") as f:
            f.seek(0)
            return f.read()

    def _readEnvelope(self, fd):
        """@raise ValueError: or C{TypeError}, C{KeyError}: unreadable."""
        fields, _ = _readEnvelopeFile(self._readRaw(fd))
        if fields is None:
            raise ValueError("not a JSON object")
        return Envelope.fromDict(fields)

    def _moveToCorrupt(self, state, queueId):
        try:
            os.rename(
                self.envelopePath(state, queueId), self.envelopePath("corrupt", queueId)
            )
        except FileNotFoundError:
            pass

    def complete(self, claim):
        """All recipients are done: remove the message."""
        os.unlink(self.envelopePath("active", claim.queueId))
        self._stateSync["active"].sync()
        try:
            os.unlink(self.dataPath(claim.queueId))
        except FileNotFoundError:
            pass
        os.close(claim.fd)

    def reschedule(self, claim, envelope, retryAt):
        """
        Record the new recipient states durably and park the message in
        C{deferred/} until C{retryAt}.

        The new state is written before the active copy goes, so a crash in
        between leaves both; L{claim} then trusts the deferred one.
        """
        path = self.envelopePath("deferred", claim.queueId)
        writeDurably(path, envelope.toJSON())
        os.utime(path, (retryAt, retryAt))
        self._stateSync["deferred"].sync()
        os.unlink(self.envelopePath("active", claim.queueId))
        os.close(claim.fd)

    def backOff(self, claim, nextAttempt):
        """
        Park a taken-over message in C{deferred/} until C{nextAttempt}, its
        file (envelope and takeover count) as it is.
        """
        # The time first, so that it is never in deferred/ due too early.
        os.utime(claim.fd, (nextAttempt, nextAttempt))
        os.rename(self.envelopePath("active", claim.queueId),
                  self.envelopePath("deferred", claim.queueId))
        self._stateSync["deferred"].sync()
        self._stateSync["active"].sync()
        os.close(claim.fd)

    def holdClaimed(self, claim, reason):
        """
        Put a claimed message in C{hold/} with C{reason} in its notes.  As
        in L{reschedule}, the held copy is written before the active one
        goes (a crash in between: L{claim} trusts the held one).  The claim
        holds what the locked active copy says.
        """
        writeDurably(self.envelopePath("hold", claim.queueId),
                     _envelopeFile(claim.envelope.toDict(), _Notes(claim.takeovers, reason)))
        self._stateSync["hold"].sync()
        os.unlink(self.envelopePath("active", claim.queueId))
        self._stateSync["active"].sync()
        os.close(claim.fd)

    # The names the runner used before L{ISpool}.
    finish = complete
    defer = reschedule

    def release(self, claim, state="incoming"):
        """Give a claimed message back unchanged (e.g. on shutdown)."""
        try:
            os.rename(
                self.envelopePath("active", claim.queueId),
                self.envelopePath(state, claim.queueId),
            )
        finally:
            os.close(claim.fd)

    def inject(self, source, **envelopeFields):
        return injectMessage(self, source, envelopeFields)

    # --- the administrator's operations ------------------------------------

    def find(self, queueId):
        """
        @return: the state directory holding C{queueId}'s envelope, or
            C{None} (also for anything that is not a queue id).
        """
        if not isQueueId(queueId):
            return None
        for state in _LOOKUP_ORDER:
            if os.path.exists(self.envelopePath(state, queueId)):
                return state
        return None

    @contextlib.contextmanager
    def _locked(self, queueId):
        """
        Find C{queueId} and lock its envelope, without waiting.

        @return: a context manager giving C{(state, fd)}: while it is open,
            no runner can claim the message, and the envelope is at
            C{envelopePath(state, queueId)}.
        @raise NoSuchMessage: not in the queue.
        @raise MessageBusy: a runner holds the lock (delivering it now).
        """
        for _ in range(10):
            state = self.find(queueId)
            if state is None:
                raise NoSuchMessage(queueId)
            path = self.envelopePath(state, queueId)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # moved between find and open: look again
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise MessageBusy(queueId) from None
                # Moved or replaced between open and lock: look again.
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    continue
                if current.st_ino != os.fstat(fd).st_ino:
                    continue
                yield state, fd
                return
            finally:
                os.close(fd)
        raise MessageBusy(queueId)

    def readEnvelope(self, queueId):
        """
        @return: C{(state, raw)}: the state and the envelope file's bytes
            (for display; the file may be corrupt).
        @raise NoSuchMessage: not in the queue.
        """
        for _ in range(10):
            state = self.find(queueId)
            if state is None:
                raise NoSuchMessage(queueId)
            try:
                with open(self.envelopePath(state, queueId), "rb") as f:
                    return state, f.read()
            except FileNotFoundError:
                continue
        raise MessageBusy(queueId)

    def listMessages(self, states=None):
        """
        @return: a L{QueueEntry} per message, by state then queue id.
            Nothing is locked: this is a snapshot for display.
        """
        seen = set()
        entries = []
        for state in _LOOKUP_ORDER:
            for queueId, mtime in self.listQueue(state):
                if queueId in seen:
                    continue
                if states is not None and state not in states:
                    # Seen here, so that a stale active/ copy of a message
                    # in a newer state is never listed in its place.
                    seen.add(queueId)
                    continue
                try:
                    with open(self.envelopePath(state, queueId), "rb") as f:
                        raw = f.read()
                except FileNotFoundError:
                    continue  # it moved on while we looked
                seen.add(queueId)
                entries.append(self._entry(queueId, state, mtime, raw))
        order = {state: i for i, state in enumerate(STATES)}
        entries.sort(key=lambda e: (order[e.state], e.queueId))
        return entries

    def counts(self):
        return {state: len(self.listQueue(state)) for state in STATES}

    def show(self, queueId):
        state, raw = self.readEnvelope(queueId)
        try:
            mtime = os.stat(self.envelopePath(state, queueId)).st_mtime
        except FileNotFoundError:
            mtime = time.time()  # moved on since: the state shown is a snapshot
        return self._entry(queueId, state, mtime, raw, keepRaw=True)

    def _entry(self, queueId, state, mtime, raw, keepRaw=False):
        """
        The L{QueueEntry} of an envelope file read as C{raw} (unreadable: no
        envelope); its C{raw} is the envelope without the spool's notes.
        """
        fields, notes = _readEnvelopeFile(raw)
        if keepRaw and notes != _Notes():
            raw = dumpJSON(fields)
        try:
            size = os.stat(self.dataPath(queueId)).st_size
        except FileNotFoundError:
            size = None
        return QueueEntry(queueId, state, mtime, _envelopeOf(fields), size,
                          raw=raw if keepRaw else None, takeovers=notes.takeovers,
                          holdReason=notes.holdReason if state == "hold" else None)

    def hold(self, queueId):
        """
        Put a message aside in C{hold/}: no runner delivers it until
        L{unhold}.

        @return: the state it was in.
        @raise WrongState: already on hold, or corrupt.
        """
        with self._locked(queueId) as (state, fd):
            if state == "hold":
                raise WrongState(f"{queueId}: already on hold")
            refuseCorrupt(queueId, state)
            os.rename(self.envelopePath(state, queueId), self.envelopePath("hold", queueId))
            self._stateSync["hold"].sync()
            self._stateSync[state].sync()
        return state

    def unhold(self, queueId, now=None):
        """
        Take a message off hold: into C{deferred/}, due at once (as Postfix's
        C{postsuper -H}), so its retry state is kept.

        @raise WrongState: not on hold.
        """
        now = time.time() if now is None else now
        with self._locked(queueId) as (state, fd):
            if state != "hold":
                raise WrongState(f"{queueId}: not on hold (it is {state})")
            held = self.envelopePath("hold", queueId)
            deferred = self.envelopePath("deferred", queueId)
            fields, notes = _readEnvelopeFile(self._readRaw(fd))
            if notes.holdReason is not None:
                # The runner's reason goes; the takeover count stays.
                writeDurably(deferred, _envelopeFile(fields, replace(notes, holdReason=None)))
                os.utime(deferred, (now, now))
                self._stateSync["deferred"].sync()
                os.unlink(held)
                self._stateSync["hold"].sync()
                return
            # The mtime first, so that the runner never sees it in deferred/
            # with an old retry time.
            os.utime(fd, (now, now))
            os.rename(held, deferred)
            self._stateSync["deferred"].sync()
            self._stateSync["hold"].sync()

    def delete(self, queueId):
        """Remove a message, envelope first, then its data."""
        with self._locked(queueId) as (state, fd):
            os.unlink(self.envelopePath(state, queueId))
            self._stateSync[state].sync()
            # A crash here leaves data without an envelope: an orphan that
            # removeOrphans() clears at the next start.
            try:
                os.unlink(self.dataPath(queueId))
            except FileNotFoundError:
                pass
            self._dataSync.sync()
        return state

    def flush(self, queueId=None, now=None):
        """
        Make deferred mail due now: the running server's next scan retries
        it.  Only C{deferred/} is touched (held mail stays held).

        @param queueId: one message, or C{None} for every deferred message
            (those being delivered right now are skipped).
        @return: the C{list} of queue ids made due.
        @raise WrongState: C{queueId} is not deferred (on hold, corrupt, or
            already waiting for delivery).
        """
        now = time.time() if now is None else now
        if queueId is not None:
            with self._locked(queueId) as (state, fd):
                if state != "deferred":
                    hint = {
                        "hold": "on hold (release it instead)",
                        "corrupt": "corrupt",
                    }.get(state, f"{state}, already waiting for delivery")
                    raise WrongState(f"{queueId}: not deferred: {hint}")
                os.utime(fd, (now, now))
            return [queueId]
        flushed = []
        for qid, retryAt in self.listQueue("deferred"):
            try:
                with self._locked(qid) as (state, fd):
                    if state == "deferred":
                        os.utime(fd, (now, now))
                        flushed.append(qid)
            except QueueError:
                continue  # being delivered, or gone: nothing to flush
        return flushed

    def bounce(self, queueId, reason=None, now=None):
        """
        Fail every pending recipient with C{reason} and park the message in
        C{deferred/}, due at once: the running server's next scan finds no
        pending recipient and reports the failures to the sender (or drops
        them for a null sender).

        @return: the updated L{Envelope}.
        @raise WrongState: corrupt, or no recipient is pending.
        """
        now = time.time() if now is None else now
        reason = ADMIN_BOUNCE if reason is None else reason
        with self._locked(queueId) as (state, fd):
            envelope = adminBounce(queueId, state, lambda: self._readEnvelope(fd), reason)
            target = self.envelopePath("deferred", queueId)
            if state != "deferred":
                # Still under our lock: a crash after this rename leaves the
                # old, consistent envelope in deferred/, never two copies.
                os.rename(self.envelopePath(state, queueId), target)
            writeDurably(target, envelope.toJSON())
            try:
                os.utime(target, (now, now))
            except FileNotFoundError:
                pass  # a runner claimed the new envelope already: it is due
            self._stateSync["deferred"].sync()
            if state != "deferred":
                self._stateSync[state].sync()
        return envelope

    def removeOrphans(self):
        """
        Remove data files that were never acknowledged (no envelope in any
        state and no lock held by a receiving process), and temporary
        envelope files of processes that died while writing them.

        @return: the C{list} of queue ids whose data was removed.
        """
        self._removeDeadTemporaries()
        known = set()
        for state in STATES:
            known.update(qid for qid, _ in self.listQueue(state))
        removed = []
        dataDir = os.path.join(self.root, "data")
        for name in os.listdir(dataDir):
            if name in known:
                continue
            path = os.path.join(dataDir, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                # Checked again under the lock: the receiver may have
                # committed between the listing and the lock.  Twice, since a
                # runner may move the envelope between states as we look.
                if not any(
                    os.path.exists(self.envelopePath(s, name))
                    for s in STATES + STATES
                ):
                    os.unlink(path)
                    removed.append(name)
            finally:
                os.close(fd)
        return removed

    def _removeDeadTemporaries(self):
        for state in STATES:
            directory = os.path.join(self.root, state)
            for name in os.listdir(directory):
                if not name.endswith(".tmp"):
                    continue
                pid = _writerPid(name)
                if pid is None or not _processAlive(pid):
                    try:
                        os.unlink(os.path.join(directory, name))
                    except FileNotFoundError:
                        pass


def _writerPid(tmpName):
    """The pid in a L{writeDurably} temporary name C{X.<pid>.<tid>.tmp}."""
    parts = tmpName.split(".")
    try:
        return int(parts[-3])
    except (IndexError, ValueError):
        return None


def _processAlive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
