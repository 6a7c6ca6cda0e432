"""
C{pymailer migrate-storage} end to end: an installation built by a real
server on the embedded backend (mail over SMTP, folders and flags over
IMAP, a forward queued for a remote domain and held, a DKIM key, a quota)
is moved into a throwaway PostgreSQL cluster; then the same server,
reconfigured for C{backend = "postgresql"}, serves the same mail over
IMAP and POP3 with real clients, and a node with an empty data directory
signs with the same DKIM key.
"""

import hashlib
import poplib
import smtplib

import pytest
from imapclient import IMAPClient

from mailserver import PASSWORD, insecureTLS, waitFor

FOLDERS = ("INBOX", "Projects")


def send(server, recipients, subject):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as s:
        s.sendmail("sender@client.example", recipients,
                   f"From: sender@client.example\r\nSubject: {subject}\r\n\r\n{subject}\r\n")


def imap(server, user="alice@example.org"):
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                   ssl_context=insecureTLS(), timeout=30)
    c.login(user, PASSWORD)
    c.enable("CONDSTORE")
    return c


def synced(c):
    """What a client that has synced keeps: per folder its state and messages."""
    state = {}
    for folder in FOLDERS:
        info = c.select_folder(folder, readonly=True)
        messages = c.fetch(c.search("ALL"), ["UID", "FLAGS", "INTERNALDATE", "MODSEQ", "EMAILID",
                                   "BODY.PEEK[]"]) if info[b"EXISTS"] else {}
        state[folder] = (
            info[b"UIDVALIDITY"], info[b"UIDNEXT"], info[b"HIGHESTMODSEQ"],
            {uid: (sorted(d[b"FLAGS"]), d[b"INTERNALDATE"], d[b"MODSEQ"], d[b"EMAILID"],
                   hashlib.sha256(d[b"BODY[]"]).hexdigest()) for uid, d in messages.items()})
    return state


def maildrop(server, user="bob@example.org"):
    """What a POP3 client sees: STAT, UIDL and every message."""
    client = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=insecureTLS(),
                             timeout=30)
    client.user(user)
    client.pass_(PASSWORD)
    count, size = client.stat()
    seen = ((count, size), client.uidl()[1],
            [client.retr(n)[1] for n in range(1, count + 1)])
    client.quit()
    return seen


def dkimRecords(server):
    return [line for line in server.admin("dns", "example.org").stdout.splitlines()
            if "._domainkey." in line]


@pytest.mark.parametrize("sharedBlobs", [False, True], ids=["content-in-database",
                                                           "content-in-shared-directory"])
def test_migratedServerServesTheSameMail(makeMailServer, postgresqlDSN, tmp_path, sharedBlobs):
    """
    After migrate-storage and a restart on PostgreSQL, an IMAP client that
    had synced finds the same UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, UIDs,
    flags, dates and EMAILIDs, and nothing changed since its last sync;
    POP3 lists the same messages; the old password logs in; the held
    forward is still in the queue, held; and another node with nothing in
    its data directory publishes (so signs with) the same DKIM keys.  The
    same with the content moved to a shared directory (--blobs, [storage]
    blobs).
    Otherwise users would re-download their mail or lose it, and mail
    waiting in the queue would vanish at the move.
    """
    server = makeMailServer("node", roles=("imaps", "pop3s"))
    server.admin("dkim", "keygen", "example.org", "--selector", "k1")
    server.admin("user", "quota", "bob@example.org", "5M")
    server.admin("alias", "add", "fwd@example.org", "someone@remote.example")
    for i in range(3):
        send(server, ["alice@example.org"], f"alice {i}")
    for i in range(2):
        send(server, ["bob@example.org"], f"bob {i}")
    server.waitForMessages("alice", 3)
    server.waitForMessages("bob", 2)
    send(server, ["fwd@example.org"], "for remote")
    queueId = waitFor(lambda: next((line.split()[0] for line in server.admin(
        "queue", "list").stdout.splitlines() if "remote.example" in line), None),
        message="the forward in the queue")
    # The test servers' DNS fails: the forward waits, deferred; held now.
    waitFor(lambda: server.admin("queue", "hold", queueId, check=False).returncode == 0,
            message="the forward held")

    c = imap(server)
    c.create_folder("Projects")
    c.subscribe_folder("Projects")
    c.select_folder("INBOX")
    c.add_flags([1], ["\\Flagged", "$Work"])
    c.copy([2], "Projects")
    c.delete_messages([3])
    c.expunge()
    before = synced(c)
    c.logout()
    bobBefore = maildrop(server)
    keysBefore = dkimRecords(server)
    assert any(line.startswith("k1._domainkey.") for line in keysBefore)

    running = server.admin("migrate-storage", "--to", "postgresql", postgresqlDSN, check=False)
    assert running.returncode == 1 and "a pymailer server is running on" in running.stderr
    server.stop()
    blobs = ("--blobs", str(tmp_path / "shared")) if sharedBlobs else ()
    moved = server.admin("migrate-storage", "--to", "postgresql", postgresqlDSN, *blobs).stdout
    assert "directory: 1 domains, 2 users" in moved
    assert "queue: 1 messages: 1 hold" in moved
    assert "DKIM keys: 2" in moved and "verified:" in moved
    server.sections["storage"] = {"backend": "postgresql", "dsn": postgresqlDSN,
                                  "pool_size": 3}
    if sharedBlobs:
        server.sections["storage"]["blobs"] = str(tmp_path / "shared")
    server.writeConfig()
    server.start()

    c = imap(server)
    assert synced(c) == before
    assert "Projects" in [name for _, _, name in c.list_sub_folders()]
    for folder in FOLDERS:
        info = c.select_folder(folder, readonly=True)
        changed = c.fetch(c.search("ALL"), ["FLAGS"], modifiers=[
            f"CHANGEDSINCE {info[b'HIGHESTMODSEQ']}"]) if info[b"EXISTS"] else {}
        assert changed == {}, folder
    c.logout()
    assert maildrop(server) == bobBefore
    listing = server.admin("queue", "list").stdout
    assert queueId in listing and "hold" in listing
    # New mail continues the UIDs where they were.
    send(server, ["alice@example.org"], "after the move")
    c = imap(server)
    c.select_folder("INBOX")
    waitFor(lambda: c.noop() and c.search(["SUBJECT", "after the move"]),
            message="the new message")
    assert c.search(["SUBJECT", "after the move"]) == [before["INBOX"][1]]
    if sharedBlobs:  # the moved content and the new message's are files there
        new = c.fetch([before["INBOX"][1]], ["BODY.PEEK[]"])[before["INBOX"][1]][b"BODY[]"]
        for digest in [hashlib.sha256(new).hexdigest()] + [
                m[4] for folder in before.values() for m in folder[3].values()]:
            assert (tmp_path / "shared" / digest[:2] / digest[2:]).exists()
    c.logout()

    other = makeMailServer("other", provision=False, start=False, sections={
        "storage": {"backend": "postgresql", "dsn": postgresqlDSN}})
    assert dkimRecords(other) == keysBefore
    assert "bob@example.org" in other.admin("user", "list").stdout
