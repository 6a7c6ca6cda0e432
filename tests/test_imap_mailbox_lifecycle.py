"""
The IMAP protocol when mailboxes come and go under a session (DELETE or
RENAME of a selected mailbox, by this session or another) and when APPEND
names a mailbox it cannot use, on the in-memory harness of
L{imapharness}.
"""

import pytest
from twisted.logger import globalLogPublisher

from imapharness import Client, withoutMailboxId


@pytest.fixture
def failures():
    """The failures logged during the test (each a traceback in the server log)."""
    events = []

    def observe(event):
        if event.get("log_failure") is not None:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def twoSessionsOn(tmp_path, name=b"Work"):
    first = Client(tmp_path, secure=True)
    first.login()
    second = first.connectAgain()
    second.login()
    assert b"c OK" in first.send(b"c CREATE " + name + b"\r\n")
    for session in (first, second):
        assert b"s OK [READ-WRITE]" in session.send(b"s SELECT " + name + b"\r\n")
    return first, second


def test_deleting_own_selected_mailbox_closes_it_cleanly(tmp_path, failures):
    """
    If this fails, a client that deletes the folder it has open gets an
    internal error on its next command (and a traceback in the log).
    """
    first, _ = twoSessionsOn(tmp_path)
    out = first.send(b"d DELETE Work\r\n")
    assert out == b"* OK [CLOSED] The selected mailbox was deleted\r\nd OK DELETE completed\r\n"
    assert first.send(b"n NOOP\r\n") == b"n OK NOOP completed\r\n"
    assert b"f BAD" in first.send(b"f FETCH 1 FLAGS\r\n")
    assert b"l OK" in first.send(b'l LIST "" "*"\r\n')
    assert failures == []


def test_other_session_gets_bye_on_next_command(tmp_path, failures):
    """
    If this fails, a second client (a phone) whose open folder was deleted
    on the laptop gets NO [SERVERBUG] on every command instead of a clean
    BYE, and the log fills with tracebacks.
    """
    first, second = twoSessionsOn(tmp_path)
    first.send(b"d DELETE Work\r\n")
    out = second.send(b"n NOOP\r\n")
    assert out == b"* BYE Selected mailbox was deleted, have to disconnect\r\n"
    assert second.transport.disconnecting
    assert failures == []


def test_other_session_in_idle_gets_bye_at_once(tmp_path, failures):
    """
    If this fails, a client idling on a folder deleted elsewhere loops on
    errors (a traceback per try) instead of being told with BYE.
    """
    first, second = twoSessionsOn(tmp_path)
    assert second.send(b"i IDLE\r\n") == b"+ idling\r\n"
    first.send(b"d DELETE Work\r\n")
    assert second.read() == b"* BYE Selected mailbox was deleted, have to disconnect\r\n"
    assert second.transport.disconnecting
    assert failures == []


def test_rename_of_selected_mailbox_closes_it_here_and_byes_elsewhere(tmp_path, failures):
    """
    If this fails, after renaming the open folder (or its parent) the
    client gets errors, or another client with it open goes on with a
    mailbox that is no longer there.
    """
    first, second = twoSessionsOn(tmp_path, b"Work/Sub")
    assert b"p OK" in first.send(b"p CREATE Work\r\n")
    out = first.send(b"r RENAME Work Play\r\n")
    assert out == b"* OK [CLOSED] The selected mailbox was renamed\r\nr OK RENAME completed\r\n"
    assert second.send(b"n NOOP\r\n").startswith(b"* BYE Selected mailbox was deleted")
    assert b"s OK" in first.send(b"s SELECT Play/Sub\r\n")
    assert failures == []


def test_mailbox_deleted_and_created_again_gets_bye(tmp_path, failures):
    """
    If this fails, a client whose open folder was deleted and created again
    elsewhere goes on using UIDs that now name other messages.
    """
    first, second = twoSessionsOn(tmp_path)
    first.send(b"u UNSELECT\r\n")
    first.send(b"d DELETE Work\r\nc CREATE Work\r\n")
    assert second.send(b"n NOOP\r\n").startswith(b"* BYE Selected mailbox was deleted")
    assert failures == []


@pytest.fixture
def session(tmp_path):
    c = Client(tmp_path, secure=True)
    c.login()
    return c


def test_append_to_missing_mailbox_refused_before_upload(session, failures):
    """
    If this fails, a client saving a large draft into a folder that does
    not exist uploads all of it before being told TRYCREATE.
    """
    out = session.send(b"a APPEND Nope (\\Seen) {900000}\r\n")
    assert out == b"a NO [TRYCREATE] No such mailbox\r\n"
    assert session.send(b"n NOOP\r\n") == b"n OK NOOP completed\r\n"
    out = session.send(b"b APPEND a/../b {5}\r\n")
    assert out.startswith(b"b NO [CANNOT] Bad mailbox name")
    assert failures == []


def test_append_non_synchronising_to_missing_mailbox_reads_and_drops_literal(session):
    """
    If this fails, a LITERAL+ client appending to a missing folder has its
    message bytes run as commands (BAD after BAD) or the connection hangs.
    """
    out = session.send(b"a APPEND Nope {14+}\r\nSubject: x\r\n\r\n\r\nb NOOP\r\n")
    assert out == b"a NO [TRYCREATE] No such mailbox\r\nb OK NOOP completed\r\n"
    out = session.send(b"c APPEND Nope {14+}\r\nSub")
    assert out == b""
    out = session.send(b"ject: y\r\n\r\n\r\nd NOOP\r\n")
    assert out == b"c NO [TRYCREATE] No such mailbox\r\nd OK NOOP completed\r\n"


def test_append_after_pipelined_create_and_to_existing_mailbox(session):
    """
    If this fails, APPEND right after a pipelined CREATE of its folder is
    refused, or appending to an existing folder no longer works.
    """
    out = session.send(b"c CREATE New\r\na APPEND New {14}\r\n")
    assert withoutMailboxId(out) == b"c OK CREATE completed\r\n+ Ready for literal data\r\n"
    out = session.send(b"Subject: x\r\n\r\n\r\n")
    assert out.startswith(b"a OK [APPENDUID ")
    out = session.send(b"b APPEND New {14+}\r\nSubject: y\r\n\r\n\r\nn NOOP\r\n")
    assert out.startswith(b"b OK [APPENDUID ") and out.endswith(b"n OK NOOP completed\r\n")
