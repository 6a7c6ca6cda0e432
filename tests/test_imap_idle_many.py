"""
Many IMAP sessions idling on one mailbox (issue 14): one delivery reaches
every one of them within a second, on every worker process, and each
process reads the change from the store once, not once per session
(L{pymailer.imap.fanout}).  The 10,000-session figures are
C{bench/imap_idle_many.py}'s; these are the same promises at a size a test
run can afford.
"""

import gc
import re
import selectors
import smtplib
import socket
import time

import pytest

from imapharness import Client
from mailserver import PASSWORD
from pymailer.store.sqlite import SQLiteStore
from sqlitecount import RowCounter
from workerserver import onlyWorker, waitForWorkers

SESSIONS = 50
ALICE = "alice@example.org"


def idleSession(server, worker):
    """
    A socket whose session, on worker process C{worker}, has logged in,
    selected INBOX and is in IDLE; and its reader.
    """
    with onlyWorker(server, worker):
        sock = socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=20)
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")  # accepted by that worker
    sock.sendall(f'a LOGIN {ALICE} "{PASSWORD}"\r\nb SELECT INBOX\r\nc IDLE\r\n'.encode())
    line = reader.readline()
    while not line.startswith(b"+"):
        assert line and not line.startswith((b"a NO", b"b NO", b"a BAD", b"b BAD")), line
        line = reader.readline()
    return sock, reader


