"""
The web login and admin pages (issue 16, second step).

Sessions are unit-tested with a L{task.Clock}.  End to end, a real server
(twistd) is driven by headless Chromium through Selenium, as an admin would
use it, and by urllib where the test needs what a browser hides (status
codes, a forged POST without the CSRF token).

Browser tests are marked C{browser}; without Chromium they are skipped,
except in CI (C{CI} set), where a missing browser is a failure.
"""

import http.cookiejar
import imaplib
import io
import os
import pathlib
import re
import shutil
import smtplib
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage

import pytest

from pymailer.envelope import DELIVERED, Envelope, Recipient, Session
from pymailer.queue.model import NoSuchMessage, QueueEntry
from pymailer.testing import ClockReactor, SynchronousThreadPool
from pymailer.web.admin import LOGIN_FAILED, AdminApp
from pymailer.web.html import element, esc, page
from pymailer.web.sessions import ID_BYTES, SessionStore

from mailserver import DOMAIN, PASSWORD, insecureTLS, waitFor

CHROMEDRIVER = "/usr/bin/chromedriver"
# Set to a directory (docs/screenshots) to keep the pages' screenshots.
SCREENSHOTS = os.environ.get("PYMAILER_SCREENSHOTS")


# -- units ----------------------------------------------------------------------

def fired(d):
    """The result of a Deferred that has fired (the store's work ran synchronously)."""
    results = []
    d.addBoth(results.append)
    [result] = results
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def sessionStore(tmp_path, **options):
    """A store on a SQLite file, run synchronously, on a clock; and that clock."""
    reactor = ClockReactor()
    return SessionStore(tmp_path / "websessions.sqlite", reactor, SynchronousThreadPool(),
                        **options), reactor


