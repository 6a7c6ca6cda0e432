"""
Tests for L{pymailer.auth.directory}: the accounts database shared by the
server and the admin command; L{DirectoryContract} runs against SQLite and
against PostgreSQL (L{pymailer.auth.directory_pg}, on a throwaway cluster).
"""

import threading

import pytest
from zope.interface.verify import verifyObject

from pymailer.auth.directory import (
    SQLiteAccountDirectory, normaliseAddress, normaliseDomain, openDirectory)
from pymailer.config import default
from pymailer.interfaces import IAccountDirectory

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"
HASH2 = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdDI$aGFzaDI"


@pytest.fixture
def path(tmp_path):
    return tmp_path / "data" / "accounts.sqlite3"


@pytest.fixture
def directory(path):
    d = SQLiteAccountDirectory(path)
    yield d
    d.close()



def oldFile(path, version, userColumns="", userValues=""):
    """An accounts file as schema C{version} made it, with bob@example.org."""
    import sqlite3
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE domains (name TEXT PRIMARY KEY, catch_all TEXT NULL);"
        "CREATE TABLE users (address TEXT PRIMARY KEY, domain TEXT NOT NULL"
        " REFERENCES domains(name) ON DELETE CASCADE, password_hash TEXT NOT NULL"
        f"{userColumns});"
        "CREATE TABLE aliases (alias TEXT NOT NULL, target TEXT NOT NULL,"
        " domain TEXT NOT NULL, PRIMARY KEY (alias, target));"
        "INSERT INTO domains VALUES ('example.org', NULL);"
        f"INSERT INTO users VALUES ('bob@example.org', 'example.org', '{HASH}'{userValues});"
        f"PRAGMA user_version={version};")
    db.commit()
    db.close()

class TestNormalise:
    def test_case(self):
        """
        Domains are lower-cased and local parts casefolded: otherwise
        Bob@Example.ORG and bob@example.org would be different mailboxes.
        """
        assert normaliseAddress("Bob@Example.ORG") == "bob@example.org"
        assert normaliseAddress("STRASSE@x.org") == "strasse@x.org"
        assert normaliseAddress("Straße@x.org") == "strasse@x.org"

    def test_idna(self):
        """
        Punycode and Unicode domains are the same domain: otherwise mail to
        the xn-- spelling of a domain would bounce.
        """
        assert normaliseDomain("xn--bb-eka.AT") == "öbb.at"
        assert normaliseDomain("ÖBB.at.") == "öbb.at"
        assert normaliseAddress("Info@xn--bb-eka.at") == "info@öbb.at"

    def test_lastAt(self):
        """
        The domain is after the last '@': otherwise a quoted local part
        with '@' would route to the wrong domain.
        """
        assert normaliseAddress('"a@b"@Example.org') == '"a@b"@example.org'

    def test_trailingDot(self):
        """
        A trailing root dot is dropped: otherwise bob@example.org. would be
        unknown.
        """
        assert normaliseAddress("bob@example.org.") == "bob@example.org"

    def test_utf8LocalPart(self):
        """
        UTF-8 local parts are kept and NFC-normalised: otherwise SMTPUTF8
        users could not be added, or two spellings would be two mailboxes.
        """
        decomposed = "jo\u0308se\u0301@example.org"
        assert normaliseAddress(decomposed) == "jösé@example.org"
        assert normaliseAddress("JÖSÉ@example.org") == "jösé@example.org"

    @pytest.mark.parametrize("bad", [
        "bob", "@example.org", "bob@", "bob@.", "bob@a..b",
        "bob@xn--zz-9999999999.org", "bob@exa mple.org", "bob@a/b",
    ])
    def test_invalid(self, bad):
        """
        Malformed addresses raise ValueError: otherwise garbage would reach
        the database or the file system.
        """
        with pytest.raises(ValueError):
            normaliseAddress(bad)