def test_fifty_idle_sessions_on_two_workers_see_a_delivery_within_a_second(makeMailServer):
    """
    25 sessions idle on each of two workers; one message is delivered
    (by worker 0's queue).  If this fails, a user with several clients
    open sees new mail late, or not at all, on some of them: the sessions
    on the worker that did not deliver waited for its poll, and every
    session read the mailbox on its own, one after another.
    """
    server = makeMailServer(roles=("imap",), workers=2, sections={
        "auth": {"allow_plaintext_on_loopback": True}})
    waitForWorkers(server)
    sessions = [idleSession(server, index) for index in (0, 1)
                for _ in range(SESSIONS // 2)]
    selector = selectors.DefaultSelector()
    for sock, reader in sessions:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, [reader, b""])
    with smtplib.SMTP("127.0.0.1", server.port, timeout=20) as client:
        client.sendmail("carol@example.net", [ALICE], b"Subject: for everyone\r\n\r\nhi\r\n")
    queued = time.monotonic()
    waiting, late = len(sessions), {}
    while waiting and time.monotonic() - queued < 5:
        for key, _ in selector.select(0.1):
            data = key.fileobj.recv(4096)
            key.data[1] += data
            if b" EXISTS\r\n" in key.data[1] or not data:
                selector.unregister(key.fileobj)
                late[key.fileobj] = time.monotonic() - queued if data else None
                waiting -= 1
    slowest = max((t for t in late.values() if t is not None), default=None)
    assert len(late) == SESSIONS and None not in late.values(), (len(late), server.log()[-2000:])
    assert slowest < 1.0, slowest
    for sock, _ in sessions:
        sock.close()


@pytest.fixture
def sqliteClient(tmp_path):
    """
    A session on the SQLite store whose IDLE updates are shared
    (L{pymailer.imap.fanout}): a read waits for C{clock.advance(0)}, the
    collector comes back on with a later C{advance} (L{settle}).
    """
    store = SQLiteStore(tmp_path / "store")
    yield Client(tmp_path, secure=True, store=store, shareRefresh=True), store
    if not gc.isenabled():
        gc.enable()  # for the tests that follow
        pytest.fail("the garbage collector was left off")


def settle(clock):
    """The shared reads answered, and the reactor turned after their writes."""
    clock.advance(0)
    clock.advance(1)


def test_one_store_read_for_all_idle_sessions_of_a_process(sqliteClient):
    """
    50 sessions of one process idle on one INBOX; one delivery is read
    from the store once and told to all 50.  If this fails, a delivery to
    a mailbox that many sessions watch costs one query per session and
    the last one hears of it seconds later (5 s for 10,000 sessions).
    \\Recent goes to one session only (RFC 3501 2.3.2).
    """
    first, store = sqliteClient
    clients = [first] + [first.connectAgain() for _ in range(SESSIONS - 1)]
    for c in clients:
        c.login()
        c.send(b"s SELECT INBOX\r\n")
        c.send(b"i IDLE\r\n")
    settle(first.factory.clock)
    for c in clients:
        c.read()
    counter = RowCounter(store)
    first.deliver()
    counter.take()
    settle(first.factory.clock)
    read = counter.take()
    told = [c.read() for c in clients]
    assert all(b"* 1 EXISTS\r\n" in out for out in told), told
    assert read["messages"] == 1, read
    recent = [out for out in told if b"* 1 RECENT\r\n" in out]
    assert len(recent) == 1 and all(b"* 0 RECENT\r\n" in out for out in told if out not in recent)
    for c in clients:
        assert c.send(b"DONE\r\n") == b"i OK IDLE terminated\r\n"


def test_no_garbage_collection_in_the_middle_of_a_fan_out(sqliteClient):
    """
    The cyclic garbage collector is off from the first IDLE session asking
    for the shared read until a moment after the answer (the updates
    written), and on again after.  If this fails, a full collection (1-3 s
    with 5,000 sessions open on a busy machine) can land between the
    change and the sessions' updates, or the collector stays off for good
    and cyclic garbage is never freed.
    """
    a, _ = sqliteClient
    b = a.connectAgain()
    for c in (a, b):
        c.login()
        c.send(b"s SELECT INBOX\r\n")
        c.send(b"i IDLE\r\n")
    clock = a.factory.clock
    settle(clock)
    assert gc.isenabled()
    a.deliver()
    assert not gc.isenabled()  # asked, not yet read
    clock.advance(0)
    assert b"* 1 EXISTS\r\n" in a.read() and b"* 1 EXISTS\r\n" in b.read()
    assert not gc.isenabled()  # written, the reactor has not turned yet
    clock.advance(1)
    assert gc.isenabled()


def test_a_session_ahead_of_the_shared_read_is_not_taken_back(sqliteClient):
    """
    Two sessions idle on one INBOX; one of them has applied a newer state
    (a flag set by its own earlier command) than the other: each is told
    only what it had not seen.  If this fails, a client is told a flag
    went back to its old value, or is told a change twice.
    """
    a, store = sqliteClient
    a.deliver()
    b = a.connectAgain()
    for c in (a, b):
        c.login()
        c.send(b"s SELECT INBOX\r\n")
    assert b"f OK" in a.send(b"f STORE 1 +FLAGS.SILENT (\\Flagged)\r\n")
    for c in (a, b):
        c.send(b"i IDLE\r\n")
    settle(a.factory.clock)
    assert b"* 1 FETCH (FLAGS (\\Flagged" in b.read()
    assert a.read() == b""
    a.deliver()
    settle(a.factory.clock)
    for c in (a, b):
        out = c.read()
        assert b"* 2 EXISTS\r\n" in out and b"FETCH" not in out, out


def test_a_burst_of_clients_all_get_their_greeting(makeMailServer):
    """
    400 clients connect to IMAP at once (as after a server restart, every
    client reconnecting): each gets its greeting.  If this fails, clients
    beyond the listen backlog (Twisted's default is 50) were dropped by
    the kernel's full accept queue, and those it had answered with a SYN
    cookie believed they were connected and waited for a greeting forever.
    """
    server = makeMailServer(roles=("imap",), sections={
        "imap": {"max_connections": 500, "max_connections_per_ip": 500}})
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(400):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", server.ports["imap"]))
        selector.register(sock, selectors.EVENT_READ)
        sockets.append(sock)
    greeted = set()
    deadline = time.monotonic() + 15
    while len(greeted) < len(sockets) and time.monotonic() < deadline:
        for key, _ in selector.select(0.2):
            try:
                data = key.fileobj.recv(1024)
            except OSError:
                data = b""
            if data.startswith(b"* OK"):
                greeted.add(key.fileobj)
            selector.unregister(key.fileobj)
    for sock in sockets:
        sock.close()
    assert len(greeted) == len(sockets)


@pytest.fixture
def storeCalls(monkeypatch):
    """C{{method: calls}} of the SQLite store's reads a NOTIFY update makes."""
    from pymailer.store import sqlite

    calls = {}

    def counted(cls, name):
        original = getattr(cls, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)
        monkeypatch.setattr(cls, name, wrapper)

    for name in ("listMailboxes", "subscriptions"):
        counted(sqlite.SQLiteStore, name)
    for name in ("snapshot", "changedSince"):
        counted(sqlite.SQLiteMailbox, name)
    return calls


def test_one_store_read_for_all_notify_sessions_of_a_process(sqliteClient, storeCalls):
    """
    20 sessions of one user with NOTIFY (RFC 5465) on the selected INBOX
    and on every other folder, 10 of them in IDLE: a delivery into INBOX is
    read once (one changedSince, and no look at the other folders) and
    each session gets its EXISTS; one
    into Archive is read once (one listing, one STATUS read) and each gets
    its STATUS (5.1).  If this fails, a delivery costs one read per
    session: the last of thousands of NOTIFY clients hears of it seconds
    later, as IDLE clients did before they shared theirs.
    """
    first, _ = sqliteClient
    first.deliver(mailbox="Archive")
    clients = [first] + [first.connectAgain() for _ in range(19)]
    for index, c in enumerate(clients):
        c.login()
        c.send(b"s SELECT INBOX\r\n")
        c.send(b"n NOTIFY SET STATUS (SELECTED (MessageNew MessageExpunge))"
               b" (PERSONAL (MessageNew MessageExpunge))\r\n")
        if index % 2:
            c.send(b"i IDLE\r\n")
    settle(first.factory.clock)
    for c in clients:
        c.read()
    storeCalls.clear()
    first.deliver()
    settle(first.factory.clock)
    told = [c.read() for c in clients]
    assert all(out.startswith(b"* 1 EXISTS\r\n") for out in told), told
    assert storeCalls == {"changedSince": 1}, storeCalls  # no other folder to look at
    storeCalls.clear()
    first.deliver(mailbox="Archive")
    settle(first.factory.clock)
    told = [c.read() for c in clients]
    assert all(re.fullmatch(rb'\* STATUS "Archive" \(UIDNEXT 3 MESSAGES 2\)\r\n', out)
               for out in told), told
    assert storeCalls == {"snapshot": 1, "listMailboxes": 1, "subscriptions": 1}, storeCalls
    for c in clients[1::2]:
        assert c.send(b"DONE\r\n") == b"i OK IDLE terminated\r\n"
