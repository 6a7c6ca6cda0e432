"""
The one place where the server records what happened to mail and logins:
each method moves the Prometheus metric (L{pymailer.metrics}) and hands
one L{Event} to a sink (the persistent counters and recent log of
L{pymailer.monitoring}), so that C{/metrics} and C{/admin/monitoring}
count the same things.

The protocol code and the queue runner call an L{Events} they were given
(C{factory.events}, C{runner.events}, C{guard.events}); without one they
use L{PROMETHEUS_ONLY}, which moves the metrics and keeps nothing.

Every method runs on the reactor thread and only appends to memory: the
sink writes to disk later, in a thread.
"""

from dataclasses import dataclass

from twisted.logger import Logger

from pymailer import metrics

# The delivery log: one line per recipient and attempt, whoever made it
# (the queue runner, or the intake delivering at the end of DATA).
_deliveryLog = Logger(namespace="pymailer.delivery")

# Event kinds: the counters the monitoring page shows, in its order.
RECEIVED = "received"
DELIVERED = "delivered"
DEFERRED = "deferred"
BOUNCED = "bounced"
REJECTED = "rejected"
LOGIN_FAILED = "login_failed"
LOCKOUT = "lockout"
KINDS = (RECEIVED, DELIVERED, DEFERRED, BOUNCED, REJECTED, LOGIN_FAILED, LOCKOUT)

# The queue runner's outcomes -> our kinds: an expired message is bounced
# to its sender as a permanent failure is.
_OUTCOME_KINDS = {"delivered": DELIVERED, "deferred": DEFERRED, "bounced": BOUNCED,
                  "expired": BOUNCED}
# Bounds on what one event keeps of client-chosen text (addresses, replies).
MAX_FIELD = 500


@dataclass(frozen=True)
class Event:
    """
    One thing that happened.

    @ivar reason: for C{rejected}, the policy reason (C{"unknown_recipient"},
        C{"clamav.virus"}...); for deliveries the runner's outcome
        (C{"expired"}); for logins the protocol.
    @ivar recipient: the recipient, or the account of a failed login.
    """

    time: float
    kind: str
    reason: str = ""
    queueId: str = ""
    sender: str = ""
    recipient: str = ""
    clientIP: str = ""
    text: str = ""


def _clip(value):
    if value.__class__ is not str:
        value = "" if value is None else str(value)
    return value if len(value) <= MAX_FIELD else value[:MAX_FIELD] + "..."


class Events:
    """
    Records events: the Prometheus metric, and the sink's C{record(event)}.

    @param clock: gives the events' time (C{seconds()}); needed with a sink.
    @param sink: anything with C{record(Event)}, or C{None}.
    """

    def __init__(self, clock=None, sink=None):
        self.clock = clock
        self.sink = sink

    def _record(self, kind, reason="", queueId="", sender="", recipient="", clientIP="",
                text=""):
        if self.sink is not None:
            # Positional, without a dict of fields: two per message (issue 14).
            self.sink.record(Event(self.clock.seconds(), kind, _clip(reason), _clip(queueId),
                                   _clip(sender), _clip(recipient), _clip(clientIP),
                                   _clip(text)))

    def messageAccepted(self, listener, queueId, sender, recipients, clientIP):
        """A message queued after its data (the 250 reply)."""
        metrics.labelled(metrics.MESSAGES_ACCEPTED, listener).inc()
        self._record(RECEIVED, reason=listener, queueId=queueId, sender=sender,
                     recipient=", ".join(recipients), clientIP=clientIP,
                     text=f"queued as {queueId}")

    def deliveryOutcome(self, outcome, queueId, sender, recipient, clientIP, detail):
        """
        One recipient's delivery attempt: C{outcome} is the runner's
        C{delivered}, C{deferred}, C{bounced} or C{expired}.
        """
        metrics.labelled(metrics.DELIVERIES, outcome).inc()
        self._record(_OUTCOME_KINDS.get(outcome, outcome),
                     reason=outcome if outcome == "expired" else "", queueId=queueId,
                     sender=sender, recipient=recipient, clientIP=clientIP, text=detail)

    def recipientOutcome(self, outcome, envelope, recipient, detail):
        """
        L{deliveryOutcome} for C{recipient} of C{envelope}, and its line in
        the log, in the manner of Postfix's "to=<...>, status=..." so that
        operators can grep one format.
        """
        self.deliveryOutcome(outcome, envelope.queueId, envelope.sender, recipient.address,
                             envelope.session.clientAddress, detail)
        qid, to, n = envelope.queueId, recipient.address, recipient.attempts
        # Formatted here, once (as the mail log's records): the log
        # thread's formatting of "{record}" is a look-up, not a parse of
        # the format and five fields under the GIL (12 us per line).
        _deliveryLog.info(
            "{record}", record=f"{qid}: to=<{to}> status={outcome} attempts={n} ({detail})",
            qid=qid, to=to, status=outcome, n=n, detail=detail,
        )

    def rejected(self, reason, clientIP, sender=None, recipient=None, text=""):
        """An SMTP command refused by policy or for an unknown recipient."""
        metrics.REJECTIONS.labels(reason).inc()
        self._record(REJECTED, reason=reason, sender=sender, recipient=recipient,
                     clientIP=clientIP, text=text)

    def loginFailed(self, protocol, clientIP, account):
        metrics.AUTH_FAILURES.labels(protocol).inc()
        self._record(LOGIN_FAILED, reason=protocol, recipient=account, clientIP=clientIP,
                     text=f"{protocol} login failed")

    def lockedOut(self, kind, value, clientIP, account):
        """An address (C{kind} C{"ip"}) or account locked out after failed logins."""
        metrics.LOCKOUTS.labels(kind).inc()
        self._record(LOCKOUT, reason=kind, recipient=account, clientIP=clientIP,
                     text=f"{kind} {value} locked out")


# For parts built without a service (tests, the command line): metrics only.
PROMETHEUS_ONLY = Events()
