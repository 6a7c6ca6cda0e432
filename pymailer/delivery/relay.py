"""
The relay delivery agent: mail for other domains, to their MX hosts (or one
smarthost), per recipient.

One transaction per destination domain carries all its recipients (one
connection, many RCPT).  Hosts are tried in MX order, each of their
addresses in turn, until one answers; a host that refuses the connection or
greets with 4xx is skipped (RFC 5321 §5.1).  STARTTLS is used whenever it is
offered (opportunistic, RFC 7435: the certificate is not verified, and a
handshake failure is logged and that host skipped).  A smarthost is
different: we send it a password and trust it with everything, so its
certificate is verified (system CAs or C{smarthost_ca_file}, and its name),
and the password goes only over TLS that passed, unless the config says
otherwise; a refusal leaves the mail queued with the reason.  A message the peer cannot take
as it is (too big for its SIZE, 8-bit or UTF-8 where it lacks 8BITMIME or
SMTPUTF8) fails with the DSN status of RFC 3463 rather than being mangled.

Trusts the spool and the DNS answers as far as addressing goes; trusts
nothing the remote server says beyond its reply codes.
"""

import base64

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from pymailer.config import parseHostPort
from pymailer.delivery.connections import ConnectionCache
from pymailer.delivery.trace import PrefixedReader, policyHeaders, receivedHeader
from pymailer.dotstuff import DotStuffer, MessageSender
from pymailer.envelope import DeliveryResult
from pymailer.interfaces import IDeliveryAgent
from pymailer.queue.mx import NoMailHosts, mailHosts
from pymailer.smtp.client import SMTPClientError, SMTPClientProtocol
from pymailer.tls import opportunisticClientOptions, verifyingClientOptions

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
    """
    Try the next host: this one could not be reached or will not talk.

    @ivar enhanced: the RFC 3463 code the recipients get if no host works.
    """

    def __init__(self, text, enhanced="4.4.1"):
        Exception.__init__(self, text)
        self.enhanced = enhanced


class _StaleSession(Exception):
    """A reused session failed before any data went: connect again."""


