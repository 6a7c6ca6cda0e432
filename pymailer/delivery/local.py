"""
The local delivery agent (the MDA): into users' mailboxes.

It delivers from the queue, and at the end of DATA for a message the intake
still holds in memory (L{LocalDeliveryAgent.deliverAtOnce}), before the 250:
either way the store's commit is durable before the message leaves the
sender's or the queue's hands, so a crash loses nothing.  It prepends the
RFC 5321 §4.4 trace headers (``Return-Path:`` and ``Received:``) and writes
through the store.
"""

import io
import time

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from pymailer.delivery.router import Local, Reject, Relay
from pymailer.delivery.trace import policyHeaders, receivedHeader, returnPath
from pymailer.envelope import DeliveryResult, Recipient
from pymailer.interfaces import IDeliveryAgent


def traceHeaders(envelope, recipient, hostname):
    """
    The C{Return-Path:} and C{Received:} lines for one local recipient, and
    what policy added below them.

    RFC 5321 §4.4: the FOR clause is optional and names one path.  It is
    given for a message with one recipient only (as Postfix does), so the
    copies of a message for several recipients are the same octets, which
    the store keeps once (content-addressed blobs).
    """
    forAddress = recipient.address if len(envelope.recipients) == 1 else None
    return (returnPath(envelope) + receivedHeader(envelope, hostname, forAddress)
            + policyHeaders(envelope))


@implementer(IDeliveryAgent)
class LocalDeliveryAgent:
    log = Logger()

    def __init__(self, store, router, hostname, reactor, threadpool, spool=None,
                 sealer=None):
        """
        @param spool: where copies for remote alias targets are queued (for
            the relay); C{None} when there is no relay.
        @param sealer: ARC-seals those copies
            (L{pymailer.policy.forwarding.ForwardSealer}), or C{None}.
        """
        self.sealer = sealer
        self.store = store
        self.spool = spool
        self.router = router
        self.hostname = hostname
        self.reactor = reactor
        self.threadpool = threadpool

    def deliver(self, envelope, recipients, openData, recovering, routes=None):
        """
        @param routes: the recipients' routes when the caller (the routing
            agent) has them already, in the order of C{recipients}; looked
            up here otherwise.
        """
        return deferToThreadPool(
            self.reactor,
            self.threadpool,
            self._deliverAll,
            envelope,
            recipients,
            openData,
            recovering,
            routes,
        )

    def deliverNow(self, envelope, recipients, openData, recovering, routes=None):
        """
        I{Blocking}, in a pool thread: L{deliver} for a caller that is in
        one already (the routing agent, which has just looked up the
        routes there), saving a hand-off.

        @return: C{{index: DeliveryResult}}.
        """
        return self._deliverAll(envelope, recipients, openData, recovering, routes)

    def deliverAtOnce(self, envelope, recipients, data, routes):
        """
        I{Blocking}, in a pool thread: deliver a message the intake has just
        received and still holds (C{data}), before its 250 and instead of
        queueing it (L{pymailer.intake}).  Each recipient's route is
        L{Local}, with mailboxes and no forwards (the intake sends the
        others to the queue).

        @return: C{{index: DeliveryResult}}; a recipient whose delivery
            failed, for whatever reason, has a temporary failure (the
            intake queues it: nothing accepted is lost).
        """
        return self._deliverAll(envelope, recipients, lambda: io.BytesIO(data), False, routes)

    def _deliverAll(self, envelope, recipients, openData, recovering, routes):
        """
        Each recipient's result.  A delivery that fails in a way nobody
        foresaw is that recipient's temporary failure, not everyone's: the
        results of those already delivered must reach the queue, or it
        delivers to them again.
        """
        if routes is None:
            routes = [self.router.route(r.address) for r in recipients]
        results = {}
        for recipient, route in zip(recipients, routes):
            try:
                results[recipient.index] = self._deliverOne(
                    envelope, recipient, route, openData, recovering)
            except Exception as e:
                self.log.failure("{qid}: delivery to <{to}> failed",
                                 qid=envelope.queueId, to=recipient.address)
                results[recipient.index] = DeliveryResult.tempfail(
                    f"mailbox unavailable: {e.__class__.__name__}")
        return results

    def _deliverOne(self, envelope, recipient, route, openData, recovering):
        if isinstance(route, Reject):
            return DeliveryResult.permfail(route.text, route.code, route.enhanced)
        if isinstance(route, Relay):
            return DeliveryResult.tempfail(
                "not a local address", code=451, enhanced="4.4.0"
            )
        assert isinstance(route, Local)
        prefix = traceHeaders(envelope, recipient, self.hostname)
        try:
            for n, user in enumerate(route.users):
                with openData() as source:
                    self._store(user, recipient.folder, prefix, source,
                                uniqueKey=f"{envelope.queueId}R{recipient.index}U{n}",
                                checkDuplicate=recovering)
        except OSError as e:
            self.log.error(
                "{qid}: mailbox write failed for <{to}>: {e}",
                qid=envelope.queueId,
                to=recipient.address,
                e=e,
            )
            return DeliveryResult.tempfail(f"mailbox unavailable: {e.strerror}")
        if route.forwards:
            if self.spool is None:
                self.log.warn(
                    "{qid}: <{to}> forwards to {fwd}: relaying is not available",
                    qid=envelope.queueId, to=recipient.address, fwd=", ".join(route.forwards),
                )
                if not route.users:
                    return DeliveryResult.tempfail(
                        "forwarding to other domains is not available", enhanced="4.4.0")
            else:
                self._forward(envelope, recipient, route.forwards, openData)
        return DeliveryResult.delivered(f"delivered to {len(route.users)} mailbox(es)")

    def _store(self, user, folder, prefix, source, **kwargs):
        """Into C{folder} (made if the user has none yet), else INBOX."""
        if folder:
            for attempt in range(2):
                try:
                    return self.store.deliver(user, prefix, source, mailbox=folder, **kwargs)
                except KeyError:
                    if attempt:
                        break
                    try:
                        self.store.createMailbox(user, folder)
                    except KeyError:
                        pass  # made meanwhile by another delivery
            self.log.warn("cannot file into {folder} of {user}: INBOX instead",
                          folder=folder, user=user)
        return self.store.deliver(user, prefix, source, **kwargs)

    def _forward(self, envelope, recipient, addresses, openData):
        """
        Queue a copy for remote alias targets, same sender, carrying what
        policy added (our Authentication-Results, a DKIM signature) under an
        ARC seal of the alias's domain when we have a key for it.  Blocking.
        """
        headers = policyHeaders(envelope)
        if self.sealer is not None:
            with openData() as source:
                headers = self.sealer.seal(
                    recipient.address.rpartition("@")[2], headers, source, envelope.size
                ) + headers
        with openData() as source:
            self.spool.inject(
                source, sender=envelope.sender,
                recipients=tuple(Recipient(i, a) for i, a in enumerate(addresses)),
                receivedAt=time.time(), session=envelope.session, body=envelope.body,
                smtputf8=envelope.smtputf8, headers=headers.decode("utf-8"),
            )
