"""
The scanners' own logic without daemons: clamd's INSTREAM framing and
answers on a StringTransport, rspamd's actions mapped to decisions, and
their config keys.
"""

import struct

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport

from pymailer.config import Config, ConfigError, load
from pymailer.policy.clamav import ClamdProtocol, virusName
from pymailer.policy.decision import Facts, PolicyContext
from pymailer.policy.rspamd import Rspamd
from pymailer.policy.scanner import ChunkProducer, ScanError
from pymailer.policy.verdict import SpamScore


class FakeReader:
    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.size = sum(map(len, chunks))

    def read(self):
        return defer.succeed(self.chunks.pop(0) if self.chunks else b"")


def scanWith(chunks):
    protocol = ClamdProtocol(ChunkProducer(FakeReader(chunks)))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_instream_frames_every_chunk_and_ends_with_zero():
    """clamd gets zINSTREAM, each chunk behind its 4-byte length, then a zero length."""
    protocol, transport = scanWith([b"abc", b"defgh"])
    assert transport.value() == (b"zINSTREAM\0" + struct.pack(">I", 3) + b"abc"
                                 + struct.pack(">I", 5) + b"defgh" + struct.pack(">I", 0))
    answers = []
    protocol.answer.addCallback(answers.append)
    protocol.dataReceived(b"stream: Eicar-Signature FOUND")
    assert answers == []  # not yet NUL-terminated
    protocol.dataReceived(b"\0")
    assert answers == ["Eicar-Signature FOUND"]
    assert virusName(answers[0]) == "Eicar-Signature"
    assert virusName("OK") is None


def test_size_limit_answer_is_a_scan_error():
    """clamd's "INSTREAM size limit exceeded" is not mistaken for a clean message."""
    protocol, transport = scanWith([b"x"])
    failures = []
    protocol.answer.addErrback(failures.append)
    protocol.dataReceived(b"INSTREAM size limit exceeded. ERROR\0")
    assert failures[0].check(ScanError)
    assert str(failures[0].value) == "clamd: INSTREAM size limit exceeded"
    assert transport.disconnecting


def test_connection_lost_without_answer_fails_the_scan():
    """A clamd that hangs up without a verdict never lets a message pass as clean."""
    protocol, _ = scanWith([b"x"])
    failures = []
    protocol.answer.addErrback(failures.append)
    protocol.connectionLost(None)
    assert failures[0].check(ScanError)


@pytest.fixture
def rspamd(tmp_path):
    config = Config(hostname="mail.example.org", data_dir=tmp_path)
    return Rspamd(PolicyContext(config, MemoryReactorClock(), None, None),
                  config.policy.rspamd)


def facts():
    return Facts(clientAddress="192.0.2.1", sender="x@remote.test",
                 recipients=["alice@example.org"])


@pytest.mark.parametrize("action, code, text", [
    ("reject", 554, "5.7.1 Message refused as spam"),
    ("soft reject", 451, "4.7.1 Try again later"),
    ("greylist", 451, "4.7.1 Greylisted, try again later"),
])
def test_rspamd_refusing_actions(rspamd, action, code, text):
    """Each refusing rspamd action reaches the sender with its own code."""
    decision = rspamd.judge(facts(), {"action": action, "score": 9}, "Q1")
    assert decision.refuses
    assert (decision.code, f"{decision.enhanced} {decision.text}") == (code, text)


def test_rspamd_add_header_files_into_junk_with_its_score(rspamd):
    """rspamd's "add header" puts the message in Junk and its score in X-Spam-Score."""
    f = facts()
    decision = rspamd.judge(f, {"action": "add header", "score": 7.5, "symbols": {
        "BAYES_SPAM": {"score": 5.1}, "R_SPF_FAIL": {"score": 2.4}}}, "Q1")
    assert not decision.refuses and decision.folder == "Junk"
    assert SpamScore.of(f).total == 7.5


def test_rspamd_no_action_accepts(rspamd):
    """A clean verdict delivers to the INBOX, its (low) score recorded."""
    f = facts()
    decision = rspamd.judge(f, {"action": "no action", "score": -0.5}, "Q1")
    assert not decision.refuses and decision.folder is None
    assert SpamScore.of(f).total == -0.5


@pytest.mark.parametrize("table, message", [
    ('[policy.clamav]\nfail = "maybe"', "policy.clamav.fail"),
    ('[policy.clamav]\naddress = "127.0.0.1:99999"', "policy.clamav.address"),
    ('[policy.clamav]\nsocket = "relative.sock"', "policy.clamav.socket"),
    ('[policy.rspamd]\nurl = "127.0.0.1:11333"', "policy.rspamd.url"),
    ('[policy.rspamd]\ntimeout = 0', "policy.rspamd.timeout"),
])
def test_bad_scanner_config_named(tmp_path, table, message):
    """A mistyped scanner key stops the server at startup, naming the key."""
    path = tmp_path / "pymailer.toml"
    path.write_text(f'hostname = "mail.example.org"\ndata_dir = "{tmp_path}"\n{table}\n')
    with pytest.raises(ConfigError) as e:
        load(path)
    assert message in str(e.value)
