"""
SORT (RFC 5256), SORT=DISPLAY (RFC 5957) and ESORT (RFC 5267) through the
protocol, and the base subject (RFC 5256 2.1) they and THREAD sort by.
Answered from the store's summaries: no message is parsed per command.
"""

import pytest

from imapharness import Client
from pymailer.message import mime as message
from pymailer.message.summary import baseSubject
from pymailer.store.memory import MemoryStore


def mail(subject, date, sender, to="x@example.net", cc=None, body=b"hi"):
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\n" + (f"Cc: {cc}\r\n" if cc else "")).encode()
    return head + b"\r\n" + body + b"\r\n"


MESSAGES = [
    # seq 1..5
    mail("Re: beta", "Wed, 2 Dec 2025 10:00:00 +0000", "Zed <zed@example.org>",
         to="Amy <m@example.net>", cc="c@example.net"),
    mail("alpha", "Wed, 2 Dec 2025 09:00:00 +0200", "bob@example.org",
         to="z@example.net", body=b"x" * 500),
    mail("[list] Fwd: Beta (fwd)", "Tue, 1 Dec 2025 12:00:00 +0000",
         "Al <al@example.org>", to="b@example.net", cc="a@example.net"),
    mail("Gamma", "not a date", "carl@example.org", to="Carl <c@example.net>"),
    mail("alpha", "Wed, 2 Dec 2025 09:00:00 +0200", "bob@example.org", to="z@example.net"),
]


@pytest.fixture
def client():
    c = Client(store=MemoryStore(), secure=True)
    for body in MESSAGES:
        c.deliver(body)
    c.login()
    c.send(b"s SELECT INBOX\r\n")
    return c


def sortLine(client, command):
    out = client.send(command + b"\r\n")
    assert out.endswith(b"OK SORT completed\r\n") or b"UID SORT" in out or b"OK" in out, out
    return out.split(b"\r\n")[0]


def test_capabilities(client):
    """A client only sorts on the server if CAPABILITY lists SORT, and threads if THREAD= is there."""
    caps = client.send(b"c CAPABILITY\r\n").split(b"\r\n")[0].split()
    assert {b"SORT", b"SORT=DISPLAY", b"ESORT", b"THREAD=REFERENCES",
            b"THREAD=ORDEREDSUBJECT"} <= set(caps)


@pytest.mark.parametrize("criteria, order", [
    # Base subjects: beta, alpha, beta, gamma, alpha; ties in sequence order.
    (b"(SUBJECT)", b"2 5 1 3 4"),
    (b"(REVERSE SUBJECT)", b"4 1 3 2 5"),
    # Dates: 1: 2 Dec 10:00Z, 2/5: 2 Dec 07:00Z, 3: 1 Dec 12:00Z, 4: its
    # internal date (delivery time, the latest).
    (b"(DATE)", b"3 2 5 1 4"),
    (b"(REVERSE DATE)", b"4 1 2 5 3"),
    # addr-mailbox of the first From: zed bob al carl bob.
    (b"(FROM)", b"3 2 5 4 1"),
    (b"(TO)", b"3 4 1 2 5"),
    # No Cc sorts as the empty string, first.
    (b"(CC)", b"2 4 5 3 1"),
    (b"(ARRIVAL)", b"1 2 3 4 5"),
    (b"(SUBJECT REVERSE DATE)", b"2 5 1 3 4"),
    # RFC 5957: display name, else the address: Zed, bob@, Al, carl@, bob@.
    (b"(DISPLAYFROM)", b"3 2 5 4 1"),
    # Amy, z@, b@, Carl, z@.
    (b"(DISPLAYTO)", b"1 3 4 2 5"),
])
def test_sort_keys(client, criteria, order):
    """A client sorting its message list by a column gets the order RFC 5256/5957 define."""
    line = sortLine(client, b"a SORT " + criteria + b" UTF-8 ALL")
    assert line == b"* SORT " + order


def test_sort_size(client):
    """Sorting by size puts the largest message last (RFC822.SIZE), ties by sequence."""
    sizes = sorted((len(body), seq) for seq, body in enumerate(MESSAGES, 1))
    expected = b" ".join(b"%d" % seq for _, seq in sizes)
    assert sortLine(client, b"a SORT (SIZE) UTF-8 ALL") == b"* SORT " + expected
    assert expected.endswith(b" 2")


def test_uid_sort_with_search_keys(client):
    """UID SORT answers UIDs, and only the messages the search keys find."""
    client.send(b"e STORE 1 +FLAGS (\\Deleted)\r\n")
    client.send(b"x EXPUNGE\r\n")
    line = sortLine(client, b"a UID SORT (SUBJECT) US-ASCII NOT SUBJECT gamma")
    assert line == b"* SORT 2 5 3"
    assert sortLine(client, b"a SORT (DATE) UTF-8 SUBJECT nothing") == b"* SORT"


