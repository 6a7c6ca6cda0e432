"""
Where mail for a domain goes: MX lookup per RFC 5321 §5.1 and RFC 7505.

MX hosts in preference order, random among equal preferences; no MX means
the domain itself (the implicit MX); a null MX ("0 .") means the domain
takes no mail, a permanent failure at once.
"""

import ipaddress
import random

from twisted.internet import defer

from pymailer.dns import DNSError


class NoMailHosts(Exception):
    """
    No host can take mail for the domain (now, or ever).

    @ivar code, enhanced: the SMTP-style status to record.
    """

    def __init__(self, text, temporary, code=None, enhanced=None):
        Exception.__init__(self, text)
        self.text = text
        self.temporary = temporary
        self.code = code or (451 if temporary else 550)
        self.enhanced = enhanced or ("4.4.3" if temporary else "5.1.2")


def orderMX(records, rand=random.random):
    """
    @param records: C{[(preference, host)]}.
    @return: host names by preference, shuffled among equals (RFC 5321 §5.1).
    """
    return [host for _, _, host in sorted((pref, rand(), host) for pref, host in records)]


@defer.inlineCallbacks
def mailHosts(resolver, domain, rand=random.random):
    """
    @return: a C{Deferred} firing with C{[(hostname, [address, ...])]} in the
        order to try them; fails with L{NoMailHosts}.
    """
    literal = _addressLiteral(domain)
    if literal is not None:
        return [(domain, [literal])]
    try:
        records = yield resolver.lookup(domain, "MX")
    except DNSError as e:
        if e.temporary:
            raise NoMailHosts(f"MX lookup for {domain} failed: {e.reason}", True)
        raise NoMailHosts(f"domain {domain} does not exist", False, 550, "5.1.2")
    mx = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in records]
    if any(host in ("", ".") for _, host in mx):
        # RFC 7505 §4.2: a null MX: the domain accepts no mail.
        raise NoMailHosts(f"domain {domain} accepts no mail (null MX)", False, 556, "5.1.10")
    hosts = orderMX(mx, rand) if mx else [domain]
    resolved, temporary = [], False
    for host in hosts:
        addresses = []
        for rdtype in ("A", "AAAA"):
            try:
                addresses += [r.address for r in (yield resolver.lookup(host, rdtype))]
            except DNSError as e:
                temporary = temporary or e.temporary
        if addresses:
            resolved.append((host, addresses))
    if not resolved:
        if temporary or mx:
            # An MX that does not resolve may be fixed soon: retry.
            raise NoMailHosts(f"no address for the mail hosts of {domain}", True)
        raise NoMailHosts(f"domain {domain} has no mail host", False, 550, "5.1.2")
    return resolved


def _addressLiteral(domain):
    if domain.startswith("[") and domain.endswith("]"):
        text = domain[1:-1]
        if text.lower().startswith("ipv6:"):
            text = text[5:]
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            return None
    return None
