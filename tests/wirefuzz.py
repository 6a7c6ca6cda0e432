"""
A protocol fuzzer for the four listeners (C{tests/test_fuzz.py} runs it
briefly, C{bench/fuzz.py} for minutes).

Inputs are sessions built from each protocol's commands with random and
hostile arguments (8-bit and NUL bytes, overlong lines, literals of every
size, huge and malformed sequence sets, deep nesting, bogus BDAT sizes), then
mutated at the byte level (flips, inserted CR/LF/NUL/0xFF, cut and doubled
spans), fed to one server in random read sizes.  A finding is anything a
user would call a server bug:

  - C{stall}: one read cost more than L{wireharness.STALL_SECONDS} of CPU;
  - C{crash}: an exception escaped C{dataReceived};
  - C{traceback}: something was logged with a failure (C{log.failure});
  - C{reply}: a reply outside the RFC's form (an SMTP 4xx/5xx without its
    enhanced code, IMAP C{NO [SERVERBUG]}, a POP3 internal error);
  - C{deaf}: after a batch, a fresh connection got no greeting or answer.
"""

import random
import re
import time
from collections import Counter

from wireharness import (
    MESSAGE, SESSIONS, WORLDS, Stalled, describe, failuresLogged, fastDisk, plain, splitAt,
)
from imapharness import PASSWORD as IMAP_PASSWORD, USER as IMAP_USER
from test_pop3_server import ALICE, PASSWORD as POP3_PASSWORD

NASTY = [b"\x00", b"\xff", b"\r", b"\n", b"\r\n", b"\xc3\xa9", b" ", b"\t", b'"', b"\\",
         b"(", b")", b"{", b"}", b"[", b"]", b"*", b"%", b"<", b">", b".", b":", b","]


def _lines(sessions):
    """The recorded sessions' lines, each with its line ending."""
    out = []
    for s in sessions:
        out += [line for line in s.splitlines(keepends=True) if line]
    return out


