"""
The SMTP route cache (L{pymailer.intake.RouteCache}): RCPT answered from
memory while the accounts directory is unchanged, and every change made by
another process (the admin command) seen by the very next RCPT, in every
worker.
"""

import contextlib
import smtplib
import sqlite3
import threading
import time

import pytest

from pymailer.testing import ClockReactor, CountingThreadPool
from workerserver import onlyWorker, runningWorkers

from pymailer.auth.directory import SQLiteAccountDirectory
from pymailer.delivery.router import Local, Router
from pymailer.envelope import Session
from pymailer.intake import MessageIntake, RouteCache
from pymailer.quota import Quotas
from pymailer.smtp.reply import SMTPReply

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


class UsageStore:
    """The usage half of a store: what each user holds, in octets."""

    def __init__(self):
        self.used = {}

    def usage(self, user):
        return self.used.get(user, 0)


def rcpt(intake, address, size=0):
    """One RCPT through an intake: C{None} if accepted, else C{(code, enhanced)}."""
    results = []
    intake.validateRecipient(Session(), "a@remote.test", address, size).addCallbacks(
        results.append, lambda f: results.append(f.trap(SMTPReply) and f.value))
    (result,) = results
    return None if result is None else (result.code, result.enhanced)


def test_rcpt_is_answered_from_memory_until_the_directory_changes(tmp_path):
    """
    Under load, RCPT to an address seen before is answered by every
    session of a worker without a hand-off to the disk threads (one per
    message before), until another process changes the accounts file:
    then the next RCPT looks again, so a user removed is refused at once,
    a user added accepted at once, an alias changed reaches its new
    target.  A user with a quota is looked up each time (their usage
    grows with each message) and refused once full.
    """
    path = tmp_path / "accounts.sqlite3"
    directory = SQLiteAccountDirectory(path)
    admin = SQLiteAccountDirectory(path)  # another connection, as the admin command's
    admin.addDomain("example.org")
    for user in ("alice@example.org", "bob@example.org", "carol@example.org"):
        admin.addUser(user, HASH)
    admin.addAlias("sales@example.org", ["bob@example.org"])
    usage = UsageStore()
    pool = CountingThreadPool()
    cache = RouteCache(directory.version)
    intakes = [MessageIntake(Router(directory), None, ClockReactor(), pool,
                             quotas=Quotas(directory, usage), routeCache=cache)
               for _ in range(2)]

    for i in range(10):
        assert rcpt(intakes[i % 2], "alice@example.org") is None
    assert pool.calls == 1
    # The commit delivers with the route RCPT found (no second look-up).
    assert intakes[1]._routes["alice@example.org"].users == ("alice@example.org",)
    # Unknown addresses and other domains are kept too.
    for _ in range(3):
        assert rcpt(intakes[0], "nobody@example.org") == (550, "5.1.1")
        assert rcpt(intakes[1], "x@elsewhere.test") == (554, "5.7.1")
    assert pool.calls == 3

    admin.removeUser("alice@example.org")
    assert rcpt(intakes[0], "alice@example.org") == (550, "5.1.1")
    admin.addUser("nobody@example.org", HASH)
    assert rcpt(intakes[1], "nobody@example.org") is None

    assert rcpt(intakes[0], "sales@example.org") is None
    admin.addAlias("sales@example.org", ["carol@example.org"])
    admin.removeAlias("sales@example.org", ["bob@example.org"])
    assert rcpt(intakes[1], "sales@example.org") is None
    assert intakes[1]._routes["sales@example.org"] == Local(
        "sales@example.org", ("carol@example.org",))

    admin.setQuota("carol@example.org", 10000)
    calls = pool.calls
    assert rcpt(intakes[0], "carol@example.org", 100) is None
    assert rcpt(intakes[1], "carol@example.org", 100) is None
    assert pool.calls == calls + 2
    usage.used["carol@example.org"] = 10000
    assert rcpt(intakes[0], "carol@example.org", 100) == (452, "4.2.2")

    admin.removeDomain("example.org")
    assert rcpt(intakes[0], "bob@example.org") == (554, "5.7.1")


