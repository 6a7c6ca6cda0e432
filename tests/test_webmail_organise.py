"""
The webmail's organising (issue 17): search, folder management, empty
Trash, spam buttons, drag and drop, live updates both ways, pictures
inside HTML mail (cid:), the phone-sized screen.

Units on the in-memory store; end to end, a real server (twistd) driven
by urllib (CSRF, one user against another's folders) and by headless
Chromium through Selenium, with a real IMAP client (IMAPClient) on the
other side of the live updates.
"""

import base64
import io
import os
import re
import time
import urllib.parse
from email.message import EmailMessage

import pytest
from imapclient import IMAPClient

from pymailer.store.memory import MemoryStore
from pymailer.store.observed import ObservedStore
from pymailer.web.webmail import content, folders
from pymailer.web.webmail.mailbox import PAGE_SIZE, Webmail
from pymailer.web.webmail.search import search

from mailserver import DOMAIN, PASSWORD, insecureTLS, waitFor
from test_web_admin import (  # noqa: F401 (fixtures)
    Client, base, browser, clickAndLoad, logIn, notice, screenshot, submitForm, webServer)
from test_webmail import (  # noqa: F401 (bigStore: a fixture)
    ALICE, BOB, bigStore, listPage, message, noHorizontalScroll, send, uidsIn)

USER = "carol@example.org"
# A 1x1 PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def fill(store, user=USER, folder="INBOX", count=3, **fields):
    box = store.mailbox(user, folder)
    for n in range(count):
        box.append(io.BytesIO(message(**{"subject": f"message {n}", **fields}).as_bytes()),
                   internalDate=1_700_000_000 + n)
    return box


# -- units ------------------------------------------------------------------------

class TestSearch:
    def test_fields(self):
        """
        A search finds messages by sender (name or address), recipient,
        subject or text, case-insensitively, and not by a field not asked
        for: otherwise a user cannot find a mail they know is there.
        """
        store = MemoryStore()
        box = store.mailbox(USER)
        for subject, sender, to, text in (
                ("Invoice 42", "Dora Dale <dora@example.net>", USER, "pay now\n"),
                ("Lunch", "erik@example.net", "team@example.org", "Gr\u00fc\u00dfe, noodles?\n"),
                ("re: lunch", "fay@example.net", USER, "yes\n")):
            box.append(io.BytesIO(message(subject, sender, to, text).as_bytes()))

        def subjects(query, where="all"):
            return sorted(r.subject for r in search(box, query, where).rows)

        assert subjects("LUNCH") == ["Lunch", "re: lunch"]
        assert subjects("dora", "from") == ["Invoice 42"]
        assert subjects("dora@example.NET", "from") == ["Invoice 42"]
        assert subjects("team@", "to") == ["Lunch"]
        assert subjects("noodles", "body") == ["Lunch"]
        assert subjects("gr\u00fc\u00dfe") == ["Lunch"]
        assert subjects("noodles", "subject") == []
        assert subjects("lunch", "from") == []
        with pytest.raises(ValueError):
            search(box, "   ")

    def test_paged(self):
        """
        Matches come newest first, a page at a time, and the page says
        whether there is another: otherwise a search in a big folder
        shows everything at once or loses results.
        """
        store = MemoryStore()
        box = fill(store, count=PAGE_SIZE + 5, text="needle\n")
        first = search(box, "needle", "body")
        assert len(first.rows) == PAGE_SIZE and first.more
        assert first.rows[0].subject == f"message {PAGE_SIZE + 4}"
        second = search(box, "needle", "body", page=1)
        assert [r.subject for r in second.rows] == [f"message {n}" for n in range(4, -1, -1)]
        assert not second.more


