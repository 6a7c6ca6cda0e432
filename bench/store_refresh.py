"""
What an open IMAP session's refresh costs the SQLite store (issue 13:
"per-command cost proportional to what changed"): one flag changed by
another session in a mailbox of C{--messages} messages, read back as a
whole snapshot (what a refresh did before) and as C{changedSince} (what it
does now), and C{changedSince} when nothing changed (a quiet NOOP).

    python bench/store_refresh.py [--messages 10000] [--rounds 20]

The store lives in a temporary directory; filling it skips fsync (it is
not what is measured).  Prints the best of C{--rounds} for each, in ms.
"""

import argparse
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pymailer.store import ImportedMessage  # noqa: E402
from pymailer.store.sqlite import SQLiteStore  # noqa: E402

USER = "bench@example.org"


def best(call, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        store = SQLiteStore(os.path.join(root, "store"))
        body = b"Subject: bench\r\n\r\nbody\r\n"
        fsync, os.fsync = os.fsync, lambda fd: None
        try:
            store.importMailbox(USER, "INBOX", None, (
                ImportedMessage(None, frozenset(), 1_700_000_000, lambda: io.BytesIO(body))
                for _ in range(options.messages)))
        finally:
            os.fsync = fsync
        box = store.mailbox(USER)
        seen = box.snapshot().highestModSeq
        box.storeFlags([options.messages // 2], "add", {"\\Flagged"})
        now = box.highestModSeq()
        print(f"{options.messages} messages, one flag changed by another session:")
        print(f"  whole snapshot (the refresh before): {best(box.snapshot, options.rounds):8.3f} ms")
        print(f"  changedSince (the refresh now):      "
              f"{best(lambda: box.changedSince(seen), options.rounds):8.3f} ms")
        print(f"  changedSince, nothing new (NOOP):    "
              f"{best(lambda: box.changedSince(now), options.rounds):8.3f} ms")


if __name__ == "__main__":
    main()
