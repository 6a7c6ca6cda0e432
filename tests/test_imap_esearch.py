"""
ESEARCH (RFC 4731) and SEARCHRES (RFC 5182) through the protocol: a client
asking only for the count, the extremes or a compact set gets them in one
line, and can reuse a result with C{$} without sending the UIDs back.
"""

import pytest

from imapharness import Client


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path, secure=True)
    c.login()
    for i in range(1, 8):
        c.deliver(b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i))
    c.send(b"s SELECT INBOX\r\n")
    # Messages 2, 4, 5, 6 are \Seen
    c.send(b"f STORE 2,4:6 +FLAGS.SILENT (\\Seen)\r\n")
    return c


def test_capability_advertises_esearch_and_searchres(client):
    """A client looks for ESEARCH and SEARCHRES in CAPABILITY before using them."""
    caps = client.send(b"c CAPABILITY\r\n").split(b"\r\n")[0].split()
    assert b"ESEARCH" in caps and b"SEARCHRES" in caps


@pytest.mark.parametrize("options, answer", [
    (b"(MIN MAX)", b"MIN 2 MAX 6"),   # RFC 4731 3.1 example: the extremes only
    (b"(ALL)", b"ALL 2,4:6"),         # a compact sequence set, not every number
    (b"()", b"ALL 2,4:6"),            # RFC 4731 3.1: RETURN () is RETURN (ALL)
])
def test_rfc4731_result_options(client, options, answer):
    """A client asking for only the extremes or a compact set gets just that in one ESEARCH line."""
    out = client.send(b"A282 SEARCH RETURN %s SEEN\r\n" % options)
    assert out == b'* ESEARCH (TAG "A282") %s\r\nA282 OK SEARCH completed\r\n' % answer


def test_rfc4731_uid_count_and_no_match(client):
    """UID SEARCH marks its ESEARCH with UID; no match still tells COUNT 0 and nothing else."""
    out = client.send(b"A285 UID SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN\r\n")
    assert out.startswith(b'* ESEARCH (TAG "A285") UID MIN 1 MAX 7 ALL 1,3,7 COUNT 3\r\n')
    out = client.send(b"A286 SEARCH RETURN (COUNT MIN) DRAFT\r\n")
    assert out == b'* ESEARCH (TAG "A286") COUNT 0\r\nA286 OK SEARCH completed\r\n'


def test_plain_search_unchanged(client):
    """Without RETURN a SEARCH still answers * SEARCH, as older clients expect."""
    out = client.send(b"a SEARCH SEEN\r\n")
    assert out == b"* SEARCH 2 4 5 6\r\na OK SEARCH completed\r\n"


def test_unknown_return_option_is_bad(client):
    """A made-up result option is refused, not ignored."""
    assert b"a BAD" in client.send(b"a SEARCH RETURN (BOGUS) ALL\r\n")


def test_rfc5182_save_then_fetch_dollar(client):
    """RFC 5182 example: SEARCH RETURN (SAVE) answers nothing but lets FETCH $ use the result."""
    out = client.send(b"A282 SEARCH RETURN (SAVE) SEEN\r\n")
    assert out == b"A282 OK SEARCH completed\r\n"
    out = client.send(b"A283 FETCH $ (UID)\r\n")
    assert out == (b"* 2 FETCH (UID 2)\r\n* 4 FETCH (UID 4)\r\n* 5 FETCH (UID 5)\r\n"
                   b"* 6 FETCH (UID 6)\r\nA283 OK FETCH completed\r\n")


def test_rfc5182_save_min_max_only(client):
    """RFC 5182 2.4: SAVE with MIN MAX saves only those two messages."""
    out = client.send(b"a UID SEARCH RETURN (SAVE MIN MAX) SEEN\r\n")
    assert out.startswith(b'* ESEARCH (TAG "a") UID MIN 2 MAX 6\r\n')
    out = client.send(b"b UID SEARCH $\r\n")
    assert out.startswith(b"* SEARCH 2 6\r\n")


def test_rfc5182_dollar_in_search_and_store_and_uid(client):
    """$ works as a search key, under UID, and in STORE/COPY; expunged messages drop out."""
    client.send(b"a SEARCH RETURN (SAVE) UNSEEN\r\n")
    out = client.send(b"b UID SEARCH UID $ NOT 7\r\n")
    assert out.startswith(b"* SEARCH 1 3\r\n")
    client.send(b"c STORE $ +FLAGS.SILENT (\\Deleted)\r\n")
    client.send(b"d EXPUNGE\r\n")
    client.deliver(b"Subject: new\r\n\r\nx\r\n")
    out = client.send(b"e UID FETCH $ (FLAGS)\r\n")
    assert b" FETCH (" not in out and b"e OK" in out


def test_rfc5182_failed_save_and_select_empty_dollar(client):
    """A SEARCH SAVE that fails, or a new SELECT, leaves $ empty (RFC 5182 2.1)."""
    client.send(b"a SEARCH RETURN (SAVE) SEEN\r\n")
    assert b"b BAD" in client.send(b"b SEARCH RETURN (SAVE) BOGUSKEY\r\n")
    assert client.send(b"c SEARCH $\r\n") == b"* SEARCH\r\nc OK SEARCH completed\r\n"
    client.send(b"d SEARCH RETURN (SAVE) SEEN\r\n")
    client.send(b"e SELECT INBOX\r\n")
    assert client.send(b"f SEARCH $\r\n") == b"* SEARCH\r\nf OK SEARCH completed\r\n"


def test_esearch_with_modseq(client):
    """RFC 7162 3.1.5 with ESEARCH: MODSEQ tells the highest mod-sequence of what is returned."""
    out = client.send(b"a SEARCH RETURN (COUNT) MODSEQ 1\r\n")
    line = out.split(b"\r\n")[0]
    assert line.startswith(b'* ESEARCH (TAG "a") COUNT 7 MODSEQ ')
