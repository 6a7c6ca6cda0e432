"""
IMAP extensions (issue 18) end to end: a real twistd, IMAPClient over
implicit TLS (port 993, as phones connect), and the extension's answer
read as the client library receives it.
"""

import re
import socket

import pytest
from imapclient import IMAPClient

from imaplive import IMAP_SERVER, deliver, runningServer
from imapwire import Wire
from mailserver import PASSWORD, insecureTLS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with runningServer(tmp_path_factory.mktemp("imapext"), **IMAP_SERVER) as s:
        yield s


def tlsClient(server, user):
    server.addUser(user)
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                   ssl_context=insecureTLS(), timeout=30)
    c.login(user, PASSWORD)
    return c


def test_esearch_and_searchres_over_tls(server):
    """
    A client asking UID SEARCH RETURN (MIN MAX COUNT ALL) over TLS gets one
    ESEARCH line with the extremes, count and compact set; a saved result is
    then usable as $ in a FETCH.
    """
    c = tlsClient(server, "esearch@example.org")
    assert {b"ESEARCH", b"SEARCHRES"} <= set(c.capabilities())
    for n in range(5):
        c.append("INBOX", f"Subject: es{n}\r\n\r\nx\r\n".encode(),
                 flags=[b"\\Seen"] if n % 2 == 0 else [])
    c.select_folder("INBOX")
    imap = c._imap  # IMAPClient has no ESEARCH helper: its imaplib session
    typ, _ = imap.uid("SEARCH", "RETURN (MIN MAX COUNT ALL) SEEN")
    assert typ == "OK"
    line = imap.untagged_responses.pop("ESEARCH")[0]
    assert line.endswith(b"UID MIN 1 MAX 5 ALL 1,3,5 COUNT 3")
    typ, _ = imap.uid("SEARCH", "RETURN (SAVE) UNSEEN")
    assert typ == "OK" and "ESEARCH" not in imap.untagged_responses
    typ, data = imap.fetch("$", "(UID)")
    assert typ == "OK" and data == [b"2 (UID 2)", b"4 (UID 4)"]
    c.logout()


def test_list_status_over_tls(server):
    """
    A client filling its folder pane asks LIST ... RETURN (STATUS (MESSAGES
    UNSEEN SIZE)) once and gets every folder's counts after its LIST line.
    """
    c = tlsClient(server, "liststatus@example.org")
    assert {b"LIST-EXTENDED", b"LIST-STATUS", b"STATUS=SIZE"} <= set(c.capabilities())
    c.create_folder("Work")
    c.append("Work", b"Subject: w\r\n\r\n12345\r\n")
    imap = c._imap
    typ, lists = imap.list('""', '"Work" RETURN (STATUS (MESSAGES UNSEEN SIZE))')
    assert typ == "OK" and lists == [b'(\\HasNoChildren) "/" "Work"']
    statuses = imap.untagged_responses.pop("STATUS")
    assert statuses == [b'"Work" (MESSAGES 1 UNSEEN 1 SIZE 21)']
    assert c.folder_status("Work", ["SIZE"])[b"SIZE"] == 21
    c.logout()


def test_multiappend_over_tls(server):
    """IMAPClient's multiappend uploads a batch, including a message spooled to disk, in one APPEND."""
    c = tlsClient(server, "multiappend@example.org")
    assert b"MULTIAPPEND" in c.capabilities()
    big = b"Subject: big\r\n\r\n" + b"y" * 70 + b"\r\n"
    big = big * 5000  # over the 256 KiB spool threshold
    typ, (result,) = c.multiappend("INBOX", [b"Subject: small\r\n\r\nx\r\n",
                                     {"msg": big, "flags": [b"\\Seen"]}])
    assert typ == "OK" and result.startswith(b"[APPENDUID ")
    assert result.endswith(b" 1:2] APPEND completed")
    c.select_folder("INBOX")
    sizes = c.fetch([1, 2], ["RFC822.SIZE", "FLAGS"])
    assert sizes[2][b"RFC822.SIZE"] == len(big) and b"\\Seen" in sizes[2][b"FLAGS"]
    c.logout()


