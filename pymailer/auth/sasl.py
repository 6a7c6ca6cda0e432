"""
SASL mechanisms for password logins: PLAIN (RFC 4616) and LOGIN (the
draft-murchison-sasl-login de-facto standard), shared by SMTP AUTH, IMAP
AUTHENTICATE and POP3 AUTH.

A mechanism is fed the client's decoded responses one at a time and answers
either with the next challenge or, when done, with the credentials.
Trusts nothing: malformed responses raise L{SASLError}.
"""

from twisted.cred.credentials import UsernamePassword


class SASLError(Exception):
    """The client's response does not follow the mechanism."""


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
            raise SASLError("authorization identity differs")
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
