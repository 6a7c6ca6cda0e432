"""
NOTIFY (RFC 5465): a client says once which events it wants, for the
selected mailbox and for others, and hears of them as they happen, between
commands and in IDLE, without polling every folder.

Built on the store's change events (L{pymailer.interfaces.IChangeNotifier}:
C{subscribeAccount} hears every change to the user's mailboxes, made in
this process or, through L{pymailer.interfaces.IExternalChanges}, another
one).  An event only names a mailbox; what changed is found by comparing
what is read now with what this session last knew.  The read is shared
(L{pymailer.imap.fanout}): every NOTIFY session of the user that heard of
the change in one reactor turn gets the same listing and STATUS numbers
(L{readAccount}), and the sessions on the selected mailbox the same
C{changedSince}, as IDLE sessions do; the comparison is each session's:

  - other mailboxes' message events (MessageNew, MessageExpunge,
    FlagChange): an untagged C{STATUS} when the numbers the events are
    about moved (RFC 5465 5.1-5.3): C{UIDNEXT MESSAGES} for new and
    expunged mail, C{UNSEEN} for flag changes (and C{HIGHESTMODSEQ} once
    CONDSTORE is on); C{UIDVALIDITY} whenever it changed, and with the
    rest for a mailbox that has just come to be watched (a subscription
    under SUBSCRIBED, a mailbox created under PERSONAL);
  - MailboxName: the mailbox list compared with the last one, a rename
    recognised by its MAILBOXID (RFC 8474) under a new name: C{LIST} with
    C{\\NonExistent} for a deleted one and C{OLDNAME} for a renamed one
    (5.4); children renamed along are not told separately;
  - SubscriptionChange: the subscriptions compared, C{LIST} with or without
    C{\\Subscribed} (5.5);
  - the selected mailbox (SELECTED, SELECTED-DELAYED): the session's own
    update (EXISTS, EXPUNGE, FETCH FLAGS), pushed at once instead of at the
    next command, and the FETCH attributes of MessageNew for new messages
    (5.2).  SELECTED-DELAYED holds EXPUNGE back until a command that allows
    it (6.1.2).  Flag changes there come with the rest of the update even
    without FlagChange: the session's view of the mailbox is one (RFC 3501
    7.4.1), and one it did not tell would never be told.  Without SELECTED the selected mailbox is still brought up
    to date at the end of each command as RFC 3501 asks, but not in IDLE
    (RFC 5465 4: IDLE sends exactly what NOTIFY asked for).

Untagged responses go out only between commands or in IDLE, never inside a
command's output (a FETCH literal being streamed): the selected mailbox's
push is a step in the session's command queue, and other lines wait until
the command ends.  The session's own CREATE, DELETE, RENAME, SUBSCRIBE and
UNSUBSCRIBE are not told back to it (RFC 5465 5, SHOULD): after one of
them, the mailbox list and subscriptions are taken as they are.  If more
than L{MAX_QUEUED} lines wait, notifications stop with C{* OK
[NOTIFICATIONOVERFLOW]} (5.8); a NOTIFY SET watching more than
L{MAX_WATCHED} mailboxes for message events is refused with C{NO
[NOTIFICATIONOVERFLOW]}.

Not done: INBOXES is treated as PERSONAL (6.3 allows it: every folder may
receive mail through delivery rules); the parent of a created or deleted
mailbox gets no LIST of its own; AnnotationChange, MailboxMetadataChange and
ServerMetadataChange are refused with C{BADEVENT} (no METADATA here); a
message that arrives while a command runs is announced by that command's
EXISTS, without the MessageNew FETCH attributes.

Trust: mailbox names from the client are decoded and checked as any other
(names that are not mailboxes are ignored, 3.1); the fetch attributes are
parsed as FETCH's.
"""

from twisted.internet import defer
from twisted.logger import Logger

from pymailer.imap import objectid, rev2, status, utf7
from pymailer.imap.fetch import parseFetchItems
from pymailer.imap.parser import Atom, ParseError, astring, formatValue, isAtom
from pymailer.store import MailboxGone

log = Logger()

CAPABILITY = b"NOTIFY"
MAX_WATCHED = 1000   # mailboxes watched for message events by one session
MAX_QUEUED = 1000    # untagged lines waiting for the end of a command

