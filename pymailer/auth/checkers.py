"""
The password checker behind every login (SMTP AUTH, later IMAP and POP3).

argon2 verification is slow by design, so it runs in the thread pool, never
on the reactor.  An unknown user costs the same verification as a known one
(against a dummy hash) so timing does not tell which addresses exist.
"""

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from pymailer.auth.directory import normaliseAddress
from pymailer.auth.passwords import verifyPassword


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


@implementer(ICredentialsChecker)
class PasswordChecker:
    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, directory, reactor, threadpool):
        self.directory = directory
        self.reactor = reactor
        self.threadpool = threadpool

    def requestAvatarId(self, credentials):
        return deferToThreadPool(
            self.reactor, self.threadpool, self.check,
            credentials.username, credentials.password,
        )

    def check(self, username, password):
        """
        Blocking.  @return: the user's normalised address.
        @raise UnauthorizedLogin: wrong user name or password.
        """
        try:
            address = normaliseAddress(_text(username))
            passwordText = _text(password)
        except (UnicodeDecodeError, ValueError):
            address, passwordText = None, ""
        stored = self.directory.passwordHash(address) if address else None
        if verifyPassword(stored, passwordText) and stored is not None:
            return address
        raise UnauthorizedLogin("wrong user name or password")
