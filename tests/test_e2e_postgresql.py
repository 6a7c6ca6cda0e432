"""
Servers on PostgreSQL (C{[storage] backend = "postgresql"}), end to end:
real twistd servers sharing one database (a throwaway cluster), mail sent
with smtplib, the admin command run as a separate process.  The message
store stays each node's SQLite one for now (issue 19 moves it next).
"""

import smtplib

import pytest

from mailserver import ServerError, waitFor


@pytest.fixture
def node(makeMailServer, postgresqlDSN):
    """A factory of servers on this test's database (migrated once)."""
    migrated = []

    def make(name, provision=False):
        server = makeMailServer(name, provision=False, start=False, sections={
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
    assert b.admin("user", "list").stdout.split() == ["alice@example.org", "bob@example.org"]


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
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            send(server, ["bob@example.org"], "during")
        [(code, text)] = info.value.recipients.values()
        assert (code, text) == (451, b"4.3.0 Local error in processing, try again later")
        cluster.start()
        send(server, ["bob@example.org"], "after")
        messages = server.waitForMessages("bob", 2)
        assert [b"Subject: after" in m for m in messages] == [False, True]
