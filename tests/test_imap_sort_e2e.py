"""
SORT and THREAD end to end: a real twistd on the SQLite store, IMAPClient
over implicit TLS, and the answers as the client library parses them.
"""

import pytest
from imapclient import IMAPClient

from imaplive import IMAP_SERVER, runningServer
from mailserver import PASSWORD, insecureTLS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with runningServer(tmp_path_factory.mktemp("imapsort"), **IMAP_SERVER) as s:
        yield s


def test_sort_and_thread_over_tls(server):
    """
    A client with a sorted, threaded message list (IMAPClient's sort() and
    thread()) gets the order and the conversations from the server.
    """
    user = "sorter@example.org"
    server.addUser(user)
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                   ssl_context=insecureTLS(), timeout=30)
    c.login(user, PASSWORD)
    assert {b"SORT", b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT"} <= set(c.capabilities())
    messages = [
        b"Subject: beta\r\nFrom: b@example.org\r\nMessage-ID: <1@x>\r\n"
        b"Date: Mon, 1 Dec 2025 10:00:00 +0000\r\n\r\n.\r\n",
        b"Subject: Re: beta\r\nFrom: a@example.org\r\nMessage-ID: <2@x>\r\n"
        b"In-Reply-To: <1@x>\r\nDate: Mon, 1 Dec 2025 11:00:00 +0000\r\n\r\n.\r\n",
        b"Subject: alpha\r\nFrom: c@example.org\r\nMessage-ID: <3@x>\r\n"
        b"Date: Mon, 1 Dec 2025 09:00:00 +0000\r\n\r\n.\r\n",
        b"Subject: Re: beta\r\nFrom: d@example.org\r\nMessage-ID: <4@x>\r\n"
        b"References: <1@x> <2@x>\r\nDate: Mon, 1 Dec 2025 12:00:00 +0000\r\n\r\n.\r\n",
    ]
    for body in messages:
        c.append("INBOX", body)
    c.select_folder("INBOX")
    assert c.sort(["SUBJECT"]) == [3, 1, 2, 4]
    assert c.sort(["REVERSE", "DATE"]) == [4, 2, 1, 3]
    assert c.sort(["FROM"], ["NOT", "FROM", "d@"]) == [2, 1, 3]
    assert c.thread("REFERENCES") == ((3,), (1, 2, 4))
    assert c.thread("ORDEREDSUBJECT") == ((3,), (1, (2,), (4,)))
    # FETCH ENVELOPE from the stored summary.
    envelope = c.fetch([2], ["ENVELOPE"])[2][b"ENVELOPE"]
    assert envelope.subject == b"Re: beta" and envelope.in_reply_to == b"<1@x>"
    c.logout()
