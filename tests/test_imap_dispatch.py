"""
The reactor's share of a command (issue 13, long-session throughput): a
command answered at once runs without a Deferred chain, pipelined commands
are still answered in order and each exactly once, an unexpected error in
either path is answered and the session goes on, and a response of many
lines or messages reaches the transport in few writes (each write costs
the reactor several calls, and a send per reactor turn).
"""

import io
import socket
import time

import pytest
from twisted.internet import tcp

from imapharness import PASSWORD, USER, Client, FakeFactory
from pymailer.imap.account import IMAPAccount
from pymailer.imap.server import IMAPServer
from pymailer.store.notify import ChangeNotifier
from pymailer.store.sqlite import SQLiteStore
from pymailer.threadpool import LightThreadPool
from test_threadpool import CallQueue


def message(n, size=3000):
    head = b"Subject: m%d\r\nMessage-ID: <m%d@example.org>\r\n\r\n" % (n, n)
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path, secure=True, store=SQLiteStore(tmp_path / "store"))
    for n in range(1, 11):
        c.deliver(message(n))
    c.login()
    assert b"s OK" in c.send(b"s SELECT INBOX\r\n")
    return c


@pytest.fixture
def writes(client, monkeypatch):
    """What each transport write of the session carried, from now on."""
    out = []
    write = client.transport.write

    def counted(data):
        out.append(data)
        return write(data)

    monkeypatch.setattr(client.transport, "write", counted)
    return out


def test_fetch_of_many_bodies_is_one_write(client, writes):
    """If this fails, FETCH of ten message bodies costs the reactor a
    write per message (and per piece), where one carries them all."""
    out = client.send(b"f FETCH 1:10 (BODY.PEEK[])\r\n")
    assert out.count(b" FETCH (BODY[] {3000}\r\nSubject: m") == 10
    for n in range(1, 11):
        assert b"* %d FETCH (BODY[] {3000}\r\n%s)\r\n" % (n, message(n)) in out
    assert out.endswith(b"f OK FETCH completed\r\n")
    assert len(writes) == 1, [w[:40] for w in writes]  # the responses and the tagged OK


def test_fetch_of_session_items_is_one_write(client, writes):
    """If this fails, FETCH 1:* (FLAGS UID) writes once per message, or
    the tagged OK goes in a segment of its own."""
    out = client.send(b"f FETCH 1:* (FLAGS UID)\r\n")
    assert out.count(b" FETCH (FLAGS (\\Recent) UID ") == 10
    assert len(writes) == 1


def test_select_is_one_write_and_its_ok(client, writes):
    """If this fails, SELECT's dozen untagged lines are a write each, or
    its tagged OK goes in a segment of its own."""
    out = client.send(b"s SELECT INBOX\r\n")
    assert b"* 10 EXISTS\r\n" in out and b"* OK [UIDVALIDITY " in out
    assert out.endswith(b"s OK [READ-WRITE] SELECT completed\r\n")
    assert len(writes) == 1, [w[:40] for w in writes]


def test_pipelined_commands_answered_in_order_once_each(client):
    """If this fails, a client that pipelines (as mbsync and imapsync do)
    gets replies out of order, twice, or not at all, when commands
    answered at once are mixed with ones that wait for the store."""
    out = client.send(
        b"a FETCH 2 (FLAGS)\r\n"
        b"b STORE 2 +FLAGS (\\Flagged)\r\n"
        b"c FETCH 2 (FLAGS)\r\n"
        b"d BOGUS\r\n"
        b"e NOOP\r\n"
        b"f FETCH 3 (BODY.PEEK[HEADER.FIELDS (Subject)])\r\n"
        b"g FETCH 1:2 (UID)\r\n")
    tagged = [line.split(b" ", 2)[:2] for line in out.split(b"\r\n")
              if line and not line.startswith((b"*", b"Subject", b")"))]
    assert tagged == [[b"a", b"OK"], [b"b", b"OK"], [b"c", b"OK"], [b"d", b"BAD"],
                      [b"e", b"OK"], [b"f", b"OK"], [b"g", b"OK"]], out
    assert out.index(b"a OK") < out.index(b"* 2 FETCH (FLAGS (\\Flagged \\Recent))") \
        < out.index(b"b OK")
    assert b"* 3 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {15}\r\nSubject: m3\r\n\r\n)" in out


