"""
SEARCH (RFC 3501 6.4.4) through the protocol on a L{StringTransport}: what
a user types in a mail client's search box finds what the client shows.
"""

import pytest

from imapharness import Client

ODD_ADDRESSES = (
    b"From: <user-from (comment)@ (comment) domain.org>\r\n"
    b"To: Routed <@relay.example,@hop.example:joe@example.org>\r\n"
    b'Cc: "Quoted, Name" <cc-user@example.net> (a comment)\r\n'
    b"Bcc: Friends: =?utf-8?q?J=C3=B6rg?= <jorg (x) @ example.com>;\r\n"
    b"Subject: odd addresses\r\n\r\nbody\r\n"
)


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path, secure=True)
    c.login()
    c.deliver(b"From: someone@else.example\r\nSubject: other\r\n\r\nbody\r\n")
    c.deliver(ODD_ADDRESSES)
    c.send(b"s SELECT INBOX\r\n")
    return c


@pytest.mark.parametrize("key", [
    "FROM user-from@domain.org",
    "FROM USER-FROM@DOMAIN.ORG",
    "FROM comment",                     # the display text still counts
    "TO joe@example.org",
    "TO Routed",
    "CC cc-user@example.net",
    'CC "Quoted, Name"',
    "BCC jorg@example.com",
    'BCC "Jörg"',
    "BCC Friends",
])
def test_search_finds_addresses_as_envelope_shows_them(client, key):
    """Searching for the sender's address as the message list shows it finds the message."""
    out = client.send(f"t SEARCH CHARSET UTF-8 {key}\r\n".encode())
    assert out == b"* SEARCH 2\r\nt OK SEARCH completed\r\n"


@pytest.mark.parametrize("key", ["FROM nobody@domain.org", "TO joe@relay.example", "CC user@example.org"])
def test_search_address_misses(client, key):
    """A search for an address nobody wrote finds nothing (a route is not part of the address)."""
    out = client.send(f"t SEARCH {key}\r\n".encode())
    assert out == b"* SEARCH\r\nt OK SEARCH completed\r\n"
