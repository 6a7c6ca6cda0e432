"""
Client input that once reached an internal error (a logged traceback and
C{NO [SERVERBUG]}): names too long for the disk, dates out of range,
numbers too long for int().  Each must get a reply that names the problem,
and nothing may be logged as a failure.  Protocol level, on the harness of
L{imapharness}.
"""

import gc
import time

import pytest
from twisted.internet.error import ConnectionDone
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from imapharness import Client, withoutMailboxId

LONG = b"x" * 256
# Short to type, long on disk: Maildir++ escapes "." as "%2E".
DOTTED = b"a" + b"." * 90


@pytest.fixture
def failures():
    """The failures logged while the test runs (tracebacks in the server log)."""
    logged = []

    def observe(event):
        if "log_failure" in event:
            logged.append(event)

    globalLogPublisher.addObserver(observe)
    yield logged
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path, secure=True)
    c.login()
    c.deliver()
    c.send(b"s SELECT INBOX\r\n")
    return c


@pytest.mark.parametrize("name", [LONG, DOTTED], ids=["256-octets", "dots"])
@pytest.mark.parametrize("command", [
    b"CREATE %s", b"DELETE %s", b"SELECT %s", b"EXAMINE %s", b"STATUS %s (MESSAGES)",
    b"SUBSCRIBE %s", b"UNSUBSCRIBE %s", b"RENAME %s Other", b"RENAME INBOX %s",
    b"COPY 1 %s", b"MOVE 1 %s", b"APPEND %s {6+}\r\nx: y\r\n",
])
def test_mailbox_name_too_long(client, failures, command, name):
    """A folder name too long to store is refused with NO [LIMIT], not an internal error."""
    out = client.send(b"t " + command % name + b"\r\n")
    assert out.startswith(b"t NO [LIMIT] mailbox name longer than 255 octets"), out
    assert not failures


def test_rename_refused_when_a_child_name_grows_too_long(client, failures, tmp_path):
    """Renaming a folder whose subfolder would get too long a name changes nothing and says why."""
    child = b"p/" + b"c" * 240
    for name in (b"p", child):
        assert withoutMailboxId(client.send(b"a CREATE " + name + b"\r\n")) == b"a OK CREATE completed\r\n"
    out = client.send(b"b RENAME p " + b"q" * 20 + b"\r\n")
    assert out.startswith(b"b NO [LIMIT]"), out
    out = client.send(b'c LIST "" *\r\n')
    assert b'"p"' in out and child in out and b"qqq" not in out
    assert not failures


# Dates out of range, and why (the reply says it).
DATES = [
    (b"1-Jan-19700000000000000000000", b"expected d-Mon-yyyy"),
    (b"1-Jan-99999999999", b"expected d-Mon-yyyy"),
    (b"31-Feb-2020", b"day is out of range for month"),
    (b"0-Jan-2020", b"day is out of range for month"),
    (b"1-Jan-0000", b"year 0 is out of range"),
    (b"1-Foo-2020", b"unknown month"),
]
# APPEND's date-time follows the same date rules, then time and zone ones.
DATE_TIMES = [
    (date + b" 00:00:00 +0000", b"expected dd-Mon-yyyy" if why.startswith(b"expected") else why)
    for date, why in DATES
] + [
    (b"01-Jan-2020 24:00:00 +0000", b"hour must be in 0..23"),
    (b"01-Jan-2020 00:00:60 +0000", b"second must be in 0..59"),
    (b"01-Jan-2020 00:00:00 +9999", b"zone out of range"),
]


@pytest.mark.parametrize("key", [b"SENTSINCE", b"SENTBEFORE", b"SENTON", b"SINCE", b"BEFORE", b"ON"])
@pytest.mark.parametrize("date,why", DATES)
def test_search_date_out_of_range(client, failures, key, date, why):
    """A search for an impossible date gets BAD saying what is wrong, not an internal error."""
    out = client.send(b"t SEARCH " + key + b" " + date + b"\r\n")
    assert out.startswith(b"t BAD bad date '" + date + b"': " + why), out
    assert not failures


def test_search_dates_at_the_edges_still_work(client, failures):
    """Searches on real dates (one-digit days, quoted, far past and future) still answer."""
    for date in (b"1-Jan-0001", b'"01-jan-2020"', b"31-Dec-9999", b"29-Feb-2024"):
        out = client.send(b"t SEARCH SENTSINCE " + date + b" SINCE " + date + b"\r\n")
        assert out.endswith(b"t OK SEARCH completed\r\n"), out
    assert not failures


@pytest.mark.parametrize("dateTime,why", DATE_TIMES)
def test_append_date_time_out_of_range(client, failures, dateTime, why):
    """A message uploaded with an impossible date is refused with BAD saying why, and not stored."""
    out = client.send(b't APPEND INBOX "' + dateTime + b'" {6+}\r\nx: y\r\n\r\n')
    assert out.startswith(b"t BAD bad date-time '" + dateTime[:40] + b"': " + why), out
    assert b"EXISTS" not in client.send(b"n NOOP\r\n")
    assert not failures


