"""
Rate limits as a policy piece: connections and unknown recipients per client
IP per minute, and messages and recipients per authenticated user per hour.

Each limit is a token bucket (a burst of the whole allowance, refilled
evenly over the period), like Postfix's anvil counts, kept in memory (a
restart forgives) or, with several worker processes, in a file they all
share (L{pymailer.limits}): a client's connections land on any worker.  Over a limit, a connection gets 421 4.7.0 and is closed
(RFC 5321 §3.8); a message or a recipient gets 450 4.7.1, which a
well-behaved client retries later.

The limits aim at abuse, not volume: a peer MTA may open a connection per
message, but it does not guess addresses.  A client over its allowance of
unknown recipients (a directory harvest) is cut off with 421, and until the
allowance refills every recipient it names gets 450, known or not, so the
replies stop telling it which addresses exist.
"""

from zope.interface import implementer

from pymailer.interfaces import IPolicyFactory
from pymailer.limits import MemoryLimits, andThen, caller
from pymailer.policy.decision import Decision, Policy


class TokenBuckets:
    """
    C{limit} events per C{period} seconds per key, counted in an
    L{ILimitStore} (in memory unless one is given).  Answers at once with a
    store in memory, with a C{Deferred} with one that blocks.
    """

    def __init__(self, limit, period, clock, store=None, call=None, name="events"):
        self.limit = limit
        self.period = period
        self.clock = clock
        self.name = name
        self.store = store if store is not None else MemoryLimits()
        self._call = call if call is not None else caller(self.store, None, None)

    def take(self, key, count=1):
        """@return: C{True} if C{count} events are allowed now (and taken)."""
        if not self.limit:
            return True
        return self._call(self.store.take, self.name, key, self.limit, self.period,
                          self.clock.seconds(), count)

    def exhausted(self, key):
        """@return: C{True} if not even one event is allowed now (nothing taken)."""
        if not self.limit:
            return False
        return andThen(self._call(self.store.available, self.name, key, self.limit,
                                  self.period, self.clock.seconds()),
                       lambda tokens: tokens < 1)


class RateLimit(Policy):
    name = "ratelimit"

    def __init__(self, options, clock, store=None, call=None):
        def buckets(option, period):
            return TokenBuckets(options[option], period, clock, store, call, name=option)

        self.connections = buckets("connections_per_minute", 60)
        self.unknown = buckets("unknown_recipients_per_minute", 60)
        self.messages = buckets("messages_per_hour", 3600)
        self.recipients = buckets("recipients_per_hour", 3600)
        self.options = options

    def checkConnect(self, facts):
        return _acceptIf(self.connections.take(facts.clientAddress), lambda: Decision.tempfail(
            421, "4.7.0",
            f"Too many connections from {facts.clientAddress}: limit is "
            f"{self.options['connections_per_minute']} per minute, try again later",
            "ratelimit.connections", disconnect=True))

    def checkMail(self, facts):
        return self._perUser(facts, self.messages, "Message", "messages_per_hour")

    def checkRecipient(self, facts, recipient):
        def decide(harvesting):
            if harvesting:
                return Decision.tempfail(
                    450, "4.7.1", self._harvestText(facts), "ratelimit.unknown_recipients")
            return self._perUser(facts, self.recipients, "Recipient", "recipients_per_hour")
        return andThen(self.unknown.exhausted(facts.clientAddress), decide)

    def checkUnknownRecipient(self, facts, recipient):
        return _acceptIf(self.unknown.take(facts.clientAddress), lambda: Decision.tempfail(
            421, "4.7.1", self._harvestText(facts), "ratelimit.unknown_recipients",
            disconnect=True))

    def _harvestText(self, facts):
        return (f"Too many unknown recipients from {facts.clientAddress}: limit is "
                f"{self.options['unknown_recipients_per_minute']} per minute, "
                "try again later")

    def _perUser(self, facts, buckets, what, option):
        user = facts.authenticatedAs
        if user is None:
            return Decision.accept()
        return _acceptIf(buckets.take(user), lambda: Decision.tempfail(
            450, "4.7.1",
            f"{what} rate limit exceeded for {user}: "
            f"{self.options[option]} per hour, try again later",
            f"ratelimit.{option}"))


def _acceptIf(allowed, refusal):
    """Accept if C{allowed} (a C{bool} or a C{Deferred} of one), else C{refusal()}."""
    return andThen(allowed, lambda ok: Decision.accept() if ok else refusal())


@implementer(IPolicyFactory)
class RateLimitFactory:
    name = "ratelimit"

    def build(self, context, options):
        store = context.limits
        call = None if store is None else caller(store, context.reactor, context.threadpool)
        return RateLimit(options, context.reactor, store, call)
