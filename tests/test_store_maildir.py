"""
Tests for L{pymailer.store.maildir}: durability, stable UIDs across
processes and outside tools, and refusal of hostile mailbox names.  What
every store must do is in the contract suite (C{tests/store_contract.py}).
"""

import io
import multiprocessing
import os
import tracemalloc

import pytest

from pymailer.store import maildirindex
from pymailer.store.maildir import SPECIAL_USE, MaildirStore

USER = "alice@example.org"


@pytest.fixture
def store(tmp_path):
    return MaildirStore(tmp_path / "mail", "mx.example.org")


def userDir(store, user=USER):
    local, domain = user.split("@")
    return store.root / domain / local


def deliver(store, body, **kw):
    return store.deliver(USER, b"", io.BytesIO(body), **kw)


class ZeroFile:
    """A binary file of C{size} bytes that costs no memory to hold."""

    def __init__(self, size):
        self.left = size

    def read(self, n):
        n = min(n, self.left)
        self.left -= n
        return b"x" * n


def tree(path):
    return sorted(str(p) for p in path.rglob("*"))


def test_deliverByteExact(store):
    """If this fails, users receive altered mail (or lose trace headers)."""
    body = b"Subject: hi\r\n\r\n\x00\xff binary \r\n.\r\n" * 10000
    assert store.deliver(USER, b"Received: by us\r\n", io.BytesIO(body))
    new = userDir(store) / "new"
    [name] = os.listdir(new)
    assert (new / name).read_bytes() == b"Received: by us\r\n" + body
    assert name.endswith(".mx.example.org") and "P%d" % os.getpid() in name
    assert os.listdir(userDir(store) / "tmp") == []
    [info] = store.mailbox(USER).messages()
    assert info.size == len(body) + 17
    with store.mailbox(USER).openMessage(info.uid) as f:
        assert f.read() == b"Received: by us\r\n" + body


def test_deliverHostnameEscaped(tmp_path):
    """If this fails, a hostname with ':' corrupts Maildir flag parsing."""
    store = MaildirStore(tmp_path, "odd:host/name")
    deliver(store, b"x")
    [name] = os.listdir(userDir(store) / "new")
    assert name.endswith(".odd\\072host\\057name")


def test_deliverStreamsLargeMessage(store, tmp_path):
    """If this fails, a big attachment can exhaust the server's memory."""
    size = 20 * 1024 * 1024
    store.createUser(USER)
    tracemalloc.start()
    try:
        store.deliver(USER, b"X: y\r\n", ZeroFile(size))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024
    [info] = store.mailbox(USER).messages()
    assert info.size == size + 6


def test_deliverFailureLeavesNothing(store):
    """If this fails, a broken delivery leaves half a message in the box."""

    class Broken:
        def read(self, n):
            raise OSError("disk on fire")

    store.createUser(USER)
    with pytest.raises(OSError):
        store.deliver(USER, b"prefix", Broken())
    for sub in ("tmp", "new", "cur"):
        assert os.listdir(userDir(store) / sub) == []


def _worker(root, index, results):
    try:
        store = MaildirStore(root, "host%d" % index)
        box = store.mailbox(USER)
        seen = {}
        for i in range(50):
            body = b"from %d number %d" % (index, i)
            store.deliver(USER, b"", io.BytesIO(body))
            for info in box.messages():
                assert seen.setdefault(info.uid, info.key) == info.key
        results.put(seen)
    except BaseException as e:
        results.put(repr(e))


def test_concurrentProcesses(store):
    """If this fails, two server processes give two messages one UID, or
    lose mail, and IMAP clients show the wrong message."""
    store.createUser(USER)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(store.root, i, results))
             for i in range(4)]
    for p in procs:
        p.start()
    seen = [results.get(timeout=120) for _ in procs]
    assert [s for s in seen if isinstance(s, str)] == []
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    infos = store.mailbox(USER).messages()
    uids = [m.uid for m in infos]
    assert uids == list(range(1, 201))
    assert len({m.key for m in infos}) == 200
    final = {m.uid: m.key for m in infos}
    for each in seen:  # every process saw the same UID -> message mapping
        assert all(final[uid] == key for uid, key in each.items())
    box = store.mailbox(USER)
    bodies = set()
    for m in infos:
        with box.openMessage(m.uid) as f:
            bodies.add(f.read())
    assert bodies == {b"from %d number %d" % (p, i)
                      for p in range(4) for i in range(50)}


def test_outsideFlagRenameKeepsUid(store):
    """If this fails, reading mail in mutt makes IMAP clients see the
    message deleted and re-added."""
    deliver(store, b"a")
    deliver(store, b"b")
    box = store.mailbox(USER)
    first, second = box.messages()
    old = first.path
    os.rename(old, old.replace(":2,", ":2,RS"))
    first2, second2 = box.messages()
    assert (first2.uid, first2.key) == (first.uid, first.key)
    assert first2.flags == {"\\Seen", "\\Answered"}
    assert second2 == second
    # A stale cached name is found again when opening or flagging.
    with box.openMessage(first.uid) as f:
        assert f.read() == b"a"
    os.rename(first2.path, first2.path.replace(":2,RS", ":2,S"))
    box.setFlags(first.uid, {"\\Flagged"})
    assert box.messages()[0].flags == {"\\Flagged"}


