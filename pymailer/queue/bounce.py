"""
Delivery status notifications: the report a sender gets when their message
failed, is delayed, or (when they asked) was delivered.

A report is an RFC 3462/6522 C{multipart/report; report-type=delivery-status}
message with three parts:

 1. a C{text/plain} explanation for people;
 2. the RFC 3464 C{message/delivery-status} for programs: one block of
    per-message fields, then one block per recipient;
 3. the original message (C{message/rfc822}), or only its header block
    (C{text/rfc822-headers}) when the sender asked for headers (RFC 3461
    RET=HDRS), when the report is not a failure, or when the original is too
    big or cannot travel as 8bit.

Everything here is a pure function of its arguments: the caller decides
whether to report (L{shouldReport}), builds the report, and queues it from
the null sender (L{reportEnvelopeSender}).

Trust: the envelope's addresses, ENVID/ORCPT and the remote servers' error
texts all come from the network.  Every value put into a header field is
reduced to printable US-ASCII on one logical line (folded, at most 998
octets a line), so a hostile reply text cannot add header fields or parts.
The original is copied as bytes, never parsed beyond its header block.
"""

import datetime
import email.utils
import re
import secrets
import time

__all__ = ["buildReport", "shouldReport", "reportEnvelopeSender", "ACTIONS"]

# RFC 3464 §2.3.3.
ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")

# An original bigger than this is returned as its header block only.
MAX_ORIGINAL = 1_000_000

# RFC 5322 §2.1.1: at most 998 characters a line, CRLF excluded.
_MAX_LINE = 998
_FOLD_AT = 78
_CRLF = b"\r\n"

_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delivery Status Notification (Delay)",
    "delivered": "Delivery Status Notification (Success)",
    "relayed": "Delivery Status Notification (Relayed)",
    "expanded": "Delivery Status Notification (Success)",
}

_DEFAULT_STATUS = {
    "failed": "5.0.0",
    "delayed": "4.0.0",
    "delivered": "2.0.0",
    "relayed": "2.0.0",
    "expanded": "2.0.0",
}

# "550 5.1.1 User unknown", "451-4.4.1 ...", or just "554 no".
_REPLY = re.compile(rb"^\s*([2-5][0-9][0-9])(?:[ -]+([245]\.[0-9]{1,3}\.[0-9]{1,3})\b)?")


def reportEnvelopeSender():
    """
    The reverse-path of every report: the null sender C{""}.

    RFC 5321 §4.5.5 and RFC 3464 §2: notifications are sent with
    C{MAIL FROM:<>} so that a report that cannot be delivered is never
    reported on in turn (no mail loops between two failing systems).
    """
    return ""


