"""
Sending a stored message as a POP3 multi-line response (RFC 1939 §3), in
constant memory.

Why not Twisted's C{FileSender} with C{POP3.transformChunk}: FileSender reads
the file on the reactor thread, and C{transformChunk} works on each chunk
alone -- it turns CRLF into CR CR LF, and a line starting with C{.} right
after a chunk boundary (or at the very start of the message) goes out
unstuffed, so a client would take C{"\\r\\n.\\r\\n"} there for the end of the
message.  Twisted's C{_HeadersPlusNLines} (TOP) likewise only finds the
header/body separator if it lies inside one read.

Here L{pymailer.dotstuff.DotStuffer} carries its state across chunks (line start, a CR held
back until we see whether LF follows, the TOP line count), and
L{MessageSender} is a streaming producer that reads each chunk in the
thread pool and writes it only while the transport wants more, so at most a
chunk or two of a 50 MB message is in memory at once.

Trusts nothing of the message bytes: any mix of CRLF, bare LF and bare CR is
sent as CRLF lines (bare CR is left alone), and every line starting with
C{.} is stuffed, wherever the chunk boundaries fall.
"""

from pymailer.dotstuff import CHUNK, DotStuffer, MessageSender

__all__ = ["DotStuffer", "MessageSender", "CHUNK"]
