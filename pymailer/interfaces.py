"""
Every seam of pymailer's own, in one place.

Twisted's interfaces are reused where they exist (``IMessageDelivery``,
``IMessageDeliveryFactory``, ``IMailboxPOP3``, ``IAccountIMAP``); these are the
ones Twisted has no word for.  Protocol code talks to the store and the queue
only through these, so a backend (Maildir today, PostgreSQL later) can change
without the protocols knowing.

Blocking: methods documented as *blocking* touch the disk and must be called
from a thread pool (``twisted.internet.threads.deferToThreadPool``), never from
the reactor thread.  Methods returning a ``Deferred`` are safe on the reactor.
"""

from zope.interface import Attribute, Interface


class IAccountDirectory(Interface):
    """
    The users, domains and aliases database (``pymailer user|domain|alias``).

    Addresses are ``local@domain`` strings; implementations compare domains
    case-insensitively and local parts case-insensitively (Unicode casefold).
    All methods but L{version} are blocking, and every call sees changes
    made by other processes (the admin command) since the last call: no
    cache that another process can invalidate unseen (a cache outside
    asks L{version} before each use).
    """

    def hasDomain(domain):
        """
        @return: C{True} if C{domain} is one of ours.
        """

    def hasUser(address):
        """
        @return: C{True} if C{address} is a mailbox owner (a user).
        """

    def aliasTargets(address):
        """
        @return: the C{tuple} of target addresses of the alias C{address}, or
            an empty tuple if C{address} is not an alias.  For a user, the
            targets of their forwarding (themselves among them when their
            mailbox keeps a copy).
        """

    def catchAll(domain):
        """
        @return: the address that receives mail for unknown local parts of
            C{domain}, or C{None}.
        """

    def version():
        """
        A mark that changes whenever the directory's contents change, by
        any process (the admin command, another worker, the web pages):
        two equal marks mean nothing changed in between, so what was
        looked up under the first still holds.  Unlike the other methods
        it does not block (no disk I/O, no lock wait): the SMTP server
        calls it on the reactor thread before each answer it keeps
        (L{pymailer.intake.RouteCache}).  Called from one thread only.

        @return: a hashable mark, or C{None} when it cannot tell now (keep
            nothing: look up again).
        """

    def passwordHash(address):
        """
        @return: the stored argon2id hash (C{str}) of user C{address}, or
            C{None} if there is no such user.
        """

    def addDomain(domain, catchAll=None):
        """Add a local domain (idempotent error if it exists: L{KeyError})."""

    def removeDomain(domain):
        """Remove a domain with its users and aliases; L{KeyError} if unknown."""

    def listDomains():
        """@return: sorted C{list} of domain names."""

    def addUser(address, passwordHash):
        """Add a user of an existing domain; L{KeyError}/L{ValueError} on error."""

    def setPasswordHash(address, passwordHash):
        """Replace a user's password hash; L{KeyError} if no such user."""

    def removeUser(address):
        """Remove a user (not their mail); L{KeyError} if no such user."""

    def isAdmin(address):
        """
        @return: C{True} if C{address} is a user marked admin (may use the
            web admin pages); C{False} for anyone else, malformed included.
        """

    def setAdmin(address, admin=True):
        """Mark a user admin, or not; L{KeyError} if no such user."""

    def isDisabled(address):
        """
        @return: C{True} if C{address} is a user whose account is disabled:
            they may not log in (any protocol, the web pages) but their
            mail is still delivered.  C{False} for anyone else.
        """

    def setDisabled(address, disabled=True):
        """Disable a user's logins, or enable them; L{KeyError} if no such user."""

    def quota(address):
        """
        @return: the user's storage limit in octets (C{int}), or C{None}
            for no limit (and for anyone who is not a user).
        """

    def setQuota(address, limit):
        """
        Set a user's storage limit in octets, or with C{None} remove it;
        L{KeyError} if no such user, L{ValueError} if C{limit} is negative.
        """

    def listUsers(domain=None):
        """@return: sorted C{list} of user addresses."""

    def addAlias(alias, targets):
        """Add targets to an alias (created if needed)."""

    def removeAlias(alias, targets=()):
        """Remove some targets of an alias, or the whole alias if none given."""

    def listAliases():
        """@return: sorted C{list} of C{(alias, (target, ...))}."""


class IWebUser(Interface):
    """
    Someone logged in to the web pages (the avatar interface the web login
    asks the realm for).  The avatar is the user's normalised address
    (C{str}); what they may see is decided per request (admin or not).
    """