class Generator:
    """Random inputs for one protocol."""

    def __init__(self, name, rng):
        self.name = name
        self.rng = rng
        self.corpus = _lines(SESSIONS[name])

    # -- pieces ---------------------------------------------------------------

    def junk(self, most=40):
        r = self.rng
        return b"".join(r.choice(NASTY) if r.random() < 0.3 else bytes([r.randrange(256)])
                        for _ in range(r.randrange(most + 1)))

    def word(self):
        r = self.rng
        choice = r.random()
        if choice < 0.5:
            return r.choice([b"INBOX", b"x", b"a/b", b"&AOk-", b"Sent", b"0", b"1", b"*",
                             b"4294967295", b"4294967296", b"-1", b"99999999999999999999",
                             b"alice@example.org", b"<alice@example.org>", b"<>", b"NIL"])
        if choice < 0.8:
            return bytes(r.choice(b"abcXYZ019*%./-_=+:,") for _ in range(r.randrange(1, 12)))
        return self.junk(12)

    def numberSet(self):
        r = self.rng
        kind = r.randrange(5)
        count = r.choice([1, 3, 100, 3000])
        if kind == 0:
            return b",".join(b"%d" % r.randrange(1, 5000) for _ in range(count))
        if kind == 1:
            return b",".join([b"1:*"] * count)
        if kind == 2:
            return b",".join([b"1:4294967295"] * min(count, 1000))
        if kind == 3:
            return r.choice([b"0", b"0:*", b"*:0", b"1:", b":", b",", b"1,,2", b"4294967296"])
        return b"%d:%d" % (r.randrange(0, 10), r.randrange(0, 2**32 + 2))

    def line(self, *words):
        return b" ".join(words) + (b"\r\n" if self.rng.random() < 0.95 else
                                   self.rng.choice([b"\n", b"\r", b"", b"\r\r\n"]))

    # -- commands -------------------------------------------------------------

    def smtpCommand(self):
        r = self.rng
        verb = r.choice([b"EHLO", b"HELO", b"MAIL", b"RCPT", b"DATA", b"BDAT", b"RSET",
                         b"NOOP", b"VRFY", b"EXPN", b"HELP", b"AUTH", b"STARTTLS",
                         b"QUIT" if r.random() < 0.1 else b"NOOP", b"ehlo", b"X"])
        if verb == b"MAIL":
            params = b" ".join(r.choice([b"SIZE=10", b"SIZE=x", b"BODY=8BITMIME",
                                         b"BODY=BINARYMIME", b"SMTPUTF8", b"RET=FULL",
                                         b"ENVID=a+2B", b"ENVID=" + self.junk(5), b"X=1"])
                               for _ in range(r.randrange(3)))
            return self.line(b"MAIL FROM:" + self.word(), params)
        if verb == b"RCPT":
            params = r.choice([b"", b"NOTIFY=NEVER", b"NOTIFY=SUCCESS,DELAY",
                               b"ORCPT=rfc822;a@b", b"ORCPT=" + self.junk(5)])
            return self.line(b"RCPT TO:" + r.choice([b"<alice@example.org>",
                                                     b"<bob@example.org>", self.word()]), params)
        if verb == b"DATA":
            body = r.choice([MESSAGE, self.junk(200), b"a\r\n.\r", b"x\n.\n"])
            return self.line(b"DATA") + body + r.choice([b".\r\n", b"\r\n.\r\n", b"", b"\n.\n"])
        if verb == b"BDAT":
            size = r.choice([0, 1, 5, 100, 10**12, -1])
            chunk = self.junk(max(0, min(size, 200) + r.randrange(-2, 3)))
            return self.line(b"BDAT", b"%d" % size, r.choice([b"", b"LAST", b"last", b"X"])) + chunk
        if verb == b"AUTH":
            return self.line(b"AUTH", r.choice([b"PLAIN", b"LOGIN", b"CRAM-MD5", b""]),
                             r.choice([b"", b"=", plain(b"alice@example.org", b"alice-pw"),
                                       plain(b"bob@example.org", b"wrong"), self.junk(20)]))
        return self.line(verb, *(self.word() for _ in range(r.randrange(3))))

    def imapCommand(self, tag=None):
        r = self.rng
        tag = tag or r.choice([b"a", b"b1", b"*", b"+", b"", b"x" * 50, self.word()])
        verb = r.choice([b"CAPABILITY", b"NOOP", b"SELECT", b"EXAMINE", b"CREATE", b"DELETE",
                         b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE", b"LIST", b"LSUB", b"STATUS",
                         b"APPEND", b"CHECK", b"CLOSE", b"EXPUNGE", b"SEARCH", b"FETCH",
                         b"STORE", b"COPY", b"MOVE", b"UID", b"IDLE", b"ENABLE", b"ID",
                         b"NAMESPACE", b"UNSELECT", b"AUTHENTICATE", b"LOGIN", b"STARTTLS",
                         b"COMPRESS",
                         b"LOGOUT" if r.random() < 0.1 else b"NOOP", b"XYZZY"])
        args = []
        if verb == b"UID":
            args.append(r.choice([b"FETCH", b"STORE", b"SEARCH", b"COPY", b"EXPUNGE", b"MOVE"]))
        if verb in (b"FETCH", b"STORE", b"COPY", b"MOVE", b"UID"):
            args.append(self.numberSet())
        for _ in range(r.randrange(4)):
            args.append(self.imapArgument(depth=0))
        out = self.line(tag, verb, *args)
        if verb == b"IDLE" and r.random() < 0.8:
            out += self.line(r.choice([b"DONE", b"done", b"NOPE"]))
        return out

    def imapArgument(self, depth):
        r = self.rng
        kind = r.randrange(10)
        if kind == 0 and depth < 4:
            return b"(" + b" ".join(self.imapArgument(depth + 1)
                                    for _ in range(r.randrange(4))) + b")"
        if kind == 1:
            data = r.choice([MESSAGE, self.junk(30), b""])
            size = len(data) + r.choice([0, 0, 0, -1, 1])
            # "~{n}": literal8 (RFC 3516 4.4), APPEND only
            return b"%s{%d%s}\r\n" % (r.choice([b"", b"", b"~"]), size,
                                       r.choice([b"", b"+"])) + data
        if kind == 2:
            return b'"' + self.junk(10).replace(b"\r", b"").replace(b"\n", b"") + b'"'
        if kind == 3:
            return r.choice([b"BODY[]", b"BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.10>",
                             b"BODY[1.1.MIME]", b"BODYSTRUCTURE", b"ENVELOPE", b"RFC822.SIZE",
                             b"(FLAGS UID)", b"BINARY[1]", b"BODY[", b"BODY[]<5.>",
                             # BINARY (RFC 3516)
                             b"BINARY.PEEK[1.2]<0.10>", b"BINARY.SIZE[]", b"BINARY[1.TEXT]",
                             b"(BINARY[] BINARY.SIZE[2])", b"BINARY.SIZE[1]<0.1>"])
        if kind == 4:
            return r.choice([b"NOT " * r.randrange(1, 200) + b"ALL",
                             b"(" * r.randrange(1, 60) + b"ALL" + b")" * r.randrange(1, 60),
                             b"OR " * 50 + b"ALL " * 51, b"SENTSINCE 1-Jan-1970",
                             b"SINCE 1-Jan-19700000000000000000000", b"TEXT x",
                             b"HEADER From a", b"MODSEQ 1", b"CHARSET KOI8 x",
                             # ESEARCH, SEARCHRES (RFC 4731, 5182)
                             b"RETURN (SAVE MIN MAX COUNT ALL) ALL", b"RETURN () UID $",
                             b"RETURN (BOGUS)", b"RETURN", b"$", b"$,1"])
        if kind == 5:
            return r.choice([b'""', b'"*%*%*%*%*%*%*%*%>"', b'"' + b"%*" * 500 + b'"', b"%",
                             b"\\Seen", b"\\Bogus", b"$kw", b"+FLAGS", b"-FLAGS.SILENT",
                             # LIST-EXTENDED, LIST-STATUS, CREATE USE (RFC 5258, 5819, 6154)
                             b"(SUBSCRIBED RECURSIVEMATCH)", b"(RECURSIVEMATCH)", b"RETURN",
                             b"(SPECIAL-USE)", b"(STATUS (MESSAGES SIZE))", b'("a" "%")',
                             b"(SUBSCRIBED CHILDREN STATUS (UNSEEN))", b"(USE (\\Archive))",
                             b"DEFLATE", b"deflate",  # COMPRESS (RFC 4978)
                             # ENABLE (RFC 9051, 6855), UTF-8 names, APPEND UTF8
                             b"IMAP4rev2", b"imap4rev2", b"UTF8=ACCEPT", b"CONDSTORE",
                             b'"Caf\xc3\xa9"', b'"Cafe\xcc\x81"', b'"\xff\xfe"',
                             b"UTF8 (~{5+}\r\nhello)", b"UTF8 ()", b"(MESSAGES DELETED)"])
        if kind == 6:
            return self.numberSet() if r.random() < 0.9 else b"$"
        return self.word()

    def pop3Command(self):
        r = self.rng
        verb = r.choice([b"CAPA", b"USER", b"PASS", b"AUTH", b"STLS", b"APOP", b"STAT",
                         b"LIST", b"RETR", b"DELE", b"NOOP", b"RSET", b"TOP", b"UIDL",
                         b"QUIT" if r.random() < 0.1 else b"NOOP", b"LAST", b"xyz", b"stat"])
        args = [r.choice([b"1", b"2", b"0", b"3", b"-1", b"999999999999", self.word()])
                for _ in range(r.randrange(3))]
        out = self.line(verb, *args)
        if verb == b"AUTH" and r.random() < 0.5:
            out += self.line(r.choice([b"*", b"=", plain(ALICE.encode(), POP3_PASSWORD),
                                       self.junk(20)]))
        return out

    # -- sessions -------------------------------------------------------------

    def prologue(self):
        """What a real client sends first, most of the time."""
        if self.rng.random() < 0.15:
            return b""
        if self.name == "smtp":
            return b"EHLO fuzz\r\n"
        if self.name == "submission":
            return b"EHLO fuzz\r\nAUTH PLAIN " + plain(b"alice@example.org", b"alice-pw") + b"\r\n"
        if self.name == "imap":
            return (b"l LOGIN " + IMAP_USER + b" " + IMAP_PASSWORD + b"\r\n"
                    + (b"s SELECT INBOX\r\n" if self.rng.random() < 0.8 else b""))
        return b"USER " + ALICE.encode() + b"\r\nPASS " + POP3_PASSWORD + b"\r\n"

    def command(self):
        r = self.rng
        if r.random() < 0.2:
            return r.choice(self.corpus)
        if r.random() < 0.05:
            return self.junk(200) + b"\r\n"
        if r.random() < 0.02:
            return b"A" * r.choice([511, 600, 9000, 70000]) + b"\r\n"
        if self.name in ("smtp", "submission"):
            return self.smtpCommand()
        if self.name == "imap":
            return self.imapCommand()
        return self.pop3Command()

    def mutate(self, data):
        r = self.rng
        data = bytearray(data)
        for _ in range(r.randrange(4)):
            if not data:
                break
            at = r.randrange(len(data))
            op = r.randrange(5)
            if op == 0:
                data[at] ^= 1 << r.randrange(8)
            elif op == 1:
                data[at:at] = r.choice(NASTY)
            elif op == 2:
                del data[at:at + r.randrange(1, 20)]
            elif op == 3:
                data[at:at] = data[at:at + r.randrange(1, 50)] * r.randrange(2, 5)
            else:
                data[at:at] = self.junk(10)
        return bytes(data)

    def session(self):
        body = b"".join(self.command() for _ in range(self.rng.randrange(1, 8)))
        if self.rng.random() < 0.4:
            body = self.mutate(body)
        return self.prologue() + body

    def cuts(self, session):
        r = self.rng
        if len(session) < 2 or r.random() < 0.3:
            return [session]
        return splitAt(session, sorted(r.randrange(1, len(session))
                                       for _ in range(r.randrange(1, 12))))


