"""
LIST and LSUB wildcards and hierarchy (RFC 3501 6.3.8, 6.3.9): the
matching in L{pymailer.imap.listing}, and the answers over the protocol.
"""

import pytest
from hypothesis import given, strategies as st

from imapharness import loggedIn
from pymailer.imap.listing import listEntries, lsubEntries, patternMatcher

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
    return loggedIn(tmp_path)


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


def test_wildcard_heavy_pattern_is_cheap():
    """
    If this fails, one client's LIST "" "*%*%*%*%*%*%*%*%*%*%>" keeps the
    server busy for seconds (exponential backtracking) and every other
    client waits.
    """
    import time

    folders = NAMES + ["Newsletter", "Quarantine"]
    start = time.process_time()
    assert listEntries(folders, "", "*%*%*%*%*%*%*%*%*%*%>") == []
    assert lsubEntries(set(folders), folders, "", "*%*%*%*%*%*%*%*%*%*%>") == []
    assert time.process_time() - start < 0.05


def test_longest_pattern_on_long_names_is_cheap():
    """
    If this fails, a LIST with a line-long pattern of wildcards and letters
    against long folder names holds the server for more than a few ms.
    """
    import time

    folders = ["a" * 255 + "/" + "b" * 255, "a/" * 200 + "c"] * 5
    start = time.process_time()
    assert listEntries(folders, "", "%" * 5000 + "*" * 5000 + ">") == []
    assert listEntries(folders, "", "%a" * 20000 + ">") == []
    assert listEntries(folders, "", "*a" * 100 + ">") == []
    assert time.process_time() - start < 0.2


_NAME = st.text(alphabet="ab/", max_size=8)
_PATTERN = st.text(alphabet="ab/*%", max_size=8)


@given(_NAME, _PATTERN)
def test_matcher_agrees_with_rfc_wildcards(name, pattern):
    """
    If this fails, LIST shows folders a pattern does not name, or hides
    ones it does (RFC 3501 6.3.8: * matches anything, % anything but /),
    checked against a regular expression on short inputs.
    """
    import re

    regex = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c)
                    for c in pattern)
    assert patternMatcher("", pattern)(name) == bool(re.fullmatch(regex, name, re.S))
