"""
Three nodes on one PostgreSQL (issue 19's "what it must show"): three real
twistd servers, each with a data directory of its own, sharing one
database (a throwaway cluster) as an organisation's nodes behind one MX
name would.  Mail sent with smtplib to any node is read with IMAPClient
and poplib from every node; an IDLE session on one node hears deliveries
made through another; the per-address connection limit and the login
lockout hold for the three together, not per node.

Slow: each test starts three servers.
"""

import poplib
import smtplib
import socket
import time

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailserver import PASSWORD, insecureTLS, waitFor

pytestmark = pytest.mark.slow

PER_IP = 3          # [imap], [pop3], [smtp] max_connections_per_ip
MAX_FAILURES = 3    # [auth] max_failures
REFUSED_IMAP = b"* BYE [UNAVAILABLE] Too many connections from your address, try again later\r\n"
REFUSED_SMTP = b"421 4.7.0 Too many connections from your address, try again later\r\n"


@pytest.fixture
def nodes(makeMailServer, postgresqlDSN):
    """Three servers on this test's database (migrated and provisioned once)."""
    servers = []
    for name in ("a", "b", "c"):
        server = makeMailServer(
            name, provision=False, start=False, roles=("imap", "imaps", "pop3s"),
            smtp={"max_connections_per_ip": PER_IP},
            sections={
                "storage": {"backend": "postgresql", "dsn": postgresqlDSN, "pool_size": 3},
                "imap": {"max_connections_per_ip": PER_IP},
                "pop3": {"max_connections_per_ip": PER_IP},
                "auth": {"max_failures": MAX_FAILURES, "failure_delay": 0.1}})
        if not servers:
            server.admin("db", "migrate")
            server.provision()
        server.start()
        servers.append(server)
    return servers


def send(server, recipient, subject):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as s:
        # STARTTLS on a connection admitted after the shared count.
        s.starttls(context=insecureTLS())
        s.sendmail("sender@client.example", [recipient],
                   f"From: sender@client.example\r\nSubject: {subject}\r\n\r\nbody\r\n")


def imaps(server, user="bob@example.org", password=PASSWORD):
    client = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                        ssl_context=insecureTLS(), timeout=30)
    client.login(user, password)
    return client


def pop3s(server, user="bob@example.org"):
    client = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=insecureTLS(),
                             timeout=30)
    client.user(user)
    return client


def openConnections(dsn, role):
    """The connections to C{role} listeners the nodes count open in the database."""
    import psycopg

    with psycopg.connect(dsn) as db:
        return db.execute("SELECT coalesce(sum(open), 0) FROM limit_connections"
                          " WHERE scope = %s", (role,)).fetchone()[0]


def greeting(port):
    """A plain connection and its first line: C{(socket, line)}."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s, s.makefile("rb").readline()


def test_mailToAnyNodeIsReadFromEveryNode(nodes):
    """
    One message sent to each of the three nodes: each node serves all three
    over IMAP (TLS, and STARTTLS) and over POP3, and an IMAP IDLE session on the third node
    hears of a delivery through the first within a second: otherwise a
    user whose client lands on another node than the MX that took the
    mail would not see it, or late.
    """
    for server in nodes:
        send(server, "bob@example.org", f"via {server.root.name}")
    nodes[0].waitForMessages("bob", 3)
    subjects = {b"Subject: via a", b"Subject: via b", b"Subject: via c"}
    for server in nodes:
        client = imaps(server)
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search(), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        assert {data[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip()
                for data in fetched.values()} == subjects, server.root.name
        client.logout()
        client = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=30)
        client.starttls(insecureTLS())
        client.login("bob@example.org", PASSWORD)
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 3
        client.logout()
        client = pop3s(server)
        client.pass_(PASSWORD)
        assert client.stat()[0] == 3
        assert {next(line for line in client.top(i, 0)[1] if line.startswith(b"Subject:"))
                for i in (1, 2, 3)} == subjects
        client.quit()

    a, _, c = nodes
    watcher = imaps(c, "alice@example.org")
    watcher.select_folder("INBOX")
    watcher.idle()
    start = time.monotonic()
    send(a, "alice@example.org", "idle across nodes")
    responses = []
    while time.monotonic() - start < 10 and (1, b"EXISTS") not in responses:
        responses += watcher.idle_check(timeout=1)
    elapsed = time.monotonic() - start
    watcher.idle_done()
    watcher.logout()
    assert (1, b"EXISTS") in responses
    # From the SMTP client's first byte: queue, delivery on a, NOTIFY, c's
    # listener, c's poll (every 0.5 s).
    assert elapsed < 1.0, f"EXISTS on node c {elapsed:.2f} s after the send to node a"


def test_connectionLimitPerAddressHoldsAcrossNodes(nodes, postgresqlDSN):
    """
    With three connections allowed per address, one open to each node
    fills the quota: a fourth, to any node, is refused with the protocol's
    "too many connections from your address" (IMAP BYE [UNAVAILABLE], SMTP
    421 4.7.0); closing one frees a slot on another node.  Otherwise a
    client would get three times the limit from three nodes.
    """
    for role, refusal in (("imap", REFUSED_IMAP), ("smtp", REFUSED_SMTP)):
        held = [greeting(server.ports[role]) for server in nodes]
        assert all(not line.startswith((b"* BYE", b"421")) for _, line in held), held
        for server in nodes:
            refused, line = greeting(server.ports[role])
            assert line == refusal, (role, server.root.name)
            assert refused.recv(10) == b""
            refused.close()
        held.pop(0)[0].close()

        def admitted():
            s, line = greeting(nodes[2].ports[role])
            s.close()
            return not line.startswith((b"* BYE", b"421"))

        waitFor(admitted, 10, message=f"{role}: a slot freed on node a, used on node c")
        for s, _ in held:
            s.close()
        # Every slot back before the next role (closes are counted in the background).
        waitFor(lambda: openConnections(postgresqlDSN, role) == 0, 10,
                message=f"{role}: every close counted in the database")


def test_failedLoginsOnThreeNodesAddUpToALockout(nodes):
    """
    One failed login on each node (IMAP on two, POP3 on the third) makes
    three, the limit: the next login, with the right password, on any node
    is refused as locked out.  Otherwise a guesser spreading attempts over
    the nodes would get three times the tries.
    """
    a, b, c = nodes
    for server in (a, b):
        with pytest.raises(IMAPClientError, match="AUTHENTICATIONFAILED"):
            imaps(server, password="wrong")
    client = pop3s(c)
    with pytest.raises(poplib.error_proto):
        client.pass_("wrong")
    client.quit()
    for server in nodes:
        with pytest.raises(IMAPClientError, match=r"UNAVAILABLE\] Too many failed logins"):
            imaps(server)
