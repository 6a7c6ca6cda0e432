"""
C{pymailer queue show} on every queue backend: the file spool and the
PostgreSQL queue (a throwaway cluster, L{daemons.PostgreSQL}).  The command
works through L{pymailer.interfaces.ISpool} only, so it shows the same on
both, and an envelope the backend cannot read is shown as stored.
"""

import json
import time

import pytest

from pymailer import config as configModule
from pymailer.envelope import Envelope, Recipient
from pymailer.queue.backend import openSpool

DATA = b"From: alice@example.org\r\nTo: bob@remote.test\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.fixture(params=["files", "postgresql"])
def confExtra(request):
    if request.param == "files":
        return ""
    dsn = request.getfixturevalue("postgresqlPool").conninfo  # a migrated database
    return f'[storage]\nbackend = "postgresql"\ndsn = "{dsn}"\npool_size = 2\n'


@pytest.fixture
def spool(conf):
    """The queue the config names, as the server opens it."""
    from pymailer.pg.pool import closePools

    yield openSpool(configModule.load(conf))
    closePools()


def accept(spool):
    writer = spool.newMessage()
    writer.write(DATA)
    writer.commit(Envelope(
        queueId=writer.queueId, sender="alice@example.org",
        recipients=(Recipient(0, "bob@remote.test", attempts=1,
                              lastError="451 4.4.1 Connection refused"),),
        receivedAt=time.time() - 600, size=len(DATA)))
    return writer.queueId


def storeEnvelope(spool, queueId, raw):
    """Overwrite what the backend keeps as C{queueId}'s envelope (damage)."""
    if hasattr(spool, "pool"):
        with spool.pool.connection() as db:
            db.execute("UPDATE queue SET envelope = %s WHERE queue_id = %s", (raw, queueId))
    else:
        with open(spool.envelopePath(spool.find(queueId), queueId), "wb") as f:
            f.write(raw)


def test_show_envelope_and_headers(cli, spool):
    """
    If this fails, `pymailer queue show` cannot show a message of this
    queue backend, or shows its body: the admin sees who, to whom, why it
    waits and what it is, without reading the mail.
    """
    qid = accept(spool)
    code, out, err = cli("queue", "show", qid)
    assert code == 0 and err == ""
    assert out.startswith(f"queue id: {qid}\nstate: incoming\nenvelope:\n{{\n")
    end = out.index("\n}\n") + 2
    envelope = json.loads(out[out.index("{"):end])
    assert envelope["sender"] == "alice@example.org"
    assert envelope["recipients"][0]["lastError"] == "451 4.4.1 Connection refused"
    assert "version" not in envelope  # how the backend stores it is not shown
    assert out[end:].startswith("\nheaders (first 40 lines at most):\n")
    assert "Subject: hello" in out[end:] and "body" not in out[end:]


@pytest.mark.parametrize("raw", [b"{not json", b'{"sender": "x"}', b"\x1b[2J"])
def test_unreadable_envelope_shown_as_stored(cli, spool, raw):
    """
    If this fails, an envelope the server cannot read (corrupt, or JSON that
    is no envelope) is shown as if it were fine, or the command fails on it,
    or a terminal escape in it reaches the admin's terminal.
    """
    qid = accept(spool)
    storeEnvelope(spool, qid, raw)
    code, out, err = cli("queue", "show", qid)
    assert code == 0 and err == ""
    shown = raw.decode("utf-8", "replace").replace("\x1b", "?")
    assert f"\nenvelope (unreadable, shown as stored):\n{shown}\nheaders" in out
