"""
A third party's policy piece, as a user would install one: a Twisted plugin
file in a C{twisted/plugins/} directory on the server's C{PYTHONPATH},
enabled by name in C{[policy] checks}, with its options from
C{[policy.NAME]}.
"""

import smtplib
import textwrap

import pytest

from mailserver import REPO_ROOT

PLUGIN = textwrap.dedent('''
    from twisted.internet.threads import deferToThreadPool
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from pymailer.interfaces import IPolicyFactory
    from pymailer.policy.decision import Decision, Policy


    class WordFilter(Policy):
        name = "wordfilter"

        def __init__(self, word, context):
            self.word = word.encode()
            self.context = context

        def checkData(self, facts, message):
            # Reading the message blocks: in the thread pool, not the reactor.
            return deferToThreadPool(
                self.context.reactor, self.context.threadpool, self.scan, message)

        def scan(self, message):
            with message.openData() as f:
                if self.word in f.read():
                    return Decision.reject(
                        550, "5.7.1", f"Message contains {self.word.decode()!r}",
                        "wordfilter.match")
            return Decision.accept()


    @implementer(IPlugin, IPolicyFactory)
    class WordFilterFactory:
        name = "wordfilter"

        def build(self, context, options):
            return WordFilter(options["word"], context)


    wordfilter = WordFilterFactory()
''')


@pytest.fixture
def pluginServer(tmp_path, makeMailServer):
    plugins = tmp_path / "thirdparty" / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "wordfilter_plugin.py").write_text(PLUGIN)
    return makeMailServer(
        env={"PYTHONPATH": f"{REPO_ROOT}:{tmp_path / 'thirdparty'}"},
        sections={"policy": {"checks": ["wordfilter"],
                             "wordfilter": {"word": "casino"}}},
    )


def test_plugin_found_by_name_rejects_with_its_reason(pluginServer):
    """A user's plugin refuses a message, and the sender sees its code and reason."""
    with smtplib.SMTP("127.0.0.1", pluginServer.port) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@remote.test", ["alice@example.org"],
                            b"Subject: win at the casino\r\n\r\nnow\r\n")
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error == b"5.7.1 Message contains 'casino'"
        client.sendmail("a@remote.test", ["alice@example.org"],
                        b"Subject: lunch\r\n\r\ntomorrow?\r\n")
    [data] = pluginServer.waitForMessages("alice@example.org", 1)
    assert b"lunch" in data


def test_unknown_plugin_name_stops_start(makeMailServer):
    """A typo in [policy] checks stops the server with one line naming it."""
    server = makeMailServer(start=False, sections={"policy": {"checks": ["wordfliter"]}})
    result = server.admin("check-config", check=False)
    assert result.returncode != 0
    assert "policy.checks" in result.stderr and "'wordfliter'" in result.stderr
