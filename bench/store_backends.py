"""
The message store on SQLite and on PostgreSQL, side by side: local
delivery (what the queue runner waits for before it reports a message
delivered), IMAP APPEND, and a SELECT (the snapshot of a whole mailbox).

    python bench/store_backends.py [--threads 1,8] [--messages 1000] [--select 10000]

C{--threads} threads deliver C{--messages} messages (about 2 KB) in all
into one user's INBOX, then APPEND as many into another mailbox; then a
mailbox of C{--select} messages (filled by import, not measured) is
selected: the best of C{--rounds} snapshots, in ms.

PostgreSQL is a throwaway cluster on this machine, durable (fsync and
synchronous_commit on, as a real server runs), reached over its Unix
socket; the SQLite store is in a temporary directory on the same disk,
with its fsyncs.  Over a network the database adds a round trip or more
per statement.  Needs Debian's postgresql and C{pip install '.[postgresql]'}.
"""

import argparse
import io
import pathlib
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))

from benchlib import makeMessage, runAll  # noqa: E402

from pymailer.store import ImportedMessage  # noqa: E402

USER = "bench@example.org"


def rate(threads, messages, call):
    """Messages per second of C{threads} threads calling C{call(i)} in all C{messages} times."""
    perThread = messages // threads

    def work(t):
        for i in range(perThread):
            call(t * perThread + i)

    t0 = time.perf_counter()
    runAll([threading.Thread(target=work, args=(t,)) for t in range(threads)])
    return perThread * threads / (time.perf_counter() - t0)


def measure(store, threads, messages, select, rounds, tag):
    user = f"{tag}-{USER}"
    store.createUser(user)
    store.createMailbox(user, "Appended")
    box = store.mailbox(user, "Appended")

    def body(i):
        return makeMessage("a@example.org", user, i, 0, 2048)[1]

    delivered = rate(threads, messages,
                     lambda i: store.deliver(user, b"", io.BytesIO(body(i))))
    appended = rate(threads, messages, lambda i: box.append(io.BytesIO(body(i) + b"A")))
    big = f"big-{user}"
    store.createUser(big)
    message = body(0)
    # Distinct content (one blob each), as real mail.
    store.importMailbox(big, "INBOX", None, (
        ImportedMessage(None, frozenset({"\\Seen"}) if i % 3 else frozenset(), 1_700_000_000,
                        lambda i=i: io.BytesIO(message + b"%d" % i))
        for i in range(select)))
    inbox = store.mailbox(big)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        assert len(inbox.snapshot().messages) == select
        times.append(time.perf_counter() - t0)
    return delivered, appended, min(times) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,8")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--select", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from daemons import PostgreSQL

    from pymailer.config import StorageConfig
    from pymailer.pg.pool import connect, openPool
    from pymailer.pg.schema import migrate
    from pymailer.store.postgresql import PostgreSQLStore
    from pymailer.store.sqlite import SQLiteStore

    lines = ["", f"==== message store: {args.messages} x ~2 KB, SELECT of {args.select} "
             + "=" * 20]
    with PostgreSQL(durable=True) as cluster, tempfile.TemporaryDirectory() as scratch:
        for threads in [int(n) for n in args.threads.split(",")]:
            dsn = cluster.dsn(cluster.newDatabase())
            with connect(dsn) as db:
                migrate(db)
            pool = openPool(StorageConfig("postgresql", dsn, max(threads, 2)))
            stores = {"sqlite": SQLiteStore(pathlib.Path(scratch) / f"store-{threads}"),
                      "postgresql": PostgreSQLStore(pool)}
            for label, store in stores.items():
                delivered, appended, selected = measure(
                    store, threads, args.messages, args.select, args.rounds, f"t{threads}")
                lines.append(f"{label:<10} {threads:>2} threads: deliver {delivered:7.1f} msg/s,"
                             f" APPEND {appended:7.1f} msg/s, SELECT {selected:7.1f} ms")
            stores["postgresql"].close()
            pool.close()
    print("\n".join(lines + ["=" * 66]))


if __name__ == "__main__":
    main()
