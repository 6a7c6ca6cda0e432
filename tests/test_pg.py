"""
PostgreSQL's schema and connections (L{pymailer.pg}): C{pymailer db
migrate}, the checks every command and the server make before using the
database, and the admin commands working on the shared database.  Against
a throwaway cluster (C{tests/daemons.py}).
"""

import threading

import pytest

from pymailer.config import StorageConfig
from pymailer.pg.pool import connect, openPool
from pymailer.pg.schema import MIGRATIONS, SCHEMA_VERSION, SchemaError, checkSchema, migrate


@pytest.fixture
def confExtra(postgresqlDSN):
    return f'[storage]\nbackend = "postgresql"\ndsn = "{postgresqlDSN}"\npool_size = 2\n'


@pytest.fixture(autouse=True)
def _closePools():
    """The admin command's pools (one per process) end with each test."""
    from pymailer.pg.pool import closePools

    yield
    closePools()


def test_migrateThenUpToDate(cli):
    """
    `pymailer db migrate` creates the schema in an empty database, and
    running it again changes nothing: otherwise a first install could not
    start, or an upgrade script run twice would fail.
    """
    assert cli("db", "migrate") == (0, f"schema version 0 -> {SCHEMA_VERSION}\n", "")
    assert cli("db", "migrate") == (0, f"schema version {SCHEMA_VERSION}: up to date\n", "")


def test_olderSchemaRefusedWithAdvice(cli):
    """
    A command on a database without today's schema stops with one line
    saying to run `pymailer db migrate`: otherwise the administrator gets
    a traceback about a missing table.
    """
    code, out, err = cli("domain", "list")
    assert code == 1
    assert err == ("pymailer: error: the PostgreSQL database has no pymailer schema:"
                   " run `pymailer db migrate`\n")


def test_newerSchemaRefused(postgresqlDSN):
    """
    A node older than the database's schema refuses it, saying to upgrade
    that node: otherwise old code would write rows the new schema's
    invariants do not expect.
    """
    with connect(postgresqlDSN) as db:
        migrate(db)
        db.execute("INSERT INTO schema_migrations (version, description) VALUES (%s, 'later')",
                   (SCHEMA_VERSION + 1,))
        with pytest.raises(SchemaError, match="newer than this pymailer knows .*upgrade pymailer"):
            checkSchema(db)
        with pytest.raises(SchemaError, match="upgrade pymailer"):
            migrate(db)
    with pytest.raises(SchemaError, match="upgrade pymailer"):
        openPool(StorageConfig("postgresql", postgresqlDSN, 1))


def test_twoNodesMigrateAtOnce(postgresqlDSN):
    """
    Several nodes migrating at the same moment all succeed and the schema
    is applied once (the advisory lock): otherwise starting a cluster after
    an upgrade fails on "relation already exists" on all but one node.
    """
    # A step that takes a while, so that the others arrive during it.
    slow = MIGRATIONS + [(SCHEMA_VERSION + 1, "slow", [
        "SELECT pg_sleep(0.3)", "CREATE TABLE slow_step (x integer)"])]
    results, errors = [], []
    start = threading.Barrier(4)

    def node():
        try:
            with connect(postgresqlDSN) as db:
                start.wait()
                results.append(migrate(db, slow))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=node) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    latest = SCHEMA_VERSION + 1
    assert sorted(results) == [(0, latest)] + [(latest, latest)] * 3
    with connect(postgresqlDSN) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations"
                                                 " ORDER BY version")]
    assert versions == list(range(1, latest + 1))


def test_failedStepLeavesSchemaAsItWas(postgresqlDSN):
    """
    A migration that fails half-way leaves nothing of itself (PostgreSQL's
    DDL is transactional): otherwise a retry after fixing the cause would
    trip over the half-made step.
    """
    import psycopg

    broken = MIGRATIONS + [(SCHEMA_VERSION + 1, "broken", [
        "CREATE TABLE half_done (x integer)", "SELECT no_such_function()"])]
    with connect(postgresqlDSN) as db:
        migrate(db)
        with pytest.raises(psycopg.errors.UndefinedFunction):
            migrate(db, broken)
        assert db.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        checkSchema(db)


