"""
The stored message summary's format (L{pymailer.message.summary}): a row
as this version writes it (SQLite and PostgreSQL C{summaries}, version 1)
is what the code computes today, and a row written by an earlier version
is read as it is, not computed again.
"""

import io
import pathlib
import sqlite3
import subprocess
import sys

from pymailer.message.summary import VERSION, summarize
from pymailer.store import sqlite as sqliteModule
from pymailer.store.sqlite import SQLiteStore, _summaryRow
from tests.store_contract import StoreContract

USER = "alice@example.org"
# The contract's summarised message, with a quoted display name and 8-bit
# text in a part's description (a literal in BODYSTRUCTURE).
MESSAGE = StoreContract.SUMMARISED.replace(
    b"To: Bob <bob@example.net>", b'To: "Bob \\"B\\" Smith" <bob@example.net>').replace(
    b"Content-Type: text/plain\r\n", b"Content-Type: text/plain\r\nContent-Description: caf\xc3\xa9\r\n")

# The row after (blob, version) exactly as version 1 of the format was
# written (by the code of 2 December 2026, when the summary moved out of
# pymailer.imap): quoted strings with escapes, a literal for 8-bit text, the
# multipart's children without a space between them.
STORED_VERSION = 1
STORED_ROW = (
    b'("Tue, 1 Dec 2026 10:00:00 +0100" "Re: [list] =?utf-8?q?Gr=C3=BC=C3=9Fe?="'
    b' (("=?utf-8?q?J=C3=B6rg?=" NIL "joerg" "example.org"))'
    b' (("=?utf-8?q?J=C3=B6rg?=" NIL "joerg" "example.org"))'
    b' (("=?utf-8?q?J=C3=B6rg?=" NIL "joerg" "example.org"))'
    b' (("Bob \\"B\\" Smith" NIL "bob" "example.net") (NIL NIL "carol" "example.net"))'
    b' NIL NIL "<m1@example.org>" "<m2@example.org>")',
    b'(("text" "plain" ("charset" "us-ascii") NIL {5}\r\ncaf\xc3\xa9 "7bit" 5 0 NIL NIL NIL NIL)'
    b'("application" "pdf" ("name" "a.pdf") NIL NIL "7bit" 5 NIL'
    b' ("attachment" ("filename" "a.pdf")) NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)',
    b'(("text" "plain" ("charset" "us-ascii") NIL {5}\r\ncaf\xc3\xa9 "7bit" 5 0)'
    b'("application" "pdf" ("name" "a.pdf") NIL NIL "7bit" 5) "mixed")',
    1796115600, "Re: [list] Grüße", "Grüße", 1,
    "Jörg", "joerg", "example.org", 'Bob "B" Smith', "bob", "example.net", "", "", "",
    "m2@example.org", "m1@example.org", "m0@example.org m1@example.org", 1)


class Content:
    size = len(MESSAGE)

    def readAt(self, offset, length):
        return MESSAGE[offset:offset + length]


def test_summary_written_as_version_1_was():
    """
    If this fails, the summaries written from now on differ from those the
    databases already hold: FETCH ENVELOPE/BODYSTRUCTURE would answer
    differently for old and new mail (bump VERSION when the format changes
    on purpose, so old rows are computed again).
    """
    assert VERSION == STORED_VERSION
    assert _summaryRow(summarize(Content())) == STORED_ROW


def neverSummarize(monkeypatch):
    def fail(content):
        raise AssertionError("a stored summary was computed again")

    monkeypatch.setattr(sqliteModule, "summarize", fail)


def assertReadAsStored(summary):
    assert (summary.envelope, summary.bodystructure, summary.body) == STORED_ROW[:3]
    assert summary.date == 1796115600
    assert (summary.subject, summary.baseSubject, summary.isReply) == (
        "Re: [list] Grüße", "Grüße", True)
    assert summary.sender.display() == "Jörg"
    assert summary.to.addrSpec() == "bob@example.net"
    assert summary.cc.addrSpec() == ""
    assert summary.references == ("m0@example.org", "m1@example.org")
    assert summary.hasAttachments


def test_sqlite_reads_a_summary_stored_by_version_1(tmp_path, monkeypatch):
    """
    If this fails, the summaries in an existing data_dir are not read back
    (every SORT or FETCH ENVELOPE parses the messages again) or come back
    different after an upgrade.
    """
    SQLiteStore(tmp_path / "store").deliver(USER, b"", io.BytesIO(MESSAGE))
    db = sqlite3.connect(tmp_path / "store" / "index.sqlite")
    [blob] = [row[0] for row in db.execute("SELECT blob FROM summaries")]
    db.execute("DELETE FROM summaries")
    db.execute("INSERT INTO summaries VALUES (?, ?" + ", ?" * len(STORED_ROW) + ")",
               (blob, STORED_VERSION) + STORED_ROW)
    db.commit()
    db.close()
    neverSummarize(monkeypatch)
    box = SQLiteStore(tmp_path / "store").mailbox(USER)
    [info] = box.messages()
    assertReadAsStored(box.summaries([info.uid])[info.uid])


def test_postgresql_reads_a_summary_stored_by_version_1(postgresqlPool, monkeypatch):
    """
    If this fails, the summaries a PostgreSQL cluster already holds are not
    read back, or come back different, after an upgrade of the nodes.
    """
    from pymailer.store.postgresql import PostgreSQLStore

    store = PostgreSQLStore(postgresqlPool)
    store.deliver(USER, b"", io.BytesIO(MESSAGE))
    with postgresqlPool.connection() as db:
        [blob] = [row[0] for row in db.execute("SELECT blob FROM mailstore.summaries")]
        db.execute("DELETE FROM mailstore.summaries")
        db.execute("INSERT INTO mailstore.summaries VALUES (%s, %s" + ", %s" * len(STORED_ROW)
                   + ")", (blob, STORED_VERSION) + STORED_ROW)
    store.close()
    neverSummarize(monkeypatch)
    store = PostgreSQLStore(postgresqlPool)
    try:
        box = store.mailbox(USER)
        [info] = box.messages()
        assertReadAsStored(box.summaries([info.uid])[info.uid])
    finally:
        store.close()


def test_stores_load_without_the_imap_package():
    """
    If this fails, the message stores depend on the IMAP server's code
    again: a change to IMAP's formatting could change what the stores
    write, and the admin command and POP3 load IMAP for nothing.
    """
    code = ("import sys, pymailer.store.sqlite, pymailer.store.postgresql,"
            " pymailer.store.memory, pymailer.store.maildir;"
            " print(sorted(m for m in sys.modules if m.startswith('pymailer.imap')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=pathlib.Path(__file__).parent.parent)
    assert result.stdout.strip() == "[]"
