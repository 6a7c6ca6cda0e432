"""
LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), STATUS=SIZE (RFC 8438)
and CREATE with USE (RFC 6154 3) through the protocol: a client building
its folder pane gets subscriptions, special uses and counts in one round
trip.
"""

import pytest

from imapharness import Client, withoutMailboxId


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path, secure=True)
    c.login()
    # RFC 5258 5's example tree: Fruit/Apple etc., some subscribed.
    for name in (b"Fruit", b"Fruit/Apple", b"Fruit/Banana", b"Tofu", b"Vegetable",
                 b"Vegetable/Broccoli", b"Vegetable/Corn"):
        c.send(b"c CREATE %s\r\n" % name)
    for name in (b"Fruit/Banana", b"Vegetable", b"Vegetable/Broccoli"):
        c.send(b"s SUBSCRIBE %s\r\n" % name)
    return c


def listLines(out):
    return [line for line in out.split(b"\r\n") if line.startswith(b"* ")]


def test_capabilities(client):
    """Clients look for LIST-EXTENDED, LIST-STATUS, STATUS=SIZE and CREATE-SPECIAL-USE."""
    caps = client.send(b"c CAPABILITY\r\n").split(b"\r\n")[0].split()
    assert {b"LIST-EXTENDED", b"LIST-STATUS", b"STATUS=SIZE", b"SPECIAL-USE",
            b"CREATE-SPECIAL-USE"} <= set(caps)


def test_rfc5258_subscribed_but_deleted_is_nonexistent(client):
    """RFC 5258 5.2: a subscribed folder that was deleted shows as \\NonExistent \\Subscribed."""
    client.send(b"s SUBSCRIBE Tofu\r\nd DELETE Tofu\r\n")
    out = client.send(b'a LIST (SUBSCRIBED) "" "Tofu"\r\n')
    assert listLines(out) == [b'* LIST (\\NonExistent \\Noselect \\Subscribed) "/" "Tofu"']


def test_rfc5258_recursivematch_childinfo(client):
    """RFC 5258 5.5: RECURSIVEMATCH lists Fruit, not subscribed, with CHILDINFO SUBSCRIBED."""
    out = client.send(b'A04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"\r\n')
    assert listLines(out) == [
        b'* LIST (\\HasChildren) "/" "Fruit" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Vegetable"',
    ]


def test_rfc5258_recursivematch_alone_is_bad(client):
    """RFC 5258 3.1: RECURSIVEMATCH without another selection option is a syntax error."""
    assert b"a BAD" in client.send(b'a LIST (RECURSIVEMATCH) "" "*"\r\n')