class IMailStore(Interface):
    """
    Where delivered mail lives: per-user mailboxes with stable UIDs, flags,
    subscriptions and the POP3 maildrop lock.

    Knows nothing of protocols, and protocols know nothing of its layout:
    they never see a path, a file descriptor or a directory name, only
    names, UIDs and L{IMessageContent} objects.  Safe when several
    processes share it (and, for Maildir, outside Maildir tools).

    Users are normalised C{local@domain} addresses (the account directory
    checks them); mailbox names are canonical names from
    L{canonicalName}, C{"/"}-separated.  Unless a method says otherwise it
    is I{blocking}: call it from a thread pool, never the reactor thread.
    A missing user is never an error: the first access makes the account
    (see L{createUser}).
    """

    def canonicalName(name, new=False):
        """
        Validate a mailbox name from a client and return its canonical form
        (C{INBOX} in any case, also as the first component, becomes
        C{INBOX}).  I{Not blocking}: pure computation, safe on the reactor.

        @param new: C{True} for the name of a mailbox about to be made
            (L{createMailbox}, the new name of L{renameMailbox}, which
            check it so): it may not contain the LIST wildcards C{*} and
            C{%}, C1 controls, U+2028/U+2029, bidirectional formatting
            characters or lone surrogates
            (L{pymailer.store.refusedInNewName}).  A name already stored
            with one stays reachable, so that it can be renamed away.
        @raise pymailer.store.MailboxNameTooLong: this backend cannot store
            a name that long (a C{ValueError}; IMAP: C{NO [LIMIT]}).
        @raise ValueError: the name is empty or malformed (empty, C{.} or
            C{..} components, a leading C{/}, control characters), or with
            C{new}, has a character a new name may not have.
        """

    def createUser(user):
        """
        Make the user's mailboxes: INBOX and the special-use folders
        (L{pymailer.store.SPECIAL_USE}, RFC 6154).  Idempotent: folders
        that exist are left alone.  Every other method makes them too, on
        the first access to a user that does not have them yet (an account
        created before, or by an older version), so every account has them
        from the start; a special-use folder the user deleted after that
        stays deleted.
        """

    def deliver(user, prefix, source, mailbox="INBOX", uniqueKey=None,
                checkDuplicate=False):
        """
        Deliver one message durably: C{prefix} (C{bytes}, e.g. trace headers)
        followed by the bytes of the binary file object C{source}, streamed
        (never held whole in memory by a backend that can avoid it).
        Returns only once the message is durable: a crash after the return
        never loses it.  Listeners are told (see L{addListener}).

        @param uniqueKey: a C{str} of C{[A-Za-z0-9_-]} naming this delivery
            (queue id + recipient index); with C{checkDuplicate=True}, a
            message already delivered under that key is not delivered again
            (crash recovery).
        @return: C{True} if delivered, C{False} if it was a duplicate.
        @raise KeyError: no such mailbox.
        @raise ValueError: a malformed C{uniqueKey}, or C{checkDuplicate}
            without one.
        """

    def mailbox(user, name="INBOX"):
        """
        @return: the L{IMailbox} C{name} of C{user}.
        @raise KeyError: no such mailbox.
        @raise ValueError: a name L{canonicalName} refuses.
        """

    def listMailboxes(user):
        """@return: sorted C{list} of canonical mailbox names, INBOX first."""

    def createMailbox(user, name, specialUse=None):
        """
        Create an empty mailbox (with a UIDVALIDITY never given before to
        a mailbox of C{user}, RFC 3501 2.3.1.1).

        @param specialUse: the mailbox's special uses (RFC 6154, e.g.
            C{{"\\Archive"}}), any of L{pymailer.store.SPECIAL_USES};
            C{None}: the standard use of its name, if any
            (L{pymailer.store.SPECIAL_USE}: a deleted C{Sent} made again
            is C{\\Sent} again).  Kept with the mailbox: a rename keeps
            it, a delete drops it.
        @raise KeyError: it exists (INBOX always does).
        @raise ValueError: a name L{canonicalName} refuses as C{new}, or a
            use not in L{pymailer.store.SPECIAL_USES}.
        """

    def specialUses(user):
        """
        @return: C{{name: frozenset of attributes}} for the mailboxes of
            C{user} that have a special use (RFC 6154 LIST attributes,
            e.g. C{"\\Sent"}).
        """

    def deleteMailbox(user, name):
        """
        Delete a mailbox and its messages (not its children).  Sessions
        that have it open get L{pymailer.store.MailboxGone} from then on;
        listeners are told.

        @raise KeyError: there is none.
        @raise ValueError: INBOX cannot be deleted.
        """

    def renameMailbox(user, oldName, newName):
        """
        Rename a mailbox and its children, keeping UIDVALIDITY and UIDs.
        Listeners are told of C{oldName}.

        @raise KeyError: C{oldName} does not exist (C{args[0] == oldName}),
            or C{newName} (or a child's new name) exists.
        @raise ValueError: either name is INBOX (RFC 3501 6.3.5's INBOX
            special case is a L{IMailbox.move} of every message), or
            L{canonicalName} refuses C{oldName}, or C{newName} as C{new}.
        """

    def usage(user):
        """
        The storage C{user}'s mail takes, for quotas (RFC 9208 STORAGE):
        the sum of the sizes (IMAP RFC822.SIZE) of every message in every
        mailbox, a message copied counting once per copy, whatever the
        backend shares on disk.  One aggregate query (or, for Maildir, a
        scan of the user's folders), never a read of the messages.  Does
        not make the account: a user never seen has used C{0}.

        @return: octets (C{int}).
        """

    def mailboxCounts(user):
        """
        How many messages each mailbox of C{user} holds and how many of
        them are not C{\\Seen} (IMAP STATUS MESSAGES and UNSEEN, RFC 3501
        6.3.10), for every mailbox at once: one aggregate query over the
        index (for Maildir, a scan of the file names), never a read of the
        messages, so a folder list can show unread counts on every page.

        @return: C{{name: (messages, unseen)}} for the mailboxes
            L{listMailboxes} gives.
        """

    def subscriptions(user):
        """
        @return: the C{set} of mailbox names C{user} subscribed to
            (IMAP LSUB).  Subscriptions outlive the mailboxes they name
            (RFC 3501 6.3.6): a deleted mailbox stays subscribed.
        """

    def subscribe(user, name):
        """
        Add C{name} to the subscriptions (idempotent).  Does not check that
        the mailbox exists; the protocol decides.  Two sessions changing
        subscriptions at once never lose each other's change.
        """

    def unsubscribe(user, name):
        """Remove C{name} from the subscriptions; no error if absent."""

    def lockMaildrop(user):
        """
        Take the user's POP3 maildrop lock (RFC 1939 4: one POP3 session
        per maildrop), shared by every process on this store, released by
        L{IMaildropLock.release} or when the process dies.  Never waits.

        @return: an L{IMaildropLock}.
        @raise pymailer.store.MaildropLocked: somebody else holds it.
        """

    def newAppendSpool():
        """
        A scratch binary file for incoming content too large to hold in
        memory (an IMAP APPEND literal): C{write}, C{seek}, C{read},
        C{close}; it disappears when closed, or when the process dies.
        Quick (one file creation, no fsync): may be called on the reactor
        thread.  The file's methods block (disk): the caller uses it from
        one thread at a time and closes it after its last write
        (L{pymailer.imap.spool.SpoolingLiteral} chains them in the pool).
        """

    def addListener(listener):
        """
        Call C{listener(user, mailboxName)} after every change to a mailbox
        made through this store object (delivery, append, copy, move, flags,
        expunge, create, delete, rename, and a subscription to the name
        added or removed: IMAP NOTIFY tells of those too, RFC 5465 5.4,
        5.5).  Listeners are called in the thread that
        made the change, after it is durable; an exception a listener raises
        is logged, never passed on.  I{Not blocking.}
        """

    def removeListener(listener):
        """Stop calling C{listener}. I{Not blocking.}"""


