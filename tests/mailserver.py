"""
A real pymailer server in a subprocess, for end-to-end tests and benchmarks.

L{MailServer} writes a config file and a data directory under a scratch
directory, adds the test domain and users with the real admin command
(C{python -m pymailer}), runs C{twistd -n --pidfile= pymailer --config F}
on a free port on 127.0.0.1 (never any other address), and can stop,
SIGKILL and restart it on the same data directory and port.

The subprocesses always get C{PYTHONPATH=<repo root>} (computed from this
file's location), so they run the source tree, and twistd finds the plugin
in C{<repo root>/twisted/plugins}.

Used by C{tests/conftest.py} (fixtures) and C{bench/smtp_accept.py} (which
puts C{tests/} on C{sys.path}); it needs nothing from pytest.
"""

import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata

import dns.message
import dns.rcode

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
HOSTNAME = "mail.example.org"
DOMAIN = "example.org"
PASSWORD = "correct horse battery staple"
DEFAULT_USERS = ("alice@example.org", "bob@example.org")
QUEUE_STATES = ("incoming", "active", "deferred")
# How long the log must stay the same before L{MailServer.log} trusts it:
# more than the server's log batches take (pymailer.logs.FLUSH_INTERVAL,
# twice with workers).
LOG_SETTLE = 0.5


class _FailingDNSServer:
    """
    A DNS server on loopback that answers SERVFAIL to everything, started
    once per test process: what a server under test asks when the test
    brings no DNS of its own.  Every lookup fails at once and temporarily,
    so mail to other domains waits in the queue, and the inbound checks
    (SPF, DKIM, DMARC) say temperror without waiting for a timeout.
    """

    _server = None

    @classmethod
    def address(cls):
        if cls._server is None:
            from dnsserver import DNSServer

            class Failing(DNSServer):
                def answer(self, query):
                    response = dns.message.make_response(query)
                    response.set_rcode(dns.rcode.SERVFAIL)
                    return response

            cls._server = Failing({})
        return cls._server.address


class ServerError(Exception):
    """The server did not start or stop as expected; carries its log."""


def waitFor(predicate, timeout=10.0, interval=0.05, message=None):
    """
    Poll C{predicate()} until it returns something true, at most
    C{timeout} seconds.  Never sleeps blindly: each wait is one short
    C{interval} on an C{Event}.

    @return: the true value returned by C{predicate}.
    @raise TimeoutError: C{predicate} stayed false; the message says what
        we waited for (C{message} may be a callable, evaluated lazily).
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            if callable(message):
                message = message()
            raise TimeoutError(
                f"gave up after {timeout:g} s waiting for "
                f"{message or getattr(predicate, '__name__', 'a condition')}")
        pause.wait(interval)


# Ports for test servers come from below the kernel's ephemeral range
# (32768-60999 here): a port bind(0) hands out is in that range, and between
# our close and the server's bind a client connection of another test (its
# source port) could take it ("Address already in use", seen on a busy run).
# Each xdist worker draws from its own slice, so workers never race either.
_PORT_SLICE = 2000
_PORT_BASE = 12000
_ports = None


def freePort():
    """A TCP port free on 127.0.0.1 right now, outside the ephemeral range."""
    global _ports
    if _ports is None:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        index = int(worker[2:]) if worker[2:].isdigit() else 0
        start = _PORT_BASE + (index % 10) * _PORT_SLICE
        candidates = list(range(start, start + _PORT_SLICE))
        random.Random(os.getpid()).shuffle(candidates)
        _ports = iter(candidates)
    for port in _ports:
        if portIsFree(port):
            return port
    _ports = None  # every port of the slice used once: draw them again
    return freePort()


def portIsFree(port, interface="127.0.0.1"):
    """Whether C{port} can be bound on C{interface} at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((interface, port))
        except OSError:
            return False
        return True


def binDir():
    """The directory of the running interpreter (the venv's C{bin/})."""
    return pathlib.Path(sys.executable).parent


