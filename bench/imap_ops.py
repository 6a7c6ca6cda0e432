"""
IMAP throughput of a real pymailer server, and the cost of a big mailbox.

    python bench/imap_ops.py [--clients 10] [--duration 30] [--messages 100]
                             [--big 100000] [--shared] [--long] [--port P]
                             [--backend maildir|sqlite] [--imap-port P]
    python bench/imap_ops.py --target HOST:PORT --users U1,U2,.. [--password P]
                             [--tls] [--big-user U] [--server-pid PID] ...
    python bench/imap_ops.py --serve DIR --backend sqlite [--clients N] [--big N]
    python bench/imap_ops.py --fill-maildir ROOT --users U1,.. [--big-user U]

Starts its own server (twistd, 127.0.0.1 only, an C{imap} listener with
plaintext LOGIN allowed on loopback) in a temporary directory with the
helper the end-to-end tests use (C{tests/mailserver.py}).

Part 1, concurrent sessions.  C{--clients} users (or, with C{--shared}, one
user whose INBOX every client opens) each get an INBOX of C{--messages}
messages of 1-10 KB, written straight into the Maildir's C{new/} as a
delivery would leave them.  Each client is a process of its own with
imaplib and loops, for C{--duration} seconds, over one session:

    connect, LOGIN, SELECT INBOX, FETCH 1:* (FLAGS),
    FETCH <5 random> (BODY.PEEK[]), STORE <random> +FLAGS/-FLAGS (\\Flagged),
    APPEND (1-10 KB, \\Seen), STORE 1 +FLAGS.SILENT (\\Deleted), EXPUNGE,
    LOGOUT

(9 commands; the mailbox keeps its size).  It prints commands/s,
logins/s (= sessions/s), per-command latency, the first LOGIN of each
client (argon2id, uncached) against the later ones (answered from the
checker's memory of verified logins, C{pymailer.auth.checkers
.VerifiedLogins}), and the CPU used by the server and by the clients.

Part 2, a big mailbox.  C{--big} messages (about 1 KB each; most \\Seen)
are written straight into a fresh user's C{cur/}, as a migrated mailbox
would be, with no UID list yet.  One client then times SELECT (the first
one builds the UID list) and C{UID FETCH 1:* (FLAGS)}, then a second
SELECT and FETCH (the list exists), and STATUS.

Clients and server share this machine's CPUs (on 2 cores, 10 client
processes compete with the server's reactor and thread pool), so the
figures are a lower bound for the server; the CPU lines say who used what.

The other modes serve C{bench/imap_side_by_side.sh}, which runs the same
load against Dovecot and pymailer: C{--target} runs both parts against a
server already running (any IMAP server: C{--users} with C{--password},
C{--tls} for implicit TLS, C{--big-user} whose INBOX holds C{--big}
messages; C{--server-pid} for its CPU and VmHWM); C{--serve DIR} starts
pymailer with the mailboxes filled as above, prints C{READY port=P pid=N
users=..} and runs until its standard input closes; C{--fill-maildir ROOT}
writes the same mailboxes as Maildirs (C{ROOT/USER/Maildir}) for Dovecot.
"""

import argparse
import imaplib
import multiprocessing
import os
import pathlib
import random
import secrets
import socket
import sys
import tempfile
import time

# The tree's own pymailer (the one the server runs), not an installed copy.
sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent.parent / d) for d in ("tests", ".")]

from benchlib import MB, cpuSeconds, latencyLine, resetPeakRSS  # noqa: E402
from mailserver import DOMAIN, PASSWORD, MailServer, readVm  # noqa: E402
from pymailer.auth.checkers import MAX_CONCURRENT_CHECKS  # noqa: E402
from pymailer.auth.passwords import MEMORY_COST_KIB  # noqa: E402

BIG_USER = f"big@{DOMAIN}"
SESSION = ("LOGIN", "SELECT", "FETCH FLAGS", "FETCH BODY[]", "STORE",
           "APPEND", "STORE \\Deleted", "EXPUNGE", "LOGOUT")
_LINE = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n"