class TestFolders:
    def test_createRenameDelete(self):
        """
        A folder is created, renamed (its mail with it) and deleted; INBOX
        can be neither renamed nor deleted, a name that exists is refused,
        and a special-use folder (Sent, Trash...) goes only when the user
        confirms: otherwise one click loses a folder clients rely on.
        """
        store = MemoryStore()
        assert folders.createFolder(store, USER, "Projects") == "Folder Projects created."
        with pytest.raises(ValueError, match="exists"):
            folders.createFolder(store, USER, "Projects")
        fill(store, folder="Projects", count=2)
        folders.renameFolder(store, USER, "Projects", "Work/Projects")
        assert len(store.mailbox(USER, "Work/Projects").messages()) == 2
        for bad in (lambda: folders.renameFolder(store, USER, "INBOX", "Old"),
                    lambda: folders.deleteFolder(store, USER, "INBOX"),
                    lambda: folders.renameFolder(store, USER, "Work/Projects", "Sent")):
            with pytest.raises(ValueError):
                bad()
        with pytest.raises(KeyError):
            folders.deleteFolder(store, USER, "Nowhere")
        with pytest.raises(ValueError, match="confirm"):
            folders.deleteFolder(store, USER, "Sent")
        assert "Sent" in store.listMailboxes(USER)
        folders.deleteFolder(store, USER, "Sent", confirmed=True)
        folders.deleteFolder(store, USER, "Work/Projects")
        assert "Sent" not in store.listMailboxes(USER)
        assert "Work/Projects" not in store.listMailboxes(USER)

    def test_emptyTrashAndJunkOnly(self):
        """
        Empty expunges every message of Trash (or Junk) and refuses any
        other folder: otherwise "Empty" could wipe INBOX.
        """
        store = MemoryStore()
        fill(store, folder="Trash")
        fill(store, folder="INBOX")
        assert folders.emptyFolder(store, USER, "Trash") == "Trash emptied (3 messages deleted)."
        assert store.mailbox(USER, "Trash").messages() == []
        with pytest.raises(ValueError):
            folders.emptyFolder(store, USER, "INBOX")
        assert len(store.mailbox(USER).messages()) == 3

    def test_stateChangesWithTheFolder(self):
        """
        The state a page polls changes when a message arrives, has a flag
        changed or goes, and when another folder's counts change, and not
        otherwise: otherwise the open page misses changes, or reloads for
        nothing every few seconds.
        """
        store = MemoryStore()
        box = fill(store, count=1)
        seen = [folders.state(store, USER, "INBOX")]
        assert folders.state(store, USER, "INBOX") == seen[-1]
        for change in (lambda: box.append(io.BytesIO(b"Subject: x\r\n\r\nx\r\n")),
                       lambda: box.storeFlags([1], "add", ["\\Seen"]),
                       lambda: box.expunge([1]),
                       lambda: fill(store, folder="Archive", count=1)):
            change()
            seen.append(folders.state(store, USER, "INBOX"))
        assert len(set(seen)) == len(seen)


def test_bigFolderSearchAndState(bigStore):
    """
    In a SQLite folder of 10,000 messages, the folder list's counts and
    the state a page polls every few seconds take a few milliseconds
    (aggregate queries, nothing read per message), a sender search reads
    the stored summaries only, and a text search that fills its page
    early stops there (measured; the figures are printed).  Otherwise
    every open webmail tab loads the server, or a search times out.
    """
    user, timings = "carol@example.org", {}
    box = bigStore.mailbox(user)
    Webmail(bigStore).folderPage(user, "INBOX")  # summaries computed once, as at delivery
    for what, run in (
            ("counts", lambda: bigStore.mailboxCounts(user)),
            ("state", lambda: folders.state(bigStore, user, "INBOX")),
            ("from (all 10,000 summaries)", lambda: search(box, "sender 9999", "from")),
            ("text, first page", lambda: search(box, "body", "body"))):
        start = time.perf_counter()
        result = run()
        timings[what] = time.perf_counter() - start
        if what.startswith("from"):
            assert [r.subject for r in result.rows] == ["number 9999"]
        if what.startswith("text"):
            assert len(result.rows) == PAGE_SIZE and result.more
    assert bigStore.mailboxCounts(user)["INBOX"] == (10_000, 10_000)
    print("webmail 10,000-message folder:", {k: f"{v * 1000:.0f} ms" for k, v in timings.items()})
    assert timings["counts"] < 0.2 and timings["state"] < 0.2
    assert max(timings.values()) < 3.0, timings


