"""
QUOTA (RFC 9208): GETQUOTAROOT, GETQUOTA and SETQUOTA, and the
C{NO [OVERQUOTA]} of APPEND and COPY, over L{pymailer.quota.Quotas}.

One quota root per user, named C{""} (as in the RFC's examples), holding
every mailbox of the account, with one resource, STORAGE (RFC 9208 5.1:
in units of 1024 octets; usage rounded up, so a mailbox with one small
message never shows 0 of a limit it is using).  A user without a limit
has no quota root: GETQUOTAROOT names none, GETQUOTA C{""} is refused
(the QUOTA response's list cannot be empty).  MESSAGE is not offered:
there is no per-user message-count limit to report.

SETQUOTA changes the limit of the only root a user can name, their own,
and only for an admin (C{pymailer user admin}); anyone else gets
C{NO [NOPERM]}, which RFC 9208 4.2.3 allows.  The usual way to set a
quota is the admin command, C{pymailer user quota}.

Trust: the client names a root and numbers; the root must be ours, the
numbers are bounded (a 63-bit limit at most), and who may change a limit
is the accounts directory's answer, asked for every SETQUOTA.
"""

from pymailer.imap.errors import CommandFailed
from pymailer.imap.parser import Atom, ParseError, astring, formatValue
from pymailer.quota import OverQuota, QuotaState

ROOT = b""
STORAGE = b"STORAGE"
UNIT = 1024
CAPABILITIES = (b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTASET")
MAX_LIMIT = 2 ** 63 // UNIT - 1


def units(octets):
    """Octets as RFC 9208 STORAGE units (1024 octets), rounded up."""
    return -(-octets // UNIT)


def quotaLine(state):
    """C{* QUOTA "" (STORAGE used limit)} for a L{pymailer.quota.QuotaState}."""
    return b"* QUOTA %s (STORAGE %d %d)" % (
        formatValue(ROOT), units(state.usage), state.limit // UNIT)


def parseLimits(tokens):
    """
    SETQUOTA's list: C{(STORAGE n)} -> the limit in octets; C{()} removes
    it (RFC 9208 4.2.3: resources left out get no limit).

    @raise ParseError: not resource/number pairs.
    @raise CommandFailed: a resource other than STORAGE.
    """
    if not isinstance(tokens, list) or len(tokens) % 2:
        raise ParseError("SETQUOTA needs a list of resource names and limits")
    limit = None
    for name, value in zip(tokens[::2], tokens[1::2]):
        if not isinstance(name, Atom) or not isinstance(value, Atom) \
                or not value.isdigit() or len(value) > 19:
            raise ParseError("SETQUOTA needs a list of resource names and limits")
        if name.upper() != STORAGE:
            raise CommandFailed("[CANNOT] Only the STORAGE resource has limits here")
        if int(value) > MAX_LIMIT:
            raise ParseError("SETQUOTA limit out of range")
        limit = int(value) * UNIT
    return limit


class QuotaCommands:
    """
    Mixed into L{pymailer.imap.server.IMAPServer}: the QUOTA commands, and
    the check APPEND and COPY make.  The factory's C{quotas} is a
    L{pymailer.quota.Quotas}, or C{None} (no quotas: nothing advertised).
    """

    # The user's quota as this session's last check found it, with what
    # that check let in counted (a QuotaState), or None: see quotaRoomKnown.
    _quotaSeen = None

    def quotaCapabilities(self):
        return list(CAPABILITIES) if self.factory.quotas is not None else []

    def checkQuota(self, adding):
        """
        Blocking: C{NO [OVERQUOTA]} (RFC 5530 3, RFC 9208) unless C{adding}
        more octets fit in the user's quota.
        """
        quotas = self.factory.quotas
        if quotas is None:
            return
        try:
            state = quotas.check(self.user, adding)
        except OverQuota:
            raise CommandFailed("[OVERQUOTA] Quota exceeded: the mailbox is full") from None
        # What this session adds counts at once (an APPEND that then
        # fails only makes the guess cautious).
        self._quotaSeen = QuotaState(state.limit, state.usage + max(adding, 0))

    def quotaRoomKnown(self, adding):
        """
        Whether C{adding} more octets fit as far as this session knows
        without asking (no quotas; or its last check left room): APPEND's
        check before the upload can then be skipped.  Only that early
        answer rests on it: the command checks again before it stores, so
        a mailbox filled meanwhile (a delivery, another session) still
        gets C{NO [OVERQUOTA]}, after the upload (the limit is soft
        anyway, L{pymailer.quota}).
        """
        if self.factory.quotas is None:
            return True
        seen = self._quotaSeen
        return seen is not None and seen.fits(adding)

    def _quotas(self):
        if self.factory.quotas is None:
            raise CommandFailed("Quotas are not available")
        return self.factory.quotas

    def cmd_GETQUOTAROOT(self, tag, args):
        if len(args) != 1:
            raise ParseError("GETQUOTAROOT needs a mailbox name")
        name = self.mailboxName(args[0])
        quotas = self._quotas()

        def work():
            self._openMailbox(name, b"NONEXISTENT")
            return quotas.state(self.user)

        def answer(state):
            line = b"* QUOTAROOT " + formatValue(self.encodeName(name))
            if state.limit is None:
                self.sendLine(line)
                return
            self.sendLine(line + b" " + formatValue(ROOT))
            self.sendLine(quotaLine(state))

        return self.account.run(work).addCallback(answer)

    def cmd_GETQUOTA(self, tag, args):
        if len(args) != 1:
            raise ParseError("GETQUOTA needs a quota root")
        root = astring(args[0], "quota root")
        quotas = self._quotas()

        def answer(state):
            if root != ROOT or state.limit is None:
                raise CommandFailed("[NONEXISTENT] No such quota root")
            self.sendLine(quotaLine(state))

        return self.account.run(quotas.state, self.user).addCallback(answer)

    def cmd_SETQUOTA(self, tag, args):
        if len(args) != 2:
            raise ParseError("SETQUOTA needs a quota root and a list of limits")
        root = astring(args[0], "quota root")
        limit = parseLimits(args[1])
        quotas = self._quotas()

        def work():
            if not quotas.mayChange(self.user):
                raise CommandFailed("[NOPERM] Only an administrator may change quotas")
            if root != ROOT:
                raise CommandFailed("[NONEXISTENT] No such quota root")
            quotas.setLimit(self.user, limit)
            return quotas.state(self.user)

        def answer(state):
            if state.limit is not None:
                self.sendLine(quotaLine(state))

        return self.account.run(work).addCallback(answer)

    for _command in (cmd_GETQUOTAROOT, cmd_GETQUOTA, cmd_SETQUOTA):
        _command.states = ("auth", "select")
    del _command
