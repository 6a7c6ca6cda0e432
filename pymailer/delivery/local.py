"""
The local delivery agent (the MDA): from the queue into users' mailboxes.

It runs from the queue, never inside the SMTP reply, so a crash between the
250 and the mailbox loses nothing.  It prepends the RFC 5321 §4.4 trace
headers (``Return-Path:`` and ``Received:``) and writes through the store.
"""

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
    """
    return (returnPath(envelope) + receivedHeader(envelope, hostname, recipient.address)
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

    def _deliverAll(self, envelope, recipients, openData, recovering, routes):
        if routes is None:
            routes = [self.router.route(r.address) for r in recipients]
        return {
            r.index: self._deliverOne(envelope, r, route, openData, recovering)
            for r, route in zip(recipients, routes)
        }

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