def message(rng, tag, low=1024, high=10 * 1024):
    """A CRLF message of C{low}..C{high} octets."""
    size = rng.randint(low, high)
    head = (f"From: <bench@client.test>\r\nTo: <user@{DOMAIN}>\r\n"
            f"Subject: bench {tag}\r\nMessage-ID: <{tag}.{secrets.token_hex(6)}@bench>\r\n"
            "\r\n").encode()
    return head + _LINE * max(1, (size - len(head)) // len(_LINE))


def populate(maildir, count, sub, seenRatio, low, high, seed):
    """
    Write C{count} messages straight into C{maildir/sub} (no fsync: a bench
    set-up), named as Maildir asks and in delivery order.
    """
    rng = random.Random(seed)
    target = pathlib.Path(maildir) / sub
    base = int(time.time()) - count
    for n in range(count):
        name = f"{base + n}.M{n % 1000000}P{os.getpid()}R{secrets.token_hex(8)}.bench.test"
        if sub == "cur":
            name += ":2," + ("S" if rng.random() < seenRatio else "")
        with open(target / name, "wb") as f:
            f.write(message(rng, f"{seed}.{n}", low, high))


def processTree(pid):
    """C{pid} and its descendants (the worker processes of C{[server] workers})."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return tree


def treeCPUSeconds(pid):
    """utime + stime of C{pid} and its worker processes (all threads), in seconds."""
    total = 0.0
    for p in processTree(pid):
        try:
            total += cpuSeconds(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def treeVm(pid, key):
    """C{readVm} summed over C{pid} and its worker processes (as Dovecot's RSS sum)."""
    return sum(readVm(p, key) or 0 for p in processTree(pid))


def resetTreePeakRSS(pid):
    for p in processTree(pid):
        resetPeakRSS(p)


def connect(port, host="127.0.0.1", tls=False):
    if tls:
        import ssl
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        m = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=120)
    else:
        m = imaplib.IMAP4(host, port, timeout=120)
    # imaplib sends a literal and its closing CRLF apart: without this,
    # Nagle holds the CRLF back until the server's delayed ACK (40 ms).
    m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return m


def check(result, what):
    typ, data = result
    if typ != "OK":
        raise RuntimeError(f"{what}: {typ} {data!r}")
    return data


# -- part 1 ---------------------------------------------------------------


def clientMain(index, port, user, duration, go, results, long=False, host="127.0.0.1",
               tls=False, password=PASSWORD):
    """
    One client process: loop over sessions until the deadline; with
    C{long}, one session (LOGIN once, LOGOUT at the end) looping over the
    commands between.
    """
    rng = random.Random(index)
    latencies = {name: [] for name in SESSION}
    sessions = 0
    errors = []
    firstLogin = None
    go.wait()
    start = time.monotonic()
    deadline = start + duration
    end = start
    m = None
    while time.monotonic() < deadline:
        timings = []

        def timed(name, call, *args):
            t = time.perf_counter()
            result = call(*args)
            timings.append((name, time.perf_counter() - t))
            return result

        try:
            if m is None or not long:
                m = connect(port, host, tls)
                timed("LOGIN", m.login, user, password)
            count = int(check(timed("SELECT", m.select, "INBOX"), "SELECT")[0])
            check(timed("FETCH FLAGS", m.fetch, "1:*", "(FLAGS)"), "FETCH FLAGS")
            picks = ",".join(str(rng.randint(1, count)) for _ in range(5))
            check(timed("FETCH BODY[]", m.fetch, picks, "(BODY.PEEK[])"), "FETCH BODY")
            check(timed("STORE", m.store, str(rng.randint(1, count)),
                        rng.choice(("+FLAGS", "-FLAGS")), "(\\Flagged)"), "STORE")
            check(timed("APPEND", m.append, "INBOX", "(\\Seen)", None,
                        message(rng, f"c{index}.{sessions}")), "APPEND")
            check(timed("STORE \\Deleted", m.store, "1", "+FLAGS.SILENT", "(\\Deleted)"),
                  "STORE \\Deleted")
            check(timed("EXPUNGE", m.expunge), "EXPUNGE")
            if not long or time.monotonic() >= deadline:
                timed("LOGOUT", m.logout)
        except Exception as e:  # report, do not hide
            m = None
            errors.append(repr(e))
            if len(errors) > 20:
                break
            continue
        end = time.monotonic()
        for name, seconds in timings:
            latencies[name].append(seconds)
        if firstLogin is None and latencies["LOGIN"]:
            firstLogin = latencies["LOGIN"].pop()
        sessions += 1
    results.put(dict(index=index, sessions=sessions, latencies=latencies,
                     firstLogin=firstLogin, errors=errors, start=start, end=end,
                     cpu=time.process_time()))


def sessionUsers(args):
    if args.users:
        users = args.users.split(",")
        return [users[i % len(users)] for i in range(args.clients)]
    return ([f"bench@{DOMAIN}"] * args.clients if args.shared
            else [f"bench{i}@{DOMAIN}" for i in range(args.clients)])


def runSessions(server, args):
    port, pid = server.ports["imap"], server.pid
    users = sessionUsers(args)
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=clientMain, daemon=True,
                         args=(i, port, users[i], args.duration, go, results, args.long,
                               args.host, args.tls, args.password))
             for i in range(args.clients)]
    for p in procs:
        p.start()
    if pid:
        resetTreePeakRSS(pid)
    cpu0 = treeCPUSeconds(pid) if pid else 0.0
    t0 = time.monotonic()
    go.set()
    if args.long and pid:
        # The server's RSS through the run: a leak shows as a steady climb.
        while time.monotonic() < t0 + args.duration:
            time.sleep(min(30.0, max(0.0, t0 + args.duration - time.monotonic())))
            print(f"  {time.monotonic() - t0:6.0f} s: server RSS"
                  f" {treeVm(pid, 'VmRSS') / MB:.1f} MB", flush=True)
    got = [results.get(timeout=args.duration + 300) for _ in procs]
    for p in procs:
        p.join()
    wall = max(r["end"] for r in got) - t0
    serverCPU = treeCPUSeconds(pid) - cpu0 if pid else float("nan")
    peak = treeVm(pid, "VmHWM") if pid else None

    sessions = sum(r["sessions"] for r in got)
    commands = sessions * len(SESSION)
    errors = [e for r in got for e in r["errors"]]
    firstLogins = sorted(r["firstLogin"] for r in got if r["firstLogin"] is not None)
    clientCPU = sum(r["cpu"] for r in got)
    mode = (f"one INBOX ({users[0]}) shared by all" if len(set(users)) == 1
            else f"{len(set(users))} users, one INBOX each")
    lines = [
        "",
        f"==== {args.label} IMAP sessions benchmark " + "=" * 28,
        f"machine                 : {os.cpu_count()} CPUs; server, and {args.clients}"
        " client processes (imaplib) share them",
        f"load                    : {args.clients} clients, {mode},"
        f" {args.messages} messages of 1-10 KB",
        f"session                 : connect, {', '.join(SESSION)}"
        f" ({len(SESSION)} commands)",
        f"wall time               : {wall:.2f} s (--duration {args.duration:g})",
        f"sessions completed      : {sessions}  (client errors {len(errors)})",
        f"commands/s              : {commands / wall:.1f}",
        f"logins/s                : {sessions / wall:.1f}",
    ]
    for name in SESSION:
        values = sorted(x for r in got for x in r["latencies"][name])
        lines.append(latencyLine(name if name != "LOGIN" else "LOGIN (cached)", values))
    lines.append(latencyLine("first LOGIN (argon2id)", firstLogins))
    if args.argon2:
        wall1, cpu1 = args.argon2
        lines.append(f"{'one argon2id verify':<24}: {wall1 * 1000:.0f} ms,"
                     f" {cpu1 * 1000:.0f} ms CPU (idle machine): without the login cache"
                     f" at most {os.cpu_count() / cpu1:.0f} logins/s on {os.cpu_count()} CPUs")
    if pid:
        lines.append(f"server CPU              : {serverCPU:.1f} s = {serverCPU / wall:.2f} cores")
    lines.append(f"clients CPU             : {clientCPU:.1f} s = {clientCPU / wall:.2f} cores")
    if peak is not None:
        lines.append(f"server peak RSS (VmHWM) : {peak / MB:.1f} MB during the sessions"
                     f" (with the first logins' argon2id, {MEMORY_COST_KIB // 1024} MiB each,"
                     f" at most {MAX_CONCURRENT_CHECKS} at once)")
    lines += [f"client error: {e}" for e in errors[:3]]
    print("\n".join(lines), flush=True)
    return not errors and sessions > 0


