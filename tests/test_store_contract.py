"""
The store contract (L{tests.store_contract}) run against every backend:
Maildir, SQLite and PostgreSQL (production) and memory (the fake tests and tools use).
"""

import pytest

from pymailer.store.maildir import MaildirStore
from pymailer.store.memory import MemoryStore
from pymailer.store.sqlite import SQLiteStore
from tests.store_contract import StoreContract


class TestMaildirStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return MaildirStore(tmp_path / "mail", "mx.example.org")

    def reopen(self, store):
        """Another process's store object on the same directories."""
        return MaildirStore(store.root, "other.example.org")


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self):
        return MemoryStore()


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return SQLiteStore(tmp_path / "store")

    def reopen(self, store):
        """Another process's store object on the same database and blobs."""
        return SQLiteStore(store.root)


class TestPostgreSQLStore(StoreContract):
    """The same contract on a real PostgreSQL cluster (tests/daemons.py)."""

    @pytest.fixture
    def store(self, postgresqlPool):
        from pymailer.store.postgresql import PostgreSQLStore

        store = PostgreSQLStore(postgresqlPool)
        yield store
        store.close()

    def reopen(self, store):
        """Another node's store object on the same database."""
        from pymailer.store.postgresql import PostgreSQLStore

        return PostgreSQLStore(store.pool)


class TestPostgreSQLStoreBlobFiles(StoreContract):
    """
    The same contract with the content in a shared directory
    (C{[storage] blobs = "/path"}), the metadata in PostgreSQL.
    """

    @pytest.fixture
    def store(self, postgresqlPool, tmp_path):
        from pymailer.store.postgresql import PostgreSQLStore

        store = PostgreSQLStore(postgresqlPool, blobDirectory=tmp_path / "blobs")
        yield store
        store.close()

    def reopen(self, store):
        """Another node's store object on the same database and directory."""
        from pymailer.store.postgresql import PostgreSQLStore

        return PostgreSQLStore(store.pool, blobDirectory=store.blobs.root)
