"""
Tests for L{pymailer.queue.bounce}: delivery status notifications as a
sender's mail program sees them, parsed with the stdlib C{email} package.
"""

import email
import email.policy
import email.utils
import io
import re

import pytest

from pymailer.envelope import FAILED, PENDING, Envelope, Recipient
from pymailer.queue.bounce import buildReport, reportEnvelopeSender, shouldReport

HOST = "mail.example.org"
NOW = 1_700_000_100.0
ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@remote.test\r\n"
    b"Subject: lunch\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"\r\n"
    b"See you at noon.\r\n"
    b".dot line\r\n"
)


def envelope(**kwargs):
    values = dict(
        queueId="0123-ab-0",
        sender="alice@example.org",
        recipients=(),
        receivedAt=1_700_000_000.0,
    )
    values.update(kwargs)
    return Envelope(**values)


def failed(address="bob@remote.test", error="550 5.1.1 User unknown", **kwargs):
    values = dict(state=FAILED, attempts=1, lastError=error, remoteMTA="mx.remote.test")
    values.update(kwargs)
    return Recipient(0, address, **values)


def report(env=None, recipients=None, action="failed", original=ORIGINAL, **kwargs):
    env = env or envelope()
    recipients = recipients or [failed()]
    f = io.BytesIO(original) if original is not None else None
    return buildReport(env, recipients, action, HOST, f, now=NOW, **kwargs)


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def parts(raw):
    message = parse(raw)
    return message, list(message.iter_parts())


def statusBlocks(raw):
    """The delivery-status part as C{[perMessage, perRecipient...]} dicts."""
    _, ps = parts(raw)
    status = ps[1]
    assert status.get_content_type() == "message/delivery-status"
    return [dict(block.items()) for block in status.get_payload()]


def rawPartBody(raw, index):
    """The bytes of part C{index}'s body exactly as they are in the report."""
    boundary = re.search(rb'boundary="([^"]+)"', raw).group(1)
    pieces = raw.split(b"\r\n--" + boundary)
    # pieces[0] is the preamble; pieces[1..] start with CRLF + part headers.
    part = pieces[index + 1]
    return part.split(b"\r\n\r\n", 1)[1]


