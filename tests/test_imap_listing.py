"""
LIST and LSUB wildcards and hierarchy (RFC 3501 6.3.8, 6.3.9): the
matching in L{pymailer.imap.listing}, and the answers over the protocol.
"""

import pytest

from imapharness import Client
from pymailer.imap.listing import listEntries, lsubEntries

NAMES = ["INBOX", "Sent", "a/b", "a/b/c/d", "x", "x/y"]


def names(entries):
    return {name: b" ".join(attrs) for name, attrs in entries}


def test_percent_shows_missing_parent_as_noselect():
    """If this fails, a folder a/b whose parent a does not exist is invisible to clients that browse level by level."""
    assert names(listEntries(NAMES, "", "%")) == {
        "INBOX": b"\\HasNoChildren", "Sent": b"\\HasNoChildren \\Sent",
        "a": b"\\Noselect \\HasChildren", "x": b"\\HasChildren"}


def test_star_lists_every_level():
    """If this fails, a client building the folder tree from LIST "" * has no node for a/b's parent."""
    assert names(listEntries(NAMES, "", "*")) == {
        "INBOX": b"\\HasNoChildren", "Sent": b"\\HasNoChildren \\Sent",
        "a": b"\\Noselect \\HasChildren", "a/b": b"\\HasChildren",
        "a/b/c": b"\\Noselect \\HasChildren", "a/b/c/d": b"\\HasNoChildren",
        "x": b"\\HasChildren", "x/y": b"\\HasNoChildren"}


def test_percent_below_a_level():
    """If this fails, opening a folder in the tree shows the wrong children."""
    assert names(listEntries(NAMES, "", "a/%")) == {"a/b": b"\\HasChildren"}
    assert names(listEntries(NAMES, "a/", "%")) == {"a/b": b"\\HasChildren"}
    assert names(listEntries(NAMES, "", "a/b/%")) == {"a/b/c": b"\\Noselect \\HasChildren"}
    assert names(listEntries(NAMES, "", "a/b/c/%")) == {"a/b/c/d": b"\\HasNoChildren"}


def test_inbox_matches_in_any_case():
    """If this fails, a client asking for "inbox" is told there is no INBOX (RFC 3501 5.1: case-insensitive)."""
    assert names(listEntries(NAMES, "", "inbox")) == {"INBOX": b"\\HasNoChildren"}
    assert names(listEntries(["INBOX", "INBOX/x"], "", "Inbox/%")) == {"INBOX/x": b"\\HasNoChildren"}


def test_lsub_percent_shows_unsubscribed_parent():
    """If this fails, a subscribed a/b is hidden from clients that read subscriptions level by level (RFC 3501 6.3.9)."""
    subscribed = {"a/b", "gone"}
    assert names(lsubEntries(subscribed, NAMES, "", "%")) == {
        "a": b"\\Noselect", "gone": b"\\Noselect"}
    assert names(lsubEntries(subscribed, NAMES, "", "*")) == {
        "a/b": b"", "gone": b"\\Noselect"}


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path, secure=True)
    c.login()
    return c


def test_list_over_the_wire(client):
    """If this fails, folders created as a/b (without a) do not show up in Thunderbird's folder pane."""
    assert client.send(b"c CREATE a/b\r\n").startswith(b"c OK")
    out = client.send(b'l LIST "" %\r\n')
    assert b'* LIST (\\Noselect \\HasChildren) "/" "a"\r\n' in out
    assert b'"a/b"' not in out
    out = client.send(b'm LIST "" *\r\n')
    assert b'* LIST (\\Noselect \\HasChildren) "/" "a"\r\n' in out
    assert b'* LIST (\\HasNoChildren) "/" "a/b"\r\n' in out
    assert client.send(b'n LIST "" a/%\r\n').startswith(b'* LIST (\\HasNoChildren) "/" "a/b"\r\nn OK')
    assert client.send(b"s SELECT a\r\n").startswith(b"s NO [NONEXISTENT]")
    assert client.send(b"c CREATE a\r\n").startswith(b"c OK")  # the level becomes a mailbox
    assert b'* LIST (\\HasChildren) "/" "a"\r\n' in client.send(b'l LIST "" %\r\n')
