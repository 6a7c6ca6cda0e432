"""
The webmail (issue 17, first step): folders, paged message lists, reading
a message safely, organising messages.

Units: the sanitiser on hostile HTML, the folder pages of a 10,000-message
SQLite folder (timed), the actions on the in-memory store.  End to end: a
real server (twistd) driven by urllib (status codes, headers, forged
POSTs) and by headless Chromium through Selenium (a user's view; a hostile
message opened in the browser executes and loads nothing).
"""

import http.server
import io
import os
import re
import smtplib
import threading
import time
from email.message import EmailMessage

import pytest

from pymailer.store import ImportedMessage
from pymailer.store.memory import MemoryStore
from pymailer.store.sqlite import SQLiteStore
from pymailer.web.webmail import content
from pymailer.web.webmail.mailbox import PAGE_SIZE, Webmail

from mailserver import DOMAIN, PASSWORD, insecureTLS, waitFor
from test_imap_hostile import deeplyNested, nestedMessages
from test_web_admin import (  # noqa: F401 (fixtures)
    Client, base, browser, clickAndLoad, logIn, notice, screenshot, webServer)

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
HOSTILE = """<html><body>
<p>Dear user</p>
<script>alert(1)</script>
<img src=x onerror=alert(1)>
<a href="javascript:alert(1)">click me</a>
<a href="https://example.net/page">a real link</a>
<iframe src="http://127.0.0.1:{port}/frame"></iframe>
<form action="http://127.0.0.1:{port}/form"><input name=q><button>go</button></form>
<p style="background: url(http://127.0.0.1:{port}/css); color: red">styled</p>
<style>body {{ background: url(http://127.0.0.1:{port}/style) }}</style>
<link rel=stylesheet href="http://127.0.0.1:{port}/link">
<img src="http://127.0.0.1:{port}/track" alt="tracker">
<svg onload=alert(1)></svg>
</body></html>
"""


def message(subject="hello", sender=ALICE, to=BOB, text="some text\n", html=None,
            attachment=None):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        data, maintype, subtype, filename = attachment
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def send(server, msg, user=ALICE):
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=insecureTLS(),
                          timeout=10) as client:
        client.login(user, PASSWORD)
        client.send_message(msg)


# -- units ----------------------------------------------------------------------