class IMaildropLock(Interface):
    """A held POP3 maildrop lock (L{IMailStore.lockMaildrop})."""

    def release():
        """
        Release the lock.  Idempotent, safe from any thread, never raises,
        never blocks for long.
        """


class IMessageContent(Interface):
    """
    The octets of one stored message, opened (L{IMailbox.openMessage}): a
    readable binary file object (C{read}, C{seek}, C{tell}, C{close}, and
    a context manager) over content that never changes while it is open:
    a flag change, an expunge or a rename does not disturb a reader.  No
    C{fileno}: the content need not be a file.  Reads are blocking.
    """

    size = Attribute("The message's size in octets (RFC822.SIZE).")

    def read(size=-1):
        """@return: up to C{size} octets (all if negative) from the position."""

    def seek(offset, whence=0):
        """Move the position, as C{io.IOBase.seek}. @return: the new position."""

    def tell():
        """@return: the position."""

    def readAt(offset, length):
        """
        @return: up to C{length} octets at C{offset}, without using or
            moving the position: safe from several threads at once.
        """

    def duplicate():
        """
        @return: a new L{IMessageContent} on the same octets with its own
            position, open until closed even if this one is closed or the
            message expunged meanwhile.
        """

    def close():
        """Release what the object holds. Idempotent."""


