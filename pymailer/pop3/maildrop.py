"""
The POP3 maildrop: Twisted's C{IMailboxPOP3} over our L{IMailStore}.

A POP3 session sees its INBOX as it was at login (RFC 1939 §5: message
numbers are fixed for the session), marks messages deleted, and removes them
from the store only when the client QUITs (the UPDATE state, §6).  A session
that ends any other way (dropped connection, timeout, crash) removes nothing.

Lock (RFC 1939 §4, RFC 2449 §8.1.2 ``[IN-USE]``): one POP3 session per
maildrop at a time, across every pymailer process sharing the store: the
store's maildrop lock (L{IMailStore.lockMaildrop}), held for the session
and released if the process dies.  IMAP is not locked out: it reads the store directly, and a message it expunges meanwhile
is answered with C{-ERR} by RETR and ignored at QUIT.

UIDL (RFC 1939 §7): the store's stable per-message key (for Maildir the file
name before the first C{:}), which survives restarts, flag changes and UID
list rebuilds.  A key that is not 1-70 printable ASCII characters (possible
with files dropped in by other Maildir tools) is replaced by a hash of it,
equally stable.

Every store call blocks, so each runs in the thread pool; the methods the
protocol calls on the reactor only touch the in-memory snapshot.
"""

import hashlib
import re
import threading

from twisted.internet.threads import deferToThreadPool
from twisted.mail.interfaces import IMailboxPOP3
from zope.interface import implementer

from pymailer.store import INBOX

_UIDL_OK = re.compile(r"[\x21-\x7e]{1,70}")


def uidl(key):
    """The POP3 unique-id of a message with the store key C{key}."""
    if _UIDL_OK.fullmatch(key):
        return key
    return "h" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40]


@implementer(IMailboxPOP3)
class Maildrop:
    """
    One POP3 session's view of a user's INBOX.

    Message indexes are 0-based, as in C{IMailboxPOP3}; out-of-range ones
    raise L{ValueError}.  L{open}, L{getMessage} and L{sync} return
    C{Deferred}s and do their work in C{threadpool}.
    """

    loginDelay = 0
    messageExpiration = None  # CAPA EXPIRE NEVER

    def __init__(self, store, user, reactor, threadpool):
        self.store = store
        self.user = user
        self.reactor = reactor
        self.threadpool = threadpool
        self._lock = None
        self._guard = threading.Lock()  # close() may race _open's thread
        self._messages = []
        self._deleted = set()
        self._closed = False

    def _inThread(self, f, *args):
        return deferToThreadPool(self.reactor, self.threadpool, f, *args)

    # -- session ------------------------------------------------------------

    def open(self):
        """
        Lock the maildrop and take its snapshot.

        @return: a C{Deferred} firing with C{None}, or failing with
            L{pymailer.store.MaildropLocked}.
        """
        return self._inThread(self._open)

    def _open(self):
        lock = self.store.lockMaildrop(self.user)
        try:
            # The store makes INBOX for a user that never got mail.
            mailbox = self.store.mailbox(self.user, INBOX)
            self._mailbox = mailbox
            self._messages = mailbox.messages()
        except BaseException:
            lock.release()
            raise
        with self._guard:
            if not self._closed:
                self._lock, lock = lock, None
        if lock is not None:  # the session ended while we were opening
            lock.release()

    def close(self):
        """End the session: release the lock.  Removes nothing."""
        with self._guard:
            self._closed = True
            lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    # -- the snapshot ---------------------------------------------------------

    def _info(self, index):
        if not isinstance(index, int) or not 0 <= index < len(self._messages):
            raise ValueError(f"no message {index!r}")
        return self._messages[index]

    def __len__(self):
        return len(self._messages)

    def isDeleted(self, index):
        self._info(index)
        return index in self._deleted

    def listMessages(self, index=None):
        """Sizes in octets; deleted messages count as 0 (C{IMailboxPOP3})."""
        if index is None:
            return [0 if i in self._deleted else m.size
                    for i, m in enumerate(self._messages)]
        info = self._info(index)
        return 0 if index in self._deleted else info.size

    def getUidl(self, index):
        return uidl(self._info(index).key)

    def getMessage(self, index):
        """@return: a C{Deferred} firing with a binary file (C{KeyError} if
        the message was removed meanwhile, by IMAP say)."""
        info = self._info(index)
        return self._inThread(self._mailbox.openMessage, info.uid)

    def deleteMessage(self, index):
        self._info(index)
        self._deleted.add(index)

    def undeleteMessages(self):
        self._deleted.clear()

    @property
    def deletedCount(self):
        return len(self._deleted)

    def sync(self):
        """
        The UPDATE state: remove the messages marked deleted.

        @return: a C{Deferred} firing with the number removed.
        """
        uids = [self._messages[i].uid for i in sorted(self._deleted)]
        if not uids:
            return self._inThread(lambda: 0)
        return self._inThread(self._expunge, uids)

    def _expunge(self, uids):
        self._mailbox.expunge(uids)
        return len(uids)


def maildropFactory(store, reactor, threadpool):
    """
    @return: the realm's avatar factory for C{IMailboxPOP3}: C{user ->
        (Maildrop, logout)}; nothing blocks until the protocol calls
        L{Maildrop.open}.
    """

    def factory(user):
        maildrop = Maildrop(store, user, reactor, threadpool)
        return maildrop, maildrop.close

    return factory