class Recorder:
    """An IMailboxObserver that records transfers (as the spam trainer is told)."""

    def __init__(self):
        self.transfers = []

    def transferred(self, user, sourceName, target, pairs, move):
        self.transfers.append((sourceName, target.name, len(pairs), move))

    def flagged(self, user, mailbox, uids, mode, flags):
        pass


def test_spamMovesThroughTheTrainingPath():
    """
    Spam moves a message to Junk and Not spam back to INBOX, each as a
    MOVE the store's observer is told of (the learning filter trains on
    exactly those, as on Thunderbird's moves): otherwise the buttons do
    not teach the filter.
    """
    recorder = Recorder()
    store = ObservedStore(MemoryStore(), recorder)
    fill(store, count=1)
    mail = Webmail(store)
    assert mail.act(USER, "INBOX", [1], "spam") == "1 message moved to Junk."
    [junked] = [m.uid for m in store.mailbox(USER, "Junk").messages()]
    assert mail.act(USER, "Junk", [junked], "notspam") == "1 message moved to INBOX."
    assert recorder.transfers == [("INBOX", "Junk", 1, True), ("Junk", "INBOX", 1, True)]


def test_cidImagesShownFromTheMessage():
    """
    An HTML message's picture sent in the message (multipart/related, a
    cid: URL) is shown from its own part as a data: URL, a cid: naming no
    part shows nothing, and remote images stay blocked: otherwise
    newsletters and signatures show broken images, or load from outside.
    """
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ALICE, BOB, "picture"
    msg.set_content("text\n")
    msg.add_alternative('<p>logo <img src="cid:logo@x"> <img src="cid:missing@x">'
                        '<img src="https://t.example/p.gif"></p>', subtype="html")
    msg.get_payload()[1].add_related(PIXEL, "image", "png", cid="<logo@x>")
    shown = content.show(msg.as_bytes())
    data = "data:image/png;base64," + base64.b64encode(PIXEL).decode()
    assert f'<img src="{data}">' in shown.body
    assert "cid:" not in shown.body and "t.example" not in shown.body
    assert shown.remoteBlocked == 1


# -- over HTTP ------------------------------------------------------------------------

FOLDER_POSTS = (("/webmail/folders/create", {"name": "Made"}),
                ("/webmail/folders/rename", {"name": "Archive", "newname": "Renamed"}),
                ("/webmail/folders/delete", {"name": "Archive"}),
                ("/webmail/folders/empty", {"name": "Trash"}))


