"""
SMTP accept and local delivery throughput of a real pymailer server.

    python bench/smtp_accept.py [--clients 20] [--messages 500] [--size 4096]
                                [--port P]

Starts its own server (twistd, 127.0.0.1 only) in a temporary directory
with the helper the end-to-end tests use (C{tests/mailserver.py}); then
C{--clients} threads each open one SMTP connection and send C{--messages}
messages of about C{--size} octets to alice@example.org, one transaction
after the other.  It measures:

 - accepted messages/s: wall time from the first connect to the last 250;
 - the latency of the DATA end -> 250 step (the spool commit: data and
   envelope fsynced), p50/p99 over every message;
 - delivery throughput: first connect until the last message is in
   alice's Maildir;
 - the server's peak RSS (VmHWM in /proc/PID/status).

The clients are Python threads on the same machine: on a small machine they
compete with the server for CPU, so the figures are a lower bound.
"""

import argparse
import contextlib
import os
import pathlib
import re
import smtplib
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))

from benchlib import (  # noqa: E402
    MB, latencyLine, makeMessage, runAll, startProgress, summaryHead, summaryTail,
)
from dnsserver import DNSServer  # noqa: E402
from mailserver import MailServer, readVm, waitFor  # noqa: E402

RECIPIENT = "alice@example.org"


class Client(threading.Thread):
    def __init__(self, bench, index):
        super().__init__(daemon=True, name=f"client-{index}")
        self.bench = bench
        self.index = index
        self.latencies = []
        self.refused = []
        self.error = None

    def run(self):
        b = self.bench
        try:
            b.noteConnect(time.perf_counter())
            with smtplib.SMTP("127.0.0.1", b.port, local_hostname="bench.client.test",
                              timeout=120) as s:
                # The DATA end is sent apart from the body: without this,
                # Nagle holds it back until the server's delayed ACK (40 ms).
                s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.ehlo()
                for n in range(b.messages):
                    _, message = makeMessage(
                        f"bench{self.index}@client.test", RECIPIENT, self.index, n, b.size)
                    code, text = s.mail(f"bench{self.index}@client.test",
                                        [f"SIZE={len(message)}"])
                    if code == 250:
                        code, text = s.rcpt(RECIPIENT)
                    if code != 250:
                        self.refused.append((code, text))
                        s.rset()
                        continue
                    s.putcmd("data")
                    code, text = s.getreply()
                    if code != 354:
                        self.refused.append((code, text))
                        s.rset()
                        continue
                    # What smtplib.SMTP.data() does, with the final "."
                    # sent apart so that only the commit is timed.
                    s.send(re.sub(rb"(?m)^\.", b"..", message))
                    start = time.perf_counter()
                    s.send(b".\r\n")
                    code, text = s.getreply()
                    end = time.perf_counter()
                    if code != 250:
                        self.refused.append((code, text))
                        continue
                    self.latencies.append(end - start)
                    b.noteAccepted(end)
        except Exception as e:  # report, do not hide
            self.error = e


class Bench:
    def __init__(self, port, clients, messages, size):
        self.port = port
        self.clients = clients
        self.messages = messages
        self.size = size
        self.lock = threading.Lock()
        self.firstConnect = None
        self.lastAccepted = None
        self.accepted = 0

    def noteConnect(self, t):
        with self.lock:
            if self.firstConnect is None or t < self.firstConnect:
                self.firstConnect = t

    def noteAccepted(self, t):
        with self.lock:
            self.accepted += 1
            if self.lastAccepted is None or t > self.lastAccepted:
                self.lastAccepted = t


