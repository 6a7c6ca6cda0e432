"""
CREATE-SPECIAL-USE (RFC 6154 3) end to end: a real twistd, IMAPClient over
implicit TLS creating a folder with a special use, and its folder list
showing it, on the default (SQLite) store.
"""

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