class DirectoryContract:
    """
    What every accounts directory does.  A subclass gives a C{directory}
    fixture (empty) and L{reopen}: another process's (another node's)
    directory on the same database.
    """

    def reopen(self, directory):
        raise NotImplementedError

    def test_provides(self, directory):
        """
        The directory provides IAccountDirectory: otherwise the server
        could not use it.
        """
        assert verifyObject(IAccountDirectory, directory)

    def test_domains(self, directory):
        """
        Domains can be added, listed, queried and removed, case-
        insensitively: otherwise the server would reject mail for its own
        domains.
        """
        directory.addDomain("Example.ORG")
        directory.addDomain("xn--bb-eka.at", catchAll="postmaster@öbb.at")
        assert directory.listDomains() == ["example.org", "öbb.at"]
        assert directory.hasDomain("EXAMPLE.org")
        assert directory.hasDomain("ÖBB.at")
        assert not directory.hasDomain("other.org")
        assert not directory.hasDomain("not a domain")
        assert directory.catchAll("öbb.at") == "postmaster@öbb.at"
        assert directory.catchAll("example.org") is None
        with pytest.raises(KeyError, match="domain exists"):
            directory.addDomain("example.org")
        directory.removeDomain("example.org")
        assert directory.listDomains() == ["öbb.at"]
        with pytest.raises(KeyError, match="no such domain"):
            directory.removeDomain("example.org")

    def test_setCatchAll(self, directory):
        """
        The catch-all can be set and cleared: otherwise an admin could not
        stop a catch-all collecting spam.
        """
        directory.addDomain("example.org")
        directory.setCatchAll("example.org", "Someone@Remote.net")
        assert directory.catchAll("example.org") == "Someone@remote.net"
        directory.setCatchAll("example.org", None)
        assert directory.catchAll("example.org") is None
        with pytest.raises(KeyError):
            directory.setCatchAll("nope.org", "a@b.c")

    def test_users(self, directory):
        """
        Users are added, found case-insensitively, have their hash changed
        and are removed: otherwise logins and delivery break.
        """
        directory.addDomain("example.org")
        directory.addDomain("other.org")
        directory.addUser("Bob@Example.org", HASH)
        directory.addUser("alice@example.org", HASH)
        directory.addUser("carol@other.org", HASH)
        assert directory.hasUser("BOB@example.ORG")
        assert not directory.hasUser("dave@example.org")
        assert not directory.hasUser("garbage")
        assert directory.passwordHash("bob@example.org") == HASH
        assert directory.passwordHash("dave@example.org") is None
        assert directory.listUsers() == [
            "alice@example.org", "bob@example.org", "carol@other.org"]
        assert directory.listUsers("Other.org") == ["carol@other.org"]
        with pytest.raises(KeyError, match="user exists"):
            directory.addUser("BOB@example.org", HASH)
        directory.setPasswordHash("bob@example.org", HASH2)
        assert directory.passwordHash("bob@example.org") == HASH2
        directory.removeUser("bob@example.org")
        assert not directory.hasUser("bob@example.org")
        with pytest.raises(KeyError, match="no such user"):
            directory.removeUser("bob@example.org")
        with pytest.raises(KeyError, match="no such user"):
            directory.setPasswordHash("bob@example.org", HASH)

    def test_userNeedsDomain(self, directory):
        """
        A user of an unknown domain is refused with a clear KeyError:
        otherwise mail for them would never be accepted.
        """
        with pytest.raises(KeyError, match="no such domain: example.org"):
            directory.addUser("bob@example.org", HASH)

    def test_notAHash(self, directory):
        """
        A plaintext password is refused as a hash: otherwise a caller bug
        would store passwords in clear.
        """
        directory.addDomain("example.org")
        with pytest.raises(ValueError, match="hash"):
            directory.addUser("bob@example.org", "hunter2")

    @pytest.mark.parametrize("bad", [
        "a/b@example.org", "a\\b@example.org", "a\0b@example.org",
        "a\x07b@example.org", "a b@example.org", "a\tb@example.org",
        ".bob@example.org", "bob.@example.org", "b..ob@example.org",
        "x" * 65 + "@example.org", "a\u200bb@example.org",
    ])
    def test_unsafeAddressesRefused(self, directory, bad):
        """
        Addresses that could escape or confuse the mailbox directory are
        refused: otherwise 'a/../../etc@example.org' style names would
        reach the file system.
        """
        directory.addDomain("example.org")
        with pytest.raises(ValueError):
            directory.addUser(bad, HASH)
        assert directory.listUsers() == []

    def test_utf8User(self, directory):
        """
        UTF-8 local parts are allowed (SMTPUTF8): otherwise international
        users could not have mailboxes.
        """
        directory.addDomain("example.org")
        directory.addUser("Jösé@example.org", HASH)
        assert directory.hasUser("jösé@example.org")
        assert directory.listUsers() == ["jösé@example.org"]

    def test_tooLong(self, directory):
        """
        Addresses over 255 octets are refused: otherwise they could not be
        used in SMTP (RFC 5321 limits).
        """
        domain = ".".join(["d" * 62] * 4)  # 251 octets
        directory.addDomain(domain)
        with pytest.raises(ValueError):
            directory.addUser("x" * 10 + "@" + domain, HASH)

    def test_aliases(self, directory):
        """
        Aliases gain and lose targets, local targets are normalised and
        remote local parts kept: otherwise forwarding breaks or a remote
        mailbox name is altered.
        """
        directory.addDomain("example.org")
        directory.addUser("bob@example.org", HASH)
        directory.addAlias("Postmaster@example.org",
                           ["BOB@example.org", "Admin@Remote.NET"])
        directory.addAlias("postmaster@example.org", ["bob@example.org"])
        assert directory.aliasTargets("POSTMASTER@example.org") == (
            "Admin@remote.net", "bob@example.org")
        assert directory.aliasTargets("nobody@example.org") == ()
        assert directory.aliasTargets("garbage") == ()
        directory.addAlias("abuse@example.org", "bob@example.org")
        assert directory.listAliases() == [
            ("abuse@example.org", ("bob@example.org",)),
            ("postmaster@example.org",
             ("Admin@remote.net", "bob@example.org")),
        ]
        directory.removeAlias("postmaster@example.org", ["Admin@remote.net"])
        assert directory.aliasTargets("postmaster@example.org") == (
            "bob@example.org",)
        with pytest.raises(KeyError):
            directory.removeAlias("postmaster@example.org", ["x@y.org"])
        directory.removeAlias("abuse@example.org")
        assert directory.aliasTargets("abuse@example.org") == ()
        with pytest.raises(KeyError, match="no such alias"):
            directory.removeAlias("abuse@example.org")

    def test_aliasRules(self, directory):
        """
        Aliases must be in a local domain, need a target, may not shadow a
        user or target themselves: otherwise mail would loop or vanish.
        """
        directory.addDomain("example.org")
        directory.addUser("bob@example.org", HASH)
        with pytest.raises(KeyError, match="not in a local domain"):
            directory.addAlias("a@other.org", ["bob@example.org"])
        with pytest.raises(ValueError, match="is a user"):
            directory.addAlias("Bob@example.org", ["x@y.org"])
        with pytest.raises(ValueError, match="itself"):
            directory.addAlias("a@example.org", ["A@example.org"])
        with pytest.raises(ValueError):
            directory.addAlias("a@example.org", [])
        with pytest.raises(ValueError):
            directory.addAlias("a@example.org", ["not an address"])
        assert directory.listAliases() == []
        directory.addAlias("a@example.org", ["x@y.org"])
        with pytest.raises(ValueError, match="is an alias"):
            directory.addUser("a@example.org", HASH)

    def test_removeDomainCascades(self, directory):
        """
        Removing a domain removes its users and aliases but not others':
        otherwise a removed domain's users could still log in.
        """
        directory.addDomain("example.org")
        directory.addDomain("other.org")
        directory.addUser("bob@example.org", HASH)
        directory.addUser("carol@other.org", HASH)
        directory.addAlias("a@example.org", ["bob@example.org"])
        directory.addAlias("b@other.org", ["bob@example.org"])
        directory.removeDomain("example.org")
        assert not directory.hasUser("bob@example.org")
        assert directory.listUsers() == ["carol@other.org"]
        assert directory.listAliases() == [
            ("b@other.org", ("bob@example.org",))]
        # Re-adding the domain starts empty.
        directory.addDomain("example.org")
        assert directory.listUsers("example.org") == []

    def test_otherProcessChangesSeen(self, directory):
        """
        A second instance (another process: the admin command; another
        node) sees every change of the first at once, and vice versa,
        without reopening: otherwise a new user could not log in until a
        server restart.
        """
        other = self.reopen(directory)
        try:
            # Prime the server-side connection before the change.
            assert not directory.hasDomain("example.org")
            other.addDomain("example.org")
            assert directory.hasDomain("example.org")
            other.addUser("bob@example.org", HASH)
            assert directory.passwordHash("bob@example.org") == HASH
            other.setPasswordHash("bob@example.org", HASH2)
            assert directory.passwordHash("bob@example.org") == HASH2
            directory.addAlias("a@example.org", ["bob@example.org"])
            assert other.aliasTargets("a@example.org") == ("bob@example.org",)
            other.removeUser("bob@example.org")
            assert not directory.hasUser("bob@example.org")
        finally:
            other.close()

    def test_threads(self, directory):
        """
        Each thread gets its own connection and sees the others' writes:
        otherwise calls from the server's thread pool would fail with
        sqlite3's same-thread check.
        """
        directory.addDomain("example.org")
        results = []

        def work(i):
            directory.addUser(f"u{i}@example.org", HASH)
            results.append(directory.hasUser(f"u{i}@example.org"))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [True] * 8
        assert len(directory.listUsers()) == 8

    def test_failedWriteRollsBack(self, directory):
        """
        A failing change leaves nothing half-done: otherwise an alias with
        one bad target would be stored with the good ones.
        """
        directory.addDomain("example.org")
        with pytest.raises(ValueError):
            directory.addAlias("a@example.org", ["ok@x.org", "bad"])
        assert directory.listAliases() == []

    @pytest.mark.parametrize("isFlag, setFlag", [("isAdmin", "setAdmin"),
                                                  ("isDisabled", "setDisabled")])
    def test_userFlags(self, directory, isFlag, setFlag):
        """
        A user is neither admin nor disabled until marked, then is, then is
        not again, and unknown or malformed names never are: otherwise the
        web admin pages would open to the wrong people, or disabling an
        account would not stop its logins.
        """
        isFlag, setFlag = getattr(directory, isFlag), getattr(directory, setFlag)
        directory.addDomain("example.org")
        directory.addUser("bob@example.org", HASH)
        assert not isFlag("bob@example.org")
        setFlag("Bob@Example.org")
        assert isFlag("bob@example.org")
        assert directory.hasUser("bob@example.org")
        setFlag("bob@example.org", False)
        assert not isFlag("bob@example.org")
        for nobody in ("carol@example.org", "not an address", ""):
            assert not isFlag(nobody)
        with pytest.raises(KeyError):
            setFlag("carol@example.org")

    def test_quota(self, directory):
        """
        A user has no storage limit until one is set, then has it, then
        none again; anyone else never has one: otherwise `pymailer user
        quota` would not take, or would limit the wrong mailbox.
        """
        directory.addDomain("example.org")
        directory.addUser("bob@example.org", HASH)
        assert directory.quota("bob@example.org") is None
        directory.setQuota("Bob@Example.org", 500 * 1024 * 1024)
        assert directory.quota("bob@example.org") == 500 * 1024 * 1024
        directory.setQuota("bob@example.org", None)
        assert directory.quota("bob@example.org") is None
        for nobody in ("carol@example.org", "not an address"):
            assert directory.quota(nobody) is None
        with pytest.raises(KeyError):
            directory.setQuota("carol@example.org", 10)
        with pytest.raises(ValueError):
            directory.setQuota("bob@example.org", -1)

