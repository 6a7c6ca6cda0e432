"""
The plain HTTP listener (C{[listen] http}, usually C{tcp:80}): every
request is answered with a 301 to the same path and query on HTTPS, but

  - Thunderbird's autoconfig paths, which Thunderbird also fetches over
    plain HTTP (from C{autoconfig.DOMAIN}): served here as over HTTPS
    (they hold no secret, and the client checks nothing else anyway);
  - C{/.well-known/acme-challenge/...}: the ACME http-01 challenges (RFC
    8555 §8.3) must be answered over plain HTTP, not redirected; 404
    until pymailer gets certificates itself.

Nothing else is served in clear: no login, no cookie, no MTA-STS policy
(RFC 8461 §3.3: HTTPS only; its redirect is never followed by senders).

Trust: the Host header and the path are the client's.  The redirect goes
to the host the client asked for (as any web server's does), provided it
is a host name or an address literal; otherwise to our own hostname.
"""

from __future__ import annotations

import re

from twisted.web.resource import Resource

from pymailer.policy.dnsrecords import endpointPort

ACME_CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"
HTTPS_PORT = 443
TEXT = b"text/plain; charset=utf-8"
# A DNS name, an IPv4 address or a bracketed IPv6 literal.
_HOST = re.compile(rb"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])\Z")


class NotFound(Resource):
    """404 for every path under it."""

    isLeaf = True

    def render(self, request):
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", TEXT)
        return b"Not found\n"


class RedirectToHTTPS(Resource):
    """
    A 301 to C{https://HOST[:PORT]/same/path?same=query}.

    @param config: the server's L{pymailer.config.Config}: the HTTPS port
        is the C{https} listener's (443 without one: HTTPS is then a
        proxy's), the fallback host its C{hostname}.
    """

    isLeaf = True

    def __init__(self, config):
        Resource.__init__(self)
        https = config.listen.https
        port = (endpointPort(https) if https else None) or HTTPS_PORT
        self.portSuffix = b"" if port == HTTPS_PORT else b":%d" % (port,)
        self.hostname = config.hostname.rstrip(".").encode("ascii")

    def location(self, request):
        host = request.getRequestHostname()
        if not _HOST.match(host):
            host = self.hostname
        # request.uri is the request target as sent: the path and the query.
        # An absolute-form target (RFC 9112 §3.2.2, for proxies) is not ours to follow.
        target = request.uri if request.uri.startswith(b"/") else b"/"
        return b"https://" + host + self.portSuffix + target

    def render(self, request):
        location = self.location(request)
        # RFC 9110 §15.4.2: 301 Moved Permanently, with Location.
        request.setResponseCode(301)
        request.setHeader(b"Location", location)
        request.setHeader(b"Content-Type", TEXT)
        return b"Moved to " + location + b"\n"
