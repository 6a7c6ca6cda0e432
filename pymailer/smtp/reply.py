"""
SMTP replies as values: a code, an RFC 3463 enhanced status code and text.

Policy, routing and storage raise L{SMTPReply} errors; only the protocol edge
turns them into bytes on the wire.
"""


class SMTPReply(Exception):
    """
    A reply to send instead of the success reply, e.g. ``550 5.1.1``.
    """

    def __init__(self, code, enhanced, text, reason=None):
        """
        @param reason: the policy reason that refused (C{spf.fail}...), for
            the mail log; C{None} when the protocol itself refuses.
        """
        Exception.__init__(self, code, enhanced, text)
        self.code = code
        self.enhanced = enhanced
        self.text = text
        self.reason = reason

    @property
    def temporary(self):
        return 400 <= self.code < 500

    def __str__(self):
        return f"{self.code} {self.enhanced} {self.text}"


# RFC 3463 §3.2: X.1.1, "Bad destination mailbox address": the recipient
# does not exist.  The SMTP server tells policy about these (harvesting).
BAD_MAILBOX = "5.1.1"


# The enhanced code that goes with each basic code when a reply comes from
# code (ours or Twisted's) that did not name one; RFC 2034 §3 asks for one on
# every 2xx/4xx/5xx reply but the greeting and the HELO/EHLO answer.
DEFAULT_ENHANCED = {
    221: "2.0.0",
    235: "2.7.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.1.5",
    421: "4.3.0",
    432: "4.7.12",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    534: "5.7.9",
    535: "5.7.8",
    538: "5.7.11",
    550: "5.0.0",
    551: "5.1.6",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.0.0",
    555: "5.5.4",
}
