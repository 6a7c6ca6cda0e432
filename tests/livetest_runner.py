"""
Run IMAPClient's live test suite (C{python -m imapclient.livetest INI})
unchanged, printing one machine-readable line per test::

    LIVETEST <json ["TestWithUIDs", "test_fetch", "fail", "<details>"]>

Only the reporting is ours: C{imapclient.livetest.main} builds and runs its
classes as always, but its C{unittest.main} gets a runner whose result
records each outcome with the class name livetest gave it (its verbose
output names both UID classes C{createUidTestClass.<locals>.LiveTest}).

Usage: C{python livetest_runner.py INI [unittest arguments]}.
"""

import functools
import json
import sys
import unittest

from imapclient import livetest


class RecordingResult(unittest.TextTestResult):
    def _record(self, test, outcome, detail=""):
        # A failing setUpClass reports an _ErrorHolder, not a test.
        line = [type(test).__name__, getattr(test, "_testMethodName", str(test)),
                outcome, detail]
        self.stream.writeln("LIVETEST " + json.dumps(line))
        self.stream.flush()

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "ok")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "fail", self.failures[-1][1])

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", self.errors[-1][1])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skip", reason)


if __name__ == "__main__":
    runner = unittest.TextTestRunner(stream=sys.stdout, resultclass=RecordingResult,
                                     verbosity=0)
    unittest.main = functools.partial(unittest.main, testRunner=runner)
    livetest.main()
