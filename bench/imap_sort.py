"""
SORT and THREAD latency on a big mailbox, pymailer (SQLite store) and,
side by side when it is installed and we are root, Dovecot.

    python bench/imap_sort.py [--messages 10000] [--repeat 5] [--no-dovecot]
                              [--workdir DIR] [--target HOST:PORT --user U --password P]

One INBOX of C{--messages} messages shaped like a mailing-list archive
(deterministic, seed 1): a third start a conversation, the rest reply to an
earlier message (In-Reply-To and References of up to 20 ancestors, "Re:"
subjects, some with a "[list]" blob), 200 senders with display names,
dates rising with jitter, some Date fields missing, 1-3 KB each, 70 %
\\Seen.  pymailer gets it appended through the store API (its summaries
are computed then, as on delivery); Dovecot as Maildir files in C{cur/},
with the reference config of C{../shared/bench/reference/dovecot} on port
20243.

One imaplib client (TCP_NODELAY) logs in, SELECTs, and times each command
C{--repeat} times: the first run (Dovecot fills its cache file for the
fields the command needs; pymailer reads the summaries into the session),
then the median of the others.  Then, on pymailer only, the first SORT of
a database from before summaries (the summaries table emptied: every
message parsed once and its summary kept).  Prints one table per server
and the ratio of the medians.
"""

import argparse
import imaplib
import io
import os
import pathlib
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent.parent / d) for d in ("tests", ".")]

from mailserver import DOMAIN, PASSWORD, MailServer  # noqa: E402

USER = f"sorter@{DOMAIN}"
DOVECOT_PORT = 20243
REFERENCE = pathlib.Path("/work/shared/bench/reference/dovecot")
COMMANDS = [
    ("SORT (ARRIVAL)", ("SORT", "(ARRIVAL)", "UTF-8", "ALL")),
    ("SORT (DATE)", ("SORT", "(DATE)", "UTF-8", "ALL")),
    ("SORT (REVERSE DATE)", ("SORT", "(REVERSE DATE)", "UTF-8", "ALL")),
    ("SORT (SUBJECT)", ("SORT", "(SUBJECT)", "UTF-8", "ALL")),
    ("SORT (FROM)", ("SORT", "(FROM)", "UTF-8", "ALL")),
    ("SORT (SIZE)", ("SORT", "(SIZE)", "UTF-8", "ALL")),
    ("SORT (DISPLAYFROM)", ("SORT", "(DISPLAYFROM)", "UTF-8", "ALL")),
    ("SORT (SUBJECT REVERSE DATE)", ("SORT", "(SUBJECT REVERSE DATE)", "UTF-8", "ALL")),
    ("UID SORT (DATE) UNSEEN", ("UID SORT", "(DATE)", "UTF-8", "UNSEEN")),
    ("SORT RETURN (MIN MAX COUNT)", ("SORT", "RETURN (MIN MAX COUNT) (DATE)", "UTF-8", "ALL")),
    ("THREAD REFERENCES", ("THREAD", "REFERENCES", "UTF-8", "ALL")),
    ("THREAD ORDEREDSUBJECT", ("THREAD", "ORDEREDSUBJECT", "UTF-8", "ALL")),
]
_WORDS = ("meeting notes release build failure question patch review budget plan"
          " travel lunch server upgrade report draft invoice schedule update").split()