def test_the_directory_version_never_waits_on_a_writer(tmp_path):
    """
    The version is asked on the reactor thread before each RCPT: while
    another process holds the accounts file's write lock (a long admin
    change), it answers at once rather than stalling every session of the
    worker, and it changes once that process commits.
    """
    path = tmp_path / "accounts.sqlite3"
    directory = SQLiteAccountDirectory(path)
    before = directory.version()
    assert before is not None and directory.version() == before
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("INSERT INTO domains (name) VALUES ('example.org')")
    started = time.monotonic()
    assert directory.version() == before
    assert time.monotonic() - started < 0.5
    writer.execute("COMMIT")
    assert directory.version() != before
    # From one thread only, but not necessarily the one that opened it.
    seen = []
    thread = threading.Thread(target=lambda: seen.append(directory.version()))
    thread.start()
    thread.join()
    assert seen == [directory.version()]


# -- across processes: two workers and the admin command -------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with runningWorkers(tmp_path_factory.mktemp("routecache")) as server:
        yield server


@contextlib.contextmanager
def clientOnEachWorker(server):
    """One SMTP client on each of the two workers, after EHLO."""
    clients = []
    try:
        for index in (0, 1):
            with onlyWorker(server, index):
                clients.append(smtplib.SMTP("127.0.0.1", server.port, timeout=20))
        for client in clients:
            client.ehlo("client.test")
        yield clients
    finally:
        for client in clients:
            client.close()


def ask(client, address):
    """MAIL and RCPT, then RSET: the RCPT's code and enhanced code."""
    client.mail("sender@client.test")
    code, text = client.rcpt(address)
    client.rset()
    return code, text[:5].decode()


def warm(clients, address):
    """Each worker has looked C{address} up (and kept it)."""
    for client in clients:
        for _ in range(2):
            assert ask(client, address) == (250, "2.1.5")


def refusedEverywhereAfter(server, address, *command):
    """
    Both workers accept RCPT to C{address}, the admin command runs, then
    each worker's next RCPT to it: their C{(code, enhanced)}.
    """
    with clientOnEachWorker(server) as clients:
        warm(clients, address)
        server.admin(*command)
        return {ask(client, address) for client in clients}


def test_user_removed_is_refused_by_the_next_rcpt_in_every_worker(server):
    """
    Right after `pymailer user remove`, both workers refuse RCPT to that
    user with 550 5.1.1, even on sessions that were accepting mail for
    them a moment before; if this fails, a removed account keeps getting
    mail (and a mailbox nobody reads fills up).
    """
    server.addUser("carol@example.org")
    assert refusedEverywhereAfter(server, "carol@example.org",
                                  "user", "remove", "carol@example.org") == {(550, "5.1.1")}


def test_domain_removed_is_refused_by_the_next_rcpt_in_every_worker(server):
    """
    Right after `pymailer domain remove`, both workers refuse mail for the
    domain's former users (no longer ours: relay denied, 554 5.7.1).
    """
    server.admin("domain", "add", "other.test")
    server.addUser("dave@other.test")
    assert refusedEverywhereAfter(server, "dave@other.test",
                                  "domain", "remove", "other.test") == {(554, "5.7.1")}


def test_alias_changed_reaches_its_new_target_from_every_worker(server):
    """
    An alias pointed elsewhere with the admin command: the next message
    to it, through either worker, lands in the new target's mailbox and
    not the old one's; an alias removed is refused with 550 5.1.1.
    """
    server.admin("alias", "add", "sales@example.org", "alice@example.org")
    alice, bob = (len(server.messages(u)) for u in ("alice@example.org", "bob@example.org"))
    with clientOnEachWorker(server) as clients:
        warm(clients, "sales@example.org")
        server.admin("alias", "add", "sales@example.org", "bob@example.org")
        server.admin("alias", "remove", "sales@example.org", "alice@example.org")
        for index, client in enumerate(clients):
            client.sendmail("sender@client.test", ["sales@example.org"],
                            f"Subject: to sales via worker {index}\r\n\r\nhi\r\n".encode())
        server.waitForMessages("bob@example.org", bob + 2)
        assert len(server.messages("alice@example.org")) == alice
        server.admin("alias", "remove", "sales@example.org")
        for client in clients:
            assert ask(client, "sales@example.org") == (550, "5.1.1")
