"""
Greylisting as a policy piece (C{greylist}, off by default).

A spam cannon rarely retries; a real MTA always does (RFC 5321 §4.5.4.1).
So the first time a (client network, sender, recipient) triplet is seen,
RCPT gets 451 4.7.1; a retry after C{delay} seconds and within C{expire}
passes, and the triplet is then remembered for C{keep} seconds since it
was last used.  The client network is the /24 (IPv4) or /64 (IPv6): big
senders retry from another host of the same farm.

Never wait: authenticated users, clients in C{allow}, and known good
senders: a (network, sender) that passed before, for any recipient, and
any sender of a domain whose mail came with a DKIM signature that passed
and aligns with the envelope sender's domain (RFC 7489 §3.1 relaxed: the
same organisational domain): its big senders retry from many farms, and a
signature proves the domain stands behind them.  (A forger using that
domain in MAIL FROM skips the wait but not DKIM/DMARC at end of data.)

State lives in C{data_dir/greylist.sqlite} so a restart forgives nobody and
forgets nobody; SQLite in WAL mode with a busy timeout is safe with several
worker processes.  Every access runs in the thread pool, never on the
reactor; times come from the reactor's clock (injectable: tests use
C{task.Clock}).

Trusts: nothing the client says beyond the envelope it is judged on.
"""

import ipaddress
import math

from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from pymailer.interfaces import IPolicyFactory
from pymailer.policy.decision import Decision, Policy
from pymailer.policy.dmarc import aligned
from pymailer.policy.dnsbl import clientIP, inNetworks
from pymailer.policy.verdict import logVerdict
from pymailer.sqlitedb import ThreadConnections

# Forget stale rows every this many checks (a DELETE over an index).
PURGE_EVERY = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS triplets (
    net TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    first REAL NOT NULL, passed REAL, last REAL NOT NULL,
    PRIMARY KEY (net, sender, recipient));
CREATE INDEX IF NOT EXISTS triplets_last ON triplets (last);
CREATE TABLE IF NOT EXISTS signed_domains (
    domain TEXT PRIMARY KEY, last REAL NOT NULL);
"""


def clientNetwork(address):
    """The /24 or /64 C{address} is in, as text (the address if not an IP)."""
    ip = clientIP(address)
    if ip is None:
        return address
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class GreylistStore:
    """
    The triplets in SQLite, one connection per thread.  Every method
    blocks: call it in a thread pool.
    """

    def __init__(self, path):
        self.path = str(path)
        self._db = ThreadConnections(path, _SCHEMA).db
        self._checks = 0

    def check(self, net, sender, recipient, now, delay, expire, keep):
        """
        @return: C{None} if the triplet passes (and remember it), else the
            seconds it still has to wait.
        """
        db = self._db()
        # One writer at a time across processes: the read and the write
        # below must see the same row.
        db.execute("BEGIN IMMEDIATE")
        try:
            wait = self._check(db, net, sender, recipient, now, delay, expire, keep)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._checks += 1
        if self._checks % PURGE_EVERY == 0:
            db.execute("DELETE FROM triplets WHERE last < ? OR (passed IS NULL AND first < ?)",
                       (now - keep, now - expire))
            db.execute("DELETE FROM signed_domains WHERE last < ?", (now - keep,))
        return wait

    def rememberSignedDomain(self, domain, now):
        """Mail from C{domain} came DKIM-signed by it: its senders never wait."""
        self._db().execute(
            "INSERT INTO signed_domains VALUES (?, ?) ON CONFLICT (domain) DO UPDATE"
            " SET last=excluded.last", (domain, now))

    def _check(self, db, net, sender, recipient, now, delay, expire, keep):
        domain = sender.rpartition("@")[2]
        if domain and db.execute("SELECT 1 FROM signed_domains WHERE domain=? AND last >= ?",
                                 (domain, now - keep)).fetchone():
            return None
        row = db.execute(
            "SELECT first, passed, last FROM triplets WHERE net=? AND sender=? AND recipient=?",
            (net, sender, recipient)).fetchone()
        known = db.execute(
            "SELECT 1 FROM triplets WHERE net=? AND sender=? AND passed IS NOT NULL"
            " AND last >= ? LIMIT 1", (net, sender, now - keep)).fetchone()
        if known or (row and row[1] is not None and row[2] >= now - keep):
            db.execute(
                "INSERT INTO triplets VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (net, sender, recipient) DO UPDATE"
                " SET passed=coalesce(passed, excluded.passed), last=excluded.last",
                (net, sender, recipient, now, now, now))
            return None
        if row is None or row[1] is not None or now - row[0] > expire:
            # New, forgotten, or retried too late: the clock starts again.
            db.execute(
                "INSERT OR REPLACE INTO triplets VALUES (?, ?, ?, ?, NULL, ?)",
                (net, sender, recipient, now, now))
            return delay
        if now - row[0] < delay:
            return delay - (now - row[0])
        db.execute("UPDATE triplets SET passed=?, last=? WHERE net=? AND sender=? AND recipient=?",
                   (now, now, net, sender, recipient))
        return None


class Greylist(Policy):
    name = "greylist"

    def __init__(self, config, store, reactor, threadpool):
        self.config = config
        self.store = store
        self.reactor = reactor
        self.threadpool = threadpool

    def checkRecipient(self, facts, recipient):
        if facts.authenticatedAs is not None or inNetworks(facts.clientAddress, self.config.allow):
            return None
        c = self.config
        d = deferToThreadPool(
            self.reactor, self.threadpool, self.store.check,
            clientNetwork(facts.clientAddress), (facts.sender or "").lower(), recipient.lower(),
            self.reactor.seconds(), c.delay, c.expire, c.keep)

        def decide(wait):
            if wait is None:
                return None
            seconds = max(1, math.ceil(wait))
            logVerdict(facts, self.name, "tempfail", f"greylisted for {seconds} s",
                       recipients=[recipient])
            # RFC 3463 §3.8: 4.7.1, delivery not authorized (for now).
            return Decision.tempfail(
                451, "4.7.1", f"Greylisted, try again in {seconds} seconds", "greylist")

        return d.addCallback(decide)

    def checkData(self, facts, message):
        # Runs after dkim in the chain (its results are in facts) when the
        # operator lists greylist after it; before it there is nothing yet.
        domain = (facts.sender or "").rpartition("@")[2].lower()
        if not domain or facts.authenticatedAs is not None:
            return None
        for r in facts.authResults:
            signer = dict(r.properties).get("header.d")
            if r.method == "dkim" and r.result == "pass" and aligned(signer, domain, "r"):
                return deferToThreadPool(
                    self.reactor, self.threadpool, self.store.rememberSignedDomain,
                    domain, self.reactor.seconds()).addCallback(lambda _: None)
        return None


@implementer(IPolicyFactory)
class GreylistFactory:
    name = "greylist"

    def build(self, context, options):
        config = context.config
        store = GreylistStore(config.data_dir / "greylist.sqlite")
        return Greylist(config.policy.greylist, store, context.reactor, context.threadpool)