class TestHTTP:
    def test_everyNewPostNeedsTheCSRFToken(self, webServer):
        """
        Creating, renaming, deleting and emptying folders, and the spam
        buttons, without the session's CSRF token (or with another
        session's) are refused with 403 and change nothing: otherwise
        another site could wipe a user's folders.
        """
        send(webServer, message("keep me"))
        webServer.waitForMessages(BOB, 1)
        bob = Client(base(webServer))
        bob.logIn(BOB)
        [uid] = uidsIn(listPage(bob)[2])
        bob.request("/webmail/action", {"csrf": bob.csrf("/webmail/"), "name": "INBOX",
                                        "uid": uid, "action": "delete"})
        assert len(webServer.messages(BOB, "Trash")) == 1
        other = Client(base(webServer))
        other.logIn(ALICE)
        posts = FOLDER_POSTS + (("/webmail/action", {"name": "Trash", "uid": uid,
                                                     "action": "spam"}),)
        for path, form in posts:
            for token in (None, other.csrf("/webmail/")):
                sent = dict(form, **({"csrf": token} if token else {}))
                assert bob.request(path, sent)[0] == 403, (path, token)
        store = webServer.store()
        assert store.listMailboxes(BOB) == ["INBOX", "Archive", "Drafts", "Junk", "Sent",
                                            "Trash"]
        assert len(webServer.messages(BOB, "Trash")) == 1

    def test_oneUserCannotTouchAnothersFolders(self, webServer):
        """
        Alice naming Bob's folder (or a path meant to reach his) in every
        folder action and in search and state only ever reaches her own
        folders: Bob's folder, its messages and his Trash stay as they
        were.  Otherwise one user could delete another's mail.
        """
        send(webServer, message("bob's secret"))
        webServer.waitForMessages(BOB, 1)
        bob = Client(base(webServer))
        bob.logIn(BOB)
        csrf = bob.csrf("/webmail/")
        assert bob.request("/webmail/folders/create", {"csrf": csrf, "name": "Private"})[0] == 303
        [uid] = uidsIn(listPage(bob)[2])
        bob.request("/webmail/action", {"csrf": csrf, "name": "INBOX", "uid": uid,
                                        "action": "move", "target": "Private"})
        alice = Client(base(webServer))
        alice.logIn(ALICE)
        token = alice.csrf("/webmail/")
        for name in ("Private", f"../bob@{DOMAIN}/Private", f"{BOB}/Private"):
            for path, form in FOLDER_POSTS[1:]:  # creating makes her own
                form = dict(form, csrf=token, name=name)
                assert alice.request(path, form)[0] == 303
            for path in (f"/webmail/search?name={name}&q=secret",
                         f"/webmail/folder?name={name}"):
                status, _, page = alice.request(path)
                assert status == 404 and "secret" not in page
        assert "Private" in webServer.store().listMailboxes(BOB)
        assert len(webServer.messages(BOB, "Private")) == 1
        assert "Private" not in webServer.store().listMailboxes(ALICE)

    def test_folderNamesWithWildcardsOrBidiControlsRefused(self, webServer):
        """
        Creating (or renaming to) a folder whose name holds * or % (which
        IMAP clients' LIST patterns cannot address) or a right-to-left
        override (which makes "gpj.exe" show as "exe.jpg") is refused with
        a notice that says why; the folders stay as they were.  A name in
        another script is still made.
        """
        bob = Client(base(webServer))
        bob.logIn(BOB)
        csrf = bob.csrf("/webmail/")
        before = webServer.store().listMailboxes(BOB)
        for path, form, reason in (
                ("/webmail/folders/create", {"name": "Reports*"}, "* is not allowed"),
                ("/webmail/folders/create", {"name": "50%"}, "% is not allowed"),
                ("/webmail/folders/create", {"name": "invoice\u202egpj.exe"},
                 "U+202E (right-to-left override) is not allowed"),
                ("/webmail/folders/rename", {"name": "Archive", "newname": "Arch\u2066ive"},
                 "U+2066 (left-to-right isolate) is not allowed")):
            status, headers, _ = bob.request(path, dict(form, csrf=csrf))
            assert (status, headers["Location"]) == (303, "/webmail/folders")
            page = bob.request("/webmail/folders")[2]
            [shown] = re.findall(r'<p class="notice error"[^>]*>([^<]*)</p>', page)
            assert shown.startswith("Not a folder name: ") and reason in shown, shown
        assert webServer.store().listMailboxes(BOB) == before
        status, _, _ = bob.request("/webmail/folders/create", {"csrf": csrf, "name": "Счета"})
        assert status == 303 and "Счета" in webServer.store().listMailboxes(BOB)

    def test_existingBidiFolderNameShownIsolated(self, webServer):
        """
        A folder whose name holds a right-to-left override (made before
        such names were refused, or imported) is shown inside <bdi> on the
        folder list, the folder's own page, the folders page and its
        search page (FSI ... PDI where only text may go: the page title,
        the move menu, a notice), so it reorders only itself: otherwise
        "Empty", "Search" or the unread count beside it would read
        backwards, or "invoice\u202egpj.exe" would pass for "invoiceexe.jpg"
        in a sentence.  It can still be opened and renamed away.
        """
        name = "invoice\u202egpj.exe"
        webServer.store().importMailbox(BOB, name, 77, [])
        bob = Client(base(webServer))
        bob.logIn(BOB)
        folder = "/webmail/folder?name=" + urllib.parse.quote(name)
        search = "/webmail/search?name=" + urllib.parse.quote(name) + "&q=x"
        for path in (folder, "/webmail/folders", "/webmail/", search):
            status, _, page = bob.request(path)
            assert status == 200, path
            assert f"<bdi>{name}</bdi>" in page, path
            # Its every showing is isolated: nothing of it is left once
            # the isolates and the tags (with their attributes) are gone.
            rest = re.sub(r"<bdi>[^<]*</bdi>|\u2068[^\u2069]*\u2069|<[^>]*>", "", page)
            assert "\u202e" not in rest, path
        title = re.search(r"<title>([^<]*)</title>", bob.request(folder)[2]).group(1)
        assert title == f"\u2068{name}\u2069 - pymailer"
        csrf = bob.csrf("/webmail/folders")
        bob.request("/webmail/folders/rename", {"csrf": csrf, "name": name, "newname": "Invoice"})
        page = bob.request("/webmail/folders")[2]
        [shown] = re.findall(r'<p class="notice ok"[^>]*>([^<]*)</p>', page)
        assert shown == f"Folder \u2068{name}\u2069 renamed to Invoice."
        assert "Invoice" in webServer.store().listMailboxes(BOB)

    def test_folderNameNotUTF8OnDiskShownEscapedAndReachable(self, makeMailServer):
        """
        A Maildir folder whose directory name is Latin-1, not UTF-8 (made by
        another program, or copied in), is listed as its octets escaped,
        Entw\\xfcrfe, on every page; its link opens it with its mail, and it
        can be renamed to a valid name.  It used to make every page that
        lists the folders answer 500 (a name no page could be encoded with).
        """
        server = makeMailServer(roles=("https",), sections={"storage": {"backend": "maildir"}})
        folder = os.path.join(os.fsencode(server.store()._userDir(BOB)), b".Entw\xfcrfe")
        for sub in (b"cur", b"new", b"tmp"):
            os.makedirs(os.path.join(folder, sub))
        with open(os.path.join(folder, b"new", b"1700000000.M1P1.test"), "wb") as f:
            f.write(message("kept in latin-1").as_bytes())
        shown = "Entw\\xfcrfe"
        bob = Client(base(server))
        bob.logIn(BOB)
        for path in ("/webmail/", "/webmail/folders"):
            status, _, page = bob.request(path)
            assert status == 200, path
            assert f"<bdi>{shown}</bdi>" in page, path
        status, _, page = bob.request("/webmail/folder?name=" + urllib.parse.quote(shown))
        assert status == 200 and "kept in latin-1" in page
        csrf = bob.csrf("/webmail/folders")
        bob.request("/webmail/folders/rename",
                    {"csrf": csrf, "name": shown, "newname": "Entw\u00fcrfe"})
        names = server.store().listMailboxes(BOB)
        assert "Entw\u00fcrfe" in names and not any("\udcfc" in n for n in names)

    def test_liveStateAndScript(self, webServer):
        """
        The folder page carries its state and our script under a nonce the
        CSP names (no other script may run); the state answers JSON that
        changes when mail arrives, and 403 without a session.  Otherwise
        live updates cannot work, or the page lets other scripts run.
        """
        bob = Client(base(webServer))
        bob.logIn(BOB)
        status, headers, page = listPage(bob)
        policy = headers["Content-Security-Policy"]
        [nonce] = re.findall(r"script-src 'nonce-([^']+)'", policy)
        assert f'<script src="/webmail/webmail.js" nonce="{nonce}"></script>' in page
        assert "unsafe-inline" not in policy and "connect-src 'self'" in policy
        [state] = re.findall(r'data-state="([0-9a-f]+)"', page)
        status, headers, script = bob.request("/webmail/webmail.js")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        status, headers, answer = bob.request("/webmail/state?name=INBOX")
        assert status == 200 and answer == f'{{"state": "{state}"}}'
        assert headers["Content-Type"] == "application/json"
        send(webServer, message("news"))
        webServer.waitForMessages(BOB, 1)
        assert bob.request("/webmail/state?name=INBOX")[2] != answer
        assert Client(base(webServer)).request("/webmail/state?name=INBOX")[0] == 403
        # A message page (which shows the sender's words) has no script at all.
        [uid] = uidsIn(listPage(bob)[2])
        status, headers, page = bob.request(f"/webmail/message?name=INBOX&uid={uid}")
        assert "script-src" not in headers["Content-Security-Policy"] and "<script" not in page


