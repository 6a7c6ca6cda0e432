"""
The relay delivery agent: mail for other domains, to their MX hosts (or one
smarthost), per recipient.

One transaction per destination domain carries all its recipients (one
connection, many RCPT).  Hosts are tried in MX order, each of their
addresses in turn, until one answers; a host that refuses the connection or
greets with 4xx is skipped (RFC 5321 §5.1).  STARTTLS is used whenever it is
offered (opportunistic: the certificate is not verified, and a handshake
failure is logged and that host skipped).  A message the peer cannot take
as it is (too big for its SIZE, 8-bit or UTF-8 where it lacks 8BITMIME or
SMTPUTF8) fails with the DSN status of RFC 3463 rather than being mangled.

Trusts the spool and the DNS answers as far as addressing goes; trusts
nothing the remote server says beyond its reply codes.
"""

import base64

from twisted.internet import defer
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from pymailer.config import parseHostPort
from pymailer.delivery.trace import PrefixedReader, policyHeaders, receivedHeader
from pymailer.dotstuff import DotStuffer, MessageSender
from pymailer.envelope import DeliveryResult
from pymailer.interfaces import IDeliveryAgent
from pymailer.queue.mx import NoMailHosts, mailHosts
from pymailer.smtp.client import SMTPClientError, SMTPClientProtocol

CHUNK = 64 * 1024