@pytest.mark.parametrize("command, expected", [
    # RFC 5258 5.2: the subscribed folders, marked \Subscribed
    (b'A02 LIST (SUBSCRIBED) "" "*"', [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Fruit/Banana"',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Vegetable"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Vegetable/Broccoli"']),
    # RFC 5258 5.9: several patterns; RETURN (SUBSCRIBED) marks the subscribed
    (b'A01 LIST "" ("Fruit/%" "Tofu") RETURN (SUBSCRIBED CHILDREN)', [
        b'* LIST (\\HasNoChildren) "/" "Fruit/Apple"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Fruit/Banana"',
        b'* LIST (\\HasNoChildren) "/" "Tofu"']),
])
def test_rfc5258_selection_and_patterns(client, command, expected):
    """A client listing only subscribed folders, or several patterns at once, gets exactly those."""
    out = client.send(command + b"\r\n")
    assert listLines(out) == expected
    assert out.endswith(b" OK LIST completed\r\n")


def test_rfc6154_special_use_selection(client):
    """RFC 6154 2: LIST (SPECIAL-USE) lists only the folders with a special use, with it."""
    out = client.send(b'a LIST (SPECIAL-USE) "" "*" RETURN (SPECIAL-USE)\r\n')
    lines = listLines(out)
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in lines
    assert len(lines) == 5 and all(b"Fruit" not in line for line in lines)


def test_rfc5819_list_status(client):
    """RFC 5819: RETURN (STATUS (...)) follows each selectable folder's LIST with its STATUS."""
    client.deliver(b"Subject: a\r\n\r\n12345\r\n", mailbox="Fruit/Apple")
    out = client.send(b'A01 LIST "" "Fruit*" RETURN (STATUS (MESSAGES UNSEEN SIZE))\r\n')
    assert listLines(out) == [
        b'* LIST (\\HasChildren) "/" "Fruit"',
        b'* STATUS "Fruit" (MESSAGES 0 UNSEEN 0 SIZE 0)',
        b'* LIST (\\HasNoChildren) "/" "Fruit/Apple"',
        b'* STATUS "Fruit/Apple" (MESSAGES 1 UNSEEN 1 SIZE 21)',
        b'* LIST (\\HasNoChildren) "/" "Fruit/Banana"',
        b'* STATUS "Fruit/Banana" (MESSAGES 0 UNSEEN 0 SIZE 0)',
    ]


def test_rfc5819_no_status_for_nonexistent(client):
    """RFC 5819 2: a \\NonExistent folder gets no STATUS line."""
    client.send(b"d DELETE Tofu\r\ns SUBSCRIBE Vegetable/Corn\r\n")
    client.send(b"s SUBSCRIBE Tofu\r\n")  # refused: it must exist
    out = client.send(b'a LIST (SUBSCRIBED) "" "*" RETURN (STATUS (MESSAGES))\r\n')
    assert b'* STATUS "Vegetable/Corn" (MESSAGES 0)' in out
    assert b"STATUS \"Tofu\"" not in out


def test_rfc8438_status_size(client):
    """RFC 8438: STATUS (SIZE) is the total of the messages' RFC822.SIZE."""
    client.deliver(b"Subject: a\r\n\r\n12345\r\n")
    client.deliver(b"Subject: bb\r\n\r\nx\r\n")
    out = client.send(b"a STATUS INBOX (MESSAGES SIZE)\r\n")
    assert out.startswith(b'* STATUS "INBOX" (MESSAGES 2 SIZE 39)\r\n')


def test_basic_list_unchanged(client):
    """A plain RFC 3501 LIST is answered as before (no \\Subscribed, no CHILDINFO)."""
    out = client.send(b'a LIST "" "Veg*"\r\n')
    assert listLines(out) == [b'* LIST (\\HasChildren) "/" "Vegetable"',
                              b'* LIST (\\HasNoChildren) "/" "Vegetable/Broccoli"',
                              b'* LIST (\\HasNoChildren) "/" "Vegetable/Corn"']


def test_rfc6154_create_with_use(client):
    """
    RFC 6154 5.2's example: CREATE MyDrafts (USE (\\Drafts)) makes a folder
    LIST shows as \\Drafts (and LIST (SPECIAL-USE) selects), kept across a
    rename; \\All (a virtual folder) is NO [USEATTR] and creates nothing.
    """
    out = withoutMailboxId(client.send(b"t1 CREATE MyDrafts (USE (\\Drafts))\r\n"))
    assert out == b"t1 OK CREATE completed\r\n"
    out = client.send(b'a LIST "" MyDrafts\r\n')
    assert listLines(out) == [b'* LIST (\\HasNoChildren \\Drafts) "/" "MyDrafts"']
    out = client.send(b'b LIST (SPECIAL-USE) "" "My*"\r\n')
    assert listLines(out) == [b'* LIST (\\HasNoChildren \\Drafts) "/" "MyDrafts"']
    client.send(b"r RENAME MyDrafts Entwurf\r\n")
    out = client.send(b'c LIST "" "*" RETURN (SPECIAL-USE)\r\n')
    assert b'* LIST (\\HasNoChildren \\Drafts) "/" "Entwurf"' in out
    out = client.send(b"t2 CREATE Everything (USE (\\All))\r\n")
    assert out.startswith(b"t2 NO [USEATTR] ")
    assert b"Everything" not in client.send(b'l LIST "" "*"\r\n')
    assert b"a BAD" in client.send(b"a CREATE X (USE \\Archive)\r\n")
