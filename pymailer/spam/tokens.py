"""
Turning a message into the set of tokens the classifier counts.

Words of the Subject and of every text part (quoted-printable and base64
decoded, charsets applied, HTML tags dropped and entities unescaped), the
From address and its domain, the hosts of URLs, and a few header tokens
(the top-level content type, attachment types, Reply-To domain, mailer).
Each token is counted once per message (SpamBayes does the same: a word
said ten times is no more evidence than once).

Trusts: nothing in the message.  Work is bounded: at most L{MAX_TEXT}
characters of text are looked at and at most L{MAX_TOKENS} tokens kept, so
a hostile message costs a bounded amount of CPU in the thread pool.
"""

import email
import email.policy
import email.utils
import html
import re

from pymailer.message.stdlib import parseMessage

# Characters of decoded text looked at per message (subject and body).
MAX_TEXT = 200_000
# Distinct tokens kept per message.
MAX_TOKENS = 2000
# Words shorter than this carry little (a, of, to); longer than MAX_WORD
# are base64 blobs, hashes or run-together garbage: SpamBayes replaces them
# with a "skip" token saying roughly how long they were.
MIN_WORD = 3
MAX_WORD = 20

_WORD = re.compile(r"[^\W_][\w$€£%'.-]*[^\W_]|[^\W_]", re.UNICODE)
_TAG = re.compile(r"<(?:style|script)[^>]*>.*?</(?:style|script)\s*>|<[^>]*>",
                  re.IGNORECASE | re.DOTALL)
_URL = re.compile(r"https?://(?:[^/@\s\"'<>]*@)?([A-Za-z0-9.-]+)", re.IGNORECASE)


def words(text, prefix=""):
    """The word tokens of C{text} (lower-cased), C{prefix} before each."""
    for match in _WORD.finditer(text):
        word = match.group().lower().strip(".'-")
        if len(word) < MIN_WORD:
            continue
        if len(word) > MAX_WORD:
            yield f"{prefix}skip:{word[0]}{len(word) // 10 * 10}"
        else:
            yield prefix + word


def _textParts(msg):
    """C{(content type, decoded text)} of every text part, attachments too."""
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        try:
            text = part.get_content()
        except Exception:
            # An unknown charset or broken transfer encoding: the raw
            # payload, decoded leniently, still has words.
            payload = part.get_payload(decode=True) or b""
            text = payload.decode("latin-1")
        if isinstance(text, str):
            yield part.get_content_type(), text


def _domain(address):
    return address.rpartition("@")[2].lower() if "@" in address else ""


def _headerTokens(msg):
    yield "ct:" + msg.get_content_type()
    for value in msg.get_all("From") or ():
        for _, address in email.utils.getaddresses([str(value)]):
            address = address.lower()
            if address:
                yield "from:" + address
                yield "from-domain:" + _domain(address)
    for value in msg.get_all("Reply-To") or ():
        for _, address in email.utils.getaddresses([str(value)]):
            if address:
                yield "reply-to-domain:" + _domain(address)
    mailer = msg.get("X-Mailer") or msg.get("User-Agent")
    if mailer:
        yield "mailer:" + " ".join(str(mailer).split()[:2]).lower()[:40]
    for part in msg.walk():
        if part.get_content_disposition() == "attachment":
            yield "attach:" + part.get_content_type()


def tokenize(data):
    """
    The token set of a message.

    @param data: the message's bytes (headers and as much body as the
        caller read).
    @return: a C{frozenset} of C{str}, at most L{MAX_TOKENS} of them.
    """
    # Nested too deep for the email package: judged on its source.
    msg = parseMessage(data, email.policy.default)
    tokens = {}

    def add(token):
        if len(tokens) < MAX_TOKENS:
            tokens[token] = None

    try:
        for token in _headerTokens(msg):
            add(token)
        budget = MAX_TEXT
        subject = str(msg.get("Subject") or "")[:1000]
        budget -= len(subject)
        for word in words(subject, "subject:"):
            add(word)
        for ctype, text in _textParts(msg):
            if budget <= 0:
                break
            text = text[:budget]
            budget -= len(text)
            for host in _URL.findall(text):
                add("url:" + host.lower().rstrip("."))
            if ctype == "text/html":
                text = html.unescape(_TAG.sub(" ", text))
            for word in words(text):
                add(word)
    except Exception:
        # A header or part the parser cannot make sense of: what was
        # gathered so far still judges; "malformed" is itself a clue.
        add("parse:error")
    return frozenset(tokens)
