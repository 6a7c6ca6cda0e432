"""
How long IMailStore.usage (the quota check on every RCPT and APPEND of a
user with a limit) takes on the SQLite store, for a user with N messages
spread over 6 folders.  Rows are inserted directly (the query reads rows,
never blobs), so building a 100,000-message account takes seconds.

    python bench/quota_usage.py [N ...]
"""

import io
import sys
import tempfile
import time

from pymailer.store.sqlite import SQLiteStore

USER = "bench@example.org"


def build(store, count):
    store.createUser(USER)
    store.mailbox(USER).append(io.BytesIO(b"x" * 1000))  # one real blob to point at
    db = store._db()
    blob, = db.execute("SELECT blob FROM messages").fetchone()
    boxes = [row[0] for row in db.execute("SELECT id FROM mailboxes")]
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO messages (mailboxId, uid, key, modseq, internalDate, size, blob)"
        " VALUES (?, ?, ?, 1, 0, ?, ?)",
        ((boxes[i % len(boxes)], 1000 + i, f"k{i}", 1000 + i % 5000, blob)
         for i in range(count - 1)))
    db.execute("COMMIT")


def main(counts):
    for count in counts:
        with tempfile.TemporaryDirectory() as root:
            store = SQLiteStore(root)
            build(store, count)
            store.usage(USER)  # warm the page cache, as a busy server has it
            runs = 20
            started = time.perf_counter()
            for _ in range(runs):
                store.usage(USER)
            took = (time.perf_counter() - started) / runs
            print(f"usage() of {count:>7} messages: {took * 1000:.2f} ms")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000, 100000])
