"""
Password checks cost bounded memory: argon2id at OWASP's minimum (19 MiB)
for new hashes, old hashes still verify and are re-made at login, and at
most L{MAX_CONCURRENT_CHECKS} checks run at once however many clients log
in together.
"""

import argon2
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin

from pymailer.auth.checkers import MAX_CONCURRENT_CHECKS, PasswordChecker
from pymailer.auth.directory import SQLiteAccountDirectory
from pymailer.auth.passwords import hashPassword, needsRehash, verifyPassword
from pymailer.testing import ClockReactor

# argon2-cffi's defaults, which pymailer used before: 64 MiB per check.
OLD_HASHER = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)


class ManualThreadPool:
    """Holds each job until the test runs it, counting how many are in flight."""

    def __init__(self):
        self.pending = []
        self.mostAtOnce = 0

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        self.pending.append((onResult, f, args, kwargs))
        self.mostAtOnce = max(self.mostAtOnce, len(self.pending))

    def runOne(self):
        onResult, f, args, kwargs = self.pending.pop(0)
        try:
            onResult(True, f(*args, **kwargs))
        except Exception:
            from twisted.python.failure import Failure
            onResult(False, Failure())


def directoryWith(tmp_path, users):
    directory = SQLiteAccountDirectory(tmp_path / "accounts.sqlite3")
    directory.addDomain("example.org")
    for address, stored in users.items():
        directory.addUser(address, stored)
    return directory


def test_concurrent_logins_run_at_most_two_checks_at_once(tmp_path):
    """
    Ten clients logging in at once get their answers, but no more than
    MAX_CONCURRENT_CHECKS argon2 checks run together (each holds its
    memory cost): before, every login ran at once and ten 64 MiB checks
    took the server's RSS from 90 MB to 330 MB.
    """
    assert MAX_CONCURRENT_CHECKS == 2
    users = {f"u{i}@example.org": hashPassword(f"pw{i}") for i in range(10)}
    pool = ManualThreadPool()
    checker = PasswordChecker(directoryWith(tmp_path, users), ClockReactor(), pool)
    results = []
    for i in range(10):
        password = f"pw{i}" if i % 3 else "wrong"
        checker.requestAvatarId(UsernamePassword(f"u{i}@example.org".encode(), password.encode())
                                ).addBoth(results.append)
    assert len(pool.pending) == 2
    while pool.pending:
        pool.runOne()
    assert pool.mostAtOnce == MAX_CONCURRENT_CHECKS
    assert len(results) == 10
    assert [r for r in results if isinstance(r, str)] == [
        f"u{i}@example.org" for i in range(10) if i % 3]
    assert all(r.check(UnauthorizedLogin) for r in results if not isinstance(r, str))


def test_new_hashes_use_owasp_minimum_parameters():
    """
    A password set now is hashed with argon2id m=19 MiB, t=2, p=1 (OWASP's
    minimum), not the 64 MiB library default each login would pay.
    """
    parameters = argon2.extract_parameters(hashPassword("pw"))
    assert (parameters.type, parameters.memory_cost, parameters.time_cost,
            parameters.parallelism) == (argon2.Type.ID, 19 * 1024, 2, 1)


def test_old_hash_verifies_and_is_rehashed_at_login(tmp_path):
    """
    A user whose password was hashed with the old 64 MiB parameters still
    logs in, and the stored hash is re-made with the new ones: no user is
    locked out by the change, and each login costs less from then on.
    """
    old = OLD_HASHER.hash("pw")
    assert verifyPassword(old, "pw") and needsRehash(old)
    directory = directoryWith(tmp_path, {"alice@example.org": old})
    assert PasswordChecker(directory, None, None).check(b"alice@example.org", b"pw") == \
        "alice@example.org"
    upgraded = directory.passwordHash("alice@example.org")
    assert argon2.extract_parameters(upgraded).memory_cost == 19 * 1024
    assert verifyPassword(upgraded, "pw") and not needsRehash(upgraded)
