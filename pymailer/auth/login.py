"""
A password login through the portal, guarded by the L{LoginGuard}: the one
sequence every protocol runs after it has the client's credentials (POP3
USER/PASS and AUTH now; IMAP LOGIN/AUTHENTICATE and SMTP AUTH can share it).

  1. the client address is locked out, for every account or for this one
     -> L{LoginBlocked} at once;
  2. the account is locked out from every address (guessing spread over
     many, L{pymailer.auth.guard}) -> answered like a wrong password,
     without checking it (the guesser learns nothing), but still counted
     and delayed;
  3. otherwise C{portal.login}; a failure is counted and answered only after
     the guard's delay.  The failure that reaches the limit is still an
     ordinary failure: the lockout applies from the next attempt on.

Trusts nothing of the credentials: the user name is only decoded for the
guard's bookkeeping and logs (undecodable bytes are replaced).
"""

from twisted.cred.error import UnauthorizedLogin

from pymailer.auth.directory import normaliseAddress
from pymailer.auth.guard import ACCOUNT, ADDRESS, LOGIN


class LoginBlocked(UnauthorizedLogin):
    """The client's address is locked out after too many failed logins."""


def accountName(username):
    """
    The user name as the guard counts it (C{str}, never raises): the
    normalised address, as the checker logs in with, so that C{Bob@EXAMPLE.org}
    and C{bob@example.org} share one lockout.
    """
    if isinstance(username, bytes):
        username = username.decode("utf-8", "replace")
    try:
        return normaliseAddress(str(username))
    except ValueError:
        return str(username)


def guardedLogin(portal, guard, ip, credentials, interface, protocol):
    """
    Log C{credentials} in for C{interface}, through C{guard}.

    @param ip: the client's address (C{str}), the guard's key.
    @param protocol: C{"pop3"}, C{"imap"}...: for the guard's log lines.
    @return: a C{Deferred} firing with C{portal.login}'s C{(interface,
        avatar, logout)}, or failing with L{LoginBlocked} or
        L{UnauthorizedLogin} (only after the failure delay).
    """
    account = accountName(credentials.username)

    def checked(lockedOut):
        if lockedOut in (ADDRESS, LOGIN):
            raise LoginBlocked("too many failed logins from this address")
        if lockedOut == ACCOUNT:
            raise UnauthorizedLogin("account locked out")
        return portal.login(credentials, None, interface)

    def succeeded(result):
        guard.succeeded(ip, account)
        return result

    def failed(failure):
        if failure.check(LoginBlocked):
            return failure
        failure.trap(UnauthorizedLogin)
        return guard.failed(ip, account, protocol).addCallback(lambda _: failure)

    d = guard.blocked(ip, account).addCallback(checked)
    return d.addCallbacks(succeeded, failed)
