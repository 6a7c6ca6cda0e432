"""
Accept and IMAP throughput with 1, 2 and 3 nodes on one PostgreSQL
database, and the same load on one node with the embedded SQLite store.

    python bench/pg_nodes.py [--nodes 1,2,3] [--clients 10] [--messages 50]
                             [--size 4096] [--imap-clients 8] [--duration 15]
                             [--mailbox 50] [--no-sqlite]

Starts, in a temporary directory and on loopback only, a throwaway
PostgreSQL cluster as C{bench/spool_commit.py} does (C{tests/daemons.py},
durable: fsync and synchronous_commit on), then for each setup (SQLite with
one node, then PostgreSQL with each of C{--nodes}) a fresh database and
that many pymailer servers on it (C{tests/mailserver.py}, one process
each), and runs two fixed loads, the clients spread round-robin over the
nodes:

 - SMTP accept: as C{bench/smtp_accept.py} (its client threads):
   C{--clients} connections each send C{--messages} messages of C{--size}
   octets to alice@example.org.  Accepted messages/s (first connect to
   last 250), the DATA end -> 250 latency, and delivered messages/s (until
   every message is in alice's INBOX, read through the store).
 - IMAP: as C{bench/imap_ops.py} (its client processes): C{--imap-clients}
   users, each an INBOX of C{--mailbox} messages (appended through the
   store first), loop over a session of 9 commands for C{--duration}
   seconds.  Commands/s and the servers' CPU.

The load is the same for every setup: what more nodes bring is throughput
at the same load, which a machine with fewer cores than the nodes, clients
and database need cannot show (every process here shares this machine's
CPUs: the figures are a lower bound and flatten early).
"""

import argparse
import io
import multiprocessing
import os
import pathlib
import random
import sys
import tempfile
import time

BENCH = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests"), str(BENCH.parent)]

from benchlib import latencyLine, runAll  # noqa: E402
from imap_ops import SESSION, clientMain, cpuSeconds, message  # noqa: E402
from mailserver import DOMAIN, MailServer, waitFor  # noqa: E402
from smtp_accept import RECIPIENT, Bench, Client  # noqa: E402


class NodeShare:
    """What an L{smtp_accept.Client} sees of the bench: its node's port."""

    def __init__(self, bench, port):
        self._bench = bench
        self.port = port

    def __getattr__(self, name):
        return getattr(self._bench, name)


def startNodes(root, count, storage, imapUsers, args):
    """C{count} servers on C{storage}, the first one provisioned."""
    nodes = []
    for i in range(count):
        node = MailServer(
            root / f"node{i}", roles=("imap",),
            smtp={"max_connections_per_ip": max(50, args.clients + 10)},
            sections={"auth": {"allow_plaintext_on_loopback": True},
                      "storage": storage,
                      "policy": {"ratelimit": {"messages_per_hour": 0,
                                               "recipients_per_hour": 0}}})
        if i == 0:
            if storage["backend"] == "postgresql":
                node.admin("db", "migrate")
            node.provision(users=(RECIPIENT, *imapUsers))
            fillMailboxes(node, imapUsers, args.mailbox)
        nodes.append(node)
    for node in nodes:
        node.start()
    return nodes


def fillMailboxes(node, users, count):
    """C{count} messages of 1-10 KB in each user's INBOX, through the store."""
    store = node.store()
    for seed, user in enumerate(users):
        rng = random.Random(seed)
        box = store.mailbox(user)
        for n in range(count):
            box.append(io.BytesIO(message(rng, f"{seed}.{n}")), ())


def databaseCPU(cluster):
    """
    CPU seconds of the PostgreSQL cluster (the postmaster, its reaped
    children and its live backends), or 0 without one (SQLite runs in the
    servers' own processes).
    """
    if cluster is None:
        return 0.0
    postmaster = cluster.proc.pid
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(entry) == postmaster:
            # utime, stime, and those of the children it has reaped.
            ticks = sum(int(v) for v in fields[11:15])
        elif int(fields[1]) == postmaster:
            ticks = int(fields[11]) + int(fields[12])
        else:
            continue
        total += ticks / os.sysconf("SC_CLK_TCK")
    return total


def inboxCount(node, user):
    try:
        return len(node.store().mailbox(user, "INBOX").messages())
    except KeyError:
        return 0


def smtpLoad(nodes, args):
    total = args.clients * args.messages
    bench = Bench(None, args.clients, args.messages, args.size)
    clients = [Client(NodeShare(bench, nodes[i % len(nodes)].port), i)
               for i in range(args.clients)]
    runAll(clients)
    delivered = None
    try:
        waitFor(lambda: inboxCount(nodes[0], RECIPIENT) >= bench.accepted,
                timeout=max(120.0, total / 10), interval=0.2)
        delivered = time.perf_counter() - bench.firstConnect
    except TimeoutError:
        pass
    errors = [c.error for c in clients if c.error is not None]
    refused = [r for c in clients for r in c.refused]
    wall = bench.lastAccepted - bench.firstConnect if bench.accepted else float("nan")
    latencies = sorted(x for c in clients for x in c.latencies)
    return dict(accepted=bench.accepted, total=total, wall=wall, delivered=delivered,
                latencies=latencies, problems=len(errors) + len(refused),
                firstProblem=(errors + refused)[:1])


