"""
The HTTP plumbing every web listener shares: a request that carries the
security headers on every response (errors and 404s included) and refuses
a body over L{MAX_BODY}, a channel that joins its listener's
L{pymailer.shutdown.Connections} (counted in the metrics, closed at
shutdown), and the C{Site} that ties them together within the C{[web]}
connection limits (L{pymailer.connlimit}).

Trust: nothing a client sends.  Twisted caps the request line and headers
but not the body: past 100 KB it spools to a temporary file without limit,
and a form body is then parsed into C{request.args} in memory.  So the
body is refused (413) as soon as its Content-Length says it is too large,
or as soon as what has come (chunked) is.  An upload path's larger limit
is for logged-in users only: the session is looked up as the body starts
to arrive, and a client without one is cut off (403) once past
L{MAX_BODY}, rather than spooling up to the upload limit to disk on every
connection it opens; a logged-in user sends at most C{[web]
max_uploads_per_user} such bodies at once (429 for more, counted across
worker processes: L{UploadSlots}), rather than one on each of the
listener's connections.  Twisted reads the whole body before the
resource renders, so these checks act while it arrives (from
C{gotLength}); a body that is whole before they answer waits for them.
"""

from dataclasses import dataclass
from io import BytesIO
from typing import Callable

from twisted.internet.defer import succeed
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from pymailer.connlimit import LimitedFactory
from pymailer.shutdown import Connections

log = Logger()

# The largest request body read: our forms are a few hundred bytes, an
# Autodiscover request needs 16 KiB (L{pymailer.web.autoconfig.MAX_REQUEST}).
MAX_BODY = 64 * 1024
# RFC 9110 §15.5.14 (413 Content Too Large): the server may close the
# connection after it, which we do (Connection: close, RFC 9112 §9.6).
CONTENT_TOO_LARGE = b"Request body too large\n"
# An upload from a client that is not logged in (or no longer).
LOG_IN_TO_UPLOAD = b"Log in to send files (your session may have expired).\n"
# RFC 6585 4: 429 Too Many Requests, with a Retry-After (RFC 9110 10.2.3,
# seconds) after which one of the user's uploads has likely ended.
TOO_MANY_UPLOADS = (b"You are sending too many files at once: wait for the others"
                    b" to finish, then try again.\n")
UPLOAD_RETRY_AFTER = 10
# The scope under which the shared limit store counts each user's uploads
# (L{UploadSlots}): not a listener's role.
UPLOADS_SCOPE = "web-uploads"
# Seconds a refused client may go on sending (read and dropped) before
# the connection is cut.
LINGER = 5
# A request must come at a pace (Apache's mod_reqtimeout): its request
# line and headers within HEADER_TIMEOUT seconds of its first byte, its
# body within BODY_GRACE seconds plus one second per MIN_BODY_RATE octets.
# Twisted's own timeout is for silence only: a client sending a byte every
# 50 seconds kept a connection (of the listener's limited number) forever.
HEADER_TIMEOUT = 30
BODY_GRACE = 30
MIN_BODY_RATE = 1000
TOO_SLOW = b"Request not received in time\n"
# Twisted reads a request line or a header line of at most MAX_LENGTH
# (16 KiB) octets and the request line with its headers within
# totalHeadersSize (16 KiB); past them it closed without a word (a line) or
# with a bare 400.  We answer what RFC 9110 15.5.15 (414 URI Too Long) and
# RFC 6585 5 (431 Request Header Fields Too Large) name, and close.
URI_TOO_LONG = b"URI Too Long\n"
HEADERS_TOO_LARGE = b"Request header fields too large\n"
BAD_REQUEST = b"Bad request\n"

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


def _response(status, text, headers=()):
    """
    A whole HTTP/1.1 response (bytes) that tells the client we close,
    with L{SECURITY_HEADERS} as every other response, and C{headers}.
    """
    return (b"HTTP/1.1 " + status + b"\r\n"
            + b"".join(name + b": " + value + b"\r\n"
                       for name, value in SECURITY_HEADERS + tuple(headers)) +
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: " + str(len(text)).encode("ascii") + b"\r\n"
            b"Connection: close\r\n\r\n" + text)


