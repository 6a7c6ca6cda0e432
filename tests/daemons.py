"""
Debian's clamd, rspamd and PostgreSQL, started by the tests, each on a
temporary socket or a free loopback port with its own config in a scratch
directory: never the system's services, never the network.

clamd loads only a signature database written here: the EICAR test string
(as C{Eicar-Test-Signature}: without ClamAV's main.cvd clamd knows no
EICAR) and a custom marker (C{Pymailer-Test-Marker}).  rspamd loads no
stock rules (C{filters = ""}, a three-entry TLD list, so it starts in about
a second) and one Lua rule: a message with an C{X-Test-Reject} header is
rejected with C{Refused by the test rule: VALUE}.
"""

import glob
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import tempfile
import urllib.request
import uuid

import pytest

from mailserver import freePort, waitFor

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARKER = b"PYMAILER-VIRUS-MARKER-7f3a"
EICAR_NAME = "Eicar-Test-Signature.UNOFFICIAL"
MARKER_NAME = "Pymailer-Test-Marker.UNOFFICIAL"

_RSPAMD_RULE = """
rspamd_config:register_symbol({
  name = 'PYMAILER_TEST_REJECT',
  score = 100.0,
  callback = function(task)
    local value = task:get_header('X-Test-Reject')
    if value then
      task:set_pre_result('reject', 'Refused by the test rule: ' .. value)
      return true
    end
    return false
  end
})
"""


def missing(message):
    """
    Something a test needs is not installed: outside CI the test is
    skipped, in CI (C{CI} set, as .ci/run does) it fails: CI must install it.
    """
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def requireBinary(name):
    """The path of C{name}, or L{missing}."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        missing(f"{name} is not installed (Debian: apt-get install clamav-daemon rspamd)")
    return path


class _Daemon:
    # What stop() sends first.
    stopSignal = signal.SIGTERM

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.logPath = self.root / "daemon.log"

    def log(self):
        return self.logPath.read_text(errors="replace") if self.logPath.exists() else ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(self.stopSignal)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _spawn(self, args, ready, timeout, **popenArgs):
        with open(self.logPath, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.root,
                                         **popenArgs)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited with {self.proc.returncode}:\n{self.log()}")
            return ready()

        try:
            waitFor(up, timeout=timeout, interval=0.1,
                    message=lambda: f"{args[0]} to start; its log:\n{self.log()}")
        except BaseException:
            self.stop()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Clamd(_Daemon):
    """clamd on a Unix socket C{self.socket} and TCP C{self.address}."""

    def __init__(self, root, streamMaxLength="1M"):
        super().__init__(root)
        self.binary = requireBinary("clamd")
        self.socket = self.root / "clamd.sock"
        self.port = freePort()
        self.address = f"127.0.0.1:{self.port}"
        db = self.root / "db"
        db.mkdir(exist_ok=True)
        # .ndb: Name:TargetType:Offset:HexSignature (0 = any file, * = anywhere).
        (db / "pymailer-test.ndb").write_text(
            f"Eicar-Test-Signature:0:*:{EICAR.hex()}\n"
            f"Pymailer-Test-Marker:0:*:{MARKER.hex()}\n")
        self.config = self.root / "clamd.conf"
        self.config.write_text("\n".join([
            f"LocalSocket {self.socket}",
            f"TCPSocket {self.port}",
            "TCPAddr 127.0.0.1",
            f"DatabaseDirectory {db}",
            f"TemporaryDirectory {self.root}",
            "Foreground yes",
            f"StreamMaxLength {streamMaxLength}",
            # Root runs it as root (no User line): the socket and DB are ours.
        ]) + "\n")
        self.start()

    def start(self):
        self._spawn([self.binary, "-c", str(self.config)], self.socket.exists, timeout=60)


class Rspamd(_Daemon):
    """rspamd's normal worker on 127.0.0.1, at C{self.url}."""

    def __init__(self, root):
        super().__init__(root)
        self.binary = requireBinary("rspamd")
        self.port = freePort()
        self.url = f"http://127.0.0.1:{self.port}"
        for sub in ("db", "run"):
            (self.root / sub).mkdir(exist_ok=True)
        (self.root / "rules.lua").write_text(_RSPAMD_RULE)
        (self.root / "tld.dat").write_text("test\norg\ncom\n")
        self.config = self.root / "rspamd.conf"
        self.config.write_text(f"""
options {{
  pidfile = "{self.root}/run/rspamd.pid";
  dbdir = "{self.root}/db";
  rundir = "{self.root}/run";
  filters = "";
  url_tld = "{self.root}/tld.dat";
  dns {{ nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{self.root}/rspamd.log"; level = "info"; }}
actions {{ reject = 15; add_header = 6; greylist = null; }}
worker "normal" {{
  bind_socket = "127.0.0.1:{self.port}";
  count = 1;
}}
lua = "{self.root}/rules.lua";
""")
        self.start()

    def start(self):
        args = [self.binary, "-f", "-c", str(self.config)]
        # rspamd refuses to run its workers as root unless told to.
        args += ["--insecure"] if os.geteuid() == 0 else []
        self._spawn(args, self._pong, timeout=120)

    def _pong(self):
        # No proxy from the environment: this is loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.url + "/ping", timeout=1) as r:
                return r.read().strip() == b"pong"
        except OSError:
            return False


