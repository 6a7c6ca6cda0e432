"""
The vocabulary of policy: the facts a piece judges, the decision it returns,
and a base class for pieces that care about few stages.

As in maddy and mox, a check is a function from facts to a decision with a
named reason; the SMTP server turns decisions into replies, and nothing in
here knows the wire format.
"""

from dataclasses import dataclass, field
from typing import Optional

from zope.interface import implementer

from pymailer.interfaces import IPolicy

ACCEPT = "accept"
REJECT = "reject"
TEMPFAIL = "tempfail"


@dataclass(frozen=True)
class Decision:
    """
    What a piece says about one stage.

    @ivar reason: a short name for logs and metrics ("spf", "dmarc.reject",
        "ratelimit.connections").
    @ivar headers: header fields (CRLF-ended bytes) to add at the top.
    @ivar folder: the mailbox local recipients get the message in, for
        C{recipients} (all when C{None}).
    @ivar disconnect: close the connection after the reply (421, RFC 5321
        §3.8).
    """

    action: str = ACCEPT
    code: int = 250
    enhanced: str = "2.0.0"
    text: str = ""
    reason: str = ""
    headers: tuple = ()
    folder: Optional[str] = None
    recipients: Optional[tuple] = None
    disconnect: bool = False

    @classmethod
    def accept(cls, reason=""):
        if not reason and cls is Decision:
            # Frozen, so one plain acceptance serves every check of every
            # message (issue 14: an allocation per stage per piece).
            return ACCEPTED
        return cls(reason=reason)

    @classmethod
    def reject(cls, code, enhanced, text, reason, disconnect=False):
        return cls(REJECT, code, enhanced, text, reason, disconnect=disconnect)

    @classmethod
    def tempfail(cls, code, enhanced, text, reason, disconnect=False):
        return cls(TEMPFAIL, code, enhanced, text, reason, disconnect=disconnect)

    @classmethod
    def addHeaders(cls, headers, reason=""):
        return cls(headers=tuple(headers), reason=reason)

    @classmethod
    def fileInto(cls, folder, reason, recipients=None):
        return cls(folder=folder, reason=reason,
                   recipients=None if recipients is None else tuple(recipients))

    @property
    def refuses(self):
        return self.action != ACCEPT

    @property
    def addsNothing(self):
        """An acceptance with no header, folder or reason to merge."""
        return not (self.headers or self.folder is not None or self.reason)


# The plain acceptance (L{Decision.accept}).
ACCEPTED = Decision()


@dataclass(frozen=True)
class AuthResult:
    """
    One RFC 8601 result: C{spf=fail smtp.mailfrom=x.test (reason)}.

    @ivar properties: C{(("smtp.mailfrom", "x.test"),)}, in order.
    """

    method: str
    result: str
    reason: str = ""
    properties: tuple = ()


@dataclass
class Facts:
    """
    What is known of one SMTP session and its current transaction.  The SMTP
    server fills it in; pieces read it, and add what later pieces need to
    C{authResults} (DMARC reads SPF's and DKIM's) or C{notes}.

    @ivar authenticatedAs: the user after AUTH (submission), else C{None}.
    @ivar sender: the reverse-path (C{""} for the null sender), C{None}
        before MAIL.
    """

    clientAddress: str = ""
    role: str = "smtp"
    helo: Optional[str] = None
    tls: bool = False
    authenticatedAs: Optional[str] = None
    sender: Optional[str] = None
    recipients: list = field(default_factory=list)
    size: int = 0
    authResults: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    def newTransaction(self):
        self.sender = None
        self.recipients = []
        self.size = 0
        self.authResults = []
        self.notes = {}

    def result(self, method):
        """The first recorded result of C{method}, or C{None}."""
        for r in self.authResults:
            if r.method == method:
                return r
        return None


@dataclass(frozen=True)
class PolicyContext:
    """
    What a piece may use, given to L{IPolicyFactory.build}.

    @ivar resolver: the one DNS resolver (L{pymailer.dns.Resolver} or a
        fake with its C{lookup}/C{lookupBlocking}).
    @ivar threadpool: for blocking work (crypto, reading the message).
    """

    config: object
    reactor: object
    threadpool: object
    resolver: object
    directory: object = None
    # The counters of rate limits (L{pymailer.interfaces.ILimitStore});
    # C{None}: each piece keeps its own in memory.
    limits: object = None


@implementer(IPolicy)
class Policy:
    """A piece that accepts at every stage; override what you check."""

    name = "policy"

    def checkConnect(self, facts):
        return Decision.accept()

    def checkHelo(self, facts):
        return Decision.accept()

    def checkMail(self, facts):
        return Decision.accept()

    def checkRecipient(self, facts, recipient):
        return Decision.accept()

    def checkUnknownRecipient(self, facts, recipient):
        return Decision.accept()

    def checkData(self, facts, message):
        return Decision.accept()

    def keepHeader(self, facts, field):
        return True
