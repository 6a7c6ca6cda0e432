"""
STARTTLS (RFC 3207) and AUTH (RFC 4954) for the SMTP server.

A mixin for L{pymailer.smtp.server.SMTPServer}: it replaces Twisted's
C{ESMTP.ext_STARTTLS} and C{ext_AUTH}/C{state_AUTH}, which run commands
pipelined after STARTTLS inside the TLS session (CVE-2011-0411 class), keep
the pre-TLS EHLO state, log in to C{IMessageDelivery} rather than our
intake, and know nothing of lockouts and failure delays.

Trusts nothing: the SASL responses are the client's, and a client that
guesses passwords is delayed, counted and locked out by the L{LoginGuard}.
"""

import base64

from twisted.cred.error import UnauthorizedLogin

from pymailer.auth.guard import plaintextLoginAllowed
from pymailer.auth.login import LoginBlocked, guardedLogin
from pymailer.auth import sasl
from pymailer.auth.sasl import MECHANISMS
from pymailer.interfaces import IMessageIntake
from pymailer.smtp.reply import SMTPReply
from pymailer.tls import describeConnection

AUTH_MODE = "AUTH"


class SessionSecurity:
    """STARTTLS and AUTH; expects the attributes L{SMTPServer} sets up."""

    secure = False
    authenticatedAs = None
    _sasl = None

    def securityExtensions(self):
        lines = []
        if self.factory.tls is not None and not self.secure:
            lines.append("STARTTLS")
        if self._authOffered():
            lines.append("AUTH " + " ".join(m.decode() for m in MECHANISMS))
        return lines

    def _authOffered(self):
        if not self.factory.role.offerAuth:
            return False
        return self.secure or plaintextLoginAllowed(self.factory.authConfig, self._peerHost)

    def tlsDetails(self):
        if not self.secure:
            return None, None
        return describeConnection(self.transport)

    # -- STARTTLS -----------------------------------------------------------

    def ext_STARTTLS(self, rest):
        if self.secure:
            return self.reply(503, "5.5.1", "Error: TLS already active")
        if self.factory.tls is None:
            return self.reply(454, "4.7.0", "TLS not available")
        if rest:
            return self.reply(501, "5.5.4", "Syntax: STARTTLS")
        self.reply(220, "2.0.0", "Ready to start TLS")
        # RFC 3207 §4.2: forget everything learnt before TLS.  Whatever the
        # client pipelined after STARTTLS was sent in plaintext and could have
        # been injected by a man in the middle: it is dropped, not run.
        self._buffer = b""
        self._heloName = None
        self._resetTransaction()
        self._releaseIntake()
        # The 220 goes out in plaintext, before the handshake.
        self._flushReplies()
        self.transport.startTLS(self.factory.tls)
        self.secure = True

    # -- AUTH -----------------------------------------------------------------

    def ext_AUTH(self, rest):
        if not self.factory.role.offerAuth:
            return self.reply(503, "5.5.1", "Error: authentication not enabled")
        if not self._authOffered():
            # RFC 4954 §6: 538 when the mechanism needs encryption first.
            return self.reply(
                538, "5.7.11", "Encryption required for requested authentication mechanism"
            )
        if self.authenticatedAs is not None:
            return self.reply(503, "5.5.1", "Error: already authenticated")
        if self._txn is not None:
            return self.reply(503, "5.5.1", "Error: AUTH not allowed during a mail transaction")
        name, _, initial = rest.partition(b" ")
        mechanism = MECHANISMS.get(name.upper())
        if mechanism is None:
            return self.reply(504, "5.5.4", "Unrecognized authentication type")
        return self.factory.guard.blocked(self._peerHost).addCallback(
            self._startAuth, mechanism, initial)

    def _startAuth(self, lockedOut, mechanism, initial):
        if lockedOut is not None:
            return self._closeWith(
                421, "4.7.0", "Too many failed logins from your address, try again later"
            )
        self._sasl = mechanism()
        self.mode = AUTH_MODE
        if initial:
            return self.state_AUTH(initial, initial=True)
        self._challenge(self._sasl.initialChallenge)

    def _challenge(self, challenge):
        self.reply(334, None, base64.b64encode(challenge).decode("ascii"))

    def _endAuth(self):
        self._sasl = None
        self.mode = "COMMAND"

    def state_AUTH(self, line, initial=False):
        try:
            challenge, credentials = sasl.step(self._sasl, line, initial)
        except sasl.SASLCancelled:
            self._endAuth()
            return self.reply(501, "5.7.0", "Authentication aborted")
        except sasl.AuthorizationRefused:
            self._endAuth()
            # RFC 4954 6: 535 5.7.8 for credentials not accepted.
            return self.reply(535, "5.7.8", "Not authorized to act as another user")
        except sasl.SASLError as e:
            self._endAuth()
            return self.reply(501, "5.5.2", f"Malformed authentication response ({e})")
        if challenge is not None:
            return self._challenge(challenge)
        self._endAuth()
        return self._passwordLogin(credentials)

    def _passwordLogin(self, credentials):
        d = guardedLogin(
            self.portal, self.factory.guard, self._peerHost, credentials,
            IMessageIntake, "smtp",
        )
        return d.addCallbacks(self._loggedIn, self._loginFailed)

    def _loggedIn(self, result):
        _, intake, logout = result
        self._releaseIntake()
        self.intake, self._onLogout = intake, logout
        self.authenticatedAs = intake.user
        self.reply(235, "2.7.0", "Authentication successful")

    def _loginFailed(self, failure):
        if failure.check(LoginBlocked):
            return self._closeWith(
                421, "4.7.0", "Too many failed logins from your address, try again later")
        failure.trap(UnauthorizedLogin)
        self.reply(535, "5.7.8", "Authentication credentials invalid")

    def checkAuthenticated(self):
        if self.factory.role.requireAuth and self.authenticatedAs is None:
            raise SMTPReply(530, "5.7.0", "Authentication required")

    def _releaseIntake(self):
        if self._onLogout is not None:
            self._onLogout()
            self._onLogout = None
        self.intake = None

