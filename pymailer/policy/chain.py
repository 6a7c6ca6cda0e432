"""
The policy chain: the configured pieces, run in order at each SMTP stage.

The first piece that refuses decides (later pieces are not asked); added
headers accumulate in order; the last folder named wins.  At the end of
data the chain writes the RFC 8601 Authentication-Results header from what
the pieces recorded, and, if a piece scored the message as spam, the
C{X-Spam-*} headers (filing it into Junk at C{junkScore}).  A piece that
fails with an exception costs a temporary refusal, never a bounce: a bug
in a plugin must not lose mail.

Like each piece (L{pymailer.interfaces.IPolicy}), each stage answers with a
L{Decision}, or a C{Deferred} of one only when a piece answers later (DNS,
a thread): the SMTP server handles both, and takes the answer at once when
there is one.
"""

from twisted.logger import Logger

from pymailer.policy.authresults import authenticationResults
from pymailer.limits import andThen
from pymailer.policy.decision import ACCEPTED, Decision, Policy
from pymailer.policy.verdict import SpamScore, logVerdict
from pymailer.steps import isDeferred


class PolicyChain:
    log = Logger()

    def __init__(self, pieces, authservId, junkScore=5.0):
        self.pieces = list(pieces)
        self.authservId = authservId
        self.junkScore = junkScore
        # Per stage, the pieces with something to say there: one that
        # keeps L{Policy}'s accept-all method is not asked (the filter of
        # forged Authentication-Results, in every chain, checks no stage).
        self._asked = {stage: [p for p in self.pieces if _checks(p, stage)]
                       for stage in _STAGES}

    @property
    def names(self):
        return [p.name for p in self.pieces]

    def checkConnect(self, facts):
        return self._run("checkConnect", facts)

    def checkHelo(self, facts):
        return self._run("checkHelo", facts)

    def checkMail(self, facts):
        return self._run("checkMail", facts)

    def checkRecipient(self, facts, recipient):
        return self._run("checkRecipient", facts, recipient)

    def checkUnknownRecipient(self, facts, recipient):
        return self._run("checkUnknownRecipient", facts, recipient)

    def checkData(self, facts, message):
        decision = self._run("checkData", facts, message)

        def withResults(decision):
            if decision.refuses:
                return decision
            if "spam" in facts.notes:
                score = SpamScore.of(facts)
                spam = score.decision(self.junkScore)
                if spam.folder is not None:
                    logVerdict(facts, "spam", "junk", spam.reason, score.total,
                               getattr(message, "queueId", None))
                decision = _merge(decision, spam)
            if not facts.authResults:
                return decision
            header = authenticationResults(self.authservId, facts.authResults)
            return _merge(Decision.addHeaders([header]), decision)

        return andThen(decision, withResults)

    def keepHeader(self, facts, field):
        # Asked for every header field of every message.
        for piece in self._asked["keepHeader"]:
            if not piece.keepHeader(facts, field):
                return False
        return True

    def _run(self, stage, facts, *args, start=0, combined=ACCEPTED):
        """
        Ask the pieces from C{start} on, in order.

        @return: the combined L{Decision} itself when every piece answers at
            once (a chain without pieces, checks answered from memory): no
            Deferred and no generator per stage of every message (issue 14);
            else a C{Deferred} firing with it, the pieces after the first
            that answers later being asked once it has.
        """
        pieces = self._asked[stage]
        for index in range(start, len(pieces)):
            piece = pieces[index]
            try:
                decision = getattr(piece, stage)(facts, *args)
            except Exception:
                return self._pieceFailed(piece, stage)
            if isDeferred(decision):
                def answered(decision, piece=piece, index=index, combined=combined):
                    refusal, combined = self._weigh(piece, stage, decision, combined)
                    if refusal is not None:
                        return refusal
                    return self._run(stage, facts, *args, start=index + 1, combined=combined)

                return decision.addCallbacks(
                    answered, lambda failure, piece=piece: self._pieceFailed(piece, stage, failure))
            refusal, combined = self._weigh(piece, stage, decision, combined)
            if refusal is not None:
                return refusal
        return combined

    def _weigh(self, piece, stage, decision, combined):
        """
        @return: C{(refusal, combined)}: the piece's refusing decision (or
            C{None}), and C{combined} with its accepting one merged in.
        """
        if decision is None:
            return None, combined
        if decision.refuses:
            self.log.info("policy {name} refused at {stage}: {reason} ({code} {text})",
                          name=piece.name, stage=stage, reason=decision.reason,
                          code=decision.code, text=decision.text)
            return decision, combined
        return None, _merge(combined, decision)

    def _pieceFailed(self, piece, stage, failure=None):
        """A piece that raised: logged, and a temporary refusal."""
        self.log.failure("policy {name} failed at {stage}", failure,
                         name=piece.name, stage=stage)
        # RFC 3463 §3.4: 4.3.5, system incorrectly configured.
        return Decision.tempfail(
            451, "4.3.5", "Temporary policy failure, try again later", f"{piece.name}.error")


_STAGES = ("checkConnect", "checkHelo", "checkMail", "checkRecipient",
           "checkUnknownRecipient", "checkData", "keepHeader")


def _checks(piece, stage):
    """Whether C{piece} has its own C{stage} method (not L{Policy}'s, which accepts)."""
    method = getattr(piece, stage, None)
    if method is None:
        # A plugin written before this stage existed has nothing to say.
        return False
    return getattr(method, "__func__", None) is not getattr(Policy, stage)


def _merge(first, second):
    """
    Accepting decisions combined: headers of both, the later folder; two
    pieces filing different recipients into the same folder file both.
    """
    if second.addsNothing:
        return first
    if first.addsNothing:
        return second
    folder, recipients = first.folder, first.recipients
    if second.folder is not None:
        if second.folder == folder and None not in (recipients, second.recipients):
            recipients = tuple(dict.fromkeys(recipients + second.recipients))
        else:
            folder, recipients = second.folder, second.recipients
    return Decision(
        headers=first.headers + second.headers,
        folder=folder, recipients=recipients,
        reason=",".join(r for r in (first.reason, second.reason) if r),
    )
