"""
The queue's commit (what the 250 at the end of DATA waits for) and its
claim + complete (what the runner does per message), on the file spool and
on PostgreSQL, side by side.

    python bench/spool_commit.py [--threads 1,10,20] [--messages 2000] [--size 4096]

For each backend and each thread count, C{--threads} threads commit
C{--messages} messages of C{--size} octets in all (as the intake does, from
the server's thread pool), then as many threads claim and complete them
(as runners on that many nodes would).  Prints messages/s and the p50/p99
commit latency.

PostgreSQL is a throwaway cluster on this machine (initdb in a temporary
directory, as the tests do, but durable: fsync and synchronous_commit on,
as a real server runs), reached over its Unix socket; the file spool is in
a temporary directory on the same disk.  Over a network the database adds
a round trip or more per statement.  Needs Debian's postgresql and
C{pip install '.[postgresql]'}.
"""

import argparse
import pathlib
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))

from benchlib import latencyLine, makeMessage, runAll  # noqa: E402

from pymailer.envelope import Envelope, Recipient  # noqa: E402


def commitAll(spool, threads, messages, size):
    latencies, lock = [], threading.Lock()
    perThread = messages // threads
    _, body = makeMessage("a@example.org", "b@example.org", 0, 0, size)

    def work():
        mine = []
        for _ in range(perThread):
            t0 = time.perf_counter()
            writer = spool.newMessage()
            writer.write(body)
            writer.commit(Envelope(queueId=writer.queueId, sender="a@example.org",
                                   recipients=(Recipient(0, "b@example.org"),),
                                   receivedAt=time.time(), size=len(body)))
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    runAll([threading.Thread(target=work) for _ in range(threads)])
    return len(latencies) / (time.perf_counter() - t0), sorted(latencies)


def drainAll(spools):
    done = [0]
    lock = threading.Lock()

    def work(spool):
        while claims := spool.claimDue(time.time(), 10):
            for claim in claims:
                with spool.openData(claim.queueId) as f:
                    f.read()
                spool.complete(claim)
            with lock:
                done[0] += len(claims)

    t0 = time.perf_counter()
    runAll([threading.Thread(target=work, args=(s,)) for s in spools])
    return done[0] / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,10,20")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    counts = [int(n) for n in args.threads.split(",")]

    from daemons import PostgreSQL

    from pymailer.config import StorageConfig
    from pymailer.pg.pool import connect, openPool
    from pymailer.pg.schema import migrate
    from pymailer.queue.spool_files import Spool
    from pymailer.queue.spool_pg import PostgreSQLSpool

    lines = ["", f"==== spool commit: {args.messages} x {args.size} B " + "=" * 30]
    with PostgreSQL(durable=True) as cluster, tempfile.TemporaryDirectory() as scratch:
        for threads in counts:
            name = cluster.newDatabase()
            dsn = cluster.dsn(name)
            with connect(dsn) as db:
                migrate(db)
            pool = openPool(StorageConfig("postgresql", dsn, max(threads, 2)))
            backends = {
                "file": (Spool(pathlib.Path(scratch) / f"queue-{threads}"),
                         lambda s: Spool(s.root)),
                "postgresql": (PostgreSQLSpool(pool), lambda s: PostgreSQLSpool(s.pool)),
            }
            for label, (spool, another) in backends.items():
                rate, latencies = commitAll(spool, threads, args.messages, args.size)
                drained = drainAll([another(spool) for _ in range(threads)])
                lines.append(f"{label:<10} {threads:>2} threads: commit {rate:7.1f} msg/s,"
                             f" claim+read+complete {drained:7.1f} msg/s")
                lines.append("  " + latencyLine("commit latency", latencies))
            pool.close()
    print("\n".join(lines + ["=" * 66]))


if __name__ == "__main__":
    main()
