"""
The crash test: SIGKILL a real pymailer server while eight clients send
mail, restart it on the same data directory, and check that every message
acknowledged with 250 is delivered exactly once and complete, and that
nothing half-written is visible, on the SQLite and the Maildir backend.
"""

import os
import re
import smtplib
import threading
import uuid

import pytest

from mailserver import QUEUE_STATES, waitFor

THREADS = 8
PER_THREAD = 25  # 200 messages in all
KILL_AFTER = 60  # accepted messages before the SIGKILL
# Two rounds by default; PYMAILER_CRASH_ROUNDS=20 for a longer hunt.
ROUNDS = int(os.environ.get("PYMAILER_CRASH_ROUNDS", "2"))
USERS = ("alice@example.org", "bob@example.org")
# pymailer.fsutil.writeDurably's temporary file: ID.json.<pid>.<thread>.tmp
TEMP_ENVELOPE = re.compile(r"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+\.json\.\d+\.\d+\.tmp")


def message(tok, recipient):
    """The message for one token; its last line is the trailer."""
    # About 32 KB, so that the kill often lands inside a Maildir write.
    filler = "".join(f"line {i:03d} of {tok} {'x' * 50}\r\n" for i in range(400))
    return (
        f"From: <crash@client.test>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: crash test {tok}\r\n"
        f"Message-ID: <{tok}@client.test>\r\n"
        "\r\n"
        f"token {tok}\r\n"
        f"{filler}"
        f"END {tok}\r\n"
    ).encode()


def tokenOf(data):
    """The token of a delivered file (from its Message-ID), or C{None}."""
    start = data.find(b"Message-ID: <")
    if start < 0:
        return None
    end = data.find(b"@client.test>", start)
    return data[start + len(b"Message-ID: <"):end].decode() if end > 0 else None


class Clients:
    """THREADS smtplib clients, each sending PER_THREAD messages."""

    def __init__(self, port, roundNo):
        self.port = port
        self.roundNo = roundNo
        self.cond = threading.Condition()
        self.accepted = {}  # token -> (recipient, queue id)
        self.refused = []  # (token, code, text): non-250 replies
        self.errors = []  # exceptions (expected once the server is killed)
        self.finished = 0
        self.threads = [threading.Thread(target=self.run, args=(t,), daemon=True)
                        for t in range(THREADS)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self, timeout=30):
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "client thread hung"

    def run(self, t):
        try:
            with smtplib.SMTP("127.0.0.1", self.port, local_hostname="crash.client.test",
                              timeout=15) as s:
                s.ehlo()
                for i in range(PER_THREAD):
                    recipient = USERS[i % 2]
                    tok = f"r{self.roundNo}t{t}m{i}x{uuid.uuid4().hex[:12]}"
                    code, text = s.mail("crash@client.test")
                    if code == 250:
                        code, text = s.rcpt(recipient)
                    if code == 250:
                        code, text = s.data(message(tok, recipient))
                    if code != 250:
                        with self.cond:
                            self.refused.append((tok, code, text))
                        s.rset()
                        continue
                    qid = text.decode().rsplit(" ", 1)[1]
                    with self.cond:
                        self.accepted[tok] = (recipient, qid)
                        self.cond.notify_all()
        except (smtplib.SMTPException, OSError) as e:
            with self.cond:
                self.errors.append(e)
        finally:
            with self.cond:
                self.finished += 1
                self.cond.notify_all()


def delivered(server, user, backend):
    """
    C{[(octets, where)]} of C{user}'s INBOX, read through the store; on
    the Maildir backend also a problem for a file also left in C{tmp/}.
    """
    if backend != "maildir":
        return [(data, f"{user} message {n}")
                for n, data in enumerate(server.messages(user))], []
    base = server.maildir(user)
    tmpNames = set(os.listdir(base / "tmp"))
    problems = [f"{path}: also present in tmp/" for path in server.maildirFiles(user)
                if path.name.split(":")[0] in tmpNames]
    return [(path.read_bytes(), path) for path in server.maildirFiles(user)], problems


