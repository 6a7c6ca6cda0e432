"""
The webmail and the web listener against a hostile client: malformed and
oversized forms, odd query values, uploads from someone not logged in.

Units: the C{multipart/form-data} parser (L{pymailer.web.formdata}) with
Hypothesis (what a browser sends comes back whole, however the body is
cut into reads; garbage is refused with L{ValueError} only).  End to end:
a real server (twistd) and a real HTTP client on raw sockets and urllib.
"""

import io
import re
import select
import socket
import ssl
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pymailer.web import formdata, site
from pymailer.web.webmail import outgoing
from pymailer.web.webmail.app import organise  # app first: it imports organise

from mailserver import waitFor
from test_web_admin import Client, base, webServer  # noqa: F401 (fixtures)
from test_webmail import ALICE, BOB

# -- the form parser ----------------------------------------------------------------


class Trickle(io.RawIOBase):
    """A body whose reads return at most C{step} octets: every cut is tried."""

    def __init__(self, data, step):
        self.data, self.step, self.at = data, step, 0

    def read(self, size=-1):
        size = self.step if size < 0 else min(size, self.step)
        chunk = self.data[self.at:self.at + size]
        self.at += len(chunk)
        return chunk


def encode(parts, boundary, preamble=b"", epilogue=b"\r\n"):
    """A form body as browsers write it; C{parts}: C{(name, filename, type, data)}."""
    out = [preamble]
    for name, filename, contentType, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        header = f"Content-Disposition: {disposition}\r\n"
        if contentType is not None:
            header += f"Content-Type: {contentType}\r\n"
        out.append(b"--" + boundary + b"\r\n" + header.encode("utf-8") + b"\r\n" + data + b"\r\n")
    out.append(b"--" + boundary + b"--" + epilogue)
    return b"".join(out)


# Names as browsers send them (a file name without its path); the
# header's own parsing drops whitespace at either end.
names = st.text(st.characters(codec="utf-8", exclude_characters='"\\/\r\n\x00'),
                min_size=1, max_size=20).map(str.strip).filter(bool)
parts = st.lists(st.tuples(
    names, st.one_of(st.none(), names), st.sampled_from([None, "application/pdf", "text/plain"]),
    st.binary(max_size=300)), max_size=8)


class TestFormParser:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(parts, st.integers(1, 80), st.sampled_from([b"", b"\r\n", b"--"]))
    def test_roundTrip(self, sent, step, epilogue):
        """
        Every field and file a browser sends comes back with its name, file
        name (UTF-8), type and octets, however the body arrives in reads
        and whatever the octets hold (CRLF, "--", the boundary's start):
        otherwise a message or attachment written in the webmail is cut or
        mangled.
        """
        boundary = b"----pymailer" + uuid.uuid4().hex.encode()
        body = encode(sent, boundary, epilogue=epilogue)
        got = formdata.parse(b"multipart/form-data; boundary=" + boundary, Trickle(body, step))
        assert [(p.name, p.filename, p.contentType, p.data) for p in got] == [
            (n, f, t or "text/plain", d) for n, f, t, d in sent]

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=400), st.integers(1, 50))
    def test_garbageRefusedCleanly(self, body, step):
        """
        Any body at all is parsed or refused with ValueError (the page's
        "could not be read"), never another exception: otherwise a
        hostile post logs a traceback and answers 500.
        """
        try:
            formdata.parse(b'multipart/form-data; boundary="B"', Trickle(b"--B\r\n" + body, step))
        except ValueError:
            pass

    def test_bounds(self):
        """
        More than MAX_PARTS parts, a part header section over MAX_HEADER
        octets, a body without its close delimiter, or a Content-Type that
        is not multipart/form-data with a boundary are refused, quickly:
        otherwise one post holds the compose page and gigabytes of memory.
        """
        boundary = b"B"
        # The email package's parser took 30 s over these; this one stops
        # reading at part MAX_PARTS + 1.
        many = encode([("x", None, None, b"v")] * 200_000, boundary)
        started = time.monotonic()
        with pytest.raises(ValueError):
            formdata.parse(b"multipart/form-data; boundary=B", io.BytesIO(many))
        assert time.monotonic() - started < 5
        enough = encode([("x", None, None, b"v")] * formdata.MAX_PARTS, boundary)
        assert len(formdata.parse(b"multipart/form-data; boundary=B", io.BytesIO(enough))) \
            == formdata.MAX_PARTS
        huge = b"--B\r\nX-Long: " + b"a" * formdata.MAX_HEADER + b"\r\n\r\nv\r\n--B--\r\n"
        unclosed = b"--B\r\nContent-Disposition: form-data; name=x\r\n\r\nv"
        for contentType, body in [(b"multipart/form-data; boundary=B", huge),
                                  (b"multipart/form-data; boundary=B", unclosed),
                                  (b"multipart/form-data", b"--B--"),
                                  (b"multipart/mixed; boundary=B", b"--B--"),
                                  (b"text/plain", b""),
                                  (b"multipart/form-data; boundary=" + b"b" * 71, b"")]:
            with pytest.raises(ValueError):
                formdata.parse(contentType, io.BytesIO(body))

    def test_fileNamesAsBrowsersSendThem(self):
        """
        A file name in raw UTF-8 (RFC 7578 4.2) is kept, one in another
        charset is read with replacement characters, and an old browser's
        whole path is cut to its last part: otherwise an attachment's name
        is mojibake, or refused, or tells the recipient the sender's paths.
        """
        body = (b'--B\r\nContent-Disposition: form-data; name="attachment"; '
                b'filename="r\xc3\xa9sum\xc3\xa9.pdf"\r\n\r\n1\r\n'
                b'--B\r\nContent-Disposition: form-data; name="attachment"; '
                b'filename="caf\xe9.txt"\r\n\r\n2\r\n'
                b'--B\r\nContent-Disposition: form-data; name="attachment"; '
                b'filename="C:\\\\Users\\\\bob\\\\plan.pdf"\r\n\r\n3\r\n--B--\r\n')
        got = formdata.parse(b"multipart/form-data; boundary=B", io.BytesIO(body))
        assert [p.filename for p in got] == ["r\u00e9sum\u00e9.pdf", "caf\ufffd.txt", "plan.pdf"]


