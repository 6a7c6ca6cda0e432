"""
The spam score of one transaction, shared by the pieces that judge spam
(dnsbl, rules; the classifier and the scanners to come), and the one log
line per verdict the operator reads.

Each piece adds its points with a named reason to the transaction's
L{SpamScore} (typed state in C{facts.notes}, as maddy keeps per-check
state); at the end of data the chain writes the C{X-Spam-Score} and
C{X-Spam-Status} headers and files the message into Junk at or above the
threshold (L{PolicyChain.checkData}).
"""

import collections
from dataclasses import dataclass, field

from twisted.logger import Logger

from pymailer import metrics
from pymailer.policy.decision import Decision

log = Logger(namespace="pymailer.policy.verdict")

JUNK = "Junk"

# (recipient, check, action) -> verdicts since the last flush, counted on
# the reactor thread; L{pymailer.spam.stats.VerdictRecorder} takes them
# into the database that C{pymailer spam stats} reads.
COUNTS = collections.Counter()


@dataclass
class SpamScore:
    """@ivar hits: C{[(check, points, reason)]} in the order scored."""

    hits: list = field(default_factory=list)

    @classmethod
    def of(cls, facts):
        """The transaction's score (made on first use)."""
        return facts.notes.setdefault("spam", cls())

    @property
    def total(self):
        return round(sum(points for _, points, _ in self.hits), 2)

    def add(self, check, points, reason):
        self.hits.append((check, points, reason))

    def decision(self, junkScore):
        """The headers, and Junk at or above C{junkScore}."""
        spam = self.total >= junkScore
        tests = ",".join(reason for _, _, reason in self.hits) or "none"
        headers = [
            f"X-Spam-Score: {self.total:g}\r\n".encode(),
            (f"X-Spam-Status: {'Yes' if spam else 'No'}, score={self.total:g} "
             f"required={junkScore:g} tests={tests}\r\n").encode(),
        ]
        if spam:
            return Decision(headers=tuple(headers), folder=JUNK, reason="spam.junk")
        return Decision.addHeaders(headers)


_OUR_HEADERS = (b"x-spam-score:", b"x-spam-status:")


def isSpamHeader(field):
    """
    Is C{field} (bytes) one of the headers our verdict writes?  Pieces that
    score drop those a sender wrote, so a user's filter never trusts a
    forged "X-Spam-Status: No".
    """
    return field[:20].lower().replace(b" ", b"").replace(b"\t", b"").startswith(_OUR_HEADERS)


def logVerdict(facts, check, action, reason, score=0.0, queueId=None, recipients=None):
    """
    One line per verdict: which check, what it did and why, for whom.
    C{action}: reject, tempfail, score, junk, pass, timeout.
    """
    rcpts = facts.recipients if recipients is None else recipients
    for rcpt in rcpts or ("-",):
        COUNTS[(rcpt.lower(), check, action)] += 1
    metrics.SPAM_VERDICTS.labels(check, action).inc()
    log.info(
        "spam verdict: qid={qid} ip=[{ip}] from=<{sender}> to={rcpts} check={check}"
        " score={score:g} action={action} reason={reason}",
        qid=queueId or "-", ip=facts.clientAddress, sender=facts.sender or "",
        rcpts=",".join(f"<{r}>" for r in rcpts) or "-", check=check, score=score,
        action=action, reason=reason)
