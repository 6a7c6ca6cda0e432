"""
DKIM signing keys in PostgreSQL (C{[storage] backend = "postgresql"}): the
table C{dkim_keys} (schema step 3) holds what C{data_dir/dkim/DOMAIN/
SELECTOR.TYPE.key} holds with the file layout of
L{pymailer.policy.dkimkeys}, so that every node signs with the same keys
and a key made on one node (C{pymailer dkim keygen}) signs on all at once.

What it trusts: the database (the keys are ours); domains and selectors
are checked (L{dnsDomain}, L{selectorsFor}) before they reach a query.
Blocking: the server calls it from a thread pool.
"""

import hashlib
import threading

from pymailer.policy.dkimkeys import (
    ALGORITHMS, KeyExistsError, SigningKey, dkimpyForm, dnsDomain, newKeys, parseKey, pemOf,
    sortKeys)

# Parsed keys by (type, SHA-256 of the PEM): parsing a 2048-bit RSA key costs
# ~30 ms, too much per message; a replaced key has another PEM.
_cache = {}
_cacheLock = threading.Lock()
_CACHE_LIMIT = 1000


def _parsed(keyType, pem, where):
    stamp = (keyType, hashlib.sha256(pem).digest())
    with _cacheLock:
        cached = _cache.get(stamp)
    if cached is None:
        cached = dkimpyForm(keyType, parseKey(pem, keyType, where))
        with _cacheLock:
            if len(_cache) >= _CACHE_LIMIT:
                _cache.clear()
            _cache[stamp] = cached
    return cached


class PostgreSQLKeys:
    """
    The shared keys.

    @param pool: a L{pymailer.pg.pool.Pool} on a migrated database.
    """

    def __init__(self, pool):
        self.pool = pool

    def load(self, domain):
        """
        Every key of C{domain}, RSA first, each type by selector (as
        L{pymailer.policy.dkimkeys.loadSigningKeys}).

        @raise KeyFileError: a stored key is not usable.
        """
        domain = dnsDomain(domain)
        with self.pool.connection() as db:
            rows = db.execute("SELECT selector, key_type, pem FROM dkim_keys WHERE domain = %s",
                              (domain,)).fetchall()
        return sortKeys(
            SigningKey(selector, ALGORITHMS[keyType],
                       _parsed(keyType, bytes(pem), f"DKIM key {selector} of {domain}"))
            for selector, keyType, pem in rows)

    def generate(self, domain, selector, force=False):
        """
        Make and store an RSA and an Ed25519 key (see
        L{pymailer.policy.dkimkeys.generateKeys}), in one transaction.

        @raise KeyExistsError: a key of these selectors exists and not C{force}.
        """
        domain = dnsDomain(domain)
        made = newKeys(selector)
        self.store(domain, [(keyType, s, pemOf(keyType, private)) for keyType, s, private in made],
                   force)
        return [SigningKey(s, ALGORITHMS[keyType], dkimpyForm(keyType, private))
                for keyType, s, private in made]

    def store(self, domain, keys, force=False, db=None):
        """
        Store C{keys} (C{[(keyType, selector, pem)]}) of C{domain}.

        @param db: a connection inside the caller's transaction (the storage
            migration's), else one of the pool's in a transaction of ours.
        @raise KeyExistsError: a key of these selectors exists and not C{force}.
        """
        if db is None:
            with self.pool.connection() as db, db.transaction():
                return self.store(domain, keys, force, db)
        domain = dnsDomain(domain)
        for keyType, selector, pem in keys:
            if not force and db.execute(
                    "SELECT 1 FROM dkim_keys WHERE domain = %s AND selector = %s"
                    " AND key_type = %s", (domain, selector, keyType)).fetchone():
                raise KeyExistsError(f"{selector}.{keyType} of {domain} in the database")
            db.execute(
                "INSERT INTO dkim_keys (domain, selector, key_type, pem) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (domain, selector, key_type)"
                " DO UPDATE SET pem = EXCLUDED.pem, created_at = now()",
                (domain, selector, keyType, pem))
