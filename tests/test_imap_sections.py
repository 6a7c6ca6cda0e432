"""
FETCH BODY[section] through encapsulated messages (RFC 3501 6.4.5 part
numbering): the structure of the RFC's own example, a message whose own
type is message/rfc822 (a forward as attachment, a bounce), and
message/rfc822 parts holding single-part and multipart messages; checked on
the parsed message, at the protocol level and end to end with IMAPClient.
"""

import pytest

from imapharness import Client
from imaplive import IMAP_SERVER, client
from mailserver import MailServer
from pymailer.message.mime import Part


def crlf(text):
    return text.replace("\n", "\r\n").encode()


def leaf(ctype, number):
    """A body part whose content names its part number."""
    return f"Content-Type: {ctype}\n\nbody of {number}"


def multipart(kind, boundary, *parts):
    """A multipart entity (header and body) of C{parts}."""
    return (f"Content-Type: MULTIPART/{kind}; boundary={boundary}\n\n"
            + "".join(f"--{boundary}\n{p}\n" for p in parts) + f"--{boundary}--")


def encapsulated(sender, subject, body):
    """A MESSAGE/RFC822 part holding a message from C{sender}."""
    return f"Content-Type: MESSAGE/RFC822\n\nFrom: {sender}\nSubject: {subject}\n{body}"


# RFC 3501 6.4.5's example, part for part.
RFC3501_EXAMPLE = crlf(
    "From: top@example.org\nSubject: the RFC 3501 6.4.5 example\nMIME-Version: 1.0\n"
    + multipart(
        "MIXED", "top",
        leaf("TEXT/PLAIN", 1),
        leaf("APPLICATION/OCTET-STREAM", 2),
        encapsulated("three@example.org", "part 3", multipart(
            "MIXED", "three",
            leaf("TEXT/PLAIN", "3.1"),
            leaf("APPLICATION/OCTET-STREAM", "3.2"))),
        multipart(
            "MIXED", "four",
            leaf("IMAGE/GIF", "4.1"),
            encapsulated("fourtwo@example.org", "part 4.2", multipart(
                "MIXED", "msg42",
                leaf("TEXT/PLAIN", "4.2.1"),
                multipart(
                    "ALTERNATIVE", "alt",
                    leaf("TEXT/PLAIN", "4.2.2.1"),
                    leaf("TEXT/RICHTEXT", "4.2.2.2"))))))
    + "\n")

RFC3501_SECTIONS = {
    "1": b"body of 1",
    "2": b"body of 2",
    "3.HEADER": crlf("From: three@example.org\nSubject: part 3\n"
                     "Content-Type: MULTIPART/MIXED; boundary=three\n\n"),
    "3.1": b"body of 3.1",
    "3.2": b"body of 3.2",
    "4.1": b"body of 4.1",
    "4.1.MIME": crlf("Content-Type: IMAGE/GIF\n\n"),
    "4.2.HEADER": crlf("From: fourtwo@example.org\nSubject: part 4.2\n"
                       "Content-Type: MULTIPART/MIXED; boundary=msg42\n\n"),
    "4.2.1": b"body of 4.2.1",
    "4.2.1.MIME": crlf("Content-Type: TEXT/PLAIN\n\n"),
    "4.2.2.1": b"body of 4.2.2.1",
    "4.2.2.2": b"body of 4.2.2.2",
    "4.2.2.2.MIME": crlf("Content-Type: TEXT/RICHTEXT\n\n"),
    "3.TEXT": crlf("--three\nContent-Type: TEXT/PLAIN\n\nbody of 3.1\n--three\n"
                   "Content-Type: APPLICATION/OCTET-STREAM\n\nbody of 3.2\n--three--"),
    "5": b"",
    "3.3": b"",
    "4.2.3": b"",
    "4.2.2.3": b"",
}

# A forward as attachment: the message's own type is message/rfc822, and it
# holds a multipart/alternative message.
FORWARD_OF_ALTERNATIVE = crlf("""From: a@example.org
Subject: forwarded whole
MIME-Version: 1.0
Content-Type: message/rfc822

From: b@example.org
Subject: inner alternative
Content-Type: multipart/alternative; boundary=ALT

--ALT
Content-Type: text/plain

inner plain
--ALT
Content-Type: text/html

<p>inner html</p>
--ALT--
""")

FORWARD_OF_ALTERNATIVE_SECTIONS = {
    "1.HEADER": crlf("From: b@example.org\nSubject: inner alternative\n"
                     "Content-Type: multipart/alternative; boundary=ALT\n\n"),
    "1.1": b"inner plain",
    "1.1.MIME": crlf("Content-Type: text/plain\n\n"),
    "1.2": b"<p>inner html</p>",
    "1.2.MIME": crlf("Content-Type: text/html\n\n"),
    "1.3": b"",
}

