"""
The messages the webmail writes: a new message, a reply, a forward, as
MIME (RFC 5322, RFC 2045-2049), and what a reply or forward starts with.

Pure computation (no store, no reactor).  Header fields that are not
ASCII are encoded words (RFC 2047) and attachment names RFC 2231
parameters, by the standard library's C{email} with its SMTP policy; the
text is UTF-8, quoted-printable when it is not plain ASCII in short lines,
so the message is 7-bit unless it carries a forwarded 8-bit message.  A
forwarded message is attached as the octets it was stored as
(C{message/rfc822}, RFC 2046 5.2.1), never re-serialised: its own
signatures stay valid.

Trust: every field is the user's; addresses are parsed and refused (with
L{ValueError}) when they are not an addr-spec, and no value can add a
header line (the C{email} library refuses CR and LF in a value; the
single-line fields are collapsed to one line first).
"""

from __future__ import annotations

import email.policy
import email.utils
import html
import re
import time
import uuid
from datetime import datetime, timezone
from dataclasses import dataclass, field
from email.message import EmailMessage, MIMEPart

import nh3

from pymailer.web.webmail import content

# CRLF line ends, no line over 78 where it can be folded, 8-bit allowed
# only where we say so (the forwarded message's part).
POLICY = email.policy.SMTP
# RFC 5322 3.6.4: References may grow long; keep the newest ids.
MAX_REFERENCES = 20
# RFC 5321 4.5.3.1.6: a line of at most 998 octets without quoting.
MAX_PLAIN_LINE = 998
# An uploaded file's type as sent by the browser: kept only if plain.
MEDIA_TYPE = re.compile(r"\A[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*\Z")
DEFAULT_TYPE = "application/octet-stream"
REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv)\s*:\s*", re.IGNORECASE)
FORWARD_PREFIX = re.compile(r"^\s*(fwd?|wg)\s*:\s*", re.IGNORECASE)
# RFC 5322 2.2 and 2.3: no NUL or other control character in a header
# field or (but tab and line ends) in a 7-bit body.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
BAD_ADDRESS = "Not an email address: {}"


@dataclass
class Attachment:
    """A file to attach: its name, media type and octets."""

    filename: str
    contentType: str
    data: bytes

    def __post_init__(self):
        # A file name is a header parameter: one line (a browser's RFC 2231
        # name may decode to CR LF, which the email library refuses).
        self.filename = oneLine(self.filename)
        contentType = (self.contentType or "").strip().lower()
        self.contentType = contentType if MEDIA_TYPE.match(contentType) else DEFAULT_TYPE


@dataclass
class Composed:
    """
    What the user wrote: the form's fields (text as typed), the files to
    attach and the messages forwarded as attachments (their octets).

    @ivar inReplyTo: the answered message's Message-ID, or C{""}.
    @ivar references: its References plus that id (RFC 5322 3.6.4), as text.
    """

    sender: str
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    inReplyTo: str = ""
    references: str = ""
    attachments: list = field(default_factory=list)
    messages: list = field(default_factory=list)


def oneLine(text):
    """
    A single-line field: its whitespace (CR and LF included) collapsed,
    control characters (NUL...) left out.
    """
    return " ".join(CONTROL.sub("", str(text)).split())


def addresses(text):
    """
    The addresses of a To/Cc/Bcc field as typed (comma-separated, with or
    without display names), parsed as RFC 5322 3.4 C{address-list}.

    @return: C{[Address]}.
    @raise ValueError: the field has any defect (the parser's), or an
        address has no domain.
    """
    text = oneLine(text).strip(" ,")
    if not text:
        return []
    field = POLICY.header_factory("To", text)
    bad = [a for a in field.addresses
           if not a.username or not a.domain or a.addr_spec.startswith('"')]
    if field.defects or bad or not field.addresses:
        raise ValueError(BAD_ADDRESS.format(text))
    return list(field.addresses)


def senderAddress(text):
    """The one From address; L{ValueError} if there is not exactly one."""
    found = addresses(text)
    if len(found) != 1:
        raise ValueError("Give one From address.")
    return found[0]


