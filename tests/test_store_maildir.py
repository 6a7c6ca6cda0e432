"""
Tests for L{pymailer.store.maildir}: durability, stable UIDs across
processes and outside tools, and refusal of hostile mailbox names.
"""

import io
import multiprocessing
import os
import tracemalloc

import pytest
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from pymailer.interfaces import IMailbox, IMailStore
from pymailer.store import MailboxGone, MessageInfo
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


def test_interfaces(store):
    """If this fails, the server cannot use the Maildir store at all."""
    store.createUser(USER)
    assert verifyObject(IMailStore, store)
    assert verifyObject(IMailbox, store.mailbox(USER))


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


def test_deliverCreatesUser(store):
    """If this fails, mail to a user added after start-up is lost."""
    assert not userDir(store).exists()
    assert deliver(store, b"hello")
    assert "INBOX" in store.listMailboxes(USER)
    assert len(store.mailbox(USER).messages()) == 1


def test_deliverToMissingMailbox(store):
    """If this fails, mail to a folder that does not exist vanishes."""
    with pytest.raises(KeyError):
        deliver(store, b"x", mailbox="Nope")


def test_badUniqueKey(store):
    """If this fails, a crafted key could inject '/' or ':' in file names."""
    for key in ("a/b", "a:2,S", "", "a.b"):
        with pytest.raises(ValueError):
            deliver(store, b"x", uniqueKey=key)


def test_checkDuplicate(store):
    """If this fails, a crash during delivery gives the user the mail twice."""
    assert deliver(store, b"one", uniqueKey="Q1-0", checkDuplicate=True)
    assert not deliver(store, b"one", uniqueKey="Q1-0", checkDuplicate=True)
    store.mailbox(USER).messages()  # now in cur/: still found
    assert not deliver(store, b"one", uniqueKey="Q1-0", checkDuplicate=True)
    # A key that merely ends another key's text is not a duplicate.
    assert deliver(store, b"two", uniqueKey="1-0", checkDuplicate=True)
    assert len(store.mailbox(USER).messages()) == 2


def test_uidsStableAcrossInstances(store):
    """If this fails, IMAP clients re-download everything after a restart."""
    for i in range(5):
        deliver(store, b"m%d" % i)
    before = store.mailbox(USER).messages()
    assert [m.uid for m in before] == [1, 2, 3, 4, 5]
    again = MaildirStore(store.root, "other.host").mailbox(USER)
    assert [(m.uid, m.key) for m in again.messages()] == [
        (m.uid, m.key) for m in before]
    assert again.uidValidity() == store.mailbox(USER).uidValidity()
    assert again.uidNext() == 6


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


def test_expungeNeverReusesUid(store):
    """If this fails, an IMAP client shows a deleted message's cached
    content for a new message."""
    for i in range(3):
        deliver(store, b"m%d" % i)
    box = store.mailbox(USER)
    assert [m.uid for m in box.messages()] == [1, 2, 3]
    box.expunge([3, 2, 42])
    assert [m.uid for m in box.messages()] == [1]
    deliver(store, b"new")
    fresh = MaildirStore(store.root, "h").mailbox(USER)
    assert [m.uid for m in fresh.messages()] == [1, 4]
    assert len(os.listdir(userDir(store) / "cur")) == 2
    with pytest.raises(KeyError):
        box.openMessage(2)


def test_outsideDeletionForgetsUid(store):
    """If this fails, a message deleted by another client stays listed."""
    deliver(store, b"a")
    deliver(store, b"b")
    box = store.mailbox(USER)
    first, _ = box.messages()
    os.unlink(first.path)
    assert [m.uid for m in box.messages()] == [2]
    assert box.uidNext() == 3


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
    names = ["a.b", "a/b", "50%", "Ünïcode/fé.te", "%2E"]
    for name in names:
        store.createMailbox(USER, name)
    listed = store.listMailboxes(USER)
    assert set(names) <= set(listed)
    assert os.path.isdir(userDir(store) / ".a%2Eb")
    assert os.path.isdir(userDir(store) / ".a.b")
    for name in names:
        assert store.mailbox(USER, name).name == name


def test_mailboxManagement(store):
    """If this fails, creating, deleting or listing IMAP folders breaks."""
    store.createUser(USER)
    store.createMailbox(USER, "Work")
    with pytest.raises(KeyError):
        store.createMailbox(USER, "Work")
    assert store.listMailboxes(USER)[0] == "INBOX"
    assert store.listMailboxes(USER)[1:] == sorted(
        list(SPECIAL_USE) + ["Work"])
    assert store.mailbox(USER, "inbox").name == "INBOX"
    assert store.mailbox(USER, "InBoX").path == userDir(store)
    with pytest.raises(ValueError):
        store.deleteMailbox(USER, "INBOX")
    store.deleteMailbox(USER, "Work")
    assert "Work" not in store.listMailboxes(USER)
    assert not [n for n in os.listdir(userDir(store)) if n.startswith("..")]
    with pytest.raises(KeyError):
        store.deleteMailbox(USER, "Work")
    with pytest.raises(KeyError):
        store.mailbox(USER, "Work")


