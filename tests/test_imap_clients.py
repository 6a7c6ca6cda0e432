"""
Real sync clients against the real server: mbsync (isync) and offlineimap3
each keep a local Maildir in step with INBOX, both ways.  Every client goes
through the same L{checkTwoWaySync}.
"""

import hashlib
import os
import shutil
import ssl
import subprocess
import time

import pytest

from imaplive import BOB, IMAP_SERVER, client, deliver
from mailserver import PASSWORD

LOCAL_MESSAGE = b"From: bob@example.org\r\nSubject: fromlocal\r\n\r\nup\r\n"


@pytest.fixture
def server(makeMailServer):
    return makeMailServer(**IMAP_SERVER)


def localFiles(inbox):
    return [f for sub in ("new", "cur") for f in (inbox / sub).iterdir()]


def localMessage(inbox, subject):
    """The file of the message with C{subject} in a local Maildir."""
    found = [f for f in localFiles(inbox) if b"Subject: " + subject in f.read_bytes()]
    assert len(found) == 1, (subject, localFiles(inbox))
    return found[0]


def localFlags(path):
    _, _, info = path.name.partition(":2,")
    return set(info)


def checkTwoWaySync(server, inbox, sync):
    """
    @param inbox: the local Maildir the client keeps INBOX in.
    @param sync: runs the client once.

    Server mail appears locally; a message added locally appears on the
    server; \\Seen set locally reaches the server; \\Flagged set on the
    server reaches the local copy.
    """
    deliver(server, BOB, "tolocal")
    deliver(server, BOB, "flagme")
    server.waitQueueEmpty()
    sync()
    synced = localMessage(inbox, b"tolocal")
    localMessage(inbox, b"flagme")
    (inbox / "new" / "1700000000.local1.host").write_bytes(LOCAL_MESSAGE)
    synced.rename(inbox / "cur" / (synced.name.split(":")[0] + ":2,S"))
    sync()
    c = client(server, BOB)
    c.select_folder("INBOX")
    assert c.search(["SUBJECT", "fromlocal"])
    uid = c.search(["SUBJECT", "tolocal"])[0]
    assert b"\\Seen" in c.get_flags([uid])[uid]
    c.add_flags(c.search(["SUBJECT", "flagme"]), [b"\\Flagged"])
    c.logout()
    sync()
    assert "F" in localFlags(localMessage(inbox, b"flagme"))
    assert "S" in localFlags(localMessage(inbox, b"tolocal"))


def run(command, home):
    """Run a client with C{home} as HOME: nothing of the user's is read or written."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr


def mbsyncConfig(server, local, path, implicitTLS=False):
    """An mbsyncrc syncing C{local}/INBOX with bob's INBOX, over 143 or 993."""
    if implicitTLS:
        port = server.ports["imaps"]
        security = f"SSLType IMAPS\nCertificateFile {server.dataDir / 'tls' / 'selfsigned-cert.pem'}"
    else:
        port = server.ports["imap"]
        security = "SSLType None\nAuthMechs LOGIN"
    path.write_text(f"""
IMAPAccount test
Host 127.0.0.1
Port {port}
User {BOB}
Pass "{PASSWORD}"
{security}

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel test
Far :remote:
Near :local:
Patterns INBOX
Create Both
Expunge Both
SyncState *
""")
    return path


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) not installed")
def test_mbsync_syncs_both_ways(server, tmp_path):
    """If this fails, mbsync users lose mail or flag changes between laptop and server."""
    local = tmp_path / "local"
    local.mkdir()
    config = mbsyncConfig(server, local, tmp_path / "mbsyncrc")
    checkTwoWaySync(server, local / "INBOX", lambda: run(["mbsync", "-c", str(config), "-a"], tmp_path))
    # mbsync 1.4 turns on COMPRESS=DEFLATE (RFC 4978) whenever offered: the
    # sync above ran compressed.
    assert "IMAP COMPRESS DEFLATE active for bob@" in server.log()


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) not installed")
def test_mbsync_over_imaps_finishes(server, tmp_path):
    """
    If this fails, mbsync over IMAPS (993) hangs for ever after every sync:
    the server never closed the TLS connection after LOGOUT.
    """
    deliver(server, BOB, "mbsyncimaps")
    server.waitQueueEmpty()
    local = tmp_path / "local"
    local.mkdir()
    config = mbsyncConfig(server, local, tmp_path / "mbsyncrc", implicitTLS=True)
    start = time.monotonic()
    run(["mbsync", "-c", str(config), "-a"], tmp_path)
    elapsed = time.monotonic() - start
    localMessage(local / "INBOX", b"mbsyncimaps")
    assert elapsed < 10, f"mbsync took {elapsed:.1f} s"


def certificateFingerprint(server):
    pem = (server.dataDir / "tls" / "selfsigned-cert.pem").read_text()
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap3 not installed")
def test_offlineimap_syncs_both_ways(server, tmp_path):
    """If this fails, offlineimap users lose mail or flag changes between laptop and server."""
    local = tmp_path / "local"
    config = tmp_path / "offlineimaprc"
    # Implicit TLS, trusting the server's self-signed certificate by its
    # fingerprint (it names the server's hostname, not 127.0.0.1).
    config.write_text(f"""
[general]
accounts = test
metadata = {tmp_path / 'metadata'}

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {server.ports['imaps']}
remoteuser = {BOB}
remotepass = {PASSWORD}
ssl = yes
cert_fingerprint = {certificateFingerprint(server)}
folderfilter = lambda name: name == "INBOX"
""")
    command = ["offlineimap", "-c", str(config), "-o", "-u", "quiet"]
    checkTwoWaySync(server, local / "INBOX", lambda: run(command, tmp_path))
