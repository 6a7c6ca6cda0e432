"""
End-to-end tests: a real C{twistd pymailer} process on 127.0.0.1, real
clients (smtplib, swaks, raw sockets), the real message store (read back through it).

Each test starts its own server (see C{conftest.py} and L{mailserver}); a
test fails with the server's log in the message when it cannot start.
"""

import hashlib
import io
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import uuid

import pytest

from mailserver import (
    HOSTNAME, REPO_ROOT, binDir, freePort, portIsFree, subprocessEnv, waitFor)

DELIVERY_TIMEOUT = 10.0
MB = 1024 * 1024


# --- helpers -----------------------------------------------------------------

def token():
    return uuid.uuid4().hex


def makeMessage(tok, sender="sender@client.test", to="alice@example.org",
                extraBody=b""):
    """A small RFC 5322 message, CRLF-ended, that contains C{tok}."""
    return (
        f"From: <{sender}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: test {tok}\r\n"
        f"Message-ID: <{tok}@client.test>\r\n"
        "\r\n"
        f"token {tok}\r\n".encode()
        + extraBody
        + b"last line\r\n"
    )


def queueIdFrom(text):
    """The queue id from a C{250 2.0.0 Ok: queued as ID} reply text."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = re.search(r"queued as (\S+)", text)
    assert m, f"no queue id in {text!r}"
    return m.group(1)


def smtpSend(port, sender, recipients, message, mailOptions=(), ehlo="client.test"):
    """
    One transaction with smtplib's MAIL/RCPT/DATA (what C{sendmail} does),
    asserting a 250 at every step.

    @return: the queue id of the 250 to DATA.
    """
    with smtplib.SMTP("127.0.0.1", port, local_hostname=ehlo, timeout=60) as s:
        s.ehlo()
        code, text = s.mail(sender, list(mailOptions))
        assert code == 250, (code, text)
        for rcpt in recipients:
            code, text = s.rcpt(rcpt)
            assert code == 250, (rcpt, code, text)
        code, text = s.data(message)
        assert code == 250, (code, text)
        return queueIdFrom(text)


def waitDelivered(server, user, queueId, timeout=DELIVERY_TIMEOUT):
    """The octets of C{user}'s copy of queue id C{queueId} (our Received: names it)."""
    mark = re.compile(rb"^Received: .*?\bid " + re.escape(queueId.encode()) + rb"\b",
                      re.M | re.S)

    def find():
        hits = [data for data in server.messages(user) if mark.search(data[:4096])]
        return hits[0] if hits else None

    return waitFor(find, timeout, message=lambda: (
        f"queue id {queueId} in {user}'s INBOX ({len(server.messages(user))}"
        f" messages); queue: {server.queueEntries()}\n--- log ---\n{server.log()[-3000:]}"))


def traceBounds(data):
    """
    @return: C{(i, j)}: the Return-Path line is C{data[:i]}, the (folded)
        Received header C{data[i:j]} (with our Authentication-Results after
        it, if any: RFC 8601, inbound mail is judged), the message as sent
        C{data[j:]}.
    """
    assert data.startswith(b"Return-Path: <"), data[:200]
    i = data.index(b"\r\n") + 2
    assert data.startswith(b"Received: ", i), data[:400]
    j = _fieldEnd(data, i)
    if data.startswith(b"Authentication-Results: " + HOSTNAME.encode() + b";", j):
        j = _fieldEnd(data, j)
    return i, j


def _fieldEnd(data, start):
    j = data.index(b"\r\n", start) + 2
    while data[j:j + 1] in (b" ", b"\t"):
        j = data.index(b"\r\n", j) + 2
    return j


def checkDelivered(data, sender, recipient, sent, protocol="ESMTP"):
    """
    Assert that a delivered file is Return-Path, Received, then C{sent}
    byte for byte.
    """
    i, j = traceBounds(data)
    assert data[:i] == f"Return-Path: <{sender}>\r\n".encode("utf-8")
    received = data[i:_fieldEnd(data, i)].decode("utf-8")
    unfolded = re.sub(r"\r\n[ \t]+", " ", received)
    assert unfolded.endswith("\r\n") and "\r\n" not in unfolded[:-2], received
    assert f"by {HOSTNAME}" in unfolded, received
    assert f"with {protocol}" in unfolded, received
    assert f"for <{recipient}>" in unfolded, received
    assert data[j:] == sent