def test_unexpected_error_in_a_command_answered_at_once(client, monkeypatch):
    """If this fails, a bug in a command answered without the store
    leaves the client waiting for ever, or stops the commands behind it."""
    def broken(self, tag, args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(IMAPServer, "cmd_CAPABILITY", broken)
    out = client.send(b"a CAPABILITY\r\nb FETCH 1 (UID)\r\n")
    assert out == (b"a NO [SERVERBUG] Internal error, see the server log\r\n"
                   b"* 1 FETCH (UID 1)\r\nb OK FETCH completed\r\n")


def test_unexpected_error_after_a_command_answered_at_once(client, monkeypatch):
    """If this fails, a failure while the end of a command is told (the
    step after the handler) is lost and the pipeline stalls."""
    def broken(self, result, tag, name, uid):
        raise RuntimeError("a bug")

    monkeypatch.setattr(IMAPServer, "_completed", broken)
    out = client.send(b"a FETCH 1 (UID)\r\nb FETCH 2 (UID)\r\n")
    assert out == (b"* 1 FETCH (UID 1)\r\na NO [SERVERBUG] Internal error, see the server log\r\n"
                   b"* 2 FETCH (UID 2)\r\nb NO [SERVERBUG] Internal error, see the server log\r\n")


def test_many_pipelined_commands_answered_at_once_do_not_recurse(client):
    """If this fails, a client pipelining thousands of commands answered
    at once (no store trip) overflows the stack or stalls."""
    out = client.send(b"".join(b"t%d FETCH 1 (UID)\r\n" % n for n in range(5000)))
    assert out.count(b" OK FETCH completed\r\n") == 5000
    assert out.endswith(b"t4999 OK FETCH completed\r\n")


class PooledFactory(FakeFactory):
    """The harness's factory, with store calls in C{pool} and change
    notices through C{reactor}, as in the server."""

    def __init__(self, tmp_path, reactor, pool):
        self.reactor, self.pool = reactor, pool
        FakeFactory.__init__(self, tmp_path, secure=True,
                             store=SQLiteStore(tmp_path / "store"))
        self.notifier = ChangeNotifier(self.store, reactor)

    def account(self, user):
        return IMAPAccount(user.decode() if isinstance(user, bytes) else user,
                           self.store, self.reactor, self.pool, self.notifier)


class TCPSession:
    """
    A session on a real loopback TCP connection, its store calls in a real
    L{LightThreadPool}; the reactor (a real epoll reactor) does not run:
    L{settle} runs what the pool hands back, as its loop would.  What the
    server sends is read from the client's socket.
    """

    def __init__(self, tmp_path):
        from twisted.internet.epollreactor import EPollReactor

        self.reactor = EPollReactor()
        self.reactor.threadCallQueue = self.calls = CallQueue()
        self.pool = LightThreadPool(maxthreads=4, name="t")
        self.pool.start()
        self.factory = factory = PooledFactory(tmp_path, self.reactor, self.pool)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            self.peer = socket.create_connection(listener.getsockname())
            sock, addr = listener.accept()
        sock.setblocking(False)
        self.peer.settimeout(10)
        self.protocol = IMAPServer(factory)
        self.transport = tcp.Server(sock, self.protocol, addr, None, 1, self.reactor)
        self.sends = []
        writeSomeData = self.transport.writeSomeData

        def counted(data):
            self.sends.append(bytes(data))
            return writeSomeData(data)

        self.transport.writeSomeData = counted
        self.protocol.makeConnection(self.transport)
        self.read(b"\r\n")

    def read(self, end):
        """What the client receives, up to C{end}."""
        data = b""
        while not data.endswith(end):
            data += self.peer.recv(65536)
        return data

    def settle(self):
        """Run what the pool hands back until nothing is left to run."""
        deadline = time.monotonic() + 10
        while self.pool._backlog or len(self.pool.threads) > self.pool._idle or self.calls:
            assert time.monotonic() < deadline
            self.reactor.runUntilCurrent()
            # The pool's next hand-back, if any (a thread just done with its
            # work goes idle without one: hence the short wait).
            self.calls.waitFor(lambda: self.calls, timeout=0.05)

    def close(self):
        self.peer.close()
        self.transport.socket.close()
        self.pool.stop()


@pytest.fixture
def tcpSession(tmp_path):
    s = TCPSession(tmp_path)
    yield s
    s.close()


def test_imap_connections_do_not_wait_on_delayed_acks(tcpSession):
    """If this fails, TCP_NODELAY is off: a reply sent in two parts (the
    untagged data, then the tagged line after a store call) waits for the
    client's delayed ACK, 40 ms on Linux, before its second part leaves."""
    sock = tcpSession.transport.socket
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_reply_is_sent_at_once_in_one_segment(tcpSession):
    """If this fails, each reply waits for the reactor's next turn (two
    epoll_ctl calls and an event per reply, issue 13), or its untagged
    and tagged lines leave in separate segments."""
    s = tcpSession
    s.sends.clear()
    s.protocol.dataReceived(b"a CAPABILITY\r\n")
    assert s.reactor.getWriters() == []
    assert len(s.sends) == 1 and s.sends[0].startswith(b"* CAPABILITY IMAP4rev1 ")
    assert s.read(b"a OK CAPABILITY completed\r\n") == s.sends[0]


def test_a_reply_after_a_store_call_is_one_segment(tcpSession):
    """If this fails, a STORE's FETCH response and its tagged OK, written
    when the store call comes back from the pool, leave in two segments
    (two sends, and the client woken twice) or wait for a write turn."""
    s = tcpSession
    for n in range(3):
        s.factory.store.deliver(USER.decode(), b"", io.BytesIO(message(n)), "INBOX")
    s.protocol.dataReceived(b"l LOGIN " + USER + b" " + PASSWORD + b"\r\n")
    s.settle()
    s.read(b"] Logged in\r\n")
    s.protocol.dataReceived(b"s SELECT INBOX\r\n")
    s.settle()
    s.read(b"s OK [READ-WRITE] SELECT completed\r\n")
    s.sends.clear()
    s.protocol.dataReceived(b"a STORE 2 +FLAGS (\\Flagged)\r\n")
    assert s.sends == []  # the store call is in the pool
    s.settle()
    assert s.reactor.getWriters() == []
    assert s.sends == [b"* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\na OK STORE completed\r\n"]
    assert s.read(b"a OK STORE completed\r\n") == s.sends[0]