anyText = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60)


class TestOutgoingHeaders:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(anyText, anyText, anyText, anyText)
    def test_noFieldAddsAHeader(self, subject, body, filename, displayName):
        """
        Whatever a user types as subject, text, file name (a browser's
        RFC 2231 name may decode to CR LF) or display name, the message is
        built or refused with ValueError, and has exactly the header
        fields of its own making, none with a control character (NUL, CR,
        LF): otherwise a form adds a Bcc or Received field, or the message
        cannot be sent.
        """
        composed = outgoing.Composed(
            sender=f'"{displayName}" <bob@example.org>'.replace("\\", ""),
            to="ann@example.net", subject=subject, body=body,
            attachments=[outgoing.Attachment(filename, "text/plain", b"data")])
        try:
            octets = outgoing.octetsOf(outgoing.build(composed))
        except ValueError:
            return
        header = octets.split(b"\r\n\r\n", 1)[0]
        names = [line.split(b":", 1)[0] for line in header.split(b"\r\n")
                 if line[:1] not in (b" ", b"\t")]
        assert names == [b"From", b"To"] + ([b"Subject"] if outgoing.oneLine(subject) else []) + [
            b"Date", b"Message-ID", b"MIME-Version", b"Content-Type"]
        assert not outgoing.CONTROL.search(octets.decode("ascii", "replace"))


# -- end to end ---------------------------------------------------------------------


def connect(server):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context.wrap_socket(socket.create_connection(
        ("127.0.0.1", server.ports["https"]), timeout=60))


def head(sock):
    """The status line and header section of the response on C{sock}."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def answered(socks, timeout):
    """
    The first of the TLS sockets C{socks} the server answers within
    C{timeout} seconds, with the status line and header section of its
    response; C{(None, b"")} if none.  The raw sockets alone do not tell:
    TLS 1.3 session tickets come after the handshake.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        readable, _, _ = select.select(socks, [], [], max(0, left))
        for sock in readable:
            sock.setblocking(False)
            try:
                first = sock.recv(65536)
            except ssl.SSLWantReadError:
                continue  # a session ticket: no answer yet
            finally:
                sock.settimeout(10)
            if b"\r\n\r\n" not in first:
                first += head(sock)
            return sock, first.split(b"\r\n\r\n", 1)[0]
        if left <= 0:
            return None, b""


