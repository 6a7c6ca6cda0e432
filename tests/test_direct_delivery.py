"""
Delivery at the end of DATA (issue 14): a message for local mailboxes
only is in them when the 250 arrives, with no spool file and no second
trip through the queue; what cannot go that way (a success notice asked
for, a forward to another domain, a mailbox that cannot take it now) goes
through the queue as before.  Real servers on loopback, real clients.
"""

import re
import shutil
import smtplib
import sqlite3

from imapwire import Wire
from mailserver import PASSWORD, waitFor

ALICE = "alice@example.org"
BOB = "bob@example.org"


def send(server, recipients, subject, sender="carol@client.test", rcptOptions=()):
    """Send one message; @return: its queue id, from the 250."""
    body = f"From: <{sender}>\r\nSubject: {subject}\r\n\r\n{subject} body\r\n".encode()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=20) as client:
        client.ehlo()
        client.mail(sender)
        for recipient in recipients:
            assert client.rcpt(recipient, list(rcptOptions))[0] == 250
        code, text = client.data(body)
    assert code == 250, text
    return re.search(r"queued as (\S+)", text.decode()).group(1)


def with_subject(messages, subject):
    return [m for m in messages if f"Subject: {subject}\r\n".encode() in m]


def mailRecord(server, queueId):
    """The mail log's record of C{queueId} (C{result=... qid=...})."""
    log = server.log()
    found = re.search(rf"result=(\S+) qid={re.escape(queueId)} .*", log)
    assert found, log[-3000:]
    return found.group(0)


def storedContent(server):
    """The SQLite store's blobs: C{{id: references}}."""
    db = sqlite3.connect(f"file:{server.dataDir / 'store' / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT id, refs FROM blobs"))
    finally:
        db.close()


def test_local_message_is_in_every_inbox_at_the_250_and_stored_once(makeMailServer):
    """
    A message to two local users is in both INBOXes when the 250 arrives,
    without waiting; no spool file is left; the mail log says
    result=delivered; and the two copies are one blob in the store,
    referenced twice (the trace fields name no single recipient).  Before, the 250 came after a
    spool write and the mailboxes filled later (a second durable write),
    with one file per recipient.
    """
    server = makeMailServer()
    blobsBefore = storedContent(server)
    qid = send(server, [ALICE, BOB], "at once")
    for user in (ALICE, BOB):
        (copy,) = with_subject(server.messages(user), "at once")
        assert f" id {qid}".encode() in copy
        assert copy.startswith(b"Return-Path: <carol@client.test>\r\nReceived: ")
    assert server.queueEntries() == {}
    assert mailRecord(server, qid).startswith(
        f"result=delivered qid={qid} from=<carol@client.test> to=<{ALICE}>,<{BOB}> ")
    added = set(storedContent(server).items()) - set(blobsBefore.items())
    assert [refs for _, refs in added] == [2]
    assert re.search(rf"{re.escape(qid)}: to=<{re.escape(BOB)}> status=delivered",
                     server.log())


def test_kill9_right_after_the_250_loses_nothing(makeMailServer):
    """
    SIGKILL as soon as the 250 is read: the message is already in the
    store (read with the server dead) and in no queue, and after a
    restart it is there exactly once.  Every acknowledged message must
    survive a crash; delivered at once, nothing is left to do after it.
    """
    server = makeMailServer()
    send(server, [ALICE], "killed")
    server.kill9()
    # (The log is written in batches: the kill may take its last lines.)
    assert len(with_subject(server.messages(ALICE), "killed")) == 1
    assert server.queueEntries() == {}
    server.start()
    server.waitQueueEmpty()
    assert len(with_subject(server.messages(ALICE), "killed")) == 1


def test_mailbox_that_cannot_take_it_is_queued_the_other_gets_it_at_once(makeMailServer):
    """
    Bob's mailbox cannot be written (its Maildir tmp/ is a file): alice
    has the message at the 250, bob's copy waits in the queue (one
    envelope, alice marked delivered) and arrives, once, when his mailbox
    is repaired and the queue flushed; alice gets no second copy.
    """
    server = makeMailServer(sections={"storage": {"backend": "maildir"}})
    send(server, [ALICE, BOB], "warm up")  # both maildirs exist
    tmp = server.maildir(BOB) / "tmp"
    shutil.rmtree(tmp)
    tmp.write_bytes(b"in the way")
    qid = send(server, [ALICE, BOB], "half at once")
    assert len(with_subject(server.messages(ALICE), "half at once")) == 1
    record = mailRecord(server, qid)
    assert record.startswith(f"result=queued qid={qid} "), record
    assert f"delivered=<{ALICE}>" in record
    assert server.queueEnvelopes() != {}
    tmp.unlink()
    tmp.mkdir()
    server.admin("queue", "flush")
    waitFor(lambda: with_subject(server.messages(BOB), "half at once"), 20,
            message=lambda: server.log()[-3000:])
    server.waitQueueEmpty()
    assert len(with_subject(server.messages(ALICE), "half at once")) == 1
    assert len(with_subject(server.messages(BOB), "half at once")) == 1


