"""
IMAP sessions against a real server as a user meets them: connection
limits, a brand-new account's mailboxes, UIDVALIDITY across a delete and
re-create, a selected mailbox deleted under a session, and APPEND refused
before the upload.
"""

import socket

import pytest
from imapclient import IMAPClient

from imaplive import IMAP_SERVER, runningServer
from mailserver import PASSWORD, insecureTLS, waitFor
from pymailer import config as configModule
from pymailer.auth.directory import openDirectory
from pymailer.auth.passwords import hashPassword


def greeting(port, tls=False):
    """Connect and read the first line; C{(socket, line)}."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls:
        s = insecureTLS().wrap_socket(s)
    return s, s.makefile("rb").readline()


def test_connections_over_the_per_ip_limit_get_bye_unavailable(makeMailServer):
    """
    If this fails, one address can open thousands of IMAP connections (2,000
    were taken), or a client over the limit is dropped without a reason.
    """
    server = makeMailServer(roles=IMAP_SERVER["roles"], sections=dict(
        IMAP_SERVER["sections"], imap={"max_connections_per_ip": 3}))
    for tls, port in ((False, server.ports["imap"]), (True, server.ports["imaps"])):
        held = [greeting(port, tls) for _ in range(3)]
        assert all(line.startswith(b"* OK") for _, line in held)
        refused, line = greeting(port, tls)
        assert line == b"* BYE [UNAVAILABLE] Too many connections from your address, try again later\r\n"
        assert refused.recv(10) == b""
        held.pop()[0].close()

        def admitted():
            s, line = greeting(port, tls)
            s.close()
            return line.startswith(b"* OK")

        waitFor(admitted, 5, message="a slot freed by a closed connection")
        for s, _ in held:
            s.close()


def imapsClient(server, user):
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                   ssl_context=insecureTLS(), timeout=30)
    c.login(user, PASSWORD)
    return c


SPECIAL = {"Sent": b"\\Sent", "Drafts": b"\\Drafts", "Trash": b"\\Trash",
           "Junk": b"\\Junk", "Archive": b"\\Archive"}


def listed(c):
    return {name: set(flags) for flags, _, name in c.list_folders("", "*")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with runningServer(tmp_path_factory.mktemp("imapsession"), **IMAP_SERVER) as s:
        yield s


def test_new_account_lists_inbox_and_special_use_and_appends_to_sent(server):
    """
    If this fails, a user added a minute ago opens Thunderbird and sees no
    INBOX and no Sent/Drafts/Trash/Junk/Archive, and saving a sent
    message fails with TRYCREATE.
    """
    user = "newcomer@example.org"
    server.addUser(user)
    c = imapsClient(server, user)
    folders = listed(c)
    assert "INBOX" in folders
    for name, attribute in SPECIAL.items():
        assert attribute in folders[name], (name, folders)
    uid = c.append("Sent", b"From: newcomer@example.org\r\nSubject: first\r\n\r\nhi\r\n")
    assert b"APPENDUID" in uid
    c.select_folder("Sent")
    assert c.search(["SUBJECT", "first"])
    c.logout()


def test_create_before_first_select_keeps_every_folder(server):
    """
    If this fails, a client whose first command is CREATE (a sync tool
    setting up its folders) leaves the account with that folder only:
    no INBOX and no special-use folders in LIST.
    """
    user = "early@example.org"
    # An account made by an older version: in the directory, with no
    # mailboxes in the store yet.
    config = configModule.load(server.configPath)
    openDirectory(config).addUser(user, hashPassword(PASSWORD))
    c = imapsClient(server, user)
    c.create_folder("Projects")
    folders = listed(c)
    assert {"INBOX", "Projects", *SPECIAL} <= set(folders)
    assert SPECIAL["Sent"] in folders["Sent"]
    c.logout()


def test_mailbox_recreated_within_a_second_gets_new_uidvalidity(server):
    """
    If this fails, a caching client (Thunderbird, mbsync) shows the old
    message in place of the new one after a folder is deleted and created
    again quickly: same UIDVALIDITY, same UID 1.
    """
    c = imapsClient(server, "bob@example.org")
    answers = []
    for _ in range(2):
        c.create_folder("Quick")
        answers.append(c.append("Quick", b"Subject: x\r\n\r\nbody\r\n"))
        c.delete_folder("Quick")
    c.logout()
    first, second = [a.split(b"[APPENDUID ")[1].split(b"]")[0].split() for a in answers]
    assert first[1] == second[1] == b"1"
    assert first[0] != second[0]


def test_append_to_missing_mailbox_refused_before_the_upload_over_the_wire(server):
    """
    If this fails, a client saving into a folder that does not exist must
    upload the whole message before it is told TRYCREATE, or a LITERAL+
    client's message bytes are run as commands.
    """
    s = tlsConnect(server)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b'l LOGIN bob@example.org "%s"\r\n' % PASSWORD.encode())
    while not f.readline().startswith(b"l "):
        pass
    s.sendall(b"a APPEND Nope {14}\r\n")
    assert f.readline() == b"a NO [TRYCREATE] No such mailbox\r\n"
    s.sendall(b"b APPEND Nope {14+}\r\nSubject: x\r\n\r\n\r\nc NOOP\r\n")
    assert f.readline() == b"b NO [TRYCREATE] No such mailbox\r\n"
    assert f.readline() == b"c OK NOOP completed\r\n"
    s.sendall(b"d APPEND Sent {14}\r\n")
    assert f.readline().startswith(b"+ ")
    s.sendall(b"Subject: x\r\n\r\n\r\n")
    assert f.readline().startswith(b"d OK [APPENDUID ")
    s.close()


def tlsConnect(server):
    raw = socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=10)
    return insecureTLS().wrap_socket(raw)
