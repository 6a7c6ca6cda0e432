"""
IMAP limits and stability end to end, against a real twistd: 50 MB
messages in and out with bounded memory, literals over the limit refused
unread, and UIDs that survive a restart and other Maildir tools.

Big messages are streamed from a generator (about 1 MB at a time) on both
sides and compared by SHA-256, never built whole.  Memory is the server's
peak RSS (C{VmHWM} in C{/proc/PID/status}), reset to the current RSS through
C{/proc/PID/clear_refs} just before the big transfer: the login before it
runs argon2id (64 MiB by design), which would otherwise set the peak.
"""

import hashlib
import os
import re
import shutil

import pytest
from imapclient import IMAPClient

from imapwire import Wire
from mailserver import DOMAIN, MailServer, PASSWORD, readVm

MB = 1000 * 1000
MiB = 1024 * 1024
BIG = 50 * MB
MAX_MESSAGE = 60 * MB       # the server's limit in this module
APPEND_GROWTH = 20 * MiB    # "much less than the 50 MB message"
FETCH_GROWTH = 20 * MiB     # "not held twice": far under 100 MB, even under one copy


def startServer(root, sections=()):
    if shutil.disk_usage(root).free < 500 * MB:
        pytest.skip("needs 500 MB of free disk")
    s = MailServer(root, roles=("imap",), smtp={"max_message_size": MAX_MESSAGE},
                   sections={"auth": {"allow_plaintext_on_loopback": True,
                                      "failure_delay": 0}, **dict(sections)})
    s.provision(users=())
    s.start()
    return s


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = startServer(tmp_path_factory.mktemp("imaplimits"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def maildirServer(tmp_path_factory):
    """The same server on the Maildir backend, for outside Maildir tools."""
    s = startServer(tmp_path_factory.mktemp("imaplimitsmaildir"),
                    {"storage": {"backend": "maildir"}})
    yield s
    s.stop()


_users = iter(range(1000))


def newUser(server):
    """A user of the test's own: its INBOX holds only what the test puts there."""
    user = f"limits{next(_users)}@{DOMAIN}"
    server.addUser(user)
    return user


def store(server):
    return server.store()


def client(server, user):
    c = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=60)
    c.login(user, PASSWORD)
    return c


def wire(server, user):
    w = Wire(server.ports["imap"], timeout=60)
    _, ok = w.command(f'LOGIN {user} "{PASSWORD}"')
    assert ok.split()[1] == b"OK", ok
    return w


def resetPeak(server):
    """Make VmHWM the current RSS (Linux clear_refs 5); @return: it."""
    with open(f"/proc/{server.pid}/clear_refs", "w") as f:
        f.write("5")
    return server.peakRSS()


def bigChunks(size=BIG, subject="big"):
    """
    The octets of a C{size}-octet message, about 1 MiB at a time: the same
    octets on every call; each block of 72-octet lines is numbered, so a lost,
    doubled or swapped block changes the digest.
    """
    head = (f"From: <sender@example.net>\r\nTo: <someone@{DOMAIN}>\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{subject}@example.net>\r\n\r\n").encode()
    yield head
    left = size - len(head)
    filler = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"
    block = 0
    while left > 0:
        lines = b"".join(b"%06d " % block + b"%03d " % n + filler for n in range(14563))
        piece = lines[:left]
        left -= len(piece)
        block += 1
        yield piece


def bigDigest(size=BIG, subject="big"):
    digest = hashlib.sha256()
    for chunk in bigChunks(size, subject):
        digest.update(chunk)
    return digest.hexdigest()


class ChunkReader:
    """A file-like C{read(n)} over an iterator of chunks (for the store)."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.buffer = b""

    def read(self, n=-1):
        while (n < 0 or len(self.buffer) < n) and (chunk := next(self.chunks, None)):
            self.buffer += chunk
        if n < 0:
            n = len(self.buffer)
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


def contentDigest(f):
    digest = hashlib.sha256()
    while chunk := f.read(MiB):
        digest.update(chunk)
    return digest.hexdigest()


def sampleRSS(server, peak):
    rss = readVm(server.pid, "VmRSS")
    return max(peak, rss or 0)


# -- 50 MB in and out ---------------------------------------------------------


def test_append_50mb_streamed_to_disk(server):
    """
    A client saving a 50 MB message (a big attachment in Sent or Drafts)
    gets APPEND OK, the message lands byte-exact in the Maildir, and the
    server's peak RSS grows by much less than the message; if this fails,
    big attachments cost their size in server memory per client, and a few
    at once exhaust it.
    """
    user = newUser(server)
    w = wire(server, user)
    w.command("SELECT INBOX")
    baseline = resetPeak(server)
    w.sock.sendall(b"a1 APPEND INBOX (\\Seen) {%d}\r\n" % BIG)
    assert w.file.readline().startswith(b"+ ")
    sampled = 0
    for chunk in bigChunks():
        w.sock.sendall(chunk)
        sampled = sampleRSS(server, sampled)
    w.sock.sendall(b"\r\n")
    while True:
        line = w.file.readline()
        if line.startswith(b"a1 "):
            break
    peak = server.peakRSS()
    assert re.match(rb"a1 OK \[APPENDUID \d+ 1\]", line), line
    w.command("LOGOUT")
    w.close()
    growth = peak - baseline
    print(f"\nAPPEND of {BIG / MB:.0f} MB: server VmHWM {baseline / MiB:.1f} MiB"
          f" -> {peak / MiB:.1f} MiB (+{growth / MiB:.1f} MiB); VmRSS sampled"
          f" at most {sampled / MiB:.1f} MiB")
    box = store(server).mailbox(user)
    (info,) = box.messages()
    assert info.size == BIG
    with box.openMessage(info.uid) as content:
        assert contentDigest(content) == bigDigest()
    assert growth < APPEND_GROWTH


def test_fetch_50mb_not_held_twice(server):
    """
    A mail client downloading a 50 MB message (BODY[], which also sets
    \\Seen and so renames the file mid-download) gets every octet
    unchanged, while the server's peak RSS grows by far less than the
    message; if this fails, each download of a big message costs its size
    (or twice it) in server memory.
    """
    user = newUser(server)
    store(server).deliver(user, b"", ChunkReader(bigChunks(subject="fetchme")))
    w = wire(server, user)
    w.command("SELECT INBOX")
    baseline = resetPeak(server)
    w.sock.sendall(b"f1 FETCH 1 (BODY[])\r\n")
    head = w.file.readline()
    m = re.match(rb"\* 1 FETCH \(.*BODY\[\] \{(\d+)\}\r\n$", head)
    assert m, head
    size = int(m[1])
    digest = hashlib.sha256()
    left, sampled = size, 0
    while left:
        chunk = w.file.read(min(left, MiB))
        assert chunk, "connection closed mid-message"
        digest.update(chunk)
        left -= len(chunk)
        sampled = sampleRSS(server, sampled)
    rest = w.file.readline()
    tagged = rest
    while not tagged.startswith(b"f1 "):
        tagged = w.file.readline()
    peak = server.peakRSS()
    assert tagged.startswith(b"f1 OK"), tagged
    growth = peak - baseline
    print(f"\nFETCH of {size / MB:.0f} MB: server VmHWM {baseline / MiB:.1f} MiB"
          f" -> {peak / MiB:.1f} MiB (+{growth / MiB:.1f} MiB); VmRSS sampled"
          f" at most {sampled / MiB:.1f} MiB")
    assert size == BIG
    assert digest.hexdigest() == bigDigest(subject="fetchme")
    untagged, ok = w.command("FETCH 1 (FLAGS)")
    assert ok.split()[1] == b"OK"
    assert b"\\Seen" in b"".join(untagged), untagged
    w.command("LOGOUT")
    w.close()
    assert growth < FETCH_GROWTH


# -- literals over the limit ------------------------------------------------------


def test_append_literal_over_limit_refused_before_reading(server):
    """
    A client announcing a message over the size limit is told NO [TOOBIG]
    at once, before it sends any of it, and the session goes on; if this
    fails, a client (or attacker) can make the server read and store
    arbitrarily large messages, or a mail client hangs uploading a message
    that will be refused anyway.
    """
    user = newUser(server)
    w = wire(server, user)
    w.sock.sendall(b"a1 APPEND INBOX {%d}\r\n" % (MAX_MESSAGE + 1))
    answer = w.file.readline()
    assert answer.startswith(b"a1 NO [TOOBIG]"), answer
    _, ok = w.command("NOOP")
    assert ok.split()[1] == b"OK"
    untagged, ok = w.command("STATUS INBOX (MESSAGES)")
    assert b"(MESSAGES 0)" in b"".join(untagged), untagged
    w.command("LOGOUT")
    w.close()
    assert server.messages(user) == []


def test_non_synchronizing_literal_over_limit_closes(server):
    """
    A LITERAL+ ({n+}) message over the limit, whose octets follow at once,
    is refused with NO [TOOBIG] and the connection is closed rather than
    read; if this fails, the server reads (and perhaps stores) the whole
    oversized upload.
    """
    user = newUser(server)
    w = wire(server, user)
    w.sock.sendall(b"a1 APPEND INBOX {%d+}\r\n" % (MAX_MESSAGE + 1))
    answer = w.file.readline()
    assert answer.startswith(b"a1 NO [TOOBIG]"), answer
    assert w.file.readline().startswith(b"* BYE")
    assert w.file.readline() == b""  # closed by the server
    w.close()
    assert server.messages(user) == []


# -- UIDs that last ---------------------------------------------------------------


def uidMap(c):
    """C{{uid: Message-ID}} of the selected mailbox."""
    data = c.fetch(c.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    return {uid: d[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].strip() for uid, d in data.items()}


def deliverSimple(server, user, tag):
    message = (f"From: <sender@example.net>\r\nSubject: {tag}\r\n"
               f"Message-ID: <{tag}@example.net>\r\n\r\nbody of {tag}\r\n").encode()
    store(server).deliver(user, b"", ChunkReader([message]))


def test_uids_and_uidvalidity_survive_restart(server):
    """
    After the server restarts on the same data, every message keeps its
    UID and the mailbox its UIDVALIDITY, and an expunged UID is never handed
    out again; if this fails, mail clients (Thunderbird, mbsync, phones)
    discard their caches and download every message again after each
    restart, or worse, attach old flags and bodies to the wrong messages.
    """
    user = newUser(server)
    for n in range(4):
        deliverSimple(server, user, f"restart{n}")
    c = client(server, user)
    c.select_folder("INBOX")
    c.append("INBOX", b"Subject: appended\r\nMessage-ID: <appended@x>\r\n\r\nx\r\n")
    second = sorted(c.search(["ALL"]))[1]
    c.delete_messages([second])
    c.expunge()
    c.add_flags([min(c.search(["ALL"]))], [b"\\Flagged"])
    before = c.folder_status("INBOX", ["UIDVALIDITY", "UIDNEXT"])
    uids = uidMap(c)
    flagged = c.search(["FLAGGED"])
    c.logout()
    assert len(uids) == 4

    server.stop()
    server.start()

    c = client(server, user)
    c.select_folder("INBOX")
    after = c.folder_status("INBOX", ["UIDVALIDITY", "UIDNEXT"])
    assert after == before
    assert uidMap(c) == uids
    assert c.search(["FLAGGED"]) == flagged
    result = c.append("INBOX", b"Subject: after\r\nMessage-ID: <after@x>\r\n\r\nx\r\n")
    newUid = int(result.split()[2].rstrip(b"]"))
    assert newUid == before[b"UIDNEXT"] and newUid > max(uids) and newUid != second
    c.logout()


def test_uids_survive_renames_by_another_maildir_tool(maildirServer):
    """
    A Maildir tool working beside the server (mutt, a sync script) that
    marks messages read by renaming them (X:2, -> X:2,S), moves a new
    message from new/ to cur/ with :2,S, or moves one back to new/ (mark
    as unread), changes flags but no UID: a session that is open sees the
    new flags, and a new session sees the same UIDs; if this fails, mail
    clients see messages vanish and reappear as new ones (duplicates,
    lost flags) whenever another tool touches the Maildir.
    """
    server = maildirServer  # the tool works on the Maildir backend's files
    user = newUser(server)
    for n in range(3):
        deliverSimple(server, user, f"tool{n}")
    watcher = client(server, user)
    watcher.select_folder("INBOX")
    validity = watcher.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    uids = uidMap(watcher)
    byId = {mid: uid for uid, mid in uids.items()}
    maildir = server.maildir(user)
    cur, new = maildir / "cur", maildir / "new"

    def named(tag):
        (path,) = [p for p in server.maildirFiles(user) if tag in p.read_bytes().decode()]
        return path

    # Marked read by a tool: cur/X:2, -> cur/X:2,S.
    read = named("tool0@")
    os.rename(read, cur / (read.name.split(":")[0] + ":2,S"))
    # Marked unread by a tool the mutt way: back to new/, no info.
    watcher.add_flags([byId[b"Message-ID: <tool1@example.net>"]], [b"\\Seen"])
    unread = named("tool1@")
    os.rename(unread, new / unread.name.split(":")[0])
    # A new delivery the tool read before the server saw it: new/ -> cur/ ":2,S".
    deliverSimple(server, user, "tool3")
    (fresh,) = [n for n in os.listdir(new) if n != unread.name.split(":")[0]]
    os.rename(new / fresh, cur / (fresh + ":2,S"))

    # The open session learns the flag changes and the new message.
    watcher.noop()
    flags = watcher.get_flags(list(uids))
    assert b"\\Seen" in flags[byId[b"Message-ID: <tool0@example.net>"]]
    assert b"\\Seen" not in flags[byId[b"Message-ID: <tool1@example.net>"]]
    assert b"\\Seen" not in flags[byId[b"Message-ID: <tool2@example.net>"]]
    now = uidMap(watcher)
    assert {u: m for u, m in now.items() if u in uids} == uids
    (newUid,) = set(now) - set(uids)
    assert now[newUid] == b"Message-ID: <tool3@example.net>" and newUid > max(uids)
    assert b"\\Seen" in watcher.get_flags([newUid])[newUid]
    watcher.logout()

    # A new session sees the same UIDs and UIDVALIDITY.
    c = client(server, user)
    c.select_folder("INBOX")
    assert c.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"] == validity
    assert uidMap(c) == now
    c.logout()