class TestSanitiser:
    def test_hostileHTMLLosesEverythingActive(self):
        """
        Script, event handlers, javascript: links, frames, forms, CSS url()
        and remote images are gone from a message's HTML while its text and
        real links stay: otherwise opening a message could run the sender's
        code or tell them it was read.
        """
        clean, blocked = content.sanitise(HOSTILE.format(port=1))
        lowered = clean.lower()
        for bad in ("<script", "alert", "onerror", "onload", "javascript:", "<iframe",
                    "<form", "<input", "url(", "<style", "<link", "127.0.0.1", "<svg"):
            assert bad not in lowered, (bad, clean)
        assert "Dear user" in clean and "styled" in clean and 'style="color:red"' in clean
        assert ('<a href="https://example.net/page" target="_blank" rel="noopener noreferrer">'
                in clean)
        assert blocked == 1

    def test_remoteImagesOnlyWhenAsked(self):
        """
        A remote image loads only after "show remote content"; inline
        (data:) images always: otherwise tracking pixels report every
        reading, or pictures sent inside the message never show.
        """
        markup = '<img src="https://t.example/p.gif"><img src="data:image/png;base64,AAAA">'
        assert content.sanitise(markup) == ('<img><img src="data:image/png;base64,AAAA">', 1)
        assert content.sanitise(markup, remote=True) == (markup, 0)

    def test_showDecodesHeadersAndPicksTheBody(self):
        """
        Encoded words in headers are shown decoded, the HTML alternative is
        preferred (sanitised), plain text is escaped, and attachments are
        listed with name, type and size: otherwise the user reads =?utf-8?q?
        gibberish, or markup in a plain message is interpreted.
        """
        msg = message(subject="Caf\u00e9 <menu>", text="1 < 2 & <b>not bold</b>\n",
                      attachment=(b"%PDF-1.4 x", "application", "pdf", "r\u00e9sum\u00e9.pdf"))
        shown = content.show(msg.as_bytes())
        assert ("Subject", "Caf\u00e9 <menu>") in shown.headers
        assert "<pre>1 &lt; 2 &amp; &lt;b&gt;not bold&lt;/b&gt;\n</pre>" in shown.body
        [attachment] = shown.attachments
        assert (attachment.filename, attachment.contentType, attachment.size) == (
            "r\u00e9sum\u00e9.pdf", "application/pdf", 10)
        assert content.attachmentPart(content.parse(msg.as_bytes()), attachment.part) == (
            "application/pdf", "r\u00e9sum\u00e9.pdf", b"%PDF-1.4 x")
        html = content.show(message(html="<p onclick=x()>rich</p>").as_bytes())
        assert "<p>rich</p>" in html.body and html.attachments == []

    def test_brokenCharsetStillShown(self):
        """A part in a charset Python does not know is shown with replacement
        characters: otherwise such a message cannot be opened at all."""
        raw = (b"From: a@b\r\nSubject: x\r\nContent-Type: text/plain; charset=x-nonsense\r\n\r\n"
               b"caf\xe9\r\n")
        assert "caf" in content.show(raw).body

    def test_deeplyNestedMessageShownAsItsSource(self):
        """
        A message nested 2,000 multiparts deep (anyone may send one) opens,
        its text shown as the source: otherwise it is a "500 Internal
        Server Error" page the user cannot get past.
        """
        shown = content.show(deeplyNested())
        assert ("Subject", "nested") in shown.headers
        assert "needle" in shown.body and "multipart/mixed" in shown.body

    def test_messagesNestedInMessagesShownAsTheSource(self):
        """
        A message holding a message holding a message... 500 deep, which
        the email package parses but cannot write back, opens too, as its
        source.
        """
        shown = content.show(nestedMessages(500))
        assert "needle" in shown.body and "level 3" in shown.body
        assert shown.attachments == []

    def test_hugeAddressFieldShownQuickly(self):
        """
        A To: of 100,000 addresses (2 MB, well within the size limit) is
        shown cut, in well under a second: the email package's address
        parser took 100 s of a core for it, each time the message was opened.
        """
        raw = (b"From: a@example.net\r\nSubject: many\r\nTo: "
               + b",\r\n ".join(b"user%d@example.com" % i for i in range(100_000))
               + b"\r\n\r\nbody\r\n")
        started = time.monotonic()
        shown = content.show(raw)
        assert time.monotonic() - started < 1.0
        to = dict(shown.headers)["To"]
        assert to.startswith("user0@example.com, user1@example.com,") and to.endswith("\u2026")
        assert len(to) <= content.MAX_SHOWN_FIELD + 2
        assert ("Subject", "many") in shown.headers


