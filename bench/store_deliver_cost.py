"""
What one local delivery costs the SQLite store, with the content kept in
its row (the default for messages up to C{INLINE_LIMIT}) and in a file
(C{inlineLimit = 0}, as before): deliveries per second and this process's
CPU per delivery, user and system, and its context switches, for each
thread count (the server's disk pool runs deliveries of concurrent SMTP
sessions in as many threads).

    python bench/store_deliver_cost.py [--threads 1,10] [--messages 2000] [--size 4096]

Runs in turn (rows, files, rows, files, ...) C{--rounds} times and prints
each run, in a temporary directory on the same disk as C{/tmp}.
"""

import argparse
import io
import pathlib
import resource
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from pymailer.store.sqlite import SQLiteStore  # noqa: E402

USER = "bench@example.org"


def run(where, threads, messages, size):
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        store = SQLiteStore(pathlib.Path(tmp) / "store")
        if where == "files":
            store.inlineLimit = 0
        store.createUser(USER)
        body = b"From: a@remote.test\r\nSubject: cost\r\n\r\n" + b"x" * max(size - 40, 0)

        def deliver(thread):
            for i in range(messages // threads):
                store.deliver(USER, b"Received: %d.%d\r\n" % (thread, i), io.BytesIO(body))

        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        workers = [threading.Thread(target=deliver, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        after, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    done = messages // threads * threads
    perMessage = lambda a, b: (a - b) * 1000 / done  # noqa: E731
    print(f"{where:5s} threads={threads:<3d} rate={done / elapsed:6.0f}/s"
          f" user_ms={perMessage(after.ru_utime, before.ru_utime):.3f}"
          f" sys_ms={perMessage(after.ru_stime, before.ru_stime):.3f}"
          f" switches={(after.ru_nvcsw - before.ru_nvcsw) / done:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,10")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for _ in range(args.rounds):
        for threads in [int(t) for t in args.threads.split(",")]:
            for where in ("rows", "files"):
                run(where, threads, args.messages, args.size)


if __name__ == "__main__":
    main()
