"""
Tests for L{pymailer.cli}: the C{pymailer} admin command, run in-process
through L{main} (and once as C{python -m pymailer}).
"""

import io
import os
import pathlib
import subprocess
import sys

import pytest

from pymailer.auth.directory import SQLiteAccountDirectory
from pymailer.auth.passwords import verifyPassword
from pymailer import config as configModule
from pymailer.cli import main
from pymailer.store import openStore

PASSWORD = "correct horse battery staple"


@pytest.fixture
def run(cli):
    return cli


def database(conf):
    return conf.parent / "data" / "accounts.sqlite3"


def oneLineError(err):
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("pymailer: error: ")
    return err


class TestCheckConfig:
    def test_ok(self, run, conf):
        """
        check-config says the file is OK: otherwise an admin cannot tell a
        valid config before restarting the server.
        """
        assert run("check-config") == (0, f"{conf}: OK\n", "")

    def test_default(self, capsys, tmp_path, monkeypatch):
        """
        Without --config the embedded default is checked: otherwise trying
        pymailer out needs a config file first.
        """
        monkeypatch.chdir(tmp_path)
        assert main(["check-config"]) == 0
        assert capsys.readouterr().out == "embedded default: OK\n"

    def test_defaultElsewhereSaysItMadeANewDataDirectory(self, capsys, tmp_path,
                                                          monkeypatch):
        """
        Without --config, a command run in a directory without the embedded
        default's pymailer-data says on stderr that it made a new one, once:
        otherwise "domain add" run in the wrong directory seems to work
        while the running server never sees the domain.
        """
        monkeypatch.chdir(tmp_path)
        assert main(["domain", "add", "example.org"]) == 0
        out, err = capsys.readouterr()
        assert out == "added domain example.org\n"
        assert err.startswith("pymailer: note: made a new data directory ")
        assert str(tmp_path / "pymailer-data") in err and "--config" in err
        assert main(["domain", "list"]) == 0
        assert capsys.readouterr() == ("example.org\n", "")

    def test_error(self, run, conf):
        """
        A bad config gives one line naming file and key, exit 1: otherwise
        the admin gets a traceback or has to guess the key.
        """
        conf.write_text(conf.read_text() + "[smtp]\nmax_message_size = 'x'\n")
        code, out, err = run("check-config")
        assert code == 1 and out == ""
        oneLineError(err)
        assert f"{conf}: smtp.max_message_size: expected a positive" in err

    def test_badConfigFailsEveryCommand(self, run, conf):
        """
        Other commands refuse a bad config the same way: otherwise users
        would be added to a database the server will never read.
        """
        conf.write_text(conf.read_text() + "bogus = 1\n")
        code, out, err = run("domain", "list")
        assert code == 1
        assert oneLineError(err).endswith(f"{conf}: bogus: unknown key\n")
        assert not database(conf).exists()

    def test_missingConfig(self, run, conf):
        """
        A missing --config file is one line: otherwise a typo in the path
        gives a traceback.
        """
        conf.unlink()
        code, out, err = run("check-config")
        assert code == 1
        assert "cannot read config file: No such file" in oneLineError(err)