def test_setFlags(store):
    """If this fails, flags set over IMAP are lost or unreadable by mutt."""
    deliver(store, b"a")
    box = store.mailbox(USER)
    [m] = box.messages()
    box.setFlags(m.uid, {"\\Seen", "\\Deleted", "\\Draft", "\\Flagged",
                         "\\Answered", "\\Recent", "$Junk"})
    [m2] = box.messages()
    assert m2.path.endswith(":2,DFRSTa")
    assert m2.uid == m.uid
    assert m2.flags == {"\\Seen", "\\Deleted", "\\Draft", "\\Flagged",
                        "\\Answered", "$Junk"}
    # Letters we do not know (P, a keyword letter not in dovecot-keywords)
    # survive our changes.
    os.rename(m2.path, m2.path + "Pz")
    box.setFlags(m.uid, {"\\Seen"})
    [m3] = box.messages()
    assert m3.path.endswith(":2,PSz") and m3.flags == {"\\Seen"}
    with pytest.raises(KeyError):
        box.setFlags(99, {"\\Seen"})


def test_expungeRemovesFiles(store):
    """If this fails, expunged mail stays on disk (and in outside tools)."""
    for i in range(3):
        deliver(store, b"m%d" % i)
    box = store.mailbox(USER)
    assert [m.uid for m in box.messages()] == [1, 2, 3]
    box.expunge([3, 2, 42])
    deliver(store, b"new")
    box.messages()
    assert len(os.listdir(userDir(store) / "cur")) == 2


def test_outsideDeletionForgetsUid(store):
    """If this fails, a message deleted by another client stays listed."""
    deliver(store, b"a")
    deliver(store, b"b")
    box = store.mailbox(USER)
    first, _ = box.messages()
    os.unlink(first.path)
    assert [m.uid for m in box.messages()] == [2]
    assert box.uidNext() == 3


def test_outsideDeletionIsVanished(store):
    """If this fails, a QRESYNC client never learns that a message deleted
    by another Maildir tool (mutt) is gone."""
    deliver(store, b"a")
    deliver(store, b"b")
    box = store.mailbox(USER)
    first, _ = box.messages()
    seen = box.highestModSeq()
    os.unlink(first.path)
    changes = box.changedSince(seen)
    assert changes.vanished == (1,) and changes.messages == []


def test_expungeHistoryIsBounded(store, monkeypatch):
    """If this fails, the uidlist grows with every message ever expunged (it
    is rewritten on each change), or a QRESYNC client asking about changes
    older than the history kept is told of too few expunges instead of
    getting a whole snapshot to compare its UIDs with."""
    monkeypatch.setattr(maildirindex, "EXPUNGES_KEPT", 3)
    for i in range(6):
        deliver(store, b"m%d" % i)
    box = store.mailbox(USER)
    start = box.snapshot().highestModSeq
    marks = []
    for uid in (1, 2, 3, 4):
        box.expunge([uid])
        marks.append(box.highestModSeq())
    again = MaildirStore(store.root, "other.example.org").mailbox(USER)
    for asking in (box, again):
        assert asking.changedSince(marks[0]).vanished == (2, 3, 4)
        whole = asking.changedSince(start)
        assert whole.since is None and [i.uid for i in whole.messages] == [5, 6]
    index = maildirindex.readIndex(box.path)
    assert sorted(index.expunged) == [2, 3, 4] and index.forgotten == marks[0]


@pytest.mark.parametrize("name", [
    "../x", "/abs", "a/../../b", "a\0b", "", "a//b", "a/", ".", "a/./b",
    "..", "x\nA1 LOGOUT", "\x7f",
])
def test_traversalNamesRefused(store, tmp_path, name):
    """If this fails, an IMAP client can read or write files outside its
    mailbox (CVE-2022-22931 class)."""
    store.createUser(USER)
    before = tree(tmp_path)
    for call in (
        lambda: store.createMailbox(USER, name),
        lambda: store.mailbox(USER, name),
        lambda: store.deleteMailbox(USER, name),
        lambda: store.renameMailbox(USER, "Archive", name),
        lambda: deliver(store, b"x", mailbox=name),
    ):
        with pytest.raises(ValueError):
            call()
    assert tree(tmp_path) == before


def test_symlinkOutsideRefused(store, tmp_path):
    """If this fails, a planted symlink lets IMAP reach other users' mail."""
    store.createUser(USER)
    outside = tmp_path / "outside"
    for sub in ("cur", "new", "tmp"):
        (outside / sub).mkdir(parents=True)
    os.symlink(outside, userDir(store) / ".Evil")
    with pytest.raises(ValueError):
        store.mailbox(USER, "Evil")
    assert "Evil" not in store.listMailboxes(USER)


