"""
Spam scanning with rspamd (C{rspamd}), at the end of data.

The message is POSTed to rspamd's C{/checkv2} with the envelope in
headers (rspamd's protocol: C{IP}, C{From}, one C{Rcpt} per recipient,
C{Helo}, C{User} after AUTH, C{Queue-Id}, C{MTA-Name}), its body streamed
from the spool in chunks read in the thread pool.  We act on the C{action}
rspamd answers:

  - C{reject}: 554 5.7.1, with rspamd's C{smtp_message} when it has one;
  - C{soft reject}: 451 4.7.1; C{greylist}: 451 4.7.1 Greylisted;
  - C{add header}, C{rewrite subject}: the message is filed into Junk;
  - C{no action}: accepted.

rspamd's score joins the transaction's L{SpamScore} (the C{X-Spam-*}
headers, Junk at C{junk_score}), and its symbols go into the verdict log
line.  When rspamd says nothing (down, slower than C{timeout}, not HTTP
200) the message is handled per C{[policy.rspamd] fail}.

Trusts: rspamd's answer.  Does not trust: the message, nor C{X-Spam-*}
fields a sender wrote (dropped from inbound mail).
"""

import json

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from pymailer.interfaces import IPolicyFactory
from pymailer.policy.decision import Decision
from pymailer.policy.pieces import _Piece
from pymailer.policy.scanner import (
    ChunkProducer, MessageReader, ScanError, failureReason, isField, printable, unscanned)
from pymailer.policy.verdict import JUNK, SpamScore, isSpamHeader, logVerdict

HEADER = "X-Spam-Scanned"
REJECT_TEXT = "Message refused as spam"


def envelopeHeaders(facts, queueId, hostname):
    """rspamd's protocol headers for this transaction (rspamd "protocol" docs)."""
    headers = Headers()
    for name, value in (("IP", facts.clientAddress), ("Helo", facts.helo),
                        ("From", facts.sender), ("User", facts.authenticatedAs),
                        ("Queue-Id", queueId), ("MTA-Name", hostname)):
        if value:
            headers.addRawHeader(name, printable(value, 1000))
    for recipient in facts.recipients:
        headers.addRawHeader("Rcpt", printable(recipient, 1000))
    return headers


def symbolList(answer):
    """C{NAME(score),...} of rspamd's symbols, highest score first."""
    symbols = answer.get("symbols") or {}
    scored = sorted(((s.get("score", 0.0), name) for name, s in symbols.items()
                     if isinstance(s, dict)), key=lambda x: -x[0])
    return ",".join(f"{printable(name, 60)}({score:g})" for score, name in scored) or "none"


class Rspamd(_Piece):
    name = "rspamd"

    def __init__(self, context, config):
        super().__init__(context)
        self.config = config
        self.agent = Agent(context.reactor, connectTimeout=config.timeout)

    @defer.inlineCallbacks
    def ask(self, facts, reader, queueId):
        """rspamd's answer (a C{dict}) for the message C{reader} reads."""
        response = yield self.agent.request(
            b"POST", (self.config.url + "/checkv2").encode(),
            envelopeHeaders(facts, queueId, self.context.config.hostname),
            ChunkProducer(reader))
        body = yield readBody(response)
        if response.code != 200:
            raise ScanError(f"rspamd answered HTTP {response.code}")
        try:
            answer = json.loads(body)
        except ValueError:
            raise ScanError("rspamd answered no JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("action"), str):
            raise ScanError("rspamd answered no action")
        return answer

    @defer.inlineCallbacks
    def checkData(self, facts, message):
        queueId = getattr(message, "queueId", None)
        reader = yield MessageReader.open(self.inThread, message)
        try:
            answer = yield self.ask(facts, reader, queueId).addTimeout(
                self.config.timeout, self.context.reactor)
        except Exception:
            reason = failureReason(Failure(), "rspamd")
            return unscanned(facts, self.name, self.config.fail, HEADER, reason, queueId)
        finally:
            yield reader.close()
        return self.judge(facts, answer, queueId)

    def judge(self, facts, answer, queueId):
        action = answer["action"]
        try:
            score = float(answer.get("score", 0.0))
        except (TypeError, ValueError):
            score = 0.0
        smtpMessage = printable((answer.get("messages") or {}).get("smtp_message", ""))
        reason = f"rspamd.{action.replace(' ', '_')}"
        logVerdict(facts, self.name, action.replace(" ", "_"),
                   f"{reason} symbols={symbolList(answer)}", score, queueId)
        if action == "reject":
            return Decision.reject(554, "5.7.1", smtpMessage or REJECT_TEXT, reason)
        if action == "soft reject":
            return Decision.tempfail(451, "4.7.1", smtpMessage or "Try again later", reason)
        if action == "greylist":
            return Decision.tempfail(451, "4.7.1", "Greylisted, try again later", reason)
        SpamScore.of(facts).add(self.name, score, reason)
        if action in ("add header", "rewrite subject"):
            return Decision.fileInto(JUNK, reason)
        return Decision.accept()

    def keepHeader(self, facts, field):
        return facts.authenticatedAs is not None or not (
            isSpamHeader(field) or isField(field, HEADER))


@implementer(IPolicyFactory)
class RspamdFactory:
    name = "rspamd"

    def build(self, context, options):
        return Rspamd(context, context.config.policy.rspamd)