def test_esort(client):
    """RFC 5267: SORT RETURN gives the first/last in sort order, the count and the set in sort order."""
    out = client.send(b"a SORT RETURN (MIN MAX COUNT ALL) (REVERSE DATE) UTF-8 ALL\r\n")
    assert out == (b'* ESEARCH (TAG "a") MIN 4 MAX 3 ALL 4,1:2,5,3 COUNT 5\r\n'
                   b"a OK SORT completed\r\n")
    out = client.send(b"b UID SORT RETURN (COUNT) (SUBJECT) UTF-8 ALL\r\n")
    assert out.startswith(b'* ESEARCH (TAG "b") UID COUNT 5\r\n')


def test_errors(client):
    """Bad criteria are BAD, an unknown charset is NO [BADCHARSET], before any work."""
    assert b"a BAD" in client.send(b"a SORT (BOGUS) UTF-8 ALL\r\n")
    assert b"b BAD" in client.send(b"b SORT (REVERSE) UTF-8 ALL\r\n")
    assert b"c BAD" in client.send(b"c SORT SUBJECT UTF-8 ALL\r\n")
    assert b"d BAD" in client.send(b"d SORT (SUBJECT) UTF-8\r\n")
    assert b"e NO [BADCHARSET" in client.send(b"e SORT (SUBJECT) KOI8-R ALL\r\n")


def test_no_parsing_per_command(client, monkeypatch):
    """
    If this fails, every SORT, THREAD and FETCH ENVELOPE parses every
    message again: a large mailbox takes seconds per click.
    """
    def refuse(*args, **kwargs):
        raise AssertionError("a message was parsed")

    monkeypatch.setattr(message.Part, "__init__", refuse)
    assert sortLine(client, b"a SORT (SUBJECT) UTF-8 ALL") == b"* SORT 2 5 1 3 4"
    out = client.send(b"t THREAD REFERENCES UTF-8 ALL\r\n")
    assert out.startswith(b"* THREAD ") and b"t OK" in out
    out = client.send(b"f FETCH 1 (ENVELOPE BODYSTRUCTURE)\r\n")
    assert b'ENVELOPE ("Wed, 2 Dec 2025 10:00:00 +0000" "Re: beta"' in out
    assert out.endswith(b"f OK FETCH completed\r\n")


@pytest.mark.parametrize("subject, base, reply", [
    ("Re: hello", "hello", True),
    ("RE: Re: [list] Fwd: hi (fwd)", "hi", True),
    ("re[2]: x", "x", True),
    ("Re [2] : x", "x", True),
    ("Fw: a", "a", True),
    ("[fwd: Re: test]", "test", True),
    ("[fwd: [fwd: x] ]", "x", True),
    ("[blob] subject", "subject", False),
    ("[blob]", "[blob]", False),            # (4): never leaves an empty subject
    ("[a] [b]", "[b]", False),
    ("hello  \t world (fwd)(fwd)  ", "hello world", True),
    ("Rex: not a reply", "Rex: not a reply", False),
    ("", "", False),
    ("   ", "", False),
])
def test_base_subject(subject, base, reply):
    """Sorting and threading by subject group 'Re: x', 'Fwd: x' and 'x' as one, as RFC 5256 2.1 says."""
    assert baseSubject(subject) == (base, reply)


def test_base_subject_hostile_is_linear():
    """A subject of a million markers or blobs must not stall the store thread."""
    import time
    started = time.perf_counter()
    assert baseSubject("re:" * 300000 + "x") == ("x", True)
    assert baseSubject("[a]" * 300000 + "x") == ("x", False)
    assert baseSubject("x" + "(fwd)" * 200000) == ("x", True)
    assert time.perf_counter() - started < 5


def test_esort_save_and_modseq(client):
    """
    SORT RETURN (SAVE) keeps the result for a later $ (RFC 5182), and a
    MODSEQ key ends * SORT with the highest mod-sequence (RFC 7162 3.1.5).
    """
    out = client.send(b"a SORT RETURN (SAVE) (SUBJECT) UTF-8 SUBJECT alpha\r\n")
    assert out == b"a OK SORT completed\r\n"
    out = client.send(b"b FETCH $ (UID)\r\n")
    assert out.count(b" FETCH (UID ") == 2 and b"* 2 FETCH" in out and b"* 5 FETCH" in out
    out = client.send(b"c SORT (DATE) UTF-8 MODSEQ 1\r\n")
    assert out.split(b"\r\n")[0].startswith(b"* SORT 3 2 5 1 4 (MODSEQ ")
