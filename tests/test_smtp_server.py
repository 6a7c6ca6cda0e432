"""
Protocol-level tests of the SMTP MTA role: the real L{SMTPServer} on a
L{StringTransport}, time from L{task.Clock}, and the real router behind an
in-memory intake.  One test per reply the server must give.
"""

import errno
import re

import pytest
from twisted.internet import task

from pymailer.config import SMTPConfig
from pymailer.smtp.reply import SMTPReply
from pymailer.smtp.factory import SMTPFactory
from pymailer.testing import MemoryDirectory, MemoryIntake, connectSMTP, memoryPortal

REPLY = re.compile(rb"^(\d{3})([ -])(.*)$")
PASSWORDS = {"alice@example.org": "alice-pw", "bob@example.org": "bob-pw"}


class Client:
    """Drives one server connection and reads its replies."""

    def __init__(self, factoryArgs=None, host="192.0.2.1", **limits):
        self.clock = task.Clock()
        self.directory = MemoryDirectory(
            domains=["example.org"],
            users=["alice@example.org", "bob@example.org", "jösé@example.org"],
            aliases={"team@example.org": ["alice@example.org", "bob@example.org"]},
        )
        self.intake = MemoryIntake(self.directory)
        self.factory = SMTPFactory(
            "mx.example.org", SMTPConfig(**limits),
            memoryPortal(self.intake, PASSWORDS), self.clock, **(factoryArgs or {})
        )
        self.proto, self.transport = connectSMTP(self.factory, host=host)
        self.greeting = self.replies()

    def reconnect(self, host="192.0.2.1"):
        """Another connection to the same server (same factory, clock, intake)."""
        other = Client.__new__(Client)
        other.__dict__.update(self.__dict__)
        other.proto, other.transport = connectSMTP(self.factory, host=host)
        other.greeting = other.replies()
        return other

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.proto.dataReceived(data)
        return self.replies()

    def replies(self):
        """All complete replies written since the last call: [(code, lines)]."""
        out, current = [], []
        raw = self.transport.value()
        self.transport.clear()
        for line in raw.split(b"\r\n")[:-1]:
            m = REPLY.match(line)
            assert m, f"malformed reply line {line!r}"
            current.append(m.group(3).decode("utf-8"))
            if m.group(2) == b" ":
                out.append((int(m.group(1)), current))
                current = []
        assert not current, "unterminated multi-line reply"
        return out

    def one(self, data):
        replies = self.send(data)
        assert len(replies) == 1, replies
        return replies[0]

    def ehlo(self):
        return self.one("EHLO client.test\r\n")

    def startMail(self, sender="<sender@remote.test>", rcpts=("alice@example.org",)):
        self.ehlo()
        assert self.one(f"MAIL FROM:{sender}\r\n")[0] == 250
        for r in rcpts:
            assert self.one(f"RCPT TO:<{r}>\r\n")[0] == 250
        assert self.one("DATA\r\n")[0] == 354


def assertReply(reply, code, enhanced):
    got, lines = reply
    assert got == code, reply
    for line in lines:
        assert line.startswith(enhanced + " "), reply


def test_greeting_has_no_enhanced_code():
    """A client sees '220 <hostname> ESMTP' at connect (RFC 2034 exempts it)."""
    c = Client()
    assert c.greeting == [(220, ["mx.example.org ESMTP pymailer"])]


def test_ehlo_advertises_extensions():
    """EHLO lists SIZE with the limit, PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES."""
    c = Client(max_message_size=1000000)
    code, lines = c.ehlo()
    assert code == 250
    assert lines[0].startswith("mx.example.org Hello client.test")
    assert set(lines[1:]) == {
        "SIZE 1000000", "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
        "CHUNKING", "BINARYMIME", "DSN",
    }


