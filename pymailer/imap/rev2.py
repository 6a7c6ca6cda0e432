"""
IMAP4rev2 (RFC 9051) next to IMAP4rev1, UTF8=ACCEPT (RFC 6855) and
LITERAL- (RFC 7888): what a session switches on with C{ENABLE}, and
mailbox names in UTF-8.

A client that says nothing gets IMAP4rev1 as before.  C{ENABLE IMAP4rev2}
(RFC 9051 6.3.1) or C{ENABLE UTF8=ACCEPT} (RFC 6855 3) is a per-session
flag, like CONDSTORE's (L{Session}); the server's code asks it where the
two protocols differ.

RFC 9051 Appendix E, item by item, and where each is in our code:

  - Extensions folded into the base: NAMESPACE, UNSELECT, UIDPLUS, ESEARCH,
    SEARCHRES, ENABLE, IDLE, SASL-IR, LIST-EXTENDED, LIST-STATUS, MOVE,
    ID, SPECIAL-USE, BINARY, STATUS=SIZE: each already served
    (L{pymailer.imap.server}, L{pymailer.imap.esearch},
    L{pymailer.imap.listing}, L{pymailer.imap.status},
    L{pymailer.imap.binary}); LITERAL-: L{LITERAL_MINUS} below.
  - Response codes of RFC 5530 (ALREADYEXISTS, NONEXISTENT, CANNOT, LIMIT,
    TRYCREATE, SERVERBUG, UNAVAILABLE, AUTHENTICATIONFAILED,
    PRIVACYREQUIRED, ...) and C{CLOSED}: already in the server's replies.
  - Mailbox names in UTF-8, modified UTF-7 only for IMAP4rev1 (RFC 9051
    5.1): L{decodeName}/L{encodeName}; names are NFC-normalised (RFC 5198,
    as RFC 9051 5.1 asks), and a CREATE/SELECT/EXAMINE/RENAME whose name
    was not in NFC is answered with C{LIST} and C{OLDNAME} (RFC 9051
    6.3.2, 6.3.4): L{normalisedNotice}.
  - SELECT/EXAMINE: no C{RECENT} response and no C{OK [UNSEEN]}, and an
    untagged C{LIST} of the mailbox (RFC 9051 6.3.2): C{cmd_SELECT}.
  - SELECT/EXAMINE while a mailbox is selected: C{OK [CLOSED]} first
    (Appendix E 9, 6.3.2), to every client (RFC 7162 3.2.11 asks the same).
  - COPY/MOVE to a missing mailbox: C{NO [TRYCREATE]}, never created
    (Appendix E 8); COPYUID for MOVE and UID MOVE (7): already so.
  - Unsolicited FETCH carries UID (Appendix E 21): already so
    (L{pymailer.imap.selected.Selected.fetchUpdate}).
  - IDLE may tell of other mailboxes (Appendix E 20): with NOTIFY
    (L{pymailer.imap.notify}).
  - ALERT (Appendix E 26): never sent; LOGIN before TLS is refused with
    C{NO [PRIVACYREQUIRED]} while C{LOGINDISABLED} is advertised.
  - The C{\\Recent} flag and the C{RECENT} response are gone (RFC 9051
    2.3.2): L{pymailer.imap.selected.Selected.showRecent} (FETCH FLAGS,
    unsolicited FETCH, the RECENT after EXISTS).  SEARCH NEW/OLD/RECENT are
    not in IMAP4rev2's grammar; still parsed, they match as if no message
    were recent (NEW none, OLD all).  STATUS RECENT is still answered.
  - SEARCH answers with C{ESEARCH} only, C{ALL} when no RETURN was given
    (RFC 9051 6.4.4): C{cmd_SEARCH}.  CHARSET UTF-8 was accepted already.
  - STATUS C{DELETED} (RFC 9051 6.3.11): L{pymailer.imap.status}; offered
    to IMAP4rev1 clients too (an item they will not ask for).
  - LSUB deprecated: still served, for IMAP4rev1 clients and any other.
  - CHECK removed: still answered (as NOOP), harmless.
  - LIST C{\\NonExistent}, C{\\Subscribed}, CHILDINFO: LIST-EXTENDED,
    already served.
  - FETCH BINARY: L{pymailer.imap.binary}.
  - UNAUTHENTICATE (RFC 8437) is optional: not offered.
  - 64-bit sizes (number64): literal sizes are read up to 20 digits and
    refused above our limits before any continuation; RFC822.SIZE is
    printed as a Python int.
  - RFC822, RFC822.HEADER, RFC822.TEXT deprecated: still served.
  - C{ENABLE IMAP4rev2} answered C{* ENABLED IMAP4rev2}: C{cmd_ENABLE}.

C{IMAP4rev2} is advertised because each of these applies.

LITERAL- (RFC 7888 4) limits a client's non-synchronising literals to 4096
octets, and lets the server refuse bigger ones with C{BAD [TOOBIG]}.  We
also advertise LITERAL+, which allows any size (RFC 7888 3); a client that
sees both may rely on the larger promise, and IMAP4rev2's own LITERAL- is a
subset of it, so bigger non-synchronising literals are taken up to the
limits that apply to every literal (L{pymailer.imap.server}); beyond them
the refusal carries C{[TOOBIG]} as RFC 7888 4 asks.

UTF8=ACCEPT (RFC 6855): after C{ENABLE UTF8=ACCEPT} mailbox names are UTF-8
quoted strings both ways (3), C{APPEND ... UTF8 (~{n})} is taken (4,
L{pymailer.imap.append}) and SEARCH takes UTF-8 strings without CHARSET.
RFC 6855 3 says a server SHOULD answer BAD to a SEARCH with CHARSET once
UTF8=ACCEPT is on; we accept CHARSET UTF-8/US-ASCII still, since clients
send it out of habit and the meaning is the same.  Not done: downgrading
8-bit headers for clients that did not enable it (RFC 6857): they get the
message as stored.

Trust: names from the client are checked as UTF-8 (strict) and then by the
store, as modified UTF-7 names are.
"""