class TestDomain:
    def test_addListRemove(self, run, conf):
        """
        domain add/list/remove work and show the normalised name: otherwise
        the admin cannot manage which domains receive mail.
        """
        assert run("domain", "add", "Example.ORG")[0] == 0
        code, out, err = run("domain", "add", "xn--bb-eka.at",
                             "--catch-all", "postmaster@öbb.at")
        assert (code, err) == (0, "")
        assert out == "added domain öbb.at\n"
        assert run("domain", "list") == (
            0, "example.org\nöbb.at (catch-all: postmaster@öbb.at)\n", "")
        assert run("domain", "remove", "example.org")[0] == 0
        assert run("domain", "list")[1] == (
            "öbb.at (catch-all: postmaster@öbb.at)\n")
        assert database(conf).exists()

    def test_errors(self, run):
        """
        Duplicate and unknown domains are one-line errors, exit 1:
        otherwise scripts cannot tell failure from success.
        """
        run("domain", "add", "example.org")
        code, _, err = run("domain", "add", "example.org")
        assert code == 1
        assert oneLineError(err) == (
            "pymailer: error: domain exists: example.org\n")
        code, _, err = run("domain", "remove", "nope.org")
        assert code == 1
        assert "no such domain: nope.org" in oneLineError(err)

    def test_usage(self, run):
        """
        A missing sub-command is a usage error, exit 2: otherwise
        'pymailer domain' would silently do nothing.
        """
        code, out, err = run("domain")
        assert code == 2
        assert "usage:" in err


