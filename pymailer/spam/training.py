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
"""

import hashlib

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
    """

    def __init__(self, db, submit):
        self.db = db
        self.submit = submit

    def transferred(self, user, sourceName, target, pairs, move):
        label = transferLabel(sourceName, target.name, move)
        if label is not None and pairs:
            self.submit(self.train, user, target, [new for _, new in pairs], label)

    def flagged(self, user, mailbox, uids, mode, flags):
        label = flagLabel(mode, flags)
        if label is not None and uids:
            self.submit(self.train, user, mailbox, uids, label)

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