def test_append_date_time_with_space_padded_day(client, failures):
    """RFC 3501's date-day-fixed (" 1-Jan-...") as Outlook sends it is still taken."""
    out = client.send(b't APPEND INBOX " 1-Jan-2020 00:00:00 +0100" {6+}\r\nx: y\r\n\r\n')
    assert b"t OK [APPENDUID" in out, out
    out = client.send(b"f FETCH 2 INTERNALDATE\r\n")
    assert b'INTERNALDATE "31-Dec-2019 23:00:00 +0000"' in out
    assert not failures


def test_section_part_number_too_long(client, failures):
    """A FETCH for part 1111...1 (5000 digits) gets BAD, not an internal error."""
    out = client.send(b"t FETCH 1 BODY.PEEK[" + b"1" * 5000 + b"]\r\n")
    assert out.startswith(b"t BAD section part"), out
    out = client.send(b"t FETCH 1 BODY.PEEK[4294967296]\r\n")
    assert out.startswith(b"t BAD section part"), out
    assert not failures


def test_structure_of_a_message_with_a_huge_rfc2231_counter(client, failures):
    """A hostile sender's parameter name*99...9 does not stop the recipient's client from showing the message."""
    client.deliver(b"Subject: x\r\nContent-Type: text/plain; name*" + b"9" * 5000
                   + b"=v\r\n\r\nhi\r\n")
    client.send(b"n NOOP\r\n")
    out = client.send(b"t FETCH 2 BODYSTRUCTURE\r\n")
    assert out.startswith(b'* 2 FETCH (BODYSTRUCTURE ("text" "plain" ({5005}\r\nname*999'), out
    assert out.endswith(b' "v" "charset" "us-ascii") NIL NIL "7bit" 4 1 NIL NIL NIL NIL))\r\n'
                        b"t OK FETCH completed\r\n")
    assert not failures


def deeplyNested(depth=2000):
    """
    A message of C{depth} multiparts one inside the other (60 KB at 2,000),
    its one text part saying "needle": what any sender can write to break
    a recursive MIME parser.
    """
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (d, d)
                       for d in range(depth))
    closing = b"".join(b"\r\n--b%d--\r\n" % d for d in reversed(range(depth)))
    return (b"From: deep@example.net\r\nSubject: nested\r\nMIME-Version: 1.0\r\n" + opening
            + b"Content-Type: text/plain\r\n\r\nneedle\r\n" + closing)


def nestedMessages(depth=500):
    """
    A message holding a message/rfc822 part holding another, C{depth}
    deep, the innermost saying "needle": within what the email package
    parses, beyond what its generator writes back.
    """
    inner = b"Subject: innermost\r\n\r\nneedle\r\n"
    for level in range(depth):
        inner = b"Subject: level %d\r\nContent-Type: message/rfc822\r\n\r\n" % level + inner
    return b"From: deep@example.net\r\n" + inner


@pytest.mark.parametrize("key", [b"TEXT needle", b"BODY needle", b"HEADER Subject nested"])
def test_search_with_a_deeply_nested_message_in_the_mailbox(client, failures, key):
    """
    A message nested 2,000 multiparts deep, which anyone may send, does not
    make every text search of the mailbox an internal error: it is searched
    as its source, and found.
    """
    client.deliver(deeplyNested())
    client.send(b"n NOOP\r\n")
    out = client.send(b"t SEARCH " + key + b"\r\n")
    assert out == b"* SEARCH 2\r\nt OK SEARCH completed\r\n", out
    assert not failures


def foldedField(folds):
    """A message with one field folded C{folds} times (3 octets a fold)."""
    return (b"From: fold@example.net\r\nSubject: folded\r\nX-Fold: a" + b"\r\n b" * folds
            + b"\r\n\r\nbody\r\n")


def test_header_folded_many_times_costs_time_in_proportion(client, failures):
    """
    A FETCH of the header of a message whose one field is folded 400,000
    times (1.2 MB, anyone may send it) takes about ten times what 40,000
    folds take, not a hundred: it took 10 s of a core, at every FETCH of
    that message's header.  (A ratio, so that a busy machine does not
    fail it.)
    """
    client.deliver(foldedField(40_000))
    client.deliver(foldedField(400_000))
    client.send(b"n NOOP\r\n")

    def fetchTime(seq):
        started = time.perf_counter()
        out = client.send(b"t FETCH %d BODY.PEEK[HEADER.FIELDS (SUBJECT)]\r\n" % seq)
        assert out.endswith(b"t OK FETCH completed\r\n") and b"Subject: folded" in out, out[-200:]
        return time.perf_counter() - started

    small = min(fetchTime(2) for _ in range(3))
    large = min(fetchTime(3) for _ in range(2))
    assert large < 30 * small, (small, large)
    assert not failures


def test_connection_lost_while_writes_wait_logs_nothing(client, failures):
    """
    A client that pipelines 20,000 NOOPs and LOGOUT without reading (the
    transport's buffer fills and pauses the session) leaves no "Unhandled
    error in Deferred" in the server log when it goes: any client could
    fill the log with critical entries.
    """
    client.protocol.pauseProducing()  # what the transport does when its buffer is full
    client.protocol.connectionLost(Failure(ConnectionDone()))
    gc.collect()
    assert not failures, [f["log_failure"] for f in failures]