def answer(sock):
    """The status code of the response on C{sock}."""
    data = head(sock)
    return int(data.split(b" ", 2)[1]) if data else None


def rss(server):
    with open(f"/proc/{server.pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1)) * 1024


def loggedInCookie(client):
    [cookie] = [c for c in client.jar if c.name.startswith("__Host-")]
    return f"{cookie.name}={cookie.value}"


def uploadPost(server, client, length):
    """A TLS connection with the headers of a compose post of C{length} octets sent."""
    sock = connect(server)
    sock.sendall(b"POST /webmail/compose HTTP/1.1\r\nHost: x\r\nCookie: "
                 + loggedInCookie(client).encode()
                 + b"\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                 + b"Content-Length: %d\r\n\r\n" % length)
    return sock


def wholeUploadStatus(server, client):
    """A whole compose post over MAX_BODY, sent at once: its status code."""
    body = (b'--B\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n'
            + client.csrf("/webmail/compose").encode() + b"\r\n"
            + b'--B\r\nContent-Disposition: form-data; name="attachment"; '
            + b'filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
            + b"x" * (site.MAX_BODY * 2) + b"\r\n--B--\r\n")
    sock = uploadPost(server, client, len(body))
    sock.sendall(body)
    with sock:
        return answer(sock)


class TestHTTP:
    def test_formOfManyTinyPartsRefusedQuickly(self, webServer):
        """
        A logged-in user's compose post of 200,000 tiny parts (11 MB) is
        refused (403) in seconds, and the server's memory does not
        grow by hundreds of megabytes: otherwise one user holds the
        compose page of everyone (two at a time) and the server's memory.
        """
        bob = Client(base(webServer))
        bob.logIn(BOB)
        csrf = bob.csrf("/webmail/compose")
        body = (b'--B\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n'
                + csrf.encode() + b"\r\n"
                + b'--B\r\nContent-Disposition: form-data; name="x"\r\n\r\nv\r\n' * 200_000
                + b"--B--\r\n")
        before = rss(webServer)
        sock = connect(webServer)
        started = time.monotonic()
        sock.sendall(b"POST /webmail/compose HTTP/1.1\r\nHost: x\r\nCookie: "
                     + loggedInCookie(bob).encode()
                     + b"\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                     + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        # Unreadable, so its CSRF token is unknown: 403, as a forged post.
        assert answer(sock) in (400, 403)
        assert time.monotonic() - started < 10
        sock.close()
        assert rss(webServer) - before < 100 * 1024 * 1024
        assert "Traceback" not in webServer.log()

    def test_oddNumbersInQueriesAreNotErrors(self, webServer):
        """
        A page number or UID written with other digits than 0-9 ("\u00b2")
        or with thousands of them is taken as no number (the first page,
        not found), never a 500 with a traceback in the log.
        """
        bob = Client(base(webServer))
        bob.logIn(BOB)
        for path in ["/webmail/folder?name=INBOX&page=%C2%B2",
                     "/webmail/folder?name=INBOX&page=" + "9" * 5000,
                     "/webmail/search?name=INBOX&q=x&page=%C2%B2",
                     "/webmail/message?name=INBOX&uid=%C2%B2",
                     "/webmail/compose?mode=reply&name=INBOX&uid=%C2%B2"]:
            status, _, _ = bob.request(path)
            assert status in (200, 404), path
        assert "Traceback" not in webServer.log()

    def test_uploadWithoutLoginCutOff(self, webServer):
        """
        Someone not logged in (no cookie, or a made-up one) who posts a
        large body to the compose form is answered 403 and cut off at
        once, while the body is still coming (what it goes on sending is
        read and dropped, not kept), with the security headers of every
        response; a small post is still sent to
        the login page: otherwise anyone could spool the submission size
        limit (50 MB) to the server's disk on each of a thousand
        connections.
        """
        big = 20 * 1024 * 1024
        for cookie in (b"", b"Cookie: __Host-pymailer=" + b"x" * 43 + b"\r\n"):
            sock = connect(webServer)
            sock.sendall(b"POST /webmail/compose HTTP/1.1\r\nHost: x\r\n" + cookie
                         + b"Content-Type: multipart/form-data; boundary=B\r\n"
                         + b"Content-Length: %d\r\n\r\n" % big)
            sock.sendall(b"a" * 1024 * 1024)
            sock.settimeout(10)
            refusal = head(sock)
            assert refusal.startswith(b"HTTP/1.1 403 ")
            # As every response: no framing, no sniffing.
            assert b"\r\nX-Frame-Options: DENY\r\n" in refusal
            assert b"\r\nX-Content-Type-Options: nosniff\r\n" in refusal
            sock.close()
        small = Client(base(webServer))
        status, headers, _ = small.request("/webmail/compose", {"csrf": "x"})
        assert (status, headers["Location"]) == (303, "/login")


    def test_uploadsPerUserBounded(self, webServer):
        """
        A logged-in user sends at most two large compose posts at once
        ([web] max_uploads_per_user): a third gets 429 with Retry-After and
        the security headers, at once, while another user's upload goes
        through, and once one of the two ends the user may upload again.
        Otherwise one user (or a stolen session) holds 50 MB on each of
        the 50 connections an address may open, on disk and in the
        server's threads.
        """
        def post(client, length):
            return uploadPost(webServer, client, length)

        def wholeUpload(client):
            return wholeUploadStatus(webServer, client)

        bob, alice = Client(base(webServer)), Client(base(webServer))
        bob.logIn(BOB)
        alice.logIn(ALICE)
        posts = [post(bob, 20 * 1024 * 1024) for _ in range(3)]
        for sock in posts:
            sock.sendall(b"a" * 1024 * 1024)
        # Whichever the server counted third is refused, at once.
        third, refusal = answered(posts, 10)
        assert third is not None, "one of three uploads refused"
        third.close()
        held = [sock for sock in posts if sock is not third]
        assert refusal.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), refusal[:80]
        assert b"\r\nRetry-After: %d\r\n" % site.UPLOAD_RETRY_AFTER in refusal
        assert b"\r\nX-Content-Type-Options: nosniff\r\n" in refusal
        # A whole body, sent at once: refused however fast it comes.
        assert wholeUpload(bob) == 429
        assert wholeUpload(alice) not in (403, 429)
        held.pop().close()
        waitFor(lambda: wholeUpload(bob) != 429, 20, message="an upload slot freed")
        # The one still going was never answered.
        assert answered(held, 0) == (None, b"")
        for sock in held:
            sock.close()
        assert "Traceback" not in webServer.log()


def test_uploadsPerUserBoundedOverWorkers(makeMailServer):
    """
    With two worker processes, a user's two large uploads count in both:
    every further whole upload gets 429, whichever worker accepts its
    connection.  Otherwise each worker allowed two, and a user with
    uploads on both held twice the bound.
    """
    server = makeMailServer(roles=("https",), workers=2)
    bob = Client(base(server))
    bob.logIn(BOB)
    posts = [uploadPost(server, bob, 20 * 1024 * 1024) for _ in range(3)]
    for sock in posts:
        sock.sendall(b"a" * 1024 * 1024)
    third, refusal = answered(posts, 10)
    assert refusal.startswith(b"HTTP/1.1 429 "), refusal[:80]
    # Each lands on either worker: a bound per process lets most through.
    assert [wholeUploadStatus(server, bob) for _ in range(10)] == [429] * 10
    for sock in posts:
        sock.close()


class TestNewUser:
    def test_frontPageLeadsToTheWebmail(self, webServer):
        """
        https://HOST/ (what a new user opens first) leads to the webmail,
        which asks for a login: it answered 404, so the server seemed to
        have no web pages at all.
        """
        client = Client(base(webServer))
        status, headers, _ = client.request("/")
        assert (status, headers["Location"]) == (303, "/webmail/")
        status, headers, _ = client.request("/webmail/")
        assert (status, headers["Location"]) == (303, "/login")


class TestSearchTurns:
    def test_oneAtATimePerUserAndBoundedInAll(self):
        """
        Searches run one at a time per user and MAX_SEARCHES at a time in
        all, the others waiting their turn: otherwise one user's many
        searches take every thread of the pool.
        """
        from twisted.internet import defer

        turns = organise.SearchTurns(size=2)
        running = []

        searches = {}

        def search(name):
            running.append(name)
            searches[name] = defer.Deferred()
            return searches[name].addCallback(lambda _: running.remove(name))

        finished = {}
        for name in ("bob1", "bob2", "bob3"):
            finished[name] = turns.run("bob", search, name)
        assert running == ["bob1"]
        turns.run("ann", search, "ann1")
        assert running == ["bob1", "ann1"]
        turns.run("carl", search, "carl1")
        assert running == ["bob1", "ann1"]  # no slot free
        searches["bob1"].callback(None)
        assert running == ["ann1", "carl1"]  # bob2 waits for a slot...
        searches["ann1"].callback(None)
        assert running == ["carl1", "bob2"]
        searches["bob2"].callback(None)
        searches["carl1"].callback(None)
        searches["bob3"].callback(None)
        assert running == [] and turns.users == {}
        assert all(d.called for d in finished.values())

    def test_manySearchesLeaveTheServerAnswering(self, webServer):
        """
        While one user runs 24 body searches (more than the pool has threads) at once over a folder of big
        messages, the login page (whose session is made in the same thread
        pool) still answers within 3 s: otherwise a user's tabs stall
        logins, pages and mail intake for everyone.
        """
        import threading
        mailbox = webServer.store().mailbox(BOB, "INBOX")
        text = (b"lorem ipsum dolor sit amet " * 12000)
        for n in range(200):
            mailbox.append(io.BytesIO(b"From: a@example.org\r\nSubject: m%d\r\n\r\n" % n + text), [])
        bob = Client(base(webServer))
        bob.logIn(BOB)
        results = []
        sent = threading.Semaphore(0)

        def search():
            # One after the other, they take a while: a longer timeout.
            request = bob.opener.open
            sent.release()  # about to send: measured from here on
            with request(bob.root + "/webmail/search?name=INBOX&q=zzz&field=body",
                         timeout=300) as response:
                results.append(response.status)

        searches = [threading.Thread(target=search) for _ in range(24)]
        for thread in searches:
            thread.start()
        for _ in searches:
            assert sent.acquire(timeout=30)
        slowest = 0
        while any(thread.is_alive() for thread in searches) and slowest < 3:
            started = time.monotonic()
            assert Client(base(webServer)).request("/login")[0] == 200
            slowest = max(slowest, time.monotonic() - started)
        for thread in searches:
            thread.join()
        assert results == [200] * 24
        assert slowest < 3


class TestSlowClients:
    def test_dribblingRequestsAreCutOff(self, webServer):
        """
        A client that sends its headers, or a POST body, a few bytes every
        few seconds (slowloris) gets 408 and is closed after HEADER_TIMEOUT
        or BODY_GRACE seconds, while a client that sends at a normal pace
        is served: otherwise fifty such connections per address hold the
        web listener's connections for ever (Twisted's timeout is for
        silence only).
        """
        headers, body = connect(webServer), connect(webServer)
        headers.sendall(b"GET /login HTTP/1.1\r\nHo")
        body.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\n")
        started = time.monotonic()
        answers = {}
        sockets = {"headers": headers, "body": body}
        while len(answers) < 2 and time.monotonic() - started < 60:
            for name, sock in sockets.items():
                if name not in answers:
                    try:
                        sock.sendall(b"a")  # a byte every 2 s: dribbling
                    except OSError:
                        answers[name] = None
            waiting = [sock for name, sock in sockets.items() if name not in answers]
            # The next byte goes in 2 s, unless the server answers first.
            readable, _, _ = select.select(waiting, [], [], 2)
            for name, sock in sockets.items():
                if sock in readable or (name not in answers and sock.pending()):
                    try:
                        data = sock.recv(65536)
                    except (ssl.SSLWantReadError, BlockingIOError):
                        continue
                    answers[name] = (data.split(b"\r\n", 1)[0], time.monotonic() - started)
        for name in ("headers", "body"):
            status, after = answers[name]
            assert status == b"HTTP/1.1 408 Request Timeout", name
            assert site.HEADER_TIMEOUT - 1 < after < site.HEADER_TIMEOUT + 10
        assert Client(base(webServer)).request("/login")[0] == 200


def test_backLinkIsOneLine():
    """
    The page an action goes back to is a /webmail/ path of printable
    ASCII to its very end: "$" let a final newline through into the
    Location header (Twisted blanked it; nothing else did).
    """
    from pymailer.web.webmail.app import SAFE_BACK
    assert SAFE_BACK.match("/webmail/folder?name=INBOX")
    for bad in ("/webmail/x\n", "/webmail/x\r\nSet-Cookie: a=b", "//evil.example/webmail/",
                "/webmail/ x"):
        assert not SAFE_BACK.match(bad)
