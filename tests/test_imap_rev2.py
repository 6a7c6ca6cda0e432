"""
IMAP4rev2 (RFC 9051) next to IMAP4rev1, UTF8=ACCEPT (RFC 6855) and LITERAL-
(RFC 7888) at the protocol level, from the RFCs' examples, with the
harness of L{imapharness}.
"""

import pytest

from imapharness import Client, backendClient, loggedIn

CAFE_NFC = "Caf\u00e9".encode()
CAFE_NFD = "Cafe\u0301".encode()


@pytest.fixture
def client(tmp_path):
    """A logged-in session; INBOX has two new (\\Recent) messages."""
    c = loggedIn(tmp_path, b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n")
    return c


def test_capabilities_offer_rev2_next_to_rev1(client):
    """If this fails, an IMAP4rev2 client (or one wanting UTF-8 names) falls back to IMAP4rev1."""
    caps = client.send(b"c CAPABILITY\r\n").split(b"\r\n")[0].split()
    for cap in (b"IMAP4rev1", b"IMAP4rev2", b"LITERAL+", b"LITERAL-", b"UTF8=ACCEPT"):
        assert cap in caps


def test_enable_imap4rev2_is_confirmed(client):
    """RFC 9051 6.3.1: if this fails, the client cannot tell that the server switched to IMAP4rev2."""
    out = client.send(b"t1 ENABLE IMAP4rev2\r\n")
    assert out == b"* ENABLED IMAP4rev2\r\nt1 OK ENABLE completed\r\n"


def test_rev1_select_is_unchanged(client):
    """If this fails, IMAP4rev1 clients (mbsync, offlineimap) lose RECENT and UNSEEN."""
    out = client.send(b"s SELECT INBOX\r\n")
    assert b"* 2 RECENT\r\n" in out and b"* OK [UNSEEN 1]" in out and b"* LIST" not in out
    assert b"\\Recent" in client.send(b"f FETCH 1 FLAGS\r\n")
    assert client.send(b"x SEARCH ALL\r\n").startswith(b"* SEARCH 1 2\r\n")


def test_rev2_select_has_list_and_no_recent(client):
    """
    RFC 9051 6.3.2 example: SELECT answers EXISTS, FLAGS, the mailbox's LIST
    and no RECENT or UNSEEN; if this fails, a rev2 client sees responses its
    protocol removed, or misses the LIST it waits for.
    """
    client.send(b"e ENABLE IMAP4rev2\r\n")
    out = client.send(b"A142 SELECT INBOX\r\n")
    assert b"* 2 EXISTS\r\n" in out and b'* LIST () "/" "INBOX"\r\n' in out
    assert b"RECENT" not in out and b"UNSEEN" not in out
    assert b"[UIDVALIDITY " in out and b"[UIDNEXT 3]" in out and b"[PERMANENTFLAGS (" in out
    assert out.endswith(b"A142 OK [READ-WRITE] SELECT completed\r\n")
    assert b"\\Recent" not in client.send(b"f FETCH 1:* FLAGS\r\n")


def test_rev2_new_mail_has_no_recent_response(client):
    """RFC 9051 7.4: if this fails, a rev2 client in IDLE gets the RECENT response it does not know."""
    client.send(b"e ENABLE IMAP4rev2\r\ns SELECT INBOX\r\n")
    client.deliver(b"Subject: three\r\n\r\n3\r\n")
    out = client.send(b"n NOOP\r\n")
    assert b"* 3 EXISTS\r\n" in out and b"RECENT" not in out


def test_rev2_search_answers_esearch(client):
    """
    RFC 9051 6.4.4 examples: SEARCH and UID SEARCH answer ESEARCH (ALL when
    no RETURN was given), an empty result only the tag; if this fails, a
    rev2 client finds no results (it does not read * SEARCH).
    """
    client.send(b"e ENABLE IMAP4rev2\r\ns SELECT INBOX\r\n")
    assert client.send(b'A282 SEARCH SUBJECT "two"\r\n') == (
        b'* ESEARCH (TAG "A282") ALL 2\r\nA282 OK SEARCH completed\r\n')
    assert client.send(b"A283 UID SEARCH ALL\r\n").startswith(b'* ESEARCH (TAG "A283") UID ALL 1:2\r\n')
    assert client.send(b"A284 SEARCH DELETED\r\n").startswith(b'* ESEARCH (TAG "A284")\r\n')
    out = client.send(b"A285 SEARCH RETURN (MIN COUNT) ALL\r\n")
    assert out.startswith(b'* ESEARCH (TAG "A285") MIN 1 COUNT 2\r\n')


def test_status_deleted(client):
    """RFC 9051 6.3.11: if this fails, a client cannot show how many messages await expunge."""
    client.send(b"s SELECT INBOX\r\nst STORE 2 +FLAGS (\\Deleted)\r\n")
    out = client.send(b"A042 STATUS INBOX (MESSAGES DELETED)\r\n")
    assert b'* STATUS "INBOX" (MESSAGES 2 DELETED 1)\r\n' in out


def test_rev2_mailbox_names_are_utf8(client):
    """
    RFC 9051 5.1: if this fails, a rev2 client shows modified UTF-7
    (C{Caf&AOk-}) in its folder list, or cannot open a folder by its name.
    """
    client.send(b"e ENABLE IMAP4rev2\r\n")
    assert b"c OK" in client.send(b'c CREATE "' + CAFE_NFC + b'"\r\n')
    out = client.send(b'l LIST "" "C*"\r\n')
    assert b'* LIST (\\HasNoChildren) "/" "' + CAFE_NFC + b'"\r\n' in out
    assert b'"' + CAFE_NFC + b'" (MESSAGES 0)' in client.send(
        b'st STATUS "' + CAFE_NFC + b'" (MESSAGES)\r\n')
    # An IMAP4rev1 session sees the same folder in modified UTF-7.
    other = client.connectAgain()
    other.login()
    assert b'"Caf&AOk-"' in other.send(b'l LIST "" "C*"\r\n')


def test_rev2_denormalised_name_gets_oldname(client):
    """
    RFC 9051 6.3.4: a name not in NFC is stored in NFC and the client is
    told with LIST ... OLDNAME; if this fails, two spellings make two
    folders that look the same.
    """
    client.send(b"e ENABLE IMAP4rev2\r\n")
    out = client.send(b'c CREATE "' + CAFE_NFD + b'"\r\n')
    assert b'* LIST () "/" "' + CAFE_NFC + b'" ("OLDNAME" ("' + CAFE_NFD + b'"))\r\n' in out
    assert b"ALREADYEXISTS" in client.send(b'd CREATE "' + CAFE_NFC + b'"\r\n')
    out = client.send(b'A1 SELECT "' + CAFE_NFD + b'"\r\n')
    assert b'("OLDNAME" ("' + CAFE_NFD + b'"))' in out and b"A1 OK" in out


def test_utf8_accept_names_and_append(client):
    """
    RFC 6855 3, 4: after ENABLE UTF8=ACCEPT, names are UTF-8 both ways and
    APPEND takes UTF8 (~{n}) with UTF-8 headers, found again by a SEARCH
    without CHARSET; if this fails, an internationalised client cannot file
    or find its mail.
    """
    assert client.send(b"e ENABLE UTF8=ACCEPT\r\n").startswith(b"* ENABLED UTF8=ACCEPT\r\n")
    client.send(b'c CREATE "' + CAFE_NFC + b'"\r\n')
    message = "Subject: Grüße\r\n\r\nhallo\r\n".encode()
    out = client.send(b'a APPEND "' + CAFE_NFC + b'" UTF8 (~{%d+}\r\n' % len(message)
                      + message + b")\r\n")
    assert b"a OK [APPENDUID" in out
    client.send(b's SELECT "' + CAFE_NFC + b'"\r\n')
    assert client.send('x SEARCH SUBJECT "Grüße"\r\n'.encode()).startswith(b"* SEARCH 1\r\n")


def test_append_utf8_needs_enable(client):
    """RFC 6855 4: if this fails, a client that did not enable UTF8=ACCEPT gets 8-bit headers stored unannounced."""
    out = client.send(b"a APPEND INBOX UTF8 (~{5+}\r\nhello)\r\n")
    assert out.startswith(b"a BAD")


def test_nonsync_literal_over_4096_is_taken(client):
    """
    RFC 7888: LITERAL+ is offered too, so a non-synchronising literal over
    4096 octets is read; if this fails, a client that saw LITERAL+ loses its
    APPEND.
    """
    client.send(b"e ENABLE IMAP4rev2\r\n")
    body = b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"
    out = client.send(b"a APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    assert b"a OK [APPENDUID" in out and b"+ " not in out


def test_literal_too_big_says_toobig(client):
    """RFC 7888 4: if this fails, the client is not told that the literal was refused for its size."""
    out = client.send(b"s SEARCH SUBJECT {999999}\r\n")
    assert out.startswith(b"s BAD [TOOBIG]")


def test_rfc9051_select_while_selected_says_closed(tmp_path):
    """RFC 9051 6.3.2 (Appendix E item 9): a SELECT or EXAMINE while a
    mailbox is selected first says OK [CLOSED], so a client knows which
    untagged responses still belong to the old mailbox; if this fails, a
    client can apply the old mailbox's EXPUNGEs to the new one."""
    client = backendClient("memory", tmp_path)
    client.send(b"e ENABLE IMAP4rev2\r\n")
    first = client.send(b"s SELECT INBOX\r\n")
    assert b"CLOSED" not in first
    out = client.send(b"x EXAMINE Sent\r\n")
    assert out.startswith(b"* OK [CLOSED] Previous mailbox is now closed\r\n* FLAGS")
    out = client.send(b"y SELECT Nowhere\r\n")
    assert out == b"* OK [CLOSED] Previous mailbox is now closed\r\ny NO [NONEXISTENT] No such mailbox\r\n"
    assert client.send(b"z SELECT INBOX\r\n").startswith(b"* FLAGS")  # nothing was selected


def test_rfc9051_list_shows_missing_parent_only_for_unmatched_children(tmp_path):
    """RFC 9051 6.3.9.3 (Appendix E 2, LIST-EXTENDED folded in): a parent
    level that is no mailbox is listed only when a mailbox below it does
    not match the pattern (\\NonExistent with RETURN options); if this
    fails, a client shows a folder that does not exist next to its child
    in a full listing."""
    client = backendClient("memory", tmp_path)
    client.send(b"c CREATE Fruit/Apple\r\n")

    def names(command):
        return [line.split(b'"/" ')[1] for line in client.send(command).split(b"\r\n")
                if line.startswith(b"* LIST")]

    # LIST-EXTENDED, for any client.
    assert b'"Fruit"' not in names(b'a LIST "" "*" RETURN (CHILDREN)\r\n')
    out = client.send(b'b LIST "" "%" RETURN (CHILDREN)\r\n')
    assert b'* LIST (\\NonExistent \\Noselect \\HasChildren) "/" "Fruit"\r\n' in out
    # IMAP4rev1's basic LIST keeps RFC 3501's \Noselect level for "*".
    assert b'"Fruit"' in names(b'c LIST "" "*"\r\n')
    client.send(b"e ENABLE IMAP4rev2\r\n")
    listed = names(b'd LIST "" "*"\r\n')
    assert b'"Fruit"' not in listed and b'"Fruit/Apple"' in listed
    out = client.send(b'f LIST "" "%"\r\n')
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Fruit"\r\n' in out