class IMailbox(Interface):
    """
    One mailbox of one user.  UIDs are assigned under a lock shared by every
    process, are strictly ascending, and never reused while UIDVALIDITY holds.
    Every change gives the messages it touches (or, for an expunge, the
    mailbox) a new mod-sequence, and tells the store's listeners.

    All methods are blocking.  Once the mailbox is deleted or renamed away
    (by anyone), methods raise L{pymailer.store.MailboxGone} (a C{KeyError}).
    """

    name = Attribute("The canonical mailbox name, e.g. C{'INBOX'} or C{'Sent'}.")

    def uidValidity():
        """@return: the UIDVALIDITY C{int} (32-bit, non-zero)."""

    def uidNext():
        """@return: the UID the next new message will get."""

    def highestModSeq():
        """@return: the mailbox's HIGHESTMODSEQ (RFC 7162)."""

    def mailboxId():
        """
        The mailbox's MAILBOXID (RFC 8474 4): an ObjectID (C{str} of
        letters and digits) that stays the same across a rename and is
        never given to another mailbox, nor to one created again under the
        same name.
        """

    def emailIds(uids):
        """
        The EMAILIDs (RFC 8474 5.1) of messages: ObjectIDs naming their
        immutable content, the same for a message and its copies made by
        L{copy} or L{move} (COPYUID pairs), never the same for different
        content, and derived so they tell nothing about other users' mail.

        @return: C{{uid: str}} for the C{uids} found.
        """

    def changeStamp():
        """
        A cheap token (one query, no scan) that is different after any
        change to the mailbox by anyone: messages, flags, keywords,
        expunges.  Equal to the C{changeStamp} of a
        L{pymailer.store.MailboxSnapshot} means nothing changed since that
        snapshot, so a NOOP need not scan (RFC 3501 6.1.2).

        @return: the token, or C{None} if this backend cannot tell without
            a scan.
        """

    def messages():
        """
        The mailbox now (new mail from any process gets its UID now).

        @return: C{list} of L{pymailer.store.MessageInfo}, ascending by UID.
        """

    def snapshot(claimRecent=False):
        """
        The mailbox, as L{messages}, with its UIDVALIDITY, UIDNEXT,
        HIGHESTMODSEQ, keywords and C{\\\\Recent} messages, read at once.

        @param claimRecent: the caller is a session that opened the mailbox
            read-write: it is the one told of the recent messages, which
            stop being recent for anyone else (RFC 3501 2.3.2).
        @return: a L{pymailer.store.MailboxSnapshot}.
        """

    def changedSince(modseq, claimRecent=False):
        """
        What changed after mod-sequence C{modseq} (RFC 7162 3.2.5: the
        question QRESYNC asks; a session's refresh after another session's
        change asks it too): the cost follows what changed, not the
        mailbox's size (a backend that keeps an index reads only the
        changed rows; nothing changed is one cheap query).

        @param claimRecent: as for L{snapshot}.
        @return: a L{pymailer.store.MailboxSnapshot} whose C{since} is
            C{modseq}, whose C{messages} are those with a mod-sequence
            above C{modseq} (ascending by UID: flag changes and new
            messages alike), and whose C{vanished} are the UIDs expunged
            with a mod-sequence above C{modseq}, ascending.  A backend
            that no longer remembers every expunge after C{modseq} (its
            history is bounded) returns a whole L{snapshot} instead
            (C{since} C{None}): the caller then compares UIDs.
        """

    def openMessage(uid):
        """
        @return: an L{IMessageContent} on the message's octets.
        @raise KeyError: no message C{uid} (expunged, or never there).
        """

    def openMessages(uids):
        """
        L{openMessage} of several messages (IMAP FETCH of their bodies),
        looked up together where the backend keeps an index (one query,
        not one a message), each opened only when the iteration reaches
        it (an iteration stopped early leaves nothing open).

        @return: an iterator of C{(uid, IMessageContent)}, in the order of
            C{uids}, leaving out those not in the mailbox; the caller
            closes each content.
        """

    def summaries(uids, structure=True):
        """
        What IMAP needs of messages without opening them: their
        L{pymailer.message.summary.MessageSummary} (ENVELOPE, BODYSTRUCTURE,
        BODY, and the header fields SORT and THREAD use).  A summary is
        computed once per content, when it is written (delivery, append,
        import; a copy or move shares it), and kept with the content, so a
        message delivered to ten users is summarised once.  A backend may
        compute a missing one (content written by an older version) on
        this first read, and keeps it.

        @param uids: UIDs of this mailbox; those not in it are left out.
        @param structure: C{False} when only the sort and thread fields
            are wanted: a backend may then leave C{envelope},
            C{bodystructure} and C{body} C{None} (less to read).
        @return: C{{uid: MessageSummary}}.
        """

    def storeFlags(uids, mode, flags, unchangedSince=None):
        """
        Change the flags (IMAP names: C{'\\\\Seen'}, keywords like
        C{'$Junk'}) of messages, atomically for each: C{mode} is C{"set"},
        C{"add"} or C{"remove"}.  Each message whose flags change gets a new
        mod-sequence; one whose mod-sequence is above C{unchangedSince} is
        left alone (RFC 7162 3.1.3 UNCHANGEDSINCE).  C{\\\\Recent} is not a
        stored flag and is ignored.

        @return: C{({uid: (flags, modseq)}, [uids left alone])}: every
            message found, changed or not; UIDs not in the mailbox are in
            neither.
        @raise pymailer.store.KeywordLimit: no room for a new keyword
            (nothing is changed).
        """

    def storeFlagsWithChanges(uids, mode, flags, unchangedSince=None, since=0,
                              claimRecent=False):
        """
        IMAP's STORE (RFC 3501 6.4.6): L{storeFlags}, then what changed
        after mod-sequence C{since} as L{changedSince} would, the flag
        change included (a session tells its own change and others' at
        the end of the command).  A backend with transactions does both in
        one, so a session's STORE costs one step and sees no change slip
        in between.

        @param claimRecent: as for L{changedSince}.
        @return: C{(storeFlags's answer, changedSince's snapshot)}.
        @raise pymailer.store.KeywordLimit: as L{storeFlags} (nothing is
            changed).
        """

    def setFlags(uid, flags):
        """Replace the flags of one message; L{KeyError} if it is gone."""

    def expunge(uids):
        """
        Remove the messages with these UIDs; unknown UIDs are ignored.  Their
        UIDs are never given again; HIGHESTMODSEQ goes up if any went, and
        the expunged UIDs are remembered with that mod-sequence (for
        L{changedSince}; RFC 7162 3.2).
        """

    def expungeDeleted(uids=None, since=None, claimRecent=False):
        """
        IMAP's EXPUNGE, CLOSE and UID EXPUNGE (RFC 3501 6.4.3, 6.4.2; RFC
        4315 2.1): expunge the messages flagged C{\\\\Deleted} now, as
        the store has them (whoever set the flag), of C{uids} only if
        given, as L{expunge} does; then, with C{since}, read what changed
        after that mod-sequence as L{changedSince} would, the expunge
        included.  A backend with transactions does both in one, so a
        session's EXPUNGE costs one step and sees no change slip in
        between.

        @param claimRecent: as for L{changedSince}.
        @return: C{(expunged UIDs ascending, snapshot)}: the snapshot is
            L{changedSince}'s answer, or C{None} without C{since}.
        """

    def append(source, flags=(), internalDate=None):
        """
        Add a message durably from binary file object C{source} (read to
        its end), with C{flags} and C{internalDate} (seconds since the
        epoch; now if C{None}).

        @return: its UID.
        @raise pymailer.store.KeywordLimit: no room for a new keyword.
        """

    def appendWithChanges(source, flags=(), internalDate=None, since=0, claimRecent=False):
        """
        IMAP's APPEND into the selected mailbox (RFC 3501 6.3.11): L{append},
        then what changed after mod-sequence C{since} as L{changedSince}
        would, the new message included (the session tells its EXISTS
        before the tagged OK).  A backend with transactions does both in
        one, as L{storeFlagsWithChanges}.

        @param claimRecent: as for L{changedSince}.
        @return: C{(uid, changedSince's snapshot)}.
        @raise pymailer.store.MailboxGone: as L{append}.
        """

    def copy(uids, target):
        """
        Copy messages to mailbox C{target} (an L{IMailbox} of the same
        store), with their flags and internal dates, in UID order.  UIDs
        not in this mailbox are skipped.

        @return: C{[(uid, new uid in target)]} (UIDPLUS COPYUID, RFC 4315).
        @raise pymailer.store.KeywordLimit: C{target} has no room for a
            keyword (what was copied before stays).
        """

    def move(uids, target):
        """
        As L{copy}, then expunge the copied messages from this mailbox
        (RFC 6851): a message is never in neither mailbox.

        @return: C{[(uid, new uid in target)]}.
        """