def argon2Cost():
    """
    C{(wall, cpu)} seconds of one argon2id verification (the checker's, with
    its parameters), the cheaper of three, in this process before the run.
    """
    from pymailer.auth.passwords import hashPassword, verifyPassword

    stored = hashPassword(PASSWORD)
    best = (float("inf"), float("inf"))
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        assert verifyPassword(stored, PASSWORD)
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


# -- part 2 -----------------------------------------------------------------


def timeBigMailbox(server, args):
    port, pid = server.ports["imap"], server.pid
    m = connect(port, args.host, args.tls)
    check(m.login(args.big_user, args.password), "LOGIN")
    rows = []

    def timed(label, call, *a):
        t = time.perf_counter()
        data = check(call(*a), label)
        rows.append((label, time.perf_counter() - t))
        return data

    for attempt in ("first", "second"):
        cpu0 = treeCPUSeconds(pid) if pid else float("nan")
        exists = int(timed(f"{attempt} SELECT", m.select, "INBOX")[0])
        data = timed(f"{attempt} UID FETCH 1:* (FLAGS)", m.uid, "FETCH", "1:*", "(FLAGS)")
        if pid:
            rows.append(("  server CPU for both", treeCPUSeconds(pid) - cpu0))
        if exists != args.big or len(data) != args.big:
            raise RuntimeError(f"{attempt}: EXISTS {exists}, {len(data)} FETCH answers,"
                               f" want {args.big}")
        m.unselect()
    timed("STATUS (MESSAGES UNSEEN)", m.status, "INBOX", "(MESSAGES UNSEEN)")
    m.logout()
    lines = ["", f"==== {args.label}: a {args.big}-message mailbox " + "=" * 36]
    lines += [f"{label:<32}: {seconds:7.3f} s" for label, seconds in rows]
    if pid:
        lines.append(f"server peak RSS (VmHWM) : {treeVm(pid, 'VmHWM') / MB:.1f} MB"
                     " since the start")
    lines.append("=" * 66)
    print("\n".join(lines), flush=True)


