"""
The IMAP server end to end: a real twistd (imap with STARTTLS and imaps),
real clients (imaplib, IMAPClient, curl), and mail delivered over SMTP into
the same store.  Sync clients (mbsync, offlineimap) are in
L{test_imap_clients}, IMAPClient's own livetest in L{test_imap_livetest}.
"""

import email.utils
import imaplib
import shutil
import smtplib
import subprocess
import time

import pytest
from imapclient import IMAPClient

from imaplive import ALICE, BOB, IMAP_SERVER, client, deliver
from imapwire import Wire
from mailserver import PASSWORD, MailServer, insecureTLS, waitFor

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = MailServer(tmp_path_factory.mktemp("imap"), **IMAP_SERVER)
    s.provision()
    s.start()
    yield s
    s.stop()


def test_imaps_login_and_select(server):
    """A phone configured for port 993 (implicit TLS) logs in and opens INBOX."""
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True, ssl_context=insecureTLS())
    c.login(BOB, PASSWORD)
    info = c.select_folder("INBOX")
    assert b"UIDVALIDITY" in info
    c.logout()


def test_starttls_then_login_with_imaplib(server):
    """Thunderbird-style STARTTLS on 143 upgrades the session and then accepts the password."""
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    m.starttls(ssl_context=insecureTLS())
    assert "STARTTLS" not in m.capabilities
    assert m.login(BOB, PASSWORD)[0] == "OK"
    m.logout()


def test_wrong_password_refused(server):
    """A wrong password is refused (after the failure delay) and the right one still works."""
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    with pytest.raises(imaplib.IMAP4.error):
        m.login(BOB, "wrong")
    m.logout()


def test_bare_lf_ends_a_command_line_and_literals_stay_exact(server):
    """
    Lines ending in a bare LF (`openssl s_client` without -crlf) are
    answered as CRLF ones are, where the server used to wait for the CR
    in silence; an APPEND literal counted from after such a line is
    stored byte for byte (a lone LF and CRLF inside it kept), and FETCH
    gives the same octets back.
    """
    wire = Wire(server.ports["imap"], timeout=10)
    try:
        wire.sock.sendall(b"a1 NOOP\n")
        assert wire.readResponse().startswith(b"a1 OK")
        wire.sock.sendall(f'a2 LOGIN {BOB} "{PASSWORD}"\n'.encode())
        assert wire.readResponse().startswith(b"a2 OK")
        message = b"Subject: typed by hand\r\n\r\nline one\nline two\r\n"
        wire.sock.sendall(b"a3 APPEND Drafts {%d}\n" % len(message))
        assert wire.readResponse().startswith(b"+ ")
        wire.sock.sendall(message + b"\n")
        assert b"a3 OK" in wire.readResponse()
        wire.sock.sendall(b"a4 SELECT Drafts\r\n")
        while not (line := wire.readResponse()).startswith(b"a4 "):
            pass
        assert line.startswith(b"a4 OK")
        wire.sock.sendall(b"a5 FETCH * BODY.PEEK[]\n")
        fetched = wire.readResponse()
        assert fetched.endswith(b"{%d}\r\n" % len(message) + message + b")\r\n")
        assert wire.readResponse().startswith(b"a5 OK")
    finally:
        wire.close()


def test_smtp_delivery_fetch_flags_search(server):
    """Mail delivered by SMTP is listed, read, flagged and found by search."""
    deliver(server, ALICE, "fetchme", "the body text\r\n")
    server.waitQueueEmpty()
    c = client(server)
    c.select_folder("INBOX")
    uids = c.search(["SUBJECT", "fetchme"])
    assert len(uids) == 1
    uid = uids[0]
    data = c.fetch([uid], ["ENVELOPE", "BODY.PEEK[]", "RFC822.SIZE", "INTERNALDATE", "FLAGS",
                           "BODYSTRUCTURE"])[uid]
    assert data[b"ENVELOPE"].subject == b"fetchme"
    assert b"the body text" in data[b"BODY[]"]
    assert data[b"RFC822.SIZE"] == len(data[b"BODY[]"])
    assert b"\\Seen" not in data[b"FLAGS"]
    c.add_flags([uid], [b"\\Flagged", b"\\Seen"])
    assert set(c.get_flags([uid])[uid]) - {b"\\Recent"} == {b"\\Flagged", b"\\Seen"}
    assert uid in c.search(["FLAGGED", "BODY", "body text"])
    c.remove_flags([uid], [b"\\Flagged"])
    assert uid not in c.search(["FLAGGED"])
    c.logout()


