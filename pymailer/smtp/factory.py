"""
SMTP listeners: which role a port plays, and the factory that enforces the
connection limits before a session starts.
"""

from dataclasses import dataclass

from twisted.internet.protocol import Protocol, ServerFactory

from pymailer.policy.chain import PolicyChain
from pymailer.shutdown import Connections
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


class _Refusal(Protocol):
    """Says why a connection over the limits is refused, and closes it."""

    def __init__(self, text):
        self.text = text

    def connectionMade(self):
        self.transport.write(f"421 4.7.0 {self.text}\r\n".encode("ascii"))
        self.transport.loseConnection()


class SMTPFactory(ServerFactory):
    """
    Builds L{SMTPServer}s for one listener, enforcing the connection limits
    (per client IP and in all; Postfix's smtpd_client_connection_count_limit
    and process limit).
    """

    protocol = SMTPServer

    def __init__(self, hostname, limits, portal, reactor, role=MTA, tls=None,
                 guard=None, authConfig=None, hideClientIP=False, policy=None):
        self.hostname = hostname
        self.limits = limits
        self.portal = portal
        self.reactor = reactor
        self.role = role
        self.tls = tls
        self.guard = guard
        self.authConfig = authConfig
        self.hideClientIP = hideClientIP and role.requireAuth
        # The policy chain, shared by every listener (one rate-limit count).
        self.policy = policy if policy is not None else PolicyChain([], hostname)
        self.connections = {}
        self.total = 0
        self.clients = Connections(reactor)

    def buildProtocol(self, addr):
        host = getattr(addr, "host", str(addr))
        if self.total >= self.limits.max_connections:
            return _Refusal("Too many connections, try again later")
        if self.connections.get(host, 0) >= self.limits.max_connections_per_ip:
            return _Refusal("Too many connections from your address, try again later")
        self.total += 1
        self.connections[host] = self.connections.get(host, 0) + 1
        p = self.protocol(self)
        p.portal = self.portal
        return p

    def connectionClosed(self, host):
        self.total -= 1
        left = self.connections.get(host, 1) - 1
        if left:
            self.connections[host] = left
        else:
            self.connections.pop(host, None)
