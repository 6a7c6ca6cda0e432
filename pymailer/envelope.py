"""
The value objects that travel along one message's path: who sent it, to whom,
how it arrived, and what became of each recipient.

They are plain data, serialised as JSON into the queue's envelope files, so a
queued message can be understood (and repaired) with a text editor.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional


PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


@dataclass(frozen=True)
class Session:
    """
    The facts of one SMTP session that outlive it in the envelope.

    @ivar protocol: the RFC 3848 ``with`` keyword: ESMTP, ESMTPS, ESMTPA or
        ESMTPSA (SMTP for a HELO client).
    """

    helo: str = ""
    clientAddress: str = ""
    clientHostname: str = ""
    protocol: str = "ESMTP"
    authenticatedAs: Optional[str] = None
    tlsVersion: Optional[str] = None
    tlsCipher: Optional[str] = None


@dataclass(frozen=True)
class Recipient:
    """
    One envelope recipient and its delivery state; each is retried on its own.
    """

    index: int
    address: str
    state: str = PENDING
    attempts: int = 0
    nextAttempt: float = 0.0
    lastError: Optional[str] = None
    # RFC 3461 §4.1 NOTIFY: None (the default: FAILURE and DELAY), or a
    # tuple of "SUCCESS", "FAILURE", "DELAY", or ("NEVER",).
    notify: Optional[tuple] = None
    # RFC 3461 §4.2 ORCPT, as given ("rfc822;addr"), or None.
    orcpt: Optional[str] = None
    # Where it went: the remote MTA that accepted or refused it, if any.
    remoteMTA: Optional[str] = None
    # A failure/success report has been sent for this recipient.
    reported: bool = False
    # The mailbox local delivery files it into (policy: "Junk"), or None
    # for INBOX.
    folder: Optional[str] = None


@dataclass(frozen=True)
class DeliveryResult:
    """
    The outcome of one delivery attempt for one recipient.

    @ivar temporary: C{True} for a 4xx-class failure worth retrying.
    """

    ok: bool
    temporary: bool = False
    code: int = 250
    enhanced: str = "2.0.0"
    text: str = "delivered"
    # The remote server that answered, and whether it took over the DSN
    # request (RFC 3461 §6.2): if not, a requested success is "relayed".
    remoteMTA: Optional[str] = None
    dsnPassedOn: bool = False

    @classmethod
    def delivered(cls, text="delivered"):
        return cls(ok=True, text=text)

    @classmethod
    def tempfail(cls, text, code=451, enhanced="4.3.0"):
        return cls(ok=False, temporary=True, code=code, enhanced=enhanced, text=text)

    @classmethod
    def permfail(cls, text, code=550, enhanced="5.1.1"):
        return cls(ok=False, temporary=False, code=code, enhanced=enhanced, text=text)

    def describe(self):
        return f"{self.code} {self.enhanced} {self.text}"


@dataclass(frozen=True)
class Envelope:
    """
    Everything the queue knows about one accepted message besides its bytes.

    @ivar sender: the reverse-path, C{""} for the null sender.
    @ivar receivedAt: POSIX time the message was accepted (the 250).
    @ivar body: the BODY= of RFC 6152 (``7BIT`` or ``8BITMIME``).
    """

    queueId: str
    sender: str
    recipients: tuple
    receivedAt: float
    session: Session = field(default_factory=Session)
    size: int = 0
    body: str = "7BIT"
    smtputf8: bool = False
    # RFC 3461 §4.3 RET ("FULL" or "HDRS") and §4.4 ENVID, or None.
    dsnRet: Optional[str] = None
    dsnEnvid: Optional[str] = None
    # The delay warning (RFC 3464 "delayed") has been sent.
    delayWarned: bool = False
    # Header fields policy added at the end of data (Authentication-Results,
    # DKIM-Signature), CRLF-ended; every delivery puts them on top.
    headers: str = ""

    def pending(self):
        return [r for r in self.recipients if r.state == PENDING]

    def delivered(self):
        return [r for r in self.recipients if r.state == DELIVERED]

    def withRecipients(self, recipients):
        return dataclasses.replace(self, recipients=tuple(recipients))

    def toDict(self):
        """The JSON object of L{toJSON}, for a store that adds keys of its own."""
        data = dataclasses.asdict(self)
        data["version"] = 1
        return data

    def toJSON(self):
        return dumpJSON(self.toDict())

    @classmethod
    def fromDict(cls, data):
        """
        The envelope of a JSON object from L{toDict} (left as it is).

        @raise TypeError: or C{KeyError}: not an envelope's object.
        """
        fields = {key: value for key, value in data.items() if key != "version"}
        fields["session"] = Session(**data.get("session", {}))
        fields["recipients"] = tuple(
            Recipient(**(r if r.get("notify") is None else {**r, "notify": tuple(r["notify"])}))
            for r in data["recipients"])
        return cls(**fields)

    @classmethod
    def fromJSON(cls, raw):
        return cls.fromDict(json.loads(raw))


def dumpJSON(data):
    """The bytes of L{Envelope.toJSON} for the JSON object C{data}."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True).encode("utf-8")
