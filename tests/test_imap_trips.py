"""
How many trips to the disk thread pool a command on the selected mailbox
takes (issue 13, long-session throughput).  Each trip costs a pool thread's
wake-up and then the reactor's; under load (ten sessions on two shared
CPUs) these waits, not the work, made most of a command's time.  A command
that changes the selected mailbox reads what changed (its own change, and
others') in the same trip as the change.  Counted in the harness of
L{imapharness} on the SQLite store, whose calls run inline there.
"""

import pytest

from imapharness import USER, Client, InlineAccount, InlinePool
from pymailer.quota import Quotas
from pymailer.store.notify import POLL_INTERVAL, ChangeNotifier
from pymailer.store.sqlite import SQLiteStore

MESSAGE = b"Subject: trip\r\n\r\nbody\r\n"


@pytest.fixture
def session(tmp_path, monkeypatch):
    trips = []
    inline = InlineAccount.run

    def counted(self, function, *args, **kwargs):
        trips.append(getattr(function, "__qualname__", repr(function)))
        return inline(self, function, *args, **kwargs)

    monkeypatch.setattr(InlineAccount, "run", counted)
    client = Client(tmp_path, secure=True, store=SQLiteStore(tmp_path / "store"))
    for _ in range(3):
        client.deliver(MESSAGE)
    client.login()
    assert b"s OK" in client.send(b"s SELECT INBOX\r\n")
    trips.clear()
    return client, trips


def test_store_takes_one_trip(session):
    """If this fails, every flag change (a message read, flagged, deleted)
    waits for the pool twice: once to change the flag and again to read
    its own change back."""
    client, trips = session
    out = client.send(b"a STORE 2 +FLAGS (\\Flagged)\r\n")
    assert out == b"* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\na OK STORE completed\r\n"
    assert len(trips) == 1, trips


def test_store_tells_another_sessions_change_in_the_same_trip(session):
    """If this fails, a flag changed by a phone is not told at the end of
    this session's STORE (RFC 3501 7: at the end of any command), or is
    told twice, or costs a second trip."""
    client, trips = session
    other = client.connectAgain()
    other.login()
    other.send(b"s SELECT INBOX\r\n")
    other.send(b"o STORE 3 +FLAGS.SILENT (\\Seen)\r\n")
    trips.clear()
    out = client.send(b"a STORE 1 +FLAGS.SILENT (\\Answered)\r\n")
    assert out == b"* 3 FETCH (FLAGS (\\Recent \\Seen) UID 3)\r\na OK STORE completed\r\n"
    assert len(trips) == 1, trips


def test_append_to_the_selected_mailbox_takes_one_trip(session):
    """If this fails, an APPEND into the open mailbox (a draft saved, a
    sent message filed) waits for the pool more than once: before the
    upload (the session knows its mailbox is there, and there is no quota
    to ask about) or to read its own message back after the append."""
    client, trips = session
    out = client.send(b"a APPEND INBOX (\\Seen) {%d}\r\n" % len(MESSAGE))
    assert out == b"+ Ready for literal data\r\n"
    assert trips == []
    out = client.send(MESSAGE + b"\r\n")
    assert out.startswith(b"* 4 EXISTS\r\n* 4 RECENT\r\na OK [APPENDUID "), out
    assert len(trips) == 1, trips


def test_append_to_the_selected_mailbox_keeps_reading(session, monkeypatch):
    """If this fails, an APPEND into the open mailbox with nothing before
    it stops reading the connection and starts it again (two epoll_ctl
    system calls on the reactor thread, issue 13) although the session
    answers its check at once; or an APPEND pipelined behind another
    command is answered out of order."""
    client, trips = session
    pauses = []
    monkeypatch.setattr(client.transport, "pauseProducing", lambda: pauses.append("pause"))
    out = client.send(b"a APPEND INBOX {%d}\r\n" % len(MESSAGE))
    assert out == b"+ Ready for literal data\r\n"
    assert pauses == []
    assert b"a OK [APPENDUID " in client.send(MESSAGE + b"\r\n")
    # Pipelined behind a NOOP that reads the store (its refresh): in order.
    client.protocol.selected.dirty = True
    out = client.send(b"n NOOP\r\nb APPEND INBOX {%d}\r\n" % len(MESSAGE))
    assert out.endswith(b"n OK NOOP completed\r\n+ Ready for literal data\r\n"), out
    assert b"b OK [APPENDUID " in client.send(MESSAGE + b"\r\n")


def test_append_elsewhere_is_checked_before_the_upload(session):
    """If this fails, an APPEND into a mailbox other than the open one
    (a sent message filed) is not checked before the upload: a client
    uploads a whole message to be told TRYCREATE (RFC 9051 6.3.12)."""
    client, trips = session
    out = client.send(b"a APPEND Nowhere {%d}\r\n" % len(MESSAGE))
    assert out == b"a NO [TRYCREATE] No such mailbox\r\n"
    out = client.send(b"b APPEND Sent {%d}\r\n" % len(MESSAGE))
    assert out == b"+ Ready for literal data\r\n"
    assert len(trips) == 2, trips