def _result(reply, remoteHost, dsn=False):
    first, _, rest = reply.text.partition(" ")
    if len(first) >= 5 and first[0] in "245" and first[1] == ".":
        enhanced, text = first, rest
    else:
        enhanced, text = {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}[reply.code // 100], reply.text
    return DeliveryResult(
        ok=reply.ok, temporary=reply.temporary, code=reply.code, enhanced=enhanced,
        text=text, remoteMTA=remoteHost, dsnPassedOn=dsn,
    )


class HostUnusable(Exception):
    """Try the next host: this one could not be reached or will not talk."""


def _xtext(text):
    """RFC 3461 §4: xtext-encode a parameter value."""
    return "".join(
        c if 33 <= ord(c) <= 126 and c not in "+=" else "".join(f"+{b:02X}" for b in c.encode())
        for c in text
    )


@implementer(IDeliveryAgent)
class RelayDeliveryAgent:
    log = Logger()

    def __init__(self, relayConfig, resolver, hostname, reactor, threadpool):
        self.config = relayConfig
        self.resolver = resolver
        self.hostname = hostname
        self.reactor = reactor
        self.threadpool = threadpool
        self.tlsOptions = CertificateOptions(
            verify=False, raiseMinimumTo=TLSVersion.TLSv1_2
        )
        self.connections = defer.DeferredSemaphore(relayConfig.max_connections)

    def _inThread(self, f, *args):
        return deferToThreadPool(self.reactor, self.threadpool, f, *args)

    def deliver(self, envelope, recipients, openData, recovering):
        groups = {}
        for r in recipients:
            domain = "" if self.config.smarthost else r.address.rpartition("@")[2]
            groups.setdefault(domain, []).append(r)
        ds = [
            self.connections.run(self._deliverGroup, envelope, domain, rcpts, openData)
            for domain, rcpts in groups.items()
        ]

        def merge(results):
            merged = {}
            for partial in results:
                merged.update(partial)
            return merged

        return defer.gatherResults(ds, consumeErrors=True).addCallback(merge)

    @defer.inlineCallbacks
    def _deliverGroup(self, envelope, domain, recipients, openData):
        def every(result):
            return {r.index: result for r in recipients}

        try:
            hosts = yield self._hosts(domain)
        except NoMailHosts as e:
            cls = DeliveryResult.tempfail if e.temporary else DeliveryResult.permfail
            return every(cls(e.text, code=e.code, enhanced=e.enhanced))
        lastProblem = "no mail host answered"
        for host, addresses in hosts:
            for address in addresses:
                try:
                    results = yield self._attempt(host, address, envelope, recipients, openData)
                except HostUnusable as e:
                    lastProblem = str(e)
                    self.log.info("{qid}: {host}[{addr}]: {problem}; trying the next host",
                                  qid=envelope.queueId, host=host, addr=address, problem=e)
                    continue
                return results
        return every(DeliveryResult.tempfail(lastProblem, code=451, enhanced="4.4.1"))

    def _hosts(self, domain):
        if self.config.smarthost:
            host, port = parseHostPort(self.config.smarthost, 25)
            return defer.succeed([(host, [host])])
        return mailHosts(self.resolver, domain)

    def _endpoint(self, address):
        if self.config.smarthost:
            host, port = parseHostPort(self.config.smarthost, 25)
            if self.config.smarthost_tls == "tls":
                return SSL4ClientEndpoint(self.reactor, host, port, self.tlsOptions,
                                          timeout=self.config.connect_timeout)
            return TCP4ClientEndpoint(self.reactor, host, port, timeout=self.config.connect_timeout)
        endpointClass = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        return endpointClass(self.reactor, address, self.config.port,
                             timeout=self.config.connect_timeout)

    @defer.inlineCallbacks
    def _attempt(self, host, address, envelope, recipients, openData):
        factory = Factory.forProtocol(lambda: SMTPClientProtocol(self.reactor))
        try:
            client = yield self._endpoint(address).connect(factory)
            greeting = yield client.greeting
        except (OSError, SMTPClientError) as e:
            raise HostUnusable(f"connection failed: {e}")
        except Exception as e:  # connection refused, DNS of smarthost...
            raise HostUnusable(f"connection failed: {e}")
        try:
            if not greeting.ok:
                raise HostUnusable(f"greeting {greeting}")
            yield self._hello(client, host)
            return (yield self._transaction(client, host, envelope, recipients, openData))
        except SMTPClientError as e:
            raise HostUnusable(str(e))
        finally:
            client.quit()

    @defer.inlineCallbacks
    def _hello(self, client, host):
        reply = yield client.ehlo(self.hostname)
        if not reply.ok:
            raise HostUnusable(f"EHLO refused: {reply}")
        smarthostTLS = self.config.smarthost_tls if self.config.smarthost else None
        required = smarthostTLS == "starttls"
        if client.supports("STARTTLS") and smarthostTLS != "tls":
            reply = yield client.command("STARTTLS")
            if reply.code == 220:
                client.transport.startTLS(self.tlsOptions)
                reply = yield client.ehlo(self.hostname)
                if not reply.ok:
                    raise HostUnusable(f"EHLO after STARTTLS refused: {reply}")
            elif required:
                raise HostUnusable(f"STARTTLS refused: {reply}")
        elif required:
            raise HostUnusable("the smarthost does not offer STARTTLS")
        if self.config.smarthost and self.config.smarthost_user:
            token = base64.b64encode(
                f"\0{self.config.smarthost_user}\0{self.config.smarthost_password or ''}".encode()
            ).decode("ascii")
            reply = yield client.command(f"AUTH PLAIN {token}")
            if reply.code != 235:
                raise HostUnusable(f"smarthost AUTH failed: {reply}")

    def _incompatibility(self, client, envelope):
        """RFC 3463 X.3.4 / X.6.3 / X.6.7 when the peer cannot take the message as is."""
        limit = client.maxSize()
        if limit is not None and envelope.size > limit:
            return DeliveryResult.permfail(
                f"message too big for the remote server ({limit} octets)", 552, "5.3.4")
        if envelope.body == "8BITMIME" and not client.supports("8BITMIME"):
            return DeliveryResult.permfail(
                "remote server does not accept 8-bit mail (no 8BITMIME)", 554, "5.6.3")
        if envelope.body == "BINARYMIME" and not (
            client.supports("BINARYMIME") and client.supports("CHUNKING")
        ):
            return DeliveryResult.permfail(
                "remote server does not accept binary mail (no BINARYMIME)", 554, "5.6.3")
        if envelope.smtputf8 and not client.supports("SMTPUTF8"):
            return DeliveryResult.permfail(
                "remote server does not accept UTF-8 addresses (no SMTPUTF8)", 553, "5.6.7")
        return None

    @defer.inlineCallbacks
    def _transaction(self, client, host, envelope, recipients, openData):
        problem = self._incompatibility(client, envelope)
        if problem is not None:
            return {r.index: problem for r in recipients}
        dsn = client.supports("DSN")
        mail = f"MAIL FROM:<{envelope.sender}>"
        if client.maxSize() is not None or client.supports("SIZE"):
            mail += f" SIZE={envelope.size + 512}"
        if envelope.body in ("8BITMIME", "BINARYMIME"):
            mail += f" BODY={envelope.body}"
        if envelope.smtputf8:
            mail += " SMTPUTF8"
        if dsn and envelope.dsnRet:
            mail += f" RET={envelope.dsnRet}"
        if dsn and envelope.dsnEnvid:
            mail += f" ENVID={envelope.dsnEnvid}"
        rcptLines = []
        for r in recipients:
            line = f"RCPT TO:<{r.address}>"
            if dsn and r.notify:
                line += " NOTIFY=" + ",".join(r.notify)
            if dsn and r.orcpt:
                line += f" ORCPT={r.orcpt}"
            rcptLines.append(line)
        # RFC 2920: with PIPELINING, MAIL and every RCPT go in one batch.
        if client.supports("PIPELINING"):
            mailD = client.command(mail, "MAIL")
            rcptDs = [client.command(line, "RCPT") for line in rcptLines]
            mailReply = yield mailD
            rcptReplies = []
            for d in rcptDs:
                rcptReplies.append((yield d))
        else:
            mailReply = yield client.command(mail, "MAIL")
            rcptReplies = []
            if mailReply.ok:
                for line in rcptLines:
                    rcptReplies.append((yield client.command(line, "RCPT")))
        if not mailReply.ok:
            return {r.index: _result(mailReply, host) for r in recipients}
        results = {r.index: _result(reply, host) for r, reply in zip(recipients, rcptReplies)}
        accepted = [r for r, reply in zip(recipients, rcptReplies) if reply.ok]
        if not accepted:
            return results
        trace = receivedHeader(
            envelope, self.hostname, recipients[0].address if len(recipients) == 1 else None
        ) + policyHeaders(envelope)
        source = PrefixedReader(trace, (yield self._inThread(openData)))
        try:
            read = lambda f: self._inThread(f.read, CHUNK)  # noqa: E731
            if envelope.body == "BINARYMIME":
                final = yield client.sendChunks(source, read)
            else:
                final = yield client.sendData(MessageSender(
                    self.reactor, self.threadpool, source, DotStuffer(bareCRIsNewline=True)))
        finally:
            yield self._inThread(source.close)
        for r in accepted:
            results[r.index] = _result(final, host, dsn)
        return results