class SecureRequest(Request):
    """
    A request whose response always carries L{SECURITY_HEADERS}, and whose
    body is refused past C{maxBody} bytes.
    """

    maxBody = MAX_BODY
    _received = 0
    _refused = False
    _length = None
    # An upload's check (its user, then a slot) has not answered yet.
    _checking = False
    # The request line of a body that came whole while the check was
    # still asking: processed once it has answered.
    _waiting = None

    def _upload(self):
        """
        The L{Upload} of an upload path (L{WebSite.uploads}), or C{None}.
        The request line is all that is known when the length is: Twisted
        keeps its target on the channel (C{_path}) until the request is
        made.
        """
        target = getattr(self.channel, "_path", b"") or b""
        uploads = getattr(getattr(self.channel, "site", None), "uploads", None) or {}
        return uploads.get(target.split(b"?", 1)[0])

    def gotLength(self, length):
        upload = self._upload()
        self._length = length
        # A body within the plain limit needs no permission (and no look
        # at the session: a GET's or a small form's).
        if upload is not None and (length is None or length > MAX_BODY):
            # An upload: its resource parses the body (in a thread), not
            # Twisted (in requestReceived, on the reactor, keeping only
            # values: the file names would be lost).
            self._parsePOSTFormSubmission = False
            # The larger limit meanwhile; taken back if the client turns
            # out not to be logged in (a cookie-less one at once: the
            # check then answers before returning).
            self.maxBody = upload.limit
            self._checking = True
            slots = self.channel.site.uploadSlots
            upload.uploader(self).addErrback(self._checkFailed).addCallback(
                self._uploadChecked, slots)
            if self._refused:
                return
        if length is not None and length > self.maxBody:
            # Refuse before a byte of the body is read, and before the
            # channel says "100 Continue" to a client that asked.
            self.requestHeaders.removeHeader(b"Expect")
            self._refuse()
            return
        Request.gotLength(self, length)

    def _checkFailed(self, failure):
        log.failure("looking up the session of an upload", failure)
        return None  # as for no session: a client we cannot vouch for

    def _uploadChecked(self, user, slots):
        if self._refused or self._disconnected:
            return
        if user is None:
            self.maxBody = MAX_BODY
            if self._received > MAX_BODY or (self._length or 0) > MAX_BODY:
                self.requestHeaders.removeHeader(b"Expect")
                self._refuse(b"403 Forbidden", LOG_IN_TO_UPLOAD)
                return
            self._checked()
            return
        slots.take(user).addCallback(self._slotAnswered)

    def _slotAnswered(self, release):
        """
        C{release} frees the upload slot taken for this request (L{UploadSlots.take}),
        held until the request ends (answered, or the connection lost);
        C{None}: the user has as many uploads going as allowed (429).
        """
        if release is None:
            if not (self._refused or self._disconnected):
                self.requestHeaders.removeHeader(b"Expect")
                self._refuse(b"429 Too Many Requests", TOO_MANY_UPLOADS,
                             ((b"Retry-After", b"%d" % UPLOAD_RETRY_AFTER),))
            return
        if self._disconnected:
            # Gone while the slot was asked for (notifyFinish would never fire).
            release()
            return
        self.notifyFinish().addBoth(lambda _: release())
        self._checked()

    def _checked(self):
        """The upload may go on; a body already whole is processed now."""
        self._checking = False
        if self._waiting is not None and not self._refused:
            requestLine, self._waiting = self._waiting, None
            Request.requestReceived(self, *requestLine)

    def handleContentChunk(self, data):
        if self._refused:
            return  # what was on the wire before the close; dropped
        self._received += len(data)
        if self._received > self.maxBody:
            # Chunked (or a lying Content-Length): refused once over.
            self._refuse()
            return
        Request.handleContentChunk(self, data)

    def _refuse(self, status=b"413 Content Too Large", text=CONTENT_TOO_LARGE, headers=()):
        """Answer C{status} and close: nothing more of the body is read or kept."""
        self._refused = True
        if self.content is not None:
            self.content.close()  # a spooled temporary file goes now
        self.content = BytesIO()
        self.channel.refuseAndClose(_response(status, text, headers))

    def requestReceived(self, command, path, version):
        # A refused body that ended within the data already read must not
        # be answered a second time.
        if self._refused:
            return
        if self._checking:
            # The whole body came before the upload check answered (a
            # loopback client, a slow session store): it waits for the
            # answer, so that a client over its uploads or not logged in
            # is refused however fast it sends.  The channel keeps what
            # comes meanwhile (it is handling this request).
            self._waiting = (command, path, version)
            return
        Request.requestReceived(self, command, path, version)

    def process(self):
        for name, value in SECURITY_HEADERS:
            self.setHeader(name, value)
        if self.isSecure():
            self.setHeader(b"Strict-Transport-Security", HSTS)
        return Request.process(self)


