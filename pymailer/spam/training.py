"""
Training each user's filter from what they do (L{IMailboxObserver}), as
mox does:

  - a message copied or moved into Junk, or flagged C{$Junk}, is spam;
  - a message moved out of Junk into anything but Trash, or flagged
    C{$NotJunk}, is ham;
  - anything else (deleting, POP3 retrieval, moving to Trash) says nothing.

Each message is trained once, by a digest of its content: moved back, it
is untrained from what it was and trained as what it is now.  The
observer is called in the store's calling thread; the work (reading the
message through the store, tokenizing, the SQLite write) is handed to
C{submit}, which in the server runs it in the thread pool after the IMAP
command has been answered.

That pool is the one SMTP, IMAP and POP3 wait on, and one C{STORE 1:*
+FLAGS $Junk} names every message of a mailbox: training is best-effort,
so it is a bounded queue (L{MAX_PENDING}; beyond it, messages are dropped
with one log line), coalesced per message (the user's last word wins),
and drained by at most one job at a time, L{BATCH} messages per job, each
job queueing the next behind whatever else the pool has to do.
"""

import hashlib
import threading
from collections import OrderedDict

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from pymailer.interfaces import IMailboxObserver
from pymailer.spam.db import HAM, SPAM
from pymailer.spam.tokens import tokenize

JUNK = "Junk"
TRASH = "Trash"
JUNK_FLAG = "$junk"
NOT_JUNK_FLAG = "$notjunk"
# Bytes of a message read to train on (and digest): the headers and the
# start of the body carry what the filter learns.
MAX_READ = 1024 * 1024
# Messages waiting to be trained, per process: beyond this, a bulk flag
# change trains on the first ones only.
MAX_PENDING = 10_000
# Messages trained per pool job, so that other pool work interleaves.
BATCH = 20

log = Logger()


def transferLabel(sourceName, targetName, move):
    """What copying or moving from C{sourceName} to C{targetName} teaches."""
    if targetName == JUNK and sourceName != JUNK:
        return SPAM
    if move and sourceName == JUNK and targetName not in (JUNK, TRASH):
        return HAM
    return None


def flagLabel(mode, flags):
    """What a STORE of C{flags} with C{mode} teaches (keywords: any case)."""
    if mode not in ("add", "set"):
        return None
    lowered = {f.lower() for f in flags}
    if JUNK_FLAG in lowered and NOT_JUNK_FLAG not in lowered:
        return SPAM
    if NOT_JUNK_FLAG in lowered and JUNK_FLAG not in lowered:
        return HAM
    return None


def readForTraining(mailbox, uid):
    """C{(digest, tokens)} of a message, or C{None} if it is gone."""
    try:
        content = mailbox.openMessage(uid)
    except KeyError:
        return None
    try:
        data = content.read(MAX_READ)
    finally:
        content.close()
    return hashlib.sha256(data).hexdigest(), tokenize(data)


@implementer(IMailboxObserver)
class Trainer:
    """
    @param submit: C{submit(f, *args)} runs blocking C{f} later, off the
        caller's thread (L{inThreadPool}); tests run it at once.
    @param maxPending: messages that may wait for training.
    @param batch: messages trained per submitted job.
    """

    def __init__(self, db, submit, maxPending=MAX_PENDING, batch=BATCH):
        self.db = db
        self.submit = submit
        self.maxPending = maxPending
        self.batch = batch
        # Observers are called from whichever thread ran the store call.
        self._lock = threading.Lock()
        # (user, mailbox name, uid) -> (mailbox, label), oldest first.
        self._pending = OrderedDict()
        self._draining = False

    def transferred(self, user, sourceName, target, pairs, move):
        label = transferLabel(sourceName, target.name, move)
        if label is not None and pairs:
            self._enqueue(user, target, [new for _, new in pairs], label)

    def flagged(self, user, mailbox, uids, mode, flags):
        label = flagLabel(mode, flags)
        if label is not None and uids:
            self._enqueue(user, mailbox, uids, label)

    def pending(self):
        """How many messages wait to be trained."""
        with self._lock:
            return len(self._pending)

    def _enqueue(self, user, mailbox, uids, label):
        dropped = 0
        with self._lock:
            for uid in uids:
                key = (user, mailbox.name, uid)
                if key in self._pending:
                    # Flagged again before training: one training, as
                    # what the user said last.
                    self._pending.move_to_end(key)
                elif len(self._pending) >= self.maxPending:
                    dropped += 1
                    continue
                self._pending[key] = (mailbox, label)
            start = not self._draining and bool(self._pending)
            if start:
                self._draining = True
        if dropped:
            log.warn("spam training: queue full ({maxPending} messages), not training"
                     " {dropped} messages of {user}'s {mailbox} as {label}",
                     maxPending=self.maxPending, dropped=dropped, user=user,
                     mailbox=mailbox.name, label=label)
        if start:
            self.submit(self._drain)

    def _drain(self):
        """I{Blocking}: train one batch, then queue the next job (if any)."""
        with self._lock:
            batch = [self._pending.popitem(last=False)
                     for _ in range(min(self.batch, len(self._pending)))]
        try:
            for (user, _, uid), (mailbox, label) in batch:
                try:
                    self.train(user, mailbox, [uid], label)
                except Exception:
                    log.failure("spam training failed: uid {uid} of {user}'s {mailbox}",
                                uid=uid, user=user, mailbox=mailbox.name)
        finally:
            with self._lock:
                more = self._draining = bool(self._pending)
            if more:
                # A new job, not a loop: it waits its turn in the pool.
                self.submit(self._drain)

    def train(self, user, mailbox, uids, label):
        """I{Blocking}: train C{user}'s filter on messages of C{mailbox}."""
        for uid in uids:
            read = readForTraining(mailbox, uid)
            if read is None:
                continue
            digest, tokens = read
            before = self.db.train(user, digest, tokens, label)
            if before != label:
                log.info("spam training: {user} {label} (was {before}) uid {uid} of {mailbox}",
                         user=user, label=label, before=before or "untrained", uid=uid,
                         mailbox=mailbox.name)


def inThreadPool(reactor, threadpool):
    """A C{submit} for L{Trainer}: from any thread, into C{threadpool}."""

    def submit(f, *args):
        def start():
            deferToThreadPool(reactor, threadpool, f, *args).addErrback(
                lambda failure: log.failure("spam training failed", failure))

        reactor.callFromThread(start)

    return submit
