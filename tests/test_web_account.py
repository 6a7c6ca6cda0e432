"""
C{/account/} (issue 16, third step): a user changes their password, sees
their mailboxes and sets forwarding, on a real server (twistd) driven by
headless Chromium and by urllib.
"""

import imaplib
import smtplib
from email.message import EmailMessage

import pytest

from pymailer.web.account import formatSize
from pymailer.web.operations import MISMATCH, WRONG_PASSWORD

from mailserver import DOMAIN, PASSWORD, insecureTLS, waitFor
from test_web_admin import (  # noqa: F401 (fixtures)
    Client, assertIMAPLogin, base, browser, clickAndLoad, logIn, notice, screenshot, submitForm, webServer)

BOB = f"bob@{DOMAIN}"


def send(server, to, subject="hello"):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"alice@{DOMAIN}", to, subject
    msg.set_content("some text\n")
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=insecureTLS(),
                          timeout=10) as client:
        client.login(f"alice@{DOMAIN}", PASSWORD)
        client.send_message(msg)


def test_formatSize():
    """Sizes read as people read them: otherwise the mailbox table shows raw byte counts."""
    assert formatSize(0) == "0 bytes"
    assert formatSize(1023) == "1023 bytes"
    assert formatSize(1536) == "1.5 KiB"
    assert formatSize(5 * 1024 ** 3) == "5.0 GiB"


@pytest.mark.browser
def test_userChangesPassword(webServer, browser, tmp_path):
    """
    A user (not an admin) logs in, lands on their account page with their
    mailboxes, changes their password (a wrong current password or two
    different new ones are refused), logs in again with the new one, and
    IMAP LOGIN takes the new password and refuses the old: otherwise users
    could not change their own password, or the change would not apply.
    """
    from selenium.webdriver.common.by import By
    send(webServer, BOB)
    webServer.waitForMessages(BOB, 1)
    logIn(browser, webServer, BOB, PASSWORD)
    assert browser.current_url == base(webServer) + "/account/"
    assert browser.find_element(By.TAG_NAME, "h1").text == "My account"
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table tr")]
    assert any(r.startswith("INBOX 1 ") for r in rows), rows
    # No link to the admin pages for a user who may not use them.
    assert "/admin/" not in browser.page_source
    screenshot(browser, tmp_path, "account.png")

    new = "a brand new passphrase"
    submitForm(browser, "/account/password", current="wrong", new=new, again=new)
    assert notice(browser) == WRONG_PASSWORD
    submitForm(browser, "/account/password", current=PASSWORD, new=new, again=new + "x")
    assert notice(browser) == MISMATCH
    submitForm(browser, "/account/password", current=PASSWORD, new=new, again=new)
    assert notice(browser) == "Password changed."

    clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/logout'] button"))
    logIn(browser, webServer, BOB, PASSWORD)
    assert browser.current_url.endswith("/login")
    logIn(browser, webServer, BOB, new)
    assert browser.current_url == base(webServer) + "/account/"

    imap = imaplib.IMAP4_SSL("127.0.0.1", webServer.ports["imaps"], ssl_context=insecureTLS())
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(BOB, PASSWORD)
    imap = imaplib.IMAP4_SSL("127.0.0.1", webServer.ports["imaps"], ssl_context=insecureTLS())
    assert imap.login(BOB, new)[0] == "OK"
    imap.logout()


def test_changedPasswordKeepsItsSpaces(webServer):
    """
    A user who changes their password to one with spaces at both ends
    logs in over IMAP with exactly that: otherwise the password they typed
    (twice) never works again.
    """
    client = Client(base(webServer))
    assert client.logIn(BOB)[0] == 303
    typed = "  pass phrase "
    status, headers, _ = client.request("/account/password", {
        "csrf": client.csrf("/account/"), "current": PASSWORD, "new": typed, "again": typed})
    assert (status, headers["Location"]) == (303, "/account/")
    assert "Password changed." in client.request("/account/")[2]
    assertIMAPLogin(webServer, BOB, typed, refused=typed.strip())


