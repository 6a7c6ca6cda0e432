"""
A message as the webmail shows it: its decoded headers, the body part it
displays (HTML, sanitised, or plain text), and its attachments.

Pure computation on octets (no store, no reactor): L{pymailer.web.webmail.mailbox}
calls it in the thread pool.

Trust: none.  The message is whatever a sender wrote.  Its HTML goes
through nh3 (the Ammonia sanitiser) with an allowlist of elements,
attributes, URL schemes and CSS properties: no script, no event handler,
no form, no frame, no C{javascript:} or C{data:} link; an image loads only
from C{data:} or C{cid:} unless the user asked for remote content.  The
page that shows it adds two more walls: it is served with a CSP that
forbids script and remote loads, into a sandboxed frame.  Broken MIME or
an unknown charset gives replacement characters, never an exception.
"""

from __future__ import annotations

import base64
import email
import email.policy
import html
import re
from dataclasses import dataclass, field

import nh3

from pymailer.message.stdlib import parseMessage

# The header fields shown above a message, in this order.
SHOWN_HEADERS = ("From", "To", "Cc", "Date", "Subject")
# A field longer than this (as written) is shown cut and undecoded: see
# L{_header}.  4 KiB hold a To: of 100 named addresses; parseMessage cuts
# fields at twice that for every reader of the email package.
MAX_SHOWN_FIELD = 4 * 1024

# Elements kept (their content is kept for any other, but script and
# style, whose content is dropped with them).
TAGS = frozenset({
    "a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption", "center",
    "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "font",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol",
    "p", "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var"})
