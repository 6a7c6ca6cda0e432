"""
The process L{test_store_sqlite_groupcommit_imap.test_shared_imap_commits_survive_kill_9}
kills: IMAP sessions' writes from several threads to one L{SQLiteStore}:
STOREs of C{\\Seen} (C{S <uid>} printed once one returned: acknowledged)
and APPENDs (C{A <uid>}), and C{B <n>} for each shared commit of C{n}.
A thread of its own takes the write lock now and then until others queue
behind it, so that commits are shared however fast the disk is.

    python groupcommitimapchild.py ROOT
"""

import io
import itertools
import sys
import threading
import time

from pymailer.store.sqlite import SQLiteStore

ALICE = "alice@example.org"
STORERS = 4
MESSAGES = 400
output = threading.Lock()


def say(kind, value):
    with output:
        sys.stdout.write(f"{kind} {value}\n")
        sys.stdout.flush()


def main(root):
    store = SQLiteStore(root)
    store.createUser(ALICE)
    for n in range(MESSAGES):
        store.deliver(ALICE, b"", io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % n))
    real = store._commitShared

    def commitShared(batch):
        result = real(batch)
        say("B", len(batch))  # committed, not yet answered: not an acknowledgement
        return result

    store._commitShared = commitShared

    def storeSeen(worker):
        box = store.mailbox(ALICE)
        for uid in itertools.cycle(range(1 + worker, MESSAGES + 1, STORERS)):
            box.storeFlagsWithChanges([uid], "add", ["\\Seen"], since=box.highestModSeq())
            say("S", uid)

    def append():
        box = store.mailbox(ALICE)
        while True:
            uid, _ = box.appendWithChanges(io.BytesIO(b"Subject: new\r\n\r\n" + b"x" * 2000))
            say("A", uid)

    for worker in range(STORERS):
        threading.Thread(target=storeSeen, args=(worker,), daemon=True).start()
    threading.Thread(target=append, daemon=True).start()
    while True:
        with store._writeLock():  # another writer: the sessions queue behind it
            deadline = time.monotonic() + 1
            while len(store._sharedQueue) < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
        time.sleep(0.01)


if __name__ == "__main__":
    main(sys.argv[1])