def test_nameEncodingRoundTrips(store):
    """If this fails, folders with dots or percents in their names cannot
    be opened again, or collide with subfolders."""
    store.createUser(USER)
    names = ["a.b", "a/b", "Ünïcode/fé.te"]
    for name in names:
        store.createMailbox(USER, name)
    # A new name may not have % (a LIST wildcard), but one made by an older
    # version is still on disk, escaped.
    for diskName in (".50%25", ".%252E"):
        for sub in ("cur", "new", "tmp"):
            (userDir(store) / diskName / sub).mkdir(parents=True)
        (userDir(store) / diskName / "maildirfolder").touch()
    names += ["50%", "%2E"]
    listed = store.listMailboxes(USER)
    assert set(names) <= set(listed)
    assert os.path.isdir(userDir(store) / ".a%2Eb")
    assert os.path.isdir(userDir(store) / ".a.b")
    for name in names:
        assert store.mailbox(USER, name).name == name


def test_mailboxLayout(store):
    """If this fails, INBOX is not the user's Maildir (outside tools do not
    find the mail), or a deleted folder leaves its files behind."""
    store.createMailbox(USER, "Work")
    assert store.mailbox(USER, "InBoX").path == userDir(store)
    assert (userDir(store) / ".Work" / "maildirfolder").exists()
    store.deleteMailbox(USER, "Work")
    assert not [n for n in os.listdir(userDir(store)) if n.startswith("..")]
    assert not (userDir(store) / ".Work").exists()


def test_olderAccountGetsSpecialUseOnceAndDeletionSticks(store):
    """
    If this fails, an account made by an older version (INBOX only) never
    gets Sent/Drafts/Trash/Junk/Archive, or a folder the user deleted
    comes back on the next access.
    """
    home = userDir(store)
    for sub in ("cur", "new", "tmp"):
        (home / sub).mkdir(parents=True)
    assert store.listMailboxes(USER) == ["INBOX"] + sorted(SPECIAL_USE)
    store.deleteMailbox(USER, "Junk")
    assert "Junk" not in store.listMailboxes(USER)
    assert "Junk" not in MaildirStore(store.root, "other").listMailboxes(USER)


def test_appendFlagsInFileName(store):
    """If this fails, flags of a message saved to Sent are invisible to
    mutt and Dovecot, or the file's date is not the INTERNALDATE."""
    box = store.mailbox(USER, "Sent")
    box.append(io.BytesIO(b"body"), flags=("\\Seen", "\\Draft"),
               internalDate=1_000_000_000.5)
    [info] = box.messages()
    assert info.path.endswith(":2,DS")
    assert os.stat(info.path).st_mtime == 1_000_000_000.5
    assert os.listdir(box.path / "new") == os.listdir(box.path / "tmp") == []


def _newValidities(root, results):
    store = MaildirStore(root, "mx.example.org")
    got = []
    for i in range(10):
        name = f"P{os.getpid()}-{i}"
        store.createMailbox(USER, name)
        got.append(store.mailbox(USER, name).uidValidity())
    results.put(got)


def test_uidValidityNeverRepeatsAcrossProcesses(store):
    """
    If this fails, two server processes creating mailboxes at the same
    moment hand out one UIDVALIDITY twice, and a client can confuse the
    messages of the two mailboxes after a delete and re-create.
    """
    store.createUser(USER)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_newValidities, args=(store.root, results)) for _ in range(4)]
    for p in procs:
        p.start()
    values = [v for _ in procs for v in results.get(timeout=120)]
    for p in procs:
        p.join(60)
    assert len(values) == len(set(values)) == 40
    assert all(0 < v < 2**32 for v in values)




def test_savedate_and_emailid_of_another_tools_file(store):
    """If this fails, a message another Maildir tool put in (its name has
    no delivery time) shows no save date, or changes EMAILID when copied,
    so a client expiring Trash by save date or caching by EMAILID errs."""
    deliver(store, b"x")
    inbox = userDir(store)
    (inbox / "new" / "othertool-message").write_bytes(b"Subject: moved in\r\n\r\nhi\r\n")
    os.utime(inbox / "new" / "othertool-message", (1_000_000_000, 1_000_000_000))
    box = store.mailbox(USER)
    [info] = [i for i in box.messages() if i.key == "othertool-message"]
    assert info.saveDate == info.internalDate == 1_000_000_000
    [delivered] = [i for i in box.messages() if i.key != "othertool-message"]
    assert abs(delivered.saveDate - os.stat(delivered.path).st_mtime) < 5
    emailId = box.emailIds([info.uid])[info.uid]
    [(_, copied)] = box.copy([info.uid], store.mailbox(USER, "Archive"))
    archive = store.mailbox(USER, "Archive")
    assert archive.emailIds([copied]) == {copied: emailId}
    [again] = archive.messages()
    assert again.saveDate > 1_000_000_000 + 1e8  # saved into Archive now