class TestSQLiteDirectory(DirectoryContract):
    def reopen(self, directory):
        """Another process's directory on the same file."""
        return SQLiteAccountDirectory(directory.path)

    def test_createsFileAndParent(self, path, directory):
        """
        The database and its directory are created, owner-readable only:
        otherwise the first run fails, or hashes are readable by everyone.
        """
        assert path.exists()
        assert path.stat().st_mode & 0o077 == 0
        mode = directory.connections.db().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"

    def test_version3FileMigrated(self, path):
        """
        A database made before quotas (schema version 3) opens with its
        users, admins and disabled accounts kept and no limits, and takes
        one: otherwise upgrading would lose accounts, fail to start, or
        limit everybody.
        """
        oldFile(path, 3, ", admin INTEGER NOT NULL DEFAULT 0,"
                " disabled INTEGER NOT NULL DEFAULT 0", ", 1, 1")
        directory = SQLiteAccountDirectory(path)
        try:
            assert directory.isAdmin("bob@example.org")
            assert directory.isDisabled("bob@example.org")
            assert directory.quota("bob@example.org") is None
            directory.setQuota("bob@example.org", 1024)
            assert directory.quota("bob@example.org") == 1024
        finally:
            directory.close()

    def test_version2FileMigrated(self, path):
        """
        A database made before accounts could be disabled (schema version
        2) opens with its users and admins kept and none disabled: otherwise
        upgrading would lose accounts or fail to start.
        """
        oldFile(path, 2, ", admin INTEGER NOT NULL DEFAULT 0", ", 1")
        directory = SQLiteAccountDirectory(path)
        try:
            assert directory.isAdmin("bob@example.org")
            assert not directory.isDisabled("bob@example.org")
            directory.setDisabled("bob@example.org")
            assert directory.isDisabled("bob@example.org")
        finally:
            directory.close()

    def test_version1FileMigrated(self, path):
        """
        A database made before admins existed (schema version 1) opens
        with its users kept and none of them admin, and can mark one:
        otherwise upgrading would lose the accounts or fail to start.
        """
        oldFile(path, 1)
        directory = SQLiteAccountDirectory(path)
        try:
            assert directory.listUsers() == ["bob@example.org"]
            assert directory.passwordHash("bob@example.org") == HASH
            assert not directory.isAdmin("bob@example.org")
            directory.setAdmin("bob@example.org")
            assert directory.isAdmin("bob@example.org")
        finally:
            directory.close()
        # Opening it again (another process, a restart) changes nothing.
        again = SQLiteAccountDirectory(path)
        try:
            assert again.isAdmin("bob@example.org")
        finally:
            again.close()

    def test_openDirectory(self, tmp_path):
        """
        openDirectory uses data_dir/accounts.sqlite3: otherwise the server
        and the admin command would use different databases.
        """
        d = openDirectory(default(tmp_path))
        try:
            assert d.path == str(tmp_path / "pymailer-data" /
                                 "accounts.sqlite3")
        finally:
            d.close()


