"""
The HTTP plumbing every web listener shares: a request that carries the
security headers on every response (errors and 404s included), a channel
that joins its listener's L{pymailer.shutdown.Connections} (counted in the
metrics, closed at shutdown), and the C{Site} that ties them together.
"""

from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from pymailer.shutdown import Connections

# No page of ours loads anything from anywhere, runs script or may be
# framed; later pages that need more relax this for themselves.
CONTENT_SECURITY_POLICY = (b"default-src 'none'; frame-ancestors 'none'; "
                           b"base-uri 'none'; form-action 'none'")
SECURITY_HEADERS = (
    (b"Content-Security-Policy", CONTENT_SECURITY_POLICY),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
)
# RFC 6797: browsers keep to HTTPS for this host for a year.  Only sent over
# HTTPS (§7.2: a header over plain HTTP is ignored and would mislead).
HSTS = b"max-age=31536000"


class SecureRequest(Request):
    """A request whose response always carries L{SECURITY_HEADERS}."""

    def process(self):
        for name, value in SECURITY_HEADERS:
            self.setHeader(name, value)
        if self.isSecure():
            self.setHeader(b"Strict-Transport-Security", HSTS)
        return Request.process(self)


class TrackedChannel(HTTPChannel):
    """An HTTP connection that its listener counts and closes at shutdown."""

    def connectionMade(self):
        HTTPChannel.connectionMade(self)
        self.site.clients.opened(self)

    def connectionLost(self, reason):
        self.site.clients.closed(self)
        HTTPChannel.connectionLost(self, reason)

    def sayGoodbye(self):
        # HTTP has no goodbye message: a response being written is
        # finished, then the connection closes.
        self.loseConnection()


class WebSite(Site):
    """
    The C{Site} of one web listener.

    @ivar clients: its open connections (L{pymailer.service.listen} says
        goodbye to them).
    """

    protocol = TrackedChannel
    requestFactory = SecureRequest

    def __init__(self, resource, reactor):
        Site.__init__(self, resource, requestFactory=SecureRequest, reactor=reactor)
        # Never a traceback to a browser: they go to the log.
        self.displayTracebacks = False
        self.clients = Connections(reactor)