def shouldReport(envelope, recipient, action):
    """
    Whether the sender asked for (or, by default, gets) a report of kind
    C{action} for C{recipient}, per RFC 3461 §4.1 NOTIFY.

     - a message from the null sender is never reported on (it is itself a
       report: RFC 3461 §5.2.1, RFC 5321 §4.5.5); the caller logs and drops;
     - NOTIFY=NEVER: no report at all;
     - no NOTIFY (C{None}): failures and delays only;
     - otherwise a report only for the kinds listed: C{failed} needs
       FAILURE, C{delayed} needs DELAY, C{delivered}/C{relayed}/C{expanded}
       need SUCCESS.

    Two bookkeeping rules besides: a recipient already reported on
    (C{recipient.reported}) is not reported again, and only one delay
    warning is sent per message (C{envelope.delayWarned}).

    @raise ValueError: an unknown C{action}.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown DSN action: {action!r}")
    if envelope.sender == "":
        return False
    if recipient.reported:
        return False
    if action == "delayed" and envelope.delayWarned:
        return False
    notify = recipient.notify
    if notify is None:
        return action in ("failed", "delayed")
    notify = {n.upper() for n in notify}
    if "NEVER" in notify:
        return False
    if action == "failed":
        return "FAILURE" in notify
    if action == "delayed":
        return "DELAY" in notify
    return "SUCCESS" in notify


def buildReport(
    envelope,
    recipients,
    action,
    hostname,
    original,
    now=None,
    reportingMTA=None,
    retryUntil=None,
    maxOriginal=MAX_ORIGINAL,
):
    """
    Build a delivery status notification for C{recipients} of C{envelope}.

    @param recipients: the L{pymailer.envelope.Recipient}s reported on, all
        with the same outcome C{action}.
    @param action: one of L{ACTIONS} (RFC 3464 §2.3.3).
    @param hostname: our host name: the report comes from
        C{MAILER-DAEMON@hostname} and names it as Reporting-MTA.
    @param original: a binary file object over the original message (as
        spooled, CRLF line endings), read from its current position; or
        C{None} to leave the original out.  At most C{maxOriginal} bytes of
        it are held in memory.
    @param now: POSIX time of the report (default: the current time); also
        the Last-Attempt-Date of recipients tried at least once.
    @param reportingMTA: the name in Reporting-MTA, if not C{hostname}.
    @param retryUntil: for C{delayed}: POSIX time until which delivery will
        be tried (Will-Retry-Until), normally C{receivedAt} plus the queue
        lifetime.
    @param maxOriginal: the largest original returned in full.

    @return: the report as C{bytes}, CRLF line endings, ready for the spool.
    @raise ValueError: an unknown action, no recipients, or a null sender
        (a report is never sent to C{<>}).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown DSN action: {action!r}")
    if not recipients:
        raise ValueError("a report needs at least one recipient")
    if envelope.sender == "":
        raise ValueError("a report is never sent to the null sender")
    if now is None:
        now = time.time()
    hostname = _ascii(hostname)
    reportingMTA = _ascii(reportingMTA or hostname)

    # RFC 3461 §4.3: RET says what to return in a *failed* DSN; reports of
    # delays and successes carry the headers only, like Postfix's.
    wantFull = action == "failed" and (envelope.dsnRet or "").upper() != "HDRS"
    orig = _readOriginal(original, maxOriginal, wantFull) if original is not None else None

    human = _humanPart(envelope, recipients, action, hostname, retryUntil, orig)
    status = _statusPart(envelope, recipients, action, reportingMTA, now, retryUntil)

    parts = []
    humanBytes = human.encode("utf-8")
    humanEightBit = _isEightBit(humanBytes)
    parts.append(
        (
            [
                b"Content-Description: Notification",
                b"Content-Type: text/plain; charset="
                + (b"utf-8" if humanEightBit else b"us-ascii"),
                b"Content-Transfer-Encoding: " + (b"8bit" if humanEightBit else b"7bit"),
            ],
            humanBytes,
        )
    )
    parts.append(
        (
            [
                b"Content-Description: Delivery report",
                b"Content-Type: message/delivery-status",
            ],
            status,
        )
    )
    if orig is not None:
        if orig.full:
            description = b"Undelivered Message" if action == "failed" else b"Message"
            headers = [
                b"Content-Description: " + description,
                b"Content-Type: message/rfc822",
            ]
            content = orig.full
        else:
            headers = [
                b"Content-Description: "
                + (b"Undelivered Message Headers" if action == "failed" else b"Message Headers"),
                b"Content-Type: text/rfc822-headers",
            ]
            # The header block, each line CRLF-terminated; the blank line
            # after it is the delimiter's own CRLF plus ours below.
            content = orig.headers + _CRLF
        if _isEightBit(content):
            # RFC 2045 §6.4: a message/* part may only be 7bit, 8bit or
            # binary, and must say which.
            headers.append(b"Content-Transfer-Encoding: 8bit")
        parts.append((headers, content))

    boundary = _boundary([content for _, content in parts])
    eightBit = any(_isEightBit(content) for _, content in parts)

    sender = _headerAddress(envelope.sender)
    top = [
        _field("From", f"Mail Delivery System <MAILER-DAEMON@{hostname}>"),
        _field("To", f"<{sender}>"),
        _field("Subject", _SUBJECTS[action]),
        _field("Date", _date(now)),
        _field("Message-ID", f"<{int(now)}.{secrets.token_hex(8)}@{hostname}>"),
        # RFC 3834 §5: mark it automatic, so that auto-responders stay quiet.
        _field("Auto-Submitted", "auto-replied"),
        _field("MIME-Version", "1.0"),
        b"Content-Type: multipart/report; report-type=delivery-status;"
        + _CRLF
        + b'\tboundary="'
        + boundary
        + b'"',
        b"Content-Transfer-Encoding: " + (b"8bit" if eightBit else b"7bit"),
    ]
    out = [_CRLF.join(top), _CRLF, _CRLF]
    out.append(b"This is a MIME-encapsulated message." + _CRLF)
    for headers, content in parts:
        # The CRLF before each delimiter belongs to it (RFC 2046 §5.1.1),
        # so the content is returned byte for byte.
        out.append(_CRLF + b"--" + boundary + _CRLF)
        out.append(_CRLF.join(headers) + _CRLF + _CRLF)
        out.append(content)
    out.append(_CRLF + b"--" + boundary + b"--" + _CRLF)
    return b"".join(out)