class RawSMTP:
    """An SMTP client on a bare socket: sends exactly the bytes given."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()
        assert self.greeting[0] == 220, self.greeting

    def reply(self):
        """@return: C{(code, [lines])} of one (multi-line) reply."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError(f"connection closed; got {lines}")
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def send(self, data):
        self.sock.sendall(data)

    def command(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.file.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- delivery ------------------------------------------------------------------

DOT_AND_8BIT_BODY = (
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x80\x94 8-bit UTF-8 \xe2\x9c\x93\r\n"
    b"\r\n"
)


@pytest.mark.parametrize("recipient", ["alice@example.org", "alice+news@example.org"])
def test_smtplib_delivers_byte_exact(mailserver, recipient):
    """
    A message sent with smtplib (BODY=8BITMIME, lines starting with '.',
    8-bit UTF-8 text) reaches alice's INBOX (also through alice+news)
    with Return-Path and Received trace headers and the message itself
    exactly as sent; if this fails, users get mangled, lost or misfiled
    mail.
    """
    tok = token()
    message = makeMessage(tok, to=recipient, extraBody=DOT_AND_8BIT_BODY)
    qid = smtpSend(mailserver.port, "sender@client.test", [recipient], message,
                   mailOptions=["BODY=8BITMIME"])
    data = waitDelivered(mailserver, "alice@example.org", qid)
    checkDelivered(data, "sender@client.test", recipient, message)
    assert mailserver.messages("bob@example.org") == []


def test_swaks_delivers_byte_exact(mailserver, tmp_path):
    """
    A message sent by swaks (another SMTP implementation, which dot-stuffs
    on its own) arrives byte-exact after dot-unstuffing; if this fails,
    mail from real-world clients is corrupted.
    """
    tok = token()
    # No final newline: swaks adds the CRLF before the terminating dot.
    content = makeMessage(tok, sender="swaks@client.test",
                          extraBody=b".dot line\r\n..double\r\n")[:-2]
    dataFile = tmp_path / "message.eml"
    dataFile.write_bytes(content)
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{mailserver.port}",
         "--to", "alice@example.org", "--from", "swaks@client.test",
         "--helo", "swaks.client.test", "--data", f"@{dataFile}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    qid = queueIdFrom(re.search(r"<-  250 2\.0\.0 Ok: queued as \S+",
                                result.stdout).group(0))
    data = waitDelivered(mailserver, "alice@example.org", qid)
    checkDelivered(data, "swaks@client.test", "alice@example.org", content + b"\r\n")
    assert b"from swaks.client.test" in data[:traceBounds(data)[1]]


def test_smtputf8_to_utf8_local_user(mailserver):
    """
    smtplib.sendmail with SMTPUTF8 from a UTF-8 sender to the UTF-8 local
    user jösé@example.org is delivered into jösé's INBOX; if this fails,
    users with non-ASCII addresses cannot receive mail.
    """
    mailserver.addUser("jösé@example.org")
    tok = token()
    message = makeMessage(tok, to="jösé@example.org").replace(
        b"last line", "grüße, rené".encode())
    with smtplib.SMTP("127.0.0.1", mailserver.port, local_hostname="client.test",
                      timeout=30) as s:
        refused = s.sendmail("rené@client.test", ["jösé@example.org"], message,
                             mail_options=["SMTPUTF8"])
    assert refused == {}

    def delivered():
        return [data for data in mailserver.messages("jösé@example.org")
                if tok.encode() in data]

    files = waitFor(delivered, DELIVERY_TIMEOUT, message="jösé's copy")
    assert len(files) == 1
    # RFC 6531 §3.7.4: the hop is stamped UTF8SMTP, not ESMTP.
    checkDelivered(files[0], "rené@client.test", "jösé@example.org",
                   message, protocol="UTF8SMTP")


