"""
The queue runner: takes accepted messages from the spool and hands their
recipients to a delivery agent, retrying with backoff.

Clock-driven (C{IReactorTime}, so tests use C{task.Clock}), kicked at once by
every commit to the spool, with a bounded active set.  The spool's claims
alternate between new and deferred mail so that neither starves the other
(Postfix's qmgr does the same).  It
knows the queue only as an L{pymailer.interfaces.ISpool}: claims, outcomes,
reschedules; where and how messages are kept is the spool's business.

A claim taken over from a process that stopped mid-delivery (killed, or
crashed, perhaps by this very message) is delivered again at once the first
time; from the second takeover in a row it backs off as retries do, after
C{max_takeovers} it is put on hold for the administrator, and past
C{max_queue_lifetime} it bounces: a message that kills the server cannot
kill every node in turn forever.
"""

import dataclasses

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pymailer.events import PROMETHEUS_ONLY
from pymailer.envelope import DELIVERED, FAILED, PENDING
from pymailer.queue.backoff import retryDelay
from pymailer.queue.model import takeoverHoldReason

# What a recipient fails with when no attempt ever came back (the agent
# raised, or the deliveries kept stopping) and the message's time is up.
NO_RESULT = "451 4.3.0 delivery agent error"
# RFC 3463 X.4.7: delivery time expired.
NO_OUTCOME_EXPIRED = ("451 4.4.7 its deliveries kept stopping without an outcome"
                      " ({n} taken over in a row)")


