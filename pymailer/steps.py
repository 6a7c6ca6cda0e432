"""
Steps that answer at once, taken at once.

Most steps of an SMTP session answer from memory (no policy check, a
recent free-space figure, a cached route, a message held in memory), some
through a C{Deferred} that has already fired (C{succeed(...)}, the portal's
anonymous login).  Chaining callbacks on each costs the reactor a callback
chain per step, tens of them per message (issue 14: a fifth of the
reactor's time under smtp-source's load).  L{runSteps} runs a command's
steps one after the other as plain calls while their results are at hand,
and chains the rest on the first C{Deferred} that is really pending.
"""

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


# type -> whether it is a Deferred: C{isinstance(x, Deferred)} goes through
# C{ABCMeta.__instancecheck__} (Deferred is an C{Awaitable}), a Python call
# per check, tens of them per message.  The types seen are the code's few.
_isDeferredType = {}


def isDeferred(result):
    """C{isinstance(result, Deferred)}, at the cost of a dict look-up."""
    kind = type(result)
    known = _isDeferredType.get(kind)
    if known is None:
        known = _isDeferredType[kind] = issubclass(kind, Deferred)
    return known


def settled(result):
    """
    C{result}'s value if it is a C{Deferred} that has already fired and
    waits on nothing: the value, or its failure raised (and consumed from
    the C{Deferred}, which nobody else holds).  Anything else as it is.
    """
    # Fired and not paused: its callbacks have all run (a paused one
    # waits on another Deferred's result).
    if isDeferred(result) and result.called and not result.paused:
        value = result.result
        if isinstance(value, Failure):
            # Handled by our caller: no "Unhandled error in Deferred" when
            # the Deferred is collected.
            result.addErrback(lambda _: None)
            value.raiseException()
        return value
    return result


def runSteps(result, *steps):
    """
    Give C{result} to the first step, its result to the next, and so on.

    @return: the last step's result, taken at once while each step answers
        at once (or with a fired C{Deferred}); else a C{Deferred} of it,
        the steps after the first that is pending being chained on it.
    @raise Exception: what a step raises (or a fired C{Deferred} failed
        with) before any step is pending.
    """
    index = 0
    while True:
        if isDeferred(result):
            if not result.called or result.paused:
                for later in steps[index:]:
                    result.addCallback(later)
                return result
            result = settled(result)
        if index == len(steps):
            return result
        result = steps[index](result)
        index += 1