@dataclass(frozen=True)
class Upload:
    """
    A path whose body may be larger than L{MAX_BODY}.

    @ivar limit: its body limit.
    @ivar uploader: C{uploader(request)} -> a Deferred of the user who may
        send that much (a logged-in user), or C{None}; called when the
        headers are in, with the cookies parsed.
    """

    limit: int
    uploader: Callable


class UploadSlots:
    """
    The uploads each user is sending (L{Upload} bodies over L{MAX_BODY}):
    at most C{perUser} at once.  Each one holds up to its limit in a
    spooled file and a connection; a user (or a stolen session) with one
    per connection could hold the listener's whole connection limit times
    the upload limit.  Only users with uploads going are kept.

    Counted in this process, and, with several worker processes (or
    nodes), in the shared limit store too (C{shared}, the
    L{pymailer.connlimit.SharedConnections} the listener counts its
    connections in, as the scope L{UPLOADS_SCOPE} with the user as the
    address): a user's uploads land on any worker.  If the shared store
    cannot be reached, this process's count alone decides.
    """

    shared = None

    def __init__(self, perUser):
        self.perUser = perUser
        self._counts = {}

    def take(self, user):
        """
        One more of C{user}'s uploads, if allowed.

        @return: a Deferred firing with a callable that frees the slot
            (call it once, when the upload ends), or with C{None} when
            C{user} has C{perUser} going.
        """
        count = self._counts.get(user, 0)
        if count >= self.perUser:
            return succeed(None)
        self._counts[user] = count + 1
        if self.shared is None:
            return succeed(lambda: self._give(user))
        shared = self.shared

        def answered(counted):
            if counted is False:
                self._give(user)
                return None

            def release():
                self._give(user)
                if counted is True:  # not when the store failed
                    shared.release(UPLOADS_SCOPE, user)
            return release
        answer = shared.admit(UPLOADS_SCOPE, user, self.perUser)
        return (succeed(answer) if answer is True else answer).addCallback(answered)

    def _give(self, user):
        """One of C{user}'s uploads has ended."""
        count = self._counts.pop(user) - 1
        if count:
            self._counts[user] = count