class ISpool(Interface):
    """
    The durable queue of accepted messages: what the intake writes into,
    what the queue runner claims from, and what the administrator (the
    C{pymailer queue} command, the web admin, the metrics) looks at.  Callers
    know states by name (L{pymailer.queue.model.STATES}), never where or how
    a backend keeps them.

    Every method blocks (disk, database): call it from a thread pool, never
    on the reactor.  Values crossing this line are
    L{pymailer.queue.model.QueueEntry}, L{pymailer.queue.model.Claim} and
    L{pymailer.envelope.Envelope}; message content is a binary file object.

    Durability: a message is acknowledged (250) only after
    L{ISpoolWriter.commit} returns, and every change of state below is
    durable when the method returns.

    Claims: a message is delivered by one claimer at a time.  A claim lasts
    until L{complete}, L{reschedule} or L{release}, or until the claiming
    process dies (the file spool: a lock the kernel drops; a database: a
    lease that expires); the message is then claimed again with
    C{recovered} and C{takenOver} set (at-least-once delivery: agents check
    duplicates), and the takeover counted (C{takeovers}, in a row: an
    outcome recorded resets it), so that the runner can stop a message that
    kills every process delivering it.

    The administrator's operations (L{hold}, L{unhold}, L{delete},
    L{flush}, L{bounce}) are safe while servers run: they never wait for a
    claim, and raise L{pymailer.queue.model.MessageBusy} for a claimed
    message, L{pymailer.queue.model.NoSuchMessage} for an unknown id (or
    anything that is not a queue id) and L{pymailer.queue.model.WrongState}
    when the operation does not apply.  All three are
    L{pymailer.queue.model.QueueError}s with one line of text for the user.
    """

    def newMessage():
        """@return: an L{ISpoolWriter} for one incoming message."""

    def inject(source, **envelopeFields):
        """
        Queue a message we make ourselves (a forward, a delivery report):
        the bytes of the binary file object C{source} and an
        L{pymailer.envelope.Envelope} of C{envelopeFields} (its C{queueId}
        and, unless given, C{size} are filled in).  Committed as by
        L{ISpoolWriter.commit}.

        @return: the new message's queue id.
        """

    def addListener(listener):
        """
        Call C{listener(queueId)} after each commit (L{ISpoolWriter.commit},
        L{inject}) in the committing thread: the runner wakes on it.  A
        listener's exception is logged, never raised to the committer.
        A spool that several nodes share may also tell of other nodes'
        commits (in a thread of its own), and C{listener(None)} when it
        may have missed some: look at the whole queue.
        """

    def freeSpace():
        """
        @return: bytes free for new messages (C{int}), or C{None} if the
            backend cannot tell (the intake then admits by size alone).
        """

    def recover():
        """
        Start-up housekeeping: remove what was never acknowledged (data of
        transactions that died before commit).  Claims of dead processes
        need nothing here: L{claimDue} takes them back.

        @return: the C{list} of queue ids whose remains were removed.
        """

    def claimDue(now, limit, newOnly=False):
        """
        Claim up to C{limit} messages due at C{now} (POSIX seconds): new
        mail, deferred mail whose time has come, and messages whose claimer
        died, alternating between new and deferred mail so that neither
        starves.  Each message is given to one claimer only: two callers
        (threads, processes, nodes) get disjoint claims.

        @param newOnly: a hint that only newly committed mail need be
            looked at (a commit woke the runner); a backend may look at
            more.
        @return: a C{list} of L{pymailer.queue.model.Claim}.  Fewer than
            C{limit} means nothing more was due.
        """

    def openData(queueId):
        """
        @return: the message's content, a binary file object opened at its
            start (the caller closes it).
        @raise pymailer.queue.model.NoSuchMessage: no content for C{queueId}.
        """

    def complete(claim):
        """Every recipient is done: remove the message and end the claim."""

    def reschedule(claim, envelope, nextAttempt):
        """
        Record C{envelope} (its recipients' new states) and park the message
        as C{deferred} until C{nextAttempt} (POSIX seconds); end the claim.
        """

    def release(claim):
        """
        End the claim without an attempt (shutdown): the message is due
        again as it was, nothing recorded.
        """

    def backOff(claim, nextAttempt):
        """
        End a claim that took the message over (C{claim.takenOver}) without
        an attempt: C{deferred} until C{nextAttempt} (POSIX seconds), its
        envelope and takeover count kept, so that the next claim is
        C{recovered} (duplicates checked) and a further takeover counts on.
        """

    def holdClaimed(claim, reason):
        """
        End the claim by putting the message on hold (as L{hold}) with
        C{reason}, a line for the administrator
        (L{pymailer.queue.model.QueueEntry.holdReason}); the takeover count
        is kept.  L{unhold} clears the reason.
        """

    def listMessages(states=None):
        """
        @param states: a collection of state names, or C{None} for all.
        @return: a C{list} of L{pymailer.queue.model.QueueEntry} (without
            C{raw}), by state (in L{pymailer.queue.model.STATES} order) then
            queue id.  A snapshot: nothing is claimed.
        """

    def counts():
        """@return: C{{state: number of messages}} for every state."""

    def show(queueId):
        """
        @return: the L{pymailer.queue.model.QueueEntry} of one message, with
            C{raw}, the stored envelope (possibly unreadable).
        @raise pymailer.queue.model.NoSuchMessage: not in the queue.
        """

    def flush(queueId=None, now=None):
        """
        Make deferred mail due at C{now} (default: the current time); held
        mail stays held.

        @param queueId: one message, or C{None} for every deferred message
            (claimed ones are skipped).
        @return: the C{list} of queue ids made due.
        @raise pymailer.queue.model.WrongState: C{queueId} is not deferred.
        """

    def hold(queueId):
        """
        Put a message aside: no claimer gets it until L{unhold}.

        @return: the state it was in.
        @raise pymailer.queue.model.WrongState: on hold already, or corrupt.
        """

    def unhold(queueId, now=None):
        """
        The administrator's "release": a held message becomes C{deferred},
        due at C{now} (as Postfix's C{postsuper -H}), its retry state kept.

        @raise pymailer.queue.model.WrongState: not on hold.
        """

    def delete(queueId):
        """Remove a message, whatever its state.  @return: that state."""

    def bounce(queueId, reason=None, now=None):
        """
        Fail every pending recipient with C{reason} (default
        L{pymailer.queue.model.ADMIN_BOUNCE}) and make the message due at
        C{now}: the runner reports the failures to the sender.

        @return: the updated L{pymailer.envelope.Envelope}.
        @raise pymailer.queue.model.WrongState: corrupt, or nothing pending.
        """


