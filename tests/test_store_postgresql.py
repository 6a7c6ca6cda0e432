"""
What the PostgreSQL message store (L{pymailer.store.postgresql}) promises
beyond the store contract (L{tests.store_contract}, run against it by
L{test_store_contract}): many nodes writing at once, change events across
nodes, content in chunks read by range, freed content kept a while.  On a
real throwaway cluster (L{daemons.PostgreSQL}); each "node" is a store
object with a connection pool of its own.
"""

import io
import threading
import time

import pytest

from pymailer.config import StorageConfig
from pymailer.pg.pool import openPool
from pymailer.store import postgresql
from pymailer.store.postgresql import CHUNK, ChunkedContent, PostgreSQLStore

USER = "alice@example.org"


@pytest.fixture
def nodes(postgresqlPool):
    """Two store objects on one database, each with its own pool (two nodes)."""
    other = openPool(StorageConfig("postgresql", postgresqlPool.conninfo, 4))
    stores = [PostgreSQLStore(postgresqlPool), PostgreSQLStore(other)]
    yield stores
    for store in stores:
        store.close()
    other.close()


def inThreads(count, work):
    """Run C{work(i)} in C{count} threads at once; re-raise the first failure."""
    failures = []
    start = threading.Barrier(count)

    def run(i):
        try:
            start.wait()
            work(i)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def redeliverWhileExpunging(nodes, body, rounds, afterEach=lambda store: None):
    """
    At once: node 1 delivers C{body} C{rounds} times, node 0 expunges the
    whole INBOX as often; C{afterEach(store)} after every step of either.
    """
    def work(i):
        store = nodes[i % 2]
        for _ in range(rounds):
            if i % 2:
                store.deliver(USER, b"", io.BytesIO(body))
            else:
                box = store.mailbox(USER)
                box.expunge([info.uid for info in box.messages()])
            afterEach(store)

    nodes[0].createUser(USER)
    inThreads(2, work)


def chunkRows(store):
    with store.pool.connection() as db:
        return db.execute("SELECT count(*) FROM mailstore.blob_chunks").fetchone()[0]


def test_nodesDeliveringAtOnceNeverShareAUid(nodes):
    """
    Two nodes delivering into one mailbox at the same time (four threads
    each) give every message its own UID and MODSEQ, ascending: otherwise
    two messages would share a UID and a client would show one and lose
    the other.
    """
    nodes[0].createUser(USER)

    def work(i):
        store = nodes[i % 2]
        for n in range(10):
            store.deliver(USER, b"", io.BytesIO(b"Subject: %d.%d\r\n\r\nbody\r\n" % (i, n)))

    inThreads(8, work)
    infos = nodes[1].mailbox(USER).messages()
    assert [info.uid for info in infos] == list(range(1, 81))
    assert len({info.modseq for info in infos}) == 80
    assert nodes[0].mailbox(USER).uidNext() == 81


def test_newKeywordsFromTwoNodesAtOnce(nodes):
    """
    Two nodes appending with keywords the mailbox has not seen, at the same
    time, each keep their own keywords: otherwise two keywords would get
    one stored letter and a message would show a keyword it never had.
    """
    nodes[0].createUser(USER)

    def work(i):
        box = nodes[i % 2].mailbox(USER)
        for n in range(5):
            box.append(io.BytesIO(b"x"), flags={f"$k{i}x{n}"})

    inThreads(4, work)
    flags = sorted(sorted(info.flags)[0] for info in nodes[0].mailbox(USER).messages())
    assert flags == sorted(f"$k{i}x{n}" for i in range(4) for n in range(5))


def test_otherNodesChangesAreHeard(nodes):
    """
    A delivery on one node is among the changes another node's store
    reports (IExternalChanges, through LISTEN/NOTIFY) within a second, and
    a node does not hear its own: otherwise an IMAP IDLE session on one
    node would not see mail delivered on another.
    """
    a, b = nodes
    a.createUser(USER)
    version = b.dataVersion()  # starts b's listener
    cursor, changed = b.changesSince(None)
    assert changed == set()
    start = time.monotonic()
    a.deliver(USER, b"", io.BytesIO(b"hello\r\n"))
    while b.dataVersion() == version and time.monotonic() - start < 5:
        threading.Event().wait(0.01)  # a real event from another connection
    assert time.monotonic() - start < 1.0
    cursor, changed = b.changesSince(cursor)
    assert changed == {(USER, "INBOX")}
    b.deliver(USER, b"", io.BytesIO(b"own\r\n"))
    a.deliver(USER, b"", io.BytesIO(b"again\r\n"), mailbox="Junk")
    while b.changesSince(cursor)[1] == set() and time.monotonic() - start < 5:
        threading.Event().wait(0.01)
    assert b.changesSince(cursor)[1] == {(USER, "Junk")}


def test_missedEventsMakeEverySessionLook(nodes):
    """
    A delivery on node A while node B's listener is cut off (a network
    fault, a database restart) still reaches B's IDLE sessions once B
    listens again: the store says "anything may have changed", and the
    notifier calls every subscriber and every account watcher, each of
    which looks (changedSince).  Otherwise the IDLE client would wait for
    its next command to see the mail.
    """
    from twisted.internet import task

    from daemons import cutListeners
    from mailserver import waitFor
    from pymailer.store.notify import ChangeNotifier
    from pymailer.testing import SynchronousThreadPool

    class Reactor(task.Clock):
        def callFromThread(self, f, *args, **kwargs):
            f(*args, **kwargs)

    a, b = nodes
    a.createUser(USER)
    notifier = ChangeNotifier(b, Reactor(), SynchronousThreadPool())
    selected, watched = [], []
    notifier.subscribe(USER, "INBOX", lambda stamp: selected.append("INBOX"))
    notifier.subscribeAccount(USER, watched.append)
    notifier._poll()  # starts b's listener; changes count from now
    assert cutListeners(b.pool.conninfo, postgresql.CHANNEL) == 1
    a.deliver(USER, b"", io.BytesIO(b"while b was deaf\r\n"))
    waitFor(lambda: (notifier._poll(), selected)[1], message="b to listen again")
    assert selected == ["INBOX"]
    assert {"INBOX", "Archive", "Sent"} <= set(watched)


