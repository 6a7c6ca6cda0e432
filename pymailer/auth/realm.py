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
    """

    def __init__(self, intakeFactory):
        self.intakeFactory = intakeFactory

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IMessageIntake in interfaces:
            user = None if avatarId is ANONYMOUS else avatarId
            return IMessageIntake, self.intakeFactory(user), lambda: None
        raise UnauthorizedLogin(f"no avatar for {interfaces!r}")