class ISpoolWriter(Interface):
    """One message being received into the spool, written as it streams."""

    queueId = Attribute("The message's queue id, a C{str}.")

    def write(data):
        """Append C{bytes} of message data. Blocking."""

    def commit(envelope):
        """
        Make the message durable with its L{pymailer.envelope.Envelope} and
        hand it to the queue. Blocking.
        """

    def abort():
        """Discard what was written. Blocking; never raises."""

    def openData():
        """Flush, and open what was written for reading. Blocking."""


class IDeliveryAgent(Interface):
    """
    Delivers one queued message to some of its recipients (local store,
    remote relay...).  The queue runner picks the agent per recipient.
    """

    def deliver(envelope, recipients, openData, recovering):
        """
        @param envelope: the L{pymailer.envelope.Envelope}.
        @param recipients: C{list} of L{pymailer.envelope.Recipient} to
            deliver now.
        @param openData: callable returning a new binary file object over the
            message data (the same bytes as received, CRLF line endings).
        @param recovering: C{True} if a previous attempt may have completed
            (crash recovery): deliver at most once.
        @return: a C{Deferred} firing with a C{dict} mapping each recipient's
            C{index} to a L{pymailer.envelope.DeliveryResult}.
        """


class IExternalChanges(Interface):
    """
    Optional, for an L{IMailStore} that other processes may change (a
    second server on the same C{data_dir}, the admin command): how
    L{pymailer.store.notify.ChangeNotifier} learns of their changes, so
    an IMAP IDLE session here sees a delivery made there.  Listeners
    (L{IMailStore.addListener}) still hear only this store object's own
    changes.
    """

    def dataVersion():
        """
        A value that changes when another connection or process may have
        committed a change.  Cheap (no disk read when nothing moved), but
        I{blocking} in principle: call it from one thread at a time.
        """

    def changesSince(cursor):
        """
        I{Blocking}.  The mailboxes other store objects changed since
        C{cursor} (C{None}: from now on).

        @return: C{(new cursor, set of (user, mailboxName))}, or C{(new
            cursor, None)} when changes may have been missed (a listener
            that was cut off from the other nodes): any mailbox may have
            changed, and every observer should look.
        """