def test_largeMessageReadByRange(nodes):
    """
    A message larger than a chunk is stored in chunks and read by range
    (a FETCH of a part does not load the whole message), with the right
    octets across chunk boundaries: otherwise a large attachment would be
    garbled, or every FETCH of it would cost its whole size.
    """
    store = nodes[0]
    body = bytes(range(256)) * (CHUNK * 3 // 256) + b"tail"
    store.deliver(USER, b"Subject: big\r\n", io.BytesIO(body))
    message = b"Subject: big\r\n" + body
    assert chunkRows(store) == 4
    with nodes[1].mailbox(USER).openMessage(1) as content:
        assert isinstance(content, ChunkedContent)
        assert content.size == len(message)
        assert content.readAt(CHUNK - 3, 6) == message[CHUNK - 3:CHUNK + 3]
        assert content.readAt(len(message) - 4, 100) == b"tail"
        assert content.read() == message


def test_freedContentKeptForReadersThenSwept(nodes, monkeypatch):
    """
    An expunged message's content stays readable by a reader that opened
    it before (a POP3 RETR, a FETCH in progress on another node), and is
    removed by a later sweep: otherwise the reader gets a truncated
    message, or the database keeps every message ever expunged.
    """
    store = nodes[0]
    big = b"y" * (CHUNK * 2)
    store.deliver(USER, b"", io.BytesIO(big))
    box = store.mailbox(USER)
    content = box.openMessage(1)
    box.expunge([1])
    assert store.sweep() == 0
    assert content.readAt(CHUNK * 2 - 1, 1) == b"y"
    monkeypatch.setattr(postgresql, "FREED_GRACE", -1)
    assert nodes[1].sweep() == 1
    assert chunkRows(store) == 0


def test_summaryOfHeaderWithNul(nodes):
    """
    A message whose Subject decodes to a NUL (PostgreSQL text holds none)
    is delivered and summarised: otherwise such a message, which anyone can
    send, would fail delivery and bounce.
    """
    store = nodes[0]
    assert store.deliver(USER, b"", io.BytesIO(
        b"Subject: =?utf-8?q?a=00b?=\r\n\r\nbody\r\n"))
    [summary] = store.mailbox(USER).summaries([1]).values()
    assert summary.subject == "ab"


def test_cliBackupSaysToUsePostgreSQLTools(cli, conf):
    """
    `pymailer backup` on a PostgreSQL installation says in one line to back
    the database up with PostgreSQL's tools: otherwise an administrator
    would get a traceback, or believe a copy of data_dir held the mail.
    """
    conf.write_text(conf.read_text() + '\n[storage]\nbackend = "postgresql"\n'
                    'dsn = "postgresql://pymailer@127.0.0.1:1/none"\n')
    code, out, err = cli("backup", str(conf.parent / "bk"))
    assert code == 1 and "pg_dump" in err and "Traceback" not in err
    assert not (conf.parent / "bk").exists()


def test_copiesInOppositeDirectionsAtOnce(nodes):
    """
    Two sessions (on two nodes) copying between the same two mailboxes in
    opposite directions at the same time both succeed: otherwise the
    database would find the two waiting on each other and one user's COPY
    would fail.
    """
    nodes[0].createMailbox(USER, "Other")
    for name in ("INBOX", "Other"):
        nodes[0].mailbox(USER, name).append(io.BytesIO(name.encode()))

    def work(i):
        source, target = ("INBOX", "Other") if i % 2 else ("Other", "INBOX")
        store = nodes[i % 2]
        for _ in range(15):
            store.mailbox(USER, source).copy([1], store.mailbox(USER, target))

    inThreads(4, work)
    assert len(nodes[1].mailbox(USER).messages()) == 31


def test_redeliveryWhileTheFirstCopyIsExpunged(nodes):
    """
    The same content delivered again on one node while a session on
    another expunges the earlier copy (a resent message, a user emptying
    the folder) both succeed, and the new copy reads whole: otherwise the
    delivery or the expunge would fail, or the new copy lose its content.
    """
    body = b"Subject: again\r\n\r\n" + b"z" * 1000
    redeliverWhileExpunging(nodes, body, 15)
    box = nodes[1].mailbox(USER)
    for info in box.messages():
        with box.openMessage(info.uid) as content:
            assert content.read() == body


def test_sameMailboxCreatedOnTwoNodesAtOnce(nodes):
    """
    Two nodes creating the same mailbox at the same moment: one creates
    it, the other is told it exists (KeyError, IMAP's NO [ALREADYEXISTS]):
    otherwise the second client would get a server error for an ordinary
    race.
    """
    nodes[0].createUser(USER)
    names = [f"Box{n}" for n in range(30)]
    outcomes = [[], []]

    def work(i):
        for name in names:
            try:
                nodes[i].createMailbox(USER, name)
                outcomes[i].append(name)
            except KeyError:
                pass

    inThreads(2, work)
    assert sorted(outcomes[0] + outcomes[1]) == sorted(names)
    assert set(names) <= set(nodes[1].listMailboxes(USER))
