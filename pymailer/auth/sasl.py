"""
SASL mechanisms for password logins: PLAIN (RFC 4616) and LOGIN (the
draft-murchison-sasl-login de-facto standard), shared by SMTP AUTH, IMAP
AUTHENTICATE and POP3 AUTH.

A mechanism is fed the client's decoded responses one at a time and answers
either with the next challenge or, when done, with the credentials.
Trusts nothing: malformed responses raise L{SASLError}.
"""

import base64
import binascii

from twisted.cred.credentials import UsernamePassword


class SASLError(Exception):
    """The client's response does not follow the mechanism."""


class SASLCancelled(SASLError):
    """The client answered a challenge with "*" (RFC 4954, 5034, 3501)."""


class AuthorizationRefused(SASLError):
    """
    Well formed, but asks to act as another identity (a PLAIN authzid that
    is not the login's own): a refusal, not a syntax error (RFC 5530
    AUTHORIZATIONFAILED, RFC 4954 535).
    """


class Plain:
    """RFC 4616: one response, C{authzid NUL authcid NUL passwd}."""

    name = b"PLAIN"
    initialChallenge = b""

    def respond(self, response):
        parts = response.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            raise SASLError("malformed PLAIN response")
        authzid, authcid, password = parts
        # No proxy authorisation: acting as somebody else is refused.
        if authzid and authzid != authcid:
            raise AuthorizationRefused("authorization identity differs")
        return None, UsernamePassword(authcid, password)


class Login:
    """LOGIN: the user name, then the password, each prompted for."""

    name = b"LOGIN"
    initialChallenge = b"Username:"

    def __init__(self):
        self._username = None

    def respond(self, response):
        if self._username is None:
            if not response:
                raise SASLError("empty user name")
            self._username = response
            return b"Password:", None
        return None, UsernamePassword(self._username, response)


MECHANISMS = {m.name: m for m in (Plain, Login)}


def step(mechanism, line, initial=False):
    """
    Feed one client response line to C{mechanism}: base64, where "*"
    cancels and an initial response (RFC 4954 §4, RFC 5034 §4, RFC 4959)
    of "=" means empty.  The same in SMTP, POP3 and IMAP.

    @return: C{(challenge, credentials)} as L{Plain.respond}.
    @raise SASLCancelled: the client gave up.
    @raise SASLError: malformed base64 or response.
    """
    if initial and line == b"=":
        line = b""
    elif line == b"*" and not initial:
        raise SASLCancelled("authentication cancelled")
    try:
        decoded = base64.b64decode(line, validate=True) if line else b""
    except binascii.Error:
        # Python's own wording ("Incorrect padding", "Non-base64 digit")
        # says nothing useful to a client.
        raise SASLError("not valid base64") from None
    return mechanism.respond(decoded)