class ILimitStore(Interface):
    """
    The counters behind rate limits and login lockouts
    (L{pymailer.policy.ratelimit}, L{pymailer.auth.guard}): in one
    process's memory, in a file every worker process shares
    (L{pymailer.limits}), or in the database every node shares
    (L{pymailer.limits_pg}); and the open connections per client address
    that C{max_connections_per_ip} limits across them
    (L{pymailer.connlimit}).  Times are the callers' clock (seconds since the
    epoch in a server, so that processes agree).  Every method may block:
    a store that does says so with C{blocking = True}, and its callers run
    it in a thread pool.
    """

    blocking = Attribute("C{True} if the methods wait on the disk.")
    lease = Attribute(
        "Seconds this counter's connection counts count without L{keepAlive};"
        " C{None} in memory, where they last as long as the process.")

    def take(bucket, key, limit, period, now, count=1):
        """
        Take C{count} tokens from C{key}'s bucket of C{limit} tokens,
        refilled evenly over C{period} seconds.

        @return: C{True} if there were enough (and they are taken).
        """

    def available(bucket, key, limit, period, now):
        """@return: the tokens C{key}'s bucket holds now (nothing taken)."""

    def recordFailure(kind, key, now, window, maxFailures, lockoutTime):
        """
        Count a failed login of C{key} (C{kind} is C{"login"}, C{"ip"} or
        C{"account"}: one account from one client address, the address, the
        account; see L{pymailer.auth.guard}); at C{maxFailures} (each kind
        has its own) within C{window} seconds, lock it out until
        C{now + lockoutTime} and start counting afresh.

        @return: C{True} if this failure locked C{key} out.
        """

    def lockedOut(kind, key, now):
        """@return: C{True} if C{key} is locked out at C{now}."""

    def clearFailures(kind, key):
        """Forget the failures counted for C{key} (after a good login)."""

    def openConnection(scope, host, limit):
        """
        Count one more open connection from C{host} to the listener
        C{scope} (its role: C{"imaps"}, C{"smtp"}) on this store object, a
        I{counter} (one per server process), unless C{limit} are open from
        C{host} to C{scope} already, added up over every live counter:
        every worker and every node sharing the store.

        @return: C{True} if counted (then L{closeConnection} when it
            ends), C{False} if C{limit} are open already.
        """

    def closeConnection(scope, host):
        """A connection this counter counted (L{openConnection}) has ended."""

    def keepAlive():
        """
        This counter is alive: its connection counts count for its lease
        (seconds) more; the server calls this every third of the lease.
        The counts of a counter that stopped renewing (a process that
        died) stop counting, and are forgotten.
        """

    def leave():
        """This counter stops (its server shuts down): its counts go now."""


class IMailboxObserver(Interface):
    """
    Told of what a user did to messages through the store (a copy, a move,
    a flag change), with enough to read them: the learning spam filter
    trains from these (L{pymailer.spam.training}).  Wired around a store by
    the composition root (L{pymailer.store.observed.ObservedStore}), so the
    store knows nothing of spam.  Called in the thread that made the
    change, after it is durable; must not block long, and must not raise.
    """

    def transferred(user, sourceName, target, pairs, move):
        """
        Messages were copied (C{move} false) or moved from C{sourceName}
        into the L{IMailbox} C{target}.

        @param pairs: C{[(uid, new uid in target)]}.
        """

    def flagged(user, mailbox, uids, mode, flags):
        """
        L{IMailbox.storeFlags} ran on C{uids} of the L{IMailbox} C{mailbox}
        with C{mode} and C{flags}.
        """


class IMailImport(Interface):
    """
    Optional, for an L{IMailStore} that mail can move into from elsewhere
    (C{pymailer import}, the first start after the Maildir backend): a
    mailbox filled with the UIDVALIDITY and UIDs it had, so IMAP clients
    that cached it keep their cache (RFC 3501 2.3.1.1: same UIDVALIDITY,
    same UIDs, same messages) instead of downloading everything again.
    """

    def importMailbox(user, name, uidValidity, messages, uidNext=None):
        """
        I{Blocking}.  Fill mailbox C{name} of C{user} (created if missing)
        from C{messages}, an iterable of L{pymailer.store.ImportedMessage}
        in ascending UID order, committed in batches (listeners are told
        per batch).

        UIDs: with C{uidValidity}, a missing or empty mailbox takes that
        UIDVALIDITY and each message keeps its C{uid}; a mailbox that
        already has messages under the same UIDVALIDITY (an import that
        was interrupted) skips messages whose UID is below its UIDNEXT, so
        running the import again finishes it.  A message without a C{uid},
        and every message when C{uidValidity} is C{None} or the mailbox
        holds other mail, gets the next UID as a delivery would.  UIDNEXT
        ends at least at C{uidNext}, so UIDs the source gave to messages
        since expunged are never given again.  Imported messages are not
        C{\\Recent}: they are old mail.

        @return: how many messages were added.
        @raise ValueError: C{uidValidity} differs from that of a mailbox
            that already holds messages (the caller picks another name);
            a name L{IMailStore.canonicalName} refuses.
        @raise pymailer.store.KeywordLimit: more keywords than the mailbox
            can hold (what was committed before stays).
        """


