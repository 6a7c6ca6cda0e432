"""
Rate limits as a policy piece: connections and unknown recipients per client
IP per minute, and messages and recipients per authenticated user per hour.

Each limit is a token bucket (a burst of the whole allowance, refilled
evenly over the period), like Postfix's anvil counts, kept in memory: a
restart forgives.  Over a limit, a connection gets 421 4.7.0 and is closed
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
from pymailer.policy.decision import Decision, Policy


class TokenBuckets:
    """
    C{limit} events per C{period} seconds per key.  Full buckets are
    forgotten, so memory follows the keys that are active.
    """

    def __init__(self, limit, period, clock):
        self.limit = limit
        self.rate = limit / period
        self.clock = clock
        self._buckets = {}

    def take(self, key, count=1):
        """@return: C{True} if C{count} events are allowed now (and taken)."""
        if not self.limit:
            return True
        now = self.clock.seconds()
        tokens = self._tokens(key, now)
        if tokens < count:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - count, now)
        if len(self._buckets) > 10000:
            self._forgetFull(now)
        return True

    def exhausted(self, key):
        """@return: C{True} if not even one event is allowed now (nothing taken)."""
        return bool(self.limit) and self._tokens(key, self.clock.seconds()) < 1

    def _tokens(self, key, now):
        tokens, then = self._buckets.get(key, (self.limit, now))
        return min(self.limit, tokens + (now - then) * self.rate)

    def _forgetFull(self, now):
        for key in list(self._buckets):
            if self._tokens(key, now) >= self.limit:
                del self._buckets[key]


class RateLimit(Policy):
    name = "ratelimit"

    def __init__(self, options, clock):
        self.connections = TokenBuckets(options["connections_per_minute"], 60, clock)
        self.unknown = TokenBuckets(options["unknown_recipients_per_minute"], 60, clock)
        self.messages = TokenBuckets(options["messages_per_hour"], 3600, clock)
        self.recipients = TokenBuckets(options["recipients_per_hour"], 3600, clock)
        self.options = options

    def checkConnect(self, facts):
        if self.connections.take(facts.clientAddress):
            return Decision.accept()
        return Decision.tempfail(
            421, "4.7.0",
            f"Too many connections from {facts.clientAddress}: limit is "
            f"{self.options['connections_per_minute']} per minute, try again later",
            "ratelimit.connections", disconnect=True)

    def checkMail(self, facts):
        return self._perUser(facts, self.messages, "Message", "messages_per_hour")

    def checkRecipient(self, facts, recipient):
        if self.unknown.exhausted(facts.clientAddress):
            return Decision.tempfail(
                450, "4.7.1", self._harvestText(facts), "ratelimit.unknown_recipients")
        return self._perUser(facts, self.recipients, "Recipient", "recipients_per_hour")

    def checkUnknownRecipient(self, facts, recipient):
        if self.unknown.take(facts.clientAddress):
            return Decision.accept()
        return Decision.tempfail(
            421, "4.7.1", self._harvestText(facts), "ratelimit.unknown_recipients",
            disconnect=True)

    def _harvestText(self, facts):
        return (f"Too many unknown recipients from {facts.clientAddress}: limit is "
                f"{self.options['unknown_recipients_per_minute']} per minute, "
                "try again later")

    def _perUser(self, facts, buckets, what, option):
        user = facts.authenticatedAs
        if user is None or buckets.take(user):
            return Decision.accept()
        return Decision.tempfail(
            450, "4.7.1",
            f"{what} rate limit exceeded for {user}: "
            f"{self.options[option]} per hour, try again later",
            f"ratelimit.{option}")


@implementer(IPolicyFactory)
class RateLimitFactory:
    name = "ratelimit"

    def build(self, context, options):
        return RateLimit(options, context.reactor)