def recipients(composed):
    """Every envelope recipient (To, Cc, Bcc), each once, in order."""
    seen = {}
    for text in (composed.to, composed.cc, composed.bcc):
        for a in addresses(text):
            seen.setdefault(a.addr_spec.lower(), a.addr_spec)
    return list(seen.values())


def _setText(part, text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    plain = text.isascii() and not CONTROL.search(text) and all(
        len(line) <= MAX_PLAIN_LINE for line in text.split("\n"))
    part.set_content(text, charset="utf-8", cte="7bit" if plain else "quoted-printable")


def _forwardedPart(octets, token):
    """
    A C{message/rfc822} part whose payload is C{token}, replaced by the
    octets as stored in L{octetsOf}: so nothing in the forwarded message is
    refolded or re-encoded (the C{email} generator would do both).
    """
    part = MIMEPart(policy=POLICY)
    part["Content-Type"] = "message/rfc822"
    # RFC 2046 5.2.1: 7bit, 8bit or binary only.
    part["Content-Transfer-Encoding"] = "7bit" if octets.isascii() else "8bit"
    part["Content-Disposition"] = "attachment"
    part.set_payload(token)
    return part


def build(composed, withBcc=False, draft=False, now=None):
    """
    The message (an L{EmailMessage}) for C{composed}: Date and Message-ID
    (RFC 5322 3.6.1, 3.6.4) of now, the From's domain in the id.

    @param withBcc: keep the Bcc field (a draft, the Sent copy); the copy
        that is sent has none (RFC 5322 3.6.3).
    @raise ValueError: a bad address.
    """
    sender = senderAddress(composed.sender)
    message = EmailMessage(policy=POLICY)
    message["From"] = sender
    for name, text in (("To", composed.to), ("Cc", composed.cc),
                       ("Bcc", composed.bcc if withBcc else "")):
        found = addresses(text)
        if found:
            message[name] = found
    subject = oneLine(composed.subject)
    if subject:
        message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(
        datetime.fromtimestamp(time.time() if now is None else now, timezone.utc))
    message["Message-ID"] = email.utils.make_msgid(domain=sender.domain or None)
    if composed.inReplyTo:
        message["In-Reply-To"] = oneLine(composed.inReplyTo)
    if composed.references:
        message["References"] = oneLine(composed.references)
    message["MIME-Version"] = "1.0"
    if draft:
        # RFC 3501 has \Draft; clients also look for this (Thunderbird).
        message["X-Mozilla-Draft-Info"] = "internal/draft; vcard=0; receipt=0"
    _setText(message, composed.body)
    for attachment in composed.attachments:
        maintype, _, subtype = attachment.contentType.partition("/")
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                               filename=attachment.filename or "attachment")
    message.forwarded = {}
    for octets in composed.messages:
        if message.get_content_type() != "multipart/mixed":
            message.make_mixed()
        token = f"pymailer-forwarded-{uuid.uuid4().hex}"
        message.forwarded[token.encode("ascii")] = octets
        message.attach(_forwardedPart(octets, token))
    return message


def octetsOf(message):
    """The message's octets, CRLF line ends, forwarded messages spliced in."""
    octets = message.as_bytes(policy=POLICY)
    for token, forwarded in getattr(message, "forwarded", {}).items():
        raw = forwarded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not raw.endswith(b"\r\n"):
            raw += b"\r\n"
        # RFC 2046 5.1.1: the CRLF before a boundary belongs to the
        # boundary, so the one the generator wrote after the token stays.
        octets = octets.replace(token, raw, 1)
    return octets


def withoutBcc(octets):
    """
    C{octets} (of L{build}) without its Bcc field (RFC 5322 3.6.3: the
    copy sent shows no Bcc): the field and its folded lines cut from the
    header section, the rest the same octets.
    """
    # From comes first (build), so the field follows a line end.
    header = b"\r\n" + octets[:octets.find(b"\r\n\r\n") + 2]
    found = header.find(b"\r\nBcc:")
    if found < 0:
        return octets
    start = stop = found + 2
    while True:
        stop = header.index(b"\r\n", stop) + 2
        if header[stop:stop + 1] not in (b" ", b"\t"):
            break
    return octets[:start - 2] + octets[stop - 2:]


