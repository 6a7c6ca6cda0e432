"""
NOTIFY (RFC 5465) through the protocol, from the RFC's examples: a client
hears of new mail, expunges and flag changes in other folders as STATUS,
of folders created, deleted, renamed and (un)subscribed as LIST, and of
new mail in the selected folder with the attributes it asked for, without
polling; and the RFC's refusals (BAD, BADEVENT, NOTIFICATIONOVERFLOW).
"""

import io
import re

import pytest

from imapharness import BACKENDS, Client, backendClient
from pymailer.imap import notify

BODY = b"Subject: Re: good morning\r\nFrom: alice@example.org\r\nTo: bob@example.org\r\n\r\nhi\r\n"


@pytest.fixture(params=BACKENDS)
def client(request, tmp_path):
    return backendClient(request.param, tmp_path)


def other(client):
    """A second session of the same user on the same store (session B)."""
    b = Client(factory=client.factory)
    b.login()
    return b


def test_capability(client):
    """A client uses NOTIFY only if CAPABILITY lists it."""
    assert b"NOTIFY" in client.send(b"c CAPABILITY\r\n").split(b"\r\n")[0].split()


def test_rfc5465_example(client):
    """RFC 5465 3.1's example (with the grammar's parentheses): STATUS for the watched folders at once, then
    a STATUS when mail arrives in one, and the asked-for FETCH (UID and
    headers) when mail arrives in the selected INBOX; if this fails, a
    NOTIFY client does not see new mail until it polls."""
    client.send(b"x CREATE Lists\r\n")
    client.send(b"x CREATE Lists/Lemonade\r\n")
    client.deliver(b"Subject: old\r\n\r\n", "Lists/Lemonade")
    # The RFC's example leaves out the parentheses its grammar (8) puts
    # around the events: "(selected (MessageNew (...) MessageExpunge))".
    out = client.send(b"b notify set status (selected (MessageNew (uid "
                      b"body.peek[header.fields (from to subject)]) MessageExpunge)) "
                      b"(subtree Lists (MessageNew))\r\n")
    assert re.search(rb'\* STATUS "Lists/Lemonade" \(UIDVALIDITY \d+ UIDNEXT 2 MESSAGES 1\)\r\n',
                     out), out
    assert b'* STATUS "Lists" (UIDVALIDITY' in out and out.endswith(b"b OK NOTIFY completed\r\n")
    assert b"INBOX" not in out  # not watched by the subtree
    client.send(b"c select inbox\r\n")
    client.deliver(BODY, "Lists/Lemonade")
    assert client.read() == b'* STATUS "Lists/Lemonade" (UIDNEXT 3 MESSAGES 2)\r\n'
    client.deliver(BODY)
    assert client.read() == (
        b"* 1 EXISTS\r\n* 1 RECENT\r\n"
        b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM TO SUBJECT)] {75}\r\n"
        b"Subject: Re: good morning\r\nFrom: alice@example.org\r\nTo: bob@example.org\r\n\r\n)\r\n")
    client.deliver(BODY, "Trash")  # not watched
    assert client.read() == b""


def test_message_events_in_another_session(client):
    """RFC 5465 5.1-5.3: an expunge and a flag change in a watched folder
    made by session B reach session A as STATUS; if this fails, a NOTIFY
    client's folder counts go stale."""
    client.deliver(b"Subject: a\r\n\r\n", "Archive")
    client.send(b"n NOTIFY SET (mailboxes Archive (MessageNew MessageExpunge FlagChange))\r\n")
    b = other(client)
    b.send(b"s SELECT Archive\r\n")
    b.send(b"f STORE 1 +FLAGS (\\Seen)\r\n")
    assert client.read() == b'* STATUS "Archive" (UIDNEXT 2 MESSAGES 1 UNSEEN 0)\r\n'
    b.send(b"f STORE 1 +FLAGS (\\Deleted)\r\n")  # UNSEEN unchanged: nothing to tell
    assert client.read() == b""
    b.send(b"e EXPUNGE\r\n")
    assert client.read() == b'* STATUS "Archive" (UIDNEXT 2 MESSAGES 0 UNSEEN 0)\r\n'


