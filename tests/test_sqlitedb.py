"""
L{pymailer.sqlitedb.ThreadConnections}: a SQLite file written from the
threads of several processes.
"""

import sqlite3
import threading

import pytest

from pymailer.sqlitedb import ThreadConnections

SCHEMA = "CREATE TABLE IF NOT EXISTS n (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"


def hammer(openers, threadsEach, times):
    """
    C{times} read-then-write transactions in each of C{threadsEach}
    threads of every opener at once.  @return: the errors raised.
    """
    errors = []
    start = threading.Barrier(len(openers) * threadsEach)

    def add(connections):
        start.wait()
        try:
            for _ in range(times):
                with connections.transaction() as db:
                    (v,) = db.execute("SELECT coalesce(max(v), 0) FROM n").fetchone()
                    db.execute("INSERT OR REPLACE INTO n VALUES ('x', ?)", (v + 1,))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=add, args=(c,)) for c in openers
               for _ in range(threadsEach)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_queued_writers_never_meet_the_busy_handler(tmp_path):
    """
    Two openers of one file (two processes: C{flock}s of separate opens
    exclude each other like those of two processes), several threads each,
    and no busy timeout at all: with C{queueWriters} no transaction ever
    finds the file locked, so none fails and none waits in SQLite's
    polling sleeps; every increment counts.
    """
    path = tmp_path / "counts.sqlite"
    openers = [ThreadConnections(path, SCHEMA, busyTimeout=0, queueWriters=True)
               for _ in range(2)]
    assert hammer(openers, threadsEach=4, times=50) == []
    (v,) = openers[0].db().execute("SELECT v FROM n").fetchone()
    assert v == 2 * 4 * 50
    for c in openers:
        c.close()


def test_unqueued_writers_meet_the_lock(tmp_path):
    """
    Without the queue, SQLite's lock alone: a writer that comes while
    another process writes finds it held and (no busy timeout) fails.
    What the test above shows never happens with the queue.  (Under the
    same load as above it happens only when two transactions overlap in
    time, which a fast idle machine does not always do.)
    """
    path = tmp_path / "counts.sqlite"
    holder, other = [ThreadConnections(path, SCHEMA, busyTimeout=0) for _ in range(2)]
    with holder.transaction() as db:
        db.execute("INSERT INTO n VALUES ('x', 1)")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            with other.transaction() as db:
                db.execute("INSERT INTO n VALUES ('y', 1)")


def test_close_then_write_again(tmp_path):
    """After L{ThreadConnections.close} (shutdown), a transaction reopens what it needs."""
    connections = ThreadConnections(tmp_path / "c.sqlite", SCHEMA, queueWriters=True)
    with connections.transaction() as db:
        db.execute("INSERT INTO n VALUES ('a', 1)")
    connections.close()
    with connections.transaction() as db:
        db.execute("INSERT INTO n VALUES ('b', 2)")
    assert connections.db().execute("SELECT count(*) FROM n").fetchone() == (2,)


def test_a_failed_transaction_lets_the_next_writer_in(tmp_path):
    connections = ThreadConnections(tmp_path / "c.sqlite", SCHEMA, queueWriters=True)
    with pytest.raises(sqlite3.IntegrityError):
        with connections.transaction() as db:
            db.execute("INSERT INTO n VALUES ('a', 1)")
            db.execute("INSERT INTO n VALUES ('a', 2)")
    other = ThreadConnections(tmp_path / "c.sqlite", queueWriters=True, busyTimeout=0)
    with other.transaction() as db:
        db.execute("INSERT INTO n VALUES ('a', 3)")
    assert other.db().execute("SELECT v FROM n").fetchall() == [(3,)]
