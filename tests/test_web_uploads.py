"""
The per-user bound on webmail uploads (L{pymailer.web.site.UploadSlots}):
a web listener driven through string transports, with the session check's
answer given at once or held by the test, in one process or in two
"processes" sharing one limit store.  The bound must hold however fast a
body comes: Twisted reads the whole body before the resource renders.
"""

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from pymailer.config import WebConfig
from pymailer.connlimit import SharedConnections
from pymailer.limits import SQLiteLimits
from pymailer.testing import ClockReactor, SynchronousThreadPool
from pymailer.web.site import UPLOAD_RETRY_AFTER, MAX_BODY, Upload, WebSite

UPLOAD_PATH = b"/upload"
BIG = 20 * 1024 * 1024
GONE = Failure(ConnectionDone())


class Recorder(Resource):
    """Answers every POST with 200, and remembers it."""

    isLeaf = True

    def __init__(self):
        Resource.__init__(self)
        self.rendered = []

    def render_POST(self, request):
        self.rendered.append(request.content.read())
        return b"sent\n"


class Sessions:
    """The uploader check: answers at once, or when the test says (C{held})."""

    def __init__(self):
        self.hold = False
        self.held = []

    def uploader(self, request):
        user = request.getCookie(b"user")
        user = user.decode() if user else None
        if not self.hold:
            return defer.succeed(user)
        d = defer.Deferred()
        self.held.append((d, user))
        return d

    def answer(self):
        for d, user in self.held:
            d.callback(user)
        self.held = []


def webListener(perUser=2, shared=None):
    sessions, recorder = Sessions(), Recorder()
    site = WebSite(recorder, ClockReactor(), WebConfig(max_uploads_per_user=perUser),
                   uploads={UPLOAD_PATH: Upload(BIG * 2, sessions.uploader)})
    if shared is not None:
        site.shareCounts(shared, "https")
    return site, sessions, recorder


def post(site, user, length, body=b"", port=[40000]):
    """Open a connection to C{site} and send a POST of C{length} octets, C{body} of them."""
    port[0] += 1
    channel = site.buildProtocol(IPv4Address("TCP", "192.0.2.1", port[0]))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST " + UPLOAD_PATH + b" HTTP/1.1\r\nHost: x\r\n"
                         b"Cookie: user=" + user.encode() + b"\r\n"
                         b"Content-Type: multipart/form-data; boundary=B\r\n"
                         b"Content-Length: %d\r\n\r\n" % length + body)
    return channel, transport


def status(transport):
    value = transport.value()
    return int(value.split(b" ", 2)[1]) if value else None


def test_third_upload_refused_while_two_are_going():
    """
    A user sending two large uploads gets 429 with Retry-After for a
    third, while the body is still coming (nothing rendered); another
    user's goes on; once one of the two ends, the user may upload again.
    Otherwise one user (or a stolen session) holds the upload limit on
    each of the connections an address may open.
    """
    site, _, recorder = webListener()
    held = [post(site, "bob", BIG, b"a" * 100_000) for _ in range(2)]
    _, third = post(site, "bob", BIG, b"a" * 100_000)
    assert third.value().startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"\r\nRetry-After: %d\r\n" % UPLOAD_RETRY_AFTER in third.value()
    assert b"\r\nX-Content-Type-Options: nosniff\r\n" in third.value()
    body = b"x" * (MAX_BODY * 2)
    _, alice = post(site, "alice", len(body), body)
    assert status(alice) == 200
    assert [status(t) for _, t in held] == [None, None]
    held[0][0].connectionLost(GONE)
    _, again = post(site, "bob", len(body), body)
    assert status(again) == 200
    assert recorder.rendered == [body, body]


def test_whole_body_before_the_check_waits_for_it():
    """
    A body that has come whole before the session check answers (a fast
    client, a slow session store) is not processed until it has: a user
    with two uploads going gets 429 for it, not the page; a user without
    gets the page, once.  Before, such a body skipped the check, so the
    bound held only for slow clients (and a test under load saw the
    page's 400 instead of 429).
    """
    site, sessions, recorder = webListener()
    sessions.hold = True
    held = [post(site, "bob", BIG, b"a" * 100_000) for _ in range(2)]
    sessions.answer()
    body = b"x" * (MAX_BODY * 2)
    _, fast = post(site, "bob", len(body), body)
    _, other = post(site, "carol", len(body), body)
    assert (status(fast), status(other)) == (None, None)
    assert recorder.rendered == []
    sessions.answer()
    assert status(fast) == 429
    assert status(other) == 200
    assert recorder.rendered == [body]
    assert [status(t) for _, t in held] == [None, None]


def test_not_logged_in_whole_body_refused_after_the_check():
    """
    A large body from a client without a session, come whole before the
    check answered, gets 403 and is never processed: the larger limit is
    for logged-in users only, however fast the body comes.
    """
    site, sessions, recorder = webListener()
    sessions.hold = True
    body = b"x" * (MAX_BODY * 2)
    _, anonymous = post(site, "", len(body), body)
    sessions.answer()
    assert status(anonymous) == 403
    assert recorder.rendered == []


def test_connection_gone_before_the_check_frees_the_slot():
    """
    A client that goes while its session is looked up takes no slot (or
    gives it back at once): otherwise a user whose uploads were cut off
    early could not upload again.
    """
    site, sessions, recorder = webListener(perUser=1)
    sessions.hold = True
    channel, _ = post(site, "bob", BIG, b"a" * 1000)
    channel.connectionLost(GONE)
    sessions.answer()
    sessions.hold = False
    body = b"x" * (MAX_BODY * 2)
    _, again = post(site, "bob", len(body), body)
    assert status(again) == 200


def sharedStore(tmp_path):
    """The counts of one more process on the store in C{tmp_path}."""
    store = SQLiteLimits(tmp_path / "limits.sqlite")
    return SharedConnections(store, ClockReactor(), SynchronousThreadPool())


def test_bound_holds_across_worker_processes(tmp_path):
    """
    With two worker processes sharing the limit store, a user with one
    upload going on each gets 429 for a third on either, and one that
    ends frees a slot for both: otherwise with N workers the bound of 2
    meant 2N.
    """
    one, _, _ = webListener(shared=sharedStore(tmp_path))
    two, _, recorder = webListener(shared=sharedStore(tmp_path))
    first, _ = post(one, "bob", BIG, b"a" * 100_000)
    post(two, "bob", BIG, b"a" * 100_000)
    body = b"x" * (MAX_BODY * 2)
    for site in (one, two):
        _, refused = post(site, "bob", len(body), body)
        assert status(refused) == 429
    _, alice = post(two, "alice", len(body), body)
    assert status(alice) == 200
    first.connectionLost(GONE)
    _, again = post(two, "bob", len(body), body)
    assert status(again) == 200
    assert recorder.rendered == [body, body]
