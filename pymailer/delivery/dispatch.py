"""
The queue's delivery agent: sends each recipient to the agent for its route
(local mailboxes or the relay), and merges their per-recipient results.
In maddy's words, the queue is just another delivery target.
"""

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from pymailer.delivery.router import Local, Reject
from pymailer.envelope import DeliveryResult
from pymailer.interfaces import IDeliveryAgent


@implementer(IDeliveryAgent)
class RoutingAgent:
    def __init__(self, router, local, relay, reactor, threadpool):
        self.router = router
        self.local = local
        self.relay = relay
        self.reactor = reactor
        self.threadpool = threadpool

    @defer.inlineCallbacks
    def deliver(self, envelope, recipients, openData, recovering):
        results, local, localRoutes, remote = yield deferToThreadPool(
            self.reactor, self.threadpool,
            self._routeAndDeliverLocally, envelope, recipients, openData, recovering)
        pending = []
        if local:
            # The routes go along: the local agent need not look them up again.
            pending.append(self.local.deliver(
                envelope, local, openData, recovering, routes=localRoutes))
        if remote:
            pending.append(self.relay.deliver(envelope, remote, openData, recovering))
        for partial in (yield defer.gatherResults(pending, consumeErrors=True)):
            results.update(partial)
        return results

    def _routeAndDeliverLocally(self, envelope, recipients, openData, recovering):
        """
        Blocking, in a pool thread: the route of each recipient, and the
        local deliveries at once when the local agent can make them in this
        thread (C{deliverNow}): one hand-off to the disk threads for a
        local message instead of two.

        @return: C{(results, local, localRoutes, remote)}: the results so
            far, and the local recipients still to deliver (with their
            routes) and the remote ones.
        """
        results, local, localRoutes, remote = {}, [], [], []
        for recipient in recipients:
            route = self.router.route(recipient.address)
            if isinstance(route, Reject):
                results[recipient.index] = DeliveryResult.permfail(
                    route.text, route.code, route.enhanced)
            elif isinstance(route, Local):
                local.append(recipient)
                localRoutes.append(route)
            else:
                remote.append(recipient)
        deliverNow = getattr(self.local, "deliverNow", None)
        if local and deliverNow is not None:
            results.update(deliverNow(envelope, local, openData, recovering,
                                      routes=localRoutes))
            local, localRoutes = [], []
        return results, local, localRoutes, remote
