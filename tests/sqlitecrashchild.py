"""
The process L{test_store_sqlite.test_sigkill_keeps_acknowledged_changes}
kills: appends, flag changes, expunges and two-recipient deliveries on an
L{SQLiteStore} in a loop, printing each change once the call returned
(acknowledged), and what it is about to do before it starts.

    python sqlitecrashchild.py ROOT SEED
"""

import hashlib
import io
import os
import random
import sys

from pymailer.store.sqlite import SQLiteStore

USERS = ("alice@example.org", "bob@example.org")
FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "$Work", "$Later")


def say(*words):
    # One write(2) per line: print() may write a line in pieces, and the
    # kill could then leave the test half an acknowledgement ("F").
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


def main(root, seed):
    rng = random.Random(seed)
    store = SQLiteStore(root)
    boxes = {user: store.mailbox(user) for user in USERS}
    while True:
        user = rng.choice(USERS)
        box = boxes[user]
        live = [m.uid for m in box.messages()]
        action = rng.random()
        if action < 0.4 or not live:
            body = (b"Subject: %d\r\n\r\n" % rng.getrandbits(32)) + b"x" * rng.randint(10, 200_000)
            flags = sorted(rng.sample(FLAGS, rng.randint(0, 2)))
            say("I", "A", user, hashlib.sha256(body).hexdigest(), ",".join(flags))
            uid = box.append(io.BytesIO(body), flags)
            say("A", user, uid, hashlib.sha256(body).hexdigest(), ",".join(flags))
        elif action < 0.55:
            # One message to every user: one blob, referenced twice.
            body = b"Subject: to both %d\r\n\r\nhello\r\n" % rng.getrandbits(32)
            digest = hashlib.sha256(body).hexdigest()
            for u in USERS:
                say("I", "A", u, digest, "")
                store.deliver(u, b"", io.BytesIO(body))
                # Only this process writes: the newest UID is the delivery's.
                say("A", u, boxes[u].messages()[-1].uid, digest, "")
        elif action < 0.8:
            uid = rng.choice(live)
            flags = sorted(rng.sample(FLAGS, rng.randint(0, 3)))
            say("I", "F", user, uid, ",".join(flags))
            box.setFlags(uid, flags)
            say("F", user, uid, ",".join(flags))
        else:
            uid = rng.choice(live)
            say("I", "X", user, uid)
            box.expunge([uid])
            say("X", user, uid)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
