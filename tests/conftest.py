"""
Fixtures that start real pymailer servers (twistd subprocesses) on
127.0.0.1 for the end-to-end and crash tests.  The helper itself lives in
L{mailserver} so that C{bench/} can use it without pytest.
"""

import pytest

from mailserver import MailServer, ServerError  # noqa: F401 (re-exported)


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