def subprocessEnv(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYMAILER_CONFIG", None)
    if extra:
        env.update(extra)
    return env


def splitLocal(address):
    """C{(local, domain)} as the account directory normalises them."""
    local, _, domain = address.rpartition("@")
    local = unicodedata.normalize("NFC", local.casefold())
    return local, domain.lower()


def readVm(pid, key):
    """C{VmHWM}/C{VmRSS}... of C{pid} in bytes, or C{None} if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class MailServer:
    """
    One pymailer server on 127.0.0.1:C{port} with its data in
    C{root/data}.

    @param root: a scratch directory (created if missing).
    @param smtp: extra C{[smtp]} keys (e.g. C{{"max_message_size": 100000}}).
    @param queue: extra C{[queue]} keys.
    @param twistdArgs: the arguments after C{twistd -n --pidfile=}; default
        C{["pymailer", "--config", <config>]}.
    @param env: extra environment for twistd.
    @param cwd: twistd's working directory (default C{root}).
    @param port: the SMTP port (default: a free one).
    @param roles: other listener roles to open (e.g. C{("submission",
        "submissions", "pop3s")}), each on a free port in C{self.ports}; a
        role ending in "s" (but "smtp" and "metrics") gets an C{ssl:} endpoint.
    @param sections: more config tables, e.g. C{{"auth": {...}}}.
    @param workers: C{[server] workers}: 1 (one process, the shape most
        tests look at) unless a test asks for more.
    @param interfaces: C{{role: address}} for roles listening elsewhere than
        C{interface}: C{{"imaps": "::1"}} for a client coming from IPv6
        loopback (loopback addresses only).
    """

    def __init__(self, root, smtp=None, queue=None, twistdArgs=None, env=None,
                 cwd=None, port=None, hostname=HOSTNAME, roles=(), sections=None,
                 interface="127.0.0.1", workers=1, interfaces=None):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hostname = hostname
        self.port = port if port is not None else freePort()
        self.dataDir = self.root / "data"
        self.configPath = self.root / "pymailer.toml"
        self.logPath = self.root / "twistd.log"
        self.smtpOptions = dict(smtp or {})
        self.queueOptions = dict(queue or {})
        self.sections = dict(sections or {})
        self.workers = workers
        # Another loopback address (127.0.0.2, ...) lets several servers
        # share one port number: relay tests need that ([relay] port).
        self.interface = interface
        self.interfaces = dict(interfaces or {})
        self.ports = {"smtp": self.port}
        for role in roles:
            self.ports[role] = freePort()
        self.twistdArgs = twistdArgs
        self.extraEnv = dict(env or {})
        self.cwd = pathlib.Path(cwd) if cwd is not None else self.root
        self.proc = None
        self._logFile = None
        self._store = None
        self.writeConfig()

    # -- setting up -----------------------------------------------------

    def writeConfig(self):
        self._store = None  # the backend may have changed
        def value(v):
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, str):
                return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return repr(v)

        lines = [
            f'hostname = "{self.hostname}"',
            f"data_dir = {value(str(self.dataDir))}",
            "",
            "[listen]",
        ]
        for role, port in self.ports.items():
            kind = "ssl" if role.endswith("s") and role not in ("smtp", "metrics") else "tcp"
            # An endpoint string escapes an IPv6 address's colons.
            interface = self.interfaces.get(role, self.interface).replace(":", "\\:")
            lines.append(f"{role} = {value(f'{kind}:{port}:interface={interface}')}")
        tables = [("smtp", self.smtpOptions), ("queue", self.queueOptions)]
        # A test server never asks the real DNS (no traffic off this
        # machine): unless a test brings its own DNS server, lookups fail
        # at once, temporarily.
        sections = {"dns": {"servers": [_FailingDNSServer.address()], "timeout": 1.0},
                    "server": {"workers": self.workers}}
        sections.update(self.sections)
        tables += list(sections.items())
        for table, options in tables:
            if options:
                lines += ["", f"[{table}]"]
                lines += [f"{k} = {value(v)}" for k, v in options.items()
                          if not isinstance(v, dict)]
                # Nested tables: {"policy": {"dmarc": {...}}} -> [policy.dmarc].
                for k, v in options.items():
                    if isinstance(v, dict):
                        lines += ["", f"[{table}.{k}]"]
                        lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
        self.configPath.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def admin(self, *args, input=None, check=True):
        """
        Run C{python -m pymailer --config F ARGS}.

        @return: the L{subprocess.CompletedProcess} (text mode).
        @raise ServerError: C{check} and a non-zero exit.
        """
        result = subprocess.run(
            [sys.executable, "-m", "pymailer", "--config", str(self.configPath),
             *args],
            input=input, capture_output=True, text=True, env=subprocessEnv(),
            cwd=self.root, timeout=60,
        )
        if check and result.returncode != 0:
            raise ServerError(
                f"pymailer {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}")
        return result

    def addUser(self, address, password=PASSWORD):
        return self.admin("user", "add", address, "--password-stdin",
                          input=password + "\n")

    def provision(self, domain=DOMAIN, users=DEFAULT_USERS):
        """Add the test domain and users with the admin command."""
        self.admin("domain", "add", domain)
        for user in users:
            self.addUser(user)

    # -- running ----------------------------------------------------------

    def command(self):
        args = self.twistdArgs
        if args is None:
            args = ["pymailer", "--config", str(self.configPath)]
        return [str(binDir() / "twistd"), "-n", "--pidfile=", *args]

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=20.0):
        """
        Start twistd (again, on the same data directory and port) and wait
        until the port answers with a 220 greeting.

        @raise ServerError: it exited or did not answer in C{timeout} s;
            the message holds its log.
        """
        if self.running():
            raise ServerError("already running")
        self._logFile = open(self.logPath, "ab")
        self._logFile.write(f"==== start {' '.join(self.command())}\n".encode())
        self._logFile.flush()
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._logFile,
            stderr=subprocess.STDOUT, cwd=self.cwd,
            env=subprocessEnv(self.extraEnv),
        )
        try:
            waitFor(self._answers, timeout,
                    message=lambda: f"port {self.port} to answer")
        except (TimeoutError, ServerError) as e:
            self.kill9()
            raise ServerError(f"{e}\n--- server log ---\n{self.log()}") from None
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            raise ServerError(
                f"twistd exited with status {self.proc.returncode}")
        try:
            with socket.create_connection((self.interface, self.port),
                                          timeout=2) as s:
                greeting = s.makefile("rb").readline()
                s.sendall(b"QUIT\r\n")
        except OSError:
            return False
        return greeting.startswith(b"220 ")

    def stop(self, timeout=15.0):
        """SIGTERM, wait; SIGKILL if it does not exit in C{timeout} s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self._reaped()

    def kill9(self):
        """SIGKILL the server (a crash) and reap it."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self._reaped()

    def _reaped(self):
        code = self.proc.returncode
        self.proc = None
        if self._logFile is not None:
            self._logFile.close()
            self._logFile = None
        return code

    def peakRSS(self):
        """The server's peak resident set size (VmHWM) in bytes."""
        return readVm(self.pid, "VmHWM") if self.running() else None

    # -- looking at the results --------------------------------------------

    def log(self, settle=LOG_SETTLE):
        """
        The server's log so far.  The server writes it in batches, a
        fraction of a second after the events (L{pymailer.logs}; with
        workers twice, in the worker then in the supervisor): while it
        runs, wait until the file has not grown for C{settle} seconds (at
        most 5 s), so what happened before the call is in it.  To wait for
        an event, use L{waitForLog}; this is for what must I{not} be in the
        log, and for the log shown when a test fails (C{settle=0}: as it is).
        """
        if settle and self.running():
            seen = [None, 0.0]  # the file's size, and since when

            def settled():
                size, now = self._logSize(), time.monotonic()
                if size != seen[0]:
                    seen[:] = [size, now]
                return now - seen[1] >= settle

            try:
                waitFor(settled, 5, message="the log to settle")
            except TimeoutError:
                pass  # a server that keeps logging: the log as it is
        return self._readLog()

    def _logSize(self):
        try:
            return self.logPath.stat().st_size
        except FileNotFoundError:
            return 0

    def waitForLog(self, pattern, timeout=10.0):
        """
        Wait until the log has a line for an event: C{pattern} is a string
        the line contains, or a compiled regular expression searched in the
        whole log (its flags apply, e.g. C{re.M} for C{^}).  Returns as
        soon as the line is there, rather than waiting for the log to
        settle.

        @return: the line (a string pattern) or the C{re.Match}.
        @raise TimeoutError: not logged within C{timeout} seconds; the
            message has the end of the log.
        """
        def logged():
            text = self._readLog()
            if isinstance(pattern, str):
                at = text.find(pattern)
                if at < 0:
                    return None
                start = text.rfind("\n", 0, at) + 1
                end = text.find("\n", at)
                return text[start:] if end < 0 else text[start:end]
            return pattern.search(text)

        return waitFor(logged, timeout, message=lambda: (
            f"{pattern if isinstance(pattern, str) else pattern.pattern!r} in the log;"
            f" it ends:\n{self._readLog()[-3000:]}"))

    def _readLog(self):
        try:
            return self.logPath.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def store(self):
        """
        The server's message store, opened in this process the way the
        server and the admin command open it (C{openStore(config)}): every
        backend is safe with several processes on one C{data_dir}, so the
        test reads what the server delivered through the store interfaces,
        whatever the backend keeps on disk.
        """
        if self._store is None:
            from pymailer import config as configModule
            from pymailer.store import openStore

            self._store = openStore(configModule.load(self.configPath))
        return self._store

    def _address(self, user):
        from pymailer.auth.directory import normaliseAddress

        return normaliseAddress(user if "@" in user else f"{user}@{DOMAIN}")

    def messages(self, user, folder=None):
        """
        The octets of each message in C{user}'s INBOX (or C{folder}, e.g.
        "Junk"), ascending by UID, read through L{store}; C{[]} if there is
        no such mailbox.
        """
        try:
            box = self.store().mailbox(self._address(user), folder or "INBOX")
            infos = box.messages()
        except KeyError:
            return []
        found = []
        for info in infos:
            try:
                with box.openMessage(info.uid) as content:
                    found.append(content.read())
            except KeyError:
                pass  # expunged meanwhile
        return found

    def waitForMessages(self, user, count, folder=None, timeout=20.0):
        """Wait until C{user}'s C{folder} holds C{count} messages; their octets."""
        def enough():
            found = self.messages(user, folder)
            return found if len(found) >= count else None

        return waitFor(enough, timeout, message=lambda: (
            f"{count} message(s) in {user}'s {folder or 'INBOX'}; queue: "
            f"{self.queueEntries()}\n--- log ---\n{self.log()[-3000:]}"))

    def allMessages(self):
        """The octets of every message in any mailbox of any user."""
        from pymailer import config as configModule
        from pymailer.auth.directory import openDirectory

        directory = openDirectory(configModule.load(self.configPath))
        store = self.store()
        return [data for user in directory.listUsers()
                for name in store.listMailboxes(user)
                for data in self.messages(user, name)]

    # The Maildir backend's files, for tests of that backend only (a server
    # with [storage] backend = "maildir").

    def maildir(self, user):
        local, domain = splitLocal(user if "@" in user else f"{user}@{DOMAIN}")
        return self.dataDir / "mail" / domain / local

    def maildirFiles(self, user, folder=None):
        """
        Paths of the messages in C{user}'s INBOX (C{new/} and C{cur/}), or
        in the Maildir++ C{folder} ("Junk"), on the Maildir backend.
        """
        base = self.maildir(user)
        if folder is not None:
            base = base / ("." + folder)
        files = []
        for sub in ("new", "cur"):
            try:
                names = sorted(os.listdir(base / sub))
            except FileNotFoundError:
                continue
            files += [base / sub / n for n in names if not n.startswith(".")]
        return files

    def queueDir(self, state):
        return self.dataDir / "queue" / state

    def queueEntries(self, states=QUEUE_STATES):
        """C{{state: [names]}} of the non-empty queue directories."""
        out = {}
        for state in states:
            try:
                names = os.listdir(self.queueDir(state))
            except FileNotFoundError:
                continue
            if names:
                out[state] = sorted(names)
        return out

    def queueEnvelopes(self, states=QUEUE_STATES):
        """C{{state: [queue ids]}}: the envelopes (C{ID.json}) still queued."""
        out = {}
        for state, names in self.queueEntries(states).items():
            ids = [n[:-5] for n in names if n.endswith(".json")]
            if ids:
                out[state] = ids
        return out

    def queueEmpty(self, envelopesOnly=False):
        if envelopesOnly:
            return not self.queueEnvelopes()
        return not self.queueEntries()

    def waitQueueEmpty(self, timeout=20.0, envelopesOnly=False):
        """
        Wait until C{incoming/}, C{active/} and C{deferred/} are empty (or,
        with C{envelopesOnly}, hold no C{*.json} envelope).
        """
        waitFor(lambda: self.queueEmpty(envelopesOnly), timeout,
                message=lambda: f"an empty queue, still {self.queueEntries()}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def insecureTLS():
    """A client TLS context that accepts the server's self-signed certificate."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def loopbackRelayPort(interfaces=("127.0.0.2", "127.0.0.3")):
    """A port free on 127.0.0.1 and on C{interfaces}: every loopback MX of a
    relay test listens on it ([relay] port is one number)."""
    for _ in range(50):
        port = freePort()
        if all(portIsFree(port, interface) for interface in interfaces):
            return port
    raise RuntimeError("no port free on every loopback address")


def relaySenderOptions(dnsAddress, port):
    """C{makeMailServer} options for a server that relays through the test's
    DNS server to loopback MXes on C{port}, submission on plaintext loopback."""
    return dict(
        roles=("submission",),
        sections={
            "auth": {"allow_plaintext_on_loopback": True, "failure_delay": 0},
            "dns": {"servers": [dnsAddress], "timeout": 2.0},
            "relay": {"port": port, "connect_timeout": 2.0},
        },
        queue={"retry_min": 1, "retry_max": 1},
    )

