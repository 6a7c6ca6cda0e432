"""
Per-user storage quotas (issue 18): the limit from the accounts directory,
the usage from the store, and their enforcement: SMTP RCPT (452 4.2.2),
IMAP APPEND/MULTIAPPEND/COPY (NO [OVERQUOTA]) and the QUOTA commands of
RFC 9208, through the real protocol code on in-memory transports.
"""

import io

import pytest

from imapharness import USER, Client as IMAPClient
from pymailer.quota import OverQuota, QuotaState, Quotas
from pymailer.sizes import formatSize, parseSize
from pymailer.store.memory import MemoryStore
from pymailer.testing import MemoryDirectory
from test_smtp_server import Client as SMTPClient, assertReply

ALICE = USER.decode()


class Directory(MemoryDirectory):
    """A directory whose admins are named."""

    def __init__(self, admins=(), **kw):
        MemoryDirectory.__init__(self, **kw)
        self.admins = set(admins)

    def isAdmin(self, address):
        return address in self.admins


def quotasFor(store, limits, admins=()):
    directory = Directory(domains=["example.org"], users=list(limits), admins=admins)
    for user, limit in limits.items():
        directory.setQuota(user, limit)
    return Quotas(directory, store)


# -- sizes and the judgement -------------------------------------------------

@pytest.mark.parametrize("text, octets", [
    ("500M", 500 * 1024 ** 2), ("2G", 2 * 1024 ** 3), ("100k", 102400), ("1024", 1024),
    ("2GiB", 2 * 1024 ** 3), ("10KB", 10240), (" 7 ", 7)])
def test_parseSize(text, octets):
    """If this fails, `pymailer user quota bob 500M` sets another limit than the admin typed."""
    assert parseSize(text) == octets


@pytest.mark.parametrize("text", ["", "M", "-5M", "1.5G", "5X", "lots", "²"])
def test_parseSizeRefuses(text):
    """If this fails, a typo sets a nonsense quota instead of an error."""
    with pytest.raises(ValueError):
        parseSize(text)


def test_formatSize():
    """If this fails, user list shows sizes people cannot read."""
    assert formatSize(1536) == "1.5 KiB" and formatSize(5 * 1024 ** 3) == "5.0 GiB"


def test_stateFits():
    """If this fails, a mailbox exactly at its limit takes more mail, or one
    with room refuses a message that fits."""
    assert QuotaState(None, 10 ** 12).fits(10 ** 9)
    assert QuotaState(100, 60).fits(40)
    assert not QuotaState(100, 60).fits(41)
    assert QuotaState(100, 99).fits(0)       # unknown size: room is left
    assert not QuotaState(100, 100).fits(0)  # full: nothing more


def test_quotasReadStoreUsage():
    """If this fails, the limit is judged against a wrong usage: the store's
    total over every folder is what counts."""
    store = MemoryStore()
    quotas = quotasFor(store, {ALICE: 10})
    store.deliver(ALICE, b"", io.BytesIO(b"123456"), "Archive")
    assert quotas.check(ALICE, 4) == QuotaState(10, 6)
    with pytest.raises(OverQuota):
        quotas.check(ALICE, 5)
    assert quotas.state("bob@example.org") == QuotaState(None, 0)


# -- SMTP: 452 4.2.2 at RCPT ------------------------------------------------

def smtpWithQuota(usage, limit, aliases=False):
    c = SMTPClient()
    store = MemoryStore()
    if usage:
        store.deliver("alice@example.org", b"", io.BytesIO(b"x" * usage))
    c.intake.quotas = Quotas(c.directory, store)
    c.directory.setQuota("alice@example.org", limit)
    c.ehlo()
    return c


def test_rcptToFullMailbox452():
    """A sender's server trying to deliver to a full mailbox gets 452 4.2.2
    at RCPT, keeps the message and retries later; other recipients of the
    same transaction still get theirs."""
    c = smtpWithQuota(100, 100)
    assert c.one("MAIL FROM:<s@remote.test>\r\n")[0] == 250
    reply = c.one("RCPT TO:<alice@example.org>\r\n")
    assertReply(reply, 452, "4.2.2")
    assert "Mailbox full" in reply[1][0]
    assertReply(c.one("RCPT TO:<bob@example.org>\r\n"), 250, "2.1.5")


def test_rcptUsesDeclaredSize():
    """If this fails, a message declared (MAIL FROM SIZE=) too large for the
    room left is accepted and overfills the mailbox, or one that fits is
    refused."""
    c = smtpWithQuota(60, 100)
    assert c.one("MAIL FROM:<s@remote.test> SIZE=41\r\n")[0] == 250
    assertReply(c.one("RCPT TO:<alice@example.org>\r\n"), 452, "4.2.2")
    assert c.one("RSET\r\n")[0] == 250
    assert c.one("MAIL FROM:<s@remote.test> SIZE=40\r\n")[0] == 250
    assertReply(c.one("RCPT TO:<alice@example.org>\r\n"), 250, "2.1.5")
    assert c.one("RSET\r\n")[0] == 250
    assert c.one("MAIL FROM:<s@remote.test>\r\n")[0] == 250  # size unknown: room left
    assertReply(c.one("RCPT TO:<alice@example.org>\r\n"), 250, "2.1.5")


