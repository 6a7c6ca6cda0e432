"""
FETCH answers for the 21 reference messages in
/work/shared/testdata/imap-fetch (recorded from Dovecot 2.3.19.1) compared
value for value with ours, against the real server.  Every difference we
allow is listed in L{ALLOWED} with its RFC reason.
"""

import json
import pathlib

import pytest

from imapwire import Wire, parse
from mailserver import PASSWORD

DATA = pathlib.Path("/work/shared/testdata/imap-fetch")
if not DATA.is_dir():  # pragma: no cover - the folder sits next to the repo
    DATA = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "testdata" / "imap-fetch"

# item -> reason: answers allowed to differ from Dovecot's.
# None since BINARY (RFC 3516) is offered: BINARY.SIZE matches too.
ALLOWED = {}


def allowedReason(item):
    for prefix, reason in ALLOWED.items():
        if item.startswith(prefix):
            return reason
    return None


def normalise(value):
    """Compare values, not spellings: strings as bytes, atoms case-folded
    where RFC 3501 says they are case-insensitive (NIL handled by parse)."""
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        return value.upper()
    return value


@pytest.fixture(scope="module")
def referenceServer(tmp_path_factory):
    from mailserver import MailServer
    server = MailServer(tmp_path_factory.mktemp("fetchref"), roles=("imap",),
                        sections={"auth": {"allow_plaintext_on_loopback": True}})
    server.provision()
    server.start()
    wire = Wire(server.ports["imap"])
    wire.command(f'LOGIN alice@example.org "{PASSWORD}"')
    wire.command("CREATE Reference")
    expected = json.loads((DATA / "expected.json").read_text())
    for message in expected["messages"]:
        body = (DATA / message["file"]).read_bytes()
        wire.sock.sendall(b'a APPEND Reference "%s" {%d+}\r\n' % (
            expected["internaldate"].encode(), len(body)) + body + b"\r\n")
        assert wire.readResponse().startswith(b"a OK")
    wire.command("EXAMINE Reference")
    yield wire, expected
    wire.close()
    server.stop()


def test_fetch_matches_reference_answers(referenceServer):
    """A mail client shows attachments, nested messages and headers as it would with Dovecot."""
    wire, expected = referenceServer
    mismatches = []
    checked = 0
    for message in expected["messages"]:
        seq = message["seq"]
        for fetch in message["fetches"]:
            item = fetch["item"]
            untagged, tagged = wire.command(f"FETCH {seq} ({item})")
            status = tagged.split(b" ")[1].decode()
            theirs = [parse(r.encode("latin-1")) for r in fetch["untagged"]]
            ours = [parse(r) for r in untagged]
            same = status == fetch["status"] and normalise(ours) == normalise(theirs)
            checked += 1
            if not same and allowedReason(item) is None:
                mismatches.append(f"{message['file']} {item}:\n  ours   {untagged!r} {tagged!r}\n"
                                  f"  theirs {fetch['untagged']!r} {fetch['status']}")
    assert checked > 300
    assert not mismatches, f"{len(mismatches)} differences:\n" + "\n".join(mismatches)
