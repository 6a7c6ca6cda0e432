"""
The web listener's routes (Klein on twisted.web), and the builders the
composition root registers for the C{https}, C{http} (L{plainhttp}) and
C{metrics} listener roles.

The login, admin and account pages (L{admin}, L{account}) and their JSON
API (L{api}) share the listener: L{Paths} hands
their paths to them.  What else is served here needs no login: mail client autoconfig (Thunderbird)
and Autodiscover (Outlook), the MTA-STS policy, and C{/metrics} for
loopback clients.  Each concern's content lives in its own module
(L{autoconfig}, L{mtasts}, L{metrics}); this one maps URLs to them.

Trust: everything in a request (path, query, Host header, body) is the
client's.  Only a domain we serve gets an answer; any other gets the same
404 whatever the address, and no answer depends on whether a user exists.
The domain check reads the account directory in the thread pool.
"""

from klein import Klein
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.web.resource import Resource

from pymailer.web import account, api, autoconfig, monitoring, mtasts, plainhttp
from pymailer.web.admin import AdminApp
from pymailer.web.metrics import MetricsApp, MetricsPage
from pymailer.web.site import Upload, WebSite
from pymailer.web.webmail.app import PREFIX as WEBMAIL_PREFIX, WebmailApp
from pymailer.web.webmail.compose import PREFIX as COMPOSE_PREFIX, ComposeApp

XML = b"application/xml; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"
NOT_FOUND = b"Not found\n"

# Thunderbird asks https://autoconfig.DOMAIN/mail/config-v1.1.xml and
# https://DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml.
AUTOCONFIG_HOST_PREFIX = "autoconfig."
AUTOCONFIG_PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")


def _notFound(request):
    request.setResponseCode(404)
    request.setHeader(b"Content-Type", TEXT)
    return NOT_FOUND


def _host(request):
    """The Host header's name, without port, lower-cased."""
    return request.getRequestHostname().decode("ascii", "replace").rstrip(".").lower()


class WebApp:
    """
    The routes of the web listener.

    @param parts: the service's L{pymailer.service.Parts}.
    @param serveMetrics: answer C{/metrics} (to loopback clients).
    """

    app = Klein()

    def __init__(self, parts, serveMetrics):
        self.config = parts.config
        self.reactor = parts.reactor
        self.threadpool = parts.threadpool
        self.directory = parts.directory
        self.metricsPage = MetricsPage(parts, loopbackOnly=True) if serveMetrics else None

    def isLocal(self, domain):
        """A Deferred firing whether C{domain} is one we serve."""
        return deferToThreadPool(self.reactor, self.threadpool, self.directory.hasDomain, domain)

    # -- the front page --------------------------------------------------------

    @app.route("/", methods=["GET", "HEAD"])
    def front(self, request):
        """
        The listener's own address leads to the webmail (which asks for a
        login first): someone who opens https://HOST/ gets somewhere,
        not a 404.
        """
        request.setResponseCode(303)
        request.setHeader(b"Location", WEBMAIL_PREFIX.rstrip(b"/") + b"/")
        return b""

    # -- autoconfig -----------------------------------------------------------

    @app.route(AUTOCONFIG_PATHS[0], methods=["GET", "HEAD"])
    @app.route(AUTOCONFIG_PATHS[1], methods=["GET", "HEAD"])
    @defer.inlineCallbacks
    def autoconfig(self, request):
        address = request.args.get(b"emailaddress", [b""])[0].decode("utf-8", "replace")
        if address:
            domain = autoconfig.domainOf(address)
        else:
            # No address asked: the domain is the host's (autoconfig.DOMAIN
            # or DOMAIN itself for the .well-known URL).
            domain = _host(request).removeprefix(AUTOCONFIG_HOST_PREFIX)
        if not domain or not (yield self.isLocal(domain)):
            return _notFound(request)
        request.setHeader(b"Content-Type", XML)
        return autoconfig.clientConfig(self.config, domain)

    @app.route("/autodiscover/autodiscover.xml", methods=["POST"])
    @app.route("/Autodiscover/Autodiscover.xml", methods=["POST"])
    @defer.inlineCallbacks
    def autodiscover(self, request):
        try:
            address = autoconfig.autodiscoverAddress(
                request.content.read(autoconfig.MAX_REQUEST + 1))
        except autoconfig.BadRequest as e:
            request.setResponseCode(400)
            request.setHeader(b"Content-Type", TEXT)
            return f"Bad request: {e}\n".encode("ascii")
        domain = autoconfig.domainOf(address)
        if not domain or not (yield self.isLocal(domain)):
            return _notFound(request)
        request.setHeader(b"Content-Type", XML)
        return autoconfig.autodiscover(self.config, address)

    # -- MTA-STS --------------------------------------------------------------

    @app.route(mtasts.POLICY_PATH, methods=["GET", "HEAD"])
    @defer.inlineCallbacks
    def mtaSTS(self, request):
        # RFC 8461 §3.3: the policy is fetched over HTTPS only; over plain
        # HTTP it does not exist.
        host = _host(request)
        if not request.isSecure() or not host.startswith(mtasts.HOST_PREFIX):
            return _notFound(request)
        domain = host[len(mtasts.HOST_PREFIX):]
        if not domain or not (yield self.isLocal(domain)):
            return _notFound(request)
        request.setHeader(b"Content-Type", TEXT)
        return mtasts.policyText(self.config).encode("ascii")

    # -- metrics --------------------------------------------------------------

    @app.route("/metrics", methods=["GET", "HEAD"])
    def metrics(self, request):
        if self.metricsPage is None:
            return _notFound(request)
        return self.metricsPage.render(request)


