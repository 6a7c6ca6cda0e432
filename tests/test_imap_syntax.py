"""
The IMAP command grammar at the edges (RFC 3501 9): characters that are
ordinary in one place and special in another, on the tokenizer and through
the protocol on a L{StringTransport}.
"""

import pytest
from hypothesis import given, settings, strategies as st

from imapharness import withoutMailboxId, loggedIn
from pymailer.imap.parser import Atom, ParseError, String, tokenize


@pytest.fixture
def client(tmp_path):
    return loggedIn(tmp_path)


def test_bracket_is_an_atom_char_outside_fetch():
    """A folder called "a[b" is one name to the server, as RFC 3501's ATOM-CHAR says."""
    assert tokenize([b't SELECT foo[bar']) == [Atom(b"t"), Atom(b"SELECT"), Atom(b"foo[bar")]
    assert tokenize([b't LIST "" a[b% x]y']) == [
        Atom(b"t"), Atom(b"LIST"), String(b""), Atom(b"a[b%"), Atom(b"x]y")]
    # Even where the name looks like a fetch item.
    assert tokenize([b"t RENAME BODY[a b]"]) == [
        Atom(b"t"), Atom(b"RENAME"), Atom(b"BODY[a"), Atom(b"b]")]


def test_fetch_sections_still_hold_spaces_and_parentheses():
    """Header-field fetches (what every mail client's message list uses) keep working."""
    tokens = tokenize([b"t UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.10> FLAGS)"],
                      sections=True)
    assert tokens[4] == [Atom(b"BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.10>"), Atom(b"FLAGS")]
    with pytest.raises(ParseError, match="unterminated"):
        tokenize([b"t FETCH 1 BODY[HEADER.FIELDS (FROM)"], sections=True)


def test_mailbox_names_with_brackets_over_the_protocol(client):
    """A user can create, open, list, fill and check a folder whose name holds [ or ]."""
    out = client.send(b"a CREATE foo[bar\r\n")
    assert withoutMailboxId(out) == b"a OK CREATE completed\r\n"
    assert withoutMailboxId(client.send(b"b CREATE a]b\r\n")) == b"b OK CREATE completed\r\n"
    out = client.send(b'c LIST "" "foo[b%"\r\n')
    assert out == b'* LIST (\\HasNoChildren) "/" "foo[bar"\r\nc OK LIST completed\r\n'
    out = client.send(b'd LIST "" foo[b%\r\n')
    assert out == b'* LIST (\\HasNoChildren) "/" "foo[bar"\r\nd OK LIST completed\r\n'
    assert b'"a]b"' in client.send(b'e LIST "" a]*\r\n')
    out = client.send(b"f APPEND foo[bar {20}\r\n")
    assert out.startswith(b"+ ")
    out = client.send(b"Subject: x\r\n\r\nbody\r\n\r\n")
    assert b"f OK [APPENDUID" in out, out
    assert b"* STATUS" in client.send(b"g STATUS foo[bar (MESSAGES)\r\n")
    out = client.send(b"h SELECT foo[bar\r\n")
    assert b"* 1 EXISTS" in out and out.endswith(b"h OK [READ-WRITE] SELECT completed\r\n")
    out = client.send(b"i FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    assert out == (b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {14}\r\nSubject: x\r\n\r\n)\r\n"
                   b"i OK FETCH completed\r\n")
    assert client.send(b"j COPY 1 a]b\r\n").startswith(b"j OK")
    out = client.send(b"k SELECT nosuch[box\r\n")
    # The open folder is closed first (RFC 7162 3.2.11's CLOSED), then NO.
    assert out.startswith(b"* OK [CLOSED] ") and b"\r\nk NO" in out, out


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from([b" ", b"(", b")", b"\\", b"]", b"a", b"7", b"*", b":", b",",
                                 b"+", b"%", b"~", b"\x7e", b"!", b"#"]), max_size=40)
       .map(b"".join), st.booleans())
def test_plain_lines_take_the_quick_tokenizer_with_the_same_tokens(line, sections):
    """If this fails, a command line of atoms and parentheses alone (a
    STORE, a FETCH of FLAGS: most of a session's commands) is read
    differently by the regular-expression path that splits it than the
    character-by-character one did: other tokens, or another error."""
    from pymailer.imap import parser

    assert parser._PLAIN_LINE.fullmatch(line)

    def tokens(tokenizeLine):
        stack = [[]]
        try:
            tokenizeLine(stack)
        except ParseError as e:
            return "ParseError", str(e)
        return stack

    assert tokens(lambda stack: parser._tokenizePlain(line, stack)) == tokens(
        lambda stack: parser._tokenizeLine(line, stack, sections))


def test_the_quick_tokenizer_takes_only_plain_lines():
    """If this fails, a line with a quoted string, a literal, a section or
    a control or 8-bit character is split as plain atoms."""
    from pymailer.imap import parser

    for line in (b'a SELECT "x y"', b"a APPEND x {3}", b"a FETCH 1 BODY[]", b"a x\x01",
                 b"a x\x7f", b"a caf\xc3\xa9", b"a x\ty"):
        assert not parser._PLAIN_LINE.fullmatch(line), line
    assert tokenize([b"a STORE 1:3,5 +FLAGS.SILENT (\\Seen \\Deleted)"]) == [
        Atom(b"a"), Atom(b"STORE"), Atom(b"1:3,5"), Atom(b"+FLAGS.SILENT"),
        [Atom(b"\\Seen"), Atom(b"\\Deleted")]]
