"""
POP3 end to end: Python's poplib (and raw sockets where poplib hides the
wire) against a real twistd server with pop3 (STLS) and pop3s listeners.
Mail is put in the Maildir with the store from this process, as another
pymailer process would.
"""

import hashlib
import io
import os
import poplib
import socket
import time

import pytest

from mailserver import insecureTLS, HOSTNAME, PASSWORD, readVm, waitFor

ALICE = "alice@example.org"




@pytest.fixture
def server(makeMailServer):
    return makeMailServer(roles=("pop3", "pop3s"),
                          sections={"auth": {"failure_delay": 0.3}})


def store(server):
    return server.store()


def deliver(server, data, user=ALICE):
    store(server).deliver(user, b"", io.BytesIO(data))


def inbox(server, user=ALICE):
    return store(server).mailbox(user).messages()


def pop3s(server, login=True):
    client = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"],
                             context=insecureTLS(), timeout=30)
    if login:
        client.user(ALICE)
        client.pass_(PASSWORD)
    return client


def message(subject, body=b"Hello.\r\n"):
    return (b"From: carol@example.net\r\nTo: alice@example.org\r\n"
            b"Subject: " + subject + b"\r\n\r\n" + body)


def test_every_command_over_stls(server):
    """
    A client doing STLS and then every RFC 1939 command gets the right
    answers; any of these broken would break some mail client.
    """
    one, two = message(b"one"), message(b"two", b".dot line\r\nmore\r\n")
    deliver(server, one)
    deliver(server, two)
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    caps = client.capa()
    assert "STLS" in caps and "USER" not in caps
    client.stls(insecureTLS())
    caps = client.capa()
    for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING"):
        assert cap in caps
    assert caps["SASL"] == ["PLAIN"] and caps["EXPIRE"] == ["NEVER"]
    assert caps["IMPLEMENTATION"] == ["pymailer"]
    assert client.user(ALICE).startswith(b"+OK")
    assert client.pass_(PASSWORD).startswith(b"+OK")
    assert client.stat() == (2, len(one) + len(two))
    assert client.list()[1] == [b"1 %d" % len(one), b"2 %d" % len(two)]
    assert client.list(2) == b"+OK 2 %d" % len(two)
    keys = [m.key.encode() for m in inbox(server)]
    assert client.uidl()[1] == [b"1 " + keys[0], b"2 " + keys[1]]
    assert client.uidl(1) == b"+OK 1 " + keys[0]
    top = client.top(2, 0)[1]
    assert top == two.split(b"\r\n\r\n")[0].split(b"\r\n") + [b""]
    assert client.top(2, 1)[1][-1] == b".dot line"
    assert b"\r\n".join(client.retr(2)[1]) + b"\r\n" == two
    assert client.noop().startswith(b"+OK")
    assert client.dele(1).startswith(b"+OK")
    assert client.stat() == (1, len(two))
    with pytest.raises(poplib.error_proto):
        client.retr(1)
    assert client.rset().startswith(b"+OK")
    assert client.stat()[0] == 2
    client.dele(2)
    with pytest.raises(poplib.error_proto, match="ERR"):
        client._shortcmd("XYZZY")
    assert client.quit().startswith(b"+OK")
    assert [m.key.encode() for m in inbox(server)] == keys[:1]


def test_password_refused_without_tls(server):
    """Without STLS, USER is refused with [AUTH]: passwords never cross the
    network in the clear."""
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.user(ALICE)
    client.quit()


def test_stls_injection_not_executed(server):
    """
    A CAPA sent in plaintext in the same packet as STLS is not answered
    inside TLS: a man in the middle cannot inject commands (CVE-2011-0411).
    """
    with socket.create_connection(("127.0.0.1", server.ports["pop3"]), timeout=30) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        raw.sendall(b"STLS\r\nCAPA\r\n")
        assert reader.readline() == b"+OK Begin TLS negotiation now\r\n"
        with insecureTLS().wrap_socket(raw, server_hostname=HOSTNAME) as tls:
            tls.sendall(b"QUIT\r\n")
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
    assert answer.startswith(b"+OK Bye")
    assert b"Capability" not in answer


def test_uidl_stable_across_sessions_and_restart(server):
    """UIDL values stay the same across sessions and a server restart, so
    'leave mail on server' clients do not download everything again."""
    deliver(server, message(b"a"))
    deliver(server, message(b"b"))
    client = pop3s(server)
    before = client.uidl()[1]
    client.quit()
    client = pop3s(server)
    assert client.uidl()[1] == before
    client.quit()
    server.stop()
    server.start()
    client = pop3s(server)
    assert client.uidl()[1] == before
    client.quit()


def dottyMessage():
    """Lines starting with '.' at, just before and just after every 16 KiB
    and 64 KiB boundary, plus '..' and a lone '.' line."""
    data = bytearray(b"Subject: dots\r\n\r\n.first line is a dot\r\n")
    boundaries = sorted({k * 16384 + d for k in range(1, 10) for d in range(-3, 4)})
    for target in boundaries:
        gap = target - len(data)
        while gap > 82:
            data += b"y" * 78 + b"\r\n"
            gap = target - len(data)
        if gap >= 2:
            data += b"z" * (gap - 2) + b"\r\n"
        data += b".\r\n" if target % 2 else b"..twice\r\n"
    data += b". last\r\n"
    return bytes(data)


