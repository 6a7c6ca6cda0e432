"""
The one realm that serves every protocol, switching on the interface asked
for (the shape of Twisted's own mail realms).  The Portal is never
subclassed: policy about who gets what lives here and in the checkers.
"""

from twisted.cred.checkers import ANONYMOUS
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from zope.interface import implementer

from pymailer.interfaces import IMessageIntake


@implementer(IRealm)
class MailRealm:
    """
    @param intakeFactory: C{intakeFactory(user)} makes the SMTP avatar; C{user}
        is C{None} for an anonymous (port 25) session, which may not relay.
    @ivar avatarFactories: interface -> C{factory(user)} for the mailbox
        protocols (POP3's C{IMailboxPOP3}, IMAP's C{IAccountIMAP}); a factory
        may return C{(avatar, logout)} or just the avatar.
    """

    def __init__(self, intakeFactory, avatarFactories=None):
        self.intakeFactory = intakeFactory
        self.avatarFactories = dict(avatarFactories or {})

    def requestAvatar(self, avatarId, mind, *interfaces):
        user = None if avatarId is ANONYMOUS else avatarId
        for interface in interfaces:
            if interface is IMessageIntake:
                return IMessageIntake, self.intakeFactory(user), lambda: None
            factory = self.avatarFactories.get(interface)
            if factory is not None and user is not None:
                avatar = factory(user)
                if isinstance(avatar, tuple):
                    avatar, logout = avatar
                else:
                    logout = lambda: None  # noqa: E731
                return interface, avatar, logout
        raise UnauthorizedLogin(f"no avatar for {interfaces!r}")
