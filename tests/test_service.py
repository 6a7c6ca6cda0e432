"""
The composition root's shutdown order: what stops first, and that each part
waits for the one before it.
"""

from twisted.application.service import Service
from twisted.internet import defer

from pymailer.service import StopInOrder


class Recorded(Service):
    def __init__(self, name, log, result=None):
        self.name_ = name
        self.log = log
        self.result = result

    def stopService(self):
        Service.stopService(self)
        self.log.append(self.name_)
        return self.result


def test_children_stop_last_first_each_after_the_previous():
    """
    The thread pools (added first) stop only once the queue runner (added
    after them) has finished: otherwise deliveries waiting on a stopped
    pool never end and `twistd` hangs on SIGTERM.
    """
    log = []
    runnerDone = defer.Deferred()
    top = StopInOrder()
    for child in (Recorded("pool", log), Recorded("runner", log, runnerDone),
                  Recorded("listener", log)):
        child.setServiceParent(top)
    top.startService()
    stopped = top.stopService()
    assert log == ["listener", "runner"]
    assert not stopped.called
    runnerDone.callback(None)
    assert log == ["listener", "runner", "pool"]
    assert stopped.called


def test_a_failing_stop_does_not_keep_the_others_running():
    """A part that fails to stop is logged, and the rest still stop."""
    log = []
    top = StopInOrder()
    Recorded("pool", log).setServiceParent(top)
    Recorded("runner", log, defer.fail(RuntimeError("boom"))).setServiceParent(top)
    top.startService()
    stopped = top.stopService()
    assert log == ["runner", "pool"] and stopped.called
