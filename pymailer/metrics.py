"""
The server's Prometheus metrics: the counters and histograms the protocols
and the queue runner move as things happen, and L{ServerCollector}, which
reads the rest (open connections, queue sizes) when a scrape asks.

The event metrics live in one module-level L{REGISTRY}, not the
prometheus-client default one: a test process that builds several services
shares them (counters only go up, so tests compare before and after), and
nothing of the library's own process metrics is mixed in unasked.  The
scrape-time collector is registered per service, in L{serviceRegistry}.

Label values come from our code (listener roles, policy reasons, IMAP
command names we implement), never from what a client sends, so the
number of series stays bounded.
"""

import functools

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES_ACCEPTED = Counter(
    "pymailer_messages_accepted", "Messages queued after end of data (250), per listener.",
    ["listener"], registry=REGISTRY)
DELIVERIES = Counter(
    "pymailer_deliveries", "Delivery attempts per recipient, by outcome "
    "(delivered, deferred, bounced, expired).",
    ["outcome"], registry=REGISTRY)
REJECTIONS = Counter(
    "pymailer_smtp_rejections", "SMTP commands refused by policy or for an unknown "
    "recipient, by reason.", ["reason"], registry=REGISTRY)
AUTH_FAILURES = Counter(
    "pymailer_auth_failures", "Failed logins, per protocol.", ["protocol"], registry=REGISTRY)
LOCKOUTS = Counter(
    "pymailer_auth_lockouts", "Client addresses or accounts locked out after failed "
    "logins.", ["kind"], registry=REGISTRY)
SPAM_VERDICTS = Counter(
    "pymailer_spam_verdicts", "Spam and virus verdicts per message, by check "
    "(dnsbl, greylist, rules, classifier, rspamd, clamav) and action (reject, "
    "tempfail, score, junk, pass, timeout): what `pymailer spam stats` counts.",
    ["check", "action"], registry=REGISTRY)
SMTP_DATA_SECONDS = Histogram(
    "pymailer_smtp_end_of_data_seconds", "From the end of a message's data to the "
    "reply (policy checks and the queue commit), per listener.",
    ["listener"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
IMAP_COMMAND_SECONDS = Histogram(
    "pymailer_imap_command_seconds", "IMAP command latency, per command.",
    ["command"], registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


@functools.lru_cache(maxsize=1024)
def labelled(metric, *values):
    """
    C{metric.labels(*values)}, kept: C{labels} checks and looks its
    arguments up under a lock on every call, a few microseconds on every
    message's path (issue 14).  Only for labels from a small fixed set
    (listener roles, outcomes), never client-chosen text.
    """
    return metric.labels(*values)


class ServerCollector:
    """
    What a scrape reads from the running server rather than counting:
    connections per listener (from each listener's
    L{pymailer.shutdown.Connections}) and envelopes per queue state.

    Collecting counts the spool's messages (L{ISpool.counts}): call it in a
    thread, never on the reactor (L{render} is meant for
    C{deferToThreadPool}).

    @param connections: C{{role: Connections}}, filled as listeners are built.
    @param spool: an L{pymailer.interfaces.ISpool}, or C{None}.
    @param states: the queue states to report (default: all the spool's).
    """

    def __init__(self, connections, spool=None, states=()):
        self.connections = connections
        self.spool = spool
        self.states = states

    def collect(self):
        opened = CounterMetricFamily(
            "pymailer_connections", "Connections admitted, per listener.",
            labels=["listener"])
        current = GaugeMetricFamily(
            "pymailer_connections_open", "Connections open now, per listener.",
            labels=["listener"])
        # A copy: the reactor thread may add a listener meanwhile.
        for role, clients in list(self.connections.items()):
            opened.add_metric([role], clients.accepted)
            current.add_metric([role], len(clients.open))
        yield opened
        yield current
        if self.spool is not None:
            queued = GaugeMetricFamily(
                "pymailer_queue_messages", "Messages in the queue, per state.",
                labels=["state"])
            counts = self.spool.counts()
            for state in self.states or sorted(counts):
                queued.add_metric([state], counts.get(state, 0))
            yield queued


def serviceRegistry(collector):
    """A registry holding one service's L{ServerCollector}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(*registries):
    """
    The text exposition of the event metrics and C{registries}, as bytes.
    Blocking (it may list the spool): run it in a thread.
    """
    return b"".join(generate_latest(r) for r in (REGISTRY,) + registries)
