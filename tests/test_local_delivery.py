"""
Local delivery from the queue into Maildir: trace headers on top, the body
byte-exact, aliases fanned out, and at most once after a crash.
"""

import os

import pytest

from pymailer.auth.directory import SQLiteAccountDirectory
from pymailer.auth.passwords import hashPassword
from pymailer.delivery.local import LocalDeliveryAgent
from pymailer.delivery.router import Router
from pymailer.envelope import Envelope, Recipient, Session
from pymailer.store.maildir import MaildirStore
from pymailer.testing import ClockReactor, SynchronousThreadPool

BODY = b"Subject: hi\r\n\r\n.dot line\r\nGr\xc3\xbc\xc3\x9fe\r\n"


@pytest.fixture
def setup(tmp_path):
    directory = SQLiteAccountDirectory(tmp_path / "accounts.sqlite3")
    directory.addDomain("example.org")
    for u in ("alice@example.org", "bob@example.org"):
        directory.addUser(u, hashPassword("x"))
    directory.addAlias("team@example.org", ["alice@example.org", "bob@example.org"])
    store = MaildirStore(tmp_path / "mail", "mx.example.org")
    agent = LocalDeliveryAgent(
        store, Router(directory), "mx.example.org", ClockReactor(), SynchronousThreadPool()
    )
    (tmp_path / "data").write_bytes(BODY)
    return agent, store, tmp_path


def envelope(*rcpts):
    return Envelope(
        queueId="0123abc-1-0",
        sender="sender@remote.test",
        recipients=tuple(Recipient(i, a) for i, a in enumerate(rcpts)),
        receivedAt=1795400000.0,
        session=Session(helo="client.test", clientAddress="192.0.2.1", protocol="ESMTP"),
    )


def deliver(agent, tmp_path, env, recovering=False):
    results = []
    agent.deliver(
        env, list(env.recipients), lambda: open(tmp_path / "data", "rb"), recovering
    ).addCallback(results.append)
    return results[0]


def mailFiles(tmp_path, user):
    base = tmp_path / "mail" / "example.org" / user
    return [base / d / n for d in ("new", "cur") for n in os.listdir(base / d)]


def test_trace_headers_and_exact_body(setup):
    """The delivered file starts with Return-Path and Received, then the message byte-exact."""
    agent, store, tmp_path = setup
    results = deliver(agent, tmp_path, envelope("alice+news@example.org"))
    assert results[0].ok
    (path,) = mailFiles(tmp_path, "alice")
    data = path.read_bytes()
    lines = data.split(b"\r\n")
    assert lines[0] == b"Return-Path: <sender@remote.test>"
    assert lines[1] == b"Received: from client.test (unknown [192.0.2.1])"
    assert lines[2] == b"\tby mx.example.org (pymailer) with ESMTP id 0123abc-1-0"
    assert lines[3].startswith(b"\tfor <alice+news@example.org>; ")
    assert data.endswith(b"\r\n" + BODY)


def test_alias_fans_out(setup):
    """An alias recipient puts one copy in each target's mailbox."""
    agent, store, tmp_path = setup
    deliver(agent, tmp_path, envelope("team@example.org"))
    assert len(mailFiles(tmp_path, "alice")) == 1
    assert len(mailFiles(tmp_path, "bob")) == 1


def test_recovery_does_not_duplicate(setup):
    """After a crash, a delivery that had completed is not made a second time."""
    agent, store, tmp_path = setup
    env = envelope("alice@example.org", "bob@example.org")
    deliver(agent, tmp_path, env)
    results = deliver(agent, tmp_path, env, recovering=True)
    assert all(r.ok for r in results.values())
    assert len(mailFiles(tmp_path, "alice")) == 1
    assert len(mailFiles(tmp_path, "bob")) == 1


def test_user_removed_after_acceptance_fails_permanently(setup):
    """A recipient whose account vanished before delivery fails with 550 5.1.1."""
    agent, store, tmp_path = setup
    agent.router.directory.removeUser("bob@example.org")
    results = deliver(agent, tmp_path, envelope("bob@example.org"))
    assert (results[0].ok, results[0].temporary, results[0].enhanced) == (False, False, "5.1.1")


def test_mailbox_write_error_is_temporary(setup, monkeypatch):
    """A disk error writing the mailbox defers the recipient (retry), never bounces it."""
    agent, store, tmp_path = setup

    def broken(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "deliver", broken)
    results = deliver(agent, tmp_path, envelope("alice@example.org"))
    assert results[0].temporary and results[0].code == 451


def test_unforeseen_failure_keeps_the_others_results(setup, monkeypatch):
    """
    A delivery that fails with an error nobody foresaw defers that
    recipient only: the one delivered before it is reported delivered, or
    the queue's retry gives it a second copy.
    """
    agent, store, tmp_path = setup
    real = store.deliver

    def failsForBob(user, *a, **kw):
        if user == "bob@example.org":
            raise RuntimeError("a bug")
        return real(user, *a, **kw)

    monkeypatch.setattr(store, "deliver", failsForBob)
    results = deliver(agent, tmp_path, envelope("alice@example.org", "bob@example.org"))
    assert results[0].ok
    assert results[1].temporary and not results[1].ok
    assert len(mailFiles(tmp_path, "alice")) == 1


def test_intake_delivers_local_mail_at_commit_in_one_hand_off(setup):
    """
    A message for local users only is delivered by the agent at the
    intake's commit, in the commit's one hand-off to the disk threads,
    with the routes found at RCPT (not looked up again): the committed
    envelope has every recipient delivered, both mailboxes have it, and
    the spool holds nothing.  Before, the commit only spooled it.
    """
    from pymailer.envelope import DELIVERED
    from pymailer.intake import MessageIntake
    from pymailer.queue.spool_files import Spool

    agent, store, tmp_path = setup
    lookups = []
    route = agent.router.route
    agent.router.route = lambda address: lookups.append(address) or route(address)
    hands = []
    pool = SynchronousThreadPool()
    handOff = pool.callInThreadWithCallback
    pool.callInThreadWithCallback = lambda *a, **kw: hands.append(1) or handOff(*a, **kw)
    intake = MessageIntake(agent.router, Spool(tmp_path / "queue"), ClockReactor(), pool,
                           localAgent=agent)
    rcpts = ("alice@example.org", "bob@example.org")
    intake.validateSender(Session(), "sender@remote.test", {})
    for rcpt in rcpts:
        intake.validateRecipient(Session(), "sender@remote.test", rcpt)
    message = intake.openMessage()
    message.write(BODY)
    env = envelope(*rcpts)
    env = Envelope(queueId=message.queueId, sender=env.sender, recipients=env.recipients,
                   receivedAt=env.receivedAt, session=env.session, size=len(BODY))
    del lookups[:], hands[:]
    committed = []
    message.commit(env).addCallback(committed.append)
    assert [r.state for r in committed[0].recipients] == [DELIVERED, DELIVERED]
    assert lookups == [] and len(hands) == 1
    for user in ("alice", "bob"):
        (path,) = mailFiles(tmp_path, user)
        assert path.read_bytes().endswith(b"\r\n" + BODY)
    assert os.listdir(tmp_path / "queue" / "data") == []
    assert os.listdir(tmp_path / "queue" / "incoming") == []