class TestPostgreSQLDirectory(DirectoryContract):
    @pytest.fixture
    def directory(self, postgresqlPool):
        from pymailer.auth.directory_pg import PostgreSQLAccountDirectory

        return PostgreSQLAccountDirectory(postgresqlPool)

    def reopen(self, directory):
        """Another node: its own pool on the same database."""
        from pymailer.auth.directory_pg import PostgreSQLAccountDirectory
        from pymailer.config import StorageConfig
        from pymailer.pg.pool import openPool

        pool = openPool(StorageConfig("postgresql", directory.pool.conninfo, 2))
        other = PostgreSQLAccountDirectory(pool)
        other.close = pool.close
        return other

    def test_openDirectory(self, postgresqlPool, tmp_path):
        """
        openDirectory gives the PostgreSQL directory when the storage is
        PostgreSQL, and a user added through it is there for another node:
        otherwise nodes would keep separate accounts in their own files.
        """
        import dataclasses

        from pymailer.auth.directory_pg import PostgreSQLAccountDirectory
        from pymailer.config import StorageConfig
        from pymailer.pg.pool import closePools

        config = dataclasses.replace(default(tmp_path), storage=StorageConfig(
            "postgresql", postgresqlPool.conninfo, 2))
        try:
            d = openDirectory(config)
            assert isinstance(d, PostgreSQLAccountDirectory)
            d.addDomain("example.org")
            d.addUser("bob@example.org", HASH)
            assert PostgreSQLAccountDirectory(postgresqlPool).hasUser("bob@example.org")
            assert not (tmp_path / "pymailer-data" / "accounts.sqlite3").exists()
        finally:
            closePools()


