"""
The IMAP listener factory (Twisted has none: it only sets C{.portal} on
each protocol) and the builders the composition root registers.
"""

from pymailer.connlimit import LimitedFactory

from pymailer.imap.account import IMAPAccount
from pymailer.imap.fanout import SharedRefresh
from pymailer.imap.server import IMAPServer
from pymailer.quota import Quotas
from pymailer.shutdown import Connections
from pymailer.threadpool import deferToPool

class IMAPFactory(LimitedFactory):
    """
    Builds L{IMAPServer}s for one listener, within the C{[imap]} connection
    limits (L{pymailer.connlimit}).

    @param implicitTLS: the listener is wrapped in TLS (C{imaps}, RFC 8314).
    """

    def __init__(self, parts, implicitTLS=False):
        LimitedFactory.__init__(self, parts.config.imap)
        self.parts = parts
        self.portal = parts.portal
        self.tls = parts.tls
        self.guard = parts.guard
        self.store = parts.store
        self.quotas = Quotas(parts.directory, parts.store)
        self.authConfig = parts.config.auth
        self.implicitTLS = implicitTLS
        self.maxMessageSize = parts.config.smtp.max_message_size
        self.notifier = parts.notifier
        self.clients = Connections(parts.reactor)
        self.clock = parts.reactor

    def run(self, function, *args):
        return deferToPool(self.parts.reactor, self.parts.threadpool, function, *args)

    def refusal(self, reason):
        # RFC 3501 7.1.5: a BYE greeting refuses the connection; RFC 5530
        # 3: UNAVAILABLE, "try again later".
        return b"* BYE [UNAVAILABLE] " + reason.encode("ascii")

    def buildSession(self, addr):
        protocol = IMAPServer(self)
        protocol.factory = self
        return protocol


def buildIMAP(role, parts):
    return IMAPFactory(parts, implicitTLS=(role == "imaps"))


def buildAccount(parts):
    notifier = parts.notifier
    # One per process, for every IMAP listener: sessions on one mailbox
    # share the read that follows a change (issue 14).
    shared = SharedRefresh(parts.reactor, lambda f, *a, **kw: deferToPool(
        parts.reactor, parts.threadpool, f, *a, **kw))

    def avatarFor(user):
        return IMAPAccount(user, parts.store, parts.reactor, parts.threadpool, notifier,
                           shared)

    return avatarFor
