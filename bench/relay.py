"""
Relay throughput of a real pymailer server: from authenticated submission
to a receiving server on loopback.

    python bench/relay.py [--clients 20] [--messages 50] [--size 4096]

Starts, in a temporary directory and on loopback only:

 - a DNS server (C{tests/dnsserver.py}) serving C{remote.test MX 10
   mx.remote.test} and C{mx.remote.test A 127.0.0.2};
 - a sink on 127.0.0.2: an SMTP server in the style of
   C{tests/scriptedsmtp.py} that accepts every message at once (PIPELINING,
   8BITMIME, SIZE; no STARTTLS, so the hop is plaintext) and notes when each
   one's final "." arrived;
 - the pymailer server under test (C{tests/mailserver.py}) with a submission
   listener, C{[auth] allow_plaintext_on_loopback}, C{[dns] servers} at the
   DNS server and C{[relay] port} at the sink.

Then C{--clients} threads each open one submission connection and log in
(AUTH PLAIN); once all have, each sends C{--messages} messages of about C{--size} octets to
user@remote.test, one transaction after the other.  It measures:

 - accepted messages/s: first submission (all clients logged in) to the
   last 250;
 - relayed messages/s: first submission until the sink has the last message;
 - end-to-end latency per message, p50/p99: the 250 at submission until the
   sink read its final "." (both clocks are this process's);
 - the connections the sink took (each would be a TLS handshake with a
   real MX), and so how many messages each carried;
 - the server's peak RSS (VmHWM in /proc/PID/status) while relaying (reset
   through /proc/PID/clear_refs once the clients are logged in), and the
   peak during the logins, which is argon2id's (64 MiB a check, several at
   once).

Clients, sink and DNS server are Python threads on the same machine as the
server and share its CPUs: the figures are a lower bound.
"""

import argparse
import pathlib
import re
import smtplib
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

from dnsserver import DNSServer  # noqa: E402
from benchlib import (  # noqa: E402
    MB, latencyLine, makeMessage, resetPeakRSS, runAll, startProgress, summaryHead,
    summaryTail,
)
from mailserver import PASSWORD, MailServer, loopbackRelayPort, readVm  # noqa: E402
from scriptedsmtp import ScriptedSMTP  # noqa: E402

SENDER = "alice@example.org"
RECIPIENT = "user@remote.test"


class Sink(ScriptedSMTP):
    """
    Accepts everything; C{arrivals[token]} is when the message's final "."
    was read (C{time.perf_counter}), C{copies} how many messages came.
    """

    def __init__(self, interface, port):
        self.arrivals = {}
        self.copies = 0
        self.cond = threading.Condition()
        ScriptedSMTP.__init__(self, interface, port, hostname="mx.remote.test")

    def messageReceived(self, mail, rcpts, data):
        now = time.perf_counter()
        m = re.search(rb"^Message-ID: <([^>]*)>", data, re.M)
        with self.cond:
            self.copies += 1
            self.arrivals.setdefault(m.group(1).decode() if m else None, now)
            self.cond.notify_all()
        return "250 2.0.0 queued"


class Client(threading.Thread):
    def __init__(self, bench, index):
        super().__init__(daemon=True, name=f"client-{index}")
        self.bench = bench
        self.index = index
        self.submitted = {}  # token -> time of the 250
        self.refused = []
        self.error = None

    def run(self):
        b = self.bench
        try:
            with smtplib.SMTP("127.0.0.1", b.port, local_hostname="bench.client.test",
                              timeout=120) as s:
                s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.ehlo()
                s.user, s.password = SENDER, PASSWORD
                s.auth("PLAIN", s.auth_plain)
                b.loggedIn.wait()
                for n in range(b.messages):
                    token, message = makeMessage(SENDER, RECIPIENT, self.index, n, b.size)
                    code, text = s.mail(SENDER, [f"SIZE={len(message)}"])
                    if code == 250:
                        code, text = s.rcpt(RECIPIENT)
                    if code == 250:
                        code, text = s.data(message)
                    if code != 250:
                        self.refused.append((code, text))
                        s.rset()
                        continue
                    now = time.perf_counter()
                    self.submitted[token] = now
                    b.noteAccepted(now)
        except Exception as e:  # report, do not hide
            self.error = e
            b.loggedIn.abort()