# --- the original ------------------------------------------------------------


class _Original:
    """
    @ivar headers: the header block (CRLF line endings, no blank line).
    @ivar full: the whole message to return, or C{None} for headers only.
    @ivar why: why only the headers are returned (for the human part), or
        C{None} if that is simply what was asked.
    """

    def __init__(self, headers, full, why):
        self.headers = headers
        self.full = full
        self.why = why


def _readOriginal(f, maxOriginal, wantFull):
    """
    Stream C{f}: keep its header block, and the whole message only while it
    stays under C{maxOriginal} bytes and can travel as 8bit (no NUL, no line
    over 998 octets).  Stops reading once only the headers are wanted and
    they are complete, so a 50 MB original costs one header block.
    """
    headers = []
    headerSize = 0
    whole = [] if wantFull else None
    total = 0
    inHeaders = True
    why = None
    continued = False  # this chunk continues a line longer than the chunk
    while True:
        line = f.readline(64 * 1024)
        if not line:
            break
        total += len(line)
        if inHeaders:
            if line in (b"\r\n", b"\n") and not continued:
                inHeaders = False
            elif headerSize < maxOriginal and not continued:
                # A header line too long for SMTP is cut: headers-only
                # returns must still be sendable.
                content = line.rstrip(b"\r\n")[:_MAX_LINE]
                headers.append(content.replace(b"\r", b" ").replace(b"\0", b" ") + _CRLF)
                headerSize += len(headers[-1])
        if whole is not None:
            if total > maxOriginal:
                whole = None
                why = f"it is larger than {maxOriginal} bytes"
            elif len(line.rstrip(b"\r\n")) > _MAX_LINE or b"\0" in line or (
                not line.endswith(b"\n") and len(line) >= 64 * 1024
            ):
                whole = None
                why = "it cannot be sent back unchanged (binary content)"
            else:
                whole.append(line)
        continued = not line.endswith(b"\n")
        if whole is None and not inHeaders:
            break
    headerBlock = b"".join(headers)
    full = None
    if whole is not None:
        full = _normaliseLineEndings(b"".join(whole))
    return _Original(headerBlock, full, why)


def _normaliseLineEndings(data):
    """
    The spool holds CRLF text; anything else (bare CR or LF) is made CRLF
    so the returned original cannot end a line where the next hop would not.
    """
    crlf = data.count(_CRLF)
    if data.count(b"\r") == crlf and data.count(b"\n") == crlf:
        return data
    return re.sub(rb"\r\n|\r|\n", _CRLF, data)


# --- the parts ---------------------------------------------------------------