def postgresqlBinaries():
    """
    The directory of PostgreSQL's server programs (C{initdb}, C{postgres}),
    newest version first: Debian keeps them in C{/usr/lib/postgresql/N/bin},
    off C{PATH}.  Or L{missing}.
    """
    found = shutil.which("initdb")
    if found:
        return pathlib.Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not versions:
        missing("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return pathlib.Path(versions[-1]).parent


class PostgreSQL(_Daemon):
    """
    A throwaway PostgreSQL cluster: C{initdb} into a fresh directory, the
    server listening on a Unix socket in it and on 127.0.0.1 (a free port),
    durability off (C{fsync}, C{synchronous_commit}, C{full_page_writes}):
    what a test writes need not survive a power cut, and the tests run on
    two cores.  Any local user connects as the superuser C{pymailer}
    (C{trust}): nothing but this machine can reach it.

    PostgreSQL refuses to run as root; CI runs as root, so there the cluster
    belongs to C{nobody}, and its directory is made outside pytest's
    (root-only) temporary tree.

    L{newDatabase} gives each test its own database (C{CREATE DATABASE}):
    tests share nothing, also under pytest-xdist (each worker process has
    its own cluster).
    """

    # Fast shutdown: SIGTERM ("smart") would wait for every client to go.
    stopSignal = signal.SIGINT
    user = "pymailer"

    def __init__(self, durable=False):
        """
        @param durable: keep PostgreSQL's defaults (fsync, synchronous
            commit) instead: for benchmarks, whose figures must count the
            flushes a real server makes.
        """
        self.durable = durable
        try:
            import psycopg  # noqa: F401
        except ImportError:
            missing("psycopg is not installed (pip install 'psycopg[binary]')")
        bindir = postgresqlBinaries()
        self.runAs = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        # In /tmp, whatever TMPDIR says: short (a Unix socket path is at
        # most 107 bytes) and reachable by the cluster's owner.
        root = pathlib.Path(tempfile.mkdtemp(prefix="pymailer-pg-", dir="/tmp"))
        super().__init__(root)
        self.data = self.root / "data"
        self.port = freePort()
        if self.runAs is not None:
            os.chown(self.root, self.runAs.pw_uid, self.runAs.pw_gid)
        popenArgs = {}
        if self.runAs is not None:
            popenArgs = dict(user=self.runAs.pw_uid, group=self.runAs.pw_gid, extra_groups=[])
        self._popenArgs = popenArgs
        result = subprocess.run(
            [str(bindir / "initdb"), "-D", str(self.data), "-U", self.user,
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
            cwd=self.root, stdin=subprocess.DEVNULL, capture_output=True, **popenArgs)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout.decode()}{result.stderr.decode()}")
        self.binary = bindir / "postgres"
        self.start()

    def start(self):
        settings = {
            "listen_addresses": "127.0.0.1", "port": self.port,
            "unix_socket_directories": self.root,
            "max_connections": 100, "shared_buffers": "32MB",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        args = [str(self.binary), "-D", str(self.data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        self._spawn(args, self._accepts, timeout=60, **self._popenArgs)

    def dsn(self, database="postgres"):
        """A libpq URI for C{database} over the Unix socket."""
        return f"postgresql://{self.user}@/{database}?host={self.root}&port={self.port}"

    def tcpDSN(self, database="postgres"):
        """The same database over 127.0.0.1."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _accepts(self):
        import psycopg

        try:
            psycopg.connect(self.dsn(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def execute(self, sql):
        """Run one statement as the superuser, outside a transaction."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as db:
            db.execute(sql)

    def newDatabase(self, template="template0"):
        """A new, empty database (copied from C{template}); its name."""
        name = "test_" + uuid.uuid4().hex[:16]
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def dropDatabase(self, name):
        # FORCE: a test may have left connections open (PostgreSQL 13+).
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self):
        """Stop, and remove the cluster's directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __exit__(self, *exc):
        self.remove()


def cutListeners(dsn, channel):
    """
    Cut the connections in C{LISTEN} on C{channel} in C{dsn}'s database (as
    a network fault or a database restart would), and wait until they are
    gone: what is notified from now on, they miss.

    @return: how many were cut.
    """
    import psycopg

    query = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
             " AND query = %s")
    with psycopg.connect(dsn, autocommit=True) as db:
        pids = [pid for (pid,) in db.execute(query, (f"LISTEN {channel}",))]
        for pid in pids:
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        waitFor(lambda: not db.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone(),
            message=f"the listeners on {channel} to go")
    return len(pids)
