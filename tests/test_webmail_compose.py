"""
The webmail's writing (issue 17): compose, reply, reply all, forward
(inline and as an attachment), attachments, drafts, sending through the
submission path with a copy in Sent.

Units: the MIME built (non-ASCII headers and names, attachments, a
forwarded message kept byte for byte, reply fields) and the form parser.
End to end: a real server (twistd) driven by urllib (multipart posts,
forged and hostile ones) and by headless Chromium through Selenium (a
user replies with an uploaded file; the recipient reads it over IMAP).
"""

import email
import email.policy
import imaplib
import io
import re
import uuid

import pytest

from pymailer.web.webmail import compose, content, outgoing

from mailserver import DOMAIN, PASSWORD, insecureTLS, waitFor
from test_web_admin import (  # noqa: F401 (fixtures)
    Client, base, browser, clickAndLoad, logIn, notice, screenshot, webServer)
from test_webmail import (
    ALICE, BOB, listPage, message, noHorizontalScroll, openFirstMessage, send, uidsIn)

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40


def parsed(octets):
    return email.message_from_bytes(octets, policy=email.policy.default)


def textOf(message):
    """The plain text of a parsed message, LF line ends."""
    return message.get_body(("plain",)).get_content().replace("\r\n", "\n")


# -- units ----------------------------------------------------------------------