def test_condstore_status_has_highestmodseq(client):
    """RFC 5465 5.1: with CONDSTORE on, a flag change elsewhere is told
    with HIGHESTMODSEQ, which a CONDSTORE client resyncs from."""
    client.deliver(b"Subject: a\r\n\r\n", "Archive")
    client.send(b"e ENABLE CONDSTORE\r\n")
    client.send(b"n NOTIFY SET (personal (MessageNew MessageExpunge FlagChange))\r\n")
    b = other(client)
    b.send(b"s SELECT Archive\r\n")
    b.send(b"f STORE 1 +FLAGS (\\Flagged)\r\n")
    assert re.fullmatch(rb'\* STATUS "Archive" \(UIDNEXT 2 MESSAGES 1 UNSEEN 1 '
                        rb'HIGHESTMODSEQ \d+\)\r\n', client.read())


def test_mailbox_name_and_subscription_change(client):
    """RFC 5465 5.4, 5.5: folders created, renamed and deleted by session B,
    and subscriptions it changed, reach session A as LIST (with OLDNAME,
    \\NonExistent, \\Subscribed); A's own changes are not echoed back."""
    client.send(b"n NOTIFY SET (personal (MailboxName SubscriptionChange))\r\n")
    b = other(client)
    b.send(b"c CREATE NewMailbox\r\n")
    assert client.read() == b'* LIST () "/" "NewMailbox"\r\n'
    b.send(b"r RENAME NewMailbox Renamed\r\n")
    assert client.read() == b'* LIST () "/" "Renamed" ("OLDNAME" ("NewMailbox"))\r\n'
    b.send(b"s SUBSCRIBE Renamed\r\n")
    assert client.read() == b'* LIST (\\Subscribed) "/" "Renamed"\r\n'
    b.send(b"u UNSUBSCRIBE Renamed\r\n")
    assert client.read() == b'* LIST () "/" "Renamed"\r\n'
    b.send(b"d DELETE Renamed\r\n")
    assert client.read() == b'* LIST (\\NonExistent) "/" "Renamed"\r\n'
    out = client.send(b"c CREATE Mine\r\n")
    assert out.startswith(b"c OK") and b"LIST" not in out
    assert client.send(b"d DELETE Mine\r\n") == b"d OK DELETE completed\r\n"


