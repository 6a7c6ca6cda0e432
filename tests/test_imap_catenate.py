"""
CATENATE (RFC 4469) through the protocol: a client saving a draft or
forwarding an attachment builds the message on the server from TEXT
literals and IMAP URLs (RFC 5092) of its own messages, following the
RFC's section 5 examples.
"""

import re

import pytest

from imapharness import Client, USER

DRAFT = (b"Received: from example.net by example.com\r\n"
         b"From: Bob <bob@example.com>\r\n"
         b"To: Alice <alice@example.org>\r\n"
         b"Subject: About the meeting\r\n"
         b"MIME-Version: 1.0\r\n"
         b'Content-Type: multipart/mixed; boundary="outer"\r\n'
         b"\r\n"
         b"--outer\r\n"
         b"Content-Type: text/plain\r\n"
         b"\r\n"
         b"The agenda is attached.\r\n"
         b"--outer\r\n"
         b"Content-Type: application/pdf\r\n"
         b"Content-Transfer-Encoding: base64\r\n"
         b"\r\n"
         b"JVBERi0xLjQK\r\n"
         b"--outer--\r\n")
FORWARDED = b"From: carol@example.net\r\nSubject: Lunch\r\n\r\nNoon?\r\n"
BOUNDARY = b"\r\n--------------030308070208000400050907\r\n"


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path, secure=True)
    c.deliver(DRAFT, "Drafts")
    c.deliver(FORWARDED)
    c.login()
    return c


def validity(client, name=b"Drafts"):
    out = client.send(b"v STATUS %s (UIDVALIDITY)\r\n" % name)
    return int(re.search(rb"UIDVALIDITY (\d+)", out)[1])


def fetchLast(client, name=b"Drafts", item=b"BODY.PEEK[]"):
    client.send(b"s EXAMINE %s\r\n" % name)
    out = client.send(b"f FETCH * (FLAGS %s)\r\n" % item)
    size = int(re.search(rb"\{(\d+)\}\r\n", out)[1])
    body = out.split(b"}\r\n", 1)[1][:size]
    return out, body


def catenate(client, tag, mailbox, parts, flags=b""):
    """
    Send C{APPEND mailbox [flags] CATENATE (parts)}, each TEXT part a
    synchronising literal (waiting for each "+", as the RFC's example does).
    @return: the server's final answer.
    """
    line = b"%s APPEND %s %sCATENATE (" % (tag, mailbox, flags + b" " if flags else b"")
    for kind, value in parts:
        if kind == b"URL":
            line += b'URL "%s" ' % value
            continue
        out = client.send(line + b"TEXT {%d}\r\n" % len(value))
        if not out.startswith(b"+ "):
            return out
        line = value + b" "
    return client.send(line.rstrip(b" ") + b")\r\n")


def test_capability(client):
    """A client looks for CATENATE before building messages on the server."""
    assert b" CATENATE" in client.send(b"c CAPABILITY\r\n").split(b"\r\n")[0]


def test_rfc4469_example_forward_with_attachment(client):
    """
    RFC 4469 5's first example: the draft's header, a new first part, the
    draft's attachment (its MIME header and body by URL) and a message from
    INBOX: the new draft holds exactly those octets, with its flags, and
    the client gets APPENDUID for it.
    """
    v, inbox = validity(client), validity(client, b"INBOX")
    base = b"/Drafts;UIDVALIDITY=%d/;UID=1" % v
    parts = [
        (b"URL", base + b"/;section=HEADER"),
        (b"TEXT", b"--------------030308070208000400050907\r\n"
                  b"Content-Type: text/plain\r\n\r\nSee the attachment.\r\n"),
        (b"TEXT", BOUNDARY[2:]),
        (b"URL", base + b"/;SECTION=2.MIME"),
        (b"URL", base + b"/;SECTION=2"),
        (b"TEXT", BOUNDARY + b"Content-Type: message/rfc822\r\n\r\n"),
        (b"URL", b"/INBOX;UIDVALIDITY=%d/;UID=1" % inbox),
        (b"TEXT", BOUNDARY[:-2] + b"--\r\n"),
    ]
    out = catenate(client, b"A003", b"Drafts", parts, flags=b"(\\Seen \\Draft $MDNSent)")
    assert re.fullmatch(rb"A003 OK \[APPENDUID %d 2\] APPEND completed\r\n" % v, out), out
    header = DRAFT.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    expected = (header + parts[1][1] + parts[2][1]
                + b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + b"JVBERi0xLjQK" + parts[5][1] + FORWARDED + parts[7][1])
    out, body = fetchLast(client)
    assert body == expected
    assert b"\\Seen" in out and b"\\Draft" in out and b"$MDNSent" in out


