"""
SMTP listeners: which role a port plays, and the factory that enforces the
connection limits before a session starts.
"""

from dataclasses import dataclass

from pymailer.connlimit import LimitedFactory
from pymailer.events import PROMETHEUS_ONLY
from pymailer.policy.chain import PolicyChain
from pymailer.shutdown import Connections
from pymailer.smtp.maillog import MailLog
from pymailer.smtp.server import SMTPServer


@dataclass(frozen=True)
class SMTPRole:
    """
    @ivar requireAuth: MAIL needs AUTH first (submission, RFC 6409 §4.3).
    @ivar offerAuth: AUTH is offered (over TLS, or plaintext on loopback
        when the config allows).
    @ivar implicitTLS: the listener wraps the connection in TLS from the
        first byte (RFC 8314 §3.3), so STARTTLS is not offered.
    """

    name: str
    requireAuth: bool = False
    offerAuth: bool = False
    implicitTLS: bool = False


MTA = SMTPRole("smtp")
SUBMISSION = SMTPRole("submission", requireAuth=True, offerAuth=True)
SUBMISSIONS = SMTPRole("submissions", requireAuth=True, offerAuth=True, implicitTLS=True)
ROLES = {r.name: r for r in (MTA, SUBMISSION, SUBMISSIONS)}


class SMTPFactory(LimitedFactory):
    """
    Builds L{SMTPServer}s for one listener, enforcing the connection limits
    (L{pymailer.connlimit}; C{[smtp] max_connections_per_ip, max_connections}).
    """

    protocol = SMTPServer

    def __init__(self, hostname, limits, portal, reactor, role=MTA, tls=None,
                 guard=None, authConfig=None, hideClientIP=False, policy=None,
                 events=None):
        LimitedFactory.__init__(self, limits)
        self.hostname = hostname
        # The name in the greeting, as bytes: IDNA-encoded once, not per
        # connection.
        self.greetingName = hostname.encode("idna")
        self.portal = portal
        self.reactor = reactor
        self.role = role
        self.tls = tls
        self.guard = guard
        self.authConfig = authConfig
        self.hideClientIP = hideClientIP and role.requireAuth
        # The policy chain, shared by every listener (one rate-limit count).
        self.policy = policy if policy is not None else PolicyChain([], hostname)
        self.clients = Connections(reactor)
        # Accepted and refused mail is recorded here (metrics, monitoring).
        self.events = events if events is not None else PROMETHEUS_ONLY
        # One record per accepted message and per refused command.
        self.mailLog = MailLog(role.name)

    def refusal(self, reason):
        return f"421 4.7.0 {reason}".encode("ascii")

    def buildSession(self, addr):
        p = self.protocol(self)
        p.portal = self.portal
        return p
