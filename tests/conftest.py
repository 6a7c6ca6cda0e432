"""
Fixtures that start real pymailer servers (twistd subprocesses) on
127.0.0.1 for the end-to-end and crash tests.  The helper itself lives in
L{mailserver} so that C{bench/} can use it without pytest.
"""

import io
import sys

import pytest

from pymailer.cli import main

from mailserver import MailServer


@pytest.fixture(scope="session")
def postgresql():
    """
    One throwaway PostgreSQL cluster per test process (L{daemons.PostgreSQL});
    skipped without PostgreSQL or psycopg, except in CI, where it fails.
    """
    from daemons import PostgreSQL

    with PostgreSQL() as cluster:
        yield cluster


@pytest.fixture
def postgresqlDSN(postgresql):
    """The DSN of an empty database of this test's own, dropped after it."""
    name = postgresql.newDatabase()
    yield postgresql.dsn(name)
    postgresql.dropDatabase(name)


@pytest.fixture
def postgresqlPool(postgresqlDSN):
    """
    A connection pool (as the server makes it) on this test's database,
    migrated to today's schema as `pymailer db migrate` does.
    """
    from pymailer.config import StorageConfig
    from pymailer.pg.pool import connect, openPool
    from pymailer.pg.schema import migrate

    with connect(postgresqlDSN) as db:
        migrate(db)
    pool = openPool(StorageConfig("postgresql", postgresqlDSN, 4))
    yield pool
    pool.close()


@pytest.fixture
def makeMailServer(tmp_path):
    """
    A factory: C{makeMailServer(name="server", provision=True, start=True,
    **MailServer options)} -> a L{MailServer} under C{tmp_path/name}, with
    the domain example.org and users alice and bob added.  Every server it
    made is stopped (SIGKILL if SIGTERM does not work) and reaped at
    teardown, whatever the test did.
    """
    servers = []

    def make(name="server", provision=True, start=True, **options):
        server = MailServer(tmp_path / name, **options)
        servers.append(server)
        if provision:
            server.provision()
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        try:
            server.stop()
        finally:
            server.kill9()


@pytest.fixture
def mailserver(makeMailServer):
    """A running server with example.org, alice and bob."""
    return makeMailServer()


@pytest.fixture
def confExtra():
    """More config text after hostname and data_dir (a test module may override)."""
    return ""


@pytest.fixture
def conf(tmp_path, confExtra):
    """A config file with data in C{tmp_path/data}, for the admin command."""
    path = tmp_path / "pymailer.toml"
    path.write_text('hostname = "mail.example.org"\ndata_dir = "data"\n' + confExtra)
    return path


@pytest.fixture
def cli(conf, capsys, monkeypatch):
    """
    Run C{pymailer --config conf ARGS} in-process.
    @return: C{(exitCode, stdout, stderr)}.
    """
    def run(*args, stdin=""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--config", str(conf), *args])
        out, err = capsys.readouterr()
        return code, out, err
    return run