def test_binary_over_tls(server):
    """
    IMAPClient fetching BINARY.PEEK[2] of a base64 attachment (1 MB) over
    TLS gets the original octets and BINARY.SIZE says their length: an
    attachment saves correctly without client-side decoding.  With NULs
    in it the answer is a literal8, which IMAPClient 4.1 does not parse:
    that one is read through its imaplib session (imaplib takes ~{n}).
    """
    import base64
    import os
    c = tlsClient(server, "binary@example.org")
    assert b"BINARY" in c.capabilities()
    payload = os.urandom(1 << 20).replace(b"\x00", b"\x01")
    withNul = b"a\x00b" * 1000
    for data in (payload, withNul):
        c.append("INBOX", (
            b'Subject: bin\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"'
            b"\r\n\r\n--b\r\n\r\ntext\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(data).replace(b"\n", b"\r\n") + b"--b--\r\n"))
    c.select_folder("INBOX", readonly=True)
    got = c.fetch([1], ["BINARY.PEEK[2]", "BINARY.SIZE[2]"])[1]
    assert got[b"BINARY.SIZE[2]"] == len(payload)
    assert got[b"BINARY[2]"] == payload
    typ, data = c._imap.fetch("2", "(BINARY.PEEK[2])")
    assert typ == "OK" and data[0][0].endswith(b"BINARY[2] ~{%d}" % len(withNul))
    assert data[0][1] == withNul
    c.logout()


def test_imap4rev2_and_utf8_names_over_tls(server):
    """
    IMAPClient over TLS enables IMAP4rev2 and UTF8=ACCEPT, creates and lists
    a folder with a UTF-8 name, selects it without a RECENT response and
    searches; if this fails, a rev2 client sees modified UTF-7 folder names
    or no search results.
    """
    c = tlsClient(server, "rev2@example.org")
    assert {b"IMAP4REV2", b"UTF8=ACCEPT", b"LITERAL-"} <= set(c.capabilities())
    assert set(c.enable("IMAP4rev2", "UTF8=ACCEPT")) == {b"IMAP4rev2", b"UTF8=ACCEPT"}
    c.folder_encode = False  # names are UTF-8 on the wire now (RFC 9051 5.1)
    imap = c._imap
    imap._encoding = "utf-8"  # imaplib sends UTF-8 after UTF8=ACCEPT
    c.create_folder("Déjà vu")
    assert "Déjà vu".encode() in [name for _, _, name in c.list_folders()]  # raw UTF-8
    c.append("Déjà vu", "Subject: Grüße\r\n\r\nhallo\r\n".encode())
    selected = c.select_folder("Déjà vu")
    assert selected[b"EXISTS"] == 1 and b"RECENT" not in selected
    typ, _ = imap.search(None, "ALL")
    assert typ == "OK" and imap.untagged_responses.pop("ESEARCH")[0].endswith(b"ALL 1")
    c.logout()


def test_notify_status_for_smtp_delivery_and_other_session(server):
    """
    RFC 5465 end to end: session A says NOTIFY SET (PERSONAL (MessageNew))
    and, without polling or IDLE, gets a * STATUS for INBOX when a message
    arrives over SMTP, and for Archive when session B appends there.  If
    this fails, a NOTIFY client shows new mail only when it polls.
    """
    user = "notify@example.org"
    server.addUser(user)
    a = Wire(server.ports["imap"])
    _, ok = a.command(f'LOGIN "{user}" "{PASSWORD}"')
    assert b"OK" in ok
    assert b"NOTIFY" in a.command("CAPABILITY")[0][0]
    _, ok = a.command("NOTIFY SET (PERSONAL (MessageNew))")
    assert b"OK" in ok
    a.sock.settimeout(10)
    deliver(server, user, "notified")
    line = a.readResponse()
    assert re.fullmatch(rb'\* STATUS "INBOX" \(UIDNEXT 2 MESSAGES 1\)\r\n', line), line
    b = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                   ssl_context=insecureTLS(), timeout=30)
    b.login(user, PASSWORD)
    b.append("Archive", b"Subject: filed\r\n\r\nx\r\n")
    line = a.readResponse()
    assert re.fullmatch(rb'\* STATUS "Archive" \(UIDNEXT 2 MESSAGES 1\)\r\n', line), line
    b.logout()
    _, ok = a.command("NOTIFY NONE")
    assert b"OK" in ok
    a.sock.settimeout(0.5)
    deliver(server, user, "quiet")
    server.waitForMessages(user, 2)
    with pytest.raises(socket.timeout):
        a.readResponse()
    a.close()
