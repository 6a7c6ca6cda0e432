"""
Virus scanning with clamd (C{clamav}), at the end of data, for mail from
the internet and mail our users submit alike.

The message goes to clamd's C{zINSTREAM} command: chunks of a 4-byte
big-endian length and the data, a zero-length chunk to end; clamd answers
one NUL-terminated line, C{stream: OK}, C{stream: NAME FOUND} or
C{... ERROR} (clamd(8), "INSTREAM").  The chunks are read from the spool
in the thread pool and sent as the socket drains (a streaming producer),
so a large message costs one chunk of memory and never blocks the reactor.

A virus is refused with 554 5.7.0 naming it.  When clamd says nothing
useful (down, slower than C{timeout}, over its StreamMaxLength) the
message is handled per C{[policy.clamav] fail} (L{scanner.unscanned}).

Trusts: clamd's answer.  Does not trust: the message, nor an
C{X-Virus-Scanned} field a sender wrote (dropped from inbound mail).
"""

import struct

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from pymailer.config import parseHostPort
from pymailer.interfaces import IPolicyFactory
from pymailer.policy.decision import Decision
from pymailer.policy.pieces import _Piece
from pymailer.policy.scanner import (
    ChunkProducer, MessageReader, ScanError, failureReason, isField, printable, unscanned)
from pymailer.policy.verdict import logVerdict

HEADER = "X-Virus-Scanned"
INSTREAM = b"zINSTREAM\0"
END_OF_STREAM = struct.pack(">I", 0)
# clamd's answers are one short line; anything longer is not clamd.
MAX_ANSWER = 4096


class _Framing:
    """A consumer that writes each chunk as INSTREAM frames it."""

    def __init__(self, transport):
        self.transport = transport

    def write(self, data):
        self.transport.write(struct.pack(">I", len(data)) + data)


class ClamdProtocol(Protocol):
    """
    One INSTREAM scan.  C{answer} fires with clamd's line (without
    C{stream: } and the NUL), or fails with L{ScanError}.
    """

    def __init__(self, producer):
        self.producer = producer
        self.buffer = b""
        self.answer = defer.Deferred(lambda d: self.transport.abortConnection())

    def connectionMade(self):
        self.transport.write(INSTREAM)
        self.transport.registerProducer(self.producer, True)
        self.producer.startProducing(_Framing(self.transport)).addCallbacks(
            self._sent, lambda failure: None)

    def _sent(self, _):
        self.transport.unregisterProducer()
        self.transport.write(END_OF_STREAM)

    def dataReceived(self, data):
        self.buffer += data
        line, nul, _ = self.buffer.partition(b"\0")
        if not nul and len(self.buffer) <= MAX_ANSWER:
            return
        # clamd may answer before it has read everything (its size limit):
        # stop sending either way.
        self.producer.stopProducing()
        self.transport.loseConnection()
        if self.answer.called:
            return
        text = line.decode("utf-8", "replace")
        if not nul:
            self.answer.errback(ScanError("clamd answered an overlong line"))
        elif text.endswith("ERROR"):
            self.answer.errback(ScanError(f"clamd: {text[:-len('ERROR')].rstrip(' .')}"))
        else:
            self.answer.callback(text.removeprefix("stream:").strip())

    def connectionLost(self, reason):
        self.producer.stopProducing()
        if not self.answer.called:
            self.answer.errback(ScanError("clamd closed the connection without an answer"))


def virusName(answer):
    """The signature name of a C{NAME FOUND} answer, else C{None} (clean)."""
    if answer.endswith(" FOUND"):
        return printable(answer[:-len(" FOUND")], 100) or "unknown"
    return None


class ClamAV(_Piece):
    name = "clamav"

    def __init__(self, context, config):
        super().__init__(context)
        self.config = config
        reactor = context.reactor
        if config.address is not None:
            host, port = parseHostPort(config.address, 3310)
            self.endpoint = HostnameEndpoint(reactor, host, port, timeout=config.timeout)
        else:
            self.endpoint = UNIXClientEndpoint(reactor, config.socket, timeout=config.timeout)

    def scan(self, reader):
        """A C{Deferred} of clamd's answer for what C{reader} reads."""
        protocol = ClamdProtocol(ChunkProducer(reader))
        d = connectProtocol(self.endpoint, protocol).addCallback(lambda p: p.answer)
        return d.addTimeout(self.config.timeout, self.context.reactor)

    @defer.inlineCallbacks
    def checkData(self, facts, message):
        queueId = getattr(message, "queueId", None)
        reader = yield MessageReader.open(self.inThread, message)
        try:
            answer = yield self.scan(reader)
        except Exception:
            reason = failureReason(Failure(), "clamd")
            return unscanned(facts, self.name, self.config.fail, HEADER, reason, queueId)
        finally:
            yield reader.close()
        virus = virusName(answer)
        if virus is None:
            return Decision.accept()
        logVerdict(facts, self.name, "reject", f"virus {virus}", queueId=queueId)
        return Decision.reject(
            554, "5.7.0", f"Message refused: virus found ({virus})", "clamav.virus")

    def keepHeader(self, facts, field):
        # A sender's own "X-Virus-Scanned: clean" must not pass as ours.
        return facts.authenticatedAs is not None or not isField(field, HEADER)


@implementer(IPolicyFactory)
class ClamAVFactory:
    name = "clamav"

    def build(self, context, options):
        return ClamAV(context, context.config.policy.clamav)
