"""
The contract of L{pymailer.interfaces.IMailStore} and L{IMailbox}: what
every store backend must do, whatever it keeps on disk (buildbot's way: the
in-memory fake runs the same suite as the real backends, so it stays
honest).  C{tests/test_store_contract.py} runs it against each backend; a
new backend adds one subclass there.

Only behaviour the interface documents is tested here; layout details
(Maildir file names, outside tools) stay in the backend's own tests.
"""

import io
import re
import time

import pytest
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from pymailer.interfaces import IMailbox, IMaildropLock, IMailStore, IMessageContent
from pymailer.store import (
    INBOX, SPECIAL_USE, KeywordLimit, MailboxGone, MailboxNameTooLong,
    MaildropLocked, MessageInfo,
)

USER = "alice@example.org"
OTHER = "bob@example.org"


def deliver(store, body, user=USER, **kw):
    return store.deliver(user, b"", io.BytesIO(body), **kw)


class StoreContract:
    """
    Mixin: a subclass provides a C{store} fixture (a fresh, empty store)
    and may override L{reopen} (a second store object on the same data,
    as another process would have).
    """

    def reopen(self, store):
        return store

    # -- the interfaces ----------------------------------------------------

    def test_interfaces(self, store):
        """If this fails, the server cannot use this store at all."""
        store.createUser(USER)
        assert verifyObject(IMailStore, store)
        box = store.mailbox(USER)
        assert verifyObject(IMailbox, box)
        uid = box.append(io.BytesIO(b"x"))
        with box.openMessage(uid) as content:
            assert verifyObject(IMessageContent, content)
        lock = store.lockMaildrop(USER)
        assert verifyObject(IMaildropLock, lock)
        lock.release()

    # -- names, users, mailboxes --------------------------------------------

    def test_canonicalName(self, store):
        """If this fails, 'inbox' and 'INBOX' are two folders, or a client
        can name a folder outside the user's mail."""
        assert store.canonicalName("inbox") == INBOX
        assert store.canonicalName("InBox/Sub") == "INBOX/Sub"
        assert store.canonicalName("Archive/2026") == "Archive/2026"
        for bad in ("", "/x", "a//b", "a/../b", "..", ".", "a\x00b", "a\nb"):
            with pytest.raises(ValueError):
                store.canonicalName(bad)
        with pytest.raises(MailboxNameTooLong):
            store.canonicalName("x" * 2000)

    # Names no new folder may have: LIST wildcards (RFC 9051 5.1), C1
    # controls and line/paragraph separators (RFC 6855 3, RFC 5198 2), and
    # bidirectional formatting characters (U+202E shows "gpj.exe" as "exe.jpg").
    REFUSED_NEW_NAMES = ("a*b", "%", "Archive/x*", "a\u202eb", "\u200fx", "a\u2066b",
                         "a\u061cb", "a\x85b", "a\u2028b", "a\u2029b")
    # Names that must keep working: non-ASCII (IMAP's modified UTF-7 or
    # UTF8=ACCEPT), '&', emoji made with ZERO WIDTH JOINER and Persian words
    # with ZERO WIDTH NON-JOINER (invisible, but part of how they are written).
    VALID_NEW_NAMES = ("Entwürfe", "日本語/x", "a&b", "Family \U0001F468\u200d\U0001F469\u200d\U0001F467",
                       "\u0646\u0627\u0645\u0647\u200c\u0647\u0627")

    @pytest.mark.parametrize("bad", REFUSED_NEW_NAMES)
    def test_newNameRefusesWildcardsAndInvisibleControls(self, store, bad):
        """If this fails, a user can make a folder that LIST patterns cannot
        address, or whose name displays as another folder's (a right-to-left
        override), in every client that shows it."""
        with pytest.raises(ValueError):
            store.canonicalName(bad, new=True)
        before = store.listMailboxes(USER)
        with pytest.raises(ValueError):
            store.createMailbox(USER, bad)
        store.createMailbox(USER, "Old")
        with pytest.raises(ValueError):
            store.renameMailbox(USER, "Old", bad)
        assert sorted(store.listMailboxes(USER)) == sorted(before + ["Old"])

    def test_newNameAllowsInternationalNames(self, store):
        """If this fails, users cannot make folders named in their own
        language, or the check for invisible controls also refuses the
        joiners that emoji and Persian words are written with."""
        for name in self.VALID_NEW_NAMES:
            assert store.canonicalName(name, new=True) == name
            store.createMailbox(USER, name)
            assert name in store.listMailboxes(USER)
        store.renameMailbox(USER, "Entwürfe", "Entwürfe 2026")
        assert "Entwürfe 2026" in store.listMailboxes(USER)

    def test_existingNameWithWildcardStaysReachable(self, store):
        """If this fails, a folder with * in its name (made by an older
        version, or imported) can no longer be opened, renamed or deleted:
        only new names are checked."""
        assert store.canonicalName("a*b") == "a*b"
        assert store.canonicalName("a\u202eb") == "a\u202eb"
        with pytest.raises(KeyError):
            store.mailbox(USER, "a*b")  # looked up, not refused

    def test_deliverCreatesUser(self, store):
        """If this fails, mail to a user added after start-up is lost."""
        assert deliver(store, b"hello")
        assert INBOX in store.listMailboxes(USER)
        [info] = store.mailbox(USER).messages()
        with store.mailbox(USER).openMessage(info.uid) as content:
            assert content.read() == b"hello"

    def test_deliverPrefixAndSource(self, store):
        """If this fails, users receive altered mail (or lose trace headers)."""
        body = b"Subject: x\r\n\r\n" + bytes(range(256)) * 1000
        assert store.deliver(USER, b"Received: by us\r\n", io.BytesIO(body))
        [info] = store.mailbox(USER).messages()
        assert info.size == len(body) + 17
        with store.mailbox(USER).openMessage(info.uid) as content:
            assert content.read() == b"Received: by us\r\n" + body

    def test_deliverToMissingMailbox(self, store):
        """If this fails, mail to a folder that does not exist vanishes."""
        with pytest.raises(KeyError):
            deliver(store, b"x", mailbox="Nope")

    def test_deliverToFolder(self, store):
        """If this fails, a sieve-style folder delivery lands in INBOX."""
        assert deliver(store, b"x", mailbox="Junk")
        assert len(store.mailbox(USER, "Junk").messages()) == 1
        assert store.mailbox(USER).messages() == []

    def test_badUniqueKey(self, store):
        """If this fails, a crafted key could inject '/' or ':' in file names."""
        for key in ("a/b", "a:2,S", "", "a.b"):
            with pytest.raises(ValueError):
                deliver(store, b"x", uniqueKey=key)
        with pytest.raises(ValueError):
            deliver(store, b"x", checkDuplicate=True)

    def test_checkDuplicate(self, store):
        """If this fails, a crash during delivery gives the user the mail twice."""
        assert deliver(store, b"one", uniqueKey="Q1-0", checkDuplicate=True)
        assert not deliver(store, b"one", uniqueKey="Q1-0", checkDuplicate=True)
        store.mailbox(USER).messages()  # after a scan: still found
        assert not deliver(store, b"one", uniqueKey="Q1-0", checkDuplicate=True)
        # A key that merely ends another key's text is not a duplicate.
        assert deliver(store, b"two", uniqueKey="1-0", checkDuplicate=True)
        # Without checkDuplicate the key only names the delivery.
        assert deliver(store, b"one", uniqueKey="Q1-0")
        assert len(store.mailbox(USER).messages()) == 3

    def test_checkDuplicateOfOtherOctets(self, store):
        """
        If this fails, a message delivered again after a crash with other
        octets (its trace headers written anew) fails delivery instead of
        being recognised as the duplicate it is.
        """
        assert deliver(store, b"Received: at 10:00\r\n\r\nbody", uniqueKey="Q2-0",
                       checkDuplicate=True)
        assert not deliver(store, b"Received: at 10:05\r\n\r\nbody", uniqueKey="Q2-0",
                           checkDuplicate=True)
        assert len(store.mailbox(USER).messages()) == 1

    @pytest.mark.parametrize("first", ["list", "create", "mailbox", "deliver"])
    def test_firstAccessMakesInboxAndSpecialUse(self, store, first):
        """
        If this fails, a new user sees no INBOX or Sent in LIST, APPEND to
        Sent fails, or a CREATE before the first SELECT leaves a user whose
        LIST shows only that folder.
        """
        if first == "list":
            store.listMailboxes(USER)
        elif first == "create":
            store.createMailbox(USER, "Projects")
        elif first == "mailbox":
            store.mailbox(USER, "Sent").append(io.BytesIO(b"sent"))
        else:
            deliver(store, b"x", mailbox="Archive")
        names = store.listMailboxes(USER)
        assert names[0] == INBOX
        assert set(SPECIAL_USE) <= set(names)

    def test_createUserIdempotentAndDeletionSticks(self, store):
        """If this fails, a second login or restart wipes or breaks folders,
        or a special-use folder the user deleted comes back."""
        store.createUser(USER)
        deliver(store, b"x", mailbox="Trash")
        store.createUser(USER)
        assert store.listMailboxes(USER) == [INBOX] + sorted(SPECIAL_USE)
        assert SPECIAL_USE["Sent"] == "\\Sent"
        assert len(store.mailbox(USER, "Trash").messages()) == 1
        store.deleteMailbox(USER, "Junk")
        assert "Junk" not in store.listMailboxes(USER)
        assert "Junk" not in self.reopen(store).listMailboxes(USER)

    def test_specialUses(self, store):
        """If this fails, a folder made with CREATE ... (USE (\\Archive))
        (RFC 6154) is not listed as \\Archive, a rename loses a folder's
        use, a standard folder made again loses its own, or a use the
        server cannot keep is stored."""
        store.createUser(USER)
        assert store.specialUses(USER) == {
            name: {use} for name, use in SPECIAL_USE.items()}
        store.createMailbox(USER, "Old mail", specialUse=["\\ARCHIVE"])
        store.createMailbox(USER, "Both", specialUse=("\\Sent", "\\Drafts"))
        store.createMailbox(USER, "Plain")
        store.createMailbox(USER, "Plain/Deeper", specialUse=())
        uses = self.reopen(store).specialUses(USER)
        assert uses["Old mail"] == {"\\Archive"}
        assert uses["Both"] == {"\\Sent", "\\Drafts"}
        assert "Plain" not in uses and "Plain/Deeper" not in uses
        store.renameMailbox(USER, "Old mail", "Older mail")
        store.renameMailbox(USER, "Sent", "Sent 2025")
        uses = store.specialUses(USER)
        assert uses["Older mail"] == {"\\Archive"} and "Old mail" not in uses
        assert uses["Sent 2025"] == {"\\Sent"}
        store.createMailbox(USER, "Sent")
        assert store.specialUses(USER)["Sent"] == {"\\Sent"}
        store.deleteMailbox(USER, "Older mail")
        store.createMailbox(USER, "Older mail")
        assert "Older mail" not in store.specialUses(USER)
        for bad in (["\\All"], ["\\Flagged"], ["\\Important"], ["Archive"]):
            with pytest.raises(ValueError):
                store.createMailbox(USER, "Virtual", specialUse=bad)
        assert "Virtual" not in store.listMailboxes(USER)
        assert store.specialUses(OTHER) == {
            name: {use} for name, use in SPECIAL_USE.items()}

    def test_usersApart(self, store):
        """If this fails, one user reads another's mail or folders."""
        deliver(store, b"for alice")
        store.createMailbox(USER, "Private")
        assert store.mailbox(OTHER).messages() == []
        assert "Private" not in store.listMailboxes(OTHER)

    def test_mailboxManagement(self, store):
        """If this fails, creating, deleting or listing IMAP folders breaks."""
        store.createUser(USER)
        store.createMailbox(USER, "Work")
        with pytest.raises(KeyError):
            store.createMailbox(USER, "Work")
        with pytest.raises(KeyError):
            store.createMailbox(USER, "inbox")
        assert store.listMailboxes(USER) == [INBOX] + sorted(list(SPECIAL_USE) + ["Work"])
        assert store.mailbox(USER, "inbox").name == INBOX
        with pytest.raises(ValueError):
            store.deleteMailbox(USER, INBOX)
        with pytest.raises(ValueError):
            store.mailbox(USER, "../x")
        store.deleteMailbox(USER, "Work")
        assert "Work" not in store.listMailboxes(USER)
        with pytest.raises(KeyError):
            store.deleteMailbox(USER, "Work")
        with pytest.raises(KeyError):
            store.mailbox(USER, "Work")

    def test_deleteKeepsChildren(self, store):
        """If this fails, deleting a folder silently deletes its subfolders."""
        store.createMailbox(USER, "A")
        store.createMailbox(USER, "A/B")
        store.deleteMailbox(USER, "A")
        assert "A/B" in store.listMailboxes(USER)

    def test_renameKeepsUidValidity(self, store):
        """If this fails, renaming a folder makes IMAP clients re-download it,
        or loses its subfolders."""
        store.createMailbox(USER, "Old")
        store.createMailbox(USER, "Old/Child")
        deliver(store, b"kept", mailbox="Old")
        box = store.mailbox(USER, "Old")
        [m] = box.messages()
        validity = box.uidValidity()
        with pytest.raises(KeyError):
            store.renameMailbox(USER, "Old", "Sent")
        with pytest.raises(ValueError):
            store.renameMailbox(USER, "Old", "INBOX")
        store.renameMailbox(USER, "Old", "New/Name")
        names = store.listMailboxes(USER)
        assert "Old" not in names and "Old/Child" not in names
        assert {"New/Name", "New/Name/Child"} <= set(names)
        moved = store.mailbox(USER, "New/Name")
        assert moved.uidValidity() == validity
        assert [(x.uid, x.key) for x in moved.messages()] == [(m.uid, m.key)]
        with pytest.raises(KeyError) as info:
            store.renameMailbox(USER, "Old", "Other")
        assert info.value.args[0] == "Old"

    def test_recreatedMailboxGetsNewUidValidity(self, store):
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
        store.createMailbox(USER, "Work")
        later = self.reopen(store).mailbox(USER, "Work").uidValidity()
        assert later > max(validity for validity, _ in seen)
        assert 0 < later < 2**32

    def test_openMailboxDeletedOrRenamedSaysGone(self, store):
        """
        If this fails, a session whose mailbox was deleted or renamed gets
        an internal error instead of a clean "the mailbox is gone", and
        sessions are not told of the change.
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
                assert isinstance(info.value, KeyError)

    # -- listeners -----------------------------------------------------------

    def test_listenerCalled(self, store):
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
        assert calls == [(USER, INBOX)]
        assert any(e.get("log_failure") is not None for e in events)
        store.removeListener(broken)
        box = store.mailbox(USER)
        uid = box.append(io.BytesIO(b"y"))
        box.setFlags(uid, {"\\Seen"})
        box.expunge([uid])
        deliver(store, b"x", mailbox="Sent")
        assert calls == [(USER, INBOX)] * 4 + [(USER, "Sent")]
        trash = store.mailbox(USER, "Trash")
        box.copy([1], trash)
        assert calls[-1] == (USER, "Trash")
        box.move([1], trash)
        assert calls[-2:] == [(USER, "Trash"), (USER, INBOX)]

    # -- UIDs, flags, mod-sequences -------------------------------------------

    def test_uidsAscendAndSurviveReopen(self, store):
        """If this fails, IMAP clients re-download everything after a restart."""
        for i in range(5):
            deliver(store, b"m%d" % i)
        before = store.mailbox(USER).messages()
        assert [m.uid for m in before] == [1, 2, 3, 4, 5]
        assert len({m.key for m in before}) == 5
        again = self.reopen(store).mailbox(USER)
        assert [(m.uid, m.key) for m in again.messages()] == [(m.uid, m.key) for m in before]
        assert again.uidValidity() == store.mailbox(USER).uidValidity()
        assert again.uidNext() == 6

    def test_expungeNeverReusesUid(self, store):
        """If this fails, an IMAP client shows a deleted message's cached
        content for a new message."""
        for i in range(3):
            deliver(store, b"m%d" % i)
        box = store.mailbox(USER)
        assert [m.uid for m in box.messages()] == [1, 2, 3]
        before = box.highestModSeq()
        box.expunge([3, 2, 42])
        assert [m.uid for m in box.messages()] == [1]
        assert box.highestModSeq() > before  # RFC 7162 3.2: QRESYNC sees it
        box.expunge([42])
        deliver(store, b"new")
        assert [m.uid for m in self.reopen(store).mailbox(USER).messages()] == [1, 4]
        with pytest.raises(KeyError):
            box.openMessage(2)

    def test_appendFlagsAndInternalDate(self, store):
        """If this fails, a message saved to Sent by a client has the wrong
        date, loses its flags, or gets a UID that is not the one announced."""
        box = store.mailbox(USER, "Sent")
        deliver(store, b"earlier", mailbox="Sent")
        uid = box.append(io.BytesIO(b"body"), flags=("\\Seen", "\\Draft", "$Sent"),
                         internalDate=1_000_000_000.5)
        assert uid == 2
        info = box.messages()[-1]
        assert info == MessageInfo(
            uid=2, key=info.key, flags=frozenset({"\\Seen", "\\Draft", "$Sent"}), size=4,
            internalDate=1_000_000_000.5, path=info.path, modseq=info.modseq,
            saveDate=info.saveDate)
        assert info.modseq > box.messages()[0].modseq
        assert box.uidNext() == 3
        assert box.highestModSeq() >= info.modseq

    def test_changeStamp(self, store):
        """If this fails, a NOOP on this backend says nothing is new although
        a message arrived, changed flags, got a new keyword or was expunged
        (the stamp stayed), or the stamp a snapshot carries is not the
        mailbox's own."""
        box = store.mailbox(USER)
        deliver(store, b"one")
        stamps = [box.changeStamp()]
        if stamps[0] is None:
            assert box.snapshot().changeStamp is None
            return  # this backend always scans
        assert box.snapshot().changeStamp == stamps[0] == box.changeStamp()
        for change in (lambda: deliver(store, b"two"),
                       lambda: box.storeFlags([1], "add", {"\\Seen"}),
                       lambda: box.storeFlags([99], "add", {"$New"}),
                       lambda: box.expunge([1])):
            change()
            stamps.append(box.changeStamp())
            assert stamps[-1] not in stamps[:-1]
            assert box.snapshot().changeStamp == stamps[-1]

    def test_storeFlagsModes(self, store):
        """If this fails, flags set over IMAP (STORE FLAGS, +FLAGS, -FLAGS)
        come out wrong, or a client's view of changes (MODSEQ) is stale."""
        deliver(store, b"a")
        deliver(store, b"b")
        box = store.mailbox(USER)
        results, failed = box.storeFlags([1, 2, 99], "set", {"\\Seen", "$Work", "\\Recent"})
        assert failed == [] and set(results) == {1, 2}
        assert results[1][0] == {"\\Seen", "$Work"}
        modseq = results[1][1]
        results, _ = box.storeFlags([1], "add", {"\\Flagged"})
        assert results[1][0] == {"\\Seen", "$Work", "\\Flagged"}
        assert results[1][1] > modseq
        # No change: the same modseq, still reported.
        same, _ = box.storeFlags([1], "add", {"\\Flagged"})
        assert same[1] == results[1]
        results, _ = box.storeFlags([1], "remove", {"$work", "\\Seen"})
        assert results[1][0] == {"\\Flagged"}
        assert {m.uid: m.flags for m in box.messages()} == {
            1: {"\\Flagged"}, 2: {"\\Seen", "$Work"}}
        box.setFlags(2, {"\\Answered"})
        assert box.messages()[1].flags == {"\\Answered"}
        with pytest.raises(KeyError):
            box.setFlags(99, {"\\Seen"})

    def test_unchangedSince(self, store):
        """If this fails, two clients changing one message's flags at once
        overwrite each other (RFC 7162 3.1.3 conditional STORE)."""
        deliver(store, b"a")
        deliver(store, b"b")
        box = store.mailbox(USER)
        first = {m.uid: m.modseq for m in box.messages()}
        box.storeFlags([2], "add", {"\\Seen"})
        results, failed = box.storeFlags([1, 2], "add", {"\\Flagged"},
                                         unchangedSince=first[2])
        assert failed == [2] and set(results) == {1}
        assert box.messages()[1].flags == {"\\Seen"}

    def test_keywordLimit(self, store):
        """If this fails, a client defining too many keywords corrupts flags
        instead of getting NO [LIMIT], or PERMANENTFLAGS keeps \\*."""
        deliver(store, b"a")
        box = store.mailbox(USER)
        for i in range(26):
            box.storeFlags([1], "add", {f"k{i}"})
        snapshot = box.snapshot()
        assert len(snapshot.keywords) == 26 and snapshot.keywordsFull
        before = box.messages()[0]
        with pytest.raises(KeywordLimit):
            box.storeFlags([1], "add", {"one-too-many", "\\Seen"})
        assert box.messages()[0] == before
        with pytest.raises(KeywordLimit):
            box.append(io.BytesIO(b"x"), ("another",))
        # Known keywords (any case) and removals still work.
        box.storeFlags([1], "remove", {"K0"})
        assert "k0" not in box.messages()[0].flags

    def test_snapshotAndRecent(self, store):
        """If this fails, SELECT shows wrong counts, or two sessions both
        (or neither) see new mail as \\Recent (RFC 3501 2.3.2)."""
        deliver(store, b"a")
        deliver(store, b"b")
        box = store.mailbox(USER)
        looking = box.snapshot()
        assert looking.recent == {1, 2}
        assert (looking.uidNext, looking.uidValidity) == (3, box.uidValidity())
        assert looking.highestModSeq == box.highestModSeq()
        claimed = box.snapshot(claimRecent=True)
        assert claimed.recent == {1, 2}
        assert box.snapshot(claimRecent=True).recent == frozenset()
        deliver(store, b"c")
        assert box.snapshot().recent == {3}
        assert self.reopen(store).mailbox(USER).snapshot(claimRecent=True).recent == {3}
        assert box.snapshot(claimRecent=True).recent == frozenset()

    def test_changedSince(self, store):
        """If this fails, a QRESYNC client resyncing a mailbox misses a flag
        change or an expunge made elsewhere (or is told of ones it knew),
        or an IMAP session re-reads the whole mailbox after each change."""
        for i in range(4):
            deliver(store, b"m%d" % i)
        box = store.mailbox(USER)
        start = box.snapshot().highestModSeq  # a session's view
        quiet = box.changedSince(start)
        assert (quiet.since, quiet.messages, quiet.vanished) == (start, [], ())
        assert (quiet.uidValidity, quiet.uidNext, quiet.highestModSeq) == (
            box.uidValidity(), 5, start)
        flagged = box.storeFlags([2], "add", {"\\Flagged", "$Work"})[0][2][1]
        box.expunge([3, 4])
        other = self.reopen(store).mailbox(USER)  # another process asks
        for asking in (box, other):
            changes = asking.changedSince(start)
            assert changes.since == start
            assert [(i.uid, i.flags, i.modseq) for i in changes.messages] == [
                (2, {"\\Flagged", "$Work"}, flagged)]
            assert changes.vanished == (3, 4)
            assert "$Work" in changes.keywords
            assert changes.highestModSeq == box.highestModSeq() > flagged
            later = asking.changedSince(flagged)
            assert later.messages == [] and later.vanished == (3, 4)
        deliver(store, b"new")
        box.move([1], store.mailbox(USER, "Trash"))
        changes = box.changedSince(flagged)
        assert [i.uid for i in changes.messages] == [5] and changes.vanished == (1, 3, 4)
        assert changes.messages[0].size == 3
        assert box.changedSince(box.highestModSeq()).messages == []
        # A whole snapshot (since None) is the answer of a backend whose
        # bounded history no longer reaches back: never for changes this new.

    def test_changedSinceClaimsRecent(self, store):
        """If this fails, new mail a session learns of through a refresh is
        \\Recent in two sessions, or in none (RFC 3501 2.3.2)."""
        deliver(store, b"a")
        box = store.mailbox(USER)
        seen = box.snapshot(claimRecent=True).highestModSeq
        deliver(store, b"b")
        assert box.changedSince(seen).recent == {2}
        assert box.changedSince(seen, claimRecent=True).recent == {2}
        assert box.changedSince(seen, claimRecent=True).recent == frozenset()
        assert box.snapshot().recent == frozenset()

    def test_expungeDeletedRemovesWhatIsDeletedNowAndTellsTheChanges(self, store):
        """If this fails, an IMAP EXPUNGE keeps a message another client
        flagged \\Deleted, removes one whose flag another client took
        away, or leaves the session unaware of what went or came."""
        for i in range(5):
            deliver(store, b"m%d" % i)
        box = store.mailbox(USER)
        start = box.snapshot(claimRecent=True).highestModSeq  # the session's view
        box.storeFlags([2, 4], "add", {"\\Deleted"})
        other = self.reopen(store).mailbox(USER)  # another client, maybe another process
        other.storeFlags([3], "add", {"\\Deleted", "\\Seen"})
        other.storeFlags([4], "remove", {"\\Deleted"})
        deliver(store, b"new")
        expunged, changes = box.expungeDeleted(since=start, claimRecent=True)
        assert expunged == [2, 3]
        assert [m.uid for m in box.messages()] == [1, 4, 5, 6]
        assert changes.since == start and changes.vanished == (2, 3)
        assert [(i.uid, i.flags) for i in changes.messages] == [(4, frozenset()), (6, frozenset())]
        assert changes.recent == {6}
        assert changes.highestModSeq == box.highestModSeq()
        assert (changes.uidNext, changes.uidValidity) == (7, box.uidValidity())
        # Of the given UIDs only (UID EXPUNGE), and nothing read without since.
        box.storeFlags([1, 5], "add", {"\\Deleted"})
        assert box.expungeDeleted(uids={5, 6}) == ([5], None)
        assert [m.uid for m in box.messages()] == [1, 4, 6]
        assert box.expungeDeleted(since=box.highestModSeq())[0] == [1]
        quiet = box.highestModSeq()
        assert box.expungeDeleted(since=quiet)[1].vanished == ()
        assert box.highestModSeq() == quiet  # nothing expunged, nothing changed
        trash = store.mailbox(USER, "Trash")
        store.deleteMailbox(USER, "Trash")
        with pytest.raises(MailboxGone):
            trash.expungeDeleted()

    def test_storeFlagsWithChangesTellsItsOwnChangeAndOthers(self, store):
        """If this fails, an IMAP STORE tells the client its own flag
        change wrongly, misses another client's change or a delivery made
        meanwhile (RFC 3501 7: told at the end of any command), or reads
        more than what changed."""
        for i in range(3):
            deliver(store, b"m%d" % i)
        box = store.mailbox(USER)
        start = box.snapshot(claimRecent=True).highestModSeq  # the session's view
        other = self.reopen(store).mailbox(USER)  # another client, maybe another process
        other.storeFlags([3], "add", {"\\Seen"})
        deliver(store, b"new")
        (results, failed), changes = box.storeFlagsWithChanges(
            [1, 2, 9], "add", {"\\Flagged", "$Work"}, since=start, claimRecent=True)
        assert failed == [] and sorted(results) == [1, 2]
        assert results[1][0] == {"\\Flagged", "$Work"}
        assert changes.since == start and changes.vanished == ()
        assert [(i.uid, i.flags) for i in changes.messages] == [
            (1, {"\\Flagged", "$Work"}), (2, {"\\Flagged", "$Work"}), (3, {"\\Seen"}),
            (4, frozenset())]
        assert [i.modseq for i in changes.messages[:2]] == [results[1][1], results[2][1]]
        assert changes.recent == {4}
        assert "$Work" in changes.keywords
        assert changes.highestModSeq == box.highestModSeq()
        assert (changes.uidNext, changes.uidValidity) == (5, box.uidValidity())
        # Nothing else changed since: only this change is read.
        quiet, flagged = changes.highestModSeq, results[1][1]
        (results, failed), changes = box.storeFlagsWithChanges(
            [1, 4], "remove", {"\\Flagged"}, unchangedSince=flagged - 1, since=quiet,
            claimRecent=True)
        assert (failed, list(results)) == ([1], [4])  # 1 changed after flagged - 1
        assert changes.messages == [] and changes.highestModSeq == quiet
        (results, _), changes = box.storeFlagsWithChanges([2], "set", {"\\Seen"}, since=quiet)
        assert [(i.uid, i.flags, i.modseq) for i in changes.messages] == [
            (2, {"\\Seen"}, quiet + 1)]
        assert results[2] == ({"\\Seen"}, quiet + 1)
        assert changes.highestModSeq == quiet + 1 == box.highestModSeq()
        assert changes.messages[0] == [m for m in box.messages() if m.uid == 2][0]._replace(
            path=changes.messages[0].path)

    def test_appendWithChangesTellsTheNewMessageAndOthers(self, store):
        """If this fails, an IMAP APPEND into the open mailbox does not
        tell its EXISTS (or tells it wrongly, or not \\Recent), or misses
        what another client changed meanwhile."""
        deliver(store, b"m0")
        box = store.mailbox(USER)
        start = box.snapshot(claimRecent=True).highestModSeq
        self.reopen(store).mailbox(USER).storeFlags([1], "add", {"\\Seen"})
        uid, changes = box.appendWithChanges(io.BytesIO(b"Subject: a\r\n\r\nx\r\n"),
                                             ("\\Draft",), 1e9, since=start,
                                             claimRecent=True)
        assert uid == 2
        assert [(i.uid, i.flags) for i in changes.messages] == [
            (1, {"\\Seen"}), (2, {"\\Draft"})]
        assert changes.messages[1].internalDate == 1e9
        assert changes.recent == {2} and changes.since == start
        assert (changes.uidNext, changes.highestModSeq) == (3, box.highestModSeq())
        assert box.snapshot(claimRecent=True).recent == frozenset()  # claimed
        # Nothing else changed since: the new message alone.
        quiet = changes.highestModSeq
        uid, changes = box.appendWithChanges(io.BytesIO(b"b"), since=quiet)
        assert [i.uid for i in changes.messages] == [uid] == [3]
        assert changes.recent == {3}  # not claimed: another session may be told
        assert (changes.uidNext, changes.highestModSeq) == (4, box.highestModSeq())
        trash = store.mailbox(USER, "Trash")
        store.deleteMailbox(USER, "Trash")
        with pytest.raises(MailboxGone):
            trash.appendWithChanges(io.BytesIO(b"c"), since=0)

    # -- content ------------------------------------------------------------

    def test_openMessagesTogether(self, store):
        """If this fails, a FETCH of several bodies sends the wrong octets
        for some, in the wrong order, fails on a message expunged
        meanwhile, or leaves files open."""
        for i in range(4):
            deliver(store, b"body %d" % i)
        box = store.mailbox(USER)
        assert [m.uid for m in box.messages()] == [1, 2, 3, 4]
        box.expunge([2])
        opened = box.openMessages([4, 1, 2, 3])
        uid, content = next(opened)
        with content:
            assert (uid, content.read()) == (4, b"body 3")
        box.expunge([3])  # after the look-up: may still be read, or left out
        found = []
        for uid, content in opened:
            with content:
                found.append((uid, content.read()))
        assert found[0] == (1, b"body 0") and found[1:] in ([], [(3, b"body 2")]), found
        first = box.openMessages([1, 4])
        uid, content = next(first)
        with content:
            assert (uid, content.read()) == (1, b"body 0")
        first.close()  # stopped early: the other is never opened
        assert list(box.openMessages([])) == [] and list(box.openMessages([99])) == []

    def test_openMessageContent(self, store):
        """If this fails, FETCH of a body part or POP3 RETR sends the wrong
        octets, or a message expunged while being sent is cut short."""
        body = bytes(range(256)) * 4
        deliver(store, body)
        box = store.mailbox(USER)
        content = box.openMessage(1)
        assert content.size == len(body)
        assert content.read(10) == body[:10]
        assert content.tell() == 10
        assert content.readAt(100, 5) == body[100:105]
        assert content.tell() == 10  # readAt does not move it
        assert content.seek(-4, 2) == len(body) - 4
        assert content.read() == body[-4:]
        assert content.read() == b""
        assert content.readAt(len(body) - 2, 100) == body[-2:]
        copy = content.duplicate()
        content.close()
        content.close()
        box.setFlags(1, {"\\Seen"})
        box.expunge([1])
        with copy:
            assert copy.seek(0) == 0 and copy.read() == body
            assert copy.size == len(body)
        with pytest.raises(KeyError):
            box.openMessage(1)

    # -- copy and move -----------------------------------------------------------

    def test_copy(self, store):
        """If this fails, COPY loses flags or dates, answers a wrong COPYUID
        (UIDPLUS), or changes the source."""
        box = store.mailbox(USER)
        box.append(io.BytesIO(b"one"), ("\\Seen", "$Work"), 1_000_000_000)
        box.append(io.BytesIO(b"two"), ("\\Flagged",), 1_100_000_000)
        box.append(io.BytesIO(b"three"))
        box.expunge([2])
        archive = store.mailbox(USER, "Archive")
        archive.append(io.BytesIO(b"already there"))
        pairs = box.copy([3, 1, 2, 77], archive)
        assert pairs == [(1, 2), (3, 3)]
        copied = {m.uid: m for m in archive.messages()}
        assert copied[2].flags == {"\\Seen", "$Work"}
        assert copied[2].internalDate == 1_000_000_000
        with archive.openMessage(3) as content:
            assert content.read() == b"three"
        assert [m.uid for m in box.messages()] == [1, 3]
        assert box.copy([], archive) == []
        # Into the same mailbox: new UIDs there.
        assert box.copy([1], box) == [(1, 4)]

    def test_move(self, store):
        """If this fails, MOVE leaves the message in both folders or in
        neither (RFC 6851)."""
        box = store.mailbox(USER)
        for body in (b"a", b"b", b"c"):
            box.append(io.BytesIO(body), ("\\Deleted",) if body == b"b" else ())
        trash = store.mailbox(USER, "Trash")
        assert box.move([2, 3], trash) == [(2, 1), (3, 2)]
        assert [m.uid for m in box.messages()] == [1]
        assert [m.flags for m in trash.messages()] == [{"\\Deleted"}, frozenset()]
        with trash.openMessage(2) as content:
            assert content.read() == b"c"

    def test_copyKeywordLimit(self, store):
        """If this fails, COPY into a folder with no room for a keyword
        silently drops it instead of saying NO [LIMIT]."""
        box = store.mailbox(USER)
        box.append(io.BytesIO(b"a"), ("$New",))
        target = store.mailbox(USER, "Archive")
        target.append(io.BytesIO(b"b"), tuple(f"k{i}" for i in range(26)))
        with pytest.raises(KeywordLimit):
            box.copy([1], target)
        with pytest.raises(KeywordLimit):
            box.move([1], target)
        assert [m.uid for m in box.messages()] == [1]

    # -- usage (quotas) -------------------------------------------------------

    def test_usage(self, store):
        """If this fails, GETQUOTA and `pymailer user list` show a wrong
        usage, and a full mailbox takes mail (or an empty one refuses it):
        every message of every folder counts, each copy once, expunged
        ones no more, and a user never seen has used nothing."""
        assert store.usage("nobody@example.org") == 0
        assert store.listMailboxes(USER)  # made: still empty
        assert store.usage(USER) == 0
        deliver(store, b"12345")
        box = store.mailbox(USER)
        box.append(io.BytesIO(b"abc"))
        store.createMailbox(USER, "Work/Deep")
        box.copy([1, 2], store.mailbox(USER, "Work/Deep"))
        assert store.usage(USER) == 16
        assert self.reopen(store).usage(USER) == 16
        box.expunge([1])
        assert store.usage(USER) == 11
        deliver(store, b"other", user=OTHER)
        assert store.usage(USER) == 11 and store.usage(OTHER) == 5

    def test_mailboxCounts(self, store):
        """If this fails, the webmail's folder list shows wrong unread
        counts: every mailbox is counted (empty ones as 0, 0), a message
        is unread until \\Seen is set, and another user's mail never
        counts."""
        deliver(store, b"one")
        deliver(store, b"two")
        store.createMailbox(USER, "Work/Deep")
        box = store.mailbox(USER)
        box.storeFlags([1], "add", ["\\Seen", "\\Flagged"])
        box.copy([1, 2], store.mailbox(USER, "Work/Deep"))
        store.mailbox(USER, "Work/Deep").storeFlags([2], "add", ["\\Answered", "seenit"])
        deliver(store, b"other", user=OTHER)
        counts = store.mailboxCounts(USER)
        assert set(counts) == set(store.listMailboxes(USER))
        assert counts["INBOX"] == (2, 1) and counts["Work/Deep"] == (2, 1)
        assert all(counts[name] == (0, 0) for name in counts if name not in ("INBOX", "Work/Deep"))
        box.storeFlags([2], "add", ["\\Seen"])
        assert self.reopen(store).mailboxCounts(USER)["INBOX"] == (2, 0)
        assert store.mailboxCounts(OTHER)["INBOX"] == (1, 1)

    # -- subscriptions, maildrop lock, spool ----------------------------------

    def test_subscriptions(self, store):
        """If this fails, LSUB forgets a client's subscribed folders, or a
        deleted folder's subscription vanishes (RFC 3501 6.3.6)."""
        assert store.subscriptions(USER) == set()
        store.createMailbox(USER, "Work")
        store.subscribe(USER, "Work")
        store.subscribe(USER, "Work")
        store.subscribe(USER, "INBOX")
        store.deleteMailbox(USER, "Work")
        assert self.reopen(store).subscriptions(USER) == {"Work", "INBOX"}
        store.unsubscribe(USER, "Work")
        store.unsubscribe(USER, "Never")
        assert store.subscriptions(USER) == {"INBOX"}
        assert store.subscriptions(OTHER) == set()

    def test_maildropLock(self, store):
        """If this fails, two POP3 sessions on one maildrop delete each
        other's view (RFC 1939 4), or a maildrop stays locked for good."""
        lock = store.lockMaildrop(USER)
        with pytest.raises(MaildropLocked):
            self.reopen(store).lockMaildrop(USER)
        other = store.lockMaildrop(OTHER)
        lock.release()
        lock.release()
        again = self.reopen(store).lockMaildrop(USER)
        again.release()
        other.release()

    def test_appendSpool(self, store):
        """If this fails, a large IMAP APPEND cannot be received."""
        spool = store.newAppendSpool()
        try:
            spool.write(b"x" * 300_000)
            spool.write(b"end")
            spool.seek(0)
            uid = store.mailbox(USER).append(spool)
        finally:
            spool.close()
        assert store.mailbox(USER).messages()[0].size == 300_003
        with store.mailbox(USER).openMessage(uid) as content:
            assert content.readAt(300_000, 10) == b"end"

    # -- summaries (what IMAP needs without opening the message) -----------

    SUMMARISED = (
        b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\r\n"
        b"To: Bob <bob@example.net>, carol@example.net\r\n"
        b"Subject: Re: [list] =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"Date: Tue, 1 Dec 2026 10:00:00 +0100\r\n"
        b"Message-ID: <m2@example.org>\r\n"
        b"In-Reply-To: <m1@example.org>\r\n"
        b"References: <m0@example.org>\r\n <m1@example.org>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: application/pdf; name=a.pdf\r\n"
        b"Content-Disposition: attachment; filename=a.pdf\r\n\r\nJVBER\r\n--b--\r\n")

    def test_summaries(self, store):
        """If this fails, SORT, THREAD and FETCH ENVELOPE/BODYSTRUCTURE show
        wrong senders, subjects, dates or threads, or the webmail's
        attachment mark is wrong."""
        from pymailer.imap.fetch import formatStructure
        from pymailer.message.mime import Part

        deliver(store, self.SUMMARISED)
        box = store.mailbox(USER)
        plain = box.append(io.BytesIO(b"Subject: plain\r\n\r\nbody\r\n"))
        [first, _] = [i.uid for i in box.messages()]
        found = box.summaries([first, plain, 999])
        assert set(found) == {first, plain}
        s = found[first]
        part = Part(self.SUMMARISED, 0, len(self.SUMMARISED))
        assert s.envelope == formatStructure(part.envelope())
        assert s.bodystructure == formatStructure(part.bodystructure(True))
        assert s.body == formatStructure(part.bodystructure(False))
        assert s.date == 1796115600  # 2026-12-01 09:00:00 UTC
        assert s.subject == "Re: [list] Grüße"
        assert (s.baseSubject, s.isReply) == ("Grüße", True)
        assert (s.sender.name, s.sender.mailbox, s.sender.host) == ("Jörg", "joerg", "example.org")
        assert (s.to.name, s.to.addrSpec()) == ("Bob", "bob@example.net")
        assert s.cc.addrSpec() == ""
        assert s.messageId == "m2@example.org"
        assert s.inReplyTo == "m1@example.org"
        assert s.references == ("m0@example.org", "m1@example.org")
        assert s.hasAttachments
        p = found[plain]
        assert (p.date, p.baseSubject, p.isReply, p.messageId, p.references,
                p.hasAttachments) == (None, "plain", False, "", (), False)
        # Sort fields only: whatever the backend leaves out, the fields hold.
        light = box.summaries([first], structure=False)[first]
        assert (light.baseSubject, light.references) == (s.baseSubject, s.references)

    def test_summariesFollowCopies(self, store):
        """If this fails, a message copied or moved to another folder sorts
        or threads differently there, or FETCH ENVELOPE fails on it."""
        deliver(store, self.SUMMARISED)
        box = store.mailbox(USER)
        store.createMailbox(USER, "Other")
        other = store.mailbox(USER, "Other")
        [uid] = [i.uid for i in box.messages()]
        original = box.summaries([uid])[uid]
        [(_, copied)] = box.copy([uid], other)
        [(_, moved)] = box.move([uid], store.mailbox(USER, "Archive"))
        assert other.summaries([copied])[copied] == original
        archive = self.reopen(store).mailbox(USER, "Archive")
        assert archive.summaries([moved])[moved] == original
        assert box.summaries([uid]) == {}

    # -- SAVEDATE (RFC 8514) and OBJECTID (RFC 8474) ------------------------

    def test_saveDate(self, store):
        """If this fails, a client expiring Trash by when mail was moved
        there (RFC 8514 SAVEDATE) deletes mail too early or never: a COPY
        or MOVE must get a new save date, not the source's."""
        deliver(store, b"Subject: old\r\n\r\nx")
        inbox = store.mailbox(USER)
        appended = inbox.append(io.BytesIO(b"y"), internalDate=86400.0)
        before = time.time()
        [(_, copied)] = inbox.copy([appended], store.mailbox(USER, "Trash"))
        after = time.time()
        delivered, kept = inbox.messages()
        assert delivered.saveDate is not None and delivered.saveDate <= before + 1
        assert kept.internalDate == 86400.0 and kept.saveDate > 86400.0 + 1e6
        [trashed] = store.mailbox(USER, "Trash").messages()
        assert trashed.uid == copied and trashed.internalDate == 86400.0
        assert before - 1 <= trashed.saveDate <= after + 1

    def test_mailboxId(self, store):
        """If this fails, a client (RFC 8474 MAILBOXID) takes a folder
        created again under an old name for the old one (and shows its
        cached mail), or downloads a renamed folder again."""
        store.createMailbox(USER, "Foo")
        first = store.mailbox(USER, "Foo").mailboxId()
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,254}", first)
        assert store.mailbox(USER, "Foo").snapshot().mailboxId == first
        assert self.reopen(store).mailbox(USER, "Foo").mailboxId() == first
        assert first != store.mailbox(USER).mailboxId()
        assert first != store.mailbox(OTHER, "Sent").mailboxId()
        store.renameMailbox(USER, "Foo", "Bar")
        assert store.mailbox(USER, "Bar").mailboxId() == first
        store.createMailbox(USER, "Foo")
        assert store.mailbox(USER, "Foo").mailboxId() != first
        store.deleteMailbox(USER, "Bar")
        store.createMailbox(USER, "Bar")
        assert store.mailbox(USER, "Bar").mailboxId() != first

    def test_emailIds(self, store):
        """If this fails, a client (RFC 8474 EMAILID) downloads a message
        again after another client copied or moved it, or takes two
        different messages for one."""
        deliver(store, b"Subject: a\r\n\r\none")
        deliver(store, b"Subject: b\r\n\r\ntwo")
        inbox = store.mailbox(USER)
        one, two = [i.uid for i in inbox.messages()]
        ids = inbox.emailIds([one, two, 999])
        assert set(ids) == {one, two} and ids[one] != ids[two]
        assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,254}", v) for v in ids.values())
        [(_, copied)] = inbox.copy([one], store.mailbox(USER, "Archive"))
        [(_, moved)] = inbox.move([two], store.mailbox(USER, "Trash"))
        assert store.mailbox(USER, "Archive").emailIds([copied]) == {copied: ids[one]}
        assert store.mailbox(USER, "Trash").emailIds([moved]) == {moved: ids[two]}
        assert self.reopen(store).mailbox(USER).emailIds([one]) == {one: ids[one]}
        # The same mail to another user says nothing of this one's.
        deliver(store, b"Subject: a\r\n\r\none", user=OTHER)
        [theirs] = store.mailbox(OTHER).messages()
        assert store.mailbox(OTHER).emailIds([theirs.uid])[theirs.uid] != ids[one]

    def test_listenersToldOfCreateAndSubscriptions(self, store):
        """If this fails, an IMAP client using NOTIFY (RFC 5465 5.4, 5.5) is
        not told of a folder another session created, or of a subscription
        another session changed."""
        store.createUser(USER)
        calls = []
        store.addListener(lambda user, name: calls.append((user, name)))
        store.createMailbox(USER, "Projects")
        store.subscribe(USER, "Projects")
        store.unsubscribe(USER, "Projects")
        assert calls == [(USER, "Projects")] * 3
