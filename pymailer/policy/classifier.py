"""
The learning classifier (C{classifier}), at the end of data: each local
recipient's own Bayesian filter (L{pymailer.spam}) judges the message.

  - at or above C{junk_threshold} the message goes to that recipient's
    Junk (the others get it where they would have);
  - at or above C{reject_threshold} (off by default) for every recipient
    it is refused, 554 5.7.1: no legitimate mail is refused by default;
  - a filter trained on fewer than C{min_training} spam or ham judges
    nothing;
  - sender reputation: a sender (envelope address when SPF or DKIM
    passed, DKIM domain, client IP) whose past verdicts for this user
    number at least C{reputation_min}, all ham, scores
    C{reputation_score} and is never filed into Junk by the filter.

When every recipient was judged, the lowest probability also becomes
points in the transaction's L{SpamScore} (the C{X-Spam-*} headers): 0.5
is 0 points, C{junk_threshold} is the chain's junk score.  Each verdict
is recorded as the sender's reputation for that user.  Training happens
elsewhere: L{pymailer.spam.training}, from what users move into and out
of Junk.

Trusts: nothing in the message.  Parsing and SQLite run in the disk
thread pool; at most L{MAX_READ} bytes of the message are read.
"""

from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from pymailer.delivery.router import Local, Router
from pymailer.interfaces import IPolicyFactory
from pymailer.policy.decision import Decision
from pymailer.policy.pieces import _Piece
from pymailer.policy.verdict import JUNK, SpamScore, isSpamHeader, logVerdict
from pymailer.spam.db import HAM, SPAM, ClassifierDB, dbPath, probability
from pymailer.spam.tokens import tokenize
from pymailer.spam.training import MAX_READ

# Points never go below this for a message the filter thinks ham: one
# check's confidence should not cancel a blocklist listing on its own.
MIN_POINTS = -2.0


@dataclass(frozen=True)
class Judgement:
    """One recipient's verdict: C{probability} C{None} when untrained."""

    recipient: str
    probability: float = None
    knownSender: bool = False


def senderKeys(facts):
    """The C{(kind, value)}s a sender's reputation is kept under."""
    keys = []
    dkim = [r.domain.lower() for r in facts.notes.get("dkim", ()) if r.result == "pass"
            and r.domain]
    spf = facts.notes.get("spf")
    if facts.sender and (dkim or (spf is not None and spf.result == "pass")):
        # An envelope address anyone can forge counts only when verified.
        keys.append(("address", facts.sender.lower()))
    keys.extend(("dkim", d) for d in dict.fromkeys(dkim))
    if facts.clientAddress:
        keys.append(("ip", facts.clientAddress))
    return keys


def points(p, junkThreshold, junkScore):
    """A probability as spam points: 0.5 is 0, C{junkThreshold} is C{junkScore}."""
    return round(max(MIN_POINTS, (p - 0.5) / (junkThreshold - 0.5) * junkScore), 2)


class Classifier(_Piece):
    name = "classifier"

    def __init__(self, context, config, db, router, junkScore):
        super().__init__(context)
        self.config = config
        self.db = db
        self.router = router
        self.junkScore = junkScore

    @defer.inlineCallbacks
    def checkData(self, facts, message):
        if facts.authenticatedAs is not None:
            return None
        data = yield self._read(facts, message, MAX_READ)
        judgements = yield deferToThreadPool(
            self.context.reactor, self.context.threadpool, self._judge,
            data[:MAX_READ], list(facts.recipients), senderKeys(facts))
        return self._decide(facts, judgements, getattr(message, "queueId", None))

    def _judge(self, data, recipients, keys):
        """I{Blocking}: every local recipient's L{Judgement}; records reputation."""
        c = self.config
        tokens = tokenize(data)
        judgements = []
        for recipient in recipients:
            route = self.router.route(recipient)
            if not isinstance(route, Local) or not route.users:
                continue
            lowest, known = None, False
            for user in route.users:
                p = probability(self.db, user, tokens, c.min_training)
                if p is None:
                    # One untrained mailbox behind an alias: no verdict.
                    lowest = None
                    break
                lowest = p if lowest is None else min(lowest, p)
                history = self.db.senderHistory(user, keys).values()
                known = known or any(ham >= c.reputation_min and spam == 0
                                     for spam, ham in history)
                self.db.recordSender(user, keys, SPAM if p >= c.junk_threshold else HAM)
            judgements.append(Judgement(recipient, lowest, known))
        return judgements

    def _decide(self, facts, judgements, queueId):
        c = self.config
        judged = [j for j in judgements if j.probability is not None]
        junk = [j.recipient for j in judged
                if j.probability >= c.junk_threshold and not j.knownSender]
        for j in judged:
            action = ("pass" if j.knownSender or j.probability < c.junk_threshold
                      else "reject" if c.reject_threshold is not None
                      and j.probability >= c.reject_threshold else "junk")
            logVerdict(facts, self.name, action,
                       "classifier.known_sender" if j.knownSender else "classifier.bayes",
                       round(j.probability, 4), queueId, recipients=[j.recipient])
        if (c.reject_threshold is not None and judged and len(judged) == len(facts.recipients)
                and all(j.probability >= c.reject_threshold and not j.knownSender
                        for j in judged)):
            return Decision.reject(554, "5.7.1", "Message refused as spam", "classifier.reject")
        score = SpamScore.of(facts)
        if any(j.knownSender for j in judged):
            score.add(self.name, c.reputation_score, "classifier.known_sender")
        if judged and len(judged) == len(facts.recipients):
            lowest = min(j.probability for j in judged)
            score.add(self.name, points(lowest, c.junk_threshold, self.junkScore),
                      f"classifier.bayes({lowest:.3f})")
        if junk:
            return Decision.fileInto(JUNK, "classifier.junk", junk)
        return Decision.accept()

    def keepHeader(self, facts, field):
        return facts.authenticatedAs is not None or not isSpamHeader(field)


@implementer(IPolicyFactory)
class ClassifierFactory:
    name = "classifier"

    def build(self, context, options):
        config = context.config
        router = Router(context.directory, config.delivery.recipient_delimiter,
                        config.delivery.postmaster)
        return Classifier(context, config.policy.classifier,
                          ClassifierDB(dbPath(config.data_dir)), router,
                          config.policy.rules.junk_score)