class TestStructure:
    def test_multipartReport(self):
        """
        The report is multipart/report with report-type=delivery-status and
        three parts: otherwise mail programs show a blob instead of "your
        mail bounced" and cannot match the bounce to the message.
        """
        raw = report()
        message, ps = parts(raw)
        assert message.get_content_type() == "multipart/report"
        assert message.get_param("report-type") == "delivery-status"
        assert [p.get_content_type() for p in ps] == [
            "text/plain",
            "message/delivery-status",
            "message/rfc822",
        ]
        assert not message.defects
        assert all(not p.defects for p in ps)

    def test_topHeaders(self):
        """
        The report comes from MAILER-DAEMON, goes to the envelope sender and
        is marked automatic: otherwise vacation responders answer bounces
        and users cannot tell a bounce from mail.
        """
        raw = report()
        message = parse(raw)
        assert message["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOST}>"
        assert b"\r\nTo: <alice@example.org>\r\n" in raw
        assert message["Subject"] == "Undelivered Mail Returned to Sender"
        assert message["Auto-Submitted"] == "auto-replied"
        assert message["MIME-Version"] == "1.0"
        assert message["Message-ID"].endswith(f"@{HOST}>")
        assert message["Date"].datetime.timestamp() == NOW

    def test_crlfAndLineLength(self):
        """
        Every line ends in CRLF and is at most 998 octets, even with a huge
        error text: otherwise the next hop rejects or mangles the bounce.
        """
        raw = report(recipients=[failed(error="550 5.7.1 " + "x" * 3000 + " y" * 800)])
        assert b"\n" not in raw.replace(b"\r\n", b"")
        assert b"\r" not in raw.replace(b"\r\n", b"")
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998
        [_, rcpt] = statusBlocks(raw)
        assert rcpt["Status"] == "5.7.1"

    def test_hostileErrorTextCannotAddFields(self):
        """
        A remote server's reply with CRLF in it cannot add fields or parts
        to the report: otherwise a hostile server forges bounce content.
        """
        raw = report(recipients=[failed(error="550 5.1.1 no\r\nAction: delivered\r\n\r\n--x")])
        [_, rcpt] = statusBlocks(raw)
        assert rcpt["Action"] == "failed"
        assert len(parts(raw)[1]) == 3

    def test_humanPartExplains(self):
        """
        The text part names each failed address and the server's reason: it
        is all most users read.
        """
        _, ps = parts(report(recipients=[failed(), failed("carol@remote.test", "550 5.2.2 Mailbox full")]))
        text = ps[0].get_content()
        assert "could not be delivered" in text
        assert "<bob@remote.test>" in text and "User unknown" in text
        assert "<carol@remote.test>" in text and "Mailbox full" in text
        assert "mx.remote.test" in text

    def test_nullSenderRefused(self):
        """
        A report addressed to the null sender is refused: a bounce is never
        bounced (mail loops between two broken systems).
        """
        with pytest.raises(ValueError):
            report(env=envelope(sender=""))

    def test_unknownAction(self):
        """A typo in the action is an error, not a report nobody understands."""
        with pytest.raises(ValueError):
            report(action="bounced")


class TestDeliveryStatus:
    def test_perMessageFields(self):
        """
        Reporting-MTA, Arrival-Date and the decoded ENVID are there: the
        sender's software matches bounces to what it sent by ENVID.
        """
        [message, _] = statusBlocks(report(env=envelope(dsnEnvid="order+2B42")))
        assert message["Reporting-MTA"] == f"dns; {HOST}"
        assert message["Original-Envelope-Id"] == "order+42"
        assert email.utils.parsedate_to_datetime(message["Arrival-Date"]).timestamp() == 1_700_000_000.0

    def test_perRecipientFields(self):
        """
        Each recipient has Final-Recipient, Action: failed, Status 5.1.1,
        Diagnostic-Code and Remote-MTA: list managers unsubscribe dead
        addresses from exactly these.
        """
        [_, rcpt] = statusBlocks(report())
        assert rcpt["Final-Recipient"] == "rfc822; bob@remote.test"
        assert rcpt["Action"] == "failed"
        assert rcpt["Status"] == "5.1.1"
        assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 User unknown"
        assert rcpt["Remote-MTA"] == "dns; mx.remote.test"
        assert "Last-Attempt-Date" in rcpt
        assert "Original-Recipient" not in rcpt

    def test_oneBlockPerRecipient(self):
        """Two failed recipients give two blocks, in order."""
        blocks = statusBlocks(report(recipients=[failed(), failed("carol@remote.test", "554 5.7.1 Spam")]))
        assert [b["Final-Recipient"] for b in blocks[1:]] == [
            "rfc822; bob@remote.test",
            "rfc822; carol@remote.test",
        ]
        assert blocks[2]["Status"] == "5.7.1"

    def test_originalRecipient(self):
        """
        ORCPT comes back as Original-Recipient with its xtext decoded: the
        sender learns which address they typed, before any forwarding.
        """
        [_, rcpt] = statusBlocks(report(recipients=[failed(orcpt="rfc822;Bob+2Blist@Remote.test")]))
        assert rcpt["Original-Recipient"] == "rfc822; Bob+list@Remote.test"

    def test_statusWithoutEnhancedCode(self):
        """A reply without an enhanced code still gives a class status (5.0.0)."""
        [_, rcpt] = statusBlocks(report(recipients=[failed(error="554 go away")]))
        assert rcpt["Status"] == "5.0.0"
        assert rcpt["Diagnostic-Code"] == "smtp; 554 go away"

    def test_internationalisedAddress(self):
        """
        A UTF-8 recipient is given as RFC 6533 utf-8-addr-xtext, keeping
        the report 7-bit: otherwise the report itself may be refused.
        """
        [_, rcpt] = statusBlocks(report(recipients=[failed("jos\u00e9@remote.test")]))
        assert rcpt["Final-Recipient"] == "utf-8; jos\\x{E9}@remote.test"

    def test_delayed(self):
        """
        A delay warning says Action: delayed, a 4.x.x status and until when
        delivery is tried (Will-Retry-Until), and tells the user not to
        resend: otherwise users send the same mail again.
        """
        until = 1_700_000_000.0 + 5 * 86400
        r = Recipient(0, "bob@remote.test", attempts=3, lastError="451 4.4.1 Connection refused")
        raw = report(recipients=[r], action="delayed", retryUntil=until)
        message, ps = parts(raw)
        assert message["Subject"] == "Delivery Status Notification (Delay)"
        [_, rcpt] = statusBlocks(raw)
        assert rcpt["Action"] == "delayed"
        assert rcpt["Status"] == "4.4.1"
        assert email.utils.parsedate_to_datetime(rcpt["Will-Retry-Until"]).timestamp() == until
        assert "do not need to send it again" in ps[0].get_content()
        # RFC 3461 §4.3: RET is about failures; a delay returns headers.
        assert ps[2].get_content_type() == "text/rfc822-headers"

    def test_success(self):
        """A requested success report says delivered, 2.0.0, Subject (Success)."""
        r = Recipient(0, "bob@remote.test", state="delivered", attempts=1, notify=("SUCCESS",))
        raw = report(recipients=[r], action="delivered")
        assert parse(raw)["Subject"] == "Delivery Status Notification (Success)"
        [_, rcpt] = statusBlocks(raw)
        assert (rcpt["Action"], rcpt["Status"]) == ("delivered", "2.0.0")


class TestOriginal:
    def test_fullOriginalByteExact(self):
        """
        The original comes back byte for byte inside message/rfc822: the
        sender can resend it or see exactly what bounced.
        """
        raw = report()
        assert rawPartBody(raw, 2) == ORIGINAL
        _, ps = parts(raw)
        inner = ps[2].get_content()
        assert inner["Subject"] == "lunch"

    def test_retHdrs(self):
        """
        RET=HDRS returns only the header block as text/rfc822-headers: the
        sender asked not to get their (maybe large) message back.
        """
        raw = report(env=envelope(dsnRet="HDRS"))
        _, ps = parts(raw)
        assert ps[2].get_content_type() == "text/rfc822-headers"
        headerBlock = ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
        # The header block, then the blank line that ends a header block.
        assert rawPartBody(raw, 2) == headerBlock + b"\r\n"
        assert "Subject: lunch" in ps[2].get_content()
        assert b"See you at noon" not in raw

    def test_eightBitOriginal(self):
        """
        An 8-bit original is returned unchanged and marked 8bit, on the part
        and on the report: otherwise the next hop may strip the 8th bit.
        """
        original = b"Subject: caf\xc3\xa9\r\n\r\nd\xc3\xa9j\xc3\xa0 vu\r\n"
        raw = report(original=original)
        assert rawPartBody(raw, 2) == original
        message, ps = parts(raw)
        assert message["Content-Transfer-Encoding"] == "8bit"
        assert ps[2]["Content-Transfer-Encoding"] == "8bit"
        assert ps[1]["Content-Transfer-Encoding"] is None

    def test_sevenBitReport(self):
        """An ASCII original gives a 7bit report (any server takes it)."""
        message = parse(report())
        assert message["Content-Transfer-Encoding"] == "7bit"

    def test_bigOriginalTruncatedToHeaders(self):
        """
        An original over the limit comes back as headers only, and the text
        says why: a 50 MB bounce would fill the sender's mailbox again.
        """
        big = ORIGINAL + b"x" * 70 + b"\r\n"
        big = big + (b"y" * 998 + b"\r\n") * 3000  # about 3 MB
        raw = report(original=big)
        assert len(raw) < 10_000
        _, ps = parts(raw)
        assert ps[2].get_content_type() == "text/rfc822-headers"
        assert "larger than" in ps[0].get_content()
        assert rawPartBody(raw, 2).startswith(b"From: Alice")

    def test_bigOriginalStreamed(self):
        """
        Headers-only returns stop reading after the header block: a huge
        original is not read into memory.
        """

        class Endless(io.RawIOBase):
            reads = 0

            def readable(self):
                return True

            def readinto(self, b):
                self.reads += 1
                if self.reads > 10_000:
                    raise AssertionError("read far too much")
                data = (b"Subject: x\r\n\r\n" if self.reads == 1 else b"z" * 80 + b"\r\n")
                data = data[: len(b)]
                b[: len(data)] = data
                return len(data)

        f = io.BufferedReader(Endless())
        raw = buildReport(envelope(), [failed()], "failed", HOST, f, now=NOW, maxOriginal=100_000)
        assert b"Subject: x" in raw

    def test_longLinesReturnHeadersOnly(self):
        """
        An original with a line over 998 octets (BINARYMIME) cannot be
        returned as 8bit: headers only, so the bounce itself is sendable.
        """
        raw = report(original=b"Subject: bin\r\n\r\n" + b"b" * 5000 + b"\r\n")
        _, ps = parts(raw)
        assert ps[2].get_content_type() == "text/rfc822-headers"
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998

    def test_noOriginal(self):
        """Without an original the report has just the two required parts."""
        _, ps = parts(report(original=None))
        assert [p.get_content_type() for p in ps] == ["text/plain", "message/delivery-status"]


class TestShouldReport:
    @pytest.mark.parametrize(
        "notify, action, expected",
        [
            (None, "failed", True),
            (None, "delayed", True),
            (None, "delivered", False),
            (None, "relayed", False),
            (("NEVER",), "failed", False),
            (("NEVER",), "delayed", False),
            (("SUCCESS",), "failed", False),
            (("SUCCESS",), "delivered", True),
            (("SUCCESS",), "relayed", True),
            (("SUCCESS",), "expanded", True),
            (("FAILURE",), "failed", True),
            (("FAILURE",), "delayed", False),
            (("DELAY",), "delayed", True),
            (("DELAY",), "failed", False),
            (("SUCCESS", "FAILURE", "DELAY"), "delayed", True),
            (("SUCCESS", "FAILURE"), "failed", True),
        ],
    )
    def test_notifyTable(self, notify, action, expected):
        """
        RFC 3461 NOTIFY decides: senders who said NEVER get nothing, success
        reports only when asked: otherwise users get unwanted reports or
        miss the ones they asked for.
        """
        r = Recipient(0, "bob@remote.test", notify=notify)
        assert shouldReport(envelope(), r, action) is expected

    @pytest.mark.parametrize("action", ["failed", "delayed", "delivered"])
    def test_nullSenderNeverReported(self, action):
        """
        Mail from the null sender (itself a bounce) is never reported on,
        whatever NOTIFY says: otherwise two broken systems bounce forever.
        """
        r = Recipient(0, "bob@remote.test", notify=("SUCCESS", "FAILURE", "DELAY"))
        assert shouldReport(envelope(sender=""), r, action) is False

    def test_reportedOnce(self):
        """A recipient already reported on gets no second report."""
        r = Recipient(0, "bob@remote.test", state=FAILED, reported=True)
        assert shouldReport(envelope(), r, "failed") is False

    def test_oneDelayWarning(self):
        """Only one delay warning per message: the sender is not nagged every retry."""
        r = Recipient(0, "bob@remote.test", state=PENDING)
        assert shouldReport(envelope(delayWarned=True), r, "delayed") is False
        assert shouldReport(envelope(delayWarned=True), r, "failed") is True

    def test_reportSender(self):
        """Reports are sent from the null sender, so they are never bounced."""
        assert reportEnvelopeSender() == ""
