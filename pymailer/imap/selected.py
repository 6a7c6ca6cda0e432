"""
The selected mailbox as one IMAP session last told its client: the
sequence number -> UID map, flags, mod-sequences (RFC 7162) and the
messages that are C{\\Recent} for this session, and the untagged responses
that bring the client up to date from a new store snapshot.

Timing (RFC 3501 7.4.1): EXPUNGE only where the caller allows it; flag
changes and new messages at the end of any command.
"""

import bisect
import operator

from pymailer.imap.parser import formatSet
from pymailer.store.notify import readingWithChanges, readStamp

_uid = operator.attrgetter("uid")

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def formatFlags(flags):
    return b"(" + b" ".join(f.encode("utf-8") for f in sorted(flags)) + b")"


class Selected:
    """
    @ivar flags: C{{uid: frozenset}} of stored flags (system flags, keywords).
    @ivar modseq: C{{uid: mod-sequence}}.
    @ivar recent: the UIDs that are C{\\Recent} in this session: those a
        read-write scan claimed, or (read-only) no session had claimed yet.
    @ivar keywords: the keywords last announced in C{FLAGS}.
    @ivar showRecent: whether C{\\Recent} and C{RECENT} are told: not to an
        IMAP4rev2 client (RFC 9051 2.3.2, Appendix E).
    """

    def __init__(self, name, mailbox, readOnly):
        self.name = name
        self.mailbox = mailbox
        self.readOnly = readOnly
        self.uids = []
        self.infos = {}
        self.flags = {}
        self.modseq = {}
        self.recent = set()
        self.keywords = None
        self.keywordsFull = False
        self.validity = 0
        self.uidNext = 1
        self.highestModSeq = 0
        # A change notice came that the state applied may not hold (see
        # noticed): the next command's end reads what changed.
        self.dirty = False
        self._noticeStamp = 0  # the newest notice's (notify.readStamp's count)
        self._readStamp = 0  # taken before the read being applied began
        self.showRecent = True
        # UIDs expunged from the store that the client has not been told
        # of yet (RFC 3501 7.4.1: not during FETCH, STORE, SEARCH), and
        # the HIGHESTMODSEQ before the first of them (RFC 7162 3.2).
        self.unannounced = set()
        self.heldAt = None
        # uid -> MessageSummary read for SORT/THREAD (L{pymailer.imap.sort}):
        # a UID's summary never changes, so it is read from the store once.
        self.summaries = {}
        self.mailboxId = None
        self.emailIds = {}  # uid -> EMAILID (RFC 8474), as read (objectid)

    def noticed(self, stamp):
        """
        In the reactor: the store says the mailbox changed, in a change
        stamped C{stamp} (L{pymailer.interfaces.IChangeNotifier.subscribe};
        0: look again, nothing newer known).
        """
        self.dirty = True
        self._noticeStamp = max(self._noticeStamp, stamp)

    def unchangedSinceRead(self):
        """
        Whether the state holds the mailbox as the store has it, as far as
        this process heard: read at least once, no change noticed since
        (L{noticed}), no expunge held back from the client.
        """
        return bool(self.validity) and not self.dirty and not self.unannounced

    def reading(self):
        """
        A read of the mailbox is about to begin (in whichever thread): a
        notice older than this is one the read will hold, so applying it
        clears L{dirty}; a newer one keeps it (the change may have come
        after the read) and the session reads again.
        """
        self._readStamp = readStamp()
        return self._readStamp

    def scan(self):
        """
        Blocking: what the store has now.  A read-write session claims the
        recent messages; EXAMINE must not (RFC 3501 6.3.2).
        """
        self.reading()
        return self.mailbox.snapshot(claimRecent=not self.readOnly)

    def refresh(self):
        """
        Blocking: what changed since the state last applied, from the
        store's L{pymailer.interfaces.IMailbox.changedSince}: one cheap
        query when nothing did, the changed rows otherwise, never the
        whole mailbox (issue 13).  A whole L{scan} before the first.
        """
        if not self.validity:
            return self.scan()
        self.reading()
        return self.mailbox.changedSince(self.highestModSeq, claimRecent=not self.readOnly)

    def expungeDeleted(self, uids=None):
        """
        Blocking: expunge the messages the store has flagged \\Deleted
        (of C{uids} if given), and read what changed since the state last
        applied, the expunges included, in one store call
        (L{pymailer.interfaces.IMailbox.expungeDeleted}).
        """
        with readingWithChanges(self.reading()):
            return self.mailbox.expungeDeleted(uids, self.highestModSeq,
                                               claimRecent=not self.readOnly)[1]

    def storeFlags(self, uids, mode, flags, unchangedSince=None):
        """
        Blocking: change the flags of C{uids} and read what changed since
        the state last applied, the change included, in one store call
        (L{pymailer.interfaces.IMailbox.storeFlagsWithChanges}).
        """
        with readingWithChanges(self.reading()):
            return self.mailbox.storeFlagsWithChanges(
                uids, mode, flags, unchangedSince, self.highestModSeq,
                claimRecent=not self.readOnly)

    def append(self, source, flags, internalDate):
        """
        Blocking: append a message and read what changed since the state
        last applied, the message included, in one store call
        (L{pymailer.interfaces.IMailbox.appendWithChanges}).
        """
        with readingWithChanges(self.reading()):
            return self.mailbox.appendWithChanges(source, flags, internalDate,
                                                  self.highestModSeq, not self.readOnly)

    def shownFlags(self, uid):
        """The flags as FETCH shows them, C{\\Recent} included."""
        flags = self.flags.get(uid, set())
        return flags | {"\\Recent"} if self.showRecent and uid in self.recent else flags

    def fetchUpdate(self, seq, uid, condstore, withFlags=True, withUid=True):
        """
        An untagged FETCH with the flags of a message; once CONDSTORE is
        enabled it carries UID and MODSEQ too (RFC 7162 3.1, "CONDSTORE
        enabling command").
        """
        items = [b"FLAGS " + formatFlags(self.shownFlags(uid))] if withFlags else []
        if withUid or condstore:
            items.append(b"UID %d" % uid)
        if condstore:
            items.append(b"MODSEQ (%d)" % self.modseq.get(uid, 0))
        return b"* %d FETCH (%s)" % (seq, b" ".join(items))

    def flagsResponses(self):
        """C{FLAGS} and C{PERMANENTFLAGS} for this mailbox (RFC 3501 7.2.6)."""
        defined = " ".join(SYSTEM_FLAGS + tuple(self.keywords or ())).encode("utf-8")
        permanent = b"" if self.readOnly else defined + (
            b"" if self.keywordsFull else b" \\*")
        return [b"* FLAGS (%s)" % defined,
                b"* OK [PERMANENTFLAGS (%s)] Flags permitted" % permanent]

    def announceKeywords(self, flags):
        """
        The C{FLAGS} and C{PERMANENTFLAGS} lines to send before an untagged
        FETCH showing C{flags}, if these hold keywords the client was not
        told of (clients drop flags that C{FLAGS} did not define, RFC 3501
        7.2.6); none otherwise.
        """
        if self.keywords is None:
            return []
        new = sorted({f for f in flags if not f.startswith("\\")} - set(self.keywords))
        if not new:
            return []
        self.keywords += tuple(new)
        return self.flagsResponses()

    def apply(self, snapshot, allowExpunge=True, condstore=False, qresync=False):
        """
        Bring the client's view up to date with a
        L{pymailer.store.MailboxSnapshot}, whole or only what changed
        (C{since} set); returns the untagged lines.  Expunges wait while
        C{allowExpunge} is false (RFC 3501 7.4.1), and are told as
        C{VANISHED} once C{qresync} is enabled (RFC 7162 3.2.10).
        """
        keywords = tuple(snapshot.keywords)
        # Keywords already told by announceKeywords are not told again.
        announce = self.keywords is not None and (
            set(keywords) != set(self.keywords) or snapshot.keywordsFull != self.keywordsFull)
        self.keywords, self.keywordsFull = keywords, snapshot.keywordsFull
        lines = self.flagsResponses() if announce else []
        messages = snapshot.messages
        if self.uids:
            if snapshot.since is None:
                current = {i.uid: i for i in messages}
                self.unannounced.update(u for u in self.uids if u not in current)
            else:
                self.unannounced.update(u for u in snapshot.vanished if u in self.flags)
            if self.unannounced and self.heldAt is None:
                self.heldAt = self.highestModSeq
            if allowExpunge and self.unannounced:
                lines += self._expunged(qresync)
            for info in messages:
                known = self.flags.get(info.uid)
                if known is None:
                    continue  # new (below), or expunged and not yet told
                self.infos[info.uid] = info
                if info.flags != known or (condstore and info.modseq != self.modseq[info.uid]):
                    self.flags[info.uid], self.modseq[info.uid] = frozenset(info.flags), info.modseq
                    seq = bisect.bisect_left(self.uids, info.uid) + 1
                    lines.append(self.fetchUpdate(seq, info.uid, condstore))
        # Messages come ascending by UID: the new ones are those past the
        # last one known (one that reappeared lower would break the map).
        # Flag sets are the store's frozensets, shared between messages,
        # not a set each (a SELECT of 100,000 messages made 100,000).
        last = self.uids[-1] if self.uids else 0
        new = messages[bisect.bisect_right(messages, last, key=_uid):]
        newUids = [i.uid for i in new]
        self.uids.extend(newUids)
        self.infos.update(zip(newUids, new))
        self.flags.update((i.uid, frozenset(i.flags)) for i in new)
        self.modseq.update((i.uid, i.modseq) for i in new)
        if snapshot.recent:
            self.recent |= snapshot.recent.intersection(newUids)
        if new or (not lines and not self.validity):
            lines.append(b"* %d EXISTS" % len(self.uids))
            # RFC 3501 7.3.2: RECENT goes with a change of the count.
            if self.showRecent:
                lines.append(b"* %d RECENT" % len(self.recent))
        if qresync and self.unannounced:
            # RFC 7162 3.2: MODSEQs above an expunge not yet told must come
            # with a HIGHESTMODSEQ below it, so a client that loses the
            # connection now resyncs from before the expunge.
            lines.append(b"* OK [HIGHESTMODSEQ %d] Expunges pending" % self.heldAt)
        self.validity, self.uidNext = snapshot.uidValidity, snapshot.uidNext
        self.highestModSeq = snapshot.highestModSeq
        if snapshot.mailboxId is not None:  # a whole snapshot's (changedSince has none)
            self.mailboxId = snapshot.mailboxId
        # Not simply cleared: a notice that came while the read ran may
        # be of a change the read missed (it would wait for the next one).
        self.dirty = self._noticeStamp > self._readStamp
        return lines

    def _expunged(self, qresync):
        """
        Forget the messages expunged since last told, and say so: one
        C{EXPUNGE} each (RFC 3501 7.4.1, the numbers shifting as they go),
        or once QRESYNC is enabled one C{VANISHED} with their UIDs (RFC
        7162 3.2.10).
        """
        gone = sorted(self.unannounced)
        self.unannounced, self.heldAt = set(), None
        lines, told = [], []
        for uid in gone:
            seq = bisect.bisect_left(self.uids, uid)
            if seq == len(self.uids) or self.uids[seq] != uid:
                continue  # never shown to this session
            del self.uids[seq]
            for known in (self.infos, self.flags, self.modseq):
                known.pop(uid, None)
            self.recent.discard(uid)
            told.append(uid)
            if not qresync:
                lines.append(b"* %d EXPUNGE" % (seq + 1))
        if qresync and told:
            lines.append(b"* VANISHED " + formatSet(told))
        return lines
