"""
The counters behind rate limits and lockouts: the one kept in memory (one
process) and the one in SQLite (shared by worker processes) pass the same
checks, so the server behaves the same with one worker or several.
"""

import pytest
from zope.interface.verify import verifyObject

from pymailer.interfaces import ILimitStore
from pymailer.limits import MemoryLimits, SQLiteLimits


@pytest.fixture(params=["memory", "sqlite"])
def limits(request, tmp_path):
    if request.param == "memory":
        return MemoryLimits()
    return SQLiteLimits(tmp_path / "limits.sqlite")


def test_provides_the_interface(limits):
    """Both backends provide ILimitStore: the guard and the rate limits can take either."""
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


def test_sqlite_counts_are_shared_between_openers(tmp_path):
    """
    Two openers of one file (two worker processes) add to the same counts:
    a lockout reached through both holds in both.
    """
    one, two = (SQLiteLimits(tmp_path / "limits.sqlite") for _ in range(2))
    one.recordFailure("ip", "x", 0.0, 60, 3, 300)
    two.recordFailure("ip", "x", 1.0, 60, 3, 300)
    assert one.recordFailure("ip", "x", 2.0, 60, 3, 300)
    assert two.lockedOut("ip", "x", 3.0)
    assert one.take("c", "a", 1, 60, 0.0)
    assert not two.take("c", "a", 1, 60, 0.0)
