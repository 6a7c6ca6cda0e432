"""
What the admin and account pages and the JSON API (L{pymailer.web.api})
do, once: each read or change is one method here, and the pages' handlers
and the API's endpoints only parse the request and present the result.

The changes go through the same directory and spool functions as the
C{pymailer} command, so they apply in the running server as the
command's do.  Every method but L{Operations.changePassword} blocks (SQLite,
the disk, argon2): callers run them in the thread pool.  A change returns
the one line that says what it did (shown on the page, logged, and the
API's C{"message"}); a refusal raises L{ValueError} (bad input), L{KeyError}
(no such thing, or it exists already) or
L{pymailer.queue.model.QueueError}, with a one-line reason.

Trust: the arguments are the client's, validated by the directory and the
spool; the caller has checked who may do what (admin or the user
themselves).
"""

from __future__ import annotations

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer

from pymailer.auth.directory import normaliseAddress
from pymailer.auth.login import guardedLogin
from pymailer.auth.passwords import hashPassword
from pymailer.interfaces import IWebUser
from pymailer.queue import model as queueModel
from pymailer.queue.display import headerLines

# The header lines `pymailer queue show` shows; the same here.
SHOW_HEADER_LINES = 40
QUEUE_ACTIONS = ("flush", "hold", "release", "delete", "bounce")
EMPTY_PASSWORD = "An empty password is refused."
WRONG_PASSWORD = "The current password is wrong (or there were too many attempts)."
MISMATCH = "The two new passwords differ."