def test_append_with_a_quota_asks_until_the_session_knows_the_room(tmp_path, monkeypatch):
    """If this fails, a user with a quota either uploads a message the
    quota refuses before being told [OVERQUOTA] (RFC 9208), or every APPEND
    into the open mailbox waits for the pool once more than it needs to."""
    trips = []
    inline = InlineAccount.run
    monkeypatch.setattr(InlineAccount, "run", lambda self, f, *a, **kw: (
        trips.append(f), inline(self, f, *a, **kw))[1])
    store = SQLiteStore(tmp_path / "store")
    limits = {USER.decode(): 100 * len(MESSAGE)}
    client = Client(tmp_path, secure=True, store=store,
                    quotas=Quotas(_Directory(limits), store))
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    for expected in (2, 1):  # the first asks, the second knows
        trips.clear()
        assert client.send(b"a APPEND INBOX {%d}\r\n" % len(MESSAGE)).startswith(b"+ ")
        assert b"a OK [APPENDUID" in client.send(MESSAGE + b"\r\n")
        assert len(trips) == expected, trips
    # Beyond the room it knows: asked, and refused before the upload.
    trips.clear()
    out = client.send(b"b APPEND INBOX {%d}\r\n" % (100 * len(MESSAGE)))
    assert out.startswith(b"b NO [OVERQUOTA]"), out
    assert len(trips) == 1
    # Filled behind the session's back: still refused (after the upload).
    for _ in range(98):
        client.deliver(MESSAGE)
    client.send(b"c APPEND INBOX {%d}\r\n" % len(MESSAGE))
    assert client.send(MESSAGE + b"\r\n").startswith(b"c NO [OVERQUOTA]")
    assert store.usage(USER.decode()) == 100 * len(MESSAGE)


class _Directory:
    """The accounts directory's quota answers (L{pymailer.quota.Quotas} asks)."""

    def __init__(self, limits):
        self.limits = limits

    def quota(self, user):
        return self.limits.get(user)


def test_expunge_takes_one_trip(session):
    """If this fails, EXPUNGE waits for the pool more than once."""
    client, trips = session
    client.send(b"d STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    trips.clear()
    assert client.send(b"x EXPUNGE\r\n") == b"* 1 EXPUNGE\r\nx OK EXPUNGE completed\r\n"
    assert len(trips) == 1, trips


def test_the_benchmark_loop_takes_five_trips(tmp_path, monkeypatch):
    """If this fails, the loop of bench/imap_side_by_side.sh (SELECT, FETCH
    1:* (FLAGS), FETCH of five bodies, STORE, APPEND, STORE \\Deleted,
    EXPUNGE) waits for the pool more often, or runs more SQL or more
    transactions, than it did when the figures in the closing note of
    issue 13 were taken: each trip and statement is CPU on one core
    shared by every session."""
    trips = []
    inline = InlineAccount.run
    monkeypatch.setattr(InlineAccount, "run", lambda self, f, *a, **kw: (
        trips.append(getattr(f, "__qualname__", f)), inline(self, f, *a, **kw))[1])
    store = SQLiteStore(tmp_path / "store")
    client = Client(tmp_path, secure=True, store=store)
    for n in range(20):
        client.deliver(MESSAGE + b"%d\r\n" % n)
    client.login()
    statements = []
    store._db().set_trace_callback(statements.append)

    def loop(n):
        message = MESSAGE + b"appended %d\r\n" % n
        for command in (b"SELECT INBOX", b"FETCH 1:* (FLAGS)", b"FETCH 2,5,7,9,11 (BODY.PEEK[])",
                        b"STORE 3 +FLAGS (\\Flagged)",
                        b"APPEND INBOX (\\Seen) {%d}\r\n" % len(message) + message,
                        b"STORE 1 +FLAGS.SILENT (\\Deleted)", b"EXPUNGE"):
            out = client.send(b"t " + command + b"\r\n")
            assert b"t OK" in out, (command, out)

    loop(0)
    trips.clear()
    statements.clear()
    loop(1)
    # 6 before SELECT again came from the session and STORE and APPEND
    # read their changes in their own transaction (7 and 10 before that).
    assert len(trips) == 5, trips
    # 65 before (79 and more before that); 37 with the APPENDed octets in
    # their blobs row, 40 with them in a contents row of their own (its
    # INSERT and DELETE, and the summary's look-up, no file to tell it),
    # so that a COPY or MOVE does not write them again.
    assert len(statements) <= 40, statements
    # Transactions: no read ones (3 before), a write one for each change
    # (7 before: STORE's and APPEND's refreshes were transactions of their own).
    assert statements.count("BEGIN") == 0, statements
    assert statements.count("BEGIN IMMEDIATE") == 4, statements


SELECTED = (b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]"
            b" Flags permitted\r\n* 3 EXISTS\r\n")


