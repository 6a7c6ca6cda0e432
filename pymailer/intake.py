"""
The intake: where an SMTP session's transactions go.

One message's path starts here: the SMTP server asks the intake about the
sender and each recipient (routing and policy), streams the data into the
spool, and commits it; the queue runner takes it from there.  The intake
knows nothing of the SMTP wire format, and the SMTP server nothing of disks.
"""

import shutil

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from pymailer.delivery.router import Local, Reject, Relay
from pymailer.interfaces import IIncomingMessage, IMessageIntake
from pymailer.smtp.reply import SMTPReply


@implementer(IIncomingMessage)
class IncomingMessage:
    def __init__(self, writer, intake):
        self._writer = writer
        self._intake = intake
        self.queueId = writer.queueId

    def write(self, data):
        return self._intake._inThread(self._writer.write, data)

    def commit(self, envelope):
        d = self._intake._inThread(self._writer.commit, envelope)
        d.addCallback(lambda _: self._intake.queue.enqueue(self.queueId))
        return d

    def abort(self):
        return self._intake._inThread(self._writer.abort)


@implementer(IMessageIntake)
class MessageIntake:
    """
    @ivar relayAllowed: may recipients in other domains be accepted (an
        authenticated submission client), or only local ones (port 25).
    """

    def __init__(self, router, spool, queue, reactor, threadpool,
                 minFreeSpace=0, relayAllowed=False, user=None):
        self.router = router
        self.spool = spool
        self.queue = queue
        self.reactor = reactor
        self.threadpool = threadpool
        self.minFreeSpace = minFreeSpace
        self.relayAllowed = relayAllowed
        self.user = user

    def _inThread(self, f, *args):
        return deferToThreadPool(self.reactor, self.threadpool, f, *args)

    def checkCapacity(self, size):
        def check():
            free = shutil.disk_usage(self.spool.root).free
            if free < max(self.minFreeSpace, size):
                raise SMTPReply(452, "4.3.1", "Insufficient system storage")

        return self._inThread(check)

    def validateSender(self, session, sender, params):
        return defer.succeed(None)

    def validateRecipient(self, session, sender, recipient):
        d = self._inThread(self.router.route, recipient)
        d.addCallback(self._judgeRoute)
        return d

    def _judgeRoute(self, route):
        if isinstance(route, Reject):
            raise SMTPReply(route.code, route.enhanced, route.text)
        if isinstance(route, Relay) and not self.relayAllowed:
            raise SMTPReply(554, "5.7.1", f"<{route.address}>: Relay access denied")
        assert isinstance(route, (Local, Relay))

    def openMessage(self):
        return IncomingMessage(self.spool.newMessage(), self)
