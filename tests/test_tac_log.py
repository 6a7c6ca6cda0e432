"""
The C{.tac} deployment (C{twistd -ny etc/pymailer.tac}) logs as C{twistd
pymailer} does: through the buffered log (L{pymailer.logs}), not twistd's
unbuffered file observer.
"""

from twisted.logger import ILogObserver
from twisted.python import usage

from pymailer.logs import BufferedLogObserver
from mailserver import REPO_ROOT


def loadTac(monkeypatch, tmp_path, argv):
    """The C{application} etc/pymailer.tac makes under twistd's C{argv}."""
    config = tmp_path / "pymailer.toml"
    config.write_text(f'hostname = "mx.example.org"\ndata_dir = "{tmp_path / "data"}"\n'
                      '[listen]\nsmtp = "tcp:0:interface=127.0.0.1"\n')
    monkeypatch.setenv("PYMAILER_CONFIG", str(config))
    monkeypatch.setattr("sys.argv", argv)
    namespace = {"__file__": str(REPO_ROOT / "etc" / "pymailer.tac")}
    exec(compile((REPO_ROOT / "etc" / "pymailer.tac").read_text(), "pymailer.tac", "exec"),
         namespace)
    return namespace["application"]


def test_tac_gives_twistd_the_buffered_log(monkeypatch, tmp_path):
    """
    Under `twistd -ny etc/pymailer.tac` the application carries the
    buffered log observer that twistd then logs to (the documented way a
    .tac chooses its log).  If this fails, a .tac deployment writes and
    flushes every log line on the reactor thread: a system call per
    message on a busy SMTP server.
    """
    application = loadTac(monkeypatch, tmp_path, ["twistd", "-n", "-y", "etc/pymailer.tac"])
    observer = application.getComponent(ILogObserver)
    assert isinstance(observer, BufferedLogObserver)
    observer.stop()


def test_tac_with_a_logfile_writes_it_buffered(monkeypatch, tmp_path):
    """`--logfile F` is honoured, through the buffered log, as by `twistd pymailer`."""
    logPath = tmp_path / "mail.log"
    application = loadTac(monkeypatch, tmp_path,
                          ["twistd", "--logfile", str(logPath), "-ny", "x.tac"])
    observer = application.getComponent(ILogObserver)
    observer({"log_format": "hello from the tac", "log_time": 0, "log_system": "-"})
    observer.stop()
    assert "hello from the tac" in logPath.read_text()


def test_tac_outside_twistd_keeps_twistds_own_log(monkeypatch, tmp_path):
    """A command line that is not twistd's changes nothing (no observer set)."""
    try:
        application = loadTac(monkeypatch, tmp_path, ["pytest", "--no-such-option"])
    except usage.UsageError:
        raise AssertionError("the .tac must load whatever the command line")
    assert application.getComponent(ILogObserver) is None
