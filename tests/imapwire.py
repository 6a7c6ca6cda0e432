"""
A tiny raw IMAP client for tests: sends a command, reads every line up to
its tagged reply (literals included), and parses responses into values
(atoms as str, strings as bytes, lists as lists) so answers can be compared
value for value.
"""

import re
import socket


class Wire:
    def __init__(self, port, host="127.0.0.1", timeout=10, source=None):
        """@param source: the client's address (C{"127.0.0.2"}), or any."""
        self.sock = socket.create_connection(
            (host, port), timeout=timeout,
            source_address=None if source is None else (source, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()
        self.n = 0

    def close(self):
        self.sock.close()

    def readResponse(self):
        """One response, literals included, as bytes (CRLF-terminated)."""
        out = b""
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed")
            out += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return out
            out += self.file.read(int(m[1]))

    def command(self, text):
        """@return: C{(untagged responses, tagged status line)}."""
        self.n += 1
        tag = b"t%d" % self.n
        if isinstance(text, str):
            text = text.encode()
        self.sock.sendall(tag + b" " + text + b"\r\n")
        untagged = []
        while True:
            response = self.readResponse()
            if response.startswith(tag + b" "):
                return untagged, response
            untagged.append(response)


_TOKEN = re.compile(rb'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|\{(\d+)\}\r\n|([^\s()"{]+(?:\[[^\]]*\](?:<\d+>)?)?))', re.S)


def parse(data):
    """Parse an IMAP response text into nested lists of values."""
    stack = [[]]
    pos = 0
    while pos < len(data):
        m = _TOKEN.match(data, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        if m[1]:
            stack.append([])
        elif m[2]:
            done = stack.pop()
            stack[-1].append(done)
        elif m[3] is not None:
            stack[-1].append(re.sub(rb"\\(.)", rb"\1", m[3]))
        elif m[4] is not None:
            n = int(m[4])
            stack[-1].append(data[pos:pos + n])
            pos += n
        else:
            atom = m[5].decode("latin-1")
            stack[-1].append(None if atom.upper() == "NIL" else atom)
    return stack[0]