class TestOutgoing:
    def test_nonASCIIHeadersAndAttachments(self):
        """
        A message with a non-ASCII subject, display name, text and file
        name goes out as 7-bit MIME: encoded words (RFC 2047), an RFC 2231
        file name, quoted-printable UTF-8 text, the file in base64; a Date
        and a Message-ID of the sender's domain; Bcc only in the copy kept.
        Otherwise recipients see mojibake, lose the attachment, or learn
        who was Bcc'd.
        """
        composed = outgoing.Composed(
            sender="Zo\u00eb \u00c5berg <bob@example.org>", to="Ann <ann@example.net>",
            bcc="hidden@example.net", subject="Caf\u00e9 \u2615 menu",
            body="Ol\u00e1, see the r\u00e9sum\u00e9\n",
            attachments=[outgoing.Attachment("r\u00e9sum\u00e9.pdf", "application/pdf", PDF),
                         outgoing.Attachment("x.bin", "text/html; <script>", b"\x00\x01")])
        built = outgoing.build(composed)
        octets = outgoing.octetsOf(built)
        assert octets.isascii() and outgoing.bodyType(octets) == "7BIT"
        assert b"\r\nSubject: =?utf-8?" in octets and b"Bcc" not in octets
        assert re.search(rb"\r\nMessage-ID: <[^>]+@example\.org>\r\n", octets)
        back = parsed(octets)
        assert back["Subject"] == "Caf\u00e9 \u2615 menu"
        assert back["From"].addresses[0].display_name == "Zo\u00eb \u00c5berg"
        assert back["Date"].datetime is not None
        assert textOf(back) == "Ol\u00e1, see the r\u00e9sum\u00e9\n"
        shown = content.show(octets)
        assert [(a.filename, a.contentType, a.size) for a in shown.attachments] == [
            ("r\u00e9sum\u00e9.pdf", "application/pdf", len(PDF)),
            ("x.bin", "application/octet-stream", 2)]
        assert content.attachmentPart(back, shown.attachments[0].part)[2] == PDF
        kept = outgoing.octetsOf(outgoing.build(composed, withBcc=True))
        assert parsed(kept)["Bcc"] == "hidden@example.net"
        cut = outgoing.withoutBcc(kept)
        assert b"Bcc" not in cut and kept.replace(b"Bcc: hidden@example.net\r\n", b"") == cut
        many = outgoing.Composed(sender="bob@example.org", to="ann@example.net",
                                 bcc=", ".join(f"R\u00e9 {n} <r{n}@example.net>"
                                               for n in range(9)))
        folded = outgoing.octetsOf(outgoing.build(many, withBcc=True))
        assert b"\r\n " in folded.split(b"\r\n\r\n")[0]  # the Bcc field is folded
        assert parsed(outgoing.withoutBcc(folded)).keys() == [
            k for k in parsed(folded).keys() if k != "Bcc"]
        assert outgoing.recipients(composed) == ["ann@example.net", "hidden@example.net"]

    def test_forwardedMessageKeptByteForByte(self):
        """
        A message forwarded as an attachment is a message/rfc822 part with
        the stored octets unchanged (8-bit text, odd folding and all), and
        the message says BODY=8BITMIME; the reader lists it as one
        attachment: otherwise the forward breaks the original's DKIM
        signature, mangles its text, or cannot be opened.
        """
        original = (b"From: Ren\xc3\xa9 <rene@example.net>\r\nSubject: r\xc3\xa9union\r\n"
                    b"X-Odd:   folded\r\n  oddly\r\n\r\nd\xc3\xa9j\xc3\xa0 vu\r\n")
        octets = outgoing.octetsOf(outgoing.build(outgoing.Composed(
            sender="bob@example.org", to="ann@example.net", subject="Fwd: r\u00e9union",
            messages=[original])))
        assert b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n" in octets
        assert b"\r\n\r\n" + original + b"\r\n--" in octets
        assert outgoing.bodyType(octets) == "8BITMIME"
        [part] = [p for p in parsed(octets).walk() if p.get_content_type() == "message/rfc822"]
        assert part.get_payload(0)["Subject"] == "r\u00e9union"
        # The reader lists it as one attachment, downloadable whole.
        [listed] = content.show(octets).attachments
        assert (listed.filename, listed.contentType) == ("r\u00e9union.eml", "message/rfc822")
        forwarded = content.attachmentPart(parsed(octets), listed.part)[2]
        assert forwarded.endswith(b"\r\n\r\nd\xc3\xa9j\xc3\xa0 vu\r\n")
        assert parsed(forwarded)["Subject"] == "r\u00e9union"

    def test_replyFields(self):
        """
        A reply goes to Reply-To (else From), says "Re:" once, quotes the
        text, and carries In-Reply-To and References; reply all adds the
        other To and Cc but never the user: otherwise replies thread badly,
        go to the wrong people, or to oneself.
        """
        original = parsed(
            b"From: Ann <ann@example.net>\r\nReply-To: list@example.net\r\n"
            b"To: bob@example.org, Carl <carl@example.net>\r\nCc: BOB@example.org, d@example.net\r\n"
            b"Subject: Re: plans\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n"
            b"Message-ID: <two@example.net>\r\nReferences: <one@example.net>\r\n\r\n"
            b"first line\r\n\r\nlast line\r\n")
        one = outgoing.reply(original, ["bob@example.org"])
        assert one["to"] == "list@example.net" and one["cc"] == ""
        assert one["subject"] == "Re: plans"
        assert one["inReplyTo"] == "<two@example.net>"
        assert one["references"] == "<one@example.net> <two@example.net>"
        assert "wrote:\n> first line\n>\n> last line\n" in one["body"]
        every = outgoing.reply(original, ["bob@example.org"], replyAll=True)
        assert every["cc"] == "Carl <carl@example.net>, d@example.net"
        own = parsed(b"From: bob@example.org\r\nTo: Ann <ann@example.net>\r\nSubject: hi\r\n\r\nx")
        assert outgoing.reply(own, ["bob@example.org"])["to"] == "Ann <ann@example.net>"
        forward = outgoing.forward(original)
        assert forward["subject"] == "Fwd: Re: plans" and "first line" in forward["body"]

    def test_hostileFieldsCannotAddHeaders(self):
        """
        A subject or address field carrying CR LF and a header stays one
        field, and something that is no address is refused: otherwise a
        form could add a Bcc or Received line of its own.
        """
        octets = outgoing.octetsOf(outgoing.build(outgoing.Composed(
            sender="bob@example.org", to="ann@example.net",
            subject="hi\r\nBcc: victim@example.net")))
        assert b"\r\nBcc:" not in octets and b"Subject: hi Bcc: victim@example.net" in octets
        for bad in ("ann@example.net\r\nBcc: x@example.net", "not an address", "a@b@c",
                    "<a@example.net>, b"):
            with pytest.raises(ValueError):
                outgoing.recipients(outgoing.Composed(sender="bob@example.org", to=bad))

    def test_parseFormKeepsFileNames(self):
        """The form parser keeps each upload's name and type, and the other
        fields as text: otherwise attachments arrive nameless."""
        body, contentType = multipart(
            {"csrf": "t", "subject": "caf\u00e9", "keep": ["1", "whole"]},
            [("r\u00e9sum\u00e9.pdf", "application/pdf", PDF), ("", "application/octet-stream",
                                                               b"")])
        fields, files = compose.parseForm(contentType.encode(), io.BytesIO(body))
        assert fields["subject"] == "caf\u00e9" and fields["keep"] == ["1", "whole"]
        assert [(f.filename, f.contentType, f.data) for f in files] == [
            ("r\u00e9sum\u00e9.pdf", "application/pdf", PDF)]


