"""
When to try a deferred recipient again: exponential backoff with jitter, in
the manner of Postfix's minimal/maximal_backoff_time.
"""

import random


def retryDelay(attempts, minimum, maximum, rand=random.random):
    """
    @param attempts: failed attempts so far (1 after the first failure).
    @return: seconds until the next attempt: C{minimum} doubled per attempt,
        capped at C{maximum}, with ±10% jitter so that a burst of mail
        deferred together does not come back together.
    """
    delay = min(maximum, minimum * (2 ** max(0, attempts - 1)))
    return delay * (0.9 + 0.2 * rand())