def countDelivered(server):
    base = server.maildir(RECIPIENT)
    return sum(len(os.listdir(base / sub)) for sub in ("new", "cur")
               if (base / sub).is_dir())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20,
                        help="concurrent SMTP connections (default 20)")
    parser.add_argument("--messages", type=int, default=500,
                        help="messages per client (default 500)")
    parser.add_argument("--size", type=int, default=4096,
                        help="message size in octets (default 4096)")
    parser.add_argument("--checks", default=None,
                        help="comma-separated [policy] checks (default: the server's"
                             " default; '' for none, to see what policy costs)")
    parser.add_argument("--train", type=int, default=50,
                        help="with 'classifier' in --checks: train the recipient's filter on"
                             " this many generated ham and spam first (default 50), so the"
                             " filter judges every message (untrained it judges nothing)")
    parser.add_argument("--port", type=int, default=None,
                        help="SMTP port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--progress", type=float, default=5.0,
                        help="seconds between progress lines (default 5)")
    args = parser.parse_args(argv)
    total = args.clients * args.messages

    checks = None if args.checks is None else [c for c in args.checks.split(",") if c]
    sections = None if checks is None else {"policy": {"checks": checks}}
    with tempfile.TemporaryDirectory(prefix="pymailer-bench-") as root, \
            contextlib.ExitStack() as stack:
        if checks and "dnsbl" in checks:
            # A loopback DNS serving an empty blocklist zone: every client
            # IP is looked up (then cached) and not listed.
            zone = stack.enter_context(DNSServer({}))
            sections["dns"] = {"servers": [zone.address], "timeout": 2.0}
            sections["policy"]["dnsbl"] = {"zones": ["bl.test"]}
        server = MailServer(
            root, port=args.port,
            smtp={"max_connections_per_ip": max(50, args.clients + 10)},
            sections=sections,
        )
        server.provision(users=(RECIPIENT,))
        if checks and "classifier" in checks and args.train:
            trainClassifier(server.dataDir, args.train)
        server.start()
        try:
            return run(server, args, total)
        finally:
            server.stop()


def trainClassifier(dataDir, n):
    """Train the recipient's filter on C{n} generated ham and C{n} spam."""
    import hashlib

    from pymailer.spam.db import ClassifierDB, dbPath
    from pymailer.spam.tokens import tokenize
    from spamcorpus import corpus

    db = ClassifierDB(dbPath(dataDir))
    ham, spam = corpus(n)
    for label, messages in (("ham", ham), ("spam", spam)):
        for m in messages:
            db.train(RECIPIENT, hashlib.sha256(m).hexdigest(), tokenize(m), label)


def run(server, args, total):
    bench = Bench(server.port, args.clients, args.messages, args.size)
    pid = server.pid
    print(f"pymailer bench: {args.clients} clients x {args.messages} messages x"
          f" {args.size} B = {total} messages to {RECIPIENT}"
          f" (server pid {pid}, 127.0.0.1:{server.port})", flush=True)
    clients = [Client(bench, i) for i in range(args.clients)]
    stopProgress = startProgress(args.progress, lambda: (
        f"accepted {bench.accepted}/{total}, delivered {countDelivered(server)},"
        f" server RSS {readVm(pid, 'VmRSS') / MB:.1f} MB"))
    runAll(clients)

    lastDelivered = None
    try:
        waitFor(lambda: countDelivered(server) >= bench.accepted,
                timeout=max(120.0, total / 20), interval=0.02,
                message=lambda: f"{bench.accepted} messages in the Maildir"
                                f" (have {countDelivered(server)})")
        lastDelivered = time.perf_counter()
    except TimeoutError as e:
        print(f"WARNING: {e}", flush=True)
    stopProgress()
    peak = readVm(pid, "VmHWM")
    delivered = countDelivered(server)

    latencies = sorted(x for c in clients for x in c.latencies)
    refused = [r for c in clients for r in c.refused]
    errors = [c.error for c in clients if c.error is not None]
    acceptWall = (bench.lastAccepted - bench.firstConnect
                  if bench.accepted else float("nan"))
    lines = summaryHead("pymailer SMTP accept benchmark", args, total, bench.accepted,
                        refused, errors, acceptWall, "first connect -> last 250")
    lines.append(latencyLine("DATA end -> 250 latency", latencies))
    if lastDelivered is not None:
        wall = lastDelivered - bench.firstConnect
        lines += [
            f"delivered to Maildir    : {delivered} in {wall:.2f} s"
            " (first connect -> last file in new/)",
            f"delivery throughput     : {delivered / wall:.1f} msg/s",
        ]
    else:
        lines += [f"delivered to Maildir    : only {delivered} of {bench.accepted}"]
    lines.append(f"server peak RSS (VmHWM) : {peak / MB:.1f} MB")
    lines += summaryTail(errors, refused)
    print("\n".join(lines), flush=True)
    return 0 if (bench.accepted == total and delivered == total) else 1


if __name__ == "__main__":
    sys.exit(main())