class Bench:
    def __init__(self, port, clients, messages, size, onLoggedIn):
        self.port = port
        # Every client logs in first; submission starts when all have, so
        # that the argon2id checks of the logins are not in the figures.
        self.loggedIn = threading.Barrier(clients, action=onLoggedIn)
        self.messages = messages
        self.size = size
        self.lock = threading.Lock()
        self.firstSubmission = None
        self.lastAccepted = None
        self.accepted = 0

    def noteAccepted(self, t):
        with self.lock:
            self.accepted += 1
            self.lastAccepted = max(t, self.lastAccepted or t)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20,
                        help="concurrent submission connections (default 20)")
    parser.add_argument("--messages", type=int, default=50,
                        help="messages per client (default 50)")
    parser.add_argument("--size", type=int, default=4096,
                        help="message size in octets (default 4096)")
    parser.add_argument("--progress", type=float, default=5.0,
                        help="seconds between progress lines (default 5)")
    args = parser.parse_args(argv)
    total = args.clients * args.messages

    port = loopbackRelayPort(("127.0.0.2",))
    dns = DNSServer({
        "remote.test": [("MX", "10 mx.remote.test.")],
        "mx.remote.test": [("A", "127.0.0.2")],
    })
    sink = Sink("127.0.0.2", port)
    try:
        with tempfile.TemporaryDirectory(prefix="pymailer-bench-relay-") as root:
            server = MailServer(
                root,
                roles=("submission",),
                smtp={"max_connections_per_ip": max(50, args.clients + 10)},
                sections={
                    "auth": {"allow_plaintext_on_loopback": True, "failure_delay": 0},
                    "dns": {"servers": [dns.address], "timeout": 5.0},
                    "relay": {"port": port},
                    # One user sends everything: not what the per-user
                    # limits (a stolen password) are for.
                    "policy": {"ratelimit": {"messages_per_hour": 0,
                                             "recipients_per_hour": 0}},
                },
            )
            server.provision(users=(SENDER,))
            server.start()
            try:
                return run(server, sink, args, total)
            finally:
                server.stop()
    finally:
        sink.stop()
        dns.stop()


def run(server, sink, args, total):
    pid = server.pid
    state = {}

    def loggedIn():
        state["loginPeak"] = readVm(pid, "VmHWM")
        state["reset"] = resetPeakRSS(pid)
        state["start"] = time.perf_counter()

    bench = Bench(server.ports["submission"], args.clients, args.messages, args.size, loggedIn)
    print(f"pymailer relay bench: {args.clients} clients x {args.messages} messages x"
          f" {args.size} B = {total} messages to {RECIPIENT} via submission"
          f" 127.0.0.1:{bench.port} -> sink 127.0.0.2:{sink.server.server_address[1]}"
          f" (server pid {pid})", flush=True)
    clients = [Client(bench, i) for i in range(args.clients)]
    stopProgress = startProgress(args.progress, lambda: (
        f"accepted {bench.accepted}/{total}, relayed {len(sink.arrivals)},"
        f" server RSS {readVm(pid, 'VmRSS') / MB:.1f} MB"))
    runAll(clients)

    try:
        with sink.cond:
            ok = sink.cond.wait_for(lambda: len(sink.arrivals) >= bench.accepted,
                                    timeout=max(120.0, total / 10))
        if not ok:
            raise TimeoutError(f"{bench.accepted} messages at the sink"
                               f" (have {len(sink.arrivals)})")
        lastRelayed = max(sink.arrivals.values())
    except TimeoutError as e:
        print(f"WARNING: gave up waiting for {e}", flush=True)
        lastRelayed = None
    # The queue has been emptied once the sink has everything (or soon after).
    try:
        server.waitQueueEmpty(timeout=30, envelopesOnly=True)
    except TimeoutError as e:
        print(f"WARNING: {e}", flush=True)
    stopProgress()
    peak = readVm(pid, "VmHWM")

    submitted = {tok: t for c in clients for tok, t in c.submitted.items()}
    latencies = sorted(sink.arrivals[tok] - t for tok, t in submitted.items()
                       if tok in sink.arrivals)
    relayed = sum(1 for tok in submitted if tok in sink.arrivals)
    refused = [r for c in clients for r in c.refused]
    errors = [c.error for c in clients if c.error is not None]
    start = state.get("start", float("nan"))
    acceptWall = bench.lastAccepted - start if bench.accepted else float("nan")
    lines = summaryHead("pymailer relay benchmark", args, total, bench.accepted,
                        refused, errors, acceptWall, "first submission -> last 250")
    if lastRelayed is not None:
        wall = lastRelayed - start
        lines += [
            f"relayed to the sink     : {relayed} in {wall:.2f} s"
            " (first submission -> last message at the sink)",
            f"relay throughput        : {relayed / wall:.1f} msg/s",
        ]
    else:
        lines += [f"relayed to the sink     : only {relayed} of {bench.accepted}"]
    lines += [
        latencyLine("submit 250 -> at sink", latencies, digits=1),
        f"copies at the sink      : {sink.copies} (duplicates {sink.copies - len(sink.arrivals)})",
        f"connections to the sink : {len(sink.transcripts)}"
        f" ({relayed / max(1, len(sink.transcripts)):.1f} messages per connection)",
        f"server peak RSS (VmHWM) : {peak / MB:.1f} MB while relaying"
        + ("" if state.get("reset") else " (could not reset after the logins)"),
        f"  ... during the logins : {state.get('loginPeak', 0) / MB:.1f} MB"
        f" ({args.clients} AUTH PLAIN at once, argon2id)",
    ]
    lines += summaryTail(errors, refused)
    print("\n".join(lines), flush=True)
    return 0 if (bench.accepted == total and relayed == total) else 1


if __name__ == "__main__":
    sys.exit(main())
