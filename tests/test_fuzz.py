"""
A bounded fuzz run per protocol (the long one is C{bench/fuzz.py}): random
and mutated commands, literals, 8-bit and NUL bytes, huge sequence sets,
fed in random read sizes to the real protocol classes (see
L{wirefuzz}).  After every batch a fresh connection must be greeted and
answered, and nothing may have been logged as a traceback, no read may have
stalled the server, and every reply must have the RFC's form (SMTP 4xx/5xx
with an enhanced code, no IMAP NO [SERVERBUG], no POP3 internal error).
"""

import pytest

from wireharness import PROTOCOLS
from wirefuzz import Fuzzer

# Inputs per protocol, the same ones on every run (the seed fixes them):
# a few seconds each on an idle machine.  The time is only a safety cap:
# a loaded machine must not quietly test less.
INPUTS = {"smtp": 4000, "submission": 4000, "imap": 1200, "pop3": 1200}
SECONDS_CAP = 120


@pytest.mark.parametrize("name", PROTOCOLS)
def test_fuzz_finds_nothing(name):
    """
    If this fails, some input a client can send crashes a session, logs a
    traceback, stalls the server for everyone or leaves it deaf to new
    clients; the report shows the first such input of each kind.
    """
    fuzzer = Fuzzer(name, seed=12).runFor(SECONDS_CAP, inputs=INPUTS[name])
    assert fuzzer.inputs >= INPUTS[name], fuzzer.report()
    assert not fuzzer.findings, fuzzer.report()