def test_select_again_with_nothing_new_takes_no_trip(session):
    """If this fails, a client that selects its INBOX again before each
    round of work (the benchmark's, many scripts') waits for the pool and
    reads the whole mailbox each time although nothing changed, or is
    told something else than a read would tell it (the messages it was
    told of are not \\Recent any more, RFC 3501 2.3.2)."""
    client, trips = session
    client.send(b"a STORE 2 +FLAGS.SILENT (\\Seen)\r\n")
    trips.clear()
    out = client.send(b"s SELECT INBOX\r\n")
    assert out.startswith(b"* OK [CLOSED] Previous mailbox is now closed\r\n" + SELECTED
                          + b"* 0 RECENT\r\n* OK [UNSEEN 1] First unseen\r\n"
                          b"* OK [UIDVALIDITY "), out
    assert b"* OK [UIDNEXT 4] Predicted next UID\r\n" in out
    assert b"* OK [HIGHESTMODSEQ 5] Highest\r\n* OK [MAILBOXID (" in out
    assert out.endswith(b"s OK [READ-WRITE] SELECT completed\r\n")
    assert trips == []
    # The same answer as a read of the store gives.
    client.send(b"u UNSELECT\r\n")
    assert client.send(b"s SELECT INBOX\r\n") == out.split(b"\r\n", 1)[1]
    assert len(trips) == 1


def test_select_again_reads_what_another_session_changed(session):
    """If this fails, a SELECT after another client's change (a message
    read on the phone, a delivery) shows the mailbox as it was."""
    client, trips = session
    other = client.connectAgain()
    other.login()
    other.send(b"s SELECT INBOX\r\n")
    other.send(b"o STORE 3 +FLAGS.SILENT (\\Seen)\r\n")
    client.deliver(MESSAGE)
    trips.clear()
    out = client.send(b"s SELECT INBOX\r\n")
    assert b"* 4 EXISTS\r\n* 1 RECENT\r\n" in out, out
    assert len(trips) == 1, trips
    assert client.send(b"f FETCH 3 (FLAGS)\r\n").startswith(b"* 3 FETCH (FLAGS (\\Seen))")


def test_select_again_hears_another_process_within_the_poll(tmp_path, monkeypatch):
    """If this fails, a SELECT never shows what another process (the admin
    command, a second server on the same data directory) changed, or
    shows it only after some other change: the session's state is used
    only until the change notifier's poll hears of it (as IDLE does)."""
    trips = []
    inline = InlineAccount.run
    monkeypatch.setattr(InlineAccount, "run", lambda self, f, *a, **kw: (
        trips.append(f), inline(self, f, *a, **kw))[1])
    client = Client(tmp_path, secure=True, store=SQLiteStore(tmp_path / "store"))
    factory = client.factory
    factory.notifier = ChangeNotifier(factory.store, factory.clock, InlinePool())
    factory.notifier.startService()
    client.deliver(MESSAGE)
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    elsewhere = SQLiteStore(tmp_path / "store")  # another process's
    elsewhere.mailbox(USER.decode()).storeFlags([1], "add", {"\\Flagged"})
    factory.clock.advance(POLL_INTERVAL)
    trips.clear()
    out = client.send(b"s SELECT INBOX\r\n")
    assert len(trips) == 1
    assert b"* OK [HIGHESTMODSEQ 3]" in out, out
    assert b"\\Flagged" in client.send(b"f FETCH 1 (FLAGS)\r\n")
    factory.notifier.stopService()


def test_select_again_on_a_maildir_reads_it(tmp_path, monkeypatch):
    """If this fails, a client polling a Maildir store with SELECT (a
    Maildir that another program delivers into, unheard by the server)
    never sees new mail."""
    trips = []
    inline = InlineAccount.run
    monkeypatch.setattr(InlineAccount, "run", lambda self, f, *a, **kw: (
        trips.append(f), inline(self, f, *a, **kw))[1])
    client = Client(tmp_path, secure=True)
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    trips.clear()
    assert b"s OK" in client.send(b"s SELECT INBOX\r\n")
    assert len(trips) == 1


def test_noop_with_nothing_new_takes_no_trip(session):
    """If this fails, a client polling with NOOP (RFC 3501 6.1.2) waits for
    the pool although nothing was heard of since its last read, or is not
    told of a delivery it was heard of."""
    client, trips = session
    assert client.send(b"n NOOP\r\n") == b"n OK NOOP completed\r\n"
    assert trips == []
    client.deliver(MESSAGE)
    assert client.send(b"n NOOP\r\n") == b"* 4 EXISTS\r\n* 4 RECENT\r\nn OK NOOP completed\r\n"
    assert len(trips) == 1, trips