# A message/rfc822 that holds a message/rfc822 (a forward of a forward)
# whose innermost message is single-part: 1.1.HEADER/TEXT are the
# innermost message's, and 1.1.1 is its body.
FORWARD_OF_FORWARD = crlf("""From: a@example.org
Subject: forward of a forward
MIME-Version: 1.0
Content-Type: message/rfc822

From: b@example.org
Subject: middle
Content-Type: message/rfc822

From: c@example.org
Subject: innermost

innermost body
""")

FORWARD_OF_FORWARD_SECTIONS = {
    "1.HEADER": crlf("From: b@example.org\nSubject: middle\nContent-Type: message/rfc822\n\n"),
    "1.1": crlf("From: c@example.org\nSubject: innermost\n\ninnermost body\n"),
    "1.1.HEADER": crlf("From: c@example.org\nSubject: innermost\n\n"),
    "1.1.TEXT": crlf("innermost body\n"),
    "1.1.1": crlf("innermost body\n"),
    "1.2": b"",
}

# multipart/mixed holding a message/rfc822 with a multipart/alternative and
# one with a single-part message: for the latter, 2.1 is its body.
MIXED_WITH_MESSAGES = crlf("""From: a@example.org
Subject: two attached messages
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=OUT

--OUT
Content-Type: message/rfc822

From: b@example.org
Subject: alternative inside
Content-Type: multipart/alternative; boundary=ALT

--ALT
Content-Type: text/plain

alt plain
--ALT
Content-Type: text/html

<p>alt html</p>
--ALT--

--OUT
Content-Type: message/rfc822

From: c@example.org
Subject: single inside

single body
--OUT--
""")

MIXED_WITH_MESSAGES_SECTIONS = {
    "1.1": b"alt plain",
    "1.2": b"<p>alt html</p>",
    "1.1.MIME": crlf("Content-Type: text/plain\n\n"),
    "1.HEADER": crlf("From: b@example.org\nSubject: alternative inside\n"
                     "Content-Type: multipart/alternative; boundary=ALT\n\n"),
    "2.1": b"single body",
    "2.HEADER": crlf("From: c@example.org\nSubject: single inside\n\n"),
    "2.TEXT": b"single body",
    "2.2": b"",
}

CASES = [
    ("rfc3501-example", RFC3501_EXAMPLE, RFC3501_SECTIONS),
    ("forward-of-alternative", FORWARD_OF_ALTERNATIVE, FORWARD_OF_ALTERNATIVE_SECTIONS),
    ("forward-of-forward", FORWARD_OF_FORWARD, FORWARD_OF_FORWARD_SECTIONS),
    ("mixed-with-messages", MIXED_WITH_MESSAGES, MIXED_WITH_MESSAGES_SECTIONS),
]


def splitSection(section):
    """C{"4.2.HEADER"} -> C{([4, 2], "HEADER")}."""
    numbers, spec = [], []
    for piece in section.split("."):
        (spec if spec or not piece.isdigit() else numbers).append(piece)
    return [int(n) for n in numbers], ".".join(spec)


@pytest.mark.parametrize("name,message,sections", CASES, ids=[c[0] for c in CASES])
def test_sections_of_parsed_message(name, message, sections):
    """An attachment inside a forwarded message opens with its own content, not as an empty file."""
    part = Part(message, 0, len(message))
    got = {s: bytes(part.section(*splitSection(s))) for s in sections}
    assert got == sections


@pytest.mark.parametrize("name,message,sections", CASES, ids=[c[0] for c in CASES])
def test_fetch_sections_at_protocol_level(tmp_path, name, message, sections):
    """A mail client reading a part of a forwarded message gets that part's octets in the FETCH reply."""
    c = Client(tmp_path, secure=True)
    c.login()
    c.deliver(message)
    c.send(b"s SELECT INBOX\r\n")
    for section, expected in sections.items():
        out = c.send(f"f FETCH 1 BODY.PEEK[{section}]\r\n".encode())
        assert out == (b"* 1 FETCH (BODY[%s] {%d}\r\n%s)\r\nf OK FETCH completed\r\n"
                       % (section.encode(), len(expected), expected)), section


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = MailServer(tmp_path_factory.mktemp("sections"), **IMAP_SERVER)
    s.provision()
    s.start()
    yield s
    s.stop()


def test_fetch_sections_with_imapclient(server):
    """Thunderbird-style part fetches of nested forwarded messages show their content over the wire."""
    c = client(server)
    c.create_folder("Sections")
    for _, message, _ in CASES:
        c.append("Sections", message)
    c.select_folder("Sections", readonly=True)
    uids = c.search(["ALL"])
    assert len(uids) == len(CASES)
    for uid, (name, _, sections) in zip(uids, CASES):
        items = [f"BODY.PEEK[{s}]" for s in sections]
        got = c.fetch([uid], items)[uid]
        assert {s: got[f"BODY[{s}]".encode()] for s in sections} == sections, name
    c.logout()
    assert "Traceback" not in server.log()
