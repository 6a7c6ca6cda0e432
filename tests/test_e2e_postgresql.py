"""
Servers on PostgreSQL (C{[storage] backend = "postgresql"}), end to end:
real twistd servers sharing one database (a throwaway cluster), mail sent
with smtplib, read with IMAPClient over TLS, the admin command run as a
separate process.  Every node keeps its accounts, queue and message store
in the database, nothing in its data directory.
"""

import datetime
import poplib
import smtplib
import threading
import time

import pytest
from imapclient import IMAPClient

from dnsserver import DNSServer
from mailserver import (
    PASSWORD, ServerError, insecureTLS, loopbackRelayPort, relaySenderOptions, waitFor)
from scriptedsmtp import ScriptedSMTP


@pytest.fixture
def node(makeMailServer, postgresqlDSN):
    """A factory of servers on this test's database (migrated once)."""
    migrated = []

    def make(name, provision=False, roles=()):
        server = makeMailServer(name, provision=False, start=False, roles=roles, sections={
            "storage": {"backend": "postgresql", "dsn": postgresqlDSN, "pool_size": 3}})
        if not migrated:
            server.admin("db", "migrate")
            migrated.append(True)
        if provision:
            server.provision()
        server.start()
        return server

    return make


def send(server, recipients, subject="hello"):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as s:
        s.sendmail("sender@client.example", recipients,
                   f"From: sender@client.example\r\nSubject: {subject}\r\n\r\nbody\r\n")


def test_twoNodesShareAccountsAndQueue(node):
    """
    Two servers on one database: users added through the first are
    accepted and delivered to by the second, and mail queued on one is
    listed and held by the admin command of the other; nothing of it is in
    their data directories: otherwise nodes behind one MX name would
    disagree on who exists and on what is queued.
    """
    a = node("a", provision=True)
    b = node("b")
    send(b, ["bob@example.org"], "via b")
    [message] = b.waitForMessages("bob", 1)
    assert b"Subject: via b" in message
    # Forwarded to a remote address, which the test servers' failing DNS
    # keeps queued, deferred.
    b.admin("alias", "add", "fwd@example.org", "someone@remote.example")
    send(a, ["fwd@example.org"], "for later")
    listing = waitFor(lambda: (lambda out: out if "remote.example" in out else None)(
        b.admin("queue", "list").stdout), message="the forward in the queue")
    queueId = listing.split()[0]
    assert b.admin("queue", "hold", queueId).returncode == 0
    assert "hold" in a.admin("queue", "list").stdout
    for server in (a, b):
        assert not (server.dataDir / "accounts.sqlite3").exists()
        assert not (server.dataDir / "queue").exists()
        assert not (server.dataDir / "store").exists()
    assert b.admin("user", "list").stdout.split() == ["alice@example.org", "bob@example.org"]


def test_mailDeliveredOnOneNodeIsReadAndIdledOnAnother(node):
    """
    Two servers on one database: a message sent over SMTP to node A is
    read over IMAP (TLS) on node B, UIDs and all, and an IMAP IDLE session
    on B hears of a delivery made through A within a second: otherwise a
    user whose client lands on another node than the MX that took the mail
    would not see it, or would see it only at the next poll.
    """
    a = node("a", provision=True)
    b = node("b", roles=("imaps",))
    send(a, ["alice@example.org"], "first via a")
    a.waitForMessages("alice", 1)
    c = IMAPClient("127.0.0.1", port=b.ports["imaps"], ssl=True, ssl_context=insecureTLS(),
                   timeout=30)
    c.login("alice@example.org", PASSWORD)
    assert c.select_folder("INBOX")[b"EXISTS"] == 1
    [(uid, data)] = c.fetch(c.search(), ["BODY.PEEK[]"]).items()
    assert uid == 1 and b"Subject: first via a" in data[b"BODY[]"]
    c.idle()
    start = time.monotonic()
    send(a, ["alice@example.org"], "second via a")
    responses = []
    while time.monotonic() - start < 10 and (2, b"EXISTS") not in responses:
        responses += c.idle_check(timeout=1)
    elapsed = time.monotonic() - start
    c.idle_done()
    assert (2, b"EXISTS") in responses
    # From the SMTP client's first byte: queue, local delivery on A,
    # the commit's NOTIFY, B's poll of its listener (every 0.5 s).
    assert elapsed < 1.0, f"EXISTS on node B {elapsed:.2f} s after the send to node A"
    assert b"Subject: second via a" in c.fetch([2], ["BODY.PEEK[]"])[2][b"BODY[]"]
    c.logout()


def pop3s(server):
    client = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=insecureTLS(),
                             timeout=30)
    client.user("bob@example.org")
    return client


def test_pop3MaildropLockedAcrossNodes(node):
    """
    A POP3 session on node A holds bob's maildrop for every node: a second
    login on node B gets -ERR [IN-USE] (RFC 2449 8.1.2) until A's session
    quits; then B's login works and retrieves the message delivered
    through B.  Otherwise two POP3 clients on two nodes would delete each
    other's view of the same mail (RFC 1939 4).
    """
    a = node("a", provision=True, roles=("pop3s",))
    b = node("b", roles=("pop3s",))
    send(b, ["bob@example.org"], "popped")
    b.waitForMessages("bob", 1)
    first = pop3s(a)
    assert first.pass_(PASSWORD).startswith(b"+OK")
    second = pop3s(b)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    first.quit()
    second = pop3s(b)
    assert second.pass_(PASSWORD).startswith(b"+OK")
    assert b"Subject: popped" in b"\r\n".join(second.retr(1)[1])
    second.quit()


