"""
route(address) -> Local | Relay | Reject, in one place.

The SMTP server asks at RCPT time (to refuse early), and the delivery agent
asks again at delivery time (so an alias changed in between takes effect).
Lookup order for a local domain, as Postfix's virtual(5) does it: the exact
user (with their forwarding, if any), the exact alias, then the same two for the address without its
``+tag`` (plus-addressing), then the domain's catch-all.
"""

from dataclasses import dataclass

from pymailer.auth.directory import normaliseAddress

# An alias chain deeper than this is a loop (or a mistake) either way.
MAX_ALIAS_DEPTH = 20


@dataclass(frozen=True)
class Local:
    """
    @ivar users: the local mailboxes the address reaches.
    @ivar forwards: remote addresses it reaches through aliases.
    """

    address: str
    users: tuple
    forwards: tuple = ()


@dataclass(frozen=True)
class Relay:
    address: str


@dataclass(frozen=True)
class Reject:
    code: int
    enhanced: str
    text: str


class Router:
    def __init__(self, directory, recipientDelimiter="+", postmaster=None):
        self.directory = directory
        self.delimiter = recipientDelimiter
        self.postmaster = postmaster

    def route(self, address):
        """
        Blocking (it reads the account directory).

        @param address: C{local@domain}, not yet normalised.
        """
        if address.lower() == "postmaster" and self.postmaster:
            # RFC 5321 §4.5.1: RCPT TO:<Postmaster> without a domain.
            address = self.postmaster
        try:
            address = normaliseAddress(address)
        except ValueError as e:
            return Reject(553, "5.1.3", f"Bad recipient address syntax: {e}")
        domain = address.rpartition("@")[2]
        if not self.directory.hasDomain(domain):
            return Relay(address)
        users, forwards, loop = [], [], [False]
        if not self._expand(address, users, forwards, set(), loop, 0):
            if address.partition("@")[0] == "postmaster" and self.postmaster:
                return self.route(self.postmaster)
            return Reject(550, "5.1.1", "Recipient address rejected: user unknown")
        if not users and not forwards:
            if loop[0]:
                # RFC 3463: X.4.6 "Routing loop detected".
                return Reject(550, "5.4.6", "Recipient address rejected: alias loop")
            # An alias whose targets are all gone.
            return Reject(550, "5.1.1", "Recipient address rejected: user unknown")
        return Local(address, tuple(dict.fromkeys(users)), tuple(dict.fromkeys(forwards)))

    def _expand(self, address, users, forwards, seen, loop, depth):
        """
        Add what C{address} (local, normalised) reaches to C{users} and
        C{forwards}.

        @return: C{False} if the address is unknown.
        """
        if address in seen or depth > MAX_ALIAS_DEPTH:
            loop[0] = True
            return True
        seen.add(address)
        local, _, domain = address.rpartition("@")
        candidates = [address]
        if self.delimiter and self.delimiter in local:
            candidates.append(local.split(self.delimiter, 1)[0] + "@" + domain)
        for candidate in candidates:
            if self.directory.hasUser(candidate):
                # A user's own alias rows are their forwarding (set on
                # /account/): mail goes to those targets, and to the user's
                # mailbox only if they are one of them (a kept copy).
                targets = self.directory.aliasTargets(candidate)
                if not targets:
                    users.append(candidate)
                for target in targets:
                    if target == candidate:
                        users.append(candidate)
                    else:
                        self._expandTarget(target, users, forwards, seen, loop, depth)
                return True
            targets = self.directory.aliasTargets(candidate)
            if targets:
                for target in targets:
                    self._expandTarget(target, users, forwards, seen, loop, depth)
                return True
        catchAll = self.directory.catchAll(domain)
        if catchAll and catchAll not in seen:
            self._expandTarget(catchAll, users, forwards, seen, loop, depth)
            return True
        return False

    def _expandTarget(self, target, users, forwards, seen, loop, depth):
        target = normaliseAddress(target)
        if self.directory.hasDomain(target.rpartition("@")[2]):
            self._expand(target, users, forwards, seen, loop, depth + 1)
        else:
            forwards.append(target)

    def owns(self, user, sender):
        """
        May the authenticated C{user} send as C{sender}?  Their own address,
        with or without a +tag, or an alias that reaches them.  Blocking.
        """
        try:
            sender = normaliseAddress(sender)
        except ValueError:
            return False
        if sender == user:
            return True
        route = self.route(sender)
        return isinstance(route, Local) and user in route.users