@pytest.fixture(scope="module")
def bigStore(tmp_path_factory):
    """A SQLite store whose INBOX holds 10,000 messages, one second apart."""
    store = SQLiteStore(tmp_path_factory.mktemp("webmail") / "store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)  # filling, not what is measured
        store.importMailbox("carol@example.org", "INBOX", None, (
            ImportedMessage(None, frozenset(), 1_700_000_000 + i,
                            lambda i=i: io.BytesIO(
                                b"From: Sender %d <s%d@example.net>\r\nSubject: number %d\r\n"
                                b"\r\nbody\r\n" % (i, i, i)))
            for i in range(10_000)))
    return store


def test_attachmentNames():
    """
    A download keeps its name, in ASCII for old browsers and in UTF-8
    (RFC 6266 filename*) for the rest, and no name can break out of the
    header: otherwise downloads get wrong names, or a crafted name adds
    header parameters.
    """
    from pymailer.web.webmail.app import contentDisposition
    assert contentDisposition("report.pdf") == b'attachment; filename="report.pdf"'
    assert contentDisposition('r\u00e9sum\u00e9 "x";.pdf') == (
        b'attachment; filename="r_sum_ _x__.pdf"; '
        b"filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22%3B.pdf")


def test_bigFolderPagesQuickly(bigStore):
    """
    A folder of 10,000 messages is listed newest first, 50 a page, and the
    first, a middle and the last page each take well under a second
    (measured; the figures are printed): otherwise a big INBOX makes the
    webmail unusable.
    """
    mail = Webmail(bigStore)
    mail.folderPage("carol@example.org", "INBOX", 0)  # summaries computed once, as at delivery
    timings = {}
    for page in (0, 100, 199):
        start = time.perf_counter()
        shown = mail.folderPage("carol@example.org", "INBOX", page)
        timings[page] = time.perf_counter() - start
        assert len(shown.rows) == PAGE_SIZE and shown.pages == 200 and shown.total == 10_000
        newest = 9_999 - page * PAGE_SIZE
        assert [r.subject for r in shown.rows[:2]] == [f"number {newest}",
                                                      f"number {newest - 1}"]
        assert shown.rows[0].sender == f"Sender {newest}"
    start = time.perf_counter()
    folders = mail.folders("carol@example.org")
    timings["folders"] = time.perf_counter() - start
    assert ("INBOX", 10_000, 10_000) in folders
    print("webmail 10,000-message folder:", {k: f"{v * 1000:.0f} ms" for k, v in timings.items()})
    assert max(timings.values()) < 1.0, timings


class TestActions:
    def setup_method(self):
        self.store = MemoryStore()
        self.mail = Webmail(self.store)
        self.store.createUser(BOB)
        for subject in ("one", "two"):
            self.store.deliver(BOB, b"", io.BytesIO(message(subject).as_bytes()))
        self.inbox = self.store.mailbox(BOB, "INBOX")

    def test_flags(self):
        """Mark read/unread and flag/unflag change the flags IMAP sees:
        otherwise the webmail and Thunderbird disagree."""
        assert self.mail.act(BOB, "INBOX", [1, 2], "read") == "2 messages marked read."
        self.mail.act(BOB, "INBOX", [2], "flag")
        self.mail.act(BOB, "INBOX", [1], "unread")
        flags = {m.uid: m.flags for m in self.inbox.messages()}
        assert flags == {1: frozenset(), 2: frozenset({"\\Seen", "\\Flagged"})}

    def test_deleteGoesToTrashThenForGood(self):
        """Delete moves to Trash; delete in Trash removes for good: otherwise
        a slip loses mail, or Trash can never be emptied."""
        assert self.mail.act(BOB, "INBOX", [1], "delete") == "1 message moved to Trash."
        assert [m.uid for m in self.inbox.messages()] == [2]
        trash = self.store.mailbox(BOB, "Trash")
        [moved] = trash.messages()
        assert self.mail.act(BOB, "Trash", [moved.uid], "delete") == "1 message deleted for good."
        assert trash.messages() == []

    def test_moveAndReadMarksSeen(self):
        """Move puts the message in the chosen folder; reading marks it seen:
        otherwise organising does nothing, or read mail stays bold."""
        self.mail.act(BOB, "INBOX", [2], "move", "Archive")
        [moved] = self.store.mailbox(BOB, "Archive").messages()
        shown = self.mail.message(BOB, "Archive", moved.uid)
        assert ("Subject", "two") in shown.headers
        assert "\\Seen" in self.store.mailbox(BOB, "Archive").messages()[0].flags
        with pytest.raises(KeyError):
            self.mail.message(BOB, "Archive", 999)
        with pytest.raises(KeyError):
            self.mail.act(BOB, "INBOX", [1], "move", "No such folder")


# -- end to end with an HTTP client -----------------------------------------------

def listPage(client, folder="INBOX"):
    return client.request("/webmail/folder?name=" + folder)


def uidsIn(page):
    return [int(u) for u in re.findall(r'type="checkbox" name="uid" value="(\d+)"', page)]


class TestHTTP:
    def test_readAMessageAndItsAttachment(self, webServer):
        """
        Bob logs in, sees his folders with INBOX's unread count and the
        message (sender, subject, attachment mark), opens it: headers
        decoded, the body from its own URL under a script-less CSP, the
        message now read; the attachment downloads with its type,
        Content-Disposition: attachment and nosniff.  Otherwise the webmail
        shows nothing, or an attachment could run as a page of ours.
        """
        msg = message("Caf\u00e9 menu", attachment=(b"<script>alert(1)</script>", "text",
                                                    "html", "page.html"))
        send(webServer, msg)
        webServer.waitForMessages(BOB, 1)
        client = Client(base(webServer))
        assert client.logIn(BOB)[0] == 303
        status, headers, page = client.request("/webmail/")
        assert status == 200
        assert 'href="/webmail/folder?name=INBOX" class="current"><bdi>INBOX</bdi></a>' in page
        assert 'class="unread-count" title="1 unread">1</span>' in page
        assert "Caf\u00e9 menu" in page and "\U0001F4CE" in page and "alice@" in page
        [uid] = uidsIn(page)
        status, headers, page = client.request(f"/webmail/message?name=INBOX&uid={uid}")
        assert status == 200 and "<dd>Caf\u00e9 menu</dd>" in page
        assert "frame-src 'self'" in headers["Content-Security-Policy"]
        assert (f'<iframe src="/webmail/body?name=INBOX&amp;uid={uid}" '
                f'sandbox="allow-popups allow-popups-to-escape-sandbox"') in page
        status, headers, body = client.request(f"/webmail/body?name=INBOX&uid={uid}")
        assert status == 200 and "some text" in body
        policy = headers["Content-Security-Policy"]
        assert policy.startswith("default-src 'none'; style-src 'unsafe-inline'; "
                                 "img-src data: cid:;") and "sandbox" in policy
        assert "script" not in policy
        [link] = re.findall(r'href="(/webmail/part\?[^"]+)"', page)
        status, headers, body = client.request(link.replace("&amp;", "&"))
        assert status == 200 and body == "<script>alert(1)</script>"
        assert headers["Content-Type"].startswith("text/html")
        assert headers["Content-Disposition"] == 'attachment; filename="page.html"'
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "unread-count" not in listPage(client)[2]

    def test_anotherUsersMessageIsNotFound(self, webServer):
        """
        Alice, changing the uid, folder or part in Bob's URLs, gets the same
        404 as for a message that does not exist: otherwise one user could
        read another's mail.
        """
        send(webServer, message("for bob only", attachment=(b"secret", "application",
                                                            "octet-stream", "s.bin")))
        webServer.waitForMessages(BOB, 1)
        bob = Client(base(webServer))
        bob.logIn(BOB)
        [uid] = uidsIn(listPage(bob)[2])
        assert bob.request(f"/webmail/part?name=INBOX&uid={uid}&part=2")[0] == 200
        alice = Client(base(webServer))
        alice.logIn(ALICE)
        answers = set()
        for path in (f"/webmail/message?name=INBOX&uid={uid}",
                     f"/webmail/body?name=INBOX&uid={uid}",
                     f"/webmail/part?name=INBOX&uid={uid}&part=2",
                     "/webmail/message?name=INBOX&uid=999",
                     "/webmail/message?name=INBOX&uid=x",
                     "/webmail/message?name=INBOX&uid=99999999999999999999",
                     f"/webmail/part?name=INBOX&uid={uid}&part=99999999999999999999",
                     f"/webmail/message?name=../bob@{DOMAIN}/INBOX&uid={uid}",
                     "/webmail/folder?name=Nowhere"):
            status, _, page = alice.request(path)
            assert "for bob only" not in page and "secret" not in page
            answers.add((status, re.search(r"<main>.*</main>", page, re.S).group(0)))
        assert len(answers) == 1 and answers.pop()[0] == 404
        # Nor may Alice act on it.
        alice.request("/webmail/action", {"csrf": alice.csrf("/webmail/"), "name": "INBOX",
                                          "uid": uid, "action": "delete"})
        assert uidsIn(listPage(bob)[2]) == [uid]

    def test_everyActionNeedsTheCSRFToken(self, webServer):
        """
        Every action posted without the session's CSRF token (or with
        another session's) is refused with 403 and changes nothing:
        otherwise another site could delete or move a user's mail.
        """
        send(webServer, message("keep me"))
        webServer.waitForMessages(BOB, 1)
        bob = Client(base(webServer))
        bob.logIn(BOB)
        [uid] = uidsIn(listPage(bob)[2])
        other = Client(base(webServer))
        other.logIn(ALICE)
        for action in ("read", "unread", "flag", "unflag", "delete", "move"):
            for token in (None, other.csrf("/webmail/")):
                form = {"name": "INBOX", "uid": uid, "action": action, "target": "Archive"}
                if token:
                    form["csrf"] = token
                assert bob.request("/webmail/action", form)[0] == 403, (action, token)
        page = listPage(bob)[2]
        assert uidsIn(page) == [uid] and 'class="unread"' in page and "\u2605" not in page

    def test_organise(self, webServer):
        """
        Flag, mark read, move to Archive, delete to Trash and delete in
        Trash each do what they say, with the session's token, and IMAP
        sees it: otherwise organising in the webmail does nothing.
        """
        for n in range(3):
            send(webServer, message(f"message {n}"))
        webServer.waitForMessages(BOB, 3)
        bob = Client(base(webServer))
        bob.logIn(BOB)
        csrf = bob.csrf("/webmail/")
        one, two, three = sorted(uidsIn(listPage(bob)[2]))

        def act(action, *uids, folder="INBOX", **extra):
            status, headers, _ = bob.request("/webmail/action", [
                ("csrf", csrf), ("name", folder), ("action", action)]
                + [("uid", uid) for uid in uids] + list(extra.items()))
            assert status == 303
            return headers["Location"]

        assert act("flag", one) == "/webmail/folder?name=INBOX"
        act("read", one, two)
        store = webServer.store().mailbox(BOB, "INBOX")
        flags = {m.uid: m.flags for m in store.messages()}
        assert flags[one] == {"\\Seen", "\\Flagged"} and flags[two] == {"\\Seen"}
        page = listPage(bob)[2]
        assert "2 messages marked read." in page
        assert '<span class="marks" title="flagged">\u2605</span>' in page
        act("move", two, target="Archive")
        act("delete", three)
        assert uidsIn(listPage(bob)[2]) == [one]
        assert len(uidsIn(listPage(bob, "Archive")[2])) == 1
        [trashed] = uidsIn(listPage(bob, "Trash")[2])
        act("delete", trashed, folder="Trash")
        assert uidsIn(listPage(bob, "Trash")[2]) == []
        assert webServer.messages(BOB, "Trash") == []


# -- in the browser -----------------------------------------------------------------

class Tracker:
    """An HTTP listener on loopback that records every request's path."""

    def __init__(self):
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.end_headers()
                self.wfile.write(b"GIF89a")

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tracker():
    tracker = Tracker()
    yield tracker
    tracker.close()


def openFirstMessage(driver):
    """Click the first message of the list; the text of its body frame."""
    from selenium.webdriver.common.by import By

    clickAndLoad(driver, driver.find_element(By.CSS_SELECTOR, "ul.list li a"))
    return openFirstMessageFrame(driver)


def openFirstMessageFrame(driver):
    """Wait for the message page's body frame to load; its text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    frame = driver.find_element(By.CSS_SELECTOR, "iframe.body")
    driver.switch_to.frame(frame)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
        and d.find_element(By.TAG_NAME, "body").text)
    text = driver.find_element(By.TAG_NAME, "body").text
    driver.switch_to.default_content()
    return text


def assertNoAlert(driver):
    from selenium.common.exceptions import NoAlertPresentException
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text


def noHorizontalScroll(driver):
    return driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.browser
class TestBrowser:
    def test_hostileMessageRunsAndLoadsNothing(self, webServer, browser, tracker, tmp_path):
        """
        A message carrying script, onerror, a javascript: link, an iframe, a
        form, CSS url() and a tracking image, opened in Chromium, fires no
        alert and makes no request to the tracker; only after "Show remote
        content" does the image (and nothing else) load.  Otherwise reading
        mail could run a sender's script in the user's session or tell the
        sender it was read.
        """
        from selenium.webdriver.common.by import By

        send(webServer, message("hostile", html=HOSTILE.format(port=tracker.port)))
        webServer.waitForMessages(BOB, 1)
        logIn(browser, webServer, BOB, PASSWORD)
        browser.get(base(webServer) + "/webmail/")
        text = openFirstMessage(browser)
        assert "Dear user" in text and "click me" in text and "styled" in text
        assertNoAlert(browser)
        # The body's own URL opened as a page is no different.
        src = browser.find_element(By.CSS_SELECTOR, "iframe.body").get_attribute("src")
        browser.get(src)
        assert "Dear user" in browser.find_element(By.TAG_NAME, "body").text
        assertNoAlert(browser)
        assert tracker.hits == []
        browser.back()
        clickAndLoad(browser, browser.find_element(By.LINK_TEXT, "Show remote content"))
        assert "Dear user" in openFirstMessageFrame(browser)
        waitFor(lambda: tracker.hits, 30, message="the remote image asked for")
        assertNoAlert(browser)
        assert set(tracker.hits) == {"/track"}

    def test_readAndTrashOnDesktopAndPhone(self, webServer, browser, tmp_path):
        """
        Bob logs in, sees INBOX with a message delivered over SMTP, opens
        it, and moves it to Trash; on a phone-sized screen (390x844) the
        list and the message fit the width (no sideways scrolling).
        Otherwise the webmail cannot be used, or not on a phone.
        """
        from selenium.webdriver.common.by import By

        send(webServer, message("Lunch on Friday?", text="Shall we meet at noon?\n"))
        webServer.waitForMessages(BOB, 1)
        logIn(browser, webServer, BOB, PASSWORD)
        clickAndLoad(browser, browser.find_element(By.LINK_TEXT, "Mail"))
        assert browser.find_element(By.TAG_NAME, "h1").text == "INBOX"
        assert "1" == browser.find_element(By.CSS_SELECTOR, ".folders .unread-count").text
        row = browser.find_element(By.CSS_SELECTOR, "ul.list li.unread")
        assert "Lunch on Friday?" in row.text and "alice@" in row.text
        screenshot(browser, tmp_path, "webmail-list.png")
        assert "Shall we meet at noon?" in openFirstMessage(browser)
        assert browser.find_element(By.TAG_NAME, "h1").text == "Lunch on Friday?"
        screenshot(browser, tmp_path, "webmail-message.png")

        browser.set_window_size(390, 844)
        browser.refresh()
        assert noHorizontalScroll(browser)
        screenshot(browser, tmp_path, "webmail-message-phone.png")
        browser.get(base(webServer) + "/webmail/")
        assert noHorizontalScroll(browser)
        assert browser.find_element(By.CSS_SELECTOR, "ul.list li a").is_displayed()
        screenshot(browser, tmp_path, "webmail-list-phone.png")

        openFirstMessage(browser)
        clickAndLoad(browser, browser.find_element(
            By.CSS_SELECTOR, "form[action='/webmail/action'] button[value='delete']"))
        assert notice(browser) == "1 message moved to Trash."
        assert browser.find_elements(By.CSS_SELECTOR, "ul.list li") == []
        clickAndLoad(browser, browser.find_element(By.LINK_TEXT, "Trash"))
        assert "Lunch on Friday?" in browser.find_element(By.CSS_SELECTOR, "ul.list").text
        assert webServer.messages(BOB) == [] and len(webServer.messages(BOB, "Trash")) == 1
