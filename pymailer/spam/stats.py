"""
The operator's spam counters: every verdict (L{logVerdict}) counts per
recipient, check and action in memory; L{VerdictRecorder} moves the counts
into the classifier database every L{FLUSH_INTERVAL} seconds and at
shutdown, in the thread pool, where C{pymailer spam stats} reads them.
"""

from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pymailer.policy import verdict

FLUSH_INTERVAL = 10.0

log = Logger()


class VerdictRecorder(Service):
    def __init__(self, db, reactor, threadpool, counts=None, interval=FLUSH_INTERVAL):
        self.db = db
        self.reactor = reactor
        self.threadpool = threadpool
        self.counts = verdict.COUNTS if counts is None else counts
        self._loop = task.LoopingCall(self.flush)
        self._loop.clock = reactor
        self.interval = interval

    def startService(self):
        Service.startService(self)
        self._loop.start(self.interval, now=False).addErrback(
            lambda f: log.failure("verdict flushing stopped", f))

    def stopService(self):
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()
        return self.flush()

    def flush(self):
        """Move the counts so far into the database (on the reactor thread)."""
        if not self.counts:
            return None
        taken = dict(self.counts)
        self.counts.clear()

        def failed(failure):
            # Put them back: the next flush tries again.
            self.counts.update(taken)
            log.failure("could not record spam verdict counts", failure)

        return deferToThreadPool(self.reactor, self.threadpool,
                                 self.db.addVerdicts, taken).addErrback(failed)


def formatStats(db, address=None):
    """The lines of C{pymailer spam stats [ADDRESS]}."""
    lines = ["verdicts" + (f" for {address}" if address else "") + ":"]
    rows = db.verdictCounts(address)
    if not rows:
        lines.append("  (none yet)")
    width = max([len(f"{c} {a}") for c, a, _ in rows] + [10])
    lines.extend(f"  {f'{c} {a}':<{width}} {n:>8}" for c, a, n in rows)
    lines.append("classifier training (spam / ham):")
    training = db.trainingCounts(address)
    if not training:
        lines.append("  (nobody has trained yet)")
    lines.extend(f"  {user}: {spam} spam, {ham} ham" for user, spam, ham in training)
    return lines