def test_aliasWithOneFullMailboxAccepted():
    """If this fails, one full mailbox behind an alias makes mail to the
    whole team bounce back after retries; the others must get it."""
    c = smtpWithQuota(100, 100)
    assert c.one("MAIL FROM:<s@remote.test>\r\n")[0] == 250
    assertReply(c.one("RCPT TO:<team@example.org>\r\n"), 250, "2.1.5")


def test_noLimitNoStoreQuery():
    """If this fails, every delivery to a user without a limit costs a
    usage query over all their mail."""
    c = SMTPClient()

    class Refusing(MemoryStore):
        def usage(self, user):
            raise AssertionError("usage asked without a limit")

    c.intake.quotas = Quotas(c.directory, Refusing())
    c.ehlo()
    assert c.one("MAIL FROM:<s@remote.test>\r\n")[0] == 250
    assertReply(c.one("RCPT TO:<alice@example.org>\r\n"), 250, "2.1.5")


class CountingStore(MemoryStore):
    """A store that counts its usage queries (each a sum over a user's mail)."""

    def __init__(self):
        MemoryStore.__init__(self)
        self.usageReads = []

    def usage(self, user):
        self.usageReads.append(user)
        return MemoryStore.usage(self, user)


@pytest.mark.parametrize("limits, reads", [
    ({"alice@example.org": 100, "bob@example.org": 100}, 1),  # the first has room
    ({"alice@example.org": 100, "bob@example.org": None}, 0),  # bob: no limit
])
def test_aliasReadsUsageOnlyUntilOneHasRoom(limits, reads):
    """If this fails, every RCPT to an alias of many users with quotas
    costs a usage query per user (a sum over all their mail), where the
    first mailbox with room already decides that the mail is accepted."""
    c = SMTPClient()
    store = CountingStore()
    c.intake.quotas = Quotas(c.directory, store)
    for user, limit in limits.items():
        c.directory.setQuota(user, limit)
    c.ehlo()
    assert c.one("MAIL FROM:<s@remote.test>\r\n")[0] == 250
    assertReply(c.one("RCPT TO:<team@example.org>\r\n"), 250, "2.1.5")
    assert len(store.usageReads) == reads


# -- IMAP: QUOTA commands and OVERQUOTA -------------------------------------

@pytest.fixture
def store():
    return MemoryStore()


def imap(tmp_path, store, limit, admin=False):
    quotas = quotasFor(store, {ALICE: limit}, admins=[ALICE] if admin else [])
    c = IMAPClient(tmp_path, secure=True, store=store, quotas=quotas)
    c.login()
    return c


