"""
Routing: which addresses are ours, which mailboxes they reach, and what is
refused — on the real SQLite account directory.
"""

import pytest

from pymailer.auth.directory import SQLiteAccountDirectory
from pymailer.auth.passwords import hashPassword
from pymailer.delivery.router import Local, Reject, Relay, Router

HASH = hashPassword("x")


@pytest.fixture
def directory(tmp_path):
    d = SQLiteAccountDirectory(tmp_path / "accounts.sqlite3")
    d.addDomain("example.org")
    d.addDomain("other.example")
    for user in ("alice@example.org", "bob@example.org", "carol@other.example"):
        d.addUser(user, HASH)
    return d


def test_user(directory):
    """Mail to a user reaches that user's mailbox, whatever the case of the address."""
    assert Router(directory).route("Alice@EXAMPLE.org") == Local(
        "alice@example.org", ("alice@example.org",)
    )


def test_plus_addressing(directory):
    """user+tag@ reaches user@; the separator is configurable and can be turned off."""
    assert Router(directory).route("alice+news@example.org").users == ("alice@example.org",)
    assert Router(directory, "-").route("alice-news@example.org").users == ("alice@example.org",)
    assert isinstance(Router(directory, "").route("alice+news@example.org"), Reject)


def test_unknown_user_rejected_550_511(directory):
    """An unknown local part of a local domain is refused with 550 5.1.1."""
    r = Router(directory).route("nobody@example.org")
    assert (r.code, r.enhanced) == (550, "5.1.1")


def test_other_domain_is_relay(directory):
    """An address in a domain that is not ours routes to relay (refused on port 25)."""
    assert Router(directory).route("x@elsewhere.test") == Relay("x@elsewhere.test")


def test_alias_to_many_and_nested(directory):
    """An alias reaches all its targets, through other aliases and across local domains."""
    directory.addAlias("team@example.org", ["alice@example.org", "staff@example.org"])
    directory.addAlias("staff@example.org", ["bob@example.org", "carol@other.example"])
    r = Router(directory).route("team@example.org")
    assert set(r.users) == {"alice@example.org", "bob@example.org", "carol@other.example"}


def test_alias_to_remote_is_forward(directory):
    """An alias target in another domain is kept as a forward, not delivered locally."""
    directory.addAlias("fwd@example.org", ["someone@elsewhere.test", "alice@example.org"])
    r = Router(directory).route("fwd@example.org")
    assert r.users == ("alice@example.org",) and r.forwards == ("someone@elsewhere.test",)


def test_alias_loop_detected(directory):
    """An alias loop with no mailbox in it is refused (550 5.4.6), not followed forever."""
    directory.addAlias("a@example.org", ["b@example.org"])
    directory.addAlias("b@example.org", ["a@example.org"])
    r = Router(directory).route("a@example.org")
    assert (r.code, r.enhanced) == (550, "5.4.6")


def test_alias_loop_with_mailbox_still_delivers(directory):
    """A loop that also reaches a mailbox delivers there once."""
    directory.addAlias("a@example.org", ["b@example.org", "alice@example.org"])
    directory.addAlias("b@example.org", ["a@example.org"])
    assert Router(directory).route("a@example.org").users == ("alice@example.org",)


def test_catch_all(directory):
    """With a catch-all, unknown local parts of that domain reach it; other domains don't."""
    directory.setCatchAll("example.org", "bob@example.org")
    assert Router(directory).route("whatever@example.org").users == ("bob@example.org",)
    assert isinstance(Router(directory).route("whatever@other.example"), Reject)


def test_bad_address_553(directory):
    """A syntactically hopeless address gets 553 5.1.3."""
    r = Router(directory).route("no-at-sign")
    assert (r.code, r.enhanced) == (553, "5.1.3")


def test_dangling_alias_is_unknown_user(directory):
    """An alias whose only target does not exist is refused as an unknown user (5.1.1), not as a loop."""
    directory.addAlias("dangling@example.org", ["ghost@example.org"])
    r = Router(directory).route("dangling@example.org")
    assert (r.code, r.enhanced) == (550, "5.1.1")


def test_postmaster_fallback(directory):
    """postmaster@ any local domain, and a bare "postmaster", reach [delivery] postmaster (RFC 5321 §4.5.1)."""
    router = Router(directory, postmaster="alice@example.org")
    assert router.route("postmaster@other.example").users == ("alice@example.org",)
    assert router.route("Postmaster").users == ("alice@example.org",)
    directory.addAlias("postmaster@example.org", ["bob@example.org"])
    assert router.route("postmaster@example.org").users == ("bob@example.org",)


def test_forwardingKeepingACopy(directory):
    """
    A user who forwards and keeps a copy gets the mail in their mailbox and
    the forward goes out; without the copy only the forward goes: otherwise
    the account page's forwarding would lose mail or not forward it.
    """
    directory.setForwarding("alice@example.org", ["alice@elsewhere.example"], keepCopy=True)
    assert directory.forwarding("Alice@example.org") == (("alice@elsewhere.example",), True)
    assert Router(directory).route("alice+x@example.org") == Local(
        "alice+x@example.org", ("alice@example.org",), ("alice@elsewhere.example",))
    directory.setForwarding("alice@example.org", ["bob@example.org"], keepCopy=False)
    assert directory.forwarding("alice@example.org") == (("bob@example.org",), False)
    assert Router(directory).route("alice@example.org").users == ("bob@example.org",)
    directory.setForwarding("alice@example.org", [])
    assert directory.forwarding("alice@example.org") == ((), True)
    assert Router(directory).route("alice@example.org") == Local(
        "alice@example.org", ("alice@example.org",))
    with pytest.raises(ValueError):
        directory.setForwarding("alice@example.org", ["ALICE@example.org"])
    with pytest.raises(KeyError):
        directory.setForwarding("nobody@example.org", ["x@elsewhere.example"])
    directory.setForwarding("bob@example.org", ["x@elsewhere.example"])
    directory.removeUser("bob@example.org")
    assert directory.aliasTargets("bob@example.org") == ()
