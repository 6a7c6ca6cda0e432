"""
L{pymailer.steps}: a command's steps run as plain calls while they answer
at once, and as callbacks from the first one that is pending.
"""

import gc

import pytest
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from pymailer.smtp.reply import SMTPReply
from pymailer.steps import runSteps, settled


def test_fired_deferred_gives_its_value_at_once():
    """A step answered with succeed() is taken without a callback."""
    assert settled(defer.succeed(3)) == 3
    assert settled(4) == 4
    pending = defer.Deferred()
    assert settled(pending) is pending


def test_fired_failure_is_raised_and_not_reported_again():
    """
    A step that failed at once (a refusal) raises its error where the
    steps run, and the Deferred it came in is not reported later as an
    unhandled error in the log.
    """
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        with pytest.raises(SMTPReply):
            settled(defer.fail(SMTPReply(550, "5.1.1", "no")))
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert not [e for e in logged if e.get("log_level") and e["log_level"].name == "critical"]


def test_steps_run_at_once_until_one_is_pending():
    """
    Steps answering at once run in the call; from the first pending one
    on, the rest run as it fires, in order, each given the previous result.
    """
    seen = []
    assert runSteps(1, lambda x: x + 1, lambda x: defer.succeed(x * 10),
                    lambda x: seen.append(x) or x) == 20
    assert seen == [20]
    later = defer.Deferred()
    d = runSteps(None, lambda _: later, lambda x: seen.append(x) or x + 1)
    assert isinstance(d, defer.Deferred) and seen == [20]
    results = []
    d.addCallback(results.append)
    later.callback(5)
    assert seen == [20, 5] and results == [6]
