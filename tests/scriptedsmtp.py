"""
A scripted SMTP server for relay tests: it listens on a loopback address,
answers RCPT from a script (e.g. 451 the first time, then 250; or always
550), records every message it accepts, and can advertise any EHLO
extensions.  Plain sockets and threads: it is the far side, not pymailer.
"""

import socketserver
import threading


class ScriptedSMTP:
    def __init__(self, interface, port, rcptReplies=None, extensions=("PIPELINING", "8BITMIME", "SIZE 100000000"),
                 hostname="mx.scripted.test"):
        """
        @param rcptReplies: replies to successive RCPT commands (the last
            one repeats), e.g. C{["451 4.3.0 try later", "250 2.1.5 ok"]}.
        """
        self.rcptReplies = list(rcptReplies or ["250 2.1.5 ok"])
        self.extensions = list(extensions)
        self.hostname = hostname
        self.messages = []  # (mailFrom line, [rcpt lines], data bytes)
        self.transcripts = []
        self.lock = threading.Lock()
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                owner._session(self.rfile, self.wfile)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            # A real MX's backlog: never leave the relay's connections
            # waiting unaccepted for the greeting timeout.
            request_queue_size = 128

        self.server = Server((interface, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _nextRcptReply(self):
        with self.lock:
            if len(self.rcptReplies) > 1:
                return self.rcptReplies.pop(0)
            return self.rcptReplies[0]

    def messageReceived(self, mail, rcpts, data):
        """
        A message's final "." has arrived: record it and return the reply.
        Subclasses make the far side slow, or count what came.
        """
        with self.lock:
            self.messages.append((mail, rcpts, data))
        return "250 2.0.0 queued"

    def replySent(self, mail, rcpts, data):
        """The end-of-data reply went out (the sender may now know)."""

    def _session(self, rfile, wfile):
        try:
            self._converse(rfile, wfile)
        except OSError:
            pass  # the sender went away mid-conversation

    def _converse(self, rfile, wfile):
        transcript = []
        self.transcripts.append(transcript)

        def send(line):
            wfile.write(line.encode() + b"\r\n")
            wfile.flush()

        send(f"220 {self.hostname} ESMTP scripted")
        mail, rcpts = None, []
        while True:
            line = rfile.readline()
            if not line:
                return
            transcript.append(line)
            verb = line[:4].upper()
            if verb == b"EHLO":
                lines = [self.hostname] + self.extensions
                for i, text in enumerate(lines):
                    send(f"250{'-' if i < len(lines) - 1 else ' '}{text}")
            elif verb == b"HELO":
                send(f"250 {self.hostname}")
            elif verb == b"MAIL":
                mail, rcpts = line.strip(), []
                send("250 2.1.0 ok")
            elif verb == b"RCPT":
                reply = self._nextRcptReply()
                if reply.startswith("2"):
                    rcpts.append(line.strip())
                send(reply)
            elif verb == b"DATA":
                if not rcpts:
                    send("554 5.5.1 no valid recipients")
                    continue
                send("354 go ahead")
                data = []
                while True:
                    chunk = rfile.readline()
                    if chunk == b"":
                        return  # cut off mid-message: not received
                    if chunk == b".\r\n":
                        break
                    data.append(chunk[1:] if chunk.startswith(b".") else chunk)
                data = b"".join(data)
                send(self.messageReceived(mail, rcpts, data))
                self.replySent(mail, rcpts, data)
            elif verb == b"AUTH":
                send("235 2.7.0 authenticated")
            elif verb == b"RSET":
                mail, rcpts = None, []
                send("250 2.0.0 ok")
            elif verb == b"QUIT":
                send("221 2.0.0 bye")
                return
            else:
                send("502 5.5.1 not implemented")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
