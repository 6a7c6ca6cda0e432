"""
A hidden debugging aid for memory growth: with C{PYMAILER_TRACEMALLOC=DIR}
in its environment the server traces its allocations (C{tracemalloc}, 25
frames) and writes a snapshot to C{DIR/snapshot-NNNN.tracemalloc} every
C{PYMAILER_TRACEMALLOC_INTERVAL} seconds (default 60).  Compare two with
C{tracemalloc.Snapshot.load(...).compare_to(other, "traceback")}.

Off by default and undocumented for users: tracing slows the server
several-fold.  The dump is written on the reactor thread on purpose (the
snapshot must be taken there to be consistent, and this is never on in
production).
"""

import os
import tracemalloc

from twisted.application.internet import TimerService
from twisted.logger import Logger

log = Logger()


def tracingService(environ=os.environ):
    """
    @return: a service that writes the snapshots, or C{None} when the
        environment does not ask for it.
    """
    directory = environ.get("PYMAILER_TRACEMALLOC")
    if not directory:
        return None
    interval = float(environ.get("PYMAILER_TRACEMALLOC_INTERVAL", "60"))
    os.makedirs(directory, exist_ok=True)
    tracemalloc.start(25)
    count = iter(range(10 ** 6))

    def dump():
        path = os.path.join(directory, f"snapshot-{next(count):04d}.tracemalloc")
        tracemalloc.take_snapshot().dump(path)
        log.info("tracemalloc snapshot {path}", path=path)

    return TimerService(interval, dump)