def errorText(error):
    """The one-line reason of a refused operation's exception."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split())


def isConflict(error):
    """
    Whether a refused operation's L{KeyError} says the thing exists already
    (the directory's C{"user exists: ..."}), rather than that it does not.
    """
    return isinstance(error, KeyError) and errorText(error).split(":")[0].endswith(" exists")


class Operations:
    """
    The admin's and the users' operations on the server's parts.

    @param parts: the service's L{pymailer.service.Parts}.
    @param inThread: runs a blocking call in the thread pool (a Deferred).
    """

    def __init__(self, parts, inThread):
        self.inThread = inThread
        self.portal = parts.portal
        self.guard = parts.guard
        self.directory = parts.directory
        self.store = parts.store
        self.spool = parts.spool
        self.spamDB = parts.spamDB

    # -- domains ----------------------------------------------------------------

    def domains(self):
        """C{[(domain, catchAll or None)]}."""
        return [(d, self.directory.catchAll(d)) for d in self.directory.listDomains()]

    def addDomain(self, domain, catchAll=None):
        self.directory.addDomain(domain, catchAll=catchAll or None)
        return f"added domain {domain}"

    def removeDomain(self, domain):
        self.directory.removeDomain(domain)
        return f"removed domain {domain} with its users and aliases (mail on disk is kept)"

    def setCatchAll(self, domain, target):
        self.directory.setCatchAll(domain, target or None)
        return f"catch-all of {domain}: {target or 'none'}"

    # -- users ------------------------------------------------------------------

    def users(self):
        """C{[(address, isAdmin, isDisabled)]}."""
        return [(u, self.directory.isAdmin(u), self.directory.isDisabled(u))
                for u in self.directory.listUsers()]

    def addUser(self, address, password, admin=False):
        if not password:
            raise ValueError(EMPTY_PASSWORD)
        # As `pymailer user add`: the account, then its mailboxes, so the
        # first LIST shows INBOX, Sent, Drafts...
        self.directory.addUser(address, hashPassword(password))
        normalised = normaliseAddress(address)
        if admin:
            self.directory.setAdmin(normalised, True)
        self.store.createUser(normalised)
        return f"added {'admin' if admin else 'user'} {normalised}"

    def resetPassword(self, address, password):
        if not password:
            raise ValueError(EMPTY_PASSWORD)
        self.directory.setPasswordHash(address, hashPassword(password))
        return f"changed password of {address}"

    def setDisabled(self, address, disabled):
        self.directory.setDisabled(address, disabled)
        return (f"disabled {address}: it may not log in; its mail is still delivered"
                if disabled else f"enabled {address}: it may log in again")

    def setAdmin(self, address, admin):
        self.directory.setAdmin(address, admin)
        return (f"{address} is an admin" if admin
                else f"{address} is no longer an admin")

    def removeUser(self, address):
        self.directory.removeUser(address)
        return f"removed user {address} (mail on disk is kept)"

    # -- aliases ----------------------------------------------------------------

    def aliases(self):
        """C{[(alias, [target, ...])]}."""
        return self.directory.listAliases()

    def addAlias(self, alias, targets):
        self.directory.addAlias(alias, targets)
        return f"{alias} -> {', '.join(self.directory.aliasTargets(alias))}"

    def removeAlias(self, alias):
        self.directory.removeAlias(alias)
        return f"removed alias {alias}"

    # -- the queue --------------------------------------------------------------

    def queue(self, state=None):
        """The L{QueueEntry}s in C{state} (a name of L{queueModel.STATES}), or all."""
        if state and state not in queueModel.STATES:
            raise ValueError(f"no such queue state: {state}")
        return self.spool.listMessages((state,) if state else None)

    def message(self, queueId):
        """
        C{(entry, lines)}: one message's L{QueueEntry} (with C{raw}) and its
        first L{SHOW_HEADER_LINES} header lines (C{None} without data).
        """
        entry = self.spool.show(queueId)
        try:
            with self.spool.openData(queueId) as f:
                lines = headerLines(f, SHOW_HEADER_LINES)
        except queueModel.NoSuchMessage:
            lines = None
        return entry, lines

    def flushAll(self):
        n = len(self.spool.flush(None))
        return f"{n} deferred message{'' if n == 1 else 's'} due now"

    def queueAction(self, queueId, action):
        """One of L{QUEUE_ACTIONS} on one message, as C{pymailer queue ACTION ID}."""
        if action == "flush":
            self.spool.flush(queueId)
            return f"{queueId}: due now; the server retries it on its next queue scan"
        if action == "hold":
            return f"{queueId}: on hold (was {self.spool.hold(queueId)})"
        if action == "release":
            self.spool.unhold(queueId)
            return f"{queueId}: released; the server delivers it on its next queue scan"
        if action == "delete":
            self.spool.delete(queueId)
            return f"{queueId}: deleted"
        if action == "bounce":
            self.spool.bounce(queueId)
            return (f"{queueId}: pending recipients failed; the server reports to the"
                    " sender on its next queue scan")
        raise ValueError(f"no such queue action: {action}")

    # -- the user's own account ---------------------------------------------------

    def mailboxes(self, user):
        """C{[(name, messages, bytes)]} of C{user}'s mailboxes."""
        rows = []
        for name in self.store.listMailboxes(user):
            try:
                messages = self.store.mailbox(user, name).messages()
            except KeyError:
                # Deleted meanwhile (by an IMAP client).
                continue
            rows.append((name, len(messages), sum(m.size for m in messages)))
        return rows

    def account(self, user):
        """C{(mailboxes, (forwardingTargets, keepCopy), isAdmin)} of C{user}."""
        return (self.mailboxes(user), self.directory.forwarding(user),
                self.directory.isAdmin(user))

    def spamTraining(self, user):
        """
        C{((spam, ham), senders)}: how many messages C{user}'s spam filter
        was trained on, and the senders it knows (L{ClassifierDB.senders}).
        """
        if self.spamDB is None:
            return (0, 0), []
        return self.spamDB.totals(user), self.spamDB.senders(user)

    def forgetSender(self, user, kind, value):
        if self.spamDB is not None:
            self.spamDB.forgetSender(user, kind, value)
        return f"The filter forgot what it knew of {value}."

    def resetSpamTraining(self, user):
        if self.spamDB is not None:
            self.spamDB.resetTraining(user)
        return "The spam filter starts again from nothing."

    def setForwarding(self, user, targets, keepCopy):
        self.directory.setForwarding(user, targets, keepCopy)
        if not targets:
            return "Forwarding stopped."
        return (f"Forwarding to {', '.join(targets)}"
                + (", keeping a copy." if keepCopy else ", keeping no copy."))

    @defer.inlineCallbacks
    def changePassword(self, user, current, new, again, ip):
        """
        C{user}'s own password change: C{current} (bytes, as typed) is
        checked through the same portal, checkers and lockouts as a login
        (a stolen session cannot change the password, and guessing it here
        counts as failed logins); the new hash is made as C{pymailer user
        passwd} makes it.

        @return: a Deferred of the text saying it is done.
        """
        if new != again:
            raise ValueError(MISMATCH)
        if not new:
            raise ValueError(EMPTY_PASSWORD)
        credentials = UsernamePassword(user.encode("utf-8"), current)
        try:
            _, _, logout = yield guardedLogin(self.portal, self.guard, ip, credentials,
                                              IWebUser, "web")
        except UnauthorizedLogin:
            raise ValueError(WRONG_PASSWORD)
        logout()
        yield self.inThread(self.resetPassword, user, new)
        return "Password changed."