# -- in the browser --------------------------------------------------------------------

def imap(server, user=BOB):
    client = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                        ssl_context=insecureTLS(), timeout=20)
    client.login(user, PASSWORD)
    return client


def listed(driver):
    """The subjects listed, read at once (the page may be reloading)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('ul.list li .subject'),"
        " e => e.textContent)")


def dragOnto(driver, row, link):
    """
    Drag C{row} onto C{link} with the HTML5 drag events Chromium would
    send (chromedriver's own drag does not send them).
    """
    driver.execute_script("""
        const [row, link] = arguments, data = new DataTransfer();
        for (const [node, kind] of [[row, 'dragstart'], [link, 'dragover'], [link, 'drop'],
                                    [row, 'dragend']])
            node.dispatchEvent(new DragEvent(kind, {bubbles: true, cancelable: true,
                                                    dataTransfer: data}));
    """, row, link)


@pytest.mark.browser
class TestBrowser:
    def test_searchSpamAndDrag(self, webServer, browser, tmp_path):
        """
        Bob searches his INBOX (by sender, then by text), marks a message
        as spam (it goes to Junk), says "Not spam" there (it comes back),
        and drags one onto Archive: otherwise he cannot find or sort his
        mail in the browser.
        """
        from selenium.webdriver.common.by import By

        send(webServer, message("Invoice 42", text="please pay\n"))
        send(webServer, message("Lunch", text="noodles at noon\n"))
        send(webServer, message("Cheap pills", text="buy now\n"))
        webServer.waitForMessages(BOB, 3)
        logIn(browser, webServer, BOB, PASSWORD)
        browser.get(base(webServer) + "/webmail/")
        submitForm(browser, "/webmail/search", q="noodles")
        assert listed(browser) == ["Lunch"]
        screenshot(browser, tmp_path, "webmail-search.png")
        submitForm(browser, "/webmail/search", q="alice@")
        assert sorted(listed(browser)) == ["Cheap pills", "Invoice 42", "Lunch"]

        browser.get(base(webServer) + "/webmail/")
        row = browser.find_element(By.XPATH, "//li[.//span[text()='Cheap pills']]")
        row.find_element(By.NAME, "uid").click()
        clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, "button[value='spam']"))
        assert notice(browser) == "1 message moved to Junk."
        assert "Cheap pills" not in listed(browser)
        clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, ".folders a[data-folder=Junk]"))
        assert listed(browser) == ["Cheap pills"]
        browser.find_element(By.NAME, "uid").click()
        clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, "button[value='notspam']"))
        assert notice(browser) == "1 message moved to INBOX."
        assert len(webServer.messages(BOB)) == 3 and webServer.messages(BOB, "Junk") == []

        browser.get(base(webServer) + "/webmail/")
        row = browser.find_element(By.XPATH, "//li[.//span[text()='Invoice 42']]")
        archive = browser.find_element(By.CSS_SELECTOR, ".folders a[data-folder=Archive]")
        page = browser.find_element(By.TAG_NAME, "html")
        dragOnto(browser, row, archive)
        waitFor(lambda: _stale(page), 20, message="the page after the drop")
        waitFor(lambda: browser.execute_script("return document.readyState") == "complete", 20)
        assert notice(browser) == "1 message moved to Archive."
        assert "Invoice 42" not in listed(browser)
        assert len(webServer.messages(BOB, "Archive")) == 1

    def test_foldersAndEmptyTrash(self, webServer, browser, tmp_path):
        """
        Bob creates a folder, renames it, deletes it, is stopped from
        deleting Sent without ticking the box, and empties his Trash:
        otherwise he needs an IMAP client to manage folders.
        """
        from selenium.webdriver.common.by import By

        send(webServer, message("old news"))
        webServer.waitForMessages(BOB, 1)
        logIn(browser, webServer, BOB, PASSWORD)
        browser.get(base(webServer) + "/webmail/")
        clickAndLoad(browser, browser.find_element(By.LINK_TEXT, "Manage folders"))
        submitForm(browser, "/webmail/folders/create", name="Projects")
        assert notice(browser) == "Folder Projects created."
        row = browser.find_element(By.CSS_SELECTOR, "tr[data-folder=Projects]")
        box = row.find_element(By.NAME, "newname")
        box.clear()
        box.send_keys("Work/Projects")
        clickAndLoad(browser, row.find_element(By.XPATH, ".//button[text()='Rename']"))
        assert notice(browser) == "Folder Projects renamed to Work/Projects."
        screenshot(browser, tmp_path, "webmail-folders.png")
        row = browser.find_element(By.CSS_SELECTOR, "tr[data-folder='Work/Projects']")
        clickAndLoad(browser, row.find_element(By.XPATH, ".//button[text()='Delete']"))
        assert notice(browser) == "Folder Work/Projects deleted with its messages."
        row = browser.find_element(By.CSS_SELECTOR, "tr[data-folder=Sent]")
        clickAndLoad(browser, row.find_element(By.XPATH, ".//button[text()='Delete']"))
        assert "tick the box" in notice(browser)
        assert "Sent" in webServer.store().listMailboxes(BOB)

        browser.get(base(webServer) + "/webmail/")
        browser.find_element(By.NAME, "uid").click()
        clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, "button[value='delete']"))
        clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, ".folders a[data-folder=Trash]"))
        assert listed(browser) == ["old news"]
        clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, "form.empty button"))
        assert notice(browser) == "Trash emptied (1 message deleted)."
        assert listed(browser) == [] and webServer.messages(BOB, "Trash") == []

    def test_liveUpdatesBothWays(self, webServer, browser):
        """
        With INBOX open in the browser, a message appended over IMAP shows
        within seconds without a reload by hand; a message flagged in the
        browser is told at once to an IMAP client waiting in IDLE.
        Otherwise the webmail and Thunderbird disagree until someone
        reloads.
        """
        from selenium.webdriver.common.by import By

        send(webServer, message("first"))
        webServer.waitForMessages(BOB, 1)
        logIn(browser, webServer, BOB, PASSWORD)
        browser.get(base(webServer) + "/webmail/")
        assert listed(browser) == ["first"]
        client = imap(webServer)
        client.append("INBOX", message("from Thunderbird").as_bytes())
        start = time.monotonic()
        waitFor(lambda: "from Thunderbird" in listed(browser), 15,
                message="the IMAP append in the open page")
        assert time.monotonic() - start < 10
        client.select_folder("INBOX")
        client.idle()
        browser.find_element(By.XPATH, "//li[.//span[text()='first']]//input").click()
        clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, "button[value='flag']"))
        responses, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline and not any(b"\\Flagged" in repr(r).encode()
                                                      for r in responses):
            responses += client.idle_check(timeout=1)
        client.idle_done()
        client.logout()
        assert any(b"FETCH" in r and b"\\Flagged" in repr(r[2]).encode()
                   for r in responses if len(r) > 2), responses

    def test_phoneViewport(self, webServer, browser, tmp_path):
        """
        At 375x740 the folder list, a folder with the search box, the
        search results and the folders page fit the width (no sideways
        scrolling) and their controls are on screen: otherwise the
        webmail is unusable on a phone.
        """
        from selenium.webdriver.common.by import By

        send(webServer, message("A subject long enough to wrap on a small phone screen, "
                                "really quite long"))
        webServer.waitForMessages(BOB, 1)
        logIn(browser, webServer, BOB, PASSWORD)
        browser.set_window_size(375, 740)
        for path in ("/webmail/", "/webmail/search?name=INBOX&q=subject",
                     "/webmail/folders"):
            browser.get(base(webServer) + path)
            assert noHorizontalScroll(browser), path
        browser.get(base(webServer) + "/webmail/")
        for selector in ("form.search input[type=search]", "button[value='spam']",
                         ".folders a[data-folder=Trash]", "ul.list li a"):
            assert browser.find_element(By.CSS_SELECTOR, selector).is_displayed(), selector
        screenshot(browser, tmp_path, "webmail-folder-phone.png")
        browser.get(base(webServer) + "/webmail/folders")
        assert browser.find_element(By.CSS_SELECTOR, "form.create button").is_displayed()
        screenshot(browser, tmp_path, "webmail-folders-phone.png")


def _stale(element):
    from selenium.common.exceptions import StaleElementReferenceException
    try:
        element.tag_name
    except StaleElementReferenceException:
        return True
    return False
