"""
The mail log: one structured line per message the SMTP server accepted,
and one per command it refused.

Each record is one C{twisted.logger} event in the C{pymailer.mail}
namespace carrying its fields as keys (C{result}, C{queueId}, C{sender},
C{recipients}, C{size}, C{client}, C{listener}, and for a refusal C{stage},
C{code}, C{enhanced}, C{reason}, C{text}), so a JSON observer keeps them as
they are, and whose text is those fields as C{key=value} pairs in a fixed
order, built once here::

    result=delivered qid=0661a6718516b8-42f1-1 from=<a@remote.test> to=<b@example.org> size=4230 client=192.0.2.1 listener=smtp
    result=queued qid=0661a6718516b8-42f1-2 from=<a@remote.test> to=<c@example.net> size=4230 client=192.0.2.1 listener=smtp
    result=refused stage=RCPT code=550 enhanced=5.1.1 reason=unknown_recipient from=<a@remote.test> to=<x@example.org> client=192.0.2.1 listener=smtp text="No such user"

The values are the client's (addresses, HELO names): a value with a space,
a quote, a control character or a non-ASCII character is written as a
JSON string, so one record is always one line and can be split on spaces
outside quotes.
"""

import json
import re

from twisted.logger import Logger

# What may be written without quotes.
_BARE = re.compile(r"[A-Za-z0-9._@+<>,:/=\[\]-]*\Z")


def _value(v):
    v = "" if v is None else str(v)
    if v and _BARE.match(v):
        return v
    return json.dumps(v, ensure_ascii=False)


def _addresses(addresses):
    return ",".join(f"<{a}>" for a in addresses)


class MailLog:
    """
    Writes the records of one SMTP listener.

    @param listener: the listener's role (C{smtp}, C{submission}...).
    """

    def __init__(self, listener, logger=None):
        self.listener = listener
        self.log = logger if logger is not None else Logger(namespace="pymailer.mail")

    def accepted(self, queueId, sender, recipients, size, client, user=None, delivered=()):
        """
        A message was committed and answered 250: C{result=delivered} if
        it went into the mailboxes of every recipient at once
        (L{pymailer.intake}), else C{result=queued}, with
        C{delivered=<...>} naming those of its recipients that it reached
        at once, if any.
        """
        recipients, delivered = list(recipients), list(delivered)
        result = "delivered" if delivered and len(delivered) >= len(recipients) else "queued"
        line = (f"result={result} qid={queueId} from={_value('<' + sender + '>')}"
                f" to={_value(_addresses(recipients))} size={size}"
                f" client={_value(client)} listener={self.listener}")
        if user:
            line += f" user={_value(user)}"
        if delivered and result == "queued":
            line += f" delivered={_value(_addresses(delivered))}"
        # Formatted here, once: an observer's formatting of "{record}" is a
        # lookup, not a parse of the client's text.
        self.log.info("{record}", record=line,
                      result=result, queueId=queueId, sender=sender,
                      recipients=recipients, size=size, client=client,
                      listener=self.listener, user=user, delivered=delivered)

    def refused(self, stage, code, enhanced, text, client, sender=None, recipients=(),
                reason=None, queueId=None):
        """
        A command was refused (a 4xx or 5xx reply to the connection, HELO,
        MAIL, RCPT or the message).

        @param stage: C{CONNECT}, C{HELO}, C{MAIL}, C{RCPT} or C{DATA}.
        @param reason: what refused it: a policy's reason
            (C{unknown_recipient}, C{spf.fail}...) or C{None} for the
            protocol itself (syntax, size, storage).
        """
        recipients = list(recipients)
        line = f"result=refused stage={stage} code={code} enhanced={_value(enhanced)}"
        line += f" reason={_value(reason or 'protocol')}"
        if queueId:
            line += f" qid={queueId}"
        if sender is not None:
            line += f" from={_value('<' + sender + '>')}"
        if recipients:
            line += f" to={_value(_addresses(recipients))}"
        line += f" client={_value(client)} listener={self.listener} text={_value(text)}"
        self.log.info("{record}", record=line, result="refused", stage=stage, code=code,
                      enhanced=enhanced, reason=reason, queueId=queueId, sender=sender, recipients=recipients,
                      client=client, listener=self.listener, text=text)
