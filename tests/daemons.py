"""
Debian's clamd and rspamd, started by the tests as the test user, each on
a temporary socket or a free loopback port with its own config in a
scratch directory: never the system's services, never the network.

clamd loads only a signature database written here: the EICAR test string
(as C{Eicar-Test-Signature}: without ClamAV's main.cvd clamd knows no
EICAR) and a custom marker (C{Pymailer-Test-Marker}).  rspamd loads no
stock rules (C{filters = ""}, a three-entry TLD list, so it starts in about
a second) and one Lua rule: a message with an C{X-Test-Reject} header is
rejected with C{Refused by the test rule: VALUE}.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import urllib.request

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


def requireBinary(name):
    """
    The path of C{name}; outside CI a missing daemon skips the test, in CI
    (C{CI} set, as .ci/run does) it fails: CI must install it.
    """
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install clamav-daemon rspamd)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class _Daemon:
    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.logPath = self.root / "daemon.log"

    def log(self):
        return self.logPath.read_text(errors="replace") if self.logPath.exists() else ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _spawn(self, args, ready, timeout):
        with open(self.logPath, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.root)

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
