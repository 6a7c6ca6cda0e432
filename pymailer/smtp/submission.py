"""
How a transaction's message reaches the queue, written once for every way
a message is submitted: the SMTP server (L{pymailer.smtp.server}) and the
webmail (L{pymailer.web.webmail.compose}).

The steps, in the order SMTP takes them (RFC 5321 3.3): the intake checks
the room and whether the user owns the sender (RFC 6409 4.1), the policy
chain judges the sender, each recipient is routed by the intake and judged
by the chain, the data streams through the chain's header filter into the
spool, the chain judges the whole message at the end of data (and, for an
authenticated user, DKIM signs it), and the intake commits the envelope
with what the chain added.  The SMTP server takes these steps one command
at a time (L{openMessage}, L{commitMessage}, L{envelope}); L{submit} takes
them all for a message that arrived whole.

Trust: the sender, recipients and octets are the user's; the checks here
are the same as for a submission over SMTP.
"""

from __future__ import annotations

import time

from twisted.internet import defer

from pymailer.envelope import Envelope, Recipient
from pymailer.policy.headerfilter import FilteredMessage, HeaderFilter
from pymailer.smtp.reply import SMTPReply
from pymailer.steps import runSteps

# RFC 1870 6.1 / RFC 3463 3.4: the message is over the size limit.
TOO_LARGE = SMTPReply(552, "5.3.4", "Message size exceeds fixed maximum message size")
# RFC 5321 4.5.3.1.10.
TOO_MANY_RECIPIENTS = SMTPReply(452, "4.5.3", "Error: too many recipients")
NO_RECIPIENTS = SMTPReply(554, "5.5.1", "Error: no valid recipients")


def judged(decision):
    """An accepting policy decision, or the refusal as an L{SMTPReply}."""
    if decision.refuses:
        raise SMTPReply(decision.code, decision.enhanced, decision.text)
    return decision


def openMessage(intake, policy, facts):
    """The spool writer whose header section passes the chain's filter."""
    return FilteredMessage(
        intake.openMessage(), HeaderFilter(lambda field: policy.keepHeader(facts, field)))


def envelope(queueId, sender, recipients, decision, session, size, body="7BIT",
             smtputf8=False, dsnRet=None, dsnEnvid=None):
    """
    The envelope to queue, with what policy added and where it files.

    @param recipients: C{[(address, notify, orcpt)]}.
    """
    filed = decision.recipients
    return Envelope(
        queueId=queueId,
        sender=sender,
        recipients=tuple(
            Recipient(index=i, address=a, notify=notify, orcpt=orcpt,
                      folder=decision.folder if filed is None or a in filed else None)
            for i, (a, notify, orcpt) in enumerate(recipients)
        ),
        receivedAt=time.time(),
        session=session,
        size=size,
        body=body,
        smtputf8=smtputf8,
        dsnRet=dsnRet,
        dsnEnvid=dsnEnvid,
        headers=b"".join(decision.headers).decode("utf-8"),
    )


def commitMessage(message, checkData, judge, envelopeFor):
    """
    The end of data: the header filter's rest written, the chain's
    judgement of the whole message (C{checkData(message)}, a Deferred
    decision; C{judge(decision)} raises on a refusal), and the envelope
    C{envelopeFor(decision)} committed.

    @return: a Deferred of the committed L{Envelope} (the steps before
        the commit run at once while they answer at once: L{runSteps}).
    @raise SMTPReply: the refusal, when the chain answered at once.
    """
    return runSteps(message.finish(), lambda _: checkData(message), judge, envelopeFor,
                    message.commit)


@defer.inlineCallbacks
def submit(intake, policy, facts, limits, session, sender, recipients, octets,
           body="7BIT", smtputf8=False):
    """
    Queue a whole message (C{octets}) from C{sender} to C{recipients} as an
    SMTP submission of it would: the same intake and chain calls, in the
    same order.  C{facts} is the session's (C{authenticatedAs} set).

    @param limits: the C{[smtp]} limits (C{max_message_size},
        C{max_recipients}).
    @return: a Deferred of the queued L{Envelope}.
    @raise SMTPReply: the refusal (the text an SMTP client would get).
    """
    if not recipients:
        raise NO_RECIPIENTS
    if len(recipients) > limits.max_recipients:
        raise TOO_MANY_RECIPIENTS
    if len(octets) > limits.max_message_size:
        raise TOO_LARGE
    yield intake.checkCapacity(len(octets))
    yield intake.validateSender(session, sender, {})
    facts.newTransaction()
    facts.sender = sender
    judged((yield policy.checkMail(facts)))
    for recipient in recipients:
        yield intake.validateRecipient(session, sender, recipient, len(octets))
        judged((yield policy.checkRecipient(facts, recipient)))
        facts.recipients.append(recipient)
    message = openMessage(intake, policy, facts)
    facts.size = len(octets)
    try:
        yield message.write(octets)
        queued = yield commitMessage(
            message, lambda m: policy.checkData(facts, m), judged, lambda decision: envelope(
            message.queueId, sender, [(r, None, None) for r in recipients], decision,
            session, len(octets), body, smtputf8))
    except BaseException:
        message.abort()
        raise
    return queued
