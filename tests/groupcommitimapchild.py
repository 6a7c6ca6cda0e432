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

from pymailer.store.sqlite import SQLiteStore

from tests.groupcommitchild import holdTheLockNowAndThen, say, sayBatches

ALICE = "alice@example.org"
STORERS = 4
MESSAGES = 400


def main(root):
    store = SQLiteStore(root)
    store.createUser(ALICE)
    for n in range(MESSAGES):
        store.deliver(ALICE, b"", io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % n))
    sayBatches(store)

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
    holdTheLockNowAndThen(store)


if __name__ == "__main__":
    main(sys.argv[1])