class TestUser:
    def test_addStoresArgon2idHash(self, run, conf):
        """
        user add --password-stdin stores an argon2id hash of the password,
        never the password: otherwise a stolen database leaks passwords.
        """
        run("domain", "add", "example.org")
        code, out, err = run("user", "add", "Bob@example.org",
                             "--password-stdin", stdin=PASSWORD + "\r\n")
        assert (code, out, err) == (0, "added user bob@example.org\n", "")
        directory = SQLiteAccountDirectory(database(conf))
        try:
            stored = directory.passwordHash("bob@example.org")
        finally:
            directory.close()
        assert stored.startswith("$argon2id$")
        assert verifyPassword(stored, PASSWORD)
        assert not verifyPassword(stored, PASSWORD + "\r")
        for f in database(conf).parent.rglob("*"):
            assert not f.is_file() or PASSWORD.encode() not in f.read_bytes(), f
        assert run("user", "list") == (0, "bob@example.org\n", "")

    def test_adminFlag(self, run, conf):
        """
        user add --admin and user admin ADDRESS [--off] mark who may use the
        web admin pages, and user list shows it: otherwise an operator
        could not give (or take back) admin rights from the terminal.
        """
        run("domain", "add", "example.org")
        code, out, _ = run("user", "add", "root@example.org", "--admin",
                           "--password-stdin", stdin=PASSWORD + "\n")
        assert (code, out) == (0, "added user root@example.org (admin)\n")
        run("user", "add", "bob@example.org", "--password-stdin", stdin=PASSWORD + "\n")
        assert run("user", "list")[1] == "bob@example.org\nroot@example.org (admin)\n"
        assert run("user", "admin", "Bob@example.org") == (
            0, "bob@example.org is an admin (may use the web admin pages)\n", "")
        assert run("user", "admin", "root@example.org", "--off")[0] == 0
        assert run("user", "list")[1] == "bob@example.org (admin)\nroot@example.org\n"
        code, _, err = run("user", "admin", "carol@example.org")
        assert code == 1 and "no such user: carol@example.org" in oneLineError(err)

    def test_quota(self, run, conf):
        """
        user quota ADDRESS SIZE sets a storage limit (none removes it) and
        user list shows it with the mail stored: otherwise an operator
        could not limit a mailbox or see who is close to full.
        """
        import io as _io
        run("domain", "add", "example.org")
        run("user", "add", "bob@example.org", "--admin", "--password-stdin",
            stdin=PASSWORD + "\n")
        assert run("user", "quota", "Bob@example.org", "500M") == (
            0, "bob@example.org has a limit of 500.0 MiB (0 bytes used)\n", "")
        store = openStore(configModule.load(conf))
        store.deliver("bob@example.org", b"", _io.BytesIO(b"x" * 2048))
        assert run("user", "list")[1] == "bob@example.org (admin, 2.0 KiB of 500.0 MiB used)\n"
        assert run("user", "quota", "bob@example.org") == (
            0, "bob@example.org has a limit of 500.0 MiB (2.0 KiB used)\n", "")
        directory = SQLiteAccountDirectory(database(conf))
        try:
            assert directory.quota("bob@example.org") == 500 * 1024 * 1024
        finally:
            directory.close()
        assert run("user", "quota", "bob@example.org", "none") == (
            0, "bob@example.org has no limit (2.0 KiB used)\n", "")
        assert run("user", "list")[1] == "bob@example.org (admin)\n"
        code, _, err = run("user", "quota", "bob@example.org", "lots")
        assert code == 1 and "not a size: 'lots'" in oneLineError(err)
        code, _, err = run("user", "quota", "carol@example.org", "1G")
        assert code == 1 and "no such user: carol@example.org" in oneLineError(err)
        code, _, err = run("user", "quota", "carol@example.org")
        assert code == 1 and "no such user: carol@example.org" in oneLineError(err)

    def test_disableEnable(self, run, conf):
        """
        user disable ADDRESS stops the account's logins (the checker
        refuses the right password) and user list shows it; user enable
        undoes it: otherwise an operator could not lock out a compromised
        account from the terminal without deleting it.
        """
        from pymailer.auth.checkers import PasswordChecker
        from twisted.cred.error import UnauthorizedLogin
        run("domain", "add", "example.org")
        run("user", "add", "bob@example.org", "--password-stdin", stdin=PASSWORD + "\n")
        directory = SQLiteAccountDirectory(database(conf))
        checker = PasswordChecker(directory, None, None)
        try:
            # A login verified a moment ago is remembered; disabling must
            # still apply at once.
            assert checker.check(b"bob@example.org", PASSWORD.encode()) == "bob@example.org"
            assert run("user", "disable", "Bob@example.org") == (
                0, "bob@example.org is disabled: may not log in; mail to it is still"
                " delivered\n", "")
            assert run("user", "list")[1] == "bob@example.org (disabled)\n"
            with pytest.raises(UnauthorizedLogin):
                checker.check(b"bob@example.org", PASSWORD.encode())
            assert run("user", "enable", "bob@example.org") == (
                0, "bob@example.org is enabled: may log in\n", "")
            assert checker.check(b"bob@example.org", PASSWORD.encode()) == "bob@example.org"
        finally:
            directory.close()
        assert run("user", "list")[1] == "bob@example.org\n"
        code, _, err = run("user", "disable", "carol@example.org")
        assert code == 1 and "no such user: carol@example.org" in oneLineError(err)

    def test_addMakesInboxAndSpecialUseFolders(self, run, conf):
        """
        If this fails, a new user's mail client finds no INBOX, Sent, Drafts,
        Trash, Junk or Archive until mail arrives (APPEND to Sent fails).
        """
        run("domain", "add", "example.org")
        run("user", "add", "Bob@example.org", "--password-stdin", stdin=PASSWORD + "\n")
        store = openStore(configModule.load(conf))
        assert store.listMailboxes("bob@example.org") == [
            "INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]

    def test_unknownDomain(self, run):
        """
        A user on an unknown domain is a one-line error naming the domain,
        exit 1: otherwise the admin would not know to add the domain.
        """
        code, out, err = run("user", "add", "bob@nope.org",
                             "--password-stdin", stdin=PASSWORD + "\n")
        assert code == 1
        assert "no such domain: nope.org" in oneLineError(err)

    def test_emptyPasswordRefused(self, run):
        """
        An empty password is refused: otherwise an account could be opened
        with no password.
        """
        run("domain", "add", "example.org")
        code, _, err = run("user", "add", "bob@example.org",
                           "--password-stdin", stdin="\n")
        assert code == 1
        assert "empty password" in oneLineError(err)
        assert run("user", "list")[1] == ""

    def test_noPasswordOnCommandLine(self, run):
        """
        There is no option taking a password: otherwise it would be visible
        to every local user in the process list.
        """
        run("domain", "add", "example.org")
        code, _, err = run("user", "add", "bob@example.org",
                           "--password", PASSWORD)
        assert code == 2
        assert run("user", "list")[1] == ""

    def test_prompt(self, run, monkeypatch):
        """
        Without --password-stdin the password is asked twice and a mismatch
        refused: otherwise a typo would lock the user out.
        """
        import getpass
        run("domain", "add", "example.org")
        answers = iter(["one", "two"])
        monkeypatch.setattr(getpass, "getpass", lambda prompt: next(answers))
        code, _, err = run("user", "add", "bob@example.org")
        assert code == 1
        assert "passwords do not match" in oneLineError(err)
        answers = iter([PASSWORD, PASSWORD])
        assert run("user", "add", "bob@example.org")[0] == 0

    def test_passwd(self, run, conf):
        """
        user passwd replaces the hash: otherwise a user could not change a
        compromised password.
        """
        run("domain", "add", "example.org")
        run("user", "add", "bob@example.org", "--password-stdin",
            stdin=PASSWORD + "\n")
        directory = SQLiteAccountDirectory(database(conf))
        try:
            before = directory.passwordHash("bob@example.org")
            code, _, err = run("user", "passwd", "BOB@example.org",
                               "--password-stdin", stdin="new secret\n")
            assert (code, err) == (0, "")
            after = directory.passwordHash("bob@example.org")
        finally:
            directory.close()
        assert after != before
        assert verifyPassword(after, "new secret")
        assert not verifyPassword(after, PASSWORD)
        code, _, err = run("user", "passwd", "nobody@example.org",
                           "--password-stdin", stdin="x\n")
        assert code == 1
        assert "no such user" in oneLineError(err)

    def test_listAndRemove(self, run):
        """
        user list (optionally per domain) and remove work: otherwise the
        admin cannot see or revoke accounts.
        """
        run("domain", "add", "example.org")
        run("domain", "add", "other.org")
        for address in ("b@example.org", "a@example.org", "c@other.org"):
            run("user", "add", address, "--password-stdin", stdin="pw\n")
        assert run("user", "list")[1] == (
            "a@example.org\nb@example.org\nc@other.org\n")
        assert run("user", "list", "--domain", "other.org")[1] == (
            "c@other.org\n")
        assert run("user", "remove", "A@example.org")[0] == 0
        assert run("user", "list", "--domain", "example.org")[1] == (
            "b@example.org\n")
        code, _, err = run("user", "remove", "a@example.org")
        assert code == 1 and "no such user" in oneLineError(err)

    def test_unsafeAddress(self, run):
        """
        An unsafe mailbox name is a one-line error: otherwise a path like
        '../x' could be created in the store.
        """
        run("domain", "add", "example.org")
        code, _, err = run("user", "add", "../x@example.org",
                           "--password-stdin", stdin="pw\n")
        assert code == 1
        oneLineError(err)


class TestAlias:
    def test_addListRemove(self, run):
        """
        alias add/list/remove manage targets and whole aliases: otherwise
        postmaster@ and friends cannot be forwarded.
        """
        run("domain", "add", "example.org")
        code, out, err = run("alias", "add", "Postmaster@example.org",
                             "bob@example.org", "admin@remote.net")
        assert (code, err) == (0, "")
        assert run("alias", "add", "abuse@example.org", "bob@example.org")[0] == 0
        assert run("alias", "list")[1] == (
            "abuse@example.org -> bob@example.org\n"
            "postmaster@example.org -> admin@remote.net, bob@example.org\n")
        assert run("alias", "remove", "postmaster@example.org",
                   "admin@remote.net") == (
            0, "postmaster@example.org -> bob@example.org\n", "")
        assert run("alias", "remove", "abuse@example.org") == (
            0, "removed alias abuse@example.org\n", "")
        assert run("alias", "list")[1] == (
            "postmaster@example.org -> bob@example.org\n")

    def test_errors(self, run):
        """
        An alias without target is a usage error and one outside our
        domains a one-line error: otherwise mail would be silently lost.
        """
        run("domain", "add", "example.org")
        assert run("alias", "add", "a@example.org")[0] == 2
        code, _, err = run("alias", "add", "a@other.org", "b@example.org")
        assert code == 1
        assert "not in a local domain" in oneLineError(err)
        code, _, err = run("alias", "remove", "zzz@example.org")
        assert code == 1
        assert "no such alias" in oneLineError(err)


class TestMailboxList:
    def test_listsWhatWasDelivered(self, run, conf):
        """
        `pymailer mailbox list ADDRESS [FOLDER]` prints one line per message
        (UID, flags, size, date, From, Subject decoded) and a total, read
        through the store: if this fails, an admin (or a new user following
        the README) cannot see whether mail arrived without an IMAP client.
        """
        run("domain", "add", "example.org")
        run("user", "add", "bob@example.org", "--password-stdin", stdin=PASSWORD + "\n")
        store = openStore(configModule.load(conf))
        message = (b"From: Alice <alice@example.org>\r\n"
                   b"Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nHi Bob\r\n")
        store.deliver("bob@example.org", b"", io.BytesIO(message))
        store.mailbox("bob@example.org", "Sent").append(
            io.BytesIO(b"Subject: \x1b[31mred\r\n\r\nx\r\n"), flags=["\\Seen"])
        code, out, err = run("mailbox", "list", "Bob@example.org")
        assert code == 0, err
        first, total = out.splitlines()
        assert first.split()[:3] == ["1", "(-)", str(len(message))]
        assert first.endswith("  Alice <alice@example.org>  grüße")
        assert total == f"-- bob@example.org INBOX: 1 message, {len(message)} bytes"
        code, out, err = run("mailbox", "list", "bob@example.org", "Sent")
        assert code == 0, err
        assert "(\\Seen)" in out and "\x1b" not in out and "?[31mred" in out

    def test_unknownUserOrFolder(self, run):
        """
        A typo in the address or folder is a one-line error naming it (and
        the folders there are), exit 1; if this fails, the admin reads an
        empty listing as "no mail arrived", or a typo makes an account.
        """
        run("domain", "add", "example.org")
        run("user", "add", "bob@example.org", "--password-stdin", stdin=PASSWORD + "\n")
        code, _, err = run("mailbox", "list", "bobby@example.org")
        assert code == 1 and "no such user: bobby@example.org" in oneLineError(err)
        code, _, err = run("mailbox", "list", "bob@example.org", "Snet")
        assert code == 1
        assert "bob@example.org has no mailbox 'Snet' (mailboxes: INBOX, Archive," \
            in oneLineError(err)


class TestModuleEntry:
    def test_pythonDashM(self, conf):
        """
        'python -m pymailer' runs the admin command with real exit codes:
        otherwise the command works in tests but not when installed.
        """
        env = dict(os.environ)
        root = str(pathlib.Path(__file__).parent.parent)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")

        def pymailer(*args, stdin=""):
            return subprocess.run(
                [sys.executable, "-m", "pymailer", "--config", str(conf),
                 *args], input=stdin, capture_output=True, text=True,
                env=env, timeout=60)

        result = pymailer("check-config")
        assert (result.returncode, result.stdout) == (0, f"{conf}: OK\n")
        assert pymailer("domain", "add", "example.org").returncode == 0
        result = pymailer("user", "add", "bob@example.org",
                          "--password-stdin", stdin=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
        result = pymailer("user", "add", "bob@nope.org",
                          "--password-stdin", stdin=PASSWORD + "\n")
        assert result.returncode == 1
        assert result.stderr == "pymailer: error: no such domain: nope.org" \
            " (add it with: pymailer domain add nope.org)\n"
        result = pymailer("user", "list")
        assert result.stdout == "bob@example.org\n"
        assert pymailer().returncode == 2