# RFC 3463 via the RFC 5248 registry: X.7.5 "Cryptographic failure",
# X.7.10 "Encryption needed".
CRYPTO_FAILURE = "4.7.5"
ENCRYPTION_NEEDED = "4.7.10"


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
        self.tlsOptions = opportunisticClientOptions()
        self.smarthostTLSOptions = self.tlsOptions
        if relayConfig.smarthost and relayConfig.smarthost_tls_verify:
            host, _ = parseHostPort(relayConfig.smarthost, 25)
            self.smarthostTLSOptions = verifyingClientOptions(
                host, relayConfig.smarthost_ca_file)
        self.connections = defer.DeferredSemaphore(relayConfig.max_connections)
        # Sessions kept open for the next message to the same destination;
        # a service of its own, so shutdown QUITs them after the queue stops.
        self.cache = ConnectionCache(reactor, relayConfig.max_connections)

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
        lastProblem = HostUnusable("no mail host answered")
        for host, addresses in hosts:
            for address in addresses:
                try:
                    results = yield self._attempt(host, address, envelope, recipients, openData)
                except HostUnusable as e:
                    lastProblem = e
                    self.log.info("{qid}: {host}[{addr}]: {problem}; trying the next host",
                                  qid=envelope.queueId, host=host, addr=address, problem=e)
                    continue
                return results
        return every(DeliveryResult.tempfail(
            str(lastProblem), code=451, enhanced=lastProblem.enhanced))

    def _hosts(self, domain):
        if self.config.smarthost:
            host, port = parseHostPort(self.config.smarthost, 25)
            return defer.succeed([(host, [host])])
        return mailHosts(self.resolver, domain)

    def _endpoint(self, address):
        if self.config.smarthost:
            host, port = parseHostPort(self.config.smarthost, 25)
            endpoint = TCP4ClientEndpoint(self.reactor, host, port,
                                          timeout=self.config.connect_timeout)
            if self.config.smarthost_tls == "tls":
                return wrapClientTLS(self.smarthostTLSOptions, endpoint)
            return endpoint
        endpointClass = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        return endpointClass(self.reactor, address, self.config.port,
                             timeout=self.config.connect_timeout)

    def _destination(self, host, address):
        """
        What a session is reusable for: the host, its address and port, and
        how it was secured and authenticated (fixed per agent, but named
        here so that a session never serves other parameters).
        """
        config = self.config
        if config.smarthost:
            return (host, address, config.smarthost, config.smarthost_tls,
                    config.smarthost_tls_verify, config.smarthost_user)
        return (host, address, config.port)

    @defer.inlineCallbacks
    def _attempt(self, host, address, envelope, recipients, openData):
        destination = self._destination(host, address)
        client = self.cache.take(destination)
        if client is not None:
            try:
                return (yield self._send(client, destination, host, envelope, recipients,
                                         openData, reused=True))
            except _StaleSession as e:
                self.log.debug("{qid}: idle session to {host} went away ({e}); reconnecting",
                               qid=envelope.queueId, host=host, e=e)
        client = yield self._connect(host, address)
        return (yield self._send(client, destination, host, envelope, recipients, openData))

    @defer.inlineCallbacks
    def _connect(self, host, address):
        """A new session, greeted, said hello to (TLS, AUTH): ready for MAIL."""
        factory = Factory.forProtocol(lambda: SMTPClientProtocol(self.reactor))
        try:
            client = yield self._endpoint(address).connect(factory)
            greeting = yield client.greeting
        except SMTPClientError as e:
            if self._implicitTLS():
                raise self._tlsFailed(host, e)
            raise HostUnusable(f"connection failed: {e}")
        except Exception as e:  # connection refused, DNS of smarthost...
            raise HostUnusable(f"connection failed: {e}")
        try:
            if not greeting.ok:
                raise HostUnusable(f"greeting {greeting}")
            yield self._hello(client, host)
        except SMTPClientError as e:
            client.quit()
            raise HostUnusable(str(e))
        except Exception:
            client.quit()
            raise
        return client

    @defer.inlineCallbacks
    def _send(self, client, destination, host, envelope, recipients, openData, reused=False):
        """One transaction on C{client}, which then goes back to the cache."""
        before = client.transactions
        try:
            results = yield self._transaction(client, host, envelope, recipients, openData)
        except SMTPClientError as e:
            client.quit()
            if reused and client.transactions == before:
                # The peer closed the idle session before this message's
                # data began: nothing was sent, a new connection may.
                raise _StaleSession(str(e))
            raise HostUnusable(str(e))
        except Exception:
            client.quit()
            raise
        yield self.cache.give(destination, client)
        return results

    def _implicitTLS(self):
        return bool(self.config.smarthost) and self.config.smarthost_tls == "tls"

    def _tlsFailed(self, host, error):
        """The handshake failed: say so, and what to check if we verify."""
        if self.config.smarthost and self.config.smarthost_tls_verify:
            return HostUnusable(
                f"TLS with smarthost {host} failed, its certificate could not be "
                f"verified for {host!r} (trusted CAs: "
                f"{self.config.smarthost_ca_file or 'the system store'}): {error}",
                CRYPTO_FAILURE)
        return HostUnusable(f"TLS handshake failed: {error}")

    @defer.inlineCallbacks
    def _hello(self, client, host):
        reply = yield client.ehlo(self.hostname)
        if not reply.ok:
            raise HostUnusable(f"EHLO refused: {reply}")
        smarthostTLS = self.config.smarthost_tls if self.config.smarthost else None
        required = smarthostTLS == "starttls"
        secured = smarthostTLS == "tls"
        if client.supports("STARTTLS") and smarthostTLS != "tls":
            reply = yield client.command("STARTTLS")
            if reply.code == 220:
                client.transport.startTLS(
                    self.smarthostTLSOptions if self.config.smarthost else self.tlsOptions)
                try:
                    reply = yield client.ehlo(self.hostname)
                except SMTPClientError as e:
                    raise self._tlsFailed(host, e)
                if not reply.ok:
                    raise HostUnusable(f"EHLO after STARTTLS refused: {reply}")
                secured = True
            elif required:
                raise HostUnusable(f"STARTTLS refused: {reply}")
        elif required:
            raise HostUnusable("the smarthost does not offer STARTTLS")
        if self.config.smarthost and self.config.smarthost_user:
            # The password goes over TLS, verified unless the admin said
            # smarthost_tls_verify = false; in the clear only if allowed.
            if not secured and not self.config.smarthost_auth_plaintext:
                raise HostUnusable(
                    f"smarthost {host} offers no TLS: not sending the password in "
                    "the clear (set [relay] smarthost_tls = \"starttls\" or \"tls\", "
                    "or smarthost_auth_plaintext = true)", ENCRYPTION_NEEDED)
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
