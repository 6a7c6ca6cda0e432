"""
UID FETCH/STORE over UID sets with gaps, several spans and C{*}: the
sequence numbers and UIDs each response names (the set is walked span by
span, never expanded into a set of UIDs).
"""

import re

from imapharness import Client, loggedIn
from pymailer.store.sqlite import SQLiteStore


def test_uid_fetch_spans_gaps_and_star(tmp_path):
    """
    If this fails, a client asking for UIDs by ranges (what every client
    does to sync) gets messages it did not ask for, misses some, or gets
    them under the wrong sequence numbers: flags land on the wrong mail.
    """
    c = loggedIn(tmp_path, *[b"Subject: %d\r\n\r\nhi\r\n" % n for n in range(1, 11)])
    c.send(b"s SELECT INBOX\r\n")
    c.send(b"x STORE 2,5:6,9 +FLAGS.SILENT (\\Deleted)\r\ne EXPUNGE\r\n")
    # Left: UIDs 1 3 4 7 8 10 at sequence numbers 1..6.
    cases = {
        b"1:*": [(1, 1), (2, 3), (3, 4), (4, 7), (5, 8), (6, 10)],
        b"2:6": [(2, 3), (3, 4)],
        b"5:6,9,3": [(2, 3)],
        b"8,1,4:3,20:*": [(1, 1), (2, 3), (3, 4), (5, 8), (6, 10)],
        b"11:20": [],
        b"*": [(6, 10)],
        b"7:8,7": [(4, 7), (5, 8)],
    }
    for uidSet, want in cases.items():
        out = c.send(b"f UID FETCH " + uidSet + b" (FLAGS)\r\n")
        assert out.endswith(b"f OK FETCH completed\r\n"), out
        got = [(int(s), int(u)) for s, u in re.findall(rb"\* (\d+) FETCH \(UID (\d+) ", out)]
        assert got == want, (uidSet, out)


def test_uid_store_spans_on_sqlite(tmp_path):
    """
    If this fails, UID STORE over ranges on the default store changes the
    flags of messages the client did not name.
    """
    c = Client(tmp_path, secure=True, store=SQLiteStore(tmp_path / "store"))
    for n in range(1, 7):
        c.deliver(b"Subject: %d\r\n\r\nhi\r\n" % n)
    c.login()
    c.send(b"s SELECT INBOX\r\n")
    out = c.send(b"t UID STORE 2:3,5:* +FLAGS (\\Flagged)\r\n")
    assert re.findall(rb"\* (\d+) FETCH \(FLAGS \(([^)]*)\) UID (\d+)\)", out) == [
        (b"%d" % n, b"\\Flagged \\Recent", b"%d" % n) for n in (2, 3, 5, 6)]
