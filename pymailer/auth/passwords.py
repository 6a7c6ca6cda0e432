"""
Password hashing: argon2id.

argon2-cffi is used because it binds the reference C implementation of
Argon2 (the Password Hashing Competition winner, RFC 9106) rather than
reimplementing it.  Hashes carry their own parameters, so any hash made
with other parameters still verifies, and L{needsRehash} tells when it
should be re-made with ours (at the next good login).

Our parameters are OWASP's argon2id minimum (m=19 MiB, t=2, p=1), not the
library's default (m=64 MiB, t=3, p=4): each check holds C{m} of memory
for its duration, and a mail server checks passwords all day, several at
once (10 IMAP clients logging in took the server from 60-90 MB to 330 MB).
The checker also bounds how many run at once
(L{pymailer.auth.checkers.MAX_CONCURRENT_CHECKS}).

Verifying is slow and memory-hungry by design (that is the point of a
password hash): call L{verifyPassword} and L{hashPassword} from a thread
pool, never on the reactor thread.
"""

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["hashPassword", "verifyPassword", "needsRehash"]

# OWASP Password Storage Cheat Sheet, argon2id: m=19456 KiB, t=2, p=1.
MEMORY_COST_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1

_hasher = argon2.PasswordHasher(
    time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM,
    type=argon2.Type.ID)

# Verified against when there is no hash at all (unknown user), so that a
# login for a missing user costs as much as one with a wrong password and
# timing does not reveal which users exist.
_dummyHash = None


def hashPassword(password: str) -> str:
    """
    @return: an encoded argon2id hash (C{"$argon2id$v=19$..."}) with a fresh
        random salt.  Blocking (tens of milliseconds).
    """
    return _hasher.hash(password)


def verifyPassword(hash, password: str) -> bool:
    """
    @param hash: an encoded hash as stored, or C{None} for "no such user"
        (a dummy hash is verified then, to keep the timing the same).
    @return: C{True} if C{password} matches.  C{False} on a mismatch or an
        invalid/corrupt hash: never raises for those.  Blocking.
    """
    global _dummyHash
    if hash is None:
        if _dummyHash is None:
            _dummyHash = _hasher.hash("pymailer dummy password")
        hash, password = _dummyHash, password + "\0not it"
    try:
        return _hasher.verify(hash, password)
    except (VerificationError, InvalidHashError, TypeError, ValueError):
        return False


def needsRehash(hash) -> bool:
    """
    @return: C{True} if C{hash} was made with other parameters than ours
        (weaker, or the library default's 64 MiB) or is not a valid argon2
        hash: rehash it after the next successful login.
    """
    try:
        return _hasher.check_needs_rehash(hash)
    except (InvalidHashError, TypeError, ValueError):
        return True