class TestSessions:
    def test_idsAreRandom256Bits(self, tmp_path):
        """
        Session ids and CSRF tokens carry 256 random bits and never repeat,
        and the database holds a hash of each id, never the id: otherwise
        someone could guess a logged-in admin's cookie, or read one from a
        copy of the data directory.
        """
        store, _ = sessionStore(tmp_path)
        sessions = [fired(store.new("a@example.org")) for _ in range(100)]
        ids = {s.id for s in sessions} | {s.csrf for s in sessions}
        assert len(ids) == 200
        assert all(len(i) >= ID_BYTES * 4 // 3 for i in ids)
        assert ID_BYTES * 8 == 256
        stored = (tmp_path / "websessions.sqlite").read_bytes()
        stored += (tmp_path / "websessions.sqlite-wal").read_bytes()
        assert not any(s.id.encode() in stored for s in sessions)
        assert all(s.csrf.encode() in stored for s in sessions)

    def test_idleSessionExpires(self, tmp_path):
        """
        A session used within the idle time lives on; one left idle longer
        is gone: otherwise a forgotten browser stays logged in for good.
        """
        store, clock = sessionStore(tmp_path, idleTimeout=600, touchInterval=60)
        session = fired(store.new("a@example.org"))
        clock.advance(500)
        assert fired(store.get(session.id)).user == "a@example.org"
        clock.advance(500)
        assert fired(store.get(session.id.encode())).csrf == session.csrf
        clock.advance(600)
        assert fired(store.get(session.id)) is None
        for other in ("made-up", None, "", "é", "x" * 1000):
            assert fired(store.get(other)) is None
        assert fired(store.count()) == 0

    def test_boundedNumber(self, tmp_path):
        """
        Past the limit the least recently used session goes, a login
        form's (not logged in) before any logged-in one: otherwise a client
        opening login forms forever would fill the disk, or log the admins
        out.
        """
        store, clock = sessionStore(tmp_path, maxSessions=3, touchInterval=0)
        first, second = fired(store.new("a@x")), fired(store.new("b@x"))
        clock.advance(1)
        fired(store.get(first.id))
        forms = [fired(store.new()) for _ in range(5)]
        assert fired(store.count()) == 3
        assert fired(store.get(forms[-1].id)) is not None
        assert all(fired(store.get(f.id)) is None for f in forms[:-1])
        clock.advance(1)
        assert fired(store.get(first.id))
        fired(store.new("c@x"))
        fired(store.new("d@x"))
        assert fired(store.count()) == 3
        assert fired(store.get(second.id)) is None and fired(store.get(first.id))

    def test_logoutAndNoticeSeenByAnotherStore(self, tmp_path):
        """
        A session made through one store (one process) is found through
        another on the same file, with its notice shown once; ended through
        one, it is gone for both: otherwise a second server process refuses
        the cookie, or a logout leaves it logged in elsewhere.
        """
        one, _ = sessionStore(tmp_path)
        other, _ = sessionStore(tmp_path)
        session = fired(one.new("a@example.org"))
        fired(one.setNotice(session, ("ok", "done")))
        seen = fired(other.get(session.id))
        assert (seen.user, seen.csrf, seen.popNotice()) == (
            "a@example.org", session.csrf, ("ok", "done"))
        assert fired(one.get(session.id)).notice is None
        fired(other.end(seen))
        assert fired(one.get(session.id)) is None

    def test_lookWithoutAPageLeavesTheNotice(self, tmp_path):
        """
        A look at the session that shows no page (may this request upload?)
        leaves the notice for the page that follows: the compose page's
        "Draft saved" was lost when the upload check of the GET after the
        redirect ran first.
        """
        store, _ = sessionStore(tmp_path)
        session = fired(store.new("a@example.org"))
        fired(store.setNotice(session, ("ok", "saved")))
        assert fired(store.get(session.id, takeNotice=False)).user == "a@example.org"
        assert fired(store.get(session.id)).popNotice() == ("ok", "saved")
        assert fired(store.get(session.id)).notice is None

    def test_csrfComparison(self, tmp_path):
        """Only the session's own token matches: otherwise a forged form would pass."""
        session = fired(sessionStore(tmp_path)[0].new())
        assert session.csrfMatches(session.csrf)
        assert session.csrfMatches(session.csrf.encode())
        for wrong in ("", None, session.csrf[:-1], "x" + session.csrf, "é"):
            assert not session.csrfMatches(wrong)


class TestHTML:
    def test_everyValueEscaped(self):
        """
        Markup in a value (a hostile address or queue entry) is shown as
        text: otherwise it would run or change the admin's page.
        """
        hostile = '<script>alert(1)</script>"\'&'
        out = page(hostile, element("td", hostile, title=hostile), csrf=hostile,
                   notice=("ok", hostile)).decode()
        assert "<script>" not in out
        # title, h1, notice, attribute, cell, the logout form's token
        assert out.count(str(esc(hostile))) == 6

    def test_pagesFitAPhone(self):
        """
        Every page tells a phone to lay it out at the phone's own width:
        otherwise phones show the webmail and the account pages shrunk to
        a desktop's width (found by a fresh-clone trial: the viewport meta
        element had lost its content attribute).
        """
        out = page("Inbox", element("p", "x")).decode()
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in out


class SQLLikeSpool:
    """
    The two calls of L{ISpool} the queue page makes, from a backend that
    keeps envelopes in its own format (as a SQL spool would): C{raw} is
    whatever that backend stores, or nothing.
    """

    def __init__(self, entry, data):
        self.entry = entry
        self.data = data

    def show(self, queueId):
        if queueId != self.entry.queueId:
            raise NoSuchMessage(queueId)
        return self.entry

    def openData(self, queueId):
        return io.BytesIO(self.data)


def renderMessagePage(entry, data=b"Subject: stuck\r\nFrom: <bob@example.com>\r\n\r\nhi\r\n"):
    parts = types.SimpleNamespace(
        reactor=ClockReactor(), threadpool=SynchronousThreadPool(), portal=None, guard=None,
        directory=None, store=None, spool=SQLLikeSpool(entry, data), config=None,
        resolver=None, spamDB=None)
    pages = AdminApp(parts, sessions=object())
    rendered = []
    pages._message(types.SimpleNamespace(csrf="token"), entry.queueId).addCallback(
        rendered.append)
    [markup] = rendered
    return markup


def stuckEntry(raw):
    now = time.time()
    envelope = Envelope(
        queueId="q1", sender="bob@example.com", receivedAt=now - 630, size=52,
        recipients=(
            Recipient(0, "someone@example.net", attempts=3, nextAttempt=now + 330,
                      lastError="451 4.4.1 <b>no answer</b> from mx.example.net"),
            Recipient(1, "carol@example.com", state=DELIVERED, attempts=1)),
        session=Session(helo="client.example.com", clientAddress="192.0.2.7"))
    return QueueEntry("q1", "deferred", now + 330, envelope, 52, raw=raw)


class TestQueueMessagePage:
    @pytest.mark.parametrize("raw", [None, b"(1, 'q1', 'bob@example.com', ...)"],
                             ids=["no-raw", "sql-row"])
    def test_recipientsFromTheTypedEnvelopeWhateverTheBackendStores(self, raw):
        """
        A queued message's page shows each recipient with its state and
        last error, the headers and the envelope, from a spool that does not
        store the file spool's JSON: otherwise the admin sees an error page
        or no recipients for every message of a SQL spool.
        """
        out = renderMessagePage(stuckEntry(raw))
        assert "<strong>deferred</strong>" in out
        rows = re.findall(r"<tr>(.*?)</tr>", out)
        [someone] = [r for r in rows if "someone@example.net" in r]
        assert "<td>pending</td><td>3</td><td>in 5m</td>" in someone
        # Network text is escaped, not markup.
        assert "451 4.4.1 &lt;b&gt;no answer&lt;/b&gt; from mx.example.net" in someone
        [carol] = [r for r in rows if "carol@example.com" in r]
        assert "<td>delivered</td><td>1</td>" in carol
        assert "Subject: stuck" in out
        assert "<td>sender</td><td>bob@example.com</td>" in out
        assert "<td>receivedAt</td><td>10m ago</td>" in out
        assert "<td>session.clientAddress</td><td>192.0.2.7</td>" in out

    def test_unreadableEnvelopeShownAsStoredText(self):
        """
        A corrupt message's page says its envelope cannot be read and shows
        what is stored as text (escaped), so the admin can still decide.
        """
        entry = QueueEntry("q1", "corrupt", time.time(), None, 10,
                           raw=b'{"sender": "<script>x</script>", \x1b[2J')
        out = renderMessagePage(entry)
        assert "(unreadable envelope)" in out
        assert '<pre>{&quot;sender&quot;: &quot;&lt;script&gt;x&lt;/script&gt;&quot;, ?[2J</pre>' \
            in out


# -- end to end -------------------------------------------------------------------

def chromiumMissing():
    return shutil.which("chromium") is None or not os.path.exists(CHROMEDRIVER)


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium under Selenium (skipped without one, unless in CI)."""
    if chromiumMissing():
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are needed in CI (.ci/run installs them)")
        pytest.skip("chromium or chromium-driver is not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--ignore-certificate-errors", "--window-size=1200,900",
                     f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(argument)
    # The test server's certificate is self-signed.
    options.accept_insecure_certs = True
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def webServer(makeMailServer):
    """A server with the web, submission and IMAP listeners; alice is an admin."""
    server = makeMailServer(
        roles=("https", "http", "submissions", "imaps"), start=False,
        sections={"auth": {"failure_delay": 0}})
    server.admin("user", "admin", f"alice@{DOMAIN}")
    return server.start()


def base(server):
    return f"https://127.0.0.1:{server.ports['https']}"


def screenshot(driver, tmp_path, name):
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    if SCREENSHOTS:
        target = pathlib.Path(SCREENSHOTS)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)


def clickAndLoad(driver, element, timeout=30):
    """
    Click C{element} (a link or a form's button) and wait until the page it
    leads to has replaced this one: a find right after a bare click may see
    the old page (its notice) on a loaded machine.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: _replaced(page))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def _replaced(element):
    """
    Whether C{element}'s page is gone.  Chromedriver says so with a stale
    element error, or now and then with "Node with given id does not belong
    to the document" (a plain WebDriverException) while the new page loads.
    """
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as e:
        if "does not belong to the document" in str(e):
            return True
        raise
    return False


def logIn(driver, server, address, password):
    from selenium.webdriver.common.by import By
    driver.get(base(server) + "/login")
    driver.find_element(By.NAME, "address").send_keys(address)
    driver.find_element(By.NAME, "password").send_keys(password)
    clickAndLoad(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button"))


def submitForm(driver, action, **values):
    """Fill the form posting to C{action} with C{values} and submit it."""
    from selenium.webdriver.common.by import By
    form = driver.find_element(By.CSS_SELECTOR, f"form[action='{action}']")
    for name, value in values.items():
        box = form.find_element(By.NAME, name)
        box.clear()
        box.send_keys(value)
    clickAndLoad(driver, form.find_element(By.CSS_SELECTOR, "button"))


def notice(driver):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, "p.notice").text


def deferredMessage(server):
    """Submit a message to a remote address: with no DNS it stays deferred."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"bob@{DOMAIN}", "someone@example.net", "stuck"
    msg.set_content("waiting for DNS\n")
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=insecureTLS(),
                          timeout=10) as client:
        client.login(f"bob@{DOMAIN}", PASSWORD)
        client.send_message(msg)
    # The envelope, not just any file: the data file lands in deferred/ first.
    return waitFor(lambda: server.queueEnvelopes(("deferred",)), 30,
                   message="a deferred message")


@pytest.mark.browser
class TestBrowser:
    def test_adminAddsDomainAndUserAndFlushesTheQueue(self, webServer, browser, tmp_path):
        """
        An admin logs in, adds a domain and a user (who can then log in
        over IMAP at once), sees a deferred message in the queue with its
        last error and flushes it: otherwise the admin pages do not do what
        `pymailer domain/user/queue` do.
        """
        from selenium.webdriver.common.by import By
        import imaplib
        deferredMessage(webServer)
        browser.get(base(webServer) + "/login")
        screenshot(browser, tmp_path, "login.png")
        logIn(browser, webServer, f"alice@{DOMAIN}", PASSWORD)
        assert browser.find_element(By.TAG_NAME, "h1").text == "Administration"

        browser.get(base(webServer) + "/admin/domains")
        submitForm(browser, "/admin/domains/add", domain="Example.COM")
        assert notice(browser) == "added domain Example.COM"
        assert "example.com" in browser.find_element(By.TAG_NAME, "table").text
        assert "example.com" in webServer.admin("domain", "list").stdout

        browser.get(base(webServer) + "/admin/users")
        submitForm(browser, "/admin/users/add", address="carol@example.com",
                   password="carol's new password")
        assert notice(browser) == "added user carol@example.com"
        assert "carol@example.com" in browser.find_element(By.TAG_NAME, "table").text
        screenshot(browser, tmp_path, "users.png")
        imap = imaplib.IMAP4_SSL("127.0.0.1", webServer.ports["imaps"],
                                 ssl_context=insecureTLS())
        imap.login("carol@example.com", "carol's new password")
        assert imap.select("INBOX")[0] == "OK"
        imap.logout()

        browser.get(base(webServer) + "/admin/queue?state=deferred")
        rows = browser.find_elements(By.CSS_SELECTOR, "table tr")
        assert len(rows) == 2, browser.page_source
        assert "someone@example.net" in rows[1].text and "deferred" in rows[1].text
        screenshot(browser, tmp_path, "queue.png")
        clickAndLoad(browser, rows[1].find_element(By.TAG_NAME, "a"))
        queueId = browser.find_element(By.TAG_NAME, "h1").text.split()[-1]
        assert "Subject: stuck" in browser.find_element(By.CSS_SELECTOR, "pre").text
        assert "someone@example.net" in browser.page_source
        clickAndLoad(browser, browser.find_element(
            By.CSS_SELECTOR, f"form[action='/admin/queue/{queueId}/flush'] button"))
        assert notice(browser) == (f"{queueId}: due now; the server retries it on its next"
                                   " queue scan")
        clickAndLoad(browser, browser.find_element(
            By.CSS_SELECTOR, f"form[action='/admin/queue/{queueId}/delete'] button"))
        assert notice(browser) == f"{queueId}: deleted"
        assert webServer.admin("queue", "list").stdout == "queue is empty\n"

    def test_disableButton(self, webServer, browser):
        """
        An admin disables bob from the users page: bob's IMAP LOGIN, SMTP
        AUTH and web login with the right password are refused with the
        same reply as a wrong password, mail to bob is still delivered, and
        Enable lets him in again: otherwise a compromised account could not
        be stopped without deleting it, or disabling it would lose mail or
        tell a guesser which accounts are disabled.
        """
        import imaplib
        from selenium.webdriver.common.by import By
        bob = f"bob@{DOMAIN}"

        def imapLogin(address, password):
            imap = imaplib.IMAP4_SSL("127.0.0.1", webServer.ports["imaps"],
                                     ssl_context=insecureTLS())
            try:
                imap.login(address, password)
            except imaplib.IMAP4.error as e:
                return str(e)
            imap.logout()
            return "OK"

        logIn(browser, webServer, f"alice@{DOMAIN}", PASSWORD)
        browser.get(base(webServer) + "/admin/users")
        def clickInBobsRow(action):
            row = browser.find_element(By.XPATH, f"//tr[td[text()='{bob}']]")
            clickAndLoad(browser, row.find_element(
                By.CSS_SELECTOR, f"form[action='{action}'] button"))

        clickInBobsRow("/admin/users/disable")
        assert notice(browser) == (f"disabled {bob}: it may not log in; its mail is still"
                                   " delivered")
        assert "disabled" in browser.find_element(
            By.XPATH, f"//tr[td[text()='{bob}']]").text
        assert "disabled" in webServer.admin("user", "list").stdout

        wrong = imapLogin(f"alice@{DOMAIN}", "wrong password")
        assert "AUTHENTICATIONFAILED" in wrong
        assert imapLogin(bob, PASSWORD) == wrong
        with smtplib.SMTP_SSL("127.0.0.1", webServer.ports["submissions"],
                              context=insecureTLS(), timeout=10) as client:
            client.ehlo()
            client.user, client.password = bob, PASSWORD
            # One mechanism: login() would try each, counting towards the
            # IP's lockout.
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.auth("PLAIN", client.auth_plain)
            assert refused.value.smtp_code == 535
            client.login(f"alice@{DOMAIN}", PASSWORD)
            client.sendmail(f"alice@{DOMAIN}", [bob],
                            b"Subject: still delivered\r\n\r\nwhile disabled\r\n")
        webServer.waitForMessages(bob, 1)
        status, _, body = Client(base(webServer)).logIn(bob)
        assert status == 403 and LOGIN_FAILED in body

        clickInBobsRow("/admin/users/enable")
        assert notice(browser) == f"enabled {bob}: it may log in again"
        assert imapLogin(bob, PASSWORD) == "OK"

    def test_failedLoginSameWhateverTheReason(self, webServer, browser):
        """
        A wrong password and an unknown address get the very same page: otherwise
        the login form would tell a stranger which accounts exist.
        """
        from selenium.webdriver.common.by import By
        answers = []
        for address, password in ((f"alice@{DOMAIN}", "wrong"),
                                  (f"nobody@{DOMAIN}", PASSWORD),
                                  ("nobody@example.net", PASSWORD)):
            logIn(browser, webServer, address, password)
            answers.append((browser.current_url,
                            browser.find_element(By.TAG_NAME, "main").text))
        assert LOGIN_FAILED in answers[0][1]
        assert answers[0] == answers[1] == answers[2]
        browser.get(base(webServer) + "/admin/")
        assert browser.current_url.endswith("/login")


# -- end to end with an HTTP client -----------------------------------------------

class Client:
    """urllib with a cookie jar, not following redirects (we check them)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    def __init__(self, root):
        self.root = root
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=insecureTLS()),
            urllib.request.HTTPCookieProcessor(self.jar), self.NoRedirect())

    def request(self, path, form=None, headers=None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.root + path, data, headers=headers or {})
        try:
            with self.opener.open(request, timeout=20) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode()

    def csrf(self, path="/login"):
        return re.search(r'name="csrf" value="([^"]+)"', self.request(path)[2]).group(1)

    def logIn(self, address, password=PASSWORD):
        return self.request("/login", {"csrf": self.csrf(), "address": address,
                                       "password": password})