def imapLoad(nodes, users, args, cluster):
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=clientMain, daemon=True,
                         args=(i, nodes[i % len(nodes)].ports["imap"], users[i],
                               args.duration, go, results))
             for i in range(len(users))]
    for p in procs:
        p.start()
    pids = [n.pid for n in nodes]
    cpu0 = sum(cpuSeconds(pid) for pid in pids)
    db0 = databaseCPU(cluster)
    t0 = time.monotonic()
    go.set()
    got = [results.get(timeout=args.duration + 300) for _ in procs]
    for p in procs:
        p.join()
    wall = max(r["end"] for r in got) - t0
    sessions = sum(r["sessions"] for r in got)
    errors = [e for r in got for e in r["errors"]]
    return dict(commands=sessions * len(SESSION), wall=wall, errors=errors,
                cpu=sum(cpuSeconds(pid) for pid in pids) - cpu0,
                databaseCPU=databaseCPU(cluster) - db0)


def runSetup(label, root, count, storage, args, cluster):
    users = [f"bench{i}@{DOMAIN}" for i in range(args.imap_clients)]
    t = time.perf_counter()
    nodes = startNodes(root, count, storage, users, args)
    print(f"{label}: {count} node(s) started, {len(users)} INBOXes of {args.mailbox}"
          f" filled in {time.perf_counter() - t:.1f} s", flush=True)
    try:
        smtp = smtpLoad(nodes, args)
        imap = imapLoad(nodes, users, args, cluster) if args.duration > 0 else None
    finally:
        for node in nodes:
            node.stop()
    accept = smtp["accepted"] / smtp["wall"]
    line = (f"{label:<14} {count:>5}  {accept:8.1f}  "
            + (f"{smtp['accepted'] / smtp['delivered']:9.1f}" if smtp["delivered"]
               else "   (late)") + "  ")
    if imap is not None:
        line += (f"{imap['commands'] / imap['wall']:10.1f}  "
                 f"{imap['cpu'] / imap['wall']:12.2f}  {imap['databaseCPU'] / imap['wall']:8.2f}")
    print(f"  {latencyLine('DATA end -> 250', smtp['latencies'])}", flush=True)
    problems = smtp["problems"] + (len(imap["errors"]) if imap else 0)
    if problems:
        first = smtp["firstProblem"] or (imap["errors"][:1] if imap else [])
        print(f"  {problems} client errors or refusals, first: {first}", flush=True)
    return line, problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,2,3",
                        help="PostgreSQL node counts to run (default 1,2,3)")
    parser.add_argument("--clients", type=int, default=10,
                        help="SMTP connections (default 10)")
    parser.add_argument("--messages", type=int, default=50,
                        help="messages per SMTP connection (default 50)")
    parser.add_argument("--size", type=int, default=4096,
                        help="SMTP message size in octets (default 4096)")
    parser.add_argument("--imap-clients", type=int, default=8,
                        help="IMAP client processes, one user each (default 8)")
    parser.add_argument("--duration", type=float, default=15.0,
                        help="seconds of IMAP sessions (default 15; 0 skips them)")
    parser.add_argument("--mailbox", type=int, default=50,
                        help="messages in each IMAP user's INBOX (default 50)")
    parser.add_argument("--no-sqlite", action="store_true",
                        help="skip the one-node SQLite run")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.nodes.split(",") if n]

    from daemons import PostgreSQL

    rows, problems = [], 0
    with tempfile.TemporaryDirectory(prefix="pymailer-bench-nodes-") as tmp, \
            PostgreSQL(durable=True) as cluster:
        root = pathlib.Path(tmp)
        print(f"pg_nodes bench: SMTP {args.clients} clients x {args.messages} x {args.size} B"
              f" to {RECIPIENT}; IMAP {args.imap_clients} clients x {args.duration:g} s"
              f" ({os.cpu_count()} CPUs shared by nodes, clients and PostgreSQL)", flush=True)
        setups = [] if args.no_sqlite else [("sqlite", 1, {"backend": "sqlite"})]
        for count in counts:
            dsn = cluster.dsn(cluster.newDatabase())
            setups.append(("postgresql", count,
                           {"backend": "postgresql", "dsn": dsn, "pool_size": 4}))
        for i, (label, count, storage) in enumerate(setups):
            row, bad = runSetup(label, root / f"run{i}", count, storage, args,
                                cluster if label == "postgresql" else None)
            rows.append(row)
            problems += bad
    print("\n".join([
        "", "==== pymailer nodes benchmark " + "=" * 36,
        " " * 43 + "-" * 9 + " IMAP sessions " + "-" * 10,
        "backend        nodes  accept/s  deliver/s  commands/s  server cores  db cores",
        *rows, "=" * 66]), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