def test_forwardingKeepsACopy(webServer):
    """
    A user sets forwarding to a remote address keeping a copy: mail to
    them lands in their INBOX and is queued for the remote address; with
    forwarding stopped, mail only lands in the INBOX.  A forged POST
    without the form's token changes nothing.  Otherwise forwarding set on
    the account page would lose mail or not forward it.
    """
    client = Client(base(webServer))
    assert client.logIn(BOB)[0] == 303
    status, _, _ = client.request("/account/forwarding",
                                  {"target": "bob@elsewhere.example", "keep": "1"})
    assert status == 403
    assert "Not forwarding." in client.request("/account/")[2]
    token = client.csrf("/account/")
    status, headers, _ = client.request(
        "/account/forwarding", {"csrf": token, "target": "bob@elsewhere.example", "keep": "1"})
    assert (status, headers["Location"]) == (303, "/account/")
    page = client.request("/account/")[2]
    assert "Forwarding to bob@elsewhere.example, keeping a copy." in page
    assert "Now forwarding to bob@elsewhere.example; this mailbox keeps a copy." in page

    send(webServer, BOB, "forwarded")
    webServer.waitForMessages(BOB, 1)
    # The envelope, not just any file: the data file lands in deferred/ first.
    queued = waitFor(lambda: webServer.queueEnvelopes(("deferred",)), 30,
                     message="the forward queued")
    (queueId,) = queued["deferred"]
    assert "bob@elsewhere.example" in webServer.admin("queue", "show", queueId).stdout

    client.request("/account/forwarding", {"csrf": token, "target": ""})
    assert "Forwarding stopped." in client.request("/account/")[2]
    assert webServer.admin("alias", "list").stdout.count("bob@") == 0


def test_userSeesAndCorrectsTheSpamFilter(webServer):
    """
    The account page shows what the user's spam filter learnt (trained
    message counts, senders judged), forgets one sender and resets all of
    it, each only with the form's token; otherwise a user could not see
    or undo a wrong lesson (issue 16's "see and correct the training").
    """
    from pymailer.spam.db import SPAM, ClassifierDB, dbPath

    db = ClassifierDB(dbPath(webServer.dataDir))
    db.train(BOB, "digest-1", ["cheap", "pills"], SPAM)
    db.recordSender(BOB, [("address", "shop@example.net"), ("ip", "192.0.2.7")], SPAM)
    client = Client(base(webServer))
    assert client.logIn(BOB)[0] == 303
    page = client.request("/account/")[2]
    assert "Trained on 1 spam and 0 legitimate messages." in page
    assert 'value="shop@example.net"' in page and "192.0.2.7" in page
    forget = {"kind": "address", "value": "shop@example.net"}
    assert client.request("/account/spam/forget", forget)[0] == 403  # no token
    assert db.senders(BOB) != [("ip", "192.0.2.7", 1, 0)]
    token = client.csrf("/account/")
    status, headers, _ = client.request("/account/spam/forget", {"csrf": token, **forget})
    assert (status, headers["Location"]) == (303, "/account/")
    page = client.request("/account/")[2]
    assert "forgot what it knew of shop@example.net" in page
    assert 'value="shop@example.net"' not in page  # its row and Forget button gone
    assert db.senders(BOB) == [("ip", "192.0.2.7", 1, 0)]
    assert client.request("/account/spam/reset", {"csrf": token})[0] == 303
    page = client.request("/account/")[2]
    assert "Trained on 0 spam and 0 legitimate messages." in page
    assert "It knows no senders yet." in page
    assert db.totals(BOB) == (0, 0)


def test_appleProfile(webServer):
    """
    A logged-in user downloads their Apple configuration profile: a plist
    with one com.apple.mail.managed payload naming their address and the
    configured imaps and submissions ports with TLS, no password, served as
    an attachment of type application/x-apple-aspen-config; without a
    session it sends to the login page: otherwise iPhones and Macs could
    not set the account up from it, or it would leak to strangers.
    """
    import plistlib
    client = Client(base(webServer))
    status, headers, _ = client.request("/account/apple.mobileconfig")
    assert (status, headers["Location"]) == (303, "/login")
    client.logIn(BOB)
    request = client.opener.open(base(webServer) + "/account/apple.mobileconfig", timeout=20)
    with request as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-apple-aspen-config"
        assert response.headers["Content-Disposition"].startswith("attachment;")
        profile = plistlib.loads(response.read())
    assert profile["PayloadType"] == "Configuration"
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["EmailAddress"] == mail["IncomingMailServerUsername"] == BOB
    assert mail["IncomingMailServerPortNumber"] == webServer.ports["imaps"]
    assert mail["OutgoingMailServerPortNumber"] == webServer.ports["submissions"]
    assert mail["IncomingMailServerUseSSL"] and mail["OutgoingMailServerUseSSL"]
    assert mail["IncomingMailServerHostName"] == "mail.example.org"
    assert not any("Password" in key and key != "OutgoingPasswordSameAsIncomingPassword"
                   and "Authentication" not in key for key in mail)
    assert PASSWORD.encode() not in plistlib.dumps(profile)