def test_olderSchemaStopsTheServerWithAdvice(makeMailServer, postgresqlDSN):
    """
    A server started on a database without today's schema does not start,
    and says in one line to run `pymailer db migrate`: otherwise it would
    fail on every message with a missing table.
    """
    server = makeMailServer("old", provision=False, start=False, sections={
        "storage": {"backend": "postgresql", "dsn": postgresqlDSN}})
    with pytest.raises(ServerError) as info:
        server.start()
    assert ("pymailer: error: the PostgreSQL database has no pymailer schema:"
            " run `pymailer db migrate`") in str(info.value)


def test_databaseOutageIsTemporary(makeMailServer):
    """
    While the database is down the server answers SMTP with a temporary
    4xx (the sender retries), and once it is back the same server accepts
    and delivers again, without a restart: otherwise a database restart or
    fail-over would bounce mail, or leave every node needing a restart.
    """
    from daemons import PostgreSQL

    with PostgreSQL() as cluster:
        dsn = cluster.dsn(cluster.newDatabase())
        server = makeMailServer("outage", provision=False, start=False, sections={
            "storage": {"backend": "postgresql", "dsn": dsn}})
        server.admin("db", "migrate")
        server.provision()
        server.start()
        send(server, ["bob@example.org"], "before")
        server.waitForMessages("bob", 1)
        cluster.stop()
        # The connection rate limit, counted in the database for every
        # node, is the first to need it: the greeting is the 451.
        with pytest.raises(smtplib.SMTPConnectError) as info:
            send(server, ["bob@example.org"], "during")
        assert (info.value.smtp_code, info.value.smtp_error) == (
            451, b"4.3.5 Temporary policy failure, try again later")
        cluster.start()
        send(server, ["bob@example.org"], "after")
        messages = server.waitForMessages("bob", 2)
        assert [b"Subject: after" in m for m in messages] == [False, True]


class StallingSink(ScriptedSMTP):
    """
    A remote MX that takes the first message's data and then says nothing
    until C{release} is set (a slow MX), and answers later ones at once.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.stalled = threading.Event()
        self.accepted = []

    def messageReceived(self, mail, rcpts, data):
        if not self.stalled.is_set():
            self.stalled.set()
            self.release.wait(60)
            return "451 4.3.0 too late"
        with self.lock:
            self.accepted.append(data)
        return "250 2.0.0 queued"


def test_deadNodesMailTakenOver(makeMailServer, postgresqlDSN):
    """
    A node killed in the middle of a relay delivery keeps its claim only
    while it renews it: the other node waits while the first is alive, then
    delivers the message itself once the lease lapses, and the queue ends
    empty: otherwise the mail of a dead node is stuck, or two live nodes
    send the same message at once.

    Either node may claim the message (the one that queued it, or the
    other, woken by its NOTIFY, first): the node killed is the holder.
    """
    import psycopg

    port = loopbackRelayPort()
    dns = DNSServer({"remote.test": [("MX", "10 mx.remote.test.")],
                     "mx.remote.test": [("A", "127.0.0.3")]})
    sink = StallingSink("127.0.0.3", port)
    try:
        nodes = []
        for name in ("a", "b"):
            options = relaySenderOptions(dns.address, port)
            options["sections"]["storage"] = {
                "backend": "postgresql", "dsn": postgresqlDSN, "queue_lease": 2}
            node = makeMailServer(name, provision=False, start=False, **options)
            if not nodes:
                node.admin("db", "migrate")
                node.provision()
            node.start()
            nodes.append(node)
        a, b = nodes
        with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=10) as c:
            c.login("alice@example.org", PASSWORD)
            c.sendmail("alice@example.org", ["carol@remote.test"],
                       b"From: alice@example.org\r\nSubject: taken over\r\n\r\nbody\r\n")
        assert sink.stalled.wait(20), a.log()[-3000:]

        def lease():
            with psycopg.connect(postgresqlDSN) as db:
                return db.execute("SELECT claimed_by, lease_until FROM queue").fetchone()

        holder, first = lease()
        # The claimer is "host:pid:random".
        [dead] = [node for node in nodes if f":{node.proc.pid}:" in holder]
        [other] = [node for node in nodes if node is not dead]
        # Alive, the holder renews its claim (every half second here): the
        # other node keeps off.
        waitFor(lambda: lease()[1] > first + datetime.timedelta(seconds=1),
                message="the holder to renew its lease")
        assert lease()[0] == holder and len(sink.transcripts) == 1
        dead.kill9()
        waitFor(lambda: sink.accepted, timeout=30,
                message=lambda: "the other node to deliver; its log:\n" + other.log()[-3000:])
        sink.release.set()
        [data] = sink.accepted
        assert b"Subject: taken over" in data
        waitFor(lambda: "queue is empty" in other.admin("queue", "list").stdout,
                message="the queue to empty")
        other.waitForLog("to=<carol@remote.test> status=delivered")
    finally:
        sink.release.set()
        sink.stop()
        dns.stop()
