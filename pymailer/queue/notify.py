"""
Delivery status notifications (RFC 3464) from the queue: which events are
reported to whom, and queueing the report as a new message from the null
sender.  The report's text and structure are L{pymailer.queue.bounce}'s.
"""

import dataclasses
import io
import time

from twisted.logger import Logger

from pymailer.envelope import Recipient, Session
from pymailer.queue.bounce import buildReport, reportEnvelopeSender, shouldReport


class Reporter:
    log = Logger()

    def __init__(self, spool, hostname, queueConfig):
        self.spool = spool
        self.hostname = hostname
        self.config = queueConfig

    def report(self, envelope, events, openData):
        """
        Queue one report per action for the recipients that asked for it
        (RFC 3461 §4.1 NOTIFY), and record on the envelope what was
        reported.  Blocking.

        @param events: C{[(action, recipient)]}.
        @return: the updated envelope.
        """
        byAction = {}
        for action, recipient in events:
            if shouldReport(envelope, recipient, action):
                byAction.setdefault(action, []).append(recipient)
            elif envelope.sender == "" and action == "failed":
                # RFC 5321 §4.5.5: a bounce is never bounced.
                self.log.info("{qid}: not reporting the failure of <{to}>: null sender",
                              qid=envelope.queueId, to=recipient.address)
        for action, recipients in byAction.items():
            with openData() as original:
                data = buildReport(
                    envelope, recipients, action, self.hostname, original,
                    retryUntil=envelope.receivedAt + self.config.max_queue_lifetime,
                )
            queueId = self.spool.inject(
                io.BytesIO(data),
                sender=reportEnvelopeSender(),
                recipients=(Recipient(0, envelope.sender),),
                receivedAt=time.time(),
                session=Session(helo=self.hostname, protocol="local"),
                body="7BIT" if data.isascii() else "8BITMIME",
            )
            self.log.info("{qid}: sent a {action} report to <{to}> as {report}",
                          qid=envelope.queueId, action=action, to=envelope.sender,
                          report=queueId)
        reported = {r.index for action, r in events if action != "delayed"}
        recipients = [
            dataclasses.replace(r, reported=True) if r.index in reported else r
            for r in envelope.recipients
        ]
        delayed = any(action == "delayed" for action, _ in events)
        return dataclasses.replace(
            envelope, recipients=tuple(recipients),
            delayWarned=envelope.delayWarned or delayed,
        )