class QueueRunner(Service):
    """
    @ivar agent: the L{pymailer.interfaces.IDeliveryAgent} given every
        pending recipient (it routes them further).
    """

    log = Logger()
    # How often the deferred queue is looked at when nothing kicks us.
    scanInterval = 5.0
    # Seconds stopService waits for deliveries in flight.
    shutdownGrace = 5.0

    def __init__(self, spool, agent, queueConfig, reactor, threadpool, reporter=None,
                 events=None):
        self.spool = spool
        self.agent = agent
        # Sends delivery status notifications (L{pymailer.queue.notify}).
        self.reporter = reporter
        # Each recipient's outcome is recorded here (metrics, monitoring).
        self.events = events if events is not None else PROMETHEUS_ONLY
        # Every commit to the spool (SMTP, forwards, reports) wakes us, for
        # a look at new mail; None (a shared spool may have missed some):
        # a look at everything.
        spool.addListener(
            lambda queueId: reactor.callFromThread(self.kick, queueId is None))
        self.config = queueConfig
        self.reactor = reactor
        self.threadpool = threadpool
        self.active = {}
        self._scanCall = None
        self._scanning = None
        self._rescan = False
        self._rescanFull = False
        self._dueBacklog = False
        self._waitingFull = False

    def _inThread(self, f, *args, **kwargs):
        return deferToThreadPool(self.reactor, self.threadpool, f, *args, **kwargs)

    def startService(self):
        Service.startService(self)
        d = self._inThread(self.spool.recover)
        d.addCallback(self._recovered)
        d.addErrback(lambda f: self.log.failure("queue recovery failed", f))
        d.addBoth(lambda _: self.kick(full=True))

    def stopService(self):
        Service.stopService(self)
        if self._scanCall is not None and self._scanCall.active():
            self._scanCall.cancel()
        self._scanCall = None
        # Local deliveries finish in moments; a relay conversation with a
        # slow MX may take minutes (RFC 5321 timeouts).  Wait a little, then
        # cancel: a cancelled attempt is recorded as deferred, and anything
        # unrecorded is claimed again (recovered) once our claims are gone.
        d = defer.DeferredList(list(self.active.values()))
        d.addTimeout(self.shutdownGrace, self.reactor)
        d.addErrback(lambda f: f.trap(defer.CancelledError))
        return d

    def _recovered(self, removed):
        if removed:
            self.log.info(
                "removed {n} never-acknowledged spool files", n=len(removed)
            )

    def kick(self, full=False):
        """
        Look at the queue now, coalescing concurrent kicks.  A commit only
        needs a look at new mail; the timer (and start-up, and a backlog
        of due deferred mail) looks at every state.
        """
        if not self.running:
            return
        full = full or self._dueBacklog
        if self._scanning is not None:
            self._rescan = True
            self._rescanFull = self._rescanFull or full
            return
        room = self.config.max_active - len(self.active)
        if room <= 0:
            # No slot: the first delivery to finish looks again, at
            # everything this look would have seen (not only new mail).
            self._waitingFull = self._waitingFull or full
            return
        self._scanning = self._inThread(
            self.spool.claimDue, self.reactor.seconds(), room, newOnly=not full
        )
        self._scanning.addCallback(self._scanned, full, room)
        self._scanning.addErrback(lambda f: self.log.failure("queue scan failed", f))
        self._scanning.addBoth(self._scanDone)

    def _scanned(self, claims, full, room):
        # A full hand: more may be due, left for lack of room.
        more = len(claims) >= room
        if full:
            self._dueBacklog = more
        self._rescan = self._rescan or more
        self._startClaims(claims)

    def _scanDone(self, _):
        self._scanning = None
        if self._rescan and self.running:
            full, self._rescan, self._rescanFull = self._rescanFull, False, False
            self.kick(full)
        else:
            self._scheduleScan()

    def _scheduleScan(self):
        if self._scanCall is not None and self._scanCall.active():
            self._scanCall.cancel()
        if self.running:
            self._scanCall = self.reactor.callLater(self.scanInterval, self.kick, True)

    def _startClaims(self, claims):
        for claim in claims:
            d = self._deliver(claim)
            self.active[claim.queueId] = d

            def done(_, qid=claim.queueId):
                self.active.pop(qid, None)
                # The slot is free now: fill it at once, with due deferred
                # mail too if a look found no room for it, rather than at
                # the next scan interval.
                full, self._waitingFull = self._waitingFull, False
                self.kick(full)

            d.addBoth(done)

    def _expired(self, envelope):
        return self.reactor.seconds() >= envelope.receivedAt + self.config.max_queue_lifetime

    @defer.inlineCallbacks
    def _setAside(self, claim):
        """
        A claim taken over from a process that stopped mid-delivery, not to
        be delivered now: put on hold after C{max_takeovers} in a row, or
        deferred by the retry schedule from the second in a row.

        @return: a L{Deferred} firing C{True} if the claim was ended here.
        """
        n, qid = claim.takeovers, claim.queueId
        if n >= self.config.max_takeovers:
            reason = takeoverHoldReason(n)
            yield self._inThread(self.spool.holdClaimed, claim, reason)
            self.log.error("{qid}: on hold: {reason}", qid=qid, reason=reason)
            return True
        if n >= 2:
            delay = retryDelay(n - 1, self.config.retry_min, self.config.retry_max)
            yield self._inThread(self.spool.backOff, claim, self.reactor.seconds() + delay)
            self.log.warn(
                "{qid}: its delivery stopped {n} times in a row without an outcome;"
                " next attempt in {delay:.0f} s", qid=qid, n=n, delay=delay)
            return True
        return False

    def _notSetAside(self, failure, claim):
        # The claim stays as it is: it lapses, and is taken over again.
        self.log.failure("could not set {qid} aside", failure, qid=claim.queueId)
        return True

    @defer.inlineCallbacks
    def _deliver(self, claim):
        envelope = claim.envelope
        pending = envelope.pending()
        noResult = NO_RESULT
        if claim.takenOver and self._expired(envelope):
            # Never again through what may crash us: bounced unattempted.
            results = {}
            noResult = NO_OUTCOME_EXPIRED.format(n=claim.takeovers)
        elif claim.takenOver and (yield self._setAside(claim).addErrback(
                self._notSetAside, claim)):
            return
        else:
            try:
                results = yield self.agent.deliver(
                    envelope,
                    pending,
                    lambda: self.spool.openData(claim.queueId),
                    claim.recovered,
                )
            except Exception:
                self.log.failure("delivery agent failed for {qid}", qid=claim.queueId)
                results = {}
        updated, retryAt, events = self._applyResults(envelope, results, noResult)
        events += self._delayWarnings(updated, retryAt)
        if events and self.reporter is not None:
            try:
                updated = yield self._inThread(
                    self.reporter.report, updated, events,
                    lambda: self.spool.openData(claim.queueId),
                )
            except Exception:
                # Reports are retried with the message if it stays queued;
                # a report must never cost the message itself.
                self.log.failure("could not queue a delivery report for {qid}",
                                 qid=claim.queueId)
        try:
            if retryAt is None:
                yield self._inThread(self.spool.complete, claim)
            else:
                yield self._inThread(self.spool.reschedule, claim, updated, retryAt)
        except Exception:
            self.log.failure("could not record delivery state of {qid}", qid=claim.queueId)

    def _delayWarnings(self, envelope, retryAt):
        """A "delayed" report, once, for mail still pending past delay_warning."""
        if envelope.delayWarned or retryAt is None:
            return []
        if self.reactor.seconds() - envelope.receivedAt < self.config.delay_warning:
            return []
        return [("delayed", r) for r in envelope.pending()]

    def _applyResults(self, envelope, results, noResult=NO_RESULT):
        """
        @param noResult: the error of a recipient without a result.
        @return: the envelope with each recipient's new state, the time of
            the next attempt (C{None} once no recipient is pending), and the
            report-worthy events C{[(action, recipient)]} of this attempt.
        """
        now = self.reactor.seconds()
        expired = self._expired(envelope)
        recipients, events = [], []
        nextAttempt = None
        for r in envelope.recipients:
            if r.state != PENDING:
                if r.state == FAILED and not r.reported:
                    # Failed before this attempt but never reported: the
                    # report could not be queued then, or the administrator
                    # bounced it (``pymailer queue bounce``).
                    events.append(("failed", r))
                recipients.append(r)
                continue
            result = results.get(r.index)
            attempts = r.attempts + 1
            remote = result.remoteMTA if result is not None else None
            if result is not None and result.ok:
                r = dataclasses.replace(
                    r, state=DELIVERED, attempts=attempts, remoteMTA=remote,
                    lastError=result.describe(),
                )
                self._logOutcome(envelope, r, "delivered", result.describe())
                if not result.dsnPassedOn:
                    events.append(("relayed" if remote else "delivered", r))
            elif result is not None and not result.temporary:
                r = dataclasses.replace(
                    r, state=FAILED, attempts=attempts, lastError=result.describe(),
                    remoteMTA=remote,
                )
                self._logOutcome(envelope, r, "bounced", result.describe())
                events.append(("failed", r))
            else:
                reason = result.describe() if result else noResult
                if expired:
                    r = dataclasses.replace(
                        r, state=FAILED, attempts=attempts, lastError=reason
                    )
                    self._logOutcome(envelope, r, "expired", reason)
                    events.append(("failed", r))
                else:
                    retryAt = now + retryDelay(
                        attempts, self.config.retry_min, self.config.retry_max
                    )
                    r = dataclasses.replace(
                        r, attempts=attempts, nextAttempt=retryAt, lastError=reason
                    )
                    nextAttempt = retryAt if nextAttempt is None else min(nextAttempt, retryAt)
                    self._logOutcome(envelope, r, "deferred", reason)
            recipients.append(r)
        return envelope.withRecipients(recipients), nextAttempt, events

    def _logOutcome(self, envelope, recipient, status, detail):
        self.events.recipientOutcome(status, envelope, recipient, detail)