def multipart(fields, files=()):
    """A multipart/form-data body as a browser sends it: C{(body, content type)}."""
    boundary = "----pymailer" + uuid.uuid4().hex
    out = []
    for name, values in fields.items():
        for value in values if isinstance(values, list) else [values]:
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
                       f"\r\n\r\n{value}\r\n".encode())
    for filename, contentType, data in files:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; '
                   f'filename="{filename}"\r\nContent-Type: {contentType}\r\n\r\n'.encode()
                   + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def post(client, fields, files=()):
    body, contentType = multipart(fields, files)
    import urllib.request
    request = urllib.request.Request(client.root + compose.PATH, body,
                                     headers={"Content-Type": contentType})
    try:
        with client.opener.open(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def formOf(client, path):
    """The compose page's hidden fields and the CSRF token."""
    status, _, page = client.request(path)
    assert status == 200, page
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)), page


def imapMessages(server, user, folder="INBOX"):
    with imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=insecureTLS(),
                           timeout=20) as imap:
        imap.login(user, PASSWORD)
        imap.select(f'"{folder}"', readonly=True)
        _, data = imap.uid("SEARCH", None, "ALL")
        found = []
        for uid in data[0].split():
            _, fetched = imap.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
            found.append((fetched[0][0].decode(), fetched[0][1]))
        return found


# -- end to end with an HTTP client -------------------------------------------------

