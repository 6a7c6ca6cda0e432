"""
Connection limits for a listener: at most so many open connections from one
client IP and so many in all (Postfix's smtpd_client_connection_count_limit
and process limit; Dovecot's mail_max_userip_connections and
client_limit).  A connection over a limit is told why in the protocol's
own words and closed before any session starts.

One L{LimitedFactory} subclass per protocol (SMTP, IMAP, POP3): it says how
a refusal is worded (L{LimitedFactory.refusal}) and builds the session
(L{LimitedFactory.buildSession}); the session calls
L{LimitedFactory.connectionClosed} with its peer's host from
C{connectionLost}.

Trust: the peer address is the transport's (never anything the client
says); limits count per listener.
"""

from twisted.internet.protocol import Protocol, ServerFactory


class Refusal(Protocol):
    """Writes one line saying why the connection is refused, and closes."""

    def __init__(self, line):
        self.line = line

    def connectionMade(self):
        self.transport.write(self.line + b"\r\n")
        self.transport.loseConnection()


TOO_MANY = "Too many connections, try again later"
TOO_MANY_FROM_YOU = "Too many connections from your address, try again later"


class LimitedFactory(ServerFactory):
    """
    @ivar limits: anything with C{max_connections} and
        C{max_connections_per_ip} (L{pymailer.config.SMTPConfig},
        L{pymailer.config.ConnectionLimits}).
    @ivar connections: C{{host: open connections}}.
    @ivar total: open connections in all.

    A subclass defines C{refusal(reason)}, the C{bytes} line (no CRLF)
    refusing with the text C{reason}, and C{buildSession(addr)}, the
    protocol for an admitted connection.
    """

    def __init__(self, limits):
        self.limits = limits
        self.connections = {}
        self.total = 0

    def buildProtocol(self, addr):
        host = getattr(addr, "host", str(addr))
        if self.total >= self.limits.max_connections:
            return Refusal(self.refusal(TOO_MANY))
        if self.connections.get(host, 0) >= self.limits.max_connections_per_ip:
            return Refusal(self.refusal(TOO_MANY_FROM_YOU))
        self.total += 1
        self.connections[host] = self.connections.get(host, 0) + 1
        return self.buildSession(addr)

    def connectionClosed(self, host):
        """An admitted connection from C{host} has gone: free its slot."""
        self.total -= 1
        left = self.connections.get(host, 1) - 1
        if left:
            self.connections[host] = left
        else:
            self.connections.pop(host, None)