def test_rfc4469_badurl(client):
    """
    A URL naming a message that is not there (or not any more: another
    UIDVALIDITY), another user's mailbox, another user in imap://, a
    URLAUTH URL or a missing section is NO [BADURL url] and nothing is
    appended, not even the MULTIAPPEND message before it.
    """
    v = validity(client)
    bad = [b"/Drafts;UIDVALIDITY=%d/;UID=20" % v,
           b"/Drafts;UIDVALIDITY=%d/;UID=1" % (v + 1),
           b"/Nowhere/;UID=1",
           b"imap://bob@mail.example.org/Drafts/;UID=1",
           b"/Drafts/;UID=1;URLAUTH=anonymous:internal:91354a47",
           b"/Drafts/;UID=1/;SECTION=9",
           b"/Drafts/;UID=1/;SECTION=BOGUS",
           b"http://example.com/Drafts/;UID=1"]
    for n, url in enumerate(bad):
        out = client.send(b'a%d APPEND Drafts {2+}\r\nhi CATENATE (URL "%s")\r\n' % (n, url))
        visible = url.replace(b"]", b"")
        assert out == b"a%d NO [BADURL %s] Cannot catenate this URL\r\n" % (n, visible), out
    out = client.send(b"s STATUS Drafts (MESSAGES)\r\n")
    assert b"MESSAGES 1)" in out


def test_urls_of_the_session_user_partial_and_fields(client):
    """
    imap:// URLs naming the session's own user work, as do ;PARTIAL= and
    a percent-encoded HEADER.FIELDS section (RFC 5092), and a TEXT-only
    message; names are percent-decoded UTF-8.
    """
    client.send(b"c CREATE &AMk-t&AOk-\r\n")  # "Été" in modified UTF-7
    client.send(b"a APPEND &AMk-t&AOk- {%d+}\r\n%s\r\n" % (len(FORWARDED), FORWARDED))
    parts = [(b"URL", b"imap://alice@mail.example.org/Drafts/;UID=1/;SECTION=HEADER.FIELDS"
                      b"%20(Subject%20From)"),
             (b"URL", b"imap://%s@host/%%C3%%89t%%C3%%A9/;UID=1/;PARTIAL=43.4" % USER),
             (b"TEXT", b"\r\n")]
    out = catenate(client, b"b", b"INBOX", parts)
    assert out.startswith(b"b OK [APPENDUID"), out
    _, body = fetchLast(client, b"INBOX")
    assert body == (b"From: Bob <bob@example.com>\r\nSubject: About the meeting\r\n\r\n"
                    b"Noon\r\n")


def test_rfc4469_toobig(client):
    """A message growing past the size limit is NO [TOOBIG] and nothing is stored."""
    client.factory.maxMessageSize = len(DRAFT) + 5
    url = b"/Drafts/;UID=1"
    out = client.send(b'a APPEND Drafts CATENATE (URL "%s" TEXT {6+}\r\n123456)\r\n' % url)
    assert out == b"a NO [TOOBIG] The message would be larger than the limit\r\n"
    assert b"MESSAGES 1)" in client.send(b"s STATUS Drafts (MESSAGES)\r\n")


@pytest.mark.parametrize("data", [b"CATENATE ()", b'CATENATE (TEXT "abc")', b"CATENATE (FOO x)",
                                  b"CATENATE (URL)", b"CATENATE", b'CATENATE "/Drafts/;UID=1"'])
def test_syntax_errors_bad(client, data):
    """A malformed CATENATE is BAD (RFC 4469 5's grammar), never half a message."""
    assert client.send(b"a APPEND Drafts " + data + b"\r\n").startswith(b"a BAD ")


def test_large_parts_streamed(client):
    """
    A TEXT literal spooled to disk (past 256 KiB) and a large message taken
    by URL make one message with every octet in place.
    """
    big = b"Subject: big\r\n\r\n" + b"".join(b"%07d\r\n" % i for i in range(40000))
    client.deliver(big)
    text = b"".join(b"text %06d\r\n" % i for i in range(30000))
    inbox = validity(client, b"INBOX")
    parts = [(b"TEXT", text), (b"URL", b"/INBOX;UIDVALIDITY=%d/;UID=2/;SECTION=TEXT" % inbox)]
    out = catenate(client, b"a", b"Drafts", parts)
    assert out.startswith(b"a OK [APPENDUID"), out
    client.send(b"s EXAMINE Drafts\r\n")
    out = client.send(b"f FETCH 2 (RFC822.SIZE)\r\n")
    size = len(text) + len(big.split(b"\r\n\r\n", 1)[1])
    assert b"RFC822.SIZE %d" % size in out
    out = client.send(b"f FETCH 2 (BODY.PEEK[]<%d.18>)\r\n" % (len(text) - 9))
    assert b"029999\r\n0000000\r\n" in out