class Paths(Resource):
    """
    The root of a web listener: a path under one of a route's prefixes
    goes to its resource (the first route that has it), any other to
    C{other}.  A leaf, so that each Klein app sees the whole path, as at
    the root.

    @param routes: C{[(prefixes, resource)]}.
    """

    isLeaf = True

    def __init__(self, routes, other):
        Resource.__init__(self)
        self.routes = [(tuple(prefixes), resource) for prefixes, resource in routes]
        self.other = other

    def render(self, request):
        path = request.path
        for prefixes, resource in self.routes:
            if any(path == p.rstrip(b"/") or path.startswith(p) for p in prefixes):
                return resource.render(request)
        return self.other.render(request)


# The paths of the login and admin pages.
ADMIN_PREFIXES = (b"/admin/", b"/login", b"/logout", b"/static/")


def buildWeb(role, parts):
    """The C{https} listener."""
    serveMetrics = parts.config.listen.metrics is None
    admin = AdminApp(parts)
    # /api/, /account/, /webmail/ and /admin/monitoring share the admin pages'
    # sessions and operations (one AdminApp).
    root = Paths([
        ((api.PREFIX,), api.APIApp(admin).app.resource()),
        ((account.PREFIX,), account.AccountApp(admin).app.resource()),
        ((COMPOSE_PREFIX,), ComposeApp(admin, parts).app.resource()),
        ((WEBMAIL_PREFIX,), WebmailApp(admin).app.resource()),
        ((monitoring.PREFIX,), monitoring.MonitoringApp(admin, parts.monitoring).app.resource()),
        (ADMIN_PREFIXES, admin.app.resource()),
    ], WebApp(parts, serveMetrics).app.resource())
    # The compose form carries attachments: up to the submission size
    # limit, from a logged-in user.
    return WebSite(root, parts.reactor, parts.config.web, uploads={
        COMPOSE_PREFIX: Upload(parts.config.smtp.max_message_size, admin.uploader)})


def buildPlainHTTP(role, parts):
    """
    The C{http} listener: redirects to HTTPS, but Thunderbird's autoconfig
    (L{pymailer.web.plainhttp}).
    """
    root = Paths([
        (tuple(p.encode("ascii") for p in AUTOCONFIG_PATHS),
         WebApp(parts, serveMetrics=False).app.resource()),
        ((plainhttp.ACME_CHALLENGE_PREFIX,), plainhttp.NotFound()),
    ], plainhttp.RedirectToHTTPS(parts.config))
    return WebSite(root, parts.reactor, parts.config.web)


def buildMetrics(role, parts):
    """The C{metrics} listener: C{/metrics} only, to any client."""
    return WebSite(MetricsApp(parts).app.resource(), parts.reactor, parts.config.web)