def crashRound(makeMailServer, roundNo, backend):
    server = makeMailServer(f"round{roundNo}{backend}",
                            sections={"storage": {"backend": backend}})
    clients = Clients(server.port, roundNo)
    clients.start()
    with clients.cond:
        enough = clients.cond.wait_for(
            lambda: len(clients.accepted) >= KILL_AFTER
            or clients.finished == THREADS,
            timeout=40)
        acceptedAtKill = len(clients.accepted)
    assert enough and acceptedAtKill >= KILL_AFTER, (
        f"only {acceptedAtKill} accepted before the kill; errors {clients.errors[:3]};"
        f" refused {clients.refused[:3]}\n{server.log()[-3000:]}")
    server.kill9()
    clients.join()
    assert clients.refused == [], clients.refused[:5]

    server.start()
    # Envelopes only: a temporary envelope file left by the kill is litter
    # the queue never looks at (see test_recovery_removes_temporary_envelopes).
    server.waitQueueEmpty(timeout=30, envelopesOnly=True)
    waitFor(lambda: os.listdir(server.queueDir("data")) == [], 10,
            message=lambda: f"spool data/ to empty: "
                            f"{os.listdir(server.queueDir('data'))}")
    litter = server.queueEntries(QUEUE_STATES + ("hold", "corrupt"))
    for state, names in litter.items():
        odd = [n for n in names if not TEMP_ENVELOPE.fullmatch(n)]
        assert odd == [], f"unexpected files left in queue/{state}: {odd}"

    # Every delivered message, by token.
    copies = {}
    problems = []
    for user in USERS:
        found, odd = delivered(server, user, backend)
        problems += odd
        for data, where in found:
            tok = tokenOf(data)
            if tok is None:
                problems.append(f"{where}: no token (truncated at {len(data)} octets?)")
                continue
            copies.setdefault(tok, []).append((user, where, data))
            if not data.endswith(message(tok, user)):
                problems.append(f"{where}: not the complete message as sent"
                                f" ({len(data)} octets, ends {data[-40:]!r})")

    for tok, (recipient, qid) in clients.accepted.items():
        found = copies.get(tok, [])
        if len(found) != 1:
            problems.append(f"acknowledged {tok} (queue id {qid}) found"
                            f" {len(found)} times: {found}")
            continue
        user, where, data = found[0]
        if user != recipient:
            problems.append(f"{tok} for {recipient} delivered to {user}")
        # Our Received: line names the queue id the 250 gave.
        if f" id {qid}".encode() not in data[:data.find(b"\r\n\r\n")]:
            problems.append(f"{tok}: {where} does not carry queue id {qid}")
    for tok, found in copies.items():
        if tok not in clients.accepted and len(found) > 1:
            problems.append(f"unacknowledged {tok} delivered {len(found)} times")

    summary = (f"{backend} round {roundNo}: {acceptedAtKill} accepted at the kill,"
               f" {len(clients.accepted)} in all, {len(copies)} distinct messages"
               f" delivered, {len(clients.errors)} client errors,"
               f" stale temporary envelopes {litter or 'none'}")
    print(summary)
    assert problems == [], summary + "\n" + "\n".join(problems[:20])
    assert server.stop() in (0, -15)


@pytest.mark.parametrize("backend", ["sqlite", "maildir"])
def test_sigkill_during_load_loses_and_duplicates_nothing(makeMailServer, backend):
    """
    Eight clients send 200 messages; the server is SIGKILLed after about 60
    were acknowledged and restarted on the same data directory.  Every
    message that got a 250 must be in its recipient's INBOX exactly once
    and complete (on the Maildir backend: no partial file visible in new/
    or cur/), and the spool must be empty after recovery.  If this fails,
    a crash or power cut loses mail the server promised to deliver,
    delivers it twice, or shows users truncated messages.  (Two rounds per
    backend, fresh server each.)
    """
    for roundNo in range(ROUNDS):
        crashRound(makeMailServer, roundNo, backend)


def test_recovery_removes_temporary_envelopes(makeMailServer):
    """
    A half-written envelope (the temporary file of an atomic write cut
    short by a crash) and its never-acknowledged data file are both
    removed when the server starts again; if this fails, every crash
    leaves litter in the queue directories that nothing ever cleans up and
    that confuses operators counting queued mail.
    """
    server = makeMailServer()
    server.stop()
    qid = "0660e9753fca56-2b5e-3c"
    stale = server.queueDir("incoming") / f"{qid}.json.4242.139933784204992.tmp"
    stale.write_bytes(b'{"queueId": "' + qid.encode())
    orphan = server.queueDir("data") / qid
    orphan.write_bytes(b"Subject: never acknowledged\r\n")
    server.start()
    waitFor(lambda: not orphan.exists(), 10, message="the orphan data file to go")
    server.waitQueueEmpty(timeout=10, envelopesOnly=True)
    assert not stale.exists()


def test_crash_inside_defer_delivers_once(makeMailServer):
    """
    A message whose envelope is in both active/ and deferred/ (the state a
    crash inside Spool.defer leaves: new envelope written, old one not yet
    removed) is delivered exactly once after the restart, and its delivery
    state is recorded without error; if this fails, a crash while mail is
    being deferred makes users receive the message twice.
    """
    server = makeMailServer()
    # The alias forwards off-site; the forwarded copy cannot be relayed
    # (the test server's DNS answers nothing), so it is deferred.
    server.admin("alias", "add", "team@example.org", "x@remote.test")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as s:
        s.sendmail("sender@client.test", ["team@example.org"],
                   message("defer1", "team@example.org"))
    deferred = waitFor(lambda: server.queueEnvelopes().get("deferred"), 10,
                       message="the message to be deferred")
    server.stop()
    qid = deferred[0]
    # Make the deferred copy deliverable locally on restart.
    server.admin("domain", "add", "remote.test")
    server.addUser("x@remote.test")
    envelope = server.queueDir("deferred") / f"{qid}.json"
    (server.queueDir("active") / f"{qid}.json").write_bytes(envelope.read_bytes())
    past = os.stat(envelope).st_mtime - 3600
    os.utime(envelope, (past, past))  # and its retry is due
    server.start()
    server.waitQueueEmpty(timeout=10, envelopesOnly=True)
    server.stop()  # waits for deliveries in flight
    copies = server.messages("x@remote.test")
    assert len(copies) == 1, [data[:300] for data in copies]
    assert "could not record delivery state" not in server.log()
