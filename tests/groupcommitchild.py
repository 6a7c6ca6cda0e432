"""
The process L{test_store_sqlite_groupcommit.test_shared_commits_survive_kill_9}
kills: deliveries from several threads to one L{SQLiteStore}, printing
C{A <sha256>} once a delivery returned (acknowledged) and C{B <n>} for
each shared commit of C{n} deliveries.  A thread of its own takes the
write lock now and then until others queue behind it, so that commits
are shared however fast the disk is.

    python groupcommitchild.py ROOT
"""

import hashlib
import io
import os
import sys
import threading

from pymailer.store.sqlite import SQLiteStore

ALICE = "alice@example.org"
THREADS = 6
output = threading.Lock()


def say(kind, value):
    with output:
        # One write(2) a line: a kill never leaves half of one.
        os.write(1, f"{kind} {value}\n".encode())


def sayBatches(store):
    """Print C{B <n>} for each shared commit of C{n} writers."""
    real = store._commitShared

    def commitShared(batch):
        result = real(batch)
        say("B", len(batch))  # committed, not yet flushed: not an acknowledgement
        return result

    store._commitShared = commitShared


def holdTheLockNowAndThen(store):
    """
    For ever: another writer, so that writers queue behind it and share
    commits.  It takes the write lock until two writes have begun behind
    it, then lets the writers run until two more have begun: no fixed
    pauses, each step waits for the writers themselves.
    """
    begun = threading.Condition()
    count = [0]
    real = store._writeShared

    def writeShared(*args, **kwargs):
        with begun:
            count[0] += 1
            begun.notify_all()
        return real(*args, **kwargs)

    store._writeShared = writeShared

    def twoMoreBegin():
        with begun:
            start = count[0]
            begun.wait_for(lambda: count[0] >= start + 2, timeout=1)

    while True:
        twoMoreBegin()
        with store._writeLock():
            twoMoreBegin()


def main(root):
    store = SQLiteStore(root)
    store.createUser(ALICE)
    sayBatches(store)

    def deliver(worker):
        n = 0
        while True:
            n += 1
            body = b"Subject: %d %d %s\r\n\r\n" % (worker, n, os.urandom(8).hex().encode())
            body += b"x" * 2000
            store.deliver(ALICE, b"", io.BytesIO(body))
            say("A", hashlib.sha256(body).hexdigest())

    for worker in range(THREADS):
        threading.Thread(target=deliver, args=(worker,), daemon=True).start()
    holdTheLockNowAndThen(store)


if __name__ == "__main__":
    main(sys.argv[1])