def _humanPart(envelope, recipients, action, hostname, retryUntil, orig):
    lines = [f"This is the mail system at host {hostname}.", ""]
    if action == "failed":
        lines += [
            "Your message could not be delivered to the recipients below.",
            "This is a permanent error: the mail system has given up.",
        ]
    elif action == "delayed":
        lines.append("Your message has not been delivered yet to the recipients below.")
        if retryUntil is not None:
            lines.append(f"The mail system will keep trying until {_date(retryUntil)}.")
        else:
            lines.append("The mail system will keep trying.")
        lines.append("You do not need to send it again.")
    elif action == "delivered":
        lines.append("Your message was delivered to the recipients below, as you asked to be told.")
    elif action == "relayed":
        lines += [
            "Your message was passed on to the recipients' mail system below, which",
            "does not send delivery reports: you may not hear any more about it.",
        ]
    else:  # expanded
        lines += [
            "Your message was delivered to the recipients below, which are lists or",
            "aliases: it has been passed on to their members.",
        ]
    lines.append("")
    for r in recipients:
        what = {
            "failed": "could not be delivered",
            "delayed": "delivery delayed, still trying",
            "delivered": "delivered",
            "relayed": "relayed",
            "expanded": "delivered to a list or alias",
        }[action]
        lines.append(f"<{_printable(r.address)}>: {what}")
        if r.lastError:
            where = (
                f"The mail server {_printable(r.remoteMTA)} said:"
                if r.remoteMTA
                else "Reason:"
            )
            lines.append(f"    {where} {_printable(r.lastError)}")
        lines.append("")
    if orig is not None:
        if orig.full is not None:
            lines.append("Your message is attached.")
        elif orig.why is not None:
            lines.append(f"Only the headers of your message are attached: {orig.why}.")
        else:
            lines.append("The headers of your message are attached.")
    if envelope.queueId:
        lines.append(f"Queue id: {_printable(envelope.queueId)}")
    return "\r\n".join(_wrap(line) for line in lines)


def _statusPart(envelope, recipients, action, reportingMTA, now, retryUntil):
    """The RFC 3464 §2.1 body: per-message fields, then per-recipient blocks."""
    message = [_field("Reporting-MTA", f"dns; {reportingMTA}")]
    if envelope.queueId:
        # RFC 3464 §2.2 allows extension fields; Postfix has its own too.
        message.append(_field("X-Pymailer-Queue-ID", _ascii(envelope.queueId)))
    if envelope.dsnEnvid:
        # RFC 3464 §2.2.1: the ENVID, xtext decoded.
        message.append(
            _field("Original-Envelope-Id", _ascii(_xtextDecode(envelope.dsnEnvid)))
        )
    if envelope.receivedAt:
        message.append(_field("Arrival-Date", _date(envelope.receivedAt)))
    blocks = [_CRLF.join(message) + _CRLF]
    for r in recipients:
        fields = []
        if r.orcpt:
            original = _originalRecipient(r.orcpt)
            if original:
                fields.append(_field("Original-Recipient", original))
        fields.append(_field("Final-Recipient", _addressField(r.address)))
        fields.append(_field("Action", action))
        fields.append(_field("Status", _status(r.lastError, action)))
        if r.remoteMTA:
            fields.append(_field("Remote-MTA", f"dns; {_ascii(r.remoteMTA)}"))
        if r.lastError and _REPLY.match(r.lastError.encode("utf-8", "replace")):
            fields.append(_field("Diagnostic-Code", f"smtp; {_ascii(r.lastError)}"))
        if r.attempts:
            fields.append(_field("Last-Attempt-Date", _date(now)))
        if action == "delayed" and retryUntil is not None:
            fields.append(_field("Will-Retry-Until", _date(retryUntil)))
        blocks.append(_CRLF.join(fields) + _CRLF)
    return _CRLF.join(blocks)


def _status(lastError, action):
    """
    The RFC 3463 enhanced status code of C{lastError}, or one derived from
    its reply code's class, or the action's generic one.
    """
    if lastError:
        m = _REPLY.match(lastError.encode("utf-8", "replace"))
        if m:
            if m.group(2):
                return m.group(2).decode("ascii")
            return m.group(1)[:1].decode("ascii") + ".0.0"
    return _DEFAULT_STATUS[action]


