"""
The openspf RFC 7208 test suite (C{rfc7208-tests.yml}, release 2014.04) run
through our SPF evaluator, with the suite's zone data served by both
resolvers: the L{FakeResolver} and the real L{pymailer.dns.Resolver}
querying a L{DNSServer} on loopback.

The suite is not copied into the repository: the session fixture fetches
the source distribution of pyspf from PyPI (which ships it) with
C{pip download --no-binary :all: --no-deps pyspf}; when that fails the tests
fail (a suite we could not run has not passed).

How the suite's zone data becomes our zone (the same conventions as
pyspf's own driver, C{test/testspf.py}):
  - C{SPF} entries are also published as C{TXT} when the name has no TXT
    entry of its own (the suite was written for both RR types; RFC 7208
    §3.1 and §14.1 say to query TXT only, which the test checks);
  - C{TXT: NONE} means "no TXT record" (it only stops that copying);
  - a TXT given as a list is one record of several strings; the empty list
    (the "null-text" case) becomes one empty string, as dnspython cannot
    make a TXT record of no strings;
  - C{TIMEOUT} marks a name whose lookups (of types it has no record of)
    fail temporarily: the fake raises the temporary L{DNSError}, the server
    answers SERVFAIL at once (the real resolver reports that as the same
    temporary error without waiting for a timeout);
  - C{MX: [0, ""]} is a null MX (C{0 .}).

A case may list several acceptable results; C{explanation} must match when
given (our default explanation is set to "DEFAULT", as pyspf's driver
does).  A case we answer differently must be listed in
L{EXPECTED_DIFFERENCES} with the RFC 7208 section that justifies our
answer; there are none.
"""

import subprocess
import sys
import tarfile

import pytest
import yaml

from dnsserver import DNSServer
from pymailer.config import DNSConfig
from pymailer.dns import Resolver
from pymailer.policy.spf import evaluate
from pymailer.testing import ClockReactor, FakeResolver, SynchronousThreadPool

RELEASE = "release 2014.04"

#: case id -> (our result, "RFC 7208 §...: why our answer is right").
EXPECTED_DIFFERENCES = {}


@pytest.fixture(scope="session")
def suite(tmp_path_factory):
    """The scenarios of rfc7208-tests.yml, from the pyspf sdist on PyPI."""
    directory = tmp_path_factory.mktemp("pyspf")
    command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
               "--disable-pip-version-check", "pyspf", "-d", str(directory)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"could not fetch the pyspf sdist: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    tarballs = sorted(directory.glob("pyspf-*.tar.gz"))
    assert tarballs, f"pip download left no pyspf-*.tar.gz in {directory}"
    with tarfile.open(tarballs[-1]) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/test/rfc7208-tests.yml")), None)
        assert member is not None, f"{tarballs[-1].name} has no test/rfc7208-tests.yml"
        text = tar.extractfile(member).read().decode("utf-8")
    assert RELEASE in text.split("---", 1)[0], "the suite in the pyspf sdist is not the 2014.04 release"
    return list(yaml.safe_load_all(text))


def txtText(strings):
    """TXT strings (str, as the suite has them) in zone-file text."""
    def quoted(s):
        out = []
        for byte in s.encode("utf-8"):
            char = chr(byte)
            out.append(char if 0x20 <= byte < 0x7F and char not in '"\\' else f"\\{byte:03d}")
        return '"' + "".join(out) + '"'

    return " ".join(quoted(s) for s in strings) if strings else '""'


def zoneOf(zonedata):
    """The suite's zonedata as C{{name: [(type, text), ..., "TIMEOUT"]}}."""
    zone = {}
    for name, entries in (zonedata or {}).items():
        hasTXT = any(isinstance(e, dict) and "TXT" in e for e in entries)
        records = []
        for entry in entries:
            if entry == "TIMEOUT":
                records.append(FakeResolver.TIMEOUT)
                continue
            ((rtype, value),) = entry.items()
            if rtype in ("TXT", "SPF"):
                strings = [value] if isinstance(value, str) else list(value)
                if strings == ["NONE"]:
                    continue
                records.append((rtype, txtText(strings)))
                if rtype == "SPF" and not hasTXT:
                    records.append(("TXT", txtText(strings)))
            elif rtype == "MX":
                preference, host = value
                records.append(("MX", f"{preference} {host or '.'}"))
            else:
                records.append((rtype, str(value)))
        zone[name] = records
    return zone


class FakeWorld:
    def __init__(self, zone):
        self.resolver = FakeResolver(zone)

    def queriedTypes(self):
        return {rdtype for _, rdtype in self.resolver.queries}

    def close(self):
        pass


class RealWorld:
    """
    The real resolver, its thread hop replaced by L{SynchronousThreadPool}
    and L{ClockReactor} (so its C{lookup} fires at once); everything else
    (dnspython, UDP, the wire format, error mapping) is the real path.
    """

    def __init__(self, zone):
        self.server = DNSServer(zone)
        self.resolver = Resolver(
            DNSConfig(servers=(self.server.address,), timeout=5.0), ClockReactor(), SynchronousThreadPool(),
        )

    def queriedTypes(self):
        return {rdtype for _, rdtype in self.server.queries}

    def close(self):
        self.server.stop()
        assert not self.server.errors, self.server.errors


WORLDS = {"fake": FakeWorld, "real": RealWorld}


def runCase(resolver, case):
    results = []
    evaluate(
        resolver, case["host"], case["mailfrom"], case["helo"],
        receivingHost="receiver.example.net", defaultExplanation="DEFAULT",
    ).addBoth(results.append)
    assert results, "the check did not finish synchronously"
    return results[0]


@pytest.mark.parametrize("kind", sorted(WORLDS))
def test_rfc7208_suite(suite, kind):
    """
    Every case of the openspf RFC 7208 suite gives an accepted result (and
    explanation) through this resolver.  If it failed, some SPF policy out
    there would be judged differently by us than by the RFC and by the
    other implementations: forged mail passing, or good mail rejected.
    """
    total = 0
    differences = []
    types = set()
    for scenario in suite:
        world = WORLDS[kind](zoneOf(scenario.get("zonedata")))
        try:
            for name, case in scenario["tests"].items():
                total += 1
                result = runCase(world.resolver, case)
                expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
                if name in EXPECTED_DIFFERENCES:
                    expected = [EXPECTED_DIFFERENCES[name][0]]
                problems = []
                if getattr(result, "result", None) not in expected:
                    problems.append(f"result {getattr(result, 'result', result)} not in {expected}")
                elif "explanation" in case and result.explanation != case["explanation"]:
                    problems.append(f"explanation {result.explanation!r} != {case['explanation']!r}")
                if problems:
                    differences.append(
                        f"{name} ({scenario['description']}, spec {case.get('spec')}): "
                        f"{'; '.join(problems)} [{getattr(result, 'reason', '')}]"
                    )
            types |= world.queriedTypes()
        finally:
            world.close()
    passed = total - len(differences)
    print(f"\nRFC 7208 suite through the {kind} resolver: {passed} passed / {total}")
    assert total > 100, "the suite has fewer cases than the 2014.04 release"
    assert not differences, f"{len(differences)} of {total} cases differ:\n" + "\n".join(differences)
    # RFC 7208 §3.1, §14.1: the SPF RR type is not queried any more.
    assert "SPF" not in types
