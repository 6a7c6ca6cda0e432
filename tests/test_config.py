"""
Tests for L{pymailer.config}: the sample file loads, and every mistake is
reported as one line naming the file, the key and the reason.
"""

import dataclasses
import os
import pathlib
import socket

import pytest

from pymailer import config
from pymailer.config import ConfigError

SAMPLE = pathlib.Path(__file__).parent.parent / "etc" / "pymailer.toml"

MINIMAL = 'hostname = "mail.example.org"\ndata_dir = "/var/lib/pymailer"\n'


def writeConfig(tmp_path, text, name="pymailer.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def loadError(tmp_path, text):
    path = writeConfig(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


class TestSample:
    def test_sampleLoads(self):
        """
        The shipped etc/pymailer.toml is valid: otherwise a new user copying
        it gets an error before anything runs.
        """
        c = config.load(SAMPLE)
        assert c.hostname == "mail.example.org"
        assert c.data_dir == pathlib.Path("/var/lib/pymailer")
        assert c.source == str(SAMPLE)
        assert c.listen.roles() == {
            "smtp": "tcp:25", "submission": "tcp:587",
            "submissions": "ssl:465", "imap": "tcp:143", "imaps": "ssl:993",
            "pop3": "tcp:110", "pop3s": "ssl:995", "https": "ssl:443",
            "http": "tcp:80", "metrics": "tcp:9090:interface=127.0.0.1"}
        assert c.mta_sts == config.MTASTSConfig()
        assert c.smtp == config.SMTPConfig()
        # The sample names a postmaster address (there is no default one).
        assert c.delivery == config.DeliveryConfig(postmaster="admin@example.org")
        assert c.queue == config.QueueConfig()
        assert c.imap == c.pop3 == config.ConnectionLimits()

    def test_sampleMentionsEveryKey(self):
        """
        Every dataclass field appears in the sample: otherwise a setting
        exists that users cannot discover from the sample file.
        """
        text = SAMPLE.read_text()
        for cls in (config.ListenConfig, config.SMTPConfig,
                    config.DeliveryConfig, config.QueueConfig,
                    config.RateLimitConfig, config.DMARCConfig,
                    config.ConnectionLimits, config.MTASTSConfig):
            for f in dataclasses.fields(cls):
                assert f"\n{f.name} = " in text, f.name
        for name in ("checks", "authserv_id"):
            assert f"\n{name} = " in text, name

    def test_minimal(self, tmp_path):
        """
        Only hostname and data_dir are required; the rest defaults and no
        listener is on: otherwise a minimal file would fail or open ports.
        """
        c = config.load(writeConfig(tmp_path, MINIMAL))
        assert c.listen.roles() == {}
        assert c.smtp.max_message_size == 52428800

    def test_rolesOrder(self):
        """
        roles() lists only configured roles in the canonical order:
        otherwise the service would start unexpected listeners.
        """
        listen = config.ListenConfig(pop3s="ssl:995", smtp="tcp:25")
        assert list(listen.roles().items()) == [
            ("smtp", "tcp:25"), ("pop3s", "ssl:995")]


class TestErrors:
    def test_unknownTopLevelKey(self, tmp_path):
        """
        A misspelt top-level key is named: otherwise a typo silently falls
        back to a default.
        """
        message = loadError(tmp_path, MINIMAL + 'hostnme = "x"\n')
        assert message.endswith(": hostnme: unknown key")

    def test_unknownSMTPKey(self, tmp_path):
        """
        A misspelt [smtp] key is named with its section: otherwise a limit
        the admin set would silently not apply.
        """
        message = loadError(tmp_path, MINIMAL + "[smtp]\nfoo = 1\n")
        assert message.endswith(": smtp.foo: unknown key")

    def test_imapAndPOP3ConnectionLimits(self, tmp_path):
        """
        [imap], [pop3] and [web] set their own connection limits and name a bad or
        misspelt key: otherwise an admin could not raise the limit for a
        big NAT'd office, or a typo would silently keep the default.
        """
        c = config.load(writeConfig(
            tmp_path, MINIMAL + "[imap]\nmax_connections_per_ip = 200\n"
                                "[pop3]\nmax_connections = 10\n"
                                "[web]\nmax_connections_per_ip = 5\n"))
        assert c.imap == config.ConnectionLimits(max_connections_per_ip=200)
        assert c.pop3 == config.ConnectionLimits(max_connections=10)
        assert c.web == config.WebConfig(max_connections_per_ip=5)
        assert config.load(writeConfig(tmp_path, MINIMAL)).imap.max_connections_per_ip == 50
        message = loadError(tmp_path, MINIMAL + "[imap]\nmax_connections = 0\n")
        assert message.endswith(": imap.max_connections: expected a positive integer, got 0")
        message = loadError(tmp_path, MINIMAL + "[pop3]\nmax_conections = 5\n")
        assert message.endswith(": pop3.max_conections: unknown key")

    def test_webUploadsPerUser(self, tmp_path):
        """
        [web] max_uploads_per_user bounds the webmail uploads one user sends
        at once (2 by default) and must be positive: otherwise an admin
        could not allow more, or 0 would refuse every attachment.
        """
        assert config.load(writeConfig(tmp_path, MINIMAL)).web.max_uploads_per_user == 2
        c = config.load(writeConfig(tmp_path, MINIMAL + "[web]\nmax_uploads_per_user = 5\n"))
        assert c.web == config.WebConfig(max_uploads_per_user=5)
        message = loadError(tmp_path, MINIMAL + "[web]\nmax_uploads_per_user = 0\n")
        assert message.endswith(": web.max_uploads_per_user: expected a positive integer, got 0")

    def test_storageBackend(self, tmp_path):
        """
        [storage] backend picks the store (sqlite unless set) and a wrong
        value is named: otherwise a typo would silently keep mail in the
        other backend, where the admin does not look for it.
        """
        from pymailer.store import openStore
        from pymailer.store.maildir import MaildirStore
        from pymailer.store.sqlite import SQLiteStore

        c = config.load(writeConfig(tmp_path, MINIMAL))
        assert c.storage.backend == "sqlite"
        c = config.load(writeConfig(
            tmp_path, f'hostname = "mail.example.org"\ndata_dir = "{tmp_path}/d"\n'
                      '[storage]\nbackend = "sqlite"\n'))
        assert c.storage.backend == "sqlite"
        store = openStore(c)
        assert isinstance(store, SQLiteStore)
        assert (tmp_path / "d" / "store" / "index.sqlite").exists()
        assert isinstance(openStore(dataclasses.replace(
            c, storage=config.StorageConfig("maildir"))), MaildirStore)
        message = loadError(tmp_path, MINIMAL + '[storage]\nbackend = "mysql"\n')
        assert message.endswith(": storage.backend: expected maildir, sqlite or postgresql, got 'mysql'")
        message = loadError(tmp_path, MINIMAL + '[storage]\nbakend = "sqlite"\n')
        assert message.endswith(": storage.bakend: unknown key")

    def test_storagePostgreSQL(self, tmp_path):
        """
        backend = "postgresql" takes a postgresql:// DSN and a pool size,
        and check-config names what is missing or wrong (never echoing a
        password): otherwise a node would start on its own SQLite files and
        silently not share the queue and accounts with the others.
        """
        pg = MINIMAL + '[storage]\nbackend = "postgresql"\n'
        c = config.load(writeConfig(
            tmp_path, pg + 'dsn = "postgresql://pymailer@db.example.org:5433/mail"\npool_size = 4\n'
                           'queue_lease = 30\n'))
        assert c.storage == config.StorageConfig(
            "postgresql", "postgresql://pymailer@db.example.org:5433/mail", 4, 30.0)
        assert config.load(writeConfig(
            tmp_path, pg + 'dsn = "postgres:///mail?host=/run/postgresql"\n')).storage.pool_size == 10
        assert config.default(tmp_path).storage == config.StorageConfig("sqlite", None, 10, 120.0)
        message = loadError(tmp_path, pg + 'dsn = "postgresql://h/db"\nqueue_lease = 0.5\n')
        assert message.endswith(": storage.queue_lease: expected a number >= 1, got 0.5")
        message = loadError(tmp_path, pg)
        assert ": storage.dsn: missing: backend = \"postgresql\" needs" in message
        message = loadError(tmp_path, pg + 'dsn = "mysql://u:secret@h/db"\n')
        assert message.endswith(": storage.dsn: expected a URI starting with postgresql://,"
                                " got 'mysql:...'")
        assert "secret" not in message
        message = loadError(tmp_path, pg + 'dsn = "postgresql://h:99999/db"\n')
        assert ": storage.dsn: not a postgresql:// URI: " in message
        message = loadError(tmp_path, pg + 'dsn = "postgresql://h/db"\npool_size = 0\n')
        assert message.endswith(": storage.pool_size: expected a positive integer, got 0")
        message = loadError(tmp_path, MINIMAL + '[storage]\ndsn = "postgresql://h/db"\n')
        assert message.endswith(': storage.dsn: only for backend = "postgresql"')

    def test_storageBlobDirectory(self, tmp_path):
        """
        blobs takes "postgresql" (the default) or an absolute directory, and
        only with backend = "postgresql": otherwise nodes started from
        different working directories would keep content in different
        places, or a SQLite installation would seem to use a shared one.
        """
        pg = MINIMAL + '[storage]\nbackend = "postgresql"\ndsn = "postgresql://h/db"\n'
        c = config.load(writeConfig(tmp_path, pg + 'blobs = "/srv/blobs"\n'))
        assert c.storage.blobDirectory() == pathlib.Path("/srv/blobs")
        assert config.load(writeConfig(tmp_path, pg)).storage.blobDirectory() is None
        message = loadError(tmp_path, pg + 'blobs = "blobs"\n')
        assert message.endswith(': storage.blobs: expected "postgresql" or an absolute'
                                " directory path, got 'blobs'")
        message = loadError(tmp_path, MINIMAL + '[storage]\nblobs = "/srv/blobs"\n')
        assert message.endswith(': storage.blobs: only for backend = "postgresql"')

    def test_wrongType(self, tmp_path):
        """
        A string where a number is expected is refused naming key and
        value: otherwise the server would crash later with a TypeError.
        """
        message = loadError(
            tmp_path, MINIMAL + '[smtp]\nmax_message_size = "big"\n')
        assert message.endswith(
            ": smtp.max_message_size: expected a positive integer,"
            " got 'big'")

    def test_boolIsNotInt(self, tmp_path):
        """
        true is not a size (bool is an int in Python): otherwise
        max_message_size = true would mean a 1-byte limit.
        """
        message = loadError(
            tmp_path, MINIMAL + "[smtp]\nmax_message_size = true\n")
        assert message.endswith(
            ": smtp.max_message_size: expected a positive integer, got true")

    def test_boolIsNotNumber(self, tmp_path):
        """
        true is not a timeout either: otherwise idle_timeout = true would
        close connections after one second.
        """
        message = loadError(tmp_path, MINIMAL + "[smtp]\nidle_timeout = true\n")
        assert ": smtp.idle_timeout: expected a positive number" in message

    def test_negative(self, tmp_path):
        """
        Zero or negative limits are refused: otherwise every message would
        be too big.
        """
        message = loadError(
            tmp_path, MINIMAL + "[smtp]\nmax_message_size = 0\n")
        assert ": smtp.max_message_size: expected a positive integer, got 0" \
            in message

    def test_badEndpointPort(self, tmp_path):
        """
        A non-numeric port is refused at load time naming the role:
        otherwise twistd would fail at startup with a traceback.
        """
        message = loadError(
            tmp_path, MINIMAL + '[listen]\nsmtp = "tcp:abc"\n')
        assert message.endswith(
            ": listen.smtp: bad endpoint 'tcp:abc':"
            " port must be an integer 0-65535")

    def test_portOutOfRange(self, tmp_path):
        """
        Port 70000 is refused: otherwise startup fails with an obscure
        OverflowError.
        """
        message = loadError(
            tmp_path, MINIMAL + '[listen]\nimaps = "ssl:70000"\n')
        assert ": listen.imaps: bad endpoint 'ssl:70000': port must be" \
            in message

    def test_unknownEndpointType(self, tmp_path):
        """
        An unknown endpoint type is refused: otherwise a typo like 'tpc:25'
        would only show up at startup.
        """
        message = loadError(
            tmp_path, MINIMAL + '[listen]\nsmtp = "tpc:25"\n')
        assert ": listen.smtp: bad endpoint 'tpc:25': unknown endpoint" \
            " type 'tpc'" in message

    def test_unknownEndpointArgument(self, tmp_path):
        """
        A misspelt endpoint keyword is refused: otherwise startup fails
        with a TypeError.
        """
        message = loadError(
            tmp_path, MINIMAL + '[listen]\nsmtp = "tcp:25:interfce=::1"\n')
        assert "listen.smtp: bad endpoint" in message
        assert "unknown argument 'interfce'" in message

    def test_missingFile(self, tmp_path):
        """
        A missing file is one line with the OS reason: otherwise the admin
        sees a traceback.
        """
        path = tmp_path / "nope.toml"
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert str(info.value) == (
            f"{path}: cannot read config file: No such file or directory")

    def test_tomlSyntaxError(self, tmp_path):
        """
        A TOML syntax error is one line with the position: otherwise the
        admin cannot find the mistake.
        """
        message = loadError(tmp_path, "hostname = \n")
        assert ": TOML syntax error: " in message
        assert "line 1" in message

    def test_missingHostname(self, tmp_path):
        """
        hostname is required in a file: otherwise the server would greet
        with a guessed name that may not match its DNS.
        """
        message = loadError(tmp_path, 'data_dir = "/var/lib/pymailer"\n')
        assert message.endswith(": hostname: missing required key")

    def test_missingDataDir(self, tmp_path):
        """
        data_dir is required in a file: otherwise mail would land somewhere
        unexpected.
        """
        message = loadError(tmp_path, 'hostname = "mx.example.org"\n')
        assert message.endswith(": data_dir: missing required key")

    def test_sectionNotTable(self, tmp_path):
        """
        A section given as a scalar is refused naming it: otherwise
        a crash with AttributeError.
        """
        message = loadError(tmp_path, MINIMAL + "smtp = 5\n")
        assert message.endswith(": smtp: expected a table, got 5")

    def test_badDelimiter(self, tmp_path):
        """
        A letter as recipient delimiter is refused: otherwise 'alexander'
        would be delivered to 'a'.
        """
        message = loadError(
            tmp_path, MINIMAL + '[delivery]\nrecipient_delimiter = "x"\n')
        assert ": delivery.recipient_delimiter: expected one punctuation" \
            in message

    def test_emptyDelimiter(self, tmp_path):
        """
        An empty delimiter turns plus-addressing off: otherwise users who
        want it off could not say so.
        """
        c = config.load(writeConfig(
            tmp_path, MINIMAL + '[delivery]\nrecipient_delimiter = ""\n'))
        assert c.delivery.recipient_delimiter == ""

    def test_retryMaxBelowMin(self, tmp_path):
        """
        retry_max below retry_min is refused: otherwise the backoff would
        be nonsense.
        """
        message = loadError(
            tmp_path, MINIMAL + "[queue]\nretry_min = 600\nretry_max = 60\n")
        assert ": queue.retry_max: must be >= queue.retry_min" in message

    def test_badHostname(self, tmp_path):
        """
        A hostname with spaces is refused: otherwise it would corrupt every
        EHLO and Received: header.
        """
        message = loadError(
            tmp_path, 'hostname = "mail example"\ndata_dir = "/x"\n')
        assert ": hostname: not a valid host name" in message


class TestValues:
    def test_relativeDataDir(self, tmp_path, monkeypatch):
        """
        A relative data_dir is relative to the config file, not to the
        current directory: otherwise starting twistd from another directory
        would use another (empty) mail store.
        """
        confDir = tmp_path / "etc"
        confDir.mkdir()
        path = writeConfig(confDir, 'hostname = "h"\ndata_dir = "data"\n')
        monkeypatch.chdir(tmp_path)
        c = config.load("etc/pymailer.toml")
        assert c.data_dir == confDir / "data"
        assert c.data_dir.is_absolute()
        assert c.source == "etc/pymailer.toml"
        assert config.load(path).data_dir == confDir / "data"

    def test_floatsAndInts(self, tmp_path):
        """
        Times accept integers and floats: otherwise 'idle_timeout = 30.5'
        or '= 30' would be refused.
        """
        c = config.load(writeConfig(
            tmp_path, MINIMAL + "[smtp]\nidle_timeout = 30.5\n"
                                "min_free_disk_factor = 0\n"))
        assert c.smtp.idle_timeout == 30.5
        assert c.smtp.min_free_disk_factor == 0

    @pytest.mark.parametrize("endpoint", [
        "tcp:25", "tcp:port=25:interface=127.0.0.1", "tcp6:25:interface=\\:\\:1",
        "ssl:465", "ssl:993:privateKey=/etc/ssl/k.pem", "unix:/run/p.sock",
        "unix:address=/run/a\\:b.sock:mode=660", "systemd:domain=INET:index=0",
    ])
    def test_validEndpoints(self, endpoint):
        """
        Valid Twisted endpoint strings pass, including plugin types and
        escaped colons: otherwise a correct config would be refused.
        """
        config.validateEndpoint(endpoint)

    @pytest.mark.parametrize("endpoint, reason", [
        ("", "empty"), ("25", "unknown endpoint type '25'"),
        ("tcp", "missing port"), ("tcp:25:port=26", "port given twice"),
        ("tcp:-1", "port must be"), ("unix:", "missing address"),
        ("tcp:25\\", "trailing backslash"),
    ])
    def test_invalidEndpoints(self, endpoint, reason):
        """
        Malformed endpoint strings are refused with a reason: otherwise the
        server fails only when binding.
        """
        with pytest.raises(ValueError, match=reason):
            config.validateEndpoint(endpoint)

    def test_default(self, tmp_path, monkeypatch):
        """
        The embedded default listens on loopback high ports only and keeps
        data under the current directory: otherwise trying pymailer out
        would expose a mail server or need root.
        """
        monkeypatch.setattr(socket, "getfqdn", lambda: "")
        c = config.default(tmp_path)
        assert c.hostname == "localhost"
        assert c.data_dir == tmp_path / "pymailer-data"
        assert c.source is None
        assert c.listen.roles() == {
            "smtp": "tcp:2525:interface=127.0.0.1",
            "submission": "tcp:2587:interface=127.0.0.1",
            "submissions": "ssl:2465:interface=127.0.0.1",
            "imap": "tcp:1143:interface=127.0.0.1",
            "imaps": "ssl:1993:interface=127.0.0.1",
            "pop3": "tcp:1110:interface=127.0.0.1",
            "pop3s": "ssl:1995:interface=127.0.0.1",
            "https": "ssl:8443:interface=127.0.0.1",
        }
        for endpoint in c.listen.roles().values():
            config.validateEndpoint(endpoint)
        monkeypatch.setattr(socket, "getfqdn", lambda: "box.lan")
        assert config.default(tmp_path).hostname == "box.lan"

    def test_loadOrDefault(self, tmp_path, monkeypatch):
        """
        loadOrDefault(None) is the default and a path is loaded: otherwise
        --config would be ignored or required.
        """
        monkeypatch.chdir(tmp_path)
        assert config.loadOrDefault(None).source is None
        path = writeConfig(tmp_path, MINIMAL)
        assert config.loadOrDefault(str(path)).source == str(path)

    def test_frozen(self):
        """
        Config objects cannot be changed after loading: otherwise one
        component could silently change another's settings.
        """
        c = config.default()
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.hostname = "x"
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.smtp.max_message_size = 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.listen.smtp = "tcp:1"


def test_unreadable_tls_certificate_is_a_config_error(tmp_path):
    """A [tls] cert that does not exist is one config error line, not an OpenSSL traceback at start."""
    from pymailer import config

    path = tmp_path / "c.toml"
    path.write_text(
        'hostname = "mx.example.org"\ndata_dir = "d"\n[tls]\n'
        'cert = "/nonexistent.pem"\nkey = "/nonexistent.key"\n'
    )
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert str(e.value) == f"{path}: tls.cert: cannot read /nonexistent.pem: no such file"


class TestPolicy:
    def test_defaults(self, tmp_path):
        """Without [policy], every check of ours is on, rate limits at their defaults."""
        c = config.load(writeConfig(tmp_path, MINIMAL))
        assert c.policy.checks == ("ratelimit", "spf", "dkim", "arc", "dmarc")
        assert c.authservId == "mail.example.org"
        assert c.policy.options()["ratelimit"]["connections_per_minute"] == 600

    def test_plugin_options_passed_as_they_are(self, tmp_path):
        """A plugin's [policy.NAME] table reaches it unchanged."""
        c = config.load(writeConfig(tmp_path, MINIMAL + (
            '[policy]\nchecks = ["spf", "examplecheck"]\nauthserv_id = "mx.example.org"\n'
            '[policy.examplecheck]\ndelay = 300\n[policy.dmarc]\n'
            'mark_only_domains = ["Example.NET"]\n')))
        assert c.policy.options()["examplecheck"] == {"delay": 300}
        assert c.policy.dmarc.mark_only_domains == ("example.net",)
        assert c.authservId == "mx.example.org"

    @pytest.mark.parametrize("text, key, reason", [
        ('[policy]\nchecks = "spf"\n', "policy.checks", "expected an array of strings"),
        ('[policy]\nchecks = ["spf", "spf"]\n', "policy.checks", "names 'spf' twice"),
        ('[policy]\nchecks = ["dmarc", "spf", "dkim"]\n', "policy.checks",
         "'dmarc' needs 'spf' before it"),
        ('[policy]\nchecks = ["spf", "dmarc"]\n', "policy.checks",
         "'dmarc' needs 'dkim' before it"),
        ('[policy]\nauthserv_id = "a b"\n', "policy.authserv_id", "not a valid authserv-id"),
        ('[policy]\nchecks = ["spf"]\n[policy.examplecheck]\ndelay = 1\n', "policy.examplecheck",
         "which policy.checks does not name"),
        ('[policy.ratelimit]\nmessages_per_hour = -1\n', "policy.ratelimit.messages_per_hour",
         "expected an integer >= 0"),
        ('[policy.ratelimit]\nbursts = 1\n', "policy.ratelimit.bursts", "unknown key"),
        ('[policy]\nlimit = 1\n', "policy.limit", "unknown key"),
    ])
    def test_errors_name_the_key(self, tmp_path, text, key, reason):
        """Each mistake in [policy] is one line naming the key and the reason."""
        message = loadError(tmp_path, MINIMAL + text)
        assert f": {key}: " in message and reason in message, message


class TestRelay:
    def test_smarthost_verified_by_default(self, tmp_path):
        """Without [relay] keys, a smarthost's certificate is verified and AUTH needs TLS."""
        c = config.load(writeConfig(tmp_path, MINIMAL))
        assert c.relay.smarthost_tls_verify is True
        assert c.relay.smarthost_auth_plaintext is False
        assert c.relay.smarthost_ca_file is None

    def test_ca_file_relative_to_config(self, tmp_path):
        """smarthost_ca_file is read relative to the config file, like [tls] cert."""
        (tmp_path / "ca.pem").write_text("x")
        c = config.load(writeConfig(tmp_path, MINIMAL + '[relay]\nsmarthost_ca_file = "ca.pem"\n'))
        assert c.relay.smarthost_ca_file == tmp_path / "ca.pem"

    @pytest.mark.parametrize("text, key, reason", [
        ('[relay]\nsmarthost_ca_file = "/nonexistent.pem"\n', "relay.smarthost_ca_file",
         "cannot read /nonexistent.pem: no such file"),
        ('[relay]\nsmarthost_tls_verify = "no"\n', "relay.smarthost_tls_verify",
         "expected true or false"),
    ])
    def test_errors_name_the_key(self, tmp_path, text, key, reason):
        """A missing CA file or a non-boolean switch is one line naming the key, before any mail waits."""
        message = loadError(tmp_path, MINIMAL + text)
        assert f": {key}: " in message and reason in message, message


class TestWebKeys:
    def test_mtaSTSDefaultsToTesting(self, tmp_path):
        """
        Without [mta_sts] the policy is 'testing' for a week: otherwise a
        new server would tell senders to refuse mail without valid TLS
        before its certificate is in place.
        """
        c = config.load(writeConfig(tmp_path, MINIMAL))
        assert c.mta_sts == config.MTASTSConfig(mode="testing", max_age=604800)

    def test_mtaSTSKeys(self, tmp_path):
        """The [mta_sts] keys are read: otherwise 'enforce' would be ignored."""
        c = config.load(writeConfig(
            tmp_path, MINIMAL + '[mta_sts]\nmode = "enforce"\nmax_age = 86400\n'))
        assert c.mta_sts == config.MTASTSConfig(mode="enforce", max_age=86400)

    @pytest.mark.parametrize("text, key, reason", [
        ('mode = "enforcing"', "mta_sts.mode", "expected testing, enforce or none"),
        ("max_age = 0", "mta_sts.max_age", "positive integer"),
        ("max_age = 40000000", "mta_sts.max_age", "at most 31557600"),
        ("mod = 1", "mta_sts.mod", "unknown key"),
    ])
    def test_mtaSTSMistakes(self, tmp_path, text, key, reason):
        """
        check-config names a bad [mta_sts] key: otherwise a typo would serve
        a policy senders reject (RFC 8461 §3.2) or silently fall back.
        """
        message = loadError(tmp_path, MINIMAL + "[mta_sts]\n" + text + "\n")
        assert f": {key}: " in message and reason in message

    def test_webListenersAreEndpoints(self, tmp_path):
        """
        [listen] https, http and metrics are checked like the mail
        listeners: otherwise a bad one would fail only at start-up.
        """
        c = config.load(writeConfig(tmp_path, MINIMAL + '[listen]\nhttps = "ssl:443"\n'
                                    'metrics = "tcp:9090:interface=127.0.0.1"\n'))
        assert c.listen.roles() == {"https": "ssl:443",
                                    "metrics": "tcp:9090:interface=127.0.0.1"}
        message = loadError(tmp_path, MINIMAL + '[listen]\nhttp = "tcp:eighty"\n')
        assert ": listen.http: bad endpoint" in message


class TestServer:
    def test_workersDefaultToTheCores(self, tmp_path):
        """Without [server] workers, one worker per CPU core this process may use."""
        c = config.load(writeConfig(tmp_path, MINIMAL))
        assert c.server.workers is None
        assert c.server.workerCount() == len(os.sched_getaffinity(0))

    def test_workersAsWritten(self, tmp_path):
        """`workers = 1` keeps one process; a count is taken as written."""
        for n in (1, 3):
            c = config.load(writeConfig(tmp_path, MINIMAL + f"[server]\nworkers = {n}\n"))
            assert c.server.workerCount() == n

    @pytest.mark.parametrize("text, reason", [
        ("[server]\nworkers = 0\n", "server.workers: expected a positive integer"),
        ("[server]\nworkers = true\n", "server.workers: expected a positive integer"),
        ("[server]\nprocesses = 2\n", "server.processes: unknown key"),
    ])
    def test_mistakes(self, tmp_path, text, reason):
        """A bad [server] key is one line naming it, and no start."""
        assert reason in loadError(tmp_path, MINIMAL + text)


@pytest.mark.parametrize("description, expected", [
    ("tcp:143", "tcp:143:backlog=1024"),
    ("ssl:993:interface=127.0.0.1", "ssl:993:interface=127.0.0.1:backlog=1024"),
    ("unix:/run/pymailer.sock", "unix:/run/pymailer.sock:backlog=1024"),
    ("tcp:143:backlog=10", "tcp:143:backlog=10"),
    ("tcp:143:127.0.0.1:10", "tcp:143:127.0.0.1:10"),  # positional backlog
    ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),  # a plugin's own
])
def test_listeners_get_a_backlog_unless_they_name_one(description, expected):
    """If this fails, a listener without backlog= keeps Twisted's 50 (400
    clients at once: some wait forever for a greeting), or one the admin
    chose is overridden."""
    assert config.withBacklog(description) == expected


class TestAuth:
    def test_spread_bounds_default_to_ten_times_max_failures(self, tmp_path):
        """
        max_failures_per_account and max_failures_per_address follow
        max_failures (ten times) unless set: an admin lowering max_failures
        lowers the bounds on spread-out guessing too.
        """
        c = config.load(writeConfig(tmp_path, MINIMAL + "[auth]\nmax_failures = 3\n"))
        assert (c.auth.max_failures_per_account, c.auth.max_failures_per_address) == (30, 30)
        c = config.load(writeConfig(tmp_path, MINIMAL + "[auth]\nmax_failures_per_account = 7\n"))
        assert (c.auth.max_failures_per_account, c.auth.max_failures_per_address) == (7, 50)

    def test_spread_bound_below_max_failures_refused(self, tmp_path):
        """A per-account bound below the per-address-and-account one is a mistake, named."""
        message = loadError(tmp_path, MINIMAL + "[auth]\nmax_failures_per_account = 2\n")
        assert ": auth.max_failures_per_account: " in message
        assert "at least max_failures (5)" in message
