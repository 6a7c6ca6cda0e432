"""
The counters behind rate limits, lockouts and per-address connection
limits: the one kept in memory (one process), the one in SQLite (shared by
worker processes) and the one in PostgreSQL (shared by nodes) pass the same
checks, so the server behaves the same with one worker, several, or
several nodes.
"""

import pytest
from zope.interface.verify import verifyObject

from pymailer.interfaces import ILimitStore
from pymailer.limits import MemoryLimits, SQLiteLimits


def opener(request, tmp_path, kind):
    """A function making openers of one shared store of C{kind}."""
    if kind == "sqlite":
        return lambda: SQLiteLimits(tmp_path / "limits.sqlite")
    from pymailer.limits_pg import PostgreSQLLimits

    pool = request.getfixturevalue("postgresqlPool")
    return lambda: PostgreSQLLimits(pool)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def limits(request, tmp_path):
    if request.param == "memory":
        return MemoryLimits()
    return opener(request, tmp_path, request.param)()


@pytest.fixture(params=["sqlite", "postgresql"])
def openShared(request, tmp_path):
    """Openers of one store shared by processes (workers, nodes)."""
    return opener(request, tmp_path, request.param)


def lapse(limits):
    """C{limits}' counter stops renewing and its lease runs out (its process died)."""
    if isinstance(limits, SQLiteLimits):
        limits._db().execute("UPDATE counters SET alive_until = 0 WHERE counter = ?",
                             (limits.counter,))
        return
    with limits.pool.connection() as db:
        db.execute("UPDATE limit_counters SET alive_until = now() - interval '1 second'"
                   " WHERE counter = %s", (limits.counter,))


def test_provides_the_interface(limits):
    """Every backend provides ILimitStore: the guard and the rate limits can take any."""
    assert verifyObject(ILimitStore, limits)


def test_bucket_allows_the_burst_then_refills_evenly(limits):
    """
    Three events per minute: a fourth at once is refused, one more is
    allowed 20 s later; other keys and buckets are counted apart.
    """
    assert [limits.take("c", "a", 3, 60, 1000.0) for _ in range(4)] == [
        True, True, True, False]
    assert not limits.take("c", "a", 3, 60, 1019.0)
    assert limits.take("c", "a", 3, 60, 1020.0)
    assert limits.take("c", "b", 3, 60, 1020.0)
    assert limits.take("other", "a", 3, 60, 1020.0)
    assert limits.available("c", "a", 3, 60, 1020.0) < 1


def test_failures_lock_out_within_the_window_only(limits):
    """
    The third failure within 60 s locks the key out for 300 s; failures
    further apart than the window never do; a good login forgets them.
    """
    assert not limits.recordFailure("ip", "x", 0.0, 60, 3, 300)
    assert not limits.recordFailure("ip", "x", 70.0, 60, 3, 300)
    assert not limits.recordFailure("ip", "x", 80.0, 60, 3, 300)
    assert not limits.lockedOut("ip", "x", 80.0)
    assert limits.recordFailure("ip", "x", 90.0, 60, 3, 300)
    assert limits.lockedOut("ip", "x", 389.0)
    assert not limits.lockedOut("ip", "x", 390.0)
    assert not limits.lockedOut("account", "x", 100.0)
    limits.recordFailure("account", "y", 0.0, 60, 3, 300)
    limits.recordFailure("account", "y", 1.0, 60, 3, 300)
    limits.clearFailures("account", "y")
    assert not limits.recordFailure("account", "y", 2.0, 60, 3, 300)


def test_login_keys_counted_apart_with_their_own_limits(limits):
    """
    The guard's keys (L{pymailer.auth.guard.LoginGuard.counts}): one
    account from one address (an IPv6 /64, a UTF-8 name) locks out at its
    limit while the same account's count over every address, with a
    higher limit, does not yet; another address for the account, and the
    same address for another account, are not locked out: otherwise a
    guesser would lock the owner out everywhere.
    """
    net, account = "2001:db8:0:1::/64", "jörg@example.org"
    login = f"{net} {account}"
    for at in (0.0, 1.0):
        assert not limits.recordFailure("login", login, at, 60, 3, 300)
        assert not limits.recordFailure("account", account, at, 60, 30, 300)
    assert limits.recordFailure("login", login, 2.0, 60, 3, 300)
    assert not limits.recordFailure("account", account, 2.0, 60, 30, 300)
    assert limits.lockedOut("login", login, 3.0)
    assert not limits.lockedOut("account", account, 3.0)
    assert not limits.lockedOut("login", f"2001:db8:0:2::/64 {account}", 3.0)
    assert not limits.lockedOut("login", f"{net} bob@example.org", 3.0)


def test_connections_counted_up_to_the_limit(limits):
    """
    Two connections from one address to a listener with a limit of two:
    a third is refused until one ends; other addresses and other listeners
    are counted apart.
    """
    assert [limits.openConnection("imaps", "a", 2) for _ in range(3)] == [True, True, False]
    assert limits.openConnection("imaps", "b", 2)
    assert limits.openConnection("smtp", "a", 2)
    limits.closeConnection("imaps", "a")
    assert limits.openConnection("imaps", "a", 2)
    assert not limits.openConnection("imaps", "a", 2)
    limits.keepAlive()
    assert not limits.openConnection("imaps", "a", 2)


def test_counts_are_shared_between_openers(openShared):
    """
    Two openers of one store (two worker processes, two nodes) add to the
    same counts: a lockout reached through both holds in both, a bucket
    emptied through one is empty for the other, and connections open
    through both count against one per-address limit.
    """
    one, two = openShared(), openShared()
    one.recordFailure("ip", "x", 0.0, 60, 3, 300)
    two.recordFailure("ip", "x", 1.0, 60, 3, 300)
    assert one.recordFailure("ip", "x", 2.0, 60, 3, 300)
    assert two.lockedOut("ip", "x", 3.0)
    assert one.take("c", "a", 1, 60, 0.0)
    assert not two.take("c", "a", 1, 60, 0.0)
    assert one.openConnection("imaps", "h", 3)
    assert two.openConnection("imaps", "h", 3)
    assert two.openConnection("imaps", "h", 3)
    assert not one.openConnection("imaps", "h", 3)
    two.closeConnection("imaps", "h")
    assert one.openConnection("imaps", "h", 3)


def test_dead_openers_connections_stop_counting(openShared):
    """
    The connections counted by a process that died (it stopped renewing
    its lease) stop counting once the lease lapses, and go at the next
    renewal; a process that stops cleanly takes its counts with it at
    once: otherwise a crashed node would hold its clients' slots forever.
    """
    dead, alive, stopping = openShared(), openShared(), openShared()
    assert dead.openConnection("pop3s", "h", 2)
    assert stopping.openConnection("pop3s", "h", 2)
    assert not alive.openConnection("pop3s", "h", 2)
    stopping.leave()
    assert alive.openConnection("pop3s", "h", 2)
    assert not alive.openConnection("pop3s", "h", 2)
    lapse(dead)
    alive.keepAlive()
    assert alive.openConnection("pop3s", "h", 2)
    assert not alive.openConnection("pop3s", "h", 2)
