"""
What counting connections per address across processes costs a client:
the time from connect() to the IMAP greeting, one connection after another
(each closed before the next), on a real server with its connections
counted

  - in the process only (one process, SQLite store: no shared count),
  - in C{limits.sqlite} for two workers (C{[server] workers = 2}),
  - in PostgreSQL for the nodes on the database (C{[storage] backend =
    "postgresql"}; a throwaway cluster on this machine, over its socket).

    python bench/connect_admission.py [--connections 300]

The shared counts add a transaction in the thread pool before the greeting
(and one, not waited for, after the close).  Over a network the database
adds its round trips.  Needs Debian's postgresql and
C{pip install '.[postgresql]'} for the last case.
"""

import argparse
import pathlib
import socket
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))

from benchlib import latencyLine  # noqa: E402
from mailserver import MailServer  # noqa: E402


def greetings(port, count):
    """Sorted seconds from connect() to the greeting line, C{count} times."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            line = s.makefile("rb").readline()
            times.append(time.perf_counter() - start)
        if not line.startswith(b"* OK"):
            raise SystemExit(f"refused: {line!r}")
    return sorted(times)


def measure(label, root, count, sections, workers=1, migrate=False):
    server = MailServer(root, roles=("imap",), sections=sections, workers=workers)
    if migrate:
        server.admin("db", "migrate")
    server.provision()
    server.start()
    try:
        greetings(server.ports["imap"], 20)  # warm up
        print(latencyLine(label, greetings(server.ports["imap"], count)), flush=True)
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=300)
    args = parser.parse_args()
    # Far above what one client opens at once here: counted, never refused.
    limits = {"imap": {"max_connections_per_ip": 1000}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        measure("one process", tmp / "one", args.connections, limits)
        measure("two workers (SQLite)", tmp / "workers", args.connections, limits, workers=2)
        from daemons import PostgreSQL

        with PostgreSQL(durable=True) as cluster:
            dsn = cluster.dsn(cluster.newDatabase())
            measure("PostgreSQL node", tmp / "pg", args.connections,
                    dict(limits, storage={"backend": "postgresql", "dsn": dsn}), migrate=True)


if __name__ == "__main__":
    main()