def test_unreachableDatabaseOneLine(tmp_path, capsys):
    """
    A database that cannot be reached gives one line naming it (without
    the password) and libpq's reason: otherwise the administrator cannot
    tell a wrong port from a wrong password.
    """
    from mailserver import freePort
    from pymailer.cli import main

    conf = tmp_path / "pymailer.toml"
    conf.write_text('hostname = "mail.example.org"\ndata_dir = "data"\n[storage]\n'
                    'backend = "postgresql"\n'
                    f'dsn = "postgresql://pymailer:hunter2@127.0.0.1:{freePort()}/mail"\n')
    assert main(["--config", str(conf), "queue", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pymailer: error: cannot connect to database mail on 127.0.0.1:")
    assert "hunter2" not in err
    assert err.count("\n") == 1


def test_dbMigrateNeedsPostgreSQL(tmp_path, capsys):
    """
    `db migrate` on the embedded backend says there is nothing to do and
    why: otherwise an administrator would wonder whether SQLite needs it.
    """
    from pymailer.cli import main

    conf = tmp_path / "pymailer.toml"
    conf.write_text('hostname = "mail.example.org"\ndata_dir = "data"\n')
    assert main(["--config", str(conf), "db", "migrate"]) == 1
    assert "nothing to migrate" in capsys.readouterr().err


def test_adminCommandsOnTheSharedDatabase(cli, postgresqlDSN):
    """
    `domain add`, `user add` and `queue list` work on the PostgreSQL
    database, and what they write is in that database, not in data_dir:
    otherwise users added on one node would not exist on the others.
    """
    from pymailer.auth.directory_pg import PostgreSQLAccountDirectory
    from pymailer.queue.spool_pg import PostgreSQLSpool
    from tests.queue_contract import enqueue

    assert cli("db", "migrate")[0] == 0
    assert cli("domain", "add", "example.org")[0] == 0
    assert cli("user", "add", "--password-stdin", "bob@example.org", stdin="secret\n")[0] == 0
    pool = openPool(StorageConfig("postgresql", postgresqlDSN, 1))
    try:
        assert PostgreSQLAccountDirectory(pool).listUsers() == ["bob@example.org"]
        qid = enqueue(PostgreSQLSpool(pool))
    finally:
        pool.close()
    code, out, err = cli("user", "list")
    assert (code, out) == (0, "bob@example.org\n")
    code, out, err = cli("queue", "list")
    assert code == 0 and qid in out and "alice@example.org" in out
    assert cli("queue", "hold", qid)[0] == 0
    code, out, err = cli("queue", "list")
    assert "hold" in out


def test_withoutPsycopgOneLine(tmp_path, capsys, monkeypatch):
    """
    Without the optional dependency, a command on backend = "postgresql"
    says what to install: otherwise the administrator gets an ImportError
    traceback.
    """
    import sys

    from pymailer.cli import main

    monkeypatch.setitem(sys.modules, "psycopg", None)
    conf = tmp_path / "pymailer.toml"
    conf.write_text('hostname = "mail.example.org"\ndata_dir = "data"\n[storage]\n'
                    'backend = "postgresql"\ndsn = "postgresql:///mail"\n')
    assert main(["--config", str(conf), "user", "list"]) == 1
    assert capsys.readouterr().err == (
        "pymailer: error: [storage] backend = \"postgresql\" needs psycopg 3 and"
        " psycopg_pool: pip install 'pymailer[postgresql]'\n")


def test_notUTF8Refused(postgresql, postgresqlDSN):
    """
    A database that cannot store UTF-8 is refused by `db migrate` with the
    way to make one: otherwise international addresses (RFC 6531) fail
    later, one user at a time.
    """
    import uuid

    name = "latin_" + uuid.uuid4().hex[:8]
    postgresql.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' TEMPLATE template0")
    try:
        with connect(postgresql.dsn(name)) as db:
            with pytest.raises(SchemaError, match="encoding is LATIN1; pymailer needs UTF8"):
                migrate(db)
    finally:
        postgresql.dropDatabase(name)


def test_listsInCodePointOrder(postgresql):
    """
    Users list in code-point order even in a database whose locale sorts
    otherwise (ICU's English ignores "." and "_" at first), as the SQLite
    directory lists them: otherwise `pymailer user list` and the web admin
    order users differently on each backend.
    """
    import uuid

    from pymailer.auth.directory_pg import PostgreSQLAccountDirectory

    name = "icu_" + uuid.uuid4().hex[:8]
    postgresql.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"
                       " LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    try:
        dsn = postgresql.dsn(name)
        with connect(dsn) as db:
            migrate(db)
        pool = openPool(StorageConfig("postgresql", dsn, 1))
        try:
            d = PostgreSQLAccountDirectory(pool)
            d.addDomain("example.org")
            addresses = ["a_c@example.org", "ab@example.org", "a.d@example.org",
                         "zé@example.org", "z@example.org", "Éa@example.org"]
            for address in addresses:
                d.addUser(address, "$argon2id$x")
            assert d.listUsers() == sorted(d.listUsers())
            assert len(d.listUsers()) == 6
        finally:
            pool.close()
    finally:
        postgresql.dropDatabase(name)


def test_dkimKeysInTheSharedDatabase(cli, postgresqlDSN, tmp_path):
    """
    `dkim keygen` on the PostgreSQL backend keeps the keys in the database,
    not in data_dir, refuses to replace them without --force, and `dns`
    (so the signer, which reads them the same way) finds them: otherwise
    each node would sign with a key of its own that DNS does not publish.
    """
    assert cli("db", "migrate")[0] == 0
    code, out, err = cli("dkim", "keygen", "example.org", "--selector", "k1")
    assert code == 0 and "made in the database" in out, err
    records = [line for line in out.splitlines() if "._domainkey." in line]
    assert [r.split()[0] for r in records] == ["k1._domainkey.example.org.",
                                               "k1-ed25519._domainkey.example.org."]
    assert not (tmp_path / "data" / "dkim").exists()
    code, out, err = cli("dkim", "keygen", "example.org", "--selector", "k1")
    assert code == 1 and "exists already" in err
    code, out, err = cli("dns", "example.org")
    assert all(record in out.splitlines() for record in records)


def test_expungeFindsDeletedMessagesByIndex(postgresqlDSN):
    """
    If this fails, every EXPUNGE on the shared database reads each message
    row of the mailbox while it holds the mailbox's row lock, and every
    other node's APPEND and STORE into that mailbox waits behind it.
    """
    from pymailer.store.postgresql import _translate
    from pymailer.store.sqlite import DELETED_ROWS

    with connect(postgresqlDSN) as db:
        migrate(db)
        db.execute("SET enable_seqscan = off")  # an empty table: any plan is cheap
        plan = " ".join(row[0] for row in db.execute("EXPLAIN " + _translate(DELETED_ROWS),
                                                     (1,)))
    assert "messagesdeleted" in plan, plan