# -- set-up -------------------------------------------------------------------


def fillSQLite(server, users, args):
    """
    The same mailboxes as L{populate} makes, in the SQLite store: appended
    through its API.  A bench set-up, like L{populate}: no fsync (neither
    the blobs' nor SQLite's), or 100,000 appends would take many minutes.
    """
    import io
    from unittest import mock

    from pymailer.store.sqlite import SQLiteStore

    store = SQLiteStore(server.dataDir / "store")
    store._db().execute("PRAGMA synchronous = OFF")
    with mock.patch("os.fsync"), mock.patch("pymailer.store.blobs.fsyncDirectory"):
        for seed, user in enumerate(users):
            rng = random.Random(seed)
            big = user == args.big_user
            box = store.mailbox(user)
            for n in range(args.big if big else args.messages):
                low, high = (600, 1400) if big else (1024, 10240)
                flags = ("\\Seen",) if big and rng.random() < 0.9 else ()
                box.append(io.BytesIO(message(rng, f"{seed}.{n}", low, high)), flags)
            if big:
                box.snapshot(claimRecent=True)  # as cur/: not \Recent any more


def fillMaildirs(args):
    """
    C{--fill-maildir ROOT}: the same mailboxes as Maildirs for another
    server (Dovecot's C{mail_location = maildir:~/Maildir}, home
    C{ROOT/USER}): C{--messages} in C{new/} for each of C{--users}, and
    C{--big} in C{cur/} for C{--big-user}.
    """
    users = args.users.split(",") if args.users else []
    if args.big:
        users.append(args.big_user)
    for seed, user in enumerate(users):
        maildir = pathlib.Path(args.fill_maildir) / user / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        if user == args.big_user:
            populate(maildir, args.big, "cur", 0.9, 600, 1400, seed)
        else:
            populate(maildir, args.messages, "new", 0.0, 1024, 10240, seed)
    print(f"filled {len(users)} Maildirs under {args.fill_maildir}", flush=True)


class _Target:
    """A server this process did not start: its IMAP port and, if known, pid."""

    def __init__(self, port, pid):
        self.ports, self.pid = {"imap": port}, pid