def test_message_accepted_250_and_unstuffed():
    """A message gets '250 2.0.0 Ok: queued as ID' and is stored dot-unstuffed."""
    c = Client()
    c.startMail()
    reply = c.one(b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n")
    assertReply(reply, 250, "2.0.0")
    assert "queued as Q1" in reply[1][0]
    (envelope, data), = c.intake.committed
    assert data == b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
    assert envelope.sender == "sender@remote.test"
    assert [r.address for r in envelope.recipients] == ["alice@example.org"]
    assert envelope.session.clientAddress == "192.0.2.1"
    assert envelope.session.helo == "client.test"


def test_mail_size_over_limit_552():
    """A declared SIZE over the limit is refused at MAIL FROM with 552 5.3.4 (RFC 1870)."""
    c = Client(max_message_size=1000)
    c.ehlo()
    assertReply(c.one("MAIL FROM:<a@remote.test> SIZE=1001\r\n"), 552, "5.3.4")


@pytest.mark.parametrize("size,code,enhanced", [
    ("\u00b2", 501, "5.5.4"),        # superscript two: str.isdigit() says yes, int() says no
    ("\u0663", 501, "5.5.4"),        # Arabic-Indic three
    ("0" * 30 + "5", 501, "5.5.4"),  # over RFC 1870's 20 digits
    ("9" * 20, 552, "5.3.4"),
])
def test_mail_size_not_a_plain_number(size, code, enhanced):
    """A client sending a SIZE that is no plain number gets a reply, not a dropped connection."""
    c = Client(max_message_size=1000)
    c.ehlo()
    assertReply(c.one(f"MAIL FROM:<a@remote.test> SIZE={size}\r\n"), code, enhanced)
    assertReply(c.one("MAIL FROM:<a@remote.test> SIZE=10\r\n"), 250, "2.1.0")


def test_data_over_limit_552():
    """A message larger than the limit without SIZE is refused after DATA, not stored."""
    c = Client(max_message_size=1000)
    c.startMail()
    reply = c.one(b"x" * 900 + b"\r\n" + b"y" * 900 + b"\r\n.\r\n")
    assertReply(reply, 552, "5.3.4")
    assert c.intake.committed == []


def test_unknown_local_user_550():
    """RCPT to an unknown user of a local domain: 550 5.1.1."""
    c = Client()
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    assertReply(c.one("RCPT TO:<nobody@example.org>\r\n"), 550, "5.1.1")


def test_relay_denied_554():
    """RCPT to another domain from an unauthenticated client: 554 5.7.1 (no open relay)."""
    c = Client()
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    assertReply(c.one("RCPT TO:<x@elsewhere.test>\r\n"), 554, "5.7.1")


@pytest.mark.parametrize(
    "path",
    [
        "<u%evil.test@example.org>",
        "<@a.test:u@evil.test>",
        '<"u@evil.test"@example.org>',
        "<u@example.org@evil.test>",
        "<u@evil.test>",
        "<u@[192.0.2.7]>",
    ],
)
def test_open_relay_matrix_refused(path):
    """Classic open-relay probes are all refused; nothing is accepted for relay."""
    c = Client()
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    code, _ = c.one(f"RCPT TO:{path}\r\n")
    assert code >= 500


def test_plus_address_and_alias_accepted():
    """alice+news@ and an alias are accepted recipients."""
    c = Client()
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    assertReply(c.one("RCPT TO:<alice+news@example.org>\r\n"), 250, "2.1.5")
    assertReply(c.one("RCPT TO:<Team@Example.ORG>\r\n"), 250, "2.1.5")


def test_too_many_recipients_452():
    """Past max_recipients, RCPT gets 452 4.5.3 (RFC 5321 §4.5.3.1.10)."""
    c = Client(max_recipients=2)
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    c.one("RCPT TO:<alice@example.org>\r\n")
    c.one("RCPT TO:<bob@example.org>\r\n")
    assertReply(c.one("RCPT TO:<alice@example.org>\r\n"), 452, "4.5.3")


def test_recipients_past_the_limit_are_not_errors():
    """
    A batch larger than max_recipients gets 452 for the rest and keeps its
    transaction: the 452s do not count toward max_errors (RFC 5321
    4.5.3.1.10: the client sends them later), so DATA still delivers to the
    recipients accepted.
    """
    c = Client(max_recipients=2, max_errors=3)
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    c.one("RCPT TO:<alice@example.org>\r\n")
    c.one("RCPT TO:<bob@example.org>\r\n")
    for _ in range(10):
        assertReply(c.one("RCPT TO:<alice@example.org>\r\n"), 452, "4.5.3")
    assert c.one("DATA\r\n")[0] == 354


def test_recipients_far_past_the_limit_are_errors(monkeypatch):
    """
    If this fails, a client may send RCPTs past max_recipients without end
    (each a 452 that never counts): past the overshoot limit they count
    toward max_errors and the session is closed with 421, as Postfix's
    smtpd_recipient_overshoot_limit does.
    """
    monkeypatch.setattr("pymailer.smtp.server.RECIPIENT_OVERSHOOT_LIMIT", 5)
    c = Client(max_recipients=1, max_errors=2)
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    c.one("RCPT TO:<alice@example.org>\r\n")
    for _ in range(5 + 2):
        assertReply(c.one("RCPT TO:<bob@example.org>\r\n"), 452, "4.5.3")
    replies = c.send("RCPT TO:<bob@example.org>\r\n")
    assert [code for code, _ in replies] == [452, 421]


def test_command_line_too_long_500():
    """A command line over 512 octets gets 500 5.5.2, and the session goes on."""
    c = Client()
    c.ehlo()
    assertReply(c.one("NOOP " + "x" * 600 + "\r\n"), 500, "5.5.2")
    assertReply(c.one("NOOP\r\n"), 250, "2.0.0")


def test_endless_command_line_answered_not_dropped():
    """A line that never ends is answered once (not a silent disconnect) and not buffered."""
    c = Client()
    replies = []
    for _ in range(100):
        replies += c.send(b"A" * 1000)
    assert len(replies) == 1
    assertReply(replies[0], 500, "5.5.2")
    assert len(c.proto._buffer) < 1024
    assert c.send(b"\r\n") == []
    assertReply(c.one("NOOP\r\n"), 250, "2.0.0")
    assert not c.transport.disconnecting


def test_text_line_too_long_552():
    """A message text line over 1000 octets is refused with 552 5.3.4 and not stored."""
    c = Client()
    c.startMail()
    assertReply(c.one(b"a" * 1001 + b"\r\n.\r\n"), 552, "5.3.4")
    assert c.intake.committed == []
    assertReply(c.one("NOOP\r\n"), 250, "2.0.0")


def test_text_line_of_1000_octets_accepted():
    """A 998-octet line (1000 with CRLF) is within RFC 5321 and accepted."""
    c = Client()
    c.startMail()
    assertReply(c.one(b"a" * 998 + b"\r\n.\r\n"), 250, "2.0.0")


SMUGGLING_ENDINGS = [
    b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n",
    b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r\n\x00.\r\n",
]


@pytest.mark.parametrize("ending", SMUGGLING_ENDINGS, ids=repr)
def test_smuggling_endings_never_end_a_message(ending):
    """
    None of hannob's malformed endings ends the message: the smuggled MAIL
    is not run, and the message is refused with 554 5.6.0 at its real end.
    """
    c = Client()
    c.startMail()
    replies = c.send(b"Subject: x\r\n\r\nbody" + ending + b"MAIL FROM:<evil@evil.test>\r\n")
    assert replies == []
    assertReply(c.one(b"more\r\n.\r\n"), 554, "5.6.0")
    assert c.intake.committed == []


def test_bare_lf_at_start_of_line_is_refused():
    """A bare LF anywhere in the text refuses the message (554 5.6.0)."""
    c = Client()
    c.startMail()
    assertReply(c.one(b"a\nb\r\n.\r\n"), 554, "5.6.0")


@pytest.mark.parametrize(
    "command",
    [b"EHLO cli\rent.test", b"EHLO client\x00.test", b"MAIL FROM:<a@b.test>\rX",
     b"RCPT TO:<alice@example.org>\x00"],
    ids=repr,
)
def test_cr_or_nul_in_arguments_501(command):
    """CR or NUL inside EHLO/MAIL/RCPT arguments gets 501 5.5.2."""
    c = Client()
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    assertReply(c.one(command + b"\r\n"), 501, "5.5.2")


def test_bad_mail_syntax_501():
    """A malformed MAIL FROM argument gets 501 with an enhanced code."""
    c = Client()
    c.ehlo()
    code, _ = c.one("MAIL FROM:alice\r\n")
    assert code == 501


def test_unknown_mail_parameter_555():
    """An ESMTP parameter we do not know gets 555 5.5.4 (RFC 5321 §4.1.1.11)."""
    c = Client()
    c.ehlo()
    assertReply(c.one("MAIL FROM:<a@remote.test> FOO=BAR\r\n"), 555, "5.5.4")


def test_rcpt_before_mail_503():
    """RCPT before MAIL gets 503 5.5.1."""
    c = Client()
    c.ehlo()
    assertReply(c.one("RCPT TO:<alice@example.org>\r\n"), 503, "5.5.1")


def test_mail_before_ehlo_503():
    """MAIL before HELO/EHLO gets 503 5.5.1."""
    c = Client()
    assertReply(c.one("MAIL FROM:<a@remote.test>\r\n"), 503, "5.5.1")


def test_nested_mail_503():
    """A second MAIL inside a transaction gets 503 5.5.1."""
    c = Client()
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    assertReply(c.one("MAIL FROM:<a@remote.test>\r\n"), 503, "5.5.1")


def test_data_without_recipients_554():
    """DATA when no RCPT was accepted gets 554 5.5.1 (RFC 5321 §3.3)."""
    c = Client()
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    c.one("RCPT TO:<nobody@example.org>\r\n")
    assertReply(c.one("DATA\r\n"), 554, "5.5.1")


def test_unknown_command_500():
    """An unknown command gets 500 5.5.2."""
    c = Client()
    assertReply(c.one("FROB\r\n"), 500, "5.5.2")


def test_rset_noop_vrfy_quit():
    """RSET/NOOP answer 250 2.0.0, VRFY 252 2.5.0, QUIT 221 2.0.0 and closes."""
    c = Client()
    c.ehlo()
    assertReply(c.one("RSET\r\n"), 250, "2.0.0")
    assertReply(c.one("NOOP\r\n"), 250, "2.0.0")
    assertReply(c.one("VRFY alice\r\n"), 252, "2.5.0")
    assertReply(c.one("QUIT\r\n"), 221, "2.0.0")
    assert c.transport.disconnecting


def test_pipelined_batch_answered_in_order():
    """A whole pipelined transaction in one packet gets its replies in order (RFC 2920)."""
    c = Client()
    replies = c.send(
        b"EHLO client.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
        b"RCPT TO:<nobody@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
        b"Subject: p\r\n\r\nhello\r\n.\r\nQUIT\r\n"
    )
    assert [code for code, _ in replies] == [250, 250, 250, 550, 250, 354, 250, 221]
    (envelope, _), = c.intake.committed
    assert [r.address for r in envelope.recipients] == [
        "alice@example.org", "bob@example.org",
    ]


def test_pipelining_order_with_slow_check():
    """
    While a RCPT check is pending (a Deferred), commands pipelined behind it
    wait: replies never overtake each other (twisted #8126).  The replies
    of the group are held until its last command has run (RFC 2920 §3.2).
    """
    c = Client()
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    c.intake.hold = True
    replies = c.send(b"RCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nNOOP\r\n")
    assert replies == []
    c.intake.held.pop(0).callback(None)
    assert c.replies() == []
    c.intake.held.pop(0).callback(None)
    assert [r[0] for r in c.replies()] == [250, 250, 250]


def test_idle_timeout_421():
    """A client idle past idle_timeout gets 421 4.4.2 and is disconnected."""
    c = Client(idle_timeout=300)
    c.clock.advance(299)
    assert c.replies() == []
    c.clock.advance(2)
    assertReply(c.replies()[0], 421, "4.4.2")
    assert c.transport.disconnecting


def test_connections_per_ip_421():
    """Past max_connections_per_ip, a new connection from that IP gets 421 4.7.0."""
    c = Client(max_connections_per_ip=2)
    connectSMTP(c.factory)
    proto, transport = connectSMTP(c.factory)
    assert transport.value().startswith(b"421 4.7.0")
    assert transport.disconnecting
    other, t2 = connectSMTP(c.factory, host="192.0.2.99")
    assert t2.value().startswith(b"220 ")


def test_global_connection_cap_421():
    """Past max_connections in all, a new connection gets 421 4.7.0; closing one frees a slot."""
    c = Client(max_connections=2)
    p2, _ = connectSMTP(c.factory, host="192.0.2.2")
    _, t3 = connectSMTP(c.factory, host="192.0.2.3")
    assert t3.value().startswith(b"421 4.7.0")
    p2.connectionLost(None)
    _, t4 = connectSMTP(c.factory, host="192.0.2.4")
    assert t4.value().startswith(b"220 ")


def test_too_many_errors_421():
    """After max_errors error replies the server says 421 4.7.0 and closes."""
    c = Client(max_errors=3)
    replies = c.send(b"FROB\r\n" * 5)
    assert [r[0] for r in replies] == [500, 500, 500, 500, 421]
    assertReply(replies[-1], 421, "4.7.0")
    assert c.transport.disconnecting


def test_low_disk_452():
    """When free disk is too low, MAIL gets 452 4.3.1."""
    c = Client()
    c.ehlo()
    c.intake.capacityError = SMTPReply(452, "4.3.1", "Insufficient system storage")
    assertReply(c.one("MAIL FROM:<a@remote.test>\r\n"), 452, "4.3.1")


def test_disk_error_at_commit_is_temporary_451():
    """A disk error while storing gives 451 4.3.0 (retry later), never a 5xx bounce."""
    c = Client()
    c.startMail()
    c.intake.commitError = OSError(errno.ENOSPC, "No space left on device")
    assertReply(c.one(b"hello\r\n.\r\n"), 451, "4.3.0")
    assertReply(c.one("NOOP\r\n"), 250, "2.0.0")


def test_smtputf8_address_accepted():
    """A UTF-8 local part is accepted with SMTPUTF8 (RFC 6531)."""
    c = Client()
    c.ehlo()
    assertReply(c.one("MAIL FROM:<jürgen@remote.test> SMTPUTF8\r\n"), 250, "2.1.0")
    assertReply(c.one("RCPT TO:<jösé@example.org>\r\n"), 250, "2.1.5")


def test_utf8_address_without_smtputf8_553():
    """A UTF-8 address without SMTPUTF8 gets 553 5.6.7 (RFC 6531 §3.4)."""
    c = Client()
    c.ehlo()
    assertReply(c.one("MAIL FROM:<jürgen@remote.test>\r\n"), 553, "5.6.7")


def test_8bitmime_body_accepted():
    """BODY=8BITMIME is accepted and 8-bit text is stored unchanged."""
    c = Client()
    c.ehlo()
    assertReply(c.one("MAIL FROM:<a@remote.test> BODY=8BITMIME\r\n"), 250, "2.1.0")
    c.one("RCPT TO:<alice@example.org>\r\n")
    c.one("DATA\r\n")
    assertReply(c.one("Subject: x\r\n\r\nGrüße\r\n.\r\n".encode()), 250, "2.0.0")
    assert c.intake.committed[0][0].body == "8BITMIME"
    assert c.intake.committed[0][1].endswith("Grüße\r\n".encode())


def test_connection_lost_mid_data_aborts():
    """A client that disconnects during DATA leaves nothing stored."""
    c = Client()
    c.startMail()
    c.send(b"Subject: x\r\n\r\npartial")
    [message] = c.intake.opened
    c.proto.connectionLost(None)
    assert message.aborted
    assert c.intake.committed == []


def test_dsn_parameters_recorded():
    """NOTIFY, ORCPT, RET and ENVID (RFC 3461) are accepted and kept with the message."""
    c = Client()
    c.ehlo()
    assertReply(c.one("MAIL FROM:<a@remote.test> RET=HDRS ENVID=abc+2B1\r\n"), 250, "2.1.0")
    assertReply(
        c.one("RCPT TO:<alice@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+2Bx@example.org\r\n"),
        250, "2.1.5",
    )
    c.one("DATA\r\n")
    c.one("x\r\n.\r\n")
    envelope = c.intake.committed[0][0]
    assert (envelope.dsnRet, envelope.dsnEnvid) == ("HDRS", "abc+2B1")
    r = envelope.recipients[0]
    assert r.notify == ("SUCCESS", "FAILURE") and r.orcpt == "rfc822;alice+2Bx@example.org"


@pytest.mark.parametrize("params", ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "ORCPT=nosemicolon"])
def test_bad_dsn_parameters_501(params):
    """Malformed NOTIFY/ORCPT get 501 5.5.4."""
    c = Client()
    c.ehlo()
    c.one("MAIL FROM:<a@remote.test>\r\n")
    assertReply(c.one(f"RCPT TO:<alice@example.org> {params}\r\n"), 501, "5.5.4")


