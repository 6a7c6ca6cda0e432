"""
[policy.classifier], [policy.clamav] and [policy.rspamd]: the judges of a
message's content.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from pymailer.config.reader import nonNegativeInt, showValue


@dataclass(frozen=True)
class ClassifierConfig:
    """
    [policy.classifier]: each user's Bayesian filter, trained by what they
    move into and out of Junk.  A message whose spam probability for a
    recipient is at least C{junk_threshold} goes to that recipient's Junk;
    at least C{reject_threshold} (off unless set) for every recipient, it
    is refused.  A filter trained on fewer than C{min_training} spam or
    ham judges nothing.  A sender (address with SPF or DKIM pass, DKIM
    domain, client IP) with at least C{reputation_min} past verdicts for a
    user, all ham, scores C{reputation_score} and is not filed into Junk.
    """

    junk_threshold: float = 0.95
    reject_threshold: float | None = None
    min_training: int = 10
    reputation_min: int = 3
    reputation_score: float = -2.0


SCANNER_FAIL_MODES = ("open", "closed")


@dataclass(frozen=True)
class ClamAVConfig:
    """
    [policy.clamav]: clamd at C{socket} (a Unix socket path) or C{address}
    ("host:port", TCP; wins when given).  A scan that has not answered in
    C{timeout} seconds, a clamd that is down or refuses the message (over
    its StreamMaxLength) costs, with C{fail = "open"}, nothing but an
    C{X-Virus-Scanned: unscanned (reason)} header; with C{"closed"}, a
    451 4.7.0 the sender retries.
    """

    socket: str = "/run/clamav/clamd.ctl"
    address: str | None = None
    timeout: float = 30.0
    fail: str = "open"


@dataclass(frozen=True)
class RspamdConfig:
    """
    [policy.rspamd]: rspamd's normal worker at C{url} (its C{/checkv2}).
    C{timeout} and C{fail} as in L{ClamAVConfig}; unscanned mail gets
    C{X-Spam-Scanned: unscanned (reason)}.
    """

    url: str = "http://127.0.0.1:11333"
    timeout: float = 30.0
    fail: str = "open"


def parseClassifier(reader):
    d = ClassifierConfig()

    def probability(key, default):
        value = reader.number(key, default)
        if value is not None and not 0.5 < value <= 1.0:
            # At or below 0.5 the filter would act on mail it thinks is ham.
            raise reader.error(key, f"expected a probability above 0.5 and at most 1, got {value}")
        return value

    config = ClassifierConfig(
        junk_threshold=probability("junk_threshold", d.junk_threshold),
        reject_threshold=probability("reject_threshold", None),
        min_training=nonNegativeInt(reader, "min_training", d.min_training),
        reputation_min=nonNegativeInt(reader, "reputation_min", d.reputation_min),
        reputation_score=reader.number("reputation_score", d.reputation_score,
                                       minimum=-100.0))
    reader.checkUnknown(reader.seen)
    return config


def _scannerFail(reader):
    fail = reader.string("fail") or "open"
    if fail not in SCANNER_FAIL_MODES:
        raise reader.error("fail", f"expected open or closed, got {showValue(fail)}")
    return fail


def parseClamAV(reader):
    d = ClamAVConfig()
    path = reader.string("socket")
    if path is not None and not path.startswith("/"):
        raise reader.error("socket", f"expected an absolute path, got {showValue(path)}")
    address = reader.hostPort("address", 3310)
    config = ClamAVConfig(socket=path or d.socket, address=address,
                          timeout=reader.number("timeout", d.timeout),
                          fail=_scannerFail(reader))
    reader.checkUnknown(reader.seen)
    return config


def parseRspamd(reader):
    d = RspamdConfig()
    url = reader.string("url") or d.url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise reader.error("url", f"expected an http:// or https:// URL, got {showValue(url)}")
    config = RspamdConfig(url=url.rstrip("/"), timeout=reader.number("timeout", d.timeout),
                          fail=_scannerFail(reader))
    reader.checkUnknown(reader.seen)
    return config
