"""
CREATE-SPECIAL-USE (RFC 6154 3) and CATENATE (RFC 4469) end to end: a real
twistd on the default (SQLite) store, IMAPClient over implicit TLS creating
a folder with a special use and seeing it in its folder list, and a raw TLS
session building a draft from a TEXT literal and URLs.
"""

import re
import socket

import pytest
from imapclient import IMAPClient

from imaplive import IMAP_SERVER, runningServer
from mailserver import PASSWORD, insecureTLS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with runningServer(tmp_path_factory.mktemp("specialuse"), **IMAP_SERVER) as s:
        yield s


def test_create_archive_folder_over_tls(server):
    """
    A client (Apple Mail making its archive folder) creates "Old mail"
    with USE (\\Archive) and sees it flagged \\Archive in its next LIST,
    also after logging in again; \\All is refused with USEATTR.
    """
    server.addUser("archiver@example.org")

    def connect():
        c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                       ssl_context=insecureTLS(), timeout=30)
        c.login("archiver@example.org", PASSWORD)
        return c

    c = connect()
    assert b"CREATE-SPECIAL-USE" in c.capabilities()
    typ, data = c._imap._simple_command("CREATE", '"Old mail"', "(USE (\\Archive))")
    assert typ == "OK", data
    typ, data = c._imap._simple_command("CREATE", "Everything", "(USE (\\All))")
    assert typ == "NO" and b"[USEATTR]" in data[0]
    c.logout()
    c = connect()
    flags = {name: set(f) for f, _, name in c.list_folders()}
    assert b"\\Archive" in flags["Old mail"]
    assert b"\\Archive" in flags["Archive"] and "Everything" not in flags
    c.logout()


def test_catenate_draft_over_tls(server):
    """
    A client saving a reply builds it on the server (RFC 4469): the
    original's header by URL, a new text as a synchronising literal, and
    the original's body by URL; the draft holds exactly those octets, and
    a URL to a message that is not there is NO [BADURL].
    """
    user = "catenate@example.org"
    server.addUser(user)
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                   ssl_context=insecureTLS(), timeout=30)
    c.login(user, PASSWORD)
    original = b"From: bob@example.net\r\nSubject: Plans\r\n\r\nShall we meet?\r\n"
    c.append("INBOX", original)
    assert b"CATENATE" in c.capabilities()
    validity = c.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    c.logout()

    raw = insecureTLS().wrap_socket(
        socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=30))
    reader = raw.makefile("rb")

    def answer(tag):
        lines = []
        while True:
            line = reader.readline()
            assert line, lines
            lines.append(line)
            if line.startswith(tag + b" ") or line.startswith(b"+ "):
                return b"".join(lines)

    reader.readline()  # greeting
    raw.sendall(b'l LOGIN "%s" "%s"\r\n' % (user.encode(), PASSWORD.encode()))
    assert b"l OK" in answer(b"l")
    text = b"Yes, at noon.\r\n> "
    url = b"/INBOX;UIDVALIDITY=%d/;UID=1" % validity
    raw.sendall(b'a APPEND Drafts (\\Draft) CATENATE (URL "%s/;SECTION=HEADER" TEXT {%d}\r\n'
                % (url, len(text)))
    assert answer(b"a").startswith(b"+ ")
    raw.sendall(text + b' URL "%s/;SECTION=TEXT")\r\n' % url)
    out = answer(b"a")
    assert re.search(rb"a OK \[APPENDUID \d+ 1\]", out), out
    raw.sendall(b'b APPEND Drafts CATENATE (URL "/INBOX/;UID=77")\r\n')
    assert b'b NO [BADURL /INBOX/;UID=77]' in answer(b"b")
    raw.sendall(b"z LOGOUT\r\n")
    raw.close()

    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                   ssl_context=insecureTLS(), timeout=30)
    c.login(user, PASSWORD)
    c.select_folder("Drafts", readonly=True)
    fetched = c.fetch([1], ["BODY.PEEK[]", "FLAGS"])[1]
    assert fetched[b"BODY[]"] == (b"From: bob@example.net\r\nSubject: Plans\r\n\r\n"
                                  + text + b"Shall we meet?\r\n")
    assert b"\\Draft" in fetched[b"FLAGS"]
    c.logout()