def assertIMAPLogin(server, user, password, refused):
    """IMAP LOGIN as C{user} works with C{password} and fails with C{refused}."""
    with imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=insecureTLS(),
                           timeout=20) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(user, refused)
        assert imap.login(user, password)[0] == "OK"


class TestHTTP:
    def test_cookieFlags(self, webServer):
        """
        The session cookie is Secure, HttpOnly, SameSite=Strict with Path=/,
        and a new one is issued at login: otherwise script or another site
        could use an admin's session, or a planted id would be logged in.
        """
        client = Client(base(webServer))
        status, headers, _ = client.request("/login")
        before = headers["Set-Cookie"]
        assert status == 200
        status, headers, _ = client.logIn(f"alice@{DOMAIN}")
        assert (status, headers["Location"]) == (303, "/admin/")
        cookie = headers["Set-Cookie"]
        assert cookie.startswith("__Host-pymailer=")
        assert {"Secure", "HttpOnly", "Path=/"} <= {p.strip() for p in cookie.split(";")}
        assert "samesite=strict" in cookie.lower()
        assert cookie.split(";")[0] != before.split(";")[0]

    def test_postWithoutCSRFTokenRefused(self, webServer):
        """
        A logged-in admin's POST without the form's token, or with another,
        is refused with 403 and changes nothing; with it, it works:
        otherwise another page could make the admin's browser add domains.
        """
        client = Client(base(webServer))
        client.logIn(f"alice@{DOMAIN}")
        for form in ({"domain": "evil.example"},
                     {"domain": "evil.example", "csrf": "guessed"}):
            status, _, body = client.request("/admin/domains/add", form)
            assert status == 403 and "form has expired" in body
        assert "evil.example" not in webServer.admin("domain", "list").stdout
        token = client.csrf("/admin/domains")
        status, _, _ = client.request("/admin/domains/add",
                                      {"domain": "good.example", "csrf": token})
        assert status == 303
        assert "good.example" in webServer.admin("domain", "list").stdout
        # The login form is protected the same way.
        status, _, _ = Client(base(webServer)).request(
            "/login", {"address": f"alice@{DOMAIN}", "password": PASSWORD})
        assert status == 403

    def test_nonAdminGets403(self, webServer):
        """
        A user not marked admin logs in but gets 403 on every admin page
        and cannot post to one; once marked admin (pymailer user admin) the
        pages open without logging in again: otherwise any mailbox owner
        could run the server, or the CLI's change would need a restart.
        """
        client = Client(base(webServer))
        assert client.logIn(f"bob@{DOMAIN}")[0] == 303
        for path in ("/admin/", "/admin/domains", "/admin/users", "/admin/queue"):
            status, _, body = client.request(path)
            assert status == 403 and "may not use the admin pages" in body, path
            assert "example.org" not in body
        token = client.csrf("/login")
        assert client.request("/admin/domains/add",
                              {"domain": "bobs.example", "csrf": token})[0] == 403
        webServer.admin("user", "admin", f"bob@{DOMAIN}")
        assert client.request("/admin/users")[0] == 200

    def test_notLoggedInAndPlainHTTP(self, webServer):
        """
        Without a session the admin pages send to the login page, and over
        plain HTTP nothing logs in (a redirect to HTTPS, no cookie):
        otherwise pages would show to anyone, or passwords and cookies
        would cross the network in clear.
        """
        client = Client(base(webServer))
        status, headers, _ = client.request("/admin/queue")
        assert (status, headers["Location"]) == (303, "/login")
        plain = Client(f"http://127.0.0.1:{webServer.ports['http']}")
        for path in ("/login", "/admin/"):
            status, headers, body = plain.request(path)
            assert (status, headers["Location"]) == (301, base(webServer) + path)
            assert "Set-Cookie" not in headers and "<form" not in body

    def test_passwordWithSpacesKeptAsTyped(self, webServer):
        """
        A password set on the admin pages with leading, inner and trailing
        spaces (add user, reset password) is the one IMAP LOGIN takes, and
        the stripped one is not: otherwise the user can never log in with
        what the admin typed.
        """
        client = Client(base(webServer))
        client.logIn(f"alice@{DOMAIN}")
        carol, typed = f"carol@{DOMAIN}", " s3 cret "
        status, _, _ = client.request("/admin/users/add", {
            "csrf": client.csrf("/admin/users"), "address": carol, "password": typed})
        assert status == 303
        assertIMAPLogin(webServer, carol, typed, refused=typed.strip())
        status, _, _ = client.request("/admin/users/password", {
            "csrf": client.csrf("/admin/users"), "address": carol, "password": " new one  "})
        assert status == 303
        assertIMAPLogin(webServer, carol, " new one  ", refused="new one")

    def test_logout(self, webServer):
        """After logging out the old cookie opens nothing: otherwise logout would not log out."""
        client = Client(base(webServer))
        client.logIn(f"alice@{DOMAIN}")
        token = client.csrf("/admin/domains")
        old = {"Cookie": "; ".join(f"{c.name}={c.value}" for c in client.jar)}
        assert client.request("/logout", {"csrf": token})[0] == 303
        assert len(client.jar) == 0
        status, headers, _ = Client(base(webServer)).request("/admin/domains", headers=old)
        assert (status, headers["Location"]) == (303, "/login")
