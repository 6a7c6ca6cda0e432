"""
Content rules that need no learning (C{rules}), at the end of data.

  - an attachment of an executable type (by its file name, also in the
    RFC 2231 C{filename*} parameters) is refused: 554 5.7.1;
  - a From display name that shows one of our addresses while the From
    address is foreign (a forged colleague) scores L{FORGED_DISPLAY};
  - an HTML link whose text names another host than its href (a phish)
    scores L{LINK_MISMATCH};
  - a malformed header section (no From, no Date, a field RFC 5322 §3.6
    allows once given twice) scores per defect.

The score goes to the transaction's L{SpamScore}; the chain adds the
C{X-Spam-*} headers and files into Junk at C{[policy.rules] junk_score}.
Mail from an authenticated user is not judged: it is ours.

Trusts: nothing in the message.  The message is parsed in the thread pool;
past L{MAX_CRYPTO_SIZE} only its header section is read.
"""

import email
import email.policy
import email.utils
import html
import re

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from pymailer.interfaces import IPolicyFactory
from pymailer.message.stdlib import parseMessage
from pymailer.policy.decision import Decision
from pymailer.policy.pieces import HEADER_LIMIT, MAX_CRYPTO_SIZE, _Piece
from pymailer.policy.verdict import SpamScore, isSpamHeader, logVerdict

EXECUTABLE_TYPES = frozenset(
    ".exe .scr .js .vbs .bat .cmd .com .pif .jar .msi".split())
FORGED_DISPLAY = 5.0
LINK_MISMATCH = 3.0
NO_FROM = 2.0
NO_DATE = 1.0
DUPLICATE_HEADER = 2.0
# RFC 5322 §3.6: fields that may occur at most once.
SINGLETONS = ("from", "sender", "reply-to", "to", "cc", "bcc", "date", "subject",
              "message-id", "in-reply-to", "references")

_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_LINK = re.compile(r"<a\s[^>]*?href\s*=\s*[\"']?([^\"'\s>]+)[^>]*>(.*?)</a\s*>",
                   re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SHOWN_HOST = re.compile(r"^\s*(?:https?://|www\.)([A-Za-z0-9.-]+)", re.IGNORECASE)
_HREF_HOST = re.compile(r"^\s*https?://(?:[^/@?#]*@)?([A-Za-z0-9.-]+)", re.IGNORECASE)


def attachmentNames(msg):
    """Every file name a part gives (RFC 2183 filename, RFC 2231 filename*, name)."""
    for part in msg.walk():
        names = {part.get_filename()}
        name = part.get_param("name")
        if name is not None:
            names.add(email.utils.collapse_rfc2231_value(name))
        yield from (n for n in names if n)


def executableName(msg):
    """The first attachment name of an executable type, or C{None}."""
    for name in attachmentNames(msg):
        # Windows ignores trailing dots and spaces: "x.exe. " runs.
        cleaned = str(name).strip().rstrip(". ").lower()
        dot = cleaned.rfind(".")
        if dot >= 0 and cleaned[dot:] in EXECUTABLE_TYPES:
            return str(name)
    return None


def malformed(msg):
    """C{[(reason, points)]} for the defects of the header section."""
    hits = []
    if msg.get("From") is None:
        hits.append(("rules.no_from", NO_FROM))
    if msg.get("Date") is None:
        hits.append(("rules.no_date", NO_DATE))
    counts = {}
    for key in msg.keys():
        counts[key.lower()] = counts.get(key.lower(), 0) + 1
    if any(counts.get(name, 0) > 1 for name in SINGLETONS):
        hits.append(("rules.duplicate_header", DUPLICATE_HEADER))
    return hits


def _hostsDiffer(shown, target):
    shown, target = shown.lower().rstrip("."), target.lower().rstrip(".")
    if shown.startswith("www."):
        shown = shown[4:]
    return not (target == shown or target.endswith("." + shown) or shown.endswith("." + target))


def mismatchedLink(msg):
    """The first C{(text host, href host)} of a link whose text names another host."""
    for part in msg.walk():
        if part.get_content_type() != "text/html":
            continue
        try:
            text = part.get_content()
        except Exception:
            continue
        for href, inner in _LINK.findall(text):
            shown = _SHOWN_HOST.match(html.unescape(_TAG.sub("", inner)))
            target = _HREF_HOST.match(html.unescape(href))
            if shown and target and _hostsDiffer(shown.group(1), target.group(1)):
                return shown.group(1), target.group(1)
    return None


def forgedDisplayName(msg, isLocalDomain):
    """
    The local address a From display name shows while the From address is
    foreign, or C{None}.
    """
    for value in msg.get_all("From") or ():
        try:
            addresses = value.addresses
        except AttributeError:
            continue
        for address in addresses:
            domain = (address.domain or "").lower()
            if not domain or isLocalDomain(domain):
                continue
            for shown in _ADDRESS.findall(address.display_name or ""):
                if isLocalDomain(shown.rpartition("@")[2].lower()) \
                        and shown.lower() != address.addr_spec.lower():
                    return shown
    return None


class Rules(_Piece):
    name = "rules"
    log = Logger()

    @defer.inlineCallbacks
    def checkData(self, facts, message):
        if facts.authenticatedAs is not None:
            return None
        limit = -1 if facts.size <= MAX_CRYPTO_SIZE else HEADER_LIMIT
        data = yield self._read(facts, message, limit)
        executable, hits = yield self.inThread(self._judge, data)
        queueId = getattr(message, "queueId", None)
        if executable is not None:
            reason = "rules.executable"
            logVerdict(facts, self.name, "reject", f"{reason} ({executable!r})",
                       queueId=queueId)
            return Decision.reject(
                554, "5.7.1",
                f"Message refused: attachment {executable!r} is an executable file type",
                reason)
        score = SpamScore.of(facts)
        for reason, points in hits:
            score.add(self.name, points, reason)
            logVerdict(facts, self.name, "score", reason, points, queueId)
        return Decision.accept()

    def _judge(self, data):
        # Nested too deep for the email package: judged on its source.
        msg = parseMessage(data, email.policy.default)
        executable = self._safely(executableName, msg)
        if executable is not None:
            return executable, []
        hits = self._safely(malformed, msg) or []
        directory = self.context.directory
        if directory is not None:
            if self._safely(forgedDisplayName, msg, directory.hasDomain) is not None:
                hits.append(("rules.forged_display_name", FORGED_DISPLAY))
        if self._safely(mismatchedLink, msg) is not None:
            hits.append(("rules.link_mismatch", LINK_MISMATCH))
        return None, hits

    def _safely(self, rule, *args):
        """
        A rule the message's syntax defeats says nothing: a parser
        exception must not become a 451 the sender retries for ever.
        """
        try:
            return rule(*args)
        except Exception:
            self.log.failure("rule {rule} failed on a message", rule=rule.__name__)
            return None

    def keepHeader(self, facts, field):
        return facts.authenticatedAs is not None or not isSpamHeader(field)


@implementer(IPolicyFactory)
class RulesFactory:
    name = "rules"

    def build(self, context, options):
        return Rules(context)