class TestHTTP:
    def test_replyAllWithAttachmentSignedQueuedAndFiled(self, webServer):
        """
        Bob replies to all of Alice's message with a file: Alice gets it
        (DKIM-signed for example.org, threaded, "Re:", the file intact),
        Bob's Sent has the copy (read), the original is marked answered.
        Otherwise mail written in the browser is lost, unsigned or
        unthreaded.
        """
        webServer.admin("dkim", "keygen", DOMAIN)
        send(webServer, message("Caf\u00e9 plans", to=f"{BOB}, carol@{DOMAIN}"))
        [original] = webServer.waitForMessages(BOB, 1)
        bob = Client(base(webServer))
        bob.logIn(BOB)
        [uid] = uidsIn(listPage(bob)[2])
        hidden, page = formOf(bob, f"/webmail/compose?mode=replyall&name=INBOX&uid={uid}")
        assert 'value="Re: Caf\u00e9 plans"' in page and f'value="{ALICE}"' in page
        fields = dict(hidden, **{"from": BOB, "to": ALICE, "cc": "", "subject":
                                 "Re: Caf\u00e9 plans", "body": "Yes! \u2615\n> some text\n",
                                 "action": "send"})
        status, headers, _ = post(bob, fields, [("men\u00fc.pdf", "application/pdf", PDF)])
        assert status == 303 and headers["Location"].startswith("/webmail/message?")
        [received] = webServer.waitForMessages(ALICE, 1)
        got = parsed(received)
        assert got["Subject"] == "Re: Caf\u00e9 plans" and got["DKIM-Signature"] is not None
        assert f"d={DOMAIN}" in str(got["DKIM-Signature"])
        assert got["In-Reply-To"] == parsed(original)["Message-ID"]
        assert textOf(got) == "Yes! \u2615\n> some text\n"
        [attachment] = content.attachments(got)
        assert attachment.filename == "men\u00fc.pdf"
        assert content.attachmentPart(got, attachment.part)[2] == PDF
        [(flags, copy)] = imapMessages(webServer, BOB, "Sent")
        assert "\\Seen" in flags and parsed(copy)["Message-ID"] == got["Message-ID"]
        assert "\\Answered" in webServer.store().mailbox(BOB, "INBOX").messages()[0].flags
        assert "Message sent to 1 recipient; a copy is in Sent." in bob.request(
            headers["Location"])[2]
        # The mail log has the same record as for a submission over SMTP
        # (delivered at once: alice is a local user).
        webServer.waitForLog(re.compile(
            rf"result=delivered qid=\S+ from=<{re.escape(BOB)}> to=<{re.escape(ALICE)}>"
            rf" size=\d+ client=\S+ listener=webmail user={re.escape(BOB)}"))

    def test_forwardAsAttachmentAndInline(self, webServer):
        """
        Forward as attachment sends the original whole (message/rfc822);
        forward inline sends its text and its attachments; the original is
        marked $Forwarded.  Otherwise forwarding loses the message or its
        files.
        """
        send(webServer, message("report", text="the text\n",
                                attachment=(PDF, "application", "pdf", "r.pdf")))
        [original] = webServer.waitForMessages(BOB, 1)
        bob = Client(base(webServer))
        bob.logIn(BOB)
        [uid] = uidsIn(listPage(bob)[2])
        for mode in ("forwardattach", "forward"):
            hidden, page = formOf(bob, f"/webmail/compose?mode={mode}&name=INBOX&uid={uid}")
            keep = re.findall(r'name="keep" value="([^"]+)" checked', page)
            subject = re.search(r'name="subject" value="([^"]*)"', page).group(1)
            body = re.search(r'<textarea[^>]*>(.*?)</textarea>', page, re.S).group(1)
            assert post(bob, dict(hidden, **{"from": BOB, "to": ALICE, "subject": subject,
                                             "body": body, "keep": keep,
                                             "action": "send"}))[0] == 303
        asAttachment, inline = webServer.waitForMessages(ALICE, 2)
        assert original.replace(b"\r\n", b"\n").strip() in \
            asAttachment.replace(b"\r\n", b"\n")
        assert parsed(asAttachment)["Subject"] == "Fwd: report"
        got = parsed(inline)
        assert "the text" in textOf(got)
        [attachment] = content.attachments(got)
        assert content.attachmentPart(got, attachment.part)[1:] == ("r.pdf", PDF)
        assert "$Forwarded" in webServer.store().mailbox(BOB, "INBOX").messages()[0].flags

    def test_draftSavedReplacedReopenedAndSent(self, webServer):
        """
        Save a draft (with a file): it is in Drafts; save it again: the new
        one replaces it; reopen it: the fields and the file are back; send
        it: it arrives and leaves Drafts.  Otherwise drafts pile up, lose
        their attachments, or stay after sending.
        """
        bob = Client(base(webServer))
        bob.logIn(BOB)
        hidden, _ = formOf(bob, "/webmail/compose")
        fields = dict(hidden, **{"from": BOB, "to": ALICE, "bcc": f"carol@{DOMAIN}",
                                 "subject": "draft \u00e9", "body": "first", "action": "save"})
        status, headers, _ = post(bob, fields, [("a.txt", "text/plain", b"file a")])
        assert status == 303 and "mode=draft" in headers["Location"]
        [first] = webServer.messages(BOB, "Drafts")
        hidden, page = formOf(bob, headers["Location"])
        assert 'value="draft \u00e9"' in page and ">\nfirst\n</textarea>" in page
        assert f'name="bcc" value="carol@{DOMAIN}"' in page and "a.txt" in page
        keep = re.findall(r'name="keep" value="([^"]+)" checked', page)
        status, headers, _ = post(bob, dict(hidden, **{
            "from": BOB, "to": ALICE, "subject": "draft \u00e9", "body": "second",
            "keep": keep, "action": "save"}))
        [second] = webServer.messages(BOB, "Drafts")
        assert b"second" in second and b"file a" not in second  # base64 in the draft
        assert "\\Draft" in webServer.store().mailbox(BOB, "Drafts").messages()[0].flags
        hidden, page = formOf(bob, headers["Location"])
        keep = re.findall(r'name="keep" value="([^"]+)" checked', page)
        assert post(bob, dict(hidden, **{"from": BOB, "to": ALICE, "subject": "draft \u00e9",
                                         "body": "final", "keep": keep,
                                         "action": "send"}))[0] == 303
        [sent] = webServer.waitForMessages(ALICE, 1)
        got = parsed(sent)
        assert textOf(got).strip() == "final"
        assert [content.attachmentPart(got, a.part)[1:] for a in content.attachments(got)] == [
            ("a.txt", b"file a")]
        assert webServer.messages(BOB, "Drafts") == [] and first != second

    def test_postWithoutCSRFRefused(self, webServer):
        """
        A compose POST without the session's token (or with another
        session's) gets 403 and sends and saves nothing: otherwise another
        site could send mail as the user.
        """
        bob = Client(base(webServer))
        bob.logIn(BOB)
        alice = Client(base(webServer))
        alice.logIn(ALICE)
        for token in (None, alice.csrf("/webmail/")):
            for action in ("send", "save"):
                fields = {"from": BOB, "to": ALICE, "subject": "forged", "body": "x",
                          "action": action}
                if token:
                    fields["csrf"] = token
                assert post(bob, fields)[0] == 403
        assert webServer.messages(BOB, "Drafts") == [] and webServer.messages(BOB, "Sent") == []
        assert webServer.queueEmpty() and webServer.messages(ALICE) == []

    def test_cannotSendAsAnotherAddress(self, webServer):
        """
        Bob sending with Alice's address as From is refused with the
        submission's reason, and nothing is queued or filed: otherwise any
        user could forge another's mail.
        """
        bob = Client(base(webServer))
        bob.logIn(BOB)
        hidden, _ = formOf(bob, "/webmail/compose")
        status, _, page = post(bob, dict(hidden, **{
            "from": ALICE, "to": ALICE, "subject": "from alice?", "body": "x",
            "action": "send"}))
        assert status == 400 and f"Sender address &lt;{ALICE}&gt; rejected" in page
        assert 'value="from alice?"' in page  # the form is back as typed
        assert webServer.messages(ALICE) == [] and webServer.messages(BOB, "Sent") == []

    def test_cannotTakeAnotherUsersMessage(self, webServer):
        """
        Alice naming Bob's message (by folder and UID) to reply to, forward
        or attach gets 404 and its content goes nowhere: otherwise one user
        could mail themselves another's messages.
        """
        send(webServer, message("bob's secret", text="the secret\n"))
        webServer.waitForMessages(BOB, 1)
        bob = Client(base(webServer))
        bob.logIn(BOB)
        [uid] = uidsIn(listPage(bob)[2])
        alice = Client(base(webServer))
        alice.logIn(ALICE)
        for mode in ("reply", "forward", "forwardattach", "draft"):
            status, _, page = alice.request(f"/webmail/compose?mode={mode}&name=INBOX&uid={uid}")
            assert status == 404 and "secret" not in page
        hidden, _ = formOf(alice, "/webmail/compose")
        status, _, page = post(alice, dict(hidden, **{
            "from": ALICE, "to": ALICE, "subject": "stolen", "body": "x", "mode": "forward",
            "source_name": "INBOX", "source_uid": str(uid), "keep": ["whole", "1"],
            "action": "send"}))
        assert status == 404 and "secret" not in page
        assert webServer.messages(ALICE) == [] and webServer.messages(ALICE, "Sent") == []

    def test_uploadBoundedBySubmissionLimit(self, makeMailServer):
        """
        The compose form takes a file of 100 KB (over the 64 KiB of other
        forms) but a body over the submission size limit gets 413 before
        it is read: otherwise attachments cannot be sent, or a client
        fills the server's memory.
        """
        server = makeMailServer(roles=("https", "submissions", "imaps"),
                                smtp={"max_message_size": 200_000})
        bob = Client(base(server))
        bob.logIn(BOB)
        hidden, _ = formOf(bob, "/webmail/compose")
        fields = dict(hidden, **{"from": BOB, "to": ALICE, "subject": "big", "body": "x",
                                 "action": "send"})
        assert post(bob, fields, [("a.bin", "application/octet-stream",
                                   b"\x01" * 100_000)])[0] == 303
        assert post(bob, fields, [("b.bin", "application/octet-stream",
                                   b"\x01" * 250_000)])[0] == 413
        [got] = server.waitForMessages(ALICE, 1)
        assert parsed(got)["Subject"] == "big"