import unicodedata

from pymailer.imap import utf7
from pymailer.imap.parser import Raw, quoted

IMAP4REV2 = b"IMAP4rev2"
UTF8_ACCEPT = b"UTF8=ACCEPT"
LITERAL_MINUS = b"LITERAL-"


class Session:
    """
    What a client turned on with ENABLE (RFC 5161).

    @ivar rev2: C{ENABLE IMAP4rev2}: the behaviours of RFC 9051.
    @ivar utf8: mailbox names in UTF-8 (IMAP4rev2 or UTF8=ACCEPT).
    @ivar utf8Accept: C{ENABLE UTF8=ACCEPT}: APPEND's C{UTF8 (...)}.
    """

    def __init__(self):
        self.rev2 = False
        self.utf8Accept = False

    @property
    def utf8(self):
        return self.rev2 or self.utf8Accept

    def enable(self, names):
        """The capabilities of C{names} (upper-cased atoms) now enabled."""
        enabled = []
        if IMAP4REV2.upper() in names:
            self.rev2 = True
            enabled.append(IMAP4REV2)
        if UTF8_ACCEPT in names:
            self.utf8Accept = True
            enabled.append(UTF8_ACCEPT)
        return enabled


def decodeName(raw, utf8):
    """
    A mailbox name (or pattern) from the client as text: UTF-8 in NFC for a
    client that enabled it (RFC 9051 5.1, RFC 6855 3), modified UTF-7
    otherwise.

    @raise utf7.UTF7Error: neither.
    """
    if not utf8:
        return utf7.decode(raw)
    try:
        return unicodedata.normalize("NFC", bytes(raw).decode("utf-8"))
    except UnicodeDecodeError:
        raise utf7.UTF7Error("mailbox name is not UTF-8") from None


def encodeName(name, utf8):
    """
    A mailbox name for a response: a quoted UTF-8 string (RFC 9051 9,
    C{quoted} takes UTF8-char) or modified UTF-7 bytes, which
    C{formatValue} quotes.
    """
    if utf8:
        return Raw(quoted(name.encode("utf-8")))
    return utf7.encode(name)


def wasDenormalised(raw, utf8):
    """Whether the client's spelling of a name was not in NFC."""
    if not utf8:
        return False
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return unicodedata.normalize("NFC", text) != text


def normalisedNotice(raw, name):
    """
    RFC 9051 6.3.4: the C{LIST} response telling a client that the name it
    gave (C{raw}, not in NFC) is known as C{name}.
    """
    return b'* LIST () "/" %s ("OLDNAME" (%s))' % (
        encodeName(name, True), quoted(bytes(raw)))
