"""
Per-user storage quotas: the limit is the accounts directory's
(C{pymailer user quota ADDRESS SIZE}, L{IAccountDirectory.quota}), the
usage the store's (L{IMailStore.usage}: the sizes of every message in
every folder), so nothing is counted twice and nothing can drift: there
is no running total to keep in step with deliveries, expunges and other
processes.

Where it is enforced, and how hard:
  - SMTP, at RCPT time (L{pymailer.intake}): a user who is full, or whom
    the size declared with C{MAIL FROM ... SIZE=} (RFC 1870) would take
    over, gets C{452 4.2.2 Mailbox full} (RFC 3463 3.3: X.2.2, a
    temporary failure), so the sending server keeps the message and
    retries, rather than us bouncing it later.
  - Local delivery from the queue does I{not} check: a message accepted
    with a 250 is delivered even if, meanwhile, an earlier one filled the
    mailbox (several transactions in flight, a message for several
    recipients, a message without SIZE=).  The 250 accepted
    responsibility for it (RFC 5321 6.1); bouncing afterwards would
    turn a full mailbox into lost mail for the user and a bounce to a
    sender who may be forged (backscatter), where the overrun is bounded
    (at most the messages accepted before the mailbox filled, each within
    the message size limit) and the next RCPT is refused.  Dovecot's
    C{quota_grace} makes the same trade.
  - IMAP APPEND, MULTIAPPEND and COPY (L{pymailer.imap.quota}): refused
    with C{NO [OVERQUOTA]} (RFC 9208 4.3, RFC 5530) when they would take
    the usage over the limit.  MOVE within the account changes nothing
    and is never refused; expunging always works, so a full user can make
    room.

The checks read and then write without a lock between (two APPENDs at
once may both pass): the limit is as soft as the delivery rule above
makes it anyway, and a lock across processes for every delivery would
cost more than a few kilobytes over a limit.

Everything here is blocking (directory and store): call it from the
thread pool.
"""

from dataclasses import dataclass

__all__ = ["OverQuota", "QuotaState", "Quotas"]


class OverQuota(Exception):
    """The operation would take the user over their storage limit."""


@dataclass(frozen=True)
class QuotaState:
    """
    @ivar limit: octets, or C{None} (no limit).
    @ivar usage: octets.
    """

    limit: object
    usage: int

    def fits(self, adding):
        """
        Whether C{adding} more octets stay within the limit.  A full
        mailbox takes nothing more, not even a message of unknown size
        (C{adding} 0: SMTP without SIZE=).
        """
        return self.limit is None or self.usage + max(adding, 1) <= self.limit


class Quotas:
    """
    The quota of each user.

    @param directory: an L{pymailer.interfaces.IAccountDirectory}.
    @param store: the L{pymailer.interfaces.IMailStore}.
    """

    def __init__(self, directory, store):
        self.directory = directory
        self.store = store

    def state(self, user):
        """Blocking: the user's L{QuotaState} now."""
        limit = self.directory.quota(user)
        # The store is asked only when there is a limit: the users without
        # one (most) cost nothing per delivery.
        return QuotaState(limit, self.store.usage(user) if limit is not None else 0)

    def roomAmong(self, users, adding):
        """
        Blocking: whether C{adding} more octets fit in the mailbox of at
        least one of C{users} (an alias), and whether any of them has a
        limit.  Every limit is read (the directory: one small look-up
        each), but the usage (the store: a sum over all of a user's mail)
        only of users with a limit, and only until one of them has room.

        @return: C{(room, limited)}, two booleans.
        """
        limits = [(user, self.directory.quota(user)) for user in users]
        limited = [(user, limit) for user, limit in limits if limit is not None]
        if len(limited) < len(limits):
            return True, bool(limited)  # a user without a limit has room
        return any(QuotaState(limit, self.store.usage(user)).fits(adding)
                   for user, limit in limited), True

    def check(self, user, adding):
        """
        Blocking: L{OverQuota} unless C{adding} more octets fit.

        @return: the L{QuotaState} it judged.
        """
        state = self.state(user)
        if not state.fits(adding):
            raise OverQuota(user)
        return state

    def mayChange(self, user):
        """Blocking: may C{user} change quotas (IMAP SETQUOTA)?  Admins only."""
        return self.directory.isAdmin(user)

    def setLimit(self, user, limit):
        """Blocking: set (C{None}: remove) C{user}'s limit, in octets."""
        self.directory.setQuota(user, limit)