def bodyType(octets):
    """RFC 6152: the BODY a submission of C{octets} declares."""
    return "7BIT" if octets.isascii() else "8BITMIME"


# -- what a reply or forward starts with ------------------------------------------


def _header(message, name):
    return content._header(message, name)


def _textOf(message):
    """The original's text: its plain part, or its HTML part's text."""
    body = content._bodyPart(message)
    if body is None:
        return ""
    text = content._text(body).replace("\r\n", "\n").replace("\r", "\n")
    if body.get_content_subtype() == "html":
        text = html.unescape(nh3.clean(re.sub(r"(?i)<br\s*/?>|</p>", "\n", text), tags=set()))
    return text


def _prefixed(prefix, pattern, subject):
    subject = oneLine(subject)
    return subject if pattern.match(subject) else f"{prefix}: {subject}".rstrip()


def _mine(address, own):
    return address.addr_spec.lower() in own


def reply(message, own, replyAll=False):
    """
    The fields of a reply to C{message} (an L{EmailMessage}): To the
    Reply-To or From (RFC 5322 3.6.2; the To of the user's own message),
    with reply-all the other To and Cc
    but the user's own addresses (C{own}, lower-case) in Cc; "Re:"; the
    original quoted; In-Reply-To and References (RFC 5322 3.6.4).

    @return: a dict of L{Composed} fields.
    """
    own = {a.lower() for a in own}

    def parsed(name):
        try:
            return addresses(_header(message, name))
        except ValueError:
            return []

    to = parsed("Reply-To") or parsed("From")
    if to and all(_mine(a, own) for a in to):
        # A reply to one's own message (from Sent) goes to its recipients.
        to = parsed("To") or to
    cc = []
    if replyAll:
        seen = {a.addr_spec.lower() for a in to}
        for a in parsed("To") + parsed("Cc"):
            if not _mine(a, own) and a.addr_spec.lower() not in seen:
                seen.add(a.addr_spec.lower())
                cc.append(a)
    messageId = oneLine(_header(message, "Message-ID"))
    references = oneLine(_header(message, "References")).split()
    if messageId:
        references.append(messageId)
    quoted = "\n".join("> " + line if line else ">"
                       for line in _textOf(message).rstrip("\n").split("\n"))
    intro = f"On {_header(message, 'Date') or 'an earlier date'}, " \
            f"{_header(message, 'From') or 'someone'} wrote:"
    return dict(to=", ".join(str(a) for a in to), cc=", ".join(str(a) for a in cc),
                subject=_prefixed("Re", REPLY_PREFIX, _header(message, "Subject")),
                body=f"\n\n{intro}\n{quoted}\n", inReplyTo=messageId,
                references=" ".join(references[-MAX_REFERENCES:]))


def forward(message):
    """The fields of a forward of C{message} inline: "Fwd:" and its text."""
    lines = ["", "", "---------- Forwarded message ----------"]
    lines += [f"{name}: {value}" for name, value in content.headers(message)]
    lines += ["", _textOf(message)]
    return dict(subject=_prefixed("Fwd", FORWARD_PREFIX, _header(message, "Subject")),
                body="\n".join(lines))


def forwardAsAttachment(message):
    """The fields of a forward of C{message} as an attachment: "Fwd:" only."""
    return dict(subject=_prefixed("Fwd", FORWARD_PREFIX, _header(message, "Subject")))


def fromDraft(message):
    """The fields of a saved draft (an L{EmailMessage}), to edit it again."""
    fields = {name.lower().replace("-", ""): _header(message, name)
              for name in ("From", "To", "Cc", "Bcc", "Subject")}
    return dict(sender=fields["from"], to=fields["to"], cc=fields["cc"], bcc=fields["bcc"],
                subject=fields["subject"], body=_textOf(message).rstrip("\n") + "\n",
                inReplyTo=oneLine(_header(message, "In-Reply-To")),
                references=oneLine(_header(message, "References")))
