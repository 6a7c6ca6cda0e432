"""
C{/metrics}: the Prometheus text exposition of L{pymailer.metrics}.

Served on the C{[listen] metrics} listener to whoever reaches it (the
operator keeps it on loopback or a private network), or, without one, on
the web listener to loopback clients only: the counters tell an outsider
how busy the server is and which logins fail.

Trust: the client address is the transport's; nothing from the request
is used.
"""

import ipaddress

from klein import Klein
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.threads import deferToThreadPool

from pymailer import metrics


def isLoopback(host):
    """Whether C{host} (the transport's peer address) is a loopback address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class MetricsPage:
    """
    Renders C{/metrics}.

    @param loopbackOnly: answer 404 to clients not on loopback.
    """

    def __init__(self, parts, loopbackOnly):
        self.reactor = parts.reactor
        self.threadpool = parts.threadpool
        self.registry = parts.metricsRegistry
        self.loopbackOnly = loopbackOnly

    def render(self, request):
        if self.loopbackOnly and not isLoopback(getattr(request.getClientAddress(), "host", "")):
            request.setResponseCode(404)
            return b"Not found\n"
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        # Queue sizes ask the spool (disk or database): never on the reactor.
        return deferToThreadPool(self.reactor, self.threadpool, metrics.render, self.registry)


class MetricsApp:
    """The routes of a C{[listen] metrics} listener: C{/metrics} only."""

    app = Klein()

    def __init__(self, parts):
        self.page = MetricsPage(parts, loopbackOnly=False)

    @app.route("/metrics", methods=["GET", "HEAD"])
    def metrics(self, request):
        return self.page.render(request)