def test_body_fetch_sets_seen(server):
    """Reading a message (BODY[] without PEEK) marks it read, as mail clients expect."""
    deliver(server, ALICE, "readme")
    server.waitQueueEmpty()
    c = client(server)
    c.select_folder("INBOX")
    uid = c.search(["SUBJECT", "readme"])[0]
    c.fetch([uid], ["BODY[]"])
    assert b"\\Seen" in c.get_flags([uid])[uid]
    c.logout()


def test_append_with_flags_and_date_then_uidplus(server):
    """A draft saved by the client keeps its flags and date, and the client learns its UID."""
    c = client(server)
    when = email.utils.parsedate_to_datetime("Mon, 02 Mar 2026 10:00:00 +0000")
    result = c.append("Drafts", b"Subject: draft\r\n\r\nx\r\n", flags=[b"\\Draft"], msg_time=when)
    assert b"APPENDUID" in result
    c.select_folder("Drafts")
    uid = int(result.split()[2].rstrip(b"]"))
    data = c.fetch([uid], ["FLAGS", "INTERNALDATE"])[uid]
    assert b"\\Draft" in data[b"FLAGS"]
    assert data[b"INTERNALDATE"].replace(tzinfo=None).date().isoformat() == "2026-03-02"
    c.logout()


def test_copy_expunge_close(server):
    """Copying to Archive, deleting and expunging leaves the archived copy and removes the original."""
    deliver(server, ALICE, "archiveme")
    server.waitQueueEmpty()
    c = client(server)
    c.select_folder("INBOX")
    uid = c.search(["SUBJECT", "archiveme"])[0]
    c.copy([uid], "Archive")
    c.delete_messages([uid])
    c.expunge()
    assert not c.search(["SUBJECT", "archiveme"])
    c.close_folder()
    c.select_folder("Archive", readonly=True)
    assert c.search(["SUBJECT", "archiveme"])
    c.logout()


def test_examine_is_read_only(server):
    """A mailbox opened with EXAMINE cannot be changed (the client asked for read-only)."""
    c = client(server)
    c.select_folder("INBOX", readonly=True)
    uids = c.search(["ALL"])
    if uids:
        with pytest.raises(IMAPClient.Error):
            c.add_flags(uids[:1], [b"\\Deleted"])
    c.logout()