def test_success_notice_requested_goes_through_the_queue(makeMailServer):
    """
    RCPT ... NOTIFY=SUCCESS (RFC 3461): the message is queued (the queue's
    reporter owes the notice), delivered, and the success report reaches
    the sender; one without it to the same user is delivered at once.
    """
    server = makeMailServer()
    plain = send(server, [BOB], "plain", sender=ALICE)
    asked = send(server, [BOB], "notify me", sender=ALICE, rcptOptions=["NOTIFY=SUCCESS"])
    assert mailRecord(server, plain).startswith("result=delivered ")
    assert mailRecord(server, asked).startswith("result=queued ")
    waitFor(lambda: with_subject(server.messages(BOB), "notify me"), 20)
    report = waitFor(lambda: with_subject(server.messages(ALICE),
                                          "Delivery Status Notification (Success)"), 20,
                     message=lambda: server.log()[-3000:])
    assert b"Action: delivered" in report[0]


def test_forward_to_another_domain_goes_through_the_queue(makeMailServer):
    """
    An alias reaching alice and an address elsewhere: queued as before
    (the forwarded copy is the relay's), alice gets hers from the queue,
    and the forward waits in it (this server's DNS answers nothing).
    """
    server = makeMailServer()
    server.admin("alias", "add", "team@example.org", ALICE, "x@remote.test")
    qid = send(server, ["team@example.org"], "to the team")
    assert mailRecord(server, qid).startswith(f"result=queued qid={qid} ")
    waitFor(lambda: with_subject(server.messages(ALICE), "to the team"), 20,
            message=lambda: server.log()[-3000:])
    waitFor(lambda: server.queueEnvelopes().get("deferred"), 20,
            message=lambda: f"the forward deferred: {server.queueEntries()}")


def test_direct_off_queues_everything(makeMailServer):
    """
    [delivery] direct = false keeps the queue path: the mail log says
    result=queued and the queue runner delivers.
    """
    server = makeMailServer(sections={"delivery": {"direct": False}})
    qid = send(server, [ALICE], "the old way")
    assert mailRecord(server, qid).startswith(f"result=queued qid={qid} ")
    waitFor(lambda: with_subject(server.messages(ALICE), "the old way"), 20)


def test_idle_session_hears_a_delivery_made_at_once(makeMailServer):
    """An IMAP client in IDLE hears EXISTS for mail delivered at the 250."""
    server = makeMailServer(roles=("imap",),
                            sections={"auth": {"allow_plaintext_on_loopback": True}})
    wire = Wire(server.ports["imap"], timeout=20)
    assert b" OK " in wire.command(f'LOGIN {ALICE} "{PASSWORD}"')[1]
    wire.command("SELECT INBOX")
    wire.sock.sendall(b"i1 IDLE\r\n")
    assert wire.file.readline().startswith(b"+")
    qid = send(server, [ALICE], "idle")
    line = wire.file.readline()
    while not line.endswith(b" EXISTS\r\n"):
        line = wire.file.readline()
    wire.sock.sendall(b"DONE\r\n")
    wire.close()
    assert mailRecord(server, qid).startswith("result=delivered ")


def test_postgresql_store_gets_it_at_the_250(makeMailServer, postgresqlDSN):
    """
    On PostgreSQL (store and queue in the database) too: the message is in
    both INBOXes when the 250 arrives, the queue holds nothing, and it
    survives a SIGKILL right after the 250.
    """
    server = makeMailServer(provision=False, start=False, sections={
        "storage": {"backend": "postgresql", "dsn": postgresqlDSN, "pool_size": 3}})
    server.admin("db", "migrate")
    server.provision()
    server.start()
    send(server, [ALICE, BOB], "on postgresql")
    server.kill9()
    for user in (ALICE, BOB):
        assert len(with_subject(server.messages(user), "on postgresql")) == 1
    assert server.admin("queue", "list").stdout == "queue is empty\n"
