"""
A real DNS server on loopback for tests: UDP on 127.0.0.1, answering from a
dict of records with dnspython's wire format.  It serves what a relay or
SPF test needs (MX, A, AAAA, TXT) and says NXDOMAIN for names it has no
records for.
"""

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DNSServer:
    """
    C{records}: {name: [(type, text), ...]}, e.g.
    C{{"remote.test.": [("MX", "10 mx.remote.test.")], "mx.remote.test.": [("A", "127.0.0.2")]}}.
    """

    def __init__(self, records):
        self.records = {self._key(k): list(v) for k, v in records.items()}
        self.queries = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _key(name):
        return name.lower().rstrip(".") + "."

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
            except Exception:
                continue
            self.sock.sendto(self.answer(query).to_wire(), peer)

    def answer(self, query):
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = self._key(question.name.to_text())
        qtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, qtype))
        entries = self.records.get(name)
        if entries is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        rdatas = [
            dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, text)
            for rtype, text in entries if rtype == qtype
        ]
        if rdatas:
            rrset = dns.rrset.from_rdata_list(question.name, 60, rdatas)
            response.answer.append(rrset)
        return response

    def stop(self):
        self._stop = True
        self.sock.close()
        self.thread.join(2)