CELL = {"colspan", "rowspan", "valign", "width", "height", "bgcolor", "nowrap"}
ATTRIBUTES = {
    "*": {"style", "title", "dir", "lang", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "table": {"width", "cellpadding", "cellspacing", "border", "bgcolor"},
    "td": CELL, "th": CELL,
    "col": {"span", "width"}, "colgroup": {"span", "width"},
    "font": {"color", "size", "face"},
    "ol": {"start", "type"},
}
# CSS properties kept in style attributes: layout, colour and type only.
# None of them takes a url() (no background, background-image,
# list-style-image, content, cursor, border-image): CSS cannot load
# anything.
STYLE_PROPERTIES = frozenset({
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "font-variant", "text-align", "text-decoration", "text-indent",
    "text-transform", "line-height", "letter-spacing", "word-spacing", "white-space",
    "vertical-align", "direction", "margin", "margin-top", "margin-right", "margin-bottom",
    "margin-left", "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left", "border-color",
    "border-style", "border-width", "border-collapse", "border-spacing", "border-radius",
    "width", "height", "max-width", "min-width", "max-height", "min-height", "display",
    "list-style-type", "table-layout", "text-overflow", "overflow-wrap", "word-break"})
URL_SCHEMES = frozenset({"http", "https", "mailto", "cid", "data"})
# Links may go to the web and to mail addresses; data: never (a page of
# the sender's making).
LINK_SCHEMES = ("http:", "https:", "mailto:")
# Images inside the message: inline data, or a part of the message.
LOCAL_IMAGE = re.compile(r"^\s*(data:image/|cid:)", re.IGNORECASE)
REMOTE_IMAGE = re.compile(r"^\s*https?:", re.IGNORECASE)
CID = re.compile(r"^\s*cid:\s*<?([^>\s]+)>?\s*$", re.IGNORECASE)
# Images a cid: URL may name: inline as data: URLs (the frame's CSP allows
# nothing else), up to this many octets in all for one message.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
MAX_INLINE = 8 * 1024 * 1024

# The body document's own style (allowed by its CSP's 'unsafe-inline').
BODY_STYLE = ("body{font-family:system-ui,sans-serif;margin:.5em;overflow-wrap:anywhere;"
              "color:#222;background:#fff}img{max-width:100%;height:auto}"
              "pre{white-space:pre-wrap;font-family:inherit;margin:0}"
              "table{max-width:100%}")


@dataclass
class Attachment:
    """
    One attachment: C{part} is its index in the message's MIME walk (the
    download URL's C{part}).
    """

    part: int
    filename: str
    contentType: str
    size: int


@dataclass
class Shown:
    """
    A message as the webmail shows it.

    @ivar headers: C{[(name, decoded value)]} of L{SHOWN_HEADERS} present.
    @ivar body: the body document (HTML text, sanitised) for the frame.
    @ivar remoteBlocked: how many remote images were left out (the page
        then offers to show them).
    """

    headers: list
    body: str
    remoteBlocked: int = 0
    attachments: list = field(default_factory=list)


def parse(octets):
    """
    The message as an L{email.message.EmailMessage}; one nested too deep
    for the email package is its source as one text part
    (L{parseMessage}).
    """
    return parseMessage(octets, email.policy.default)


def _text(part):
    """A text part's content as text, whatever its charset claims."""
    try:
        return part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace")


def _rawField(message, name):
    """The first C{name} field of C{message} as written (folded), or C{None}."""
    name = name.lower()
    for fieldName, value in message.raw_items():
        if fieldName.lower() == name:
            return value
    return None


def _header(message, name):
    raw = _rawField(message, name)
    if raw is not None and len(raw) > MAX_SHOWN_FIELD:
        # Not decoded: the email package's address parser takes time
        # growing with the square of the field (100 s for a To: of 100,000
        # addresses), and no one reads that much of a field anyway.
        return " ".join(str(raw)[:MAX_SHOWN_FIELD].split()) + "\u2026"
    try:
        value = message[name]
    except (ValueError, IndexError, TypeError, AttributeError):
        # A header the parser cannot make sense of: shown raw.
        value = message.get_all(name, failobj=[""])[0]
    return "" if value is None else " ".join(str(value).split())


def headers(message):
    return [(name, _header(message, name)) for name in SHOWN_HEADERS if name in message]


def _bodyPart(message):
    try:
        return message.get_body(preferencelist=("html", "plain"))
    except (KeyError, ValueError, AttributeError):
        return None


MESSAGE = "message/rfc822"
AS_RECEIVED = email.policy.compat32.clone(linesep="\r\n", max_line_length=0)


def _messageOctets(part):
    """The octets of the message a C{message/rfc822} part holds."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        # compat32 writes the fields as they came (but for the spaces
        # after the colon), 8-bit text and all; the default policy would
        # refold them.
        return payload[0].as_bytes(policy=AS_RECEIVED)
    return part.get_payload(decode=True) or b""


def _messageName(part, index):
    """An attached message's file name: its own, or its subject's."""
    named = part.get_filename()
    if named:
        return named
    payload = part.get_payload()
    subject = _header(payload[0], "Subject") if isinstance(payload, list) and payload else ""
    return (subject or f"message-{index}")[:100] + ".eml"


def attachments(message, body=None):
    """The message's L{Attachment}s: every leaf but the body and its alternatives."""
    found, inside = [], set()
    for index, part in enumerate(message.walk()):
        if id(part) in inside:
            continue
        if part.get_content_type() == MESSAGE:
            # An attached message (a forward, RFC 2046 5.2.1): one
            # attachment, its own parts not listed.
            inside.update(id(p) for p in part.walk() if p is not part)
            found.append(Attachment(index, _messageName(part, index), MESSAGE,
                                    len(_messageOctets(part))))
            continue
        if part.is_multipart() or part is body:
            continue
        named = part.get_filename()
        disposition = part.get_content_disposition()
        if disposition != "attachment" and not named and part.get_content_maintype() == "text":
            # The other alternative of the body, or a text part shown inline.
            continue
        payload = part.get_payload(decode=True) or b""
        found.append(Attachment(index, named or f"part-{index}", part.get_content_type(),
                                len(payload)))
    return found


def attachmentPart(message, index):
    """
    The content type, file name and decoded octets of the attachment at
    C{index}.

    @raise KeyError: no attachment there.
    """
    for attachment in attachments(message, _bodyPart(message)):
        if attachment.part == index:
            for i, part in enumerate(message.walk()):
                if i == index:
                    octets = (_messageOctets(part) if attachment.contentType == MESSAGE
                              else part.get_payload(decode=True) or b"")
                    return attachment.contentType, attachment.filename, octets
    raise KeyError(index)


def inlineImages(message):
    """
    C{{content id: data: URL}} of the message's image parts that carry a
    Content-ID (RFC 2392: what a C{cid:} URL in its HTML names, as
    multipart/related (RFC 2387) sends them), at most L{MAX_INLINE}
    octets in all.
    """
    found, total = {}, 0
    for part in message.walk():
        if part.is_multipart() or part.get_content_type() not in INLINE_TYPES:
            continue
        contentId = str(part.get("Content-ID", "")).strip().strip("<>").strip()
        if not contentId:
            continue
        payload = part.get_payload(decode=True) or b""
        total += len(payload)
        if total > MAX_INLINE:
            break
        found[contentId] = (f"data:{part.get_content_type()};base64,"
                            + base64.b64encode(payload).decode("ascii"))
    return found


def sanitise(markup, remote=False, inline=None):
    """
    C{markup} (a sender's HTML) with only what L{TAGS}, L{ATTRIBUTES},
    L{URL_SCHEMES} and L{STYLE_PROPERTIES} allow; links open in a new
    browsing context without opener or referrer.  Remote images are left
    out unless C{remote}; C{cid:} images are replaced by the data: URL of
    C{inline} (L{inlineImages}), or left out.

    @return: C{(html, remoteBlocked)}.
    """
    blocked = [0]

    def keep(tag, attribute, value):
        if tag == "img" and attribute == "src":
            cid = CID.match(value)
            if cid is not None:
                return (inline or {}).get(cid.group(1))
            if LOCAL_IMAGE.match(value):
                return value
            if REMOTE_IMAGE.match(value):
                if remote:
                    return value
                blocked[0] += 1
            return None
        if tag == "a" and attribute == "href":
            return value if value.strip().lower().startswith(LINK_SCHEMES) else None
        return value

    clean = nh3.clean(
        markup, tags=set(TAGS), clean_content_tags={"script", "style"},
        attributes={tag: set(names) for tag, names in ATTRIBUTES.items()},
        attribute_filter=keep, url_schemes=set(URL_SCHEMES),
        filter_style_properties=set(STYLE_PROPERTIES),
        link_rel="noopener noreferrer", set_tag_attribute_values={"a": {"target": "_blank"}})
    return clean, blocked[0]


def bodyDocument(fragment):
    """The whole document the body frame loads, around a safe C{fragment}."""
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width\">"
            f"<style>{BODY_STYLE}</style></head><body>{fragment}</body></html>")


def show(octets, remote=False):
    """The L{Shown} message of C{octets}."""
    message = parse(octets)
    body = _bodyPart(message)
    if body is None:
        fragment, blocked = "", 0
    elif body.get_content_subtype() == "html":
        fragment, blocked = sanitise(_text(body), remote, inlineImages(message))
    else:
        fragment, blocked = f"<pre>{html.escape(_text(body))}</pre>", 0
    return Shown(headers(message), bodyDocument(fragment), blocked,
                 attachments(message, body))