# -- in the browser -----------------------------------------------------------------

@pytest.mark.browser
class TestBrowser:
    def test_replyWithAttachmentThenDraft(self, webServer, browser, tmp_path):
        """
        Bob logs in, opens Alice's message (delivered over SMTP), replies
        with a file chosen in the form; Alice's IMAP INBOX has the reply
        with the file, Bob's Sent the copy.  Then Bob writes a message,
        saves it as a draft, finds it in Drafts and opens it again with
        what he wrote; the form fits a phone's width.  Otherwise writing
        mail in the browser does not work.
        """
        from selenium.webdriver.common.by import By

        send(webServer, message("Lunch?", text="Noon at the caf\u00e9?\n"))
        webServer.waitForMessages(BOB, 1)
        upload = tmp_path / "map\u00e9.pdf"
        upload.write_bytes(PDF)
        logIn(browser, webServer, BOB, PASSWORD)
        browser.get(base(webServer) + "/webmail/")
        assert "Noon at the caf\u00e9?" in openFirstMessage(browser)
        clickAndLoad(browser, browser.find_element(By.LINK_TEXT, "Reply"))
        assert browser.find_element(By.NAME, "subject").get_attribute("value") == "Re: Lunch?"
        assert browser.find_element(By.NAME, "to").get_attribute("value") == ALICE
        text = browser.find_element(By.NAME, "body")
        assert "> Noon at the caf\u00e9?" in text.get_attribute("value")
        text.send_keys("Yes, see the map.")
        browser.find_element(By.NAME, "attachment").send_keys(str(upload))
        screenshot(browser, tmp_path, "webmail-compose.png")
        clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, "button[value='send']"))
        assert notice(browser) == "Message sent to 1 recipient; a copy is in Sent."

        def aliceHasIt():
            found = imapMessages(webServer, ALICE)
            return found or None

        [(_, received)] = waitFor(aliceHasIt, 30, message="the reply in Alice's INBOX")
        got = parsed(received)
        assert got["Subject"] == "Re: Lunch?"
        assert "Yes, see the map." in textOf(got)
        [attachment] = content.attachments(got)
        assert content.attachmentPart(got, attachment.part)[1:] == ("map\u00e9.pdf", PDF)
        [(flags, _)] = imapMessages(webServer, BOB, "Sent")
        assert "\\Seen" in flags

        clickAndLoad(browser, browser.find_element(By.LINK_TEXT, "Write"))
        browser.find_element(By.NAME, "to").send_keys(ALICE)
        browser.find_element(By.NAME, "subject").send_keys("Plans \u00e0 venir")
        browser.find_element(By.NAME, "body").send_keys("To be continued")
        clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, "button[value='save']"))
        assert notice(browser) == "Draft saved in Drafts."
        browser.get(base(webServer) + "/webmail/folder?name=Drafts")
        assert "Plans \u00e0 venir" in browser.find_element(By.CSS_SELECTOR, "ul.list").text
        clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, "ul.list li a"))
        clickAndLoad(browser, browser.find_element(By.LINK_TEXT, "Edit"))
        assert browser.find_element(By.NAME, "subject").get_attribute("value") == \
            "Plans \u00e0 venir"
        assert "To be continued" in browser.find_element(By.NAME, "body").get_attribute("value")
        assert len(webServer.messages(BOB, "Drafts")) == 1
        browser.set_window_size(390, 844)
        browser.refresh()
        assert noHorizontalScroll(browser)
        screenshot(browser, tmp_path, "webmail-compose-phone.png")
        screenshot(browser, tmp_path, "webmail-compose-phone.png")