def test_capabilities(tmp_path, store):
    """A client sees QUOTA, QUOTA=RES-STORAGE and QUOTASET, so it may ask."""
    caps = imap(tmp_path, store, 1024).send(b"c CAPABILITY\r\n").split(b"\r\n")[0].split()
    assert {b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTASET"} <= set(caps)


def test_noQuotasNoCapabilities(tmp_path):
    """A server without quotas does not advertise them (and refuses the commands)."""
    c = IMAPClient(tmp_path, secure=True)
    c.login()
    assert b"QUOTA" not in c.send(b"c CAPABILITY\r\n")
    assert b"g NO " in c.send(b"g GETQUOTAROOT INBOX\r\n")


def test_getquotaroot_rfc9208_example(tmp_path, store):
    """RFC 9208's GETQUOTAROOT example: the client learns the root of INBOX
    and its STORAGE use and limit, in KiB (a new user: usage 0)."""
    c = imap(tmp_path, store, 512 * 1024)
    out = c.send(b"A003 GETQUOTAROOT INBOX\r\n")
    assert out == (b'* QUOTAROOT "INBOX" ""\r\n* QUOTA "" (STORAGE 0 512)\r\n'
                   b"A003 OK GETQUOTAROOT completed\r\n")
    c.deliver(b"x" * 1500, "Sent")
    assert b'* QUOTA "" (STORAGE 2 512)' in c.send(b"A004 GETQUOTA \"\"\r\n")
    assert b"NONEXISTENT" in c.send(b"A005 GETQUOTAROOT Nowhere\r\n")
    assert b"A006 NO [NONEXISTENT]" in c.send(b'A006 GETQUOTA "other"\r\n')


def test_noLimitNoRoot(tmp_path, store):
    """A user without a limit is told INBOX has no quota root, not a fake limit."""
    c = imap(tmp_path, store, None)
    out = c.send(b"a GETQUOTAROOT INBOX\r\n")
    assert out == b'* QUOTAROOT "INBOX"\r\na OK GETQUOTAROOT completed\r\n'
    assert b"a NO [NONEXISTENT]" in c.send(b'a GETQUOTA ""\r\n')


def test_setquota_adminOnly(tmp_path, store):
    """A user cannot raise their own limit with SETQUOTA (NO [NOPERM]);
    an admin can (RFC 9208 SETQUOTA example)."""
    c = imap(tmp_path, store, 1024)
    assert b"a NO [NOPERM]" in c.send(b'a SETQUOTA "" (STORAGE 999999)\r\n')
    assert store.usage(ALICE) == 0 and c.factory.quotas.state(ALICE).limit == 1024
    admin = IMAPClient(tmp_path, secure=True, store=store,
                       quotas=quotasFor(store, {ALICE: 1024}, admins=[ALICE]))
    admin.login()
    out = admin.send(b'A001 SETQUOTA "" (STORAGE 512)\r\n')
    assert out == b'* QUOTA "" (STORAGE 0 512)\r\nA001 OK SETQUOTA completed\r\n'
    assert b"b NO [CANNOT]" in admin.send(b'b SETQUOTA "" (MESSAGE 10)\r\n')
    assert b"c BAD" in admin.send(b'c SETQUOTA "" (STORAGE)\r\n')
    assert admin.send(b'd SETQUOTA "" ()\r\n') == b"d OK SETQUOTA completed\r\n"
    assert admin.factory.quotas.state(ALICE).limit is None


def test_appendOverQuota(tmp_path, store):
    """An APPEND that would overfill the mailbox is refused with NO
    [OVERQUOTA] before the upload, and stores nothing; one that fits works."""
    c = imap(tmp_path, store, 100)
    out = c.send(b"a APPEND INBOX {101}\r\n")
    assert out.startswith(b"a NO [OVERQUOTA]"), out
    out = c.send(b"b APPEND INBOX {60}\r\n")
    assert out.startswith(b"+ ")
    assert b"b OK [APPENDUID" in c.send(b"x" * 60 + b"\r\n")
    # Each literal fits alone, not both: MULTIAPPEND stores neither.
    out = c.send(b"c APPEND INBOX {30+}\r\n" + b"y" * 30 + b" {30+}\r\n" + b"z" * 30 + b"\r\n")
    assert out.startswith(b"c NO [OVERQUOTA]"), out
    assert store.usage(ALICE) == 60
    # A LITERAL+ message over the limit is read and dropped, then refused.
    out = c.send(b"d APPEND INBOX {200+}\r\n" + b"w" * 200 + b"\r\ne NOOP\r\n")
    assert out.startswith(b"d NO [OVERQUOTA]") and b"e OK" in out


def test_copyOverQuotaMoveNot(tmp_path, store):
    """COPY takes room and is refused when it would overfill; MOVE takes
    none and works even in a full mailbox, and expunging makes room."""
    c = imap(tmp_path, store, 100)
    c.deliver(b"x" * 60)
    c.send(b"s SELECT INBOX\r\n")
    assert b"a NO [OVERQUOTA]" in c.send(b"a COPY 1 Archive\r\n")
    assert b"b OK" in c.send(b"b MOVE 1 Archive\r\n")
    assert store.usage(ALICE) == 60
    c.send(b"s SELECT Archive\r\n")
    c.send(b"d STORE 1 +FLAGS (\\Deleted)\r\n")
    assert b"e OK" in c.send(b"e EXPUNGE\r\n")
    assert b"f OK [APPENDUID" in c.send(b"f APPEND INBOX {90+}\r\n" + b"y" * 90 + b"\r\n")


def test_statusDeletedStorage(tmp_path, store):
    """STATUS (DELETED-STORAGE) tells a client how much an EXPUNGE would
    free, in KiB, so it can offer to empty the trash to make room."""
    c = imap(tmp_path, store, 100 * 1024)
    for body in (b"a" * 3000, b"b" * 10):
        c.deliver(body, "Trash")
    c.send(b"s SELECT Trash\r\n")
    c.send(b"f STORE 1 +FLAGS (\\Deleted)\r\n")
    out = c.send(b"a STATUS Trash (DELETED DELETED-STORAGE)\r\n")
    assert b'* STATUS "Trash" (DELETED 1 DELETED-STORAGE 3)' in out


def test_catenateCountsBuiltSize(tmp_path, store):
    """A CATENATE APPEND is judged by the size of the message it builds: a
    URL copy of a large message cannot slip past the quota."""
    c = imap(tmp_path, store, 100)
    c.deliver(b"x" * 60)
    out = c.send(b'a APPEND Drafts CATENATE (URL "/INBOX/;UID=1")\r\n')
    assert out.startswith(b"a NO [OVERQUOTA]"), out
    assert store.usage(ALICE) == 60
