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
        routes = yield deferToThreadPool(
            self.reactor, self.threadpool,
            lambda: [self.router.route(r.address) for r in recipients],
        )
        results, local, localRoutes, remote = {}, [], [], []
        for recipient, route in zip(recipients, routes):
            if isinstance(route, Reject):
                results[recipient.index] = DeliveryResult.permfail(
                    route.text, route.code, route.enhanced)
            elif isinstance(route, Local):
                local.append(recipient)
                localRoutes.append(route)
            else:
                remote.append(recipient)
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