def test_dot_stuffed_lines_round_trip_byte_exact(server):
    """
    A message whose lines start with '.' around 16 KiB chunk boundaries
    comes back byte-exact through RETR (poplib undoes the stuffing); a wrong
    stuffing would truncate the message at such a line.
    """
    data = dottyMessage()
    assert len(data) > 9 * 16384
    deliver(server, data)
    client = pop3s(server)
    lines = client.retr(1)[1]
    client.quit()
    assert b"\r\n".join(lines) + b"\r\n" == data


def test_second_concurrent_login_in_use(server):
    """A second POP3 login while the first session is open gets
    -ERR [IN-USE], and works once the first one quit."""
    deliver(server, message(b"a"))
    first = pop3s(server)
    second = pop3s(server, login=False)
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    # IMAP (any reader of the store) may still read the maildrop.
    assert len(inbox(server)) == 1
    first.quit()
    second.user(ALICE)
    assert second.pass_(PASSWORD).startswith(b"+OK")
    second.quit()


def test_delete_only_at_quit(server):
    """DELE removes nothing until QUIT; then the message is gone from the
    store (and so for IMAP)."""
    deliver(server, message(b"a"))
    deliver(server, message(b"b"))
    client = pop3s(server)
    client.dele(1)
    client.dele(2)
    assert len(inbox(server)) == 2
    client.quit()
    assert inbox(server) == []


def test_dropped_connection_deletes_nothing(server):
    """A client that marks messages and then loses its connection (no
    QUIT) loses no mail, and can log in again once the server noticed."""
    deliver(server, message(b"a"))
    client = pop3s(server)
    client.dele(1)
    client.close()  # no QUIT: the socket just goes away
    assert len(inbox(server)) == 1

    def loginAgain():
        again = pop3s(server, login=False)
        again.user(ALICE)
        try:
            again.pass_(PASSWORD)
        except poplib.error_proto:
            again.close()
            return None
        return again

    again = waitFor(loginAgain, 10, message="the maildrop lock to be freed")
    assert again.stat()[0] == 1
    again.quit()
    assert len(inbox(server)) == 1


def test_failed_login_delayed_then_locked_out(makeMailServer):
    """Wrong passwords are answered after the failure delay, and after
    max_failures the address is locked out even with the right password;
    a password guesser gets nowhere."""
    server = makeMailServer(
        roles=("pop3s",),
        sections={"auth": {"failure_delay": 0.4, "max_failures": 3}})
    client = pop3s(server, login=False)
    for _ in range(3):
        client.user(ALICE)
        started = time.monotonic()
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.pass_("wrong")
        assert time.monotonic() - started >= 0.35
    client.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] Too many"):
        client.pass_("wrong")
    client.close()
    client = pop3s(server, login=False)
    client.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        client.pass_(PASSWORD)
    client.close()
    server.waitForLog("pop3 login failed")


def test_retr_50mb_streams_in_small_memory(server, tmp_path):
    """
    RETR of a 50 MB message arrives complete and byte-exact while the
    server's peak RSS grows by far less than the message: it is streamed,
    not read into memory (many phones fetching big mail at once would
    otherwise exhaust the server).
    """
    size = 50 * 1024 * 1024
    source = tmp_path / "big.eml"
    line = b"0123456789" * 7 + b"\r\n"  # 72 octets
    digest = hashlib.sha256()
    with open(source, "wb") as f:
        head = b"Subject: big\r\n\r\n"
        f.write(head)
        digest.update(head)
        written = len(head)
        n = 0
        while written < size:
            chunk = (b".dot line %08d\r\n" % n) if n % 1000 == 0 else line
            f.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            n += 1
    with open(source, "rb") as f:
        store(server).deliver(ALICE, b"", f)
    os.unlink(source)

    client = pop3s(server)
    # The login's argon2 check (64 MiB by design) has set the peak already:
    # reset VmHWM to the current RSS (Linux clear_refs "5") to see the RETR.
    with open(f"/proc/{server.pid}/clear_refs", "w") as f:
        f.write("5")
    baseline = server.peakRSS()
    sock, reader = client.sock, client.file
    sock.sendall(b"RETR 1\r\n")
    first = reader.readline()
    assert first.startswith(b"+OK %d octets" % written)
    received = hashlib.sha256()
    total = rss = 0
    while True:
        got = reader.readline()
        if got == b".\r\n":
            break
        if got.startswith(b"."):
            got = got[1:]
        received.update(got)
        total += len(got)
        if total % (1 << 20) < len(got):  # about once per MiB
            rss = max(rss, readVm(server.pid, "VmRSS"))
    peak = server.peakRSS()
    client.quit()
    assert total == written
    assert received.hexdigest() == digest.hexdigest()
    growth = peak - baseline
    print(f"\nserver VmHWM {baseline / 2**20:.1f} MiB before RETR of "
          f"{written / 2**20:.1f} MiB, {peak / 2**20:.1f} MiB after "
          f"(+{growth / 2**20:.1f} MiB); VmRSS sampled during it at most "
          f"{rss / 2**20:.1f} MiB")
    assert growth < 16 * 2**20


def test_plaintext_refusal_names_the_configured_pop3s_port(server):
    """
    A plaintext login is refused with the port this server's pop3s really
    listens on: before, the reply said "port 995" on a server whose POP3S
    port was 1995, and a user who followed it found nothing there.
    """
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    with pytest.raises(poplib.error_proto) as refused:
        client.user(ALICE)
    client.close()
    reply = refused.value.args[0].decode()
    assert reply.endswith(f"use STLS or port {server.ports['pop3s']}"), reply
    assert "995" not in reply.replace(str(server.ports["pop3s"]), "")