def test_renameKeepsUidValidity(store):
    """If this fails, renaming a folder makes IMAP clients re-download it,
    or loses its subfolders."""
    store.createUser(USER)
    store.createMailbox(USER, "Old")
    store.createMailbox(USER, "Old/Child")
    deliver(store, b"kept", mailbox="Old")
    box = store.mailbox(USER, "Old")
    [m] = box.messages()
    validity = box.uidValidity()
    with pytest.raises(KeyError):
        store.renameMailbox(USER, "Old", "Sent")
    store.renameMailbox(USER, "Old", "New/Name")
    names = store.listMailboxes(USER)
    assert "Old" not in names and "Old/Child" not in names
    assert {"New/Name", "New/Name/Child"} <= set(names)
    moved = store.mailbox(USER, "New/Name")
    assert moved.uidValidity() == validity
    assert [(x.uid, x.key) for x in moved.messages()] == [(m.uid, m.key)]
    with pytest.raises(KeyError):
        store.renameMailbox(USER, "Old", "Other")


def test_listenerCalled(store):
    """If this fails, IMAP clients in IDLE do not see new mail, or one
    broken listener stops delivery."""
    calls, events = [], []

    def broken(user, name):
        raise RuntimeError("boom")

    store.addListener(broken)
    store.addListener(lambda *a: calls.append(a))
    globalLogPublisher.addObserver(events.append)
    try:
        assert deliver(store, b"x")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert calls == [(USER, "INBOX")]
    assert any(e.get("log_failure") is not None for e in events)
    store.removeListener(broken)
    box = store.mailbox(USER)
    uid = box.append(io.BytesIO(b"y"))
    box.setFlags(uid, {"\\Seen"})
    box.expunge([uid])
    deliver(store, b"x", mailbox="Sent")
    assert calls == [(USER, "INBOX")] * 4 + [(USER, "Sent")]


@pytest.mark.parametrize("first", ["list", "create", "mailbox"])
def test_firstAccessMakesInboxAndSpecialUse(store, first):
    """
    If this fails, a new user (or one created by an older version) sees no
    INBOX or Sent in LIST, APPEND to Sent fails, or a CREATE before the
    first SELECT leaves a user whose LIST shows only that folder.
    """
    if first == "list":
        store.listMailboxes(USER)
    elif first == "create":
        store.createMailbox(USER, "Projects")
    else:
        store.mailbox(USER, "Sent").append(io.BytesIO(b"sent"))
    names = store.listMailboxes(USER)
    assert names[0] == "INBOX"
    assert set(SPECIAL_USE) <= set(names)


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


def test_createUserIdempotent(store):
    """If this fails, a second login or restart wipes or breaks folders."""
    store.createUser(USER)
    deliver(store, b"x", mailbox="Trash")
    store.createUser(USER)
    assert store.listMailboxes(USER) == ["INBOX"] + sorted(SPECIAL_USE)
    assert SPECIAL_USE["Sent"] == "\\Sent"
    assert len(store.mailbox(USER, "Trash").messages()) == 1


def test_appendFlagsAndInternalDate(store):
    """If this fails, a message saved to Sent by a client has the wrong
    date, loses its flags, or gets a UID that is not the one announced."""
    store.createUser(USER)
    box = store.mailbox(USER, "Sent")
    deliver(store, b"earlier", mailbox="Sent")
    uid = box.append(io.BytesIO(b"body"), flags=("\\Seen", "\\Draft"),
                     internalDate=1_000_000_000.5)
    assert uid == 2
    info = box.messages()[-1]
    assert info == MessageInfo(
        uid=2, key=info.key, flags=frozenset({"\\Seen", "\\Draft"}), size=4,
        internalDate=1_000_000_000.5, path=info.path, modseq=info.modseq)
    assert info.modseq > box.messages()[0].modseq
    assert info.path.endswith(":2,DS")
    assert os.listdir(box.path / "new") == os.listdir(box.path / "tmp") == []
    assert box.uidNext() == 3


def test_recreatedMailboxGetsNewUidValidityWithinTheSameSecond(store):
    """
    If this fails, a mailbox deleted and created again within one second
    gets the same UIDVALIDITY and UID 1 again, and a caching client shows
    the old message in place of the new one (RFC 3501 2.3.1.1).
    """
    seen = set()
    for _ in range(3):
        store.createMailbox(USER, "Work")
        box = store.mailbox(USER, "Work")
        uid = box.append(io.BytesIO(b"a message"))
        seen.add((box.uidValidity(), uid))
        store.deleteMailbox(USER, "Work")
    assert len({validity for validity, _ in seen}) == 3
    # A store object in another process sees the same counter.
    store.createMailbox(USER, "Work")
    later = MaildirStore(store.root, "other").mailbox(USER, "Work").uidValidity()
    assert later > max(validity for validity, _ in seen)


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


def test_openMailboxDeletedOrRenamedSaysGone(store):
    """
    If this fails, a session whose mailbox was deleted or renamed gets a
    raw FileNotFoundError (an internal error for the client) instead of a
    clean "the mailbox is gone", and sessions are not told of the change.
    """
    calls = []
    store.addListener(lambda user, name: calls.append(name))
    for name, remove in (("Work", lambda: store.deleteMailbox(USER, "Work")),
                         ("Old", lambda: store.renameMailbox(USER, "Old", "New"))):
        store.createMailbox(USER, name)
        box = store.mailbox(USER, name)
        box.snapshot()
        remove()
        assert calls[-1] == name
        for action in (box.snapshot, lambda: box.append(io.BytesIO(b"x")),
                       lambda: box.storeFlags([1], "add", {"\\Seen"})):
            with pytest.raises(MailboxGone) as info:
                action()
            assert info.value.name == name