def test_alias_delivers_one_copy_to_each_target(mailserver):
    """
    Mail to the alias sales@example.org (-> alice, bob) gives each of them
    exactly one copy; if this fails, team addresses lose or duplicate mail.
    """
    result = mailserver.admin("alias", "add", "sales@example.org",
                              "alice@example.org", "bob@example.org")
    assert "sales@example.org" in result.stdout
    tok = token()
    message = makeMessage(tok, to="sales@example.org")
    qid = smtpSend(mailserver.port, "customer@client.test", ["sales@example.org"],
                   message)
    for user in ("alice@example.org", "bob@example.org"):
        data = waitDelivered(mailserver, user, qid)
        checkDelivered(data, "customer@client.test",
                       "sales@example.org", message)
    mailserver.waitQueueEmpty()
    for user in ("alice@example.org", "bob@example.org"):
        copies = [data for data in mailserver.messages(user) if tok.encode() in data]
        assert len(copies) == 1, (user, copies)


def test_user_added_while_running_receives_at_once(mailserver):
    """
    A user added with `pymailer user add` while the server runs is refused
    before and receives mail right after, without a restart; if this
    fails, new accounts only work after restarting the server.
    """
    with smtplib.SMTP("127.0.0.1", mailserver.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("sender@client.test")
        code, text = s.rcpt("carol@example.org")
        assert (code, text[:5]) == (550, b"5.1.1"), (code, text)
    mailserver.addUser("carol@example.org")
    tok = token()
    message = makeMessage(tok, to="carol@example.org")
    qid = smtpSend(mailserver.port, "sender@client.test", ["carol@example.org"],
                   message)
    data = waitDelivered(mailserver, "carol@example.org", qid)
    checkDelivered(data, "sender@client.test", "carol@example.org",
                   message)


def test_removed_domain_is_refused(mailserver):
    """
    After `pymailer domain remove other.test`, the running server refuses
    mail for its former users (550 5.1.1 or 554 5.7.1) instead of
    accepting it; if this fails, a dropped domain keeps receiving mail.
    """
    mailserver.admin("domain", "add", "other.test")
    mailserver.addUser("dave@other.test")
    qid = smtpSend(mailserver.port, "sender@client.test", ["dave@other.test"],
                   makeMessage(token(), to="dave@other.test"))
    waitDelivered(mailserver, "dave@other.test", qid)
    mailserver.admin("domain", "remove", "other.test")
    with smtplib.SMTP("127.0.0.1", mailserver.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("sender@client.test")
        code, text = s.rcpt("dave@other.test")
    assert (code, text[:5]) in ((550, b"5.1.1"), (554, b"5.7.1")), (code, text)


# --- refusals --------------------------------------------------------------------

def test_relay_refused(mailserver):
    """
    RCPT to a domain that is not ours gets 554 5.7.1 relay denied; if this
    fails, the server is an open relay for spammers.
    """
    with smtplib.SMTP("127.0.0.1", mailserver.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("sender@client.test")
        code, text = s.rcpt("x@elsewhere.test")
    assert code == 554 and text.startswith(b"5.7.1"), (code, text)


OPEN_RELAY_TRICKS = [
    "<u%evil.test@example.org>",
    "<@a.test:u@evil.test>",
    '<"u@evil.test"@example.org>',
    "<u@example.org@evil.test>",
    "<u!evil.test@example.org>",
    "<evil.test!u@example.org>",
    "<u@evil.test,@example.org>",
    "<@example.org:u@evil.test>",
]


def test_open_relay_matrix_refused(mailserver):
    """
    The classic open-relay address tricks (percent hack, source routes,
    quoted '@', double '@', bang paths) are all refused at RCPT (4xx/5xx,
    never 250), DATA cannot follow, and nothing is queued or delivered; if
    this fails, spammers can relay through the server.
    """
    accepted = []
    with smtplib.SMTP("127.0.0.1", mailserver.port, timeout=30) as s:
        s.ehlo("client.test")
        for address in OPEN_RELAY_TRICKS:
            code, text = s.docmd("MAIL", "FROM:<sender@client.test>")
            assert code == 250, (code, text)
            code, text = s.docmd("RCPT", f"TO:{address}")
            if not 400 <= code < 600:
                accepted.append((address, code, text))
            code, text = s.docmd("DATA")
            if code == 354:
                s.send(makeMessage(token()) + b".\r\n")
                accepted.append((address, "DATA", s.getreply()))
            code, _ = s.docmd("RSET")
            assert code == 250
    assert accepted == []
    assert mailserver.queueEntries(
        ("incoming", "active", "deferred", "hold", "corrupt", "data")) == {}
    assert mailserver.allMessages() == []


def test_unknown_user_refused(mailserver):
    """
    RCPT to a non-existent local user gets 550 5.1.1; if this fails, mail
    to typos is accepted and then lost or bounced later.
    """
    with smtplib.SMTP("127.0.0.1", mailserver.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("sender@client.test")
        code, text = s.rcpt("nobody@example.org")
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)


def test_mail_log_has_a_record_per_message_and_refusal(mailserver):
    """
    The server's log has one line for an accepted message (its queue id,
    sender, recipients, size and the result: delivered at once into local
    mailboxes) and one for a refused RCPT: what an operator greps for when
    a sender asks where a message went.
    """
    tok = token()
    queueId = smtpSend(mailserver.port, "carol@client.test",
                       ["alice@example.org", "bob@example.org"], makeMessage(tok))
    with smtplib.SMTP("127.0.0.1", mailserver.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("dave@client.test")
        assert s.rcpt("nobody@example.org")[0] == 550
    # The refusal came last: once it is logged, so is the accepted message.
    mailserver.waitForLog("result=refused stage=RCPT")
    log = mailserver.log(settle=0)
    accepted = [line for line in log.splitlines() if f"qid={queueId}" in line]
    assert len(accepted) == 1, log[-3000:]
    assert re.search(
        rf"\[pymailer.mail#info\] result=delivered qid={queueId} from=<carol@client.test> "
        r"to=<alice@example.org>,<bob@example.org> size=\d+ client=127.0.0.1 "
        r"listener=smtp$", accepted[0]), accepted[0]
    assert re.search(
        r"\[pymailer.mail#info\] result=refused stage=RCPT code=550 enhanced=5.1.1 "
        r"reason=unknown_recipient from=<dave@client.test> to=<nobody@example.org> "
        r"client=127.0.0.1 listener=smtp text=", log), log[-3000:]


def test_delivery_within_a_second_under_load(mailserver):
    """
    While eight clients send mail as fast as they can (a new connection per
    message), a message accepted is in the mailbox within a second: the
    accept path's batching must not hold deliveries back.
    """
    import threading
    import time

    stop = threading.Event()
    errors = []

    def load():
        while not stop.is_set():
            try:
                smtpSend(mailserver.port, "bulk@client.test", ["alice@example.org"],
                         makeMessage(token()))
            except Exception as e:  # reported below
                errors.append(e)
                return

    senders = [threading.Thread(target=load) for _ in range(8)]
    for t in senders:
        t.start()
    latencies = []
    try:
        # The load is on: mail from it is arriving.
        waitFor(lambda: errors or len(mailserver.messages("alice")) >= 16, 30,
                message="the load's first messages")
        for _ in range(5):
            before = len(mailserver.messages("bob"))
            smtpSend(mailserver.port, "probe@client.test", ["bob@example.org"],
                     makeMessage(token()))
            accepted = time.monotonic()
            waitFor(lambda: len(mailserver.messages("bob")) > before, 10, interval=0.01)
            latencies.append(time.monotonic() - accepted)
    finally:
        stop.set()
        for t in senders:
            t.join()
    assert errors == []
    latencies.sort()
    assert latencies[len(latencies) // 2] < 1.0, latencies


def test_peer_connecting_per_message_is_never_throttled(mailserver):
    """
    With the default config, 200 connections one after the other from one
    IP (a peer MTA opening a connection per message) are all greeted with
    220; if this fails, a stock Postfix sending us a burst of mail is
    deferred for minutes.
    """
    greetings = []
    for _ in range(200):
        s = smtplib.SMTP(timeout=30)
        greetings.append(s.connect("127.0.0.1", mailserver.port))
        s.close()
    refused = [g for g in greetings if g[0] != 220]
    assert refused == [], f"{len(refused)} of 200 refused: {refused[0]}"


def test_directory_harvest_cut_off(mailserver):
    """
    A client guessing addresses gets 550 5.1.1 for 20 of them, then
    421 4.7.1 and the connection closes; a new connection from the same
    IP then gets 450 even for a real user, so the guesser learns nothing.
    """
    codes = []
    with smtplib.SMTP("127.0.0.1", mailserver.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("sender@client.test")
        for i in range(30):
            try:
                code, text = s.rcpt(f"guess{i}@example.org")
            except smtplib.SMTPServerDisconnected:
                break
            codes.append(code)
    assert codes == [550] * 20 + [421], codes
    with smtplib.SMTP("127.0.0.1", mailserver.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("sender@client.test")
        code, text = s.rcpt("alice@example.org")
    assert code == 450 and text.startswith(b"4.7.1"), (code, text)


SMALL_LIMIT = 100000


@pytest.fixture
def smallServer(makeMailServer):
    return makeMailServer(smtp={"max_message_size": SMALL_LIMIT})


def bigMessage(tok, size):
    line = b"x" * 76 + b"\r\n"
    return makeMessage(tok, extraBody=line * (size // len(line) + 1))


def test_declared_size_over_limit_refused_at_mail(smallServer):
    """
    MAIL FROM with SIZE over max_message_size gets 552 5.3.4 at once
    (RFC 1870); if this fails, clients upload huge messages only to have
    them refused, or the limit is not enforced.
    """
    with smtplib.SMTP("127.0.0.1", smallServer.port, timeout=30) as s:
        code, text = s.ehlo("client.test")
        assert f"SIZE {SMALL_LIMIT}".encode() in text
        code, text = s.mail("sender@client.test", [f"SIZE={SMALL_LIMIT + 1}"])
        assert code == 552 and text.startswith(b"5.3.4"), (code, text)
        code, text = s.mail("sender@client.test", [f"SIZE={SMALL_LIMIT}"])
        assert code == 250, (code, text)


def test_oversize_message_without_size_refused_after_data(smallServer):
    """
    A message over max_message_size sent without SIZE gets 552 5.3.4 after
    the data and is neither delivered nor left in the spool, while a
    message under the limit on the same connection still goes through; if
    this fails, the size limit can be bypassed or fills the disk.
    """
    tok = token()
    with smtplib.SMTP("127.0.0.1", smallServer.port, timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail("sender@client.test")[0] == 250
        assert s.rcpt("alice@example.org")[0] == 250
        code, text = s.data(bigMessage(tok, 2 * SMALL_LIMIT))
        assert code == 552 and text.startswith(b"5.3.4"), (code, text)
        okTok = token()
        small = makeMessage(okTok)
        assert s.mail("sender@client.test")[0] == 250
        assert s.rcpt("alice@example.org")[0] == 250
        code, text = s.data(small)
        assert code == 250, (code, text)
    waitDelivered(smallServer, "alice@example.org", queueIdFrom(text))
    smallServer.waitQueueEmpty()
    found = smallServer.messages("alice@example.org")
    assert len(found) == 1 and tok.encode() not in found[0]
    assert os.listdir(smallServer.queueDir("data")) == []


# --- a 50 MB message --------------------------------------------------------------

BIG_SIZE = 50 * 1000 * 1000
RSS_LIMIT = 150 * MB


def generateBigBody(size, tok):
    """
    Yield C{(wireChunk, messageChunk)}: about C{size} octets of message in
    80-octet lines, every 997th starting with a dot (stuffed on the wire).
    """
    chunk, wire = [], []
    total = n = 0
    header = (f"Subject: big {tok}\r\nMessage-ID: <{tok}@client.test>\r\n\r\n"
              .encode())
    chunk.append(header)
    wire.append(header)
    total = len(header)
    while total < size:
        line = b"%010d " % n + b"abcdefghijklmnopqrstuvwxyz0123456789" * 2 + b"\r\n"
        if n % 997 == 0:
            line = b"." + line[1:]
            wire.append(b"." + line)
        else:
            wire.append(line)
        chunk.append(line)
        total += len(line)
        n += 1
        if len(chunk) >= 8192:
            yield b"".join(wire), b"".join(chunk)
            chunk, wire = [], []
    trailer = f"END {tok}\r\n".encode()
    chunk.append(trailer)
    wire.append(trailer)
    yield b"".join(wire), b"".join(chunk)


def test_50mb_message_byte_exact_with_bounded_memory(mailserver):
    """
    A 50 MB message streamed over SMTP is delivered byte-exact and the
    server's peak RSS stays under 150 MB; if this fails, big attachments
    are corrupted or the server's memory grows with message size (and a
    few concurrent big messages would exhaust it).
    """
    if shutil.disk_usage(mailserver.dataDir).free < 400 * MB:
        pytest.skip("needs 400 MB of free disk")
    tok = token()
    baseline = mailserver.peakRSS()
    digest = hashlib.sha256()
    length = 0
    with RawSMTP(mailserver.port, timeout=120) as c:
        assert c.command(b"EHLO client.test")[0] == 250
        assert c.command(b"MAIL FROM:<big@client.test> BODY=8BITMIME")[0] == 250
        assert c.command(b"RCPT TO:<alice@example.org>")[0] == 250
        assert c.command(b"DATA")[0] == 354
        for wire, plain in generateBigBody(BIG_SIZE, tok):
            c.send(wire)
            digest.update(plain)
            length += len(plain)
        code, lines = c.command(b".")
        assert code == 250, lines
    qid = queueIdFrom(lines[0])
    data = waitDelivered(mailserver, "alice@example.org", qid, timeout=120)
    peak = mailserver.peakRSS()
    with io.BytesIO(data) as f:
        head = f.read(64 * 1024)
        _, j = traceBounds(head)
        got = hashlib.sha256(head[j:])
        gotLength = len(head) - j
        while block := f.read(1 << 20):
            got.update(block)
            gotLength += len(block)
    assert head[j:].startswith(f"Subject: big {tok}\r\n".encode())
    assert (gotLength, got.hexdigest()) == (length, digest.hexdigest())
    print(f"50 MB message: server VmHWM {peak / MB:.1f} MB"
          f" (before the message {baseline / MB:.1f} MB)")
    assert peak < RSS_LIMIT, (
        f"server peak RSS (VmHWM) {peak / MB:.1f} MB >= {RSS_LIMIT / MB:.0f} MB"
        f" (baseline {baseline / MB:.1f} MB)")


# --- SMTP smuggling -------------------------------------------------------------

# hannob's nine malformed end-of-data sequences.
SMUGGLING_ENDINGS = [
    b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n",
    b"\r.\r\n", b"\r\n.\r", b"\r\n\x00.\r\n",
]


def test_smuggling_endings_never_accepted(mailserver):
    """
    For each of the nine malformed end-of-data sequences followed by a
    smuggled MAIL/RCPT/DATA and a proper CRLF.CRLF, the server answers the
    message with 554 5.6.0 (never 250), runs none of the smuggled commands
    and delivers nothing; if this fails, an attacker can inject forged
    mail through an outbound server that reads endings differently
    (SMTP smuggling, CVE-2023-51764 class).
    """
    problems = []
    for ending in SMUGGLING_ENDINGS:
        tok = token()
        payload = (
            f"From: <honest@client.test>\r\nSubject: {tok}\r\n\r\nbody".encode()
            + ending
            + b"MAIL FROM:<evil@x.test>\r\n"
            + b"RCPT TO:<bob@example.org>\r\n"
            + b"DATA\r\n"
            + f"From: <ceo@example.org>\r\nSubject: smuggled {tok}\r\n\r\n"
              "smuggled\r\n".encode()
            + b"\r\n.\r\n"
        )
        with RawSMTP(mailserver.port) as c:
            assert c.command(b"EHLO client.test")[0] == 250
            assert c.command(b"MAIL FROM:<honest@client.test>")[0] == 250
            assert c.command(b"RCPT TO:<alice@example.org>")[0] == 250
            assert c.command(b"DATA")[0] == 354
            c.send(payload)
            replies = [c.reply()]
            # Everything the server says until our NOOP's answer: one
            # extra reply means a smuggled command ran.
            c.send(b"NOOP\r\n")
            while replies[-1][1] != [b"250 2.0.0 Ok"] and len(replies) < 6:
                replies.append(c.reply())
        expected = [(554, replies[0][1]), (250, [b"250 2.0.0 Ok"])]
        if (replies != expected
                or not replies[0][1][0].startswith(b"554 5.6.0")):
            problems.append((ending, replies))
    assert problems == []
    mailserver.waitQueueEmpty()
    assert mailserver.allMessages() == []
    assert os.listdir(mailserver.queueDir("data")) == []


# --- configuration and start-up ---------------------------------------------------

def test_bad_config_key_is_one_line_error(tmp_path):
    """
    `twistd pymailer --config F` with an unknown key exits non-zero with a
    one-line error naming the file and the key, and `pymailer check-config`
    prints the same line; if this fails, a typo in the config starts a
    server with defaults or gives a traceback instead of a clear message.
    """
    bad = tmp_path / "bad.toml"
    port = freePort()  # must never be bound: the config is refused first
    bad.write_text(
        'hostname = "mail.example.org"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        "[listen]\n"
        f'smtp = "tcp:{port}:interface=127.0.0.1"\n'
        "[smtp]\n"
        "max_mesage_size = 1000\n"
    )
    expected = f"{bad}: smtp.max_mesage_size: unknown key"
    env = subprocessEnv()
    twistd = subprocess.run(
        [str(binDir() / "twistd"), "-n", "--pidfile=", "pymailer",
         "--config", str(bad)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    output = twistd.stdout + twistd.stderr
    assert twistd.returncode != 0, output
    assert output.splitlines() == [f"pymailer: error: {expected}"], output
    check = subprocess.run(
        [sys.executable, "-m", "pymailer", "--config", str(bad), "check-config"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert check.returncode == 1
    assert check.stdout == ""
    assert check.stderr == f"pymailer: error: {expected}\n"
    assert not (tmp_path / "data").exists()


def test_tac_file_accepts_mail(makeMailServer):
    """
    `PYMAILER_CONFIG=F twistd -ny etc/pymailer.tac` runs the same server
    and delivers mail; if this fails, the documented .tac deployment is
    broken.
    """
    server = makeMailServer(start=False)
    server.twistdArgs = ["-y", str(REPO_ROOT / "etc" / "pymailer.tac")]
    server.extraEnv = {"PYMAILER_CONFIG": str(server.configPath)}
    server.start()
    server.waitForLog(f"config {server.configPath}")
    tok = token()
    message = makeMessage(tok)
    qid = smtpSend(server.port, "tac@client.test", ["alice@example.org"], message)
    data = waitDelivered(server, "alice@example.org", qid)
    checkDelivered(data, "tac@client.test", "alice@example.org", message)


def test_embedded_default_config(makeMailServer, tmp_path):
    """
    `twistd -n pymailer` without --config starts on the embedded default:
    it prints every listener (2525, 2587, 2465, 1143, 1993, 1110, 1995),
    answers SMTP on 127.0.0.1:2525 and keeps its data in ./pymailer-data;
    if this fails, the zero-configuration trial run is broken.
    """
    if not portIsFree(2525):
        pytest.skip("127.0.0.1:2525 is in use")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    server = makeMailServer("default", provision=False, start=False, port=2525,
                            twistdArgs=["pymailer"], cwd=cwd)
    server.start()
    server.waitForLog("pymailer: config embedded default")
    for port in (2525, 2587, 2465, 1143, 1993, 1110, 1995):
        server.waitForLog(re.compile(rf"^pymailer: \w+ +\w+:{port}:interface=127\.0\.0\.1", re.M))
    assert (cwd / "pymailer-data").is_dir()
    # twistd re-raises the SIGTERM it handled, after a clean shutdown.
    assert server.stop() in (0, -15)
    assert "Server Shut Down." in server.log()


def test_port_in_use_stops_the_server(tmp_path):
    """If a listener's port is taken, twistd exits with the error instead of running without it."""
    from mailserver import MailServer

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        server = MailServer(tmp_path / "s", port=blocker.getsockname()[1])
        result = subprocess.run(server.command(), env=subprocessEnv(), capture_output=True,
                                text=True, timeout=60, cwd=str(server.root))
    finally:
        blocker.close()
    assert result.returncode != 0
    assert "Address already in use" in result.stdout + result.stderr