def test_status_subscribe_lsub(server):
    """Folder counts (STATUS) and the subscribed-folder list work as clients use them."""
    c = client(server)
    status = c.folder_status("INBOX", ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"])
    assert set(status) >= {b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN"}
    c.subscribe_folder("Sent")
    assert "Sent" in [f[2] for f in c.list_sub_folders()]
    c.unsubscribe_folder("Sent")
    assert "Sent" not in [f[2] for f in c.list_sub_folders()]
    c.logout()


def test_create_rename_delete_and_list_wildcards(server):
    """Folders can be made, nested, renamed and removed; LIST % and * see the hierarchy."""
    c = client(server)
    c.create_folder("Projekte/Entwürfe")
    c.create_folder("Projekte")
    names = [f[2] for f in c.list_folders("", "Projekte/%")]
    assert names == ["Projekte/Entwürfe"]
    c.rename_folder("Projekte", "Work")
    names = [f[2] for f in c.list_folders("", "*")]
    assert "Work/Entwürfe" in names and "Projekte" not in names
    flags = {f[2]: f[0] for f in c.list_folders("", "%")}
    assert b"\\HasChildren" in flags["Work"]
    c.delete_folder("Work/Entwürfe")
    c.delete_folder("Work")
    assert "Work" not in [f[2] for f in c.list_folders()]
    c.logout()


def test_create_and_rename_refuse_wildcards_and_bidi_controls(server):
    """
    If this fails, a client can make a folder that LIST patterns cannot
    address (* and %) or one whose name displays as another (a right-to-left
    override, sent in modified UTF-7 or as UTF-8 after ENABLE UTF8=ACCEPT):
    CREATE and RENAME answer NO [CANNOT] (RFC 5530 3) and make nothing,
    while non-ASCII names in either form still work.
    """
    c = client(server, BOB)
    c.create_folder("Flip")
    before = sorted(f[2] for f in c.list_folders())
    for name in ("a*b", "50%", "invoice\u202egpj.exe", "x\u2067y", "line\u2028break"):
        with pytest.raises(IMAPClient.Error, match=r"\[CANNOT\]"):
            c.create_folder(name)  # non-ASCII in modified UTF-7 (RFC 3501 5.1.3)
        with pytest.raises(IMAPClient.Error, match=r"\[CANNOT\]"):
            c.rename_folder("Flip", name)
    assert sorted(f[2] for f in c.list_folders()) == before
    c.create_folder("Entwürfe/日本語")
    c.delete_folder("Entwürfe/日本語")
    c.logout()
    wire = Wire(server.ports["imap"])
    wire.command(f'LOGIN {BOB} "{PASSWORD}"')
    assert wire.command("ENABLE UTF8=ACCEPT")[1].split()[1] == b"OK"
    for name in ("invoice\u202egpj.exe", "a\u200fb"):
        _, tagged = wire.command(f'CREATE "{name}"'.encode())
        assert tagged.split()[1:3] == [b"NO", b"[CANNOT]"], tagged
    _, tagged = wire.command('CREATE "Черновики"'.encode())
    assert tagged.split()[1] == b"OK", tagged
    wire.command('DELETE "Черновики"'.encode())
    wire.close()


def test_rename_inbox_moves_messages(server):
    """RENAME INBOX moves the mail to the new folder and leaves INBOX empty (RFC 3501 6.3.5)."""
    deliver(server, BOB, "oldmail")
    server.waitQueueEmpty()
    c = client(server, BOB)
    c.rename_folder("INBOX", "Old")
    assert c.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0
    assert c.folder_status("Old", ["MESSAGES"])[b"MESSAGES"] >= 1
    c.logout()


def test_special_use_and_namespace_and_id(server):
    """Clients find Sent/Drafts/Trash/Junk/Archive by their SPECIAL-USE flags, and the namespace."""
    c = client(server)
    caps = c.capabilities()
    for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"ID", b"ENABLE", b"UNSELECT",
                b"SPECIAL-USE", b"LITERAL+", b"SASL-IR"):
        assert cap in caps
    assert c.find_special_folder(b"\\Sent") == "Sent"
    assert c.find_special_folder(b"\\Trash") == "Trash"
    assert c.find_special_folder(b"\\Junk") == "Junk"
    assert c.find_special_folder(b"\\Archive") == "Archive"
    ns = c.namespace()
    assert ns.personal[0][1] == "/"
    answer = c.id_({"name": "test"})
    answer = answer[0] if answer and isinstance(answer[0], tuple) else answer
    assert dict(zip(answer[::2], answer[1::2]))[b"name"] == b"pymailer"
    c.logout()


def test_unselect_keeps_deleted(server):
    """UNSELECT leaves a message marked deleted in place (unlike CLOSE)."""
    deliver(server, ALICE, "keepme")
    server.waitQueueEmpty()
    c = client(server)
    c.select_folder("INBOX")
    uid = c.search(["SUBJECT", "keepme"])[0]
    c.delete_messages([uid])
    c.unselect_folder()
    c.select_folder("INBOX")
    assert uid in c.search(["DELETED"])
    c.remove_flags([uid], [b"\\Deleted"])
    c.logout()


def test_idle_sees_smtp_delivery_within_a_second(server):
    """A client waiting in IDLE sees new mail from SMTP within 1 s, without polling."""
    c = client(server)
    c.select_folder("INBOX")
    c.idle()
    start = time.monotonic()
    deliver(server, ALICE, "idlemail")
    responses = []
    while time.monotonic() - start < 5 and not any(r[1] == b"EXISTS" for r in responses):
        responses += c.idle_check(timeout=1)
    elapsed = time.monotonic() - start
    c.idle_done()
    assert any(r[1] == b"EXISTS" for r in responses)
    assert elapsed < 1.0, f"EXISTS after {elapsed:.2f} s"
    c.logout()


def test_move_seen_as_expunge_by_other_session(server):
    """When one client moves a message away, another client in IDLE sees it disappear."""
    deliver(server, ALICE, "moveme")
    server.waitQueueEmpty()
    watcher, mover = client(server), client(server)
    watcher.select_folder("INBOX")
    mover.select_folder("INBOX")
    uid = mover.search(["SUBJECT", "moveme"])[0]
    watcher.idle()
    result = mover.move([uid], "Trash")
    responses = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(r[1] == b"EXPUNGE" for r in responses):
        responses += watcher.idle_check(timeout=1)
    watcher.idle_done()
    assert any(r[1] == b"EXPUNGE" for r in responses)
    assert result is None or b"COPYUID" in (result if isinstance(result, bytes) else b"COPYUID")
    mover.logout()
    watcher.logout()


def test_uid_expunge_only_named(server):
    """UID EXPUNGE (UIDPLUS) removes only the messages named, not every deleted one."""
    c = client(server)
    c.select_folder("INBOX")
    a = int(c.append("INBOX", b"Subject: ua\r\n\r\nx\r\n").split()[2].rstrip(b"]"))
    b = int(c.append("INBOX", b"Subject: ub\r\n\r\nx\r\n").split()[2].rstrip(b"]"))
    c.noop()
    c.delete_messages([a, b])
    c.uid_expunge([a])
    remaining = c.search(["DELETED"])
    assert b in remaining and a not in remaining
    c.logout()


def test_pipelined_imaplib_after_slow_select(server):
    """Commands pipelined behind a SELECT are answered in order (twisted #9282)."""
    import socket
    s = socket.create_connection(("127.0.0.1", server.ports["imap"]))
    f = s.makefile("rb")
    f.readline()
    s.sendall(f'a LOGIN {ALICE} "{PASSWORD}"\r\nb SELECT INBOX\r\nc NOOP\r\nd LOGOUT\r\n'.encode())
    tags = []
    while True:
        line = f.readline()
        if not line:
            break
        if line[:1] in b"abcd" and line[1:2] == b" ":
            tags.append(line[:1])
    assert tags == [b"a", b"b", b"c", b"d"]
    s.close()


def test_bad_names_refused_over_the_wire(server):
    """Traversal and non-canonical names never create a mailbox, nor anything outside the user's mailboxes."""
    c = client(server)
    for name in ["../evil", "/abs", "&AGE-"]:
        with pytest.raises(IMAPClient.Error):
            c._imap._simple_command("CREATE", '"' + name + '"') and c._checkok  # noqa
            typ, data = c._imap._untagged_response("OK", [None], "CREATE")
            raise IMAPClient.Error("refused" if typ != "OK" else "created")
    assert not [n for n in server.store().listMailboxes(ALICE) if "evil" in n or "abs" in n]
    assert not [p for p in server.dataDir.rglob("*evil*")]
    c.logout()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_lists_and_fetches(server):
    """curl imap:// lists the folders and downloads a message (scripts and monitoring use this)."""
    deliver(server, ALICE, "curlme", "curl body\r\n")
    server.waitQueueEmpty()
    base = f"imap://127.0.0.1:{server.ports['imap']}"
    user = f"{ALICE}:{PASSWORD}"
    out = subprocess.run(["curl", "-sS", "--user", user, base + "/"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "INBOX" in out.stdout and "Sent" in out.stdout
    c = client(server)
    c.select_folder("INBOX")
    uid = c.search(["SUBJECT", "curlme"])[0]
    c.logout()
    out = subprocess.run(["curl", "-sS", "--user", user, f"{base}/INBOX;UID={uid}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "curl body" in out.stdout


def test_large_unseen_message_fetched_whole_and_marked_seen(server):
    """
    A large (400 KB) unread message opened in a mail client arrives whole and
    becomes \\Seen: setting the flag renames the file, and the streamed body
    must not be lost with the old name.
    """
    body = "".join(f"line {n:06d} of a long message, padding padding padding\r\n"
                   for n in range(7000))
    reader = "dora@example.org"  # a mailbox of its own: other tests count theirs
    server.addUser(reader)
    deliver(server, reader, "large-unseen", body)
    c = client(server, reader)
    c.select_folder("INBOX")
    (uid,) = waitFor(lambda: c.search(["SUBJECT", "large-unseen"]), timeout=10,
                     message="the large message in INBOX")
    data = c.fetch([uid], ["BODY[]"])[uid][b"BODY[]"]
    assert data.endswith(body.encode())
    assert b"\\Seen" in c.get_flags([uid])[uid]
    assert c.noop()  # the session is still in step
    c.logout()


def test_condstore_sync_with_imapclient(server):
    """
    A phone syncing with CONDSTORE asks only for what changed since its last
    HIGHESTMODSEQ and gets exactly that; a flag change it makes on a message
    another device changed meanwhile is refused with [MODIFIED].
    """
    user = "erin@example.org"  # a mailbox of its own: other tests count theirs
    server.addUser(user)
    c = client(server, user)
    assert b"CONDSTORE" in c.capabilities()
    assert c.enable("CONDSTORE") == [b"CONDSTORE"]
    for n in range(3):
        c.append("INBOX", f"Subject: cs{n}\r\n\r\nx\r\n".encode())
    start = c.select_folder("INBOX")[b"HIGHESTMODSEQ"]
    first, second, third = c.search()
    c.add_flags([second], [b"\\Flagged"])
    changed = c.fetch(c.search(), ["FLAGS"], modifiers=[f"CHANGEDSINCE {start}"])
    assert list(changed) == [second]
    modseq = changed[second][b"MODSEQ"][0]
    assert modseq > start and b"\\Flagged" in changed[second][b"FLAGS"]
    found = c.search(["MODSEQ", str(start + 1)])
    assert found == [second] and found.modseq == modseq
    assert c.folder_status("INBOX", ["HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"] == modseq
    other = client(server, user)
    other.select_folder("INBOX")
    other.add_flags([third], [b"\\Seen"])
    other.logout()
    wire = Wire(server.ports["imap"])
    wire.command(f'LOGIN {user} "{PASSWORD}"')
    wire.command("SELECT INBOX")
    _, tagged = wire.command(f"UID STORE {first}:{third} (UNCHANGEDSINCE {modseq}) +FLAGS (\\Deleted)")
    assert f"OK [MODIFIED {third}]".encode() in tagged
    wire.close()
    flags = c.get_flags([first, second, third])
    assert b"\\Deleted" in flags[first] and b"\\Deleted" in flags[second]
    assert b"\\Deleted" not in flags[third]
    c.logout()


def test_modseqs_survive_server_restart(makeMailServer):
    """If this fails, after a server restart CONDSTORE clients see HIGHESTMODSEQ go back and miss changes, or resync everything."""
    s = makeMailServer(**IMAP_SERVER)
    c = client(s)
    c.append("INBOX", b"Subject: r\r\n\r\nx\r\n")
    c.select_folder("INBOX")
    c.add_flags(c.search(), [b"\\Answered"])
    before = c.fetch(c.search(), ["MODSEQ"])
    highest = c.folder_status("INBOX", ["HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"]
    c.logout()
    s.stop()
    s.start()
    c = client(s)
    assert c.select_folder("INBOX")[b"HIGHESTMODSEQ"] == highest
    assert c.fetch(c.search(), ["MODSEQ"]) == before
    c.logout()


def test_deeply_nested_message_leaves_search_working(server):
    """
    After anyone sends a message nested 2,000 multiparts deep, the
    recipient's mail client still searches the INBOX (and finds the words
    in that message too): it got NO [SERVERBUG] for every text search, and
    the server logged a RecursionError each time.
    """
    from test_imap_hostile import deeplyNested
    with smtplib.SMTP("127.0.0.1", server.port) as s:
        s.sendmail("deep@example.net", [BOB], deeplyNested())
    server.waitQueueEmpty()
    c = client(server, BOB)
    c.select_folder("INBOX", readonly=True)
    [found] = c.search(["TEXT", "needle"])
    assert c.fetch([found], ["ENVELOPE"])[found][b"ENVELOPE"].subject == b"nested"
    c.logout()
    assert "Traceback" not in server.log()
