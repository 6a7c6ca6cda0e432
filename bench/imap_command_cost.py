"""
The reactor's CPU per IMAP command, without the network and without the
store's time (issue 13): what one process can answer per core is bounded
by this, since the reactor thread runs every command's parsing, dispatch
and response rendering under the GIL.

    python bench/imap_command_cost.py [--loops 2000] [--backend memory|sqlite]
                                      [--profile FILE]

One session (the server protocol on a C{StringTransport}, as the
protocol tests drive it: C{tests/imapharness.py}) logs in and loops over
bench/imap_ops.py's long-session load: SELECT INBOX, FETCH 1:* (FLAGS),
FETCH 5 random (BODY.PEEK[]), STORE +/-FLAGS (\\Flagged), APPEND (1-10 KB,
\\Seen), STORE 1 +FLAGS.SILENT (\\Deleted), EXPUNGE, on an INBOX of 100
messages of 1-10 KB.  Store calls go through C{deferToThreadPool} as in
the server, to a pool that runs them at once and measures their CPU: what
is printed is the process CPU minus that, per command (the reactor side),
and the store side apart.  Each command is sent as imaplib sends it
(APPEND's literal after the C{+}).  C{--profile} writes a cProfile of the
loops (C{python -m pstats FILE}).
"""

import argparse
import cProfile
import os
import random
import sys
import tempfile
import time

sys.path[:0] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), d)
                for d in ("../tests", "..")]


from benchlib import TimedPool, makeMessage  # noqa: E402
from imapharness import USER, Client, FakeFactory  # noqa: E402
from pymailer.imap.account import IMAPAccount  # noqa: E402

COMMANDS = 7  # a loop's commands (imap_ops.py's long session, less LOGIN and LOGOUT)


class PooledFactory(FakeFactory):
    """The protocol tests' factory, with store calls through L{TimedPool}."""

    def __init__(self, tmp, store):
        FakeFactory.__init__(self, tmp, secure=True, store=store)
        self.pool = TimedPool()

    def account(self, user):
        if isinstance(user, bytes):
            user = user.decode()
        return IMAPAccount(user, self.store, self.clock, self.pool, self.notifier)

    def run(self, function, *args, **kwargs):
        from twisted.internet.threads import deferToThreadPool
        return deferToThreadPool(self.clock, self.pool, function, *args, **kwargs)


def makeStore(backend, tmp):
    if backend == "sqlite":
        from pymailer.store.sqlite import SQLiteStore
        return SQLiteStore(os.path.join(tmp, "store"))
    from pymailer.store.memory import MemoryStore
    return MemoryStore()


LABELS = ("SELECT", "FETCH FLAGS", "FETCH BODY[]", "STORE", "APPEND", "STORE \\Deleted",
          "EXPUNGE")


def oneLoop(client, rng, n, costs):
    """
    bench/imap_ops.py's long-session loop; adds each command's reactor CPU
    (process CPU less the pool's) to C{costs[label]}.
    """
    pool = client.factory.pool
    replies = []

    def send(label, *lines):
        cpu, store = time.process_time(), pool.cpu
        for line in lines:
            reply = client.send(line)
        costs[label] += (time.process_time() - cpu) - (pool.cpu - store)
        replies.append(reply)
        return reply

    count = int(send("SELECT", b"a1 SELECT INBOX\r\n").split(b" EXISTS")[0].rsplit(b"* ", 1)[1])
    send("FETCH FLAGS", b"a2 FETCH 1:* (FLAGS)\r\n")
    picks = ",".join(str(rng.randint(1, count)) for _ in range(5))
    send("FETCH BODY[]", f"a3 FETCH {picks} (BODY.PEEK[])\r\n".encode())
    send("STORE", f"a4 STORE {rng.randint(1, count)} "
                  f"{rng.choice(('+FLAGS', '-FLAGS'))} (\\Flagged)\r\n".encode())
    _, body = makeMessage("bench@client.test", USER.decode(), 0, n, rng.randint(1024, 10240))
    send("APPEND", b"a5 APPEND INBOX (\\Seen) {%d}\r\n" % len(body), body + b"\r\n")
    send("STORE \\Deleted", b"a6 STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    send("EXPUNGE", b"a7 EXPUNGE\r\n")
    for n, reply in enumerate(replies, 1):
        if b"a%d OK" % n not in reply:
            raise RuntimeError(f"a{n}: {reply[-200:]!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=2000)
    parser.add_argument("--backend", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--profile", metavar="FILE")
    options = parser.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="imap-cost-") as tmp:
        store = makeStore(options.backend, tmp)
        if options.backend == "sqlite":
            os.fsync = lambda fd: None  # the disk is not what is measured
        factory = PooledFactory(tmp, store)
        client = Client(factory=factory)
        client.login()
        for n in range(100):
            _, body = makeMessage("bench@client.test", USER.decode(), 0, n,
                                  rng.randint(1024, 10240))
            client.deliver(body)
        costs = dict.fromkeys(LABELS, 0.0)
        for n in range(50):  # warm-up
            oneLoop(client, rng, n, costs)
        costs = dict.fromkeys(LABELS, 0.0)
        profile = cProfile.Profile() if options.profile else None
        pool = factory.pool
        pool.cpu, pool.calls = 0.0, 0
        pool.profile = profile  # paused in the store's calls: the reactor side alone
        cpu0 = time.process_time()
        if profile:
            profile.enable()
        for n in range(options.loops):
            oneLoop(client, rng, n, costs)
        if profile:
            profile.disable()
            profile.dump_stats(options.profile)
        total = time.process_time() - cpu0
    commands = options.loops * COMMANDS
    print(f"{options.loops} loops of {COMMANDS} commands, {options.backend} store"
          f"{' (profiled)' if profile else ''}:")
    print(f"  reactor side : {(total - pool.cpu) / commands * 1e6:7.1f} us CPU per command")
    print(f"  store side   : {pool.cpu / commands * 1e6:7.1f} us CPU per command"
          f" ({pool.calls / commands:.2f} hand-offs per command)")
    for label, cpu in costs.items():
        print(f"    {label:<16}: {cpu / options.loops * 1e6:7.1f} us reactor CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
