"""
Many IMAP sessions in IDLE: what each costs the server in memory, and how
long one delivery takes to reach all of them (issue 14: 10,000 sessions,
under 1 GiB RSS in all, every session told within a second).

    python bench/imap_idle_many.py [--sessions 1000] [--workers CORES]
                                   [--clients 2] [--users 1] [--settle 5]

Starts its own server (twistd, 127.0.0.1 only, an C{imap} listener with
plaintext LOGIN allowed on loopback, C{[server] workers} = C{--workers},
default one per core, connection limits raised to C{--sessions}) in a
temporary directory with the helper the end-to-end tests use
(C{tests/mailserver.py}), and raises this process's RLIMIT_NOFILE to its
hard limit first (the server inherits it).

C{--clients} processes (asyncio, one socket per session) open
C{--sessions} sessions in all, each LOGIN, SELECT INBOX, IDLE, spread over
C{--users} users (default one: every session on the same INBOX, the worst
case for the fan-out of one change).  Once all are idling, and after
C{--settle} seconds, the sum of VmRSS over the supervisor and every worker
is read from C{/proc}, against the same sum before the first session.
Then one message per user is sent over SMTP and each client records when
each of its sessions reads C{* n EXISTS}; the times printed run from the
SMTP 250 of the session's user's message (queued) to that line, so they
hold the queue, the local delivery, the change event reaching every worker
and each session's refresh.  Each user logs in a few times first
(L{warmUp}), so what argon2id leaves in the workers is in the baseline.  The server CPU line is what the supervisor and each worker
used in that time (the SMTP session, the delivery and the fan-out): on a
machine shared with other work, the busiest worker's CPU is the figure
the latency would approach with a core of its own.

Clients and server share the machine's CPUs: on 2 cores the clients'
parsing competes with the workers, so the figures are an upper bound on
the server's time.  Exit status 1 if a session failed to set up or missed
the delivery.
"""

import argparse
import asyncio
import imaplib
import multiprocessing
import os
import pathlib
import re
import resource
import smtplib
import sys
import tempfile
import time

# The tree's own pymailer (the one the server runs), not an installed copy.
sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent.parent / d) for d in ("tests", ".")]

from benchlib import MB, cpuSeconds, percentile  # noqa: E402
from mailserver import DOMAIN, PASSWORD, MailServer, readVm, waitFor  # noqa: E402

_READY = re.compile(r"\[worker (\d+) pid (\d+)\] \[pymailer.workers#info\] worker \d+ ready")
# Connections opened at once by one client: below the listen backlog, so
# a burst of SYNs is not dropped (a dropped SYN waits 1 s to be resent).
CONNECT_BURST = 200


def raiseFileLimit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def serverPids(server):
    """The supervisor and the workers its log says are ready."""
    return [server.pid] + sorted(int(pid) for _, pid in _READY.findall(server.log()))


def totalRSS(pids):
    return sum(readVm(pid, "VmRSS") or 0 for pid in pids)


# -- the client processes -----------------------------------------------------


# With --notify, each session asks for the selected mailbox's events and
# every other folder's (RFC 5465) before IDLE.
NOTIFY = b"n NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (PERSONAL (MessageNew))\r\n"