class TestSubmitter:
    """L{sending.Submitter} on the in-memory intake: the submission's checks."""

    def setup_method(self):
        from twisted.cred.portal import Portal

        from pymailer.auth.realm import MailRealm
        from pymailer.config import SMTPConfig
        from pymailer.events import PROMETHEUS_ONLY
        from pymailer.policy.chain import PolicyChain
        from pymailer.policy.decision import Decision, Policy
        from pymailer.testing import MemoryDirectory, MemoryIntake
        from pymailer.web.webmail.sending import Submitter

        class Judge(Policy):
            name = "judge"

            def checkRecipient(self, facts, recipient):
                if recipient.startswith("refused@"):
                    return Decision.reject(550, "5.7.1", "Not that one", "judge")

            def checkData(self, facts, message):
                with message.openData() as f:
                    if b"spam" in f.read():
                        return Decision.reject(554, "5.7.1", "Looks like spam", "judge")
                return Decision.addHeaders([b"X-Judged: " + facts.authenticatedAs.encode()
                                            + b"\r\n"])

        directory = MemoryDirectory(domains=[DOMAIN], users=[ALICE, BOB],
                                    aliases={f"team@{DOMAIN}": (BOB,)})
        self.intake = MemoryIntake(directory, user=BOB, relayAvailable=True)
        self.submitter = Submitter(Portal(MailRealm(lambda user: self.intake)),
                                   PolicyChain([Judge()], "test"), SMTPConfig(), PROMETHEUS_ONLY)

    def submit(self, sender, recipients, octets=b"Subject: hi\r\n\r\nhello\r\n"):
        from pymailer.smtp.reply import SMTPReply
        result = []
        self.submitter.submit(BOB, "192.0.2.7", sender, recipients, octets).addBoth(
            result.append)
        [outcome] = result
        if hasattr(outcome, "check") and outcome.check(SMTPReply):
            return outcome.value
        return outcome

    def test_queuedWithThePolicyHeadersAsTheUser(self):
        """
        Bob's message (from an alias of his) is queued for its recipients
        with what the chain added and his login in the envelope, like an
        SMTP submission: otherwise webmail mail skips signing or the trail.
        """
        envelope = self.submit(f"team@{DOMAIN}", [ALICE, "x@example.net"])
        [(queued, data)] = self.intake.committed
        assert queued is envelope and data == b"Subject: hi\r\n\r\nhello\r\n"
        assert [r.address for r in envelope.recipients] == [ALICE, "x@example.net"]
        assert envelope.sender == f"team@{DOMAIN}" and envelope.headers == f"X-Judged: {BOB}\r\n"
        assert envelope.session.authenticatedAs == BOB and envelope.session.protocol == "HTTPS"

    def test_refusalsAsSMTPWouldGive(self):
        """
        Another user's address as sender (553), a recipient the chain
        refuses, a local one that does not exist, and content it refuses each stop the message, with the
        reply an SMTP client would get, and nothing is queued: otherwise
        the webmail is a way around the submission's rules.
        """
        assert self.submit(ALICE, [ALICE]).code == 553
        assert self.submit(BOB, [ALICE, "refused@example.net"]).text == "Not that one"
        assert self.submit(BOB, [f"nobody@{DOMAIN}"]).code == 550
        assert self.submit(BOB, [ALICE], b"Subject: x\r\n\r\nspam\r\n").text == "Looks like spam"
        assert self.intake.committed == [] and self.intake.opened[-1].aborted
