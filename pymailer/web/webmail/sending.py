"""
What sending and saving from the webmail does to the user's mail: the
store side (Drafts, Sent, the answered or forwarded message's flags, the
messages a new one takes parts from) and the hand-over to the queue
(L{pymailer.smtp.submission.submit}: the same intake, sender ownership
check, policy chain and DKIM signing as a submission over SMTP).

The store methods block (run them in the thread pool); the user is always
the session's, so a folder or UID of another user's is not found
(L{KeyError}), whatever a form says.
"""

from __future__ import annotations

import io

from pymailer.envelope import Session
from pymailer.interfaces import IMessageIntake
from pymailer.policy.decision import Facts
from pymailer.smtp import submission
from pymailer.smtp.maillog import MailLog
from pymailer.web.webmail.mailbox import ANSWERED, SEEN, Webmail

DRAFTS = "\\Drafts"
SENT = "\\Sent"
DRAFT = "\\Draft"
# RFC 5788 registers the keyword clients set on a forwarded message.
FORWARDED = "$Forwarded"
# The flag the original gets, by how the new message uses it.
ORIGIN_FLAGS = {"reply": ANSWERED, "replyall": ANSWERED,
                "forward": FORWARDED, "forwardattach": FORWARDED}
# The submission "with" keyword of the Received field: the message came
# in over HTTPS from an authenticated user.
PROTOCOL = "HTTPS"
ROLE = "webmail"


class Outbox(Webmail):
    """The webmail's store operations for writing mail (see the module)."""

    def specialFolder(self, user, use, name):
        """The name of C{user}'s folder with special use C{use}, made as C{name} if none."""
        for folder, uses in self.store.specialUses(user).items():
            if use in uses:
                return folder
        try:
            self.store.createMailbox(user, name)
        except KeyError:
            pass  # a folder of that name without the use: file into it
        return name

    def octets(self, user, name, uid):
        """The stored octets of one message of C{user}'s; L{KeyError} if none."""
        return self._octets(self._mailbox(user, name), uid)

    def isDraft(self, user, name):
        """Whether folder C{name} is C{user}'s Drafts folder."""
        return name == self.specialFolder(user, DRAFTS, "Drafts")

    def saveDraft(self, user, octets, replacing=None):
        """
        Append C{octets} to Drafts (C{\\Draft}, C{\\Seen}) and expunge the
        draft it replaces (UID C{replacing} in Drafts), in that order: a
        failure never loses both.

        @return: C{(folder, new UID)}.
        """
        name = self.specialFolder(user, DRAFTS, "Drafts")
        drafts = self._mailbox(user, name)
        uid = drafts.append(io.BytesIO(octets), [DRAFT, SEEN])
        if replacing is not None and replacing != uid:
            drafts.expunge([replacing])
        return name, uid

    def discardDraft(self, user, uid):
        name = self.specialFolder(user, DRAFTS, "Drafts")
        self._mailbox(user, name).expunge([uid])

    def fileSent(self, user, octets):
        """Append the sent copy to Sent, read (C{\\Seen}); its folder."""
        name = self.specialFolder(user, SENT, "Sent")
        self._mailbox(user, name).append(io.BytesIO(octets), [SEEN])
        return name

    def markOrigin(self, user, mode, name, uid):
        """The answered (C{\\Answered}) or forwarded (C{$Forwarded}) message flagged."""
        flag = ORIGIN_FLAGS.get(mode)
        if flag is None:
            return
        try:
            self._mailbox(user, name).storeFlags([uid], "add", [flag])
        except KeyError:
            pass  # moved or deleted meanwhile: nothing to mark


class Submitter:
    """
    Hands a message to the queue as the user's submission.

    @param portal: the service's portal, whose realm gives a user's intake
        (the web login authenticated them through the same portal).
    @param policy: the policy chain every SMTP listener asks.
    @param limits: the C{[smtp]} limits.
    @param events: records accepted mail (metrics, monitoring).
    @param hideClientIP: leave the browser's address out of the Received
        field (C{[submission] hide_client_ip}).
    """

    def __init__(self, portal, policy, limits, events, hideClientIP=False):
        self.realm = portal.realm
        self.policy = policy
        self.limits = limits
        self.events = events
        self.hideClientIP = hideClientIP
        # The same mail log records as a submission over SMTP.
        self.mailLog = MailLog(ROLE)

    def submit(self, user, clientAddress, sender, recipients, octets):
        """
        Queue C{octets} from C{sender} (an address C{user} must own) to
        C{recipients}.

        @return: a Deferred of the L{pymailer.envelope.Envelope}; it fails
            with the L{pymailer.smtp.reply.SMTPReply} an SMTP client would
            get.
        """
        _, intake, _ = self.realm.requestAvatar(user, None, IMessageIntake)
        smtputf8 = not (sender.isascii() and all(r.isascii() for r in recipients))
        session = Session(helo=ROLE, clientAddress="" if self.hideClientIP else clientAddress,
                          protocol=PROTOCOL, authenticatedAs=user)
        facts = Facts(clientAddress=clientAddress, role=ROLE, helo=ROLE, tls=True,
                      authenticatedAs=user)
        d = submission.submit(intake, self.policy, facts, self.limits, session, sender,
                              recipients, octets, "7BIT" if octets.isascii() else "8BITMIME",
                              smtputf8)

        def accepted(envelope):
            self.mailLog.accepted(envelope.queueId, sender, recipients, envelope.size,
                                  clientAddress, user,
                                  [r.address for r in envelope.delivered()])
            self.events.messageAccepted(ROLE, envelope.queueId, sender, recipients,
                                        clientAddress)
            return envelope

        return d.addCallback(accepted)