def test_password_change_takes_effect_at_once_despite_login_cache(tmp_path):
    """After a password change, the old password stops working at once (the login cache keys on the stored hash)."""
    from twisted.cred.error import UnauthorizedLogin

    from pymailer.auth.checkers import PasswordChecker
    from pymailer.auth.directory import SQLiteAccountDirectory
    from pymailer.auth.passwords import hashPassword

    directory = SQLiteAccountDirectory(tmp_path / "accounts.sqlite3")
    directory.addDomain("example.org")
    directory.addUser("alice@example.org", hashPassword("old"))
    checker = PasswordChecker(directory, None, None)
    assert checker.check(b"alice@example.org", b"old") == "alice@example.org"
    assert checker.check(b"alice@example.org", b"old") == "alice@example.org"  # cached
    directory.setPasswordHash("alice@example.org", hashPassword("new"))
    with pytest.raises(UnauthorizedLogin):
        checker.check(b"alice@example.org", b"old")
    assert checker.check(b"alice@example.org", b"new") == "alice@example.org"


def test_weak_hash_upgraded_at_login(tmp_path):
    """A password hashed with weaker argon2 parameters is re-hashed with today's at the next good login."""
    from argon2 import PasswordHasher

    from pymailer.auth.checkers import PasswordChecker
    from pymailer.auth.directory import SQLiteAccountDirectory
    from pymailer.auth.passwords import needsRehash, verifyPassword

    directory = SQLiteAccountDirectory(tmp_path / "accounts.sqlite3")
    directory.addDomain("example.org")
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    directory.addUser("alice@example.org", weak)
    assert needsRehash(weak)
    PasswordChecker(directory, None, None).check(b"alice@example.org", b"pw")
    upgraded = directory.passwordHash("alice@example.org")
    assert upgraded != weak and not needsRehash(upgraded)
    assert verifyPassword(upgraded, "pw")
