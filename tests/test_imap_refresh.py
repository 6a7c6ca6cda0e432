"""
What a selected IMAP session reads from the store to stay up to date
(issue 13, "per-command cost proportional to what changed"): after another
session's change, the NOOP (or IDLE, or the end of any command) reads the
rows that changed, not the mailbox; with nothing new, one row.  Counted on
the SQLite store with L{sqlitecount.RowCounter}, in the harness of
L{imapharness}.
"""

import io
import os

import pytest

from imapharness import USER, Client
from pymailer.store import ImportedMessage
from pymailer.store.sqlite import SQLiteStore
from sqlitecount import RowCounter

MESSAGES = 10_000


@pytest.fixture(scope="module")
def bigStore(tmp_path_factory):
    store = SQLiteStore(tmp_path_factory.mktemp("refresh") / "store")
    body = b"Subject: one of many\r\n\r\nbody\r\n"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)  # filling, not what is measured
        store.importMailbox(USER.decode(), "INBOX", None, (
            ImportedMessage(None, frozenset(), 1_700_000_000, lambda: io.BytesIO(body))
            for _ in range(MESSAGES)))
    return store


@pytest.fixture
def sessions(tmp_path, bigStore):
    a = Client(tmp_path, secure=True, store=bigStore)
    a.login()
    assert b"* %d EXISTS" % MESSAGES in a.send(b"s SELECT INBOX\r\n")
    b = a.connectAgain()
    b.login()
    b.send(b"s SELECT INBOX\r\n")
    return a, b, RowCounter(bigStore)


def test_noop_with_nothing_new_reads_nothing(sessions):
    """If this fails, every NOOP (clients send one every few minutes, per
    session) reads all 10,000 messages of the mailbox, or reads at all
    when no change was heard of since the session's last read (the
    SQLite store tells other processes' changes too)."""
    a, _, counter = sessions
    counter.take()
    assert a.send(b"n NOOP\r\n") == b"n OK NOOP completed\r\n"
    assert counter.take() == {"*": 0}  # one row of mailboxes before NOOP trusted the notices


def test_flag_changed_elsewhere_reads_one_message_row(sessions):
    """If this fails, one flag changed on a phone makes every other session
    on the mailbox re-read all 10,000 messages (or miss the change)."""
    a, b, counter = sessions
    assert b"f OK" in b.send(b"f UID STORE 5000 +FLAGS.SILENT (\\Flagged)\r\n")
    counter.take()
    out = a.send(b"n NOOP\r\n")
    assert out == b"* 5000 FETCH (FLAGS (\\Flagged) UID 5000)\r\nn OK NOOP completed\r\n"
    read = counter.take()
    assert read["messages"] == 1 and read["*"] <= 3, read
    b.send(b"f UID STORE 5000 -FLAGS.SILENT (\\Flagged)\r\n")


def test_expunge_elsewhere_reads_one_row(sessions):
    """If this fails, a message deleted on another device costs every
    session on the mailbox a read of all 10,000 messages."""
    a, b, counter = sessions
    last = MESSAGES
    b.send(b"d UID STORE %d +FLAGS.SILENT (\\Deleted)\r\n" % last)
    counter.take()
    assert b"x OK" in b.send(b"x UID EXPUNGE %d\r\n" % last)
    read = counter.take()
    assert read.get("messages", 0) <= 2, read  # the expunge itself, and its refresh
    out = a.send(b"n NOOP\r\n")
    assert out == b"* %d EXPUNGE\r\nn OK NOOP completed\r\n" % last
    read = counter.take()
    assert read.get("messages", 0) == 0 and read["expunged"] == 1 and read["*"] <= 3, read


def racing(client, change, read="changedSince"):
    """
    Make C{change()} happen once, just after the session's next read of
    what changed (its commit and notice come while that read is on its
    way back, as another session's can under load): C{read} names the
    store call that reads it (a command that changes the mailbox reads in
    the same call).
    """
    box = client.protocol.selected.mailbox
    real = getattr(box, read)

    def reading(*args, **kwargs):
        setattr(box, read, real)
        result = real(*args, **kwargs)
        change()
        return result

    setattr(box, read, reading)


@pytest.mark.parametrize("shared", [False, True])
def test_change_during_an_idle_read_is_told(tmp_path, shared):
    """If this fails, an IDLE client is not told of a change made while
    it was being told of another (a flag set on a phone just after a
    delivery stays unseen until something else changes the mailbox)."""
    a = Client(tmp_path, secure=True, store=SQLiteStore(tmp_path / "store"),
               shareRefresh=shared)
    a.deliver(b"Subject: one\r\n\r\none\r\n")
    a.login()
    a.send(b"s SELECT INBOX\r\n")
    b = a.connectAgain()
    b.login()
    b.send(b"s SELECT INBOX\r\n")
    assert a.send(b"i IDLE\r\n") == b"+ idling\r\n"
    racing(a, lambda: b.send(b"f STORE 1 +FLAGS.SILENT (\\Flagged)\r\n"))
    a.deliver(b"Subject: two\r\n\r\ntwo\r\n")
    a.factory.clock.advance(0)  # the shared read runs on the next turn
    a.factory.clock.advance(0)
    a.factory.clock.advance(1)  # and the garbage collector comes back on (fanout)
    out = a.read()
    assert b"* 2 EXISTS\r\n" in out
    assert b"* 1 FETCH (FLAGS (\\Flagged \\Recent) UID 1)\r\n" in out, out


def test_change_during_a_commands_read_is_told_at_its_end(tmp_path):
    """If this fails, a change made while a command read an earlier one is
    not told at the end of that command (RFC 3501 7: any command may carry
    it), nor of the next, only after some later change or a NOOP."""
    a = Client(tmp_path, secure=True, store=SQLiteStore(tmp_path / "store"))
    for subject in (b"one", b"two"):
        a.deliver(b"Subject: " + subject + b"\r\n\r\nx\r\n")
    a.login()
    a.send(b"s SELECT INBOX\r\n")
    b = a.connectAgain()
    b.login()
    b.send(b"s SELECT INBOX\r\n")
    racing(a, lambda: b.send(b"f STORE 2 +FLAGS.SILENT (\\Seen)\r\n"), "storeFlagsWithChanges")
    out = a.send(b"a STORE 1 +FLAGS.SILENT (\\Answered)\r\n")
    assert out == b"* 2 FETCH (FLAGS (\\Recent \\Seen) UID 2)\r\na OK STORE completed\r\n", out
    assert a.send(b"u UID SEARCH SEEN\r\n") == b"* SEARCH 2\r\nu OK SEARCH completed\r\n"