def corpus(count, seed=1):
    """The messages (C{bytes}, CRLF) and their flags, in delivery order."""
    rng = random.Random(seed)
    senders = [(f"Person {n:03d}", f"p{n:03d}@example.{['org', 'net', 'com'][n % 3]}")
               for n in range(200)]
    messages, when = [], 1_700_000_000
    for n in range(count):
        when += rng.randint(10, 600)
        name, address = rng.choice(senders)
        head = [f"From: {name} <{address}>", f"To: list@{DOMAIN}",
                f"Message-ID: <m{n}.{seed}@bench.example>"]
        if n and rng.random() < 2 / 3:
            parent = rng.randrange(n)
            subject, ancestors = messages[parent][2], messages[parent][3]
            chain = (ancestors + [parent])[-20:]
            head += [f"Subject: Re: {subject}", f"In-Reply-To: <m{parent}.{seed}@bench.example>",
                     "References: " + "\r\n ".join(f"<m{a}.{seed}@bench.example>" for a in chain)]
        else:
            subject = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 5)))
            if rng.random() < 0.3:
                subject = "[list] " + subject
            chain = []
            head.append(f"Subject: {subject}")
        if rng.random() < 0.97:  # some have no Date: the internal date counts
            head.append(time.strftime("Date: %a, %d %b %Y %H:%M:%S +0000",
                                      time.gmtime(when + rng.randint(-3600, 3600))))
        body = "".join(f"line {i} of message {n} " + "x" * 40 + "\r\n"
                       for i in range(rng.randint(15, 45)))
        data = ("\r\n".join(head) + "\r\n\r\n" + body).encode()
        flags = ("\\Seen",) if rng.random() < 0.7 else ()
        messages.append((data, flags, subject, chain))
    return [(data, flags) for data, flags, _, _ in messages]


def connect(port):
    m = imaplib.IMAP4("127.0.0.1", port, timeout=600)
    m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return m


def timeCommands(label, port, user, password, count, repeat):
    """
    Each command C{repeat} times: C{[(name, first, median of the rest,
    answer)]}.
    """
    m = connect(port)
    m.login(user, password)
    typ, data = m.select("INBOX")
    if typ != "OK" or int(data[0]) != count:
        raise RuntimeError(f"{label}: SELECT {typ} {data!r}, want {count} messages")
    rows = []
    for name, (command, *args) in COMMANDS:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            if command.startswith("UID "):
                typ, data = m.uid(command[4:], *args)
            else:
                typ, data = m._simple_command(command, *args)
                if typ == "OK":
                    typ, data = m._untagged_response(typ, data, "ESEARCH" if "RETURN" in args[0]
                                                     else command)
            times.append(time.perf_counter() - started)
            if typ != "OK":
                raise RuntimeError(f"{label}: {name}: {typ} {data!r}")
        rows.append((name, times[0], statistics.median(times[1:] or times), data))
    m.logout()
    return rows


def _untagged(answer):
    """An answer without ESEARCH's (TAG "...") (each client's own tags)."""
    return [re.sub(rb'\(TAG "[^"]*"\) ', b"", line) if isinstance(line, bytes) else line
            for line in answer]


def printRows(label, rows):
    print(f"\n==== {label} " + "=" * (60 - len(label)))
    print(f"{'command':<30} {'first':>10} {'median':>10}")
    for name, first, median, _ in rows:
        print(f"{name:<30} {first * 1000:8.1f} ms {median * 1000:8.1f} ms")


def runPymailer(root, messages, repeat):
    from unittest import mock

    from pymailer.store.sqlite import SQLiteStore

    server = MailServer(root, roles=("imap",),
                        sections={"auth": {"allow_plaintext_on_loopback": True},
                                  "storage": {"backend": "sqlite"}})
    server.provision(users=[USER])
    started = time.perf_counter()
    store = SQLiteStore(server.dataDir / "store")
    store._db().execute("PRAGMA synchronous = OFF")  # a bench set-up, as imap_ops.py
    with mock.patch("os.fsync"), mock.patch("pymailer.store.blobs.fsyncDirectory"):
        box = store.mailbox(USER)
        base = int(time.time()) - len(messages)  # as Dovecot's files' mtimes
        for n, (data, flags) in enumerate(messages):
            box.append(io.BytesIO(data), flags, internalDate=base + n)
    box.snapshot(claimRecent=True)
    print(f"pymailer: {len(messages)} messages appended (summaries included) in"
          f" {time.perf_counter() - started:.1f} s", flush=True)
    server.start()
    try:
        rows = timeCommands("pymailer", server.ports["imap"], USER, PASSWORD,
                            len(messages), repeat)
        # A database from before summaries: the first SORT parses each message.
        store._db().execute("DELETE FROM summaries")
        m = connect(server.ports["imap"])
        m.login(USER, PASSWORD)
        m.select("INBOX")
        started = time.perf_counter()
        m._simple_command("SORT", "(DATE)", "UTF-8", "ALL")
        lazy = time.perf_counter() - started
        m.logout()
    finally:
        server.stop()
    return rows, lazy