async def _session(port, user, ready, seen, notify=False):
    """LOGIN, SELECT INBOX, [NOTIFY,] IDLE; then wait for EXISTS (its monotonic time)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()  # greeting
        writer.write(f'a LOGIN "{user}" "{PASSWORD}"\r\nb SELECT INBOX\r\n'.encode()
                     + (NOTIFY if notify else b"") + b"c IDLE\r\n")
        while True:
            line = await reader.readline()
            if not line or line[:4] in (b"a NO", b"a BA", b"b NO", b"b BA", b"n NO", b"n BA",
                                        b"* BY"):
                raise RuntimeError(f"set-up failed: {line!r}")
            if line.startswith(b"+"):
                break
    except Exception as e:
        ready.set_exception(e)
        return
    ready.set_result(None)
    while True:
        line = await reader.readline()
        if not line:
            return  # closed while idling: not counted as seen
        if line.endswith(b" EXISTS\r\n"):
            seen.append((user, time.monotonic()))
            break
    # Left idling: the parent reads the server's CPU before they go.
    await asyncio.sleep(3600)


async def _client(port, users, count, pipe, notify):
    loop = asyncio.get_running_loop()
    tasks, readies, seen = [], [], []
    for start in range(0, count, CONNECT_BURST):
        burst = []
        for i in range(start, min(count, start + CONNECT_BURST)):
            ready = loop.create_future()
            burst.append(ready)
            tasks.append(asyncio.create_task(
                _session(port, users[i % len(users)], ready, seen, notify)))
        await asyncio.wait(burst, timeout=120)
        readies += burst
    ok = [r for r in readies if r.done() and r.exception() is None]
    failed = [repr(r.exception()) for r in readies if r.done() and r.exception()]
    pipe.send(("ready", len(ok), failed[:3]))
    # The parent delivers once every client is ready, then says how long to wait.
    timeout = await loop.run_in_executor(None, pipe.recv)
    deadline = time.monotonic() + timeout
    while len(seen) < len(ok) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    pipe.send(("seen", seen))
    await loop.run_in_executor(None, pipe.recv)  # then close them all
    for t in tasks:
        t.cancel()


def clientMain(port, users, count, pipe, notify=False):
    raiseFileLimit()
    asyncio.run(_client(port, users, count, pipe, notify))


# -- the run ----------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--users", type=int, default=1,
                        help="users the sessions are spread over (one INBOX each)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds between the last IDLE and the RSS sample")
    parser.add_argument("--wait", type=float, default=30.0,
                        help="seconds to wait for every session to see the delivery")
    parser.add_argument("--notify", action="store_true",
                        help="each session says NOTIFY SET (RFC 5465) before IDLE")
    parser.add_argument("--keep", action="store_true",
                        help="print the server's pids and wait for Enter before the"
                             " delivery (to attach py-spy)")
    args = parser.parse_args(argv)
    limit = raiseFileLimit()
    perWorker = args.sessions // max(1, args.workers) + 1
    if perWorker + 100 > limit:
        sys.exit(f"RLIMIT_NOFILE hard limit {limit} is below {perWorker} sessions a worker")
    users = [f"idle{i}@{DOMAIN}" for i in range(args.users)]
    with tempfile.TemporaryDirectory(prefix="pymailer-idle-") as root:
        server = MailServer(
            root, roles=("imap",), workers=args.workers,
            sections={"auth": {"allow_plaintext_on_loopback": True},
                      "imap": {"max_connections": args.sessions + 10,
                               "max_connections_per_ip": args.sessions + 10}})
        server.provision(users=users)
        server.start(timeout=120)  # workers start slowly on a busy machine
        try:
            # One process (workers 1) has no worker to wait for.
            processes = args.workers + 1 if args.workers > 1 else 1
            waitFor(lambda: len(serverPids(server)) == processes, 60,
                    message="the workers to be ready")
            return run(args, server, users)
        finally:
            server.stop()


def warmUp(port, users, workers):
    """
    Log each user in a few times per worker before the baseline, so that
    the first LOGIN's argon2id (64 MiB a check, memory the allocator may
    keep) is not counted as the sessions' (which worker serves a
    connection is the kernel's choice: 4 tries a worker).
    """
    for user in users:
        for _ in range(4 * workers):
            with imaplib.IMAP4("127.0.0.1", port, timeout=60) as imap:
                imap.login(user, PASSWORD)


def run(args, server, users):
    pids = serverPids(server)
    warmUp(server.ports["imap"], users, args.workers)
    time.sleep(1)
    before = totalRSS(pids)
    setupCpu0 = sum(cpuSeconds(pid) for pid in pids)
    context = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    t0 = time.monotonic()
    for c in range(args.clients):
        count = args.sessions // args.clients + (c < args.sessions % args.clients)
        ours, theirs = context.Pipe()
        p = context.Process(target=clientMain,
                            args=(server.ports["imap"], users, count, theirs, args.notify))
        p.start()
        pipes.append(ours)
        procs.append(p)
    ready, errors = 0, []
    for pipe in pipes:
        _, n, failed = pipe.recv()
        ready += n
        errors += failed
    setup = time.monotonic() - t0
    setupCpu = sum(cpuSeconds(pid) for pid in pids) - setupCpu0
    time.sleep(args.settle)
    idle = totalRSS(pids)
    if args.keep:
        input(f"server pids {pids}; Enter to deliver> ")
    cpu0 = [cpuSeconds(pid) for pid in pids]
    queued = {}  # user -> when the SMTP 250 for their message came
    with smtplib.SMTP("127.0.0.1", server.port, timeout=60) as smtp:
        for user in users:
            smtp.sendmail("sender@remote.test", [user], b"Subject: idle-many\r\n\r\nhello\r\n")
            queued[user] = time.monotonic()
    for pipe in pipes:
        pipe.send(args.wait)
    seen = []
    for pipe in pipes:
        seen += pipe.recv()[1]
    cpu = [after - before for after, before in zip([cpuSeconds(pid) for pid in pids], cpu0)]
    peak = sum(readVm(pid, "VmHWM") or 0 for pid in pids)
    for pipe in pipes:
        pipe.send("bye")
    for p in procs:
        p.join(30)
    latencies = sorted(t - queued[user] for user, t in seen)
    perSession = (idle - before) / max(1, ready)
    top = latencies[-1] if latencies else float("nan")
    print()
    print("==== IMAP IDLE, many sessions " + "=" * 36)
    print(f"machine                 : {os.cpu_count()} CPUs, {args.workers} workers,"
          f" {args.clients} client processes, {len(users)} user(s)"
          + (", NOTIFY" if args.notify else ""))
    print(f"sessions idling         : {ready} of {args.sessions}  (set-up {setup:.1f} s,"
          f" {ready / setup:.0f} sessions/s)")
    print(f"server CPU, set-up      : {setupCpu:.2f} s  ({setupCpu / max(1, ready) * 1e6:.0f} us a"
          " session)")
    print(f"server RSS, no session  : {before / MB:.1f} MB  (supervisor + workers)")
    print(f"server RSS, all idling  : {idle / MB:.1f} MB  ({perSession / 1024:.1f} KB a session)")
    print(f"server peak RSS         : {peak / MB:.1f} MB  (sum of VmHWM, set-up included)")
    print(f"saw the delivery        : {len(seen)} of {ready}")
    low = latencies[0] if latencies else float("nan")
    print(f"250 -> EXISTS           : min {low * 1000:.0f} ms,"
          f" p50 {percentile(latencies, 0.5) * 1000:.0f} ms,"
          f" p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {top * 1000:.0f} ms")
    print(f"server CPU, fan-out     : {sum(cpu):.2f} s  (supervisor {cpu[0]:.2f}, workers "
          + ", ".join(f"{c:.2f}" for c in cpu[1:]) + ")")
    print("=" * 66)
    for e in errors[:3]:
        print("client error:", e)
    return 0 if ready == args.sessions and len(seen) == ready else 1


if __name__ == "__main__":
    sys.exit(main())
