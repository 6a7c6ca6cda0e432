"""
A real DNS server on loopback for tests: UDP on 127.0.0.1, answering from a
dict of records with dnspython's wire format.  It serves what a relay or
SPF test needs (MX, A, AAAA, TXT with several strings, PTR, CNAME chains)
and says NXDOMAIN for names it has no records for.

It answers from L{pymailer.testing.FakeResolver.zoneAnswer}, so a zone
means the same here as in the fake resolver: C{tests/test_spf.py} runs the
same tests through the real resolver against this server and through the
fake.  A name marked C{"TIMEOUT"} gets SERVFAIL at once (for the types it
has no records of), which the real resolver reports as the same temporary
error as a timeout, without waiting for one.

Its NXDOMAIN answers carry an SOA in the authority section, as a real
server's must (RFC 2308 §3); C{nxdomainSOA = False} makes it answer like
the stub of a machine without DNS (a bare NXDOMAIN for everything).
"""

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from pymailer.testing import FakeResolver


class DNSServer:
    """
    C{records}: {name: [(type, text), ...]}, e.g.
    C{{"remote.test.": [("MX", "10 mx.remote.test.")], "mx.remote.test.": [("A", "127.0.0.2")]}}.
    Names in rdata are relative to the root; an entry C{"TIMEOUT"} makes
    the name SERVFAIL (see L{FakeResolver}).  C{records} stays live: tests
    may change it while the server runs.
    """

    nxdomainSOA = True

    def __init__(self, records):
        self.records = {self._key(k): list(v) for k, v in records.items()}
        self.queries = []
        self.errors = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    _key = staticmethod(FakeResolver.zoneKey)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

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
            try:
                wire = self.answer(query).to_wire()
            except Exception as e:
                # A bad zone entry: say so in the test, not as a timeout.
                self.errors.append(e)
                response = dns.message.make_response(query)
                response.set_rcode(dns.rcode.SERVFAIL)
                wire = response.to_wire()
            self.sock.sendto(wire, peer)

    def answer(self, query):
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        qtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((self._key(question.name), qtype))
        rcode, chain, rdatas = FakeResolver.zoneAnswer(self.records, question.name, qtype)
        for owner, cname in chain:
            response.answer.append(dns.rrset.from_rdata_list(owner, 60, [cname]))
        if rcode == "NXDOMAIN":
            response.set_rcode(dns.rcode.NXDOMAIN)
            if self.nxdomainSOA:
                response.authority.append(self._soa(question.name))
        elif rcode == "SERVFAIL":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif rdatas:
            owner = chain[-1][1].target if chain else question.name
            response.answer.append(dns.rrset.from_rdata_list(owner, 60, rdatas))
        return response

    @staticmethod
    def _soa(qname):
        """The SOA of the zone C{qname} would be in: its last two labels."""
        zone = dns.name.Name(qname.labels[-3:]) if len(qname.labels) > 2 else dns.name.root
        ns = dns.name.Name((b"ns",) + zone.labels)
        hostmaster = dns.name.Name((b"hostmaster",) + zone.labels)
        return dns.rrset.from_text(zone, 60, "IN", "SOA",
                                   f"{ns} {hostmaster} 1 3600 600 86400 60")

    def stop(self):
        self._stop = True
        self.sock.close()
        self.thread.join(2)