def runTarget(args):
    host, _, port = args.target.rpartition(":")
    args.host = host or "127.0.0.1"
    server = _Target(int(port), args.server_pid)
    print(f"{args.label} IMAP bench: {args.host}:{port}; {args.clients} clients"
          f" for {args.duration:g} s ...", flush=True)
    ok = runSessions(server, args) if args.duration > 0 else True
    if args.big:
        timeBigMailbox(server, args)
    return 0 if ok else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10,
                        help="concurrent client processes (default 10)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds of sessions (default 30; 0 skips them)")
    parser.add_argument("--messages", type=int, default=100,
                        help="messages in each INBOX (default 100)")
    parser.add_argument("--big", type=int, default=100000,
                        help="messages in the big mailbox (default 100000; 0 skips it)")
    parser.add_argument("--long", action="store_true",
                        help="each client keeps one session for the whole run"
                             " (RSS printed every 30 s)")
    parser.add_argument("--shared", action="store_true",
                        help="every client opens the same user's INBOX")
    parser.add_argument("--backend", choices=("maildir", "sqlite"), default="maildir",
                        help="the server's [storage] backend (default maildir); with"
                             " sqlite the mailboxes are filled by appends to the store")
    parser.add_argument("--port", type=int, default=None,
                        help="SMTP port on 127.0.0.1 (default: a free one;"
                             " IMAP gets another free one)")
    parser.add_argument("--imap-port", type=int, default=None,
                        help="IMAP port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--target", metavar="HOST:PORT",
                        help="run against this IMAP server (already running) instead")
    parser.add_argument("--users", help="with --target/--fill-maildir: the users,"
                                        " comma-separated (client i logs in as user i mod n)")
    parser.add_argument("--password", default=PASSWORD, help="with --target: the password")
    parser.add_argument("--tls", action="store_true", help="with --target: implicit TLS")
    parser.add_argument("--big-user", default=BIG_USER,
                        help=f"the user with the big mailbox (default {BIG_USER})")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="with --target: the server's pid (its CPU and VmHWM)")
    parser.add_argument("--workers", type=int, default=1,
                        help="[server] workers: processes serving the listener (the"
                             " server's own default is one per core; figures are summed"
                             " over them)")
    parser.add_argument("--label", default="pymailer", help="names the server in the output")
    parser.add_argument("--serve", metavar="DIR",
                        help="start pymailer in DIR with the mailboxes filled, print"
                             " READY port=.. pid=.. users=.., stop when stdin closes")
    parser.add_argument("--fill-maildir", metavar="ROOT",
                        help="write the mailboxes as Maildirs under ROOT/USER/Maildir")
    args = parser.parse_args(argv)
    args.argon2 = None
    args.host, args.tls = getattr(args, "host", "127.0.0.1"), args.tls
    if args.fill_maildir:
        fillMaildirs(args)
        return 0
    if args.target:
        return runTarget(args)

    from pymailer.store.maildir import MaildirStore

    with tempfile.TemporaryDirectory(prefix="pymailer-bench-") as root:
        if args.serve:
            root = args.serve
        server = MailServer(
            root, port=args.port, roles=("imap",), workers=args.workers,
            sections={"auth": {"allow_plaintext_on_loopback": True},
                      "storage": {"backend": args.backend}},
        )
        if args.imap_port is not None:
            server.ports["imap"] = args.imap_port
            server.writeConfig()
        users = ([f"bench@{DOMAIN}"] if args.shared
                 else [f"bench{i}@{DOMAIN}" for i in range(args.clients)])
        if args.big:
            users.append(args.big_user)
        if not args.serve:
            args.argon2 = argon2Cost()
        t = time.perf_counter()
        server.provision(users=users)
        if args.backend == "sqlite":
            fillSQLite(server, users, args)
        store = MaildirStore(server.dataDir / "mail", server.hostname)
        for seed, user in enumerate(users if args.backend == "maildir" else ()):
            store.createUser(user)
            if user == args.big_user:
                populate(server.maildir(user), args.big, "cur", 0.9, 600, 1400, seed)
            else:
                populate(server.maildir(user), args.messages, "new", 0.0, 1024, 10240, seed)
        print(f"pymailer IMAP bench: {len(users)} users provisioned and filled in"
              f" {time.perf_counter() - t:.1f} s", flush=True)
        server.start()
        try:
            if args.serve:
                print(f"READY port={server.ports['imap']} pid={server.pid}"
                      f" users={','.join(u for u in users if u != args.big_user)}", flush=True)
                sys.stdin.read()
                return 0
            print(f"server pid {server.pid}, IMAP on 127.0.0.1:{server.ports['imap']};"
                  f" {args.clients} clients for {args.duration:g} s ...", flush=True)
            ok = runSessions(server, args)
            if args.big:
                timeBigMailbox(server, args)
            return 0 if ok else 1
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
