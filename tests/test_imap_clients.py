"""
Real sync clients against the real server: mbsync (isync) and offlineimap3
each keep a local Maildir in step with INBOX, both ways, and with every
folder over TLS after another session changed them.  Every client goes
through the same L{checkTwoWaySync} and L{checkResync}.
"""

import hashlib
import os
import re
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
    """
    Run a client with C{home} as HOME: nothing of the user's is read or
    written.  @return: what it printed.
    """
    result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


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
    server.waitForLog("IMAP COMPRESS DEFLATE active for bob@")


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


def offlineimapConfig(server, tmp_path, local, folderfilter=None):
    """
    An offlineimaprc syncing C{local} with bob's folders (those
    C{folderfilter} takes, else all) over implicit TLS, trusting the
    server's self-signed certificate by its fingerprint (it names the
    server's hostname, not 127.0.0.1).
    """
    config = tmp_path / "offlineimaprc"
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
""" + (f"folderfilter = {folderfilter}\n" if folderfilter else ""))
    return config


def certificateFingerprint(server):
    pem = (server.dataDir / "tls" / "selfsigned-cert.pem").read_text()
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap3 not installed")
def test_offlineimap_syncs_both_ways(server, tmp_path):
    """If this fails, offlineimap users lose mail or flag changes between laptop and server."""
    local = tmp_path / "local"
    config = offlineimapConfig(server, tmp_path, local,
                               folderfilter='lambda name: name == "INBOX"')
    command = ["offlineimap", "-c", str(config), "-o", "-u", "quiet"]
    checkTwoWaySync(server, local / "INBOX", lambda: run(command, tmp_path))


# -- resyncing after another session's changes ---------------------------------

_LETTERS = {"S": b"\\Seen", "F": b"\\Flagged", "R": b"\\Answered", "D": b"\\Draft",
            "T": b"\\Deleted"}


def subjectOf(data):
    """The Subject of a message (or of its header section), or C{None}."""
    for line in data.split(b"\r\n" if b"\r\n" in data else b"\n"):
        if line.lower().startswith(b"subject: "):
            return line[9:].strip()
        if not line:
            break
    return None


def serverView(server, user):
    """C{{folder: {subject: flags}}} of every folder, as the server has it."""
    c = client(server, user)
    view = {}
    for _, _, name in c.list_folders():
        c.select_folder(name, readonly=True)
        uids = c.search(["ALL"])
        data = c.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
        view[name] = {subjectOf(d[b"BODY[HEADER.FIELDS (SUBJECT)]"]):
                      {f for f in d[b"FLAGS"] if f in _LETTERS.values()} for d in data.values()}
    c.logout()
    return view


def localView(root, folders):
    """The same for a local Maildir tree (C{folders}: server name -> local path)."""
    view = {}
    for name, path in folders.items():
        messages = {}
        for f in localFiles(root / path) if (root / path / "cur").is_dir() else ():
            flags = {_LETTERS[c] for c in f.name.partition(":2,")[2] if c in _LETTERS}
            messages[subjectOf(f.read_bytes())] = flags
        view[name] = messages
    return view


def localSnapshot(root):
    """Every message file under C{root} (state files aside): what a sync may change."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.parent.name in ("new", "cur"))


def checkResync(server, root, sync, transferredNothing):
    """
    Changes made by another session (new mail over SMTP, a flag change, an
    expunge, a folder created with a message in it) each reach the local
    copy at the next sync, which then matches the server folder by folder,
    message by message, flag by flag; a second sync with nothing new
    transfers nothing (the client says so, and no local file changes).

    @param sync: runs the client once and returns what it printed.
    @param transferredNothing: whether that output says nothing was copied.
    """
    for n in range(3):
        deliver(server, BOB, f"base{n}")
    server.waitQueueEmpty()

    def resyncAndCompare(step, transfers=False):
        output = sync()
        # The predicate does see a transfer when there is one.
        assert not transfers or not transferredNothing(output), (step, output)
        want = serverView(server, BOB)
        # Both clients keep a top-level folder under its own name.
        assert localView(root, {name: name for name in want}) == want, step
        before = localSnapshot(root)
        output = sync()
        assert transferredNothing(output), (step, output)
        assert localSnapshot(root) == before, step
        return want

    resyncAndCompare("first sync")
    deliver(server, BOB, "newmail")
    server.waitQueueEmpty()
    assert b"newmail" in resyncAndCompare("new mail", transfers=True)["INBOX"]
    other = client(server, BOB)
    other.select_folder("INBOX")
    other.add_flags(other.search(["SUBJECT", "base1"]), [b"\\Flagged", b"\\Seen"])
    assert resyncAndCompare("flag change")["INBOX"][b"base1"] == {b"\\Flagged", b"\\Seen"}
    doomed = other.search(["SUBJECT", "base2"])
    other.delete_messages(doomed)
    other.expunge()
    assert b"base2" not in resyncAndCompare("expunge")["INBOX"]
    other.create_folder("Projects")
    other.append("Projects", b"Subject: filed\r\n\r\nin a new folder\r\n", flags=[b"\\Seen"])
    other.logout()
    assert resyncAndCompare("folder created")["Projects"] == {b"filed": {b"\\Seen"}}


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) not installed")
def test_mbsync_resyncs_over_tls_after_other_sessions_changes(server, tmp_path):
    """If this fails, an mbsync user's laptop misses mail, flags, deletions
    or folders another client made, or downloads again what it has."""
    local = tmp_path / "local"
    local.mkdir()
    config = mbsyncConfig(server, local, tmp_path / "mbsyncrc", implicitTLS=True)
    config.write_text(config.read_text().replace("Patterns INBOX", "Patterns *"))

    # -Dn shows the commands mbsync sends (">>> 6 UID FETCH 1:3 (UID FLAGS)"):
    # nothing transferred is no message fetched or uploaded, no flag stored,
    # nothing expunged or created on either side.
    command = ["mbsync", "-Dn", "-c", str(config), "-a"]
    checkResync(server, local, lambda: run(command, tmp_path), lambda out: not re.search(
        r"^>>> \d+ (?:APPEND|UID STORE|STORE|UID EXPUNGE|EXPUNGE|CREATE|UID MOVE"
        r"|UID FETCH [^\n]*BODY)", out, re.M))


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap3 not installed")
def test_offlineimap_resyncs_over_tls_after_other_sessions_changes(server, tmp_path):
    """If this fails, an offlineimap user's laptop misses mail, flags,
    deletions or folders another client made, or downloads again what it has."""
    local = tmp_path / "local"
    config = offlineimapConfig(server, tmp_path, local)
    command = ["offlineimap", "-c", str(config), "-o", "-u", "basic"]

    # offlineimap's basic UI names every message it copies, every flag it
    # adds or removes and every message it deletes.
    checkResync(server, local, lambda: run(command, tmp_path), lambda out: not re.search(
        r"Copy message|Adding flag|Deleting flag|Deleting \d+ message", out))
