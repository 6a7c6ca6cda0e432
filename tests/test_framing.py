"""
Framing: however TCP cuts a client's bytes into reads, the server answers
the same, and keeps answering everybody else (issue 12: a command line
without its LF froze the whole SMTP server).

Each recorded session (valid and malformed: bare LF, NUL, 8-bit, overlong
lines, refused BDAT, unterminated last line, literals) of each protocol is
fed to a fresh server whole, one byte at a time, cut in two at every
offset (SMTP, where a server costs nothing) and cut at random offsets
(Hypothesis); the replies must be byte for byte those of the whole feed, a
new client must still be greeted and answered, and nothing may be logged
as a traceback.  The real protocol classes and factories run on string
transports (see L{wireharness}).
"""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from wireharness import (
    PROTOCOLS, SESSIONS, WORLDS, describe, failuresLogged, fastDisk, splitAt,
)

CASES = [(name, i) for name in PROTOCOLS for i in range(len(SESSIONS[name]))]
IDS = [f"{name}-{i}" for name, i in CASES]
# Random cuts per session: a server costs ~0.1 ms for SMTP, ~50 ms for the
# Maildir-backed IMAP and POP3.
EXAMPLES = {"smtp": 100, "submission": 100, "imap": 15, "pop3": 15}


class Feeder:
    """Replays a session on fresh servers and checks what a user would see."""

    def __init__(self, name, index):
        self.world = WORLDS[name]
        self.session = SESSIONS[name][index]
        self.expected = self.run([self.session])

    def run(self, chunks):
        world = self.world()
        try:
            with fastDisk(), failuresLogged() as failures:
                out = world.replay(chunks)
                answered = world.answered()
        finally:
            world.close()
        assert not failures, describe(failures[0])
        assert answered, "a second client got no answer after this session"
        return out

    def check(self, chunks):
        got = self.run(chunks)
        assert got == self.expected, (chunks, got, self.expected)


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def feeder(request):
    return Feeder(*request.param)


def test_one_byte_per_read_same_replies(feeder):
    """
    If this fails, a client whose commands arrive a byte at a time (a slow
    link, a terminal, a hostile client) gets other answers than one that
    sends them at once, or freezes the server.
    """
    feeder.check([bytes([b]) for b in feeder.session])


@pytest.mark.parametrize("name, index", [c for c in CASES if c[0] in ("smtp", "submission")],
                         ids=[i for i, c in zip(IDS, CASES) if c[0] in ("smtp", "submission")])
def test_cut_in_two_at_every_offset_same_replies(name, index):
    """
    If this fails, an SMTP command, its CR LF, a DATA ending or a BDAT chunk
    split across two TCP reads at some offset is answered differently (or
    the server spins on the first half).
    """
    feeder = Feeder(name, index)
    for cut in range(1, len(feeder.session)):
        feeder.check(splitAt(feeder.session, [cut]))


@pytest.mark.parametrize("name, index", CASES, ids=IDS)
def test_random_cuts_same_replies(name, index):
    """
    If this fails, a session cut into reads at some random offsets (as TCP
    and TLS do) is answered differently from the same bytes in one read.
    """
    feeder = Feeder(name, index)
    size = len(feeder.session)

    @settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.integers(1, max(1, size - 1)), max_size=30).map(sorted))
    def check(cuts):
        feeder.check(splitAt(feeder.session, cuts))

    check()