_SMTP_REPLY = re.compile(rb"^\d{3}[ -]")
_SMTP_ENHANCED = re.compile(rb"^[45]\d\d[ -][45]\.\d{1,3}\.\d{1,3} ")


def badReplies(name, output):
    """Reply lines outside the RFC's form, for the protocol C{name}."""
    bad = []
    if name in ("smtp", "submission"):
        for line in output.split(b"\r\n")[:-1]:
            if not _SMTP_REPLY.match(line):
                bad.append(line)
            elif line[:1] in b"45" and not _SMTP_ENHANCED.match(line):
                bad.append(line)  # RFC 2034 §3: every 4xx/5xx carries one
    elif name == "imap":
        bad += [line for line in output.split(b"\r\n") if b"[SERVERBUG]" in line]
    else:
        bad += [line for line in output.split(b"\r\n") if b"Internal error" in line]
    return bad


class Fuzzer:
    """
    Runs batches of inputs against one protocol's server (a fresh one per
    batch) and keeps what it found.

    @ivar inputs: how many sessions were fed.
    @ivar findings: C{Counter} of finding kinds; C{examples} keeps the first
        input of each kind (with what was seen) to reproduce it.
    @ivar slowest: the most CPU one session took, and its input.
    """

    def __init__(self, name, seed=0, batch=40):
        self.name = name
        self.gen = Generator(name, random.Random(seed))
        self.batch = batch
        self.inputs = 0
        self.findings = Counter()
        self.examples = {}
        self.slowest = (0.0, b"")

    def found(self, kind, data, detail):
        self.findings[kind] += 1
        self.examples.setdefault(kind, (data, detail))

    def runBatch(self):
        world = WORLDS[self.name]()
        try:
            with fastDisk(), failuresLogged() as failures:
                for _ in range(self.batch):
                    self._one(world, failures)
                if not world.answered():
                    self.found("deaf", b"", "a fresh connection got no answer after a batch")
        finally:
            world.close()

    def _one(self, world, failures):
        data = self.gen.session()
        self.inputs += 1
        logged = len(failures)
        start = time.process_time()
        try:
            output = world.replay(self.gen.cuts(data))
        except Stalled as e:
            return self.found("stall", data, str(e))
        except Exception as e:  # anything escaping dataReceived is a crash
            return self.found("crash", data, f"{type(e).__name__}: {e}")
        finally:
            cpu = time.process_time() - start
            if cpu > self.slowest[0]:
                self.slowest = (cpu, data)
        if len(failures) > logged:
            self.found("traceback", data, describe(failures[logged]))
        bad = badReplies(self.name, output)
        if bad:
            self.found("reply", data, bad[0])

    def runFor(self, seconds, inputs=None):
        """
        Run batches for C{seconds}; with C{inputs}, until that many have
        run instead (the same inputs on every machine, the seed fixes them),
        C{seconds} being only a safety cap.
        """
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (inputs is None or self.inputs < inputs):
            self.runBatch()
        return self

    def report(self):
        """A short text: inputs run, findings, slowest input."""
        lines = [f"{self.name}: {self.inputs} inputs, "
                 + (", ".join(f"{n} {k}" for k, n in sorted(self.findings.items()))
                    or "nothing found")
                 + f"; slowest session {self.slowest[0] * 1000:.1f} ms CPU"]
        for kind, (data, detail) in sorted(self.examples.items()):
            lines.append(f"  first {kind}: {data[:300]!r}")
            lines.append("    " + str(detail)[-1500:].replace("\n", "\n    "))
        return "\n".join(lines)