MESSAGE_NEW, MESSAGE_EXPUNGE, FLAG_CHANGE = "MESSAGENEW", "MESSAGEEXPUNGE", "FLAGCHANGE"
MAILBOX_NAME, SUBSCRIPTION_CHANGE = "MAILBOXNAME", "SUBSCRIPTIONCHANGE"
MESSAGE_EVENTS = frozenset({MESSAGE_NEW, MESSAGE_EXPUNGE, FLAG_CHANGE})
# RFC 5465 3.1: BADEVENT lists every event the server supports.
SUPPORTED = b"(MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)"
_NAMES = {name.upper().decode(): name for name in SUPPORTED[1:-1].split()}

SELECTED, SELECTED_DELAYED = "SELECTED", "SELECTED-DELAYED"
_FILTERS = {"INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES"}
# The session's own commands that change what MailboxName and
# SubscriptionChange tell (RFC 5465 5: not told back to it).
OWN_COMMANDS = frozenset({b"CREATE", b"DELETE", b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE"})
_STATUS_ITEMS = (b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES", b"UNSEEN", b"HIGHESTMODSEQ")


class BadEvent(Exception):
    """An event we do not support: C{NO [BADEVENT (...)]} (RFC 5465 3.1)."""


class Overflow(Exception):
    """Too much to watch or to tell: C{[NOTIFICATIONOVERFLOW]} (RFC 5465 5.8)."""


class Group:
    """One event-group for other mailboxes: a filter, its names, its events."""

    def __init__(self, kind, names, events):
        self.kind, self.names, self.events = kind, names, events

    def matches(self, name, subscribed):
        if self.kind in ("PERSONAL", "INBOXES"):  # 6.3: INBOXES as PERSONAL
            return True
        if self.kind == "SUBSCRIBED":
            return name in subscribed
        if self.kind == "MAILBOXES":  # 6.6: no wildcard expansion
            return name in self.names
        return any(name == n or name.startswith(n + "/") for n in self.names)


class Request:
    """
    A parsed NOTIFY SET.

    @ivar selected: C{None}, L{SELECTED} or L{SELECTED_DELAYED}.
    @ivar selectedEvents: the message events asked for the selected mailbox.
    @ivar fetchTokens: MessageNew's fetch attributes there, or C{None}.
    @ivar groups: L{Group}s for the other mailboxes.
    """

    def __init__(self, status=False):
        self.status = status
        self.selected = None
        self.selectedEvents = frozenset()
        self.fetchTokens = None
        self.groups = []

    def eventsFor(self, name, subscribed):
        events = set()
        for group in self.groups:
            if group.matches(name, subscribed):
                events |= group.events
        return events

    def wants(self, event):
        return any(event in g.events for g in self.groups)

    def mayWatch(self, name):
        """
        Whether C{name} may be watched for message events, whatever the
        subscriptions (read later) turn out to be: its STATUS is read.
        """
        return any(g.events & MESSAGE_EVENTS and (g.kind == "SUBSCRIBED" or g.matches(name, ()))
                   for g in self.groups)


def parseRequest(args, decodeName):
    """
    C{NOTIFY} arguments: a L{Request}, or C{None} for C{NOTIFY NONE}.

    @param decodeName: a client's mailbox name (C{bytes}) as a canonical
        name, or C{None} if it cannot be one (then it is ignored, 3.1).
    @raise ParseError: malformed (BAD), including the event combinations
        RFC 5465 5 answers BAD.
    @raise BadEvent: an event we do not support (NO).
    """
    args = list(args)
    if len(args) == 1 and isAtom(args[0], b"NONE"):
        return None
    if not args or not isAtom(args.pop(0), b"SET"):
        raise ParseError("NOTIFY needs SET or NONE")
    request = Request()
    if args and isAtom(args[0], b"STATUS"):
        request.status = True
        args.pop(0)
    if not args:
        raise ParseError("NOTIFY SET needs event groups")
    for group in args:
        if not isinstance(group, list) or len(group) < 2 or not isinstance(group[0], Atom):
            raise ParseError("bad NOTIFY event group")
        kind = group[0].upper().decode("ascii", "replace")
        rest = group[1:]
        if kind in (SELECTED, SELECTED_DELAYED):
            if request.selected is not None:  # 6.1: only one of them
                raise ParseError("only one of SELECTED and SELECTED-DELAYED")
            if len(rest) != 1:
                raise ParseError("bad NOTIFY event group")
            events, fetchTokens = _events(rest[0], allowFetch=True)
            if events - MESSAGE_EVENTS:  # 6.1: message events only
                raise ParseError("SELECTED takes message events only")
            request.selected, request.selectedEvents = kind, frozenset(events)
            request.fetchTokens = fetchTokens
            continue
        if kind not in _FILTERS:
            raise ParseError("unknown NOTIFY mailbox filter")
        names = ()
        if kind in ("SUBTREE", "MAILBOXES"):
            if len(rest) != 2:
                raise ParseError(f"{kind} needs mailboxes and events")
            raw = rest.pop(0)
            raw = raw if isinstance(raw, list) else [raw]
            if not raw:
                raise ParseError(f"{kind} needs mailboxes")
            names = {n for n in (decodeName(astring(r, "mailbox")) for r in raw) if n}
        if len(rest) != 1:
            raise ParseError("bad NOTIFY event group")
        events, _ = _events(rest[0], allowFetch=False)
        request.groups.append(Group(kind, names, frozenset(events)))
    return request


def _events(token, allowFetch):
    """
    An C{events} list: C{(set of upper-case names, fetch tokens or None)}.
    RFC 5465 5: FlagChange needs MessageNew and MessageExpunge (BAD
    otherwise); MessageNew's fetch attributes are for SELECTED only (8).
    Section 5 also asks BAD for MessageNew without MessageExpunge, but the
    RFC's own examples (3.1: C{(subtree Lists MessageNew)}) send it alone,
    and so do clients that copied them: it is taken, and means MessageNew.
    """
    if isAtom(token, b"NONE"):
        return set(), None
    if not isinstance(token, list) or not token:
        raise ParseError("bad NOTIFY events")
    events, fetchTokens, unsupported = set(), None, []
    tokens = list(token)
    while tokens:
        event = tokens.pop(0)
        if not isinstance(event, Atom):
            raise ParseError("bad NOTIFY event")
        name = event.upper().decode("ascii", "replace")
        if name == MESSAGE_NEW and tokens and isinstance(tokens[0], list):
            if not allowFetch:
                raise ParseError("fetch attributes are for SELECTED only")
            fetchTokens = tokens.pop(0)
            parseFetchItems(fetchTokens, False)  # BAD now, not at the first new message
        if name not in _NAMES:
            unsupported.append(name)
        events.add(name)
    if unsupported:
        raise BadEvent(unsupported)
    if FLAG_CHANGE in events and not {MESSAGE_NEW, MESSAGE_EXPUNGE} <= events:
        raise ParseError("FlagChange needs MessageNew and MessageExpunge")
    return events, fetchTokens


def command(session, args, refusal):
    """
    NOTIFY for C{session} (L{pymailer.imap.server.IMAPServer}): replace
    its L{Watcher}, or stop it (NONE).  @return: a C{Deferred}.

    @param refusal: the exception class the session answers C{NO} with.
    """
    def decodeName(raw):
        try:
            return session.factory.store.canonicalName(
                rev2.decodeName(raw, session.enabled.utf8))
        except (utf7.UTF7Error, ValueError):
            return None

    try:
        request = parseRequest(args, decodeName)
    except BadEvent:
        return defer.fail(refusal(
            "[BADEVENT %s] Unsupported NOTIFY event" % SUPPORTED.decode()))
    if session.notify is not None:
        session.notify.stop()
        session.notify = None
    if request is None:
        return defer.succeed(None)
    watcher = Watcher(session, request)

    def started(lines):
        session.notify = watcher
        for line in lines:
            session.sendLine(line)
        # 3.1: NOTIFY SET is an implicit NOOP for the selected mailbox.
        if session.selected is not None:
            return session._sync()
        return None

    def refused(failure):
        watcher.stop()
        failure.trap(Overflow)
        raise refusal("[NOTIFICATIONOVERFLOW] Too many mailboxes to watch")

    return watcher.start().addCallbacks(started, refused)


def readMailboxes(store, user, idsOf, statusesOf):
    """
    Blocking: C{(ids, statuses)}: C{{name: MAILBOXID}} of those of
    C{idsOf} that still exist, and C{{name: STATUS numbers, or None if
    it went}} of C{statusesOf}; each mailbox opened once.
    """
    idsOf, statusesOf = set(idsOf), set(statusesOf)
    ids, statuses = {}, {}
    for name in sorted(idsOf | statusesOf):
        numbers = None
        try:
            mailbox = store.mailbox(user, name)
            if name in idsOf:
                ids[name] = mailbox.mailboxId()
            if name in statusesOf:
                numbers = status.values(mailbox.snapshot(), _STATUS_ITEMS)
        except (KeyError, MailboxGone):
            pass
        if name in statusesOf:
            statuses[name] = numbers
    return ids, statuses


class AccountView:
    """
    What the NOTIFY sessions of one user asking at once read of their
    account (L{readAccount}), for each to compare with what it last told.

    @ivar names: the mailboxes; @ivar subscribed: the subscriptions;
    @ivar ids: C{{name: MAILBOXID}} of the mailboxes some session did not
        know; @ivar statuses: C{{name: STATUS numbers or None}} of the
        changed ones some session may watch.
    """

    def __init__(self, names, subscribed, ids, statuses):
        self.names, self.subscribed, self.ids, self.statuses = names, subscribed, ids, statuses


def readAccount(store, user, needs):
    """
    Blocking: one L{AccountView} for every session's C{need}: C{(names
    whose STATUS it may want, the MAILBOXIDs it knows, or None when it
    does not watch MailboxName)}.  A mailbox new to a session may be a
    rename of a watched one: its STATUS is read too.
    """
    names = store.listMailboxes(user)
    present = set(names)
    unknown, wanted = set(), set()
    for statusOfNames, knownIds in needs:
        wanted |= statusOfNames
        if knownIds is not None:
            unknown |= present.difference(knownIds)
    ids, statuses = readMailboxes(store, user, unknown, (wanted & present) | unknown)
    return AccountView(names, store.subscriptions(user), ids, statuses)


class Watcher:
    """
    What one session asked NOTIFY for, and what it was last told (see the
    module docstring).
    """

    def __init__(self, session, request):
        self.session = session
        self.request = request
        self.store = session.factory.store
        self.user = session.user
        self.fetchItems = parseFetchItems(request.fetchTokens, False) \
            if request.fetchTokens else []
        self._pending = set()   # mailbox names changed, not looked at yet
        self._lines = []        # told once the session can
        self._running = None
        self._absorb = False    # the session's own mailbox command just ended
        self._queued = False    # a push of the selected mailbox waits in the queue
        self._statuses = {}     # name -> STATUS numbers last told or known
        self._mailboxIds = {}   # name -> MAILBOXID, for MailboxName
        self._subscribed = set()
        self._stopped = False

    # -- life ---------------------------------------------------------------

    def start(self):
        """The baseline (and the STATUS lines asked for, 3.1), from the pool."""
        self.session.factory.notifier.subscribeAccount(self.user, self._changed)
        # No scan while the baseline is taken: changes meanwhile wait.
        self._running = self.session.account.run(self._baseline, self._selectedName())

        def taken(result):
            self._running = None
            return result
        return self._running.addBoth(taken)

    def stop(self):
        if not self._stopped:
            self._stopped = True
            self.session.factory.notifier.unsubscribeAccount(self.user, self._changed)

    def _selectedName(self):
        selected = self.session.selected
        return selected.name if selected is not None else None

    # -- in the thread pool ------------------------------------------------

    def _baseline(self, selectedName):
        names = self.store.listMailboxes(self.user)
        self._subscribed = self.store.subscriptions(self.user)
        watched = [n for n in names
                   if self.request.eventsFor(n, self._subscribed) & MESSAGE_EVENTS]
        if len(watched) > MAX_WATCHED:
            raise Overflow(len(watched))
        ids, self._statuses = readMailboxes(
            self.store, self.user, names if self.request.wants(MAILBOX_NAME) else (), watched)
        if self.request.wants(MAILBOX_NAME):
            self._mailboxIds = ids
        lines = []
        for name in watched:
            numbers = self._statuses[name]
            if numbers is not None and self.request.status and name != selectedName:
                events = self.request.eventsFor(name, self._subscribed)
                items = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"]
                if FLAG_CHANGE in events:
                    items += [b"UNSEEN"] + ([b"HIGHESTMODSEQ"] if self.session.condstore else [])
                lines.append(self._statusLine(name, items, numbers))
        return lines

    # -- on the reactor, from what was read --------------------------------

    def _need(self, changed, selectedName):
        """What this session wants of the shared L{readAccount}."""
        statusOfNames = {n for n in changed if n != selectedName and self.request.mayWatch(n)}
        knownIds = self._mailboxIds if self.request.wants(MAILBOX_NAME) else None
        return statusOfNames, knownIds

    def _scan(self, view, changed, absorb, selectedName):
        """The lines telling what changed in C{changed} and the list (L{AccountView})."""
        lines = []
        subscribed, names = view.subscribed, view.names
        renamed = {}
        if self.request.wants(MAILBOX_NAME):
            renamed = self._mailboxNames(names, subscribed, absorb, lines, view.ids)
        if self.request.wants(SUBSCRIPTION_CHANGE):
            self._subscriptions(names, subscribed, absorb, lines)
        self._subscribed = subscribed
        for old, new in renamed.items():
            if old in self._statuses:
                self._statuses[new] = self._statuses.pop(old)
        present = set(names)
        for name in sorted(changed | set(renamed.values())):
            if name == selectedName or name not in present:
                self._statuses.pop(name, None)
                continue
            events = self.request.eventsFor(name, subscribed) & MESSAGE_EVENTS
            if events:
                lines += self._messageEvents(name, events, view.statuses.get(name))
        return lines

    def _messageEvents(self, name, events, new):
        """5.1-5.3: a STATUS for another mailbox, if what they are about moved."""
        old = self._statuses.get(name)
        if new is None:
            return []
        self._statuses[name] = new
        old = old or {}

        def moved(item):
            return old.get(item) != new[item]

        condstore = self.session.condstore
        items = [b"UIDVALIDITY"] if moved(b"UIDVALIDITY") else []
        tell = bool(items)
        if events & {MESSAGE_NEW, MESSAGE_EXPUNGE}:
            items += [b"UIDNEXT", b"MESSAGES"]
            tell = tell or moved(b"UIDNEXT") or moved(b"MESSAGES")
        if FLAG_CHANGE in events:
            items.append(b"UNSEEN")
            tell = tell or moved(b"UNSEEN") or (condstore and moved(b"HIGHESTMODSEQ"))
        if condstore:
            items.append(b"HIGHESTMODSEQ")
        return [self._statusLine(name, items, new)] if tell else []

    def _mailboxNames(self, names, subscribed, absorb, lines, ids):
        """
        5.4: created, deleted and renamed mailboxes. @return: {old: new}.
        @param ids: the MAILBOXIDs read of the mailboxes we did not know.
        """
        known = self._mailboxIds
        created = [n for n in names if n not in known]
        gone = {known[n]: n for n in known if n not in set(names)}
        current = {n: known[n] for n in names if n in known}
        current.update((n, ids[n]) for n in created if n in ids)
        renamed = {gone.pop(current[n]): n for n in created if current.get(n) in gone}
        self._mailboxIds = current
        if absorb:
            return renamed

        def wanted(*candidates):
            return any(MAILBOX_NAME in self.request.eventsFor(c, subscribed) for c in candidates)

        for old, new in sorted(renamed.items()):
            # Children renamed along with their parent are not told (5.4).
            if any(old.startswith(o + "/") and new == n + old[len(o):]
                   for o, n in renamed.items()):
                continue
            if wanted(old, new):
                lines.append(b'* LIST () "/" %s ("OLDNAME" (%s))' % (
                    self._name(new), self._name(old)))
        for name in created:
            if name not in renamed.values() and wanted(name):
                attrs = b"\\Subscribed" if name in subscribed else b""
                lines.append(b'* LIST (%s) "/" %s' % (attrs, self._name(name)))
        for name in sorted(gone.values()):
            if wanted(name):
                lines.append(b'* LIST (\\NonExistent) "/" %s' % self._name(name))
        return renamed

    def _subscriptions(self, names, subscribed, absorb, lines):
        """5.5: a LIST, with \\Subscribed if and only if it now is."""
        if absorb:
            return
        present = set(names)
        for name in sorted(subscribed ^ self._subscribed):
            if SUBSCRIPTION_CHANGE not in self.request.eventsFor(
                    name, subscribed | self._subscribed):
                continue
            attrs = [b"\\Subscribed"] if name in subscribed else []
            if name not in present:
                attrs.append(b"\\NonExistent")
            lines.append(b'* LIST (%s) "/" %s' % (b" ".join(attrs), self._name(name)))

    def _name(self, name):
        return formatValue(self.session.encodeName(name))

    def _statusLine(self, name, items, numbers):
        return status.statusLine(self.session.encodeName(name), items, numbers)

    # -- on the reactor ------------------------------------------------------

    def _changed(self, name):
        self._pending.add(name)
        self._kick()

    def commandCompleted(self, name):
        """The session's command C{name} succeeded (see L{OWN_COMMANDS})."""
        if name in OWN_COMMANDS:
            self._absorb = True

    def idle(self):
        """Between commands: tell what waited, look at what changed."""
        self._flush()
        self._kick()

    def _kick(self):
        if self._stopped or self._running is not None or not self._pending:
            return
        if not self.session.canNotify():
            return  # idle() comes back after the command
        changed, self._pending = self._pending, set()
        selectedName = self._selectedName()
        if changed <= {selectedName} and not (
                self.request.wants(MAILBOX_NAME) or self.request.wants(SUBSCRIPTION_CHANGE)):
            # Only the selected mailbox changed: its own update tells that
            # (L{selectedChanged}), and there is no list to compare.
            return
        absorb, self._absorb = self._absorb, False
        # One read of the account for every NOTIFY session of this user
        # that heard of the change in this turn (L{pymailer.imap.fanout}).
        self._running = d = defer.Deferred()
        self.session.account.readWithOthers(
            ("notify", self.user), lambda needs: readAccount(self.store, self.user, needs),
            self._need(changed, selectedName), d.callback)
        d.addCallback(self._scan, changed, absorb, selectedName)
        d.addCallback(self._tell).addErrback(
            lambda f: log.failure("NOTIFY scan failed", f)).addBoth(self._scanned)

    def _scanned(self, _):
        self._running = None
        self._kick()

    def _tell(self, lines):
        if self._stopped:
            return
        self._lines += lines
        if len(self._lines) > MAX_QUEUED:
            # 5.8: tell, and behave as after NOTIFY NONE.
            self._lines = [b"* OK [NOTIFICATIONOVERFLOW] Too many changes, NOTIFY is off"]
            self.stop()
            if self.session.notify is self:
                self.session.notify = None
        self._flush()

    def _flush(self):
        if self._lines and self.session.canNotify():
            lines, self._lines = self._lines, []
            for line in lines:
                self.session.sendLine(line)

    # -- the selected mailbox ------------------------------------------------

    def selectedChanged(self):
        """The selected mailbox changed (the session's notifier callback)."""
        if not self.request.selectedEvents:
            return  # 3.1: the client wants no message events for it
        session = self.session
        if session.idleTag is not None:
            # As IDLE's own update (the server's _mailboxChanged): DONE
            # waits for it, and it runs again if more changed meanwhile.
            if session._idleSync is None and not self.fetchItems and not self._stopped:
                # IDLE's own bare callback, no Deferred chain per session:
                # thousands of them are woken at once (issue 14).
                session._idleSync = defer.Deferred()
                session.account.refreshWithOthers(session.selected, self._idleRefreshed)
            elif session._idleSync is None:
                d = session._idleSync = defer.Deferred()
                self._push().addBoth(session._idleSynced).addBoth(
                    lambda _: self.idle()).chainDeferred(d)
        elif not self._queued:
            # A step in the command queue: never inside a command's output.
            self._queued = True
            session._commands.append(self._queuedPush)
            session._pump()

    def _idleRefreshed(self, changes, selected):
        """The shared read for the update in IDLE came back (EXPUNGE allowed, 6.1.2)."""
        self.session._idleRefreshed(changes, selected)
        self.idle()

    def _queuedPush(self):
        self._queued = False
        d = self._push()

        def failed(failure):
            if not self.session._selectedVanished(failure):
                log.failure("NOTIFY update failed", failure)
        return d.addErrback(failed)

    def _push(self):
        """The selected mailbox's update now, with MessageNew's attributes (5.2)."""
        session = self.session
        selected = session.selected
        if selected is None or self._stopped:
            return defer.succeed(None)
        before = set(selected.uids)
        # 6.1.2: SELECTED-DELAYED keeps EXPUNGE for a command that allows it.
        allowExpunge = self.request.selected == SELECTED or session.idleTag is not None
        # Read once with the other sessions on this mailbox (IDLE's and
        # NOTIFY's) the same change woke (L{pymailer.imap.fanout}).
        d = defer.Deferred()
        session.account.refreshWithOthers(selected, lambda changes, _: d.callback(changes))
        d.addCallback(session._applyChanges, selected, allowExpunge)

        def fetchNew(_):
            if not self.fetchItems or session.selected is not selected:
                return None
            targets = [(seq, u) for seq, u in enumerate(selected.uids, 1) if u not in before]
            if not targets:
                return None
            d = defer.succeed(None)
            if objectid.needsEmailIds(self.fetchItems):
                d = session.account.run(objectid.loadEmailIds, selected, [u for _, u in targets])
            return d.addCallback(
                lambda _: session._fetchTargets(selected, targets, self.fetchItems, []))

        return d.addCallback(fetchNew)


__all__ = ["CAPABILITY", "Request", "Watcher", "command", "parseRequest"]