def runDovecot(workdir, messages, repeat):
    """Dovecot (Debian's) on the same messages as Maildir files; root only."""
    workdir = pathlib.Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    d = workdir / "dovecot"
    for sub in ("run", "state", "mail"):
        (d / sub).mkdir(parents=True)
    os.chmod(workdir, 0o755)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                    "-subj", "/CN=localhost", "-keyout", d / "key.pem", "-out", d / "cert.pem"],
                   check=True, capture_output=True)
    conf = (REFERENCE / "dovecot.conf").read_text().replace("@REF@", str(workdir))
    conf = conf.replace("port = 10143", f"port = {DOVECOT_PORT}")
    for old, new in (("10993", DOVECOT_PORT + 850), ("10110", DOVECOT_PORT - 33),
                     ("10995", DOVECOT_PORT + 852)):
        conf = conf.replace(f"port = {old}", f"port = {new}")
    conf = conf.replace("instance_name = dovecot-ref", "instance_name = dovecot-sort")
    (d / "dovecot.conf").write_text(conf)
    (d / "users").write_text("sorter:{PLAIN}testpass\n")
    maildir = d / "mail" / "sorter" / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    base = int(time.time()) - len(messages)
    for n, (data, flags) in enumerate(messages):
        name = f"{base + n}.M{n}P1.bench.test:2," + ("S" if flags else "")
        (maildir / "cur" / name).write_bytes(data)
        os.utime(maildir / "cur" / name, (base + n, base + n))
    subprocess.run(["useradd", "-r", "vmail"], capture_output=True)
    subprocess.run(["chown", "-R", "vmail:vmail", d / "mail"], check=True)
    subprocess.run(["/usr/sbin/dovecot", "-c", d / "dovecot.conf"], check=True)
    try:
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", DOVECOT_PORT), 1).close()
                break
            except OSError:
                time.sleep(0.2)
        return timeCommands("dovecot", DOVECOT_PORT, "sorter", "testpass",
                            len(messages), repeat)
    finally:
        subprocess.run(["/usr/sbin/dovecot", "-c", d / "dovecot.conf", "stop"],
                       capture_output=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-dovecot", action="store_true",
                        help="pymailer only (Dovecot needs root and /usr/sbin/dovecot)")
    parser.add_argument("--workdir", default=None, help="where Dovecot's files go")
    args = parser.parse_args(argv)
    messages = corpus(args.messages)
    with tempfile.TemporaryDirectory(prefix="pymailer-sort-") as root:
        pymailer, lazy = runPymailer(root, messages, args.repeat)
        printRows(f"pymailer (SQLite), {args.messages} messages", pymailer)
        print(f"{'first SORT, no summaries yet':<30} {lazy * 1000:8.1f} ms"
              " (a database from before summaries)")
        if args.no_dovecot or os.geteuid() != 0 or not os.path.exists("/usr/sbin/dovecot"):
            return 0
        # Not under root (0700): Dovecot's auth and mail processes run as
        # other users and must read their files.
        workdir = args.workdir or os.path.join(tempfile.gettempdir(), "pymailer-sort-dovecot")
        dovecot = runDovecot(workdir, messages, args.repeat)
    printRows(f"Dovecot, {args.messages} messages", dovecot)
    print(f"\n{'command':<30} {'pymailer/Dovecot (medians)':>28}  same answer")
    for (name, _, p, mine), (_, _, d, theirs) in zip(pymailer, dovecot):
        same = _untagged(mine) == _untagged(theirs)
        print(f"{name:<30} {p / d:27.2f}x  {'yes' if same else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