class IChangeNotifier(Interface):
    """Publishes mailbox changes to sessions (IMAP IDLE) in this process."""

    def subscribe(user, mailboxName, callback):
        """
        Call C{callback(stamp)} on the reactor thread after each change:
        C{stamp} orders the change against reads of the mailbox
        (L{pymailer.store.notify.readStamp}).
        """

    def unsubscribe(user, mailboxName, callback):
        """Stop calling C{callback}."""

    def subscribeAccount(user, callback):
        """
        Call C{callback(mailboxName)} on the reactor thread after each
        change to any mailbox of C{user} (IMAP NOTIFY, RFC 5465), including
        its creation, deletion, renaming (the old name) and subscription
        changes, made in this process or (L{IExternalChanges}) another.
        """

    def unsubscribeAccount(user, callback):
        """Stop calling C{callback}."""


class IMessageIntake(Interface):
    """
    What an SMTP session hands its transactions to: the avatar the realm
    gives a session (anonymous on port 25; a user after AUTH, later).

    It decides (through the router and policy) and stores (through the
    spool); the SMTP protocol only turns its answers into replies.  Failures
    are L{pymailer.smtp.reply.SMTPReply} errors.  Every method returns a
    C{Deferred} and is safe on the reactor thread.
    """

    def checkCapacity(size):
        """Fire with C{None} if a message of C{size} octets can be stored."""

    def validateSender(session, sender, params):
        """Fire with C{None} if mail from C{sender} is acceptable."""

    def validateRecipient(session, sender, recipient, size=0):
        """
        Fire with C{None} if mail to C{recipient} is acceptable; C{size}
        is what C{MAIL FROM ... SIZE=} declared (RFC 1870), 0 if nothing
        (a recipient whose mailbox it would overfill is refused).
        """

    def openMessage():
        """
        @return: an L{IIncomingMessage} (synchronously; nothing is created on
            disk until data arrives).
        """


class IIncomingMessage(Interface):
    """One message being received, written off the reactor thread."""

    queueId = Attribute("The queue id the message will have.")

    def write(data):
        """@return: a C{Deferred} firing once C{data} is written."""

    def commit(envelope):
        """
        @return: a C{Deferred} firing once the message and its envelope are
            durable (queued, or delivered into local mailboxes at once);
            only then may the server answer 250.  It fires with the
            envelope as recorded (recipients delivered at once are
            C{DELIVERED} in it), or C{None} for C{envelope} as given.
        """

    def abort():
        """Discard the message. @return: a C{Deferred}."""

    def openData():
        """
        I{Blocking}: flush what was written and open the data for reading
        (a binary file), so policy can look at the message before commit.
        """


class IPolicy(Interface):
    """
    One policy piece on a message's path (SPF, DKIM, a rate limit, ...):
    a function from the facts of the session and message to a
    L{pymailer.policy.decision.Decision} with a named reason.

    Each stage method returns a C{Decision} or a C{Deferred} firing with
    one, and is called on the reactor thread: DNS and crypto go to a thread
    pool.  A piece keeps no per-session state of its own; what it learns
    for later pieces (an SPF result for DMARC) goes into
    C{facts.authResults}.  Pieces that care about few stages subclass
    L{pymailer.policy.decision.Policy}, which accepts at every stage.
    """

    name = Attribute("The name the config enables the piece by.")

    def checkConnect(facts):
        """A client connected (C{facts.clientAddress})."""

    def checkHelo(facts):
        """The client said HELO/EHLO (C{facts.helo})."""

    def checkMail(facts):
        """MAIL FROM (C{facts.sender}); reject or tempfail refuses it."""

    def checkRecipient(facts, recipient):
        """RCPT TO C{recipient}; reject or tempfail refuses that recipient."""

    def checkUnknownRecipient(facts, recipient):
        """
        RCPT TO C{recipient} named no such user (C{550 5.1.1}): accept
        leaves that reply; a refusal replaces it (a C{421} that closes the
        connection stops a directory harvest).  Optional: the chain skips
        pieces written before this stage existed.
        """

    def checkData(facts, message):
        """
        End of data, before the message is queued.  C{message} is the
        L{IIncomingMessage} (C{message.openData()} reads it, blocking).
        """

    def keepHeader(facts, field):
        """
        While the header section streams in: C{False} drops the header
        field C{field} (bytes, folded lines included) from the message.
        Called on the reactor thread; must be quick.
        """


class IPolicyFactory(Interface):
    """
    A Twisted plugin (C{twisted.plugin}) that makes a policy piece.  The
    config's C{[policy] checks} names pieces by C{name}; options come from
    the table C{[policy.NAME]}.  Third parties ship an object providing
    this and C{twisted.plugin.IPlugin} in a C{twisted/plugins/} file on
    C{sys.path}.
    """

    name = Attribute("The name used in C{[policy] checks}.")

    def build(context, options):
        """
        @param context: a L{pymailer.policy.decision.PolicyContext}: the
            resolver, reactor, thread pool, config and account directory.
        @param options: the C{dict} of C{[policy.NAME]} (empty if absent).
        @return: an L{IPolicy} provider.
        """


class IGoodbye(Interface):
    """
    A client connection that can be told the server is stopping: each
    protocol says it in its own words (IMAP C{* BYE}, SMTP C{421}, POP3
    C{-ERR}) and closes.  See L{pymailer.shutdown}.
    """

    def sayGoodbye():
        """
        Tell the client the server is shutting down and close the
        connection, as soon as no command is half-done (a reply in flight
        is finished first; an unfinished message is dropped, not stored).
        """
