"""
A real server with worker processes (C{[server] workers = 2}) for the
tests that need several: started until each worker says it is ready, and
ways to pick the worker a client lands on.

Which worker accepts a connection is the kernel's choice; a test that needs
a client on a given worker stops the other one (SIGSTOP) until the client
has its greeting, so that only that worker is in accept().
"""

import contextlib
import os
import re
import signal

from mailserver import DEFAULT_USERS, MailServer, waitFor

_STARTED = re.compile(r"worker (\d+) started, pid (\d+)")


def workerPids(server):
    """C{{index: pid}} of the workers running now, from the supervisor's log."""
    pids = {}
    for index, pid in _STARTED.findall(server.log(settle=0)):
        pids[int(index)] = int(pid)
    return pids


def waitForWorkers(server, count=2, timeout=60):
    """Wait until C{count} workers say they are ready; return their pids."""
    def ready():
        pids = workerPids(server)
        log = server.log(settle=0)
        return len(pids) == count and all(
            f"[worker {i} pid {pid}] [pymailer.workers#info] worker {i} ready" in log
            for i, pid in pids.items()) and pids
    return waitFor(ready, timeout,
                   message=lambda: f"{count} workers ready:\n{server.log(settle=0)}")


@contextlib.contextmanager
def onlyWorker(server, index):
    """
    Only worker C{index} accepts connections in the block (the others are
    stopped): connect and read the greeting inside it.
    """
    pids = workerPids(server)
    others = [pid for i, pid in pids.items() if i != index]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids[index]
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def runningWorkers(root, users=DEFAULT_USERS, **options):
    """
    A L{MailServer} under C{root} with two workers, both ready, provisioned
    with C{users}, for the block (a module-scoped fixture's server);
    stopped after it, also when it did not get ready.

    @param options: more L{MailServer} options (roles, sections, interfaces).
    """
    server = MailServer(root, workers=2, **options)
    server.provision(users=users)
    try:
        server.start()
        waitForWorkers(server)
        yield server
    finally:
        server.stop()