def _originalRecipient(orcpt):
    """
    RFC 3461 §4.2 ORCPT C{"rfc822;a+2Bb@x"} as RFC 3464 §2.3.1 wants it,
    C{"rfc822; a+b@x"}: xtext decoded.  C{None} if malformed.
    """
    addrType, sep, value = orcpt.partition(";")
    addrType = addrType.strip()
    if not sep or not addrType or not re.fullmatch(r"[A-Za-z0-9-]+", addrType):
        return None
    decoded = _xtextDecode(value.strip())
    if not decoded:
        return None
    if addrType.lower() == "rfc822":
        return _addressField(decoded)
    return f"{addrType}; {_ascii(decoded)}"


def _addressField(address):
    """
    C{"rfc822; user@example.org"}; an internationalised address uses the
    RFC 6533 §3 C{utf-8} type with C{\\x{HHHH}} escapes, so the field stays
    US-ASCII.
    """
    if all(0x20 < ord(c) < 0x7F for c in address):
        return f"rfc822; {address}"
    out = []
    for c in address:
        o = ord(c)
        if 0x21 <= o <= 0x7E and c not in "+=\\":
            out.append(c)
        else:
            out.append(f"\\x{{{o:X}}}")
    return "utf-8; " + "".join(out)


def _xtextDecode(value):
    """RFC 3461 §4: C{+XX} is the byte 0xXX; the result read as UTF-8."""

    def byte(m):
        return bytes([int(m.group(1), 16)])

    raw = re.sub(rb"\+([0-9A-Fa-f]{2})", byte, value.encode("utf-8", "replace"))
    return raw.decode("utf-8", "replace")


# --- header formatting -------------------------------------------------------


def _date(t):
    """An RFC 5322 date in UTC (C{+0000}: the zone is known)."""
    return email.utils.format_datetime(
        datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    )


def _printable(text):
    """One line of text without control characters (for the human part)."""
    return "".join(c if c.isprintable() else " " for c in str(text)).strip()


def _ascii(text):
    """One line of printable US-ASCII: anything else becomes C{?}."""
    return "".join(
        c if 0x20 <= ord(c) < 0x7F else ("?" if ord(c) >= 0x7F else " ") for c in str(text)
    ).strip()


def _headerAddress(address):
    """The sender for the To field: UTF-8 is kept (RFC 6532); controls not."""
    return "".join(c if c.isprintable() and c not in "<>" else "?" for c in address)


def _field(name, value):
    """
    C{Name: value} as bytes, folded at spaces near 78 columns and never
    longer than 998 octets a line (RFC 5322 §2.1.1, §2.2.3).
    """
    text = f"{name}: {value}"
    raw = text.encode("utf-8")
    if len(raw) <= _FOLD_AT:
        return raw
    lines = []
    current = b""
    for word in raw.split(b" "):
        while len(word) > _MAX_LINE - 1:
            # A single unbreakable word: it has to be cut.
            head, word = word[: _MAX_LINE - 1], word[_MAX_LINE - 1 :]
            if current:
                lines.append(current)
            lines.append(head)
            current = b""
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= _FOLD_AT:
            current += b" " + word
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return (_CRLF + b" ").join(lines)


def _wrap(line, width=76):
    """Wrap a line of the human part at spaces (it stays readable in any client)."""
    if len(line) <= width:
        return line
    indent = line[: len(line) - len(line.lstrip(" "))] or ""
    out = []
    current = ""
    for word in line.split(" "):
        if not word:
            continue
        candidate = f"{current} {word}" if current else indent + word
        if len(candidate) > width and current:
            out.append(current)
            current = indent + "  " + word
        else:
            current = candidate
        while len(current.encode("utf-8")) > _MAX_LINE:
            out.append(current[: _MAX_LINE // 4])
            current = current[_MAX_LINE // 4 :]
    if current:
        out.append(current)
    return "\r\n".join(out)


def _isEightBit(data):
    return not data.isascii()


def _boundary(contents):
    """A boundary that occurs in none of the contents (RFC 2046 §5.1.1)."""
    while True:
        boundary = b"=_pymailer_" + secrets.token_hex(12).encode("ascii")
        if not any(boundary in c for c in contents):
            return boundary