class TrackedChannel(HTTPChannel):
    """
    An HTTP connection that its listener counts and closes at shutdown,
    and that answers 408 and closes when a request comes too slowly
    (L{HEADER_TIMEOUT}, L{BODY_GRACE}, L{MIN_BODY_RATE}), 414 or 431 when
    its request line or headers are too long, and every other malformed
    request a 400 that carries L{SECURITY_HEADERS} too.
    """

    _lingering = None
    # What is awaited: "headers", "body", or None (a response, or nothing).
    _awaiting = None
    _since = 0.0
    _bodyReceived = 0
    _deadline = None

    def dataReceived(self, data):
        if self._awaiting is None:
            self._await("headers")
        elif self._awaiting == "body":
            self._bodyReceived += len(data)
        HTTPChannel.dataReceived(self, data)

    def _readingRequestLine(self):
        # HTTPChannel keeps the parsed request line (_path, as
        # SecureRequest._upload reads) until the request is whole.
        return getattr(self, "_path", None) is None

    def lineLengthExceeded(self, line):
        # LineReceiver's own just closes (no answer at all).
        if self._readingRequestLine():
            self.refuseAndClose(_response(b"414 URI Too Long", URI_TOO_LONG))
        else:
            self.refuseAndClose(_response(b"431 Request Header Fields Too Large",
                                          HEADERS_TOO_LARGE))

    def lineReceived(self, line):
        # HTTPChannel's check of totalHeadersSize, answered as RFC 6585 5 says.
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuseAndClose(_response(b"431 Request Header Fields Too Large",
                                          HEADERS_TOO_LARGE))
            return
        HTTPChannel.lineReceived(self, line)

    def headerReceived(self, line):
        if self._receivedHeaderCount >= self.maxHeaders:
            self.refuseAndClose(_response(b"431 Request Header Fields Too Large",
                                          HEADERS_TOO_LARGE))
            return False
        return HTTPChannel.headerReceived(self, line)

    def _respondToBadRequestAndDisconnect(self):
        # Twisted's (named so in 26.10) writes a bare status line, without
        # the security headers every other answer has, and closes with what
        # the client sent unread (a RST may destroy the answer).
        self.refuseAndClose(_response(b"400 Bad Request", BAD_REQUEST))

    def allHeadersReceived(self):
        HTTPChannel.allHeadersReceived(self)
        if self._awaiting == "headers":
            self._await("body")

    def allContentReceived(self):
        self._await(None)
        HTTPChannel.allContentReceived(self)

    def _await(self, what):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._awaiting, self._deadline = what, None
        if what is not None:
            self._since, self._bodyReceived = self.site.reactor.seconds(), 0
            self._checkPace()

    def _checkPace(self):
        if self._awaiting == "headers":
            limit = self._since + HEADER_TIMEOUT
        else:
            limit = self._since + BODY_GRACE + self._bodyReceived / MIN_BODY_RATE
        now = self.site.reactor.seconds()
        if now < limit:
            self._deadline = self.callLater(limit - now, self._checkPace)
            return
        # RFC 9110 15.5.9: 408, and the connection closes.
        self._awaiting = self._deadline = None
        self.refuseAndClose(_response(b"408 Request Timeout", TOO_SLOW))

    def refuseAndClose(self, response):
        """
        Write C{response} and close once the client has read it.  What the
        client still sends is read and dropped meanwhile (Apache's
        lingering close): closing with unread input makes TCP send a RST,
        which can destroy the response before the client reads it.  The
        client closes on the response; one that goes on sending is cut off
        after L{LINGER} seconds.
        """
        self._await(None)
        self.transport.write(response)
        # What was read but not parsed yet (the rest of a bad request) is
        # dropped too: nothing more of it reaches the request.
        self.clearLineBuffer()
        self.dataReceived = self._drop
        self.setTimeout(None)
        self._lingering = self.callLater(LINGER, self.transport.abortConnection)

    def _drop(self, data):
        pass

    def connectionMade(self):
        HTTPChannel.connectionMade(self)
        self.site.clients.opened(self)

    def connectionLost(self, reason):
        for call in (self._lingering, self._deadline):
            if call is not None and call.active():
                call.cancel()
        self.site.clients.closed(self)
        self.site.connectionClosed(self.peerHost)
        HTTPChannel.connectionLost(self, reason)

    def sayGoodbye(self):
        # HTTP has no goodbye message: a response being written is
        # finished, then the connection closes.
        self.loseConnection()


class WebSite(LimitedFactory, Site):
    """
    The C{Site} of one web listener, within connection C{limits}
    (L{pymailer.config.WebConfig}), its uploads within
    C{limits.max_uploads_per_user}.

    @ivar clients: its open connections (L{pymailer.service.listen} says
        goodbye to them).
    """

    protocol = TrackedChannel
    requestFactory = SecureRequest

    def __init__(self, resource, reactor, limits, uploads=None):
        Site.__init__(self, resource, requestFactory=SecureRequest, reactor=reactor)
        # Path -> the L{Upload} limit of that path (the webmail's compose
        # form: the submission size limit, for logged-in users).
        self.uploads = dict(uploads or {})
        self.uploadSlots = UploadSlots(limits.max_uploads_per_user)
        LimitedFactory.__init__(self, limits)
        # Never a traceback to a browser: they go to the log.
        self.displayTracebacks = False
        self.clients = Connections(reactor)

    def shareCounts(self, shared, scope):
        LimitedFactory.shareCounts(self, shared, scope)
        self.uploadSlots.shared = shared

    def refusal(self, reason):
        # Written at connect, before the request is read: a whole response,
        # so that a browser or curl shows it.  Refusal writes the body's
        # last CRLF.
        return _response(b"503 Service Unavailable", reason.encode("ascii") + b"\r\n")[:-2]

    def buildSession(self, addr):
        channel = Site.buildProtocol(self, addr)
        channel.peerHost = getattr(addr, "host", str(addr))
        return channel