def test_smtputf8_transaction_protocol_is_utf8smtp():
    """
    A transaction with SMTPUTF8 is recorded as UTF8SMTP (RFC 6531 §3.7.4)
    for its Received line; the next one without it as ESMTP again.
    """
    c = Client()
    c.startMail(sender="<rené@remote.test> SMTPUTF8")
    c.one("Subject: x\r\n\r\nhi\r\n.\r\n")
    c.one("MAIL FROM:<a@remote.test>\r\n")
    c.one("RCPT TO:<alice@example.org>\r\n")
    c.one("DATA\r\n")
    c.one("Subject: y\r\n\r\nhi\r\n.\r\n")
    assert [e.session.protocol for e, _ in c.intake.committed] == ["UTF8SMTP", "ESMTP"]


def _spinGuard(proto, limit=50):
    """Make a spinning framing loop fail the test instead of hanging it."""
    step = proto._commandReceived
    calls = []

    def counted():
        calls.append(1)
        assert len(calls) < limit, "the command reader spins on an incomplete line"
        return step()

    proto._commandReceived = counted
    return calls


@pytest.mark.parametrize("first, second", [
    (b"NOOP", b"\r\n"),
    (b"NOOP\r", b"\n"),
    (b"EHLO x\r", b"\n"),
    (b"N", b"OOP\r\n"),
])
def test_command_split_across_reads_is_answered_once(first, second):
    """
    A command whose line ending arrives in a later TCP read gets no reply
    until then, and one reply after: the server does not freeze on it
    (issue 12: 100% CPU, no greeting on any port).
    """
    c = Client()
    _spinGuard(c.proto)
    assert c.send(first) == []
    replies = c.send(second)
    assert len(replies) == 1 and replies[0][0] == 250, replies
    # Another client is still greeted.
    assert c.reconnect().greeting[0][0] == 220


def test_bytes_left_after_refused_bdat_wait_for_their_line():
    """
    The bytes after a refused 'BDAT x' stay in command mode: an unfinished
    line there waits for its LF instead of freezing the server.
    """
    c = Client()
    c.ehlo()
    _spinGuard(c.proto)
    replies = c.send(b"BDAT x\r\nNOO")
    assert [r[0] for r in replies] == [501]
    assertReply(c.one(b"P\r\n"), 250, "2.0.0")