def test_selected_delayed_holds_expunge(client):
    """RFC 5465 6.1.2: with SELECTED-DELAYED an expunge by session B waits
    for a command that allows it (a client using sequence numbers keeps
    them valid), while SELECTED tells it at once."""
    for _ in range(2):
        client.deliver()
    client.send(b"s SELECT INBOX\r\n")
    client.send(b"n NOTIFY SET (selected-delayed (MessageNew MessageExpunge FlagChange))\r\n")
    b = other(client)
    b.send(b"s SELECT INBOX\r\n")
    b.send(b"f STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    # 5.1: an unsolicited FETCH with UID and FLAGS.
    assert client.read() == b"* 1 FETCH (FLAGS (\\Deleted \\Recent) UID 1)\r\n"
    b.send(b"e EXPUNGE\r\n")
    assert client.read() == b""
    assert client.send(b"o NOOP\r\n") == b"* 1 EXPUNGE\r\no OK NOOP completed\r\n"
    client.send(b"n NOTIFY SET (selected (MessageNew MessageExpunge))\r\n")
    b.send(b"f STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    client.read()  # the flag change (told as part of the session's view)
    b.send(b"e EXPUNGE\r\n")
    assert client.read() == b"* 1 EXPUNGE\r\n"


def test_notify_none_and_idle(client):
    """RFC 5465 3.1, 4: after NOTIFY NONE nothing more is told; in IDLE,
    NOTIFY's events are what is sent (new mail elsewhere as STATUS)."""
    client.send(b"n NOTIFY SET (personal (MessageNew MessageExpunge))\r\n")
    client.send(b"i IDLE\r\n")
    client.deliver(b"Subject: x\r\n\r\n", "Sent")
    assert client.read() == b'* STATUS "Sent" (UIDNEXT 2 MESSAGES 1)\r\n'
    assert client.send(b"DONE\r\n") == b"i OK IDLE terminated\r\n"
    assert client.send(b"n NOTIFY NONE\r\n") == b"n OK NOTIFY completed\r\n"
    client.deliver(b"Subject: x\r\n\r\n", "Sent")
    assert client.read() == b""


@pytest.mark.parametrize("command", [
    b"n NOTIFY SET (selected (MailboxName))",                  # 6.1: message events only
    b"n NOTIFY SET (personal (FlagChange))",                   # 5: FlagChange needs both
    b"n NOTIFY SET (personal (MessageNew (UID) MessageExpunge))",  # 8: fetch-att for SELECTED
    b"n NOTIFY SET (selected (MessageNew)) (selected-delayed (MessageNew))",  # 6.1: one only
    b"n NOTIFY SET (somewhere (MessageNew))",
    b"n NOTIFY SET",
    b"n NOTIFY",
])
def test_bad_requests(client, command):
    """RFC 5465 5, 6.1, 8: malformed NOTIFY commands are BAD."""
    assert client.send(command + b"\r\n").startswith(b"n BAD")


def test_badevent(client):
    """RFC 5465 3.1: an unsupported event is NO with BADEVENT listing the
    events we support."""
    out = client.send(b"n NOTIFY SET (personal (MessageNew MessageExpunge AnnotationChange))\r\n")
    assert out == (b"n NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName"
                   b" SubscriptionChange)] Unsupported NOTIFY event\r\n")


def test_notificationoverflow(client, monkeypatch):
    """RFC 5465 3.1, 5.8: watching too many folders is refused with
    NOTIFICATIONOVERFLOW, and too many changes piling up while a command
    runs turn notifications off with an untagged NOTIFICATIONOVERFLOW."""
    monkeypatch.setattr(notify, "MAX_WATCHED", 2)
    out = client.send(b"n NOTIFY SET (personal (MessageNew MessageExpunge))\r\n")
    assert out == b"n NO [NOTIFICATIONOVERFLOW] Too many mailboxes to watch\r\n"
    monkeypatch.setattr(notify, "MAX_WATCHED", 100)
    monkeypatch.setattr(notify, "MAX_QUEUED", 2)
    client.send(b"n NOTIFY SET (personal (MessageNew MessageExpunge))\r\n")
    server = client.protocol
    server._busy = True  # as if a command were running: lines wait for its end
    for name in ("Sent", "Drafts", "Junk"):
        client.deliver(b"Subject: x\r\n\r\n", name)
    assert client.read() == b""
    server._busy = False
    server.notify.idle()  # what the end of the command does
    assert client.read() == b"* OK [NOTIFICATIONOVERFLOW] Too many changes, NOTIFY is off\r\n"
    assert server.notify is None
    client.deliver(b"Subject: x\r\n\r\n", "Sent")
    assert client.read() == b""


def test_idle_with_selected_pushes_new_mail_with_attributes(client):
    """RFC 5465 4, 5.2: in IDLE with NOTIFY SET (selected ...), new mail in
    the selected folder comes as EXISTS and the asked-for FETCH; without
    SELECTED, IDLE says nothing of the selected folder until DONE."""
    client.send(b"s SELECT INBOX\r\n")
    client.send(b"n NOTIFY SET (selected (MessageNew (UID FLAGS) MessageExpunge))\r\n")
    client.send(b"i IDLE\r\n")
    client.deliver()
    assert client.read() == (b"* 1 EXISTS\r\n* 1 RECENT\r\n"
                             b"* 1 FETCH (UID 1 FLAGS (\\Recent))\r\n")
    assert client.send(b"DONE\r\n") == b"i OK IDLE terminated\r\n"
    client.send(b"n NOTIFY SET (personal (MessageNew MessageExpunge))\r\n")
    client.send(b"i IDLE\r\n")
    client.deliver()
    assert client.read() == b""
    # The end of the command brings the selected folder up to date (RFC
    # 3501 7.4.1), as without NOTIFY.
    assert client.send(b"DONE\r\n").endswith(b"* 2 EXISTS\r\n* 2 RECENT\r\ni OK IDLE terminated\r\n")


def test_changes_from_another_process_reach_the_account(tmp_path):
    """If this fails, a NOTIFY client connected to one server process is
    not told of mail another process (a second worker, the admin command)
    delivered: the cross-process poll must reach account subscribers."""
    from imapharness import ImmediateReactor, InlinePool
    from pymailer.store.notify import ChangeNotifier
    from pymailer.store.sqlite import SQLiteStore

    here, there = SQLiteStore(tmp_path / "store"), SQLiteStore(tmp_path / "store")
    notifier = ChangeNotifier(here, ImmediateReactor(), InlinePool())
    heard = []
    notifier.subscribeAccount("a@example.org", heard.append)
    notifier._poll()  # the cursor starts now
    there.deliver("a@example.org", b"", io.BytesIO(b"x"), mailbox="Sent")
    notifier._poll()
    assert "Sent" in heard
    notifier.unsubscribeAccount("a@example.org", heard.append)
    there.deliver("a@example.org", b"", io.BytesIO(b"x"))
    notifier._poll()
    assert "INBOX" not in heard


def test_subscribed_filter_follows_subscriptions(client):
    """RFC 5465 6.4, 6.6: SUBSCRIBED watches the folders subscribed now
    (re-evaluated when subscriptions change) and MAILBOXES the ones named,
    without wildcard expansion; if this fails, a client watching its
    subscribed folders misses mail in one it just subscribed to."""
    client.send(b"s SUBSCRIBE Sent\r\n")
    client.send(b"n NOTIFY SET (subscribed (MessageNew MessageExpunge))"
                b" (mailboxes (Drafts Jun*) (MessageNew MessageExpunge))\r\n")
    client.deliver(b"Subject: x\r\n\r\n", "Sent")
    assert client.read() == b'* STATUS "Sent" (UIDNEXT 2 MESSAGES 1)\r\n'
    client.deliver(b"Subject: x\r\n\r\n", "Trash")
    client.deliver(b"Subject: x\r\n\r\n", "Junk")  # "Jun*" is a name, not a pattern
    assert client.read() == b""
    client.deliver(b"Subject: x\r\n\r\n", "Drafts")
    assert client.read() == b'* STATUS "Drafts" (UIDNEXT 2 MESSAGES 1)\r\n'
    other(client).send(b"s SUBSCRIBE Trash\r\n")
    # Newly watched: where it stands, UIDVALIDITY included (the client has none).
    assert re.fullmatch(rb'\* STATUS "Trash" \(UIDVALIDITY \d+ UIDNEXT 2 MESSAGES 1\)\r\n',
                        client.read())
    client.deliver(b"Subject: x\r\n\r\n", "Trash")
    assert client.read() == b'* STATUS "Trash" (UIDNEXT 3 MESSAGES 2)\r\n'


def test_inboxes_is_every_folder(client):
    """RFC 5465 6.3: INBOXES is every folder mail may be delivered to; as
    delivery files into any folder (Junk by the spam filter, others by
    rules), it is taken as PERSONAL, as 6.3 asks when the set is not known."""
    client.send(b"n NOTIFY SET (inboxes (MessageNew MessageExpunge))\r\n")
    client.deliver(b"Subject: x\r\n\r\n", "Junk")
    assert client.read() == b'* STATUS "Junk" (UIDNEXT 2 MESSAGES 1)\r\n'


def test_created_mailbox_is_opened_once(tmp_path, monkeypatch):
    """RFC 5465 5.4, 5.1: a folder created by session B reaches session A
    as LIST and STATUS from one open of the new folder, not one for its
    MAILBOXID and another for its numbers; if this fails, every folder
    created costs each user's NOTIFY look twice the store work."""
    client = Client(tmp_path, secure=True, shareRefresh=True)
    client.login()
    client.send(b"n NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))\r\n")
    b = other(client)
    b.send(b"c CREATE Projects\r\n")  # A's look waits for the next turn
    store = client.factory.store
    opened = []
    mailbox = store.mailbox

    def counting(user, name):
        opened.append(name)
        return mailbox(user, name)

    monkeypatch.setattr(store, "mailbox", counting)
    client.factory.clock.advance(0)
    client.factory.clock.advance(1)  # the garbage collector back on (fanout)
    out = client.read()
    assert out.startswith(b'* LIST () "/" "Projects"\r\n* STATUS "Projects" (UIDVALIDITY '), out
    assert opened == ["Projects"]
