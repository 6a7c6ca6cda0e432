"""
How queued mail is shown to an administrator, the same in C{pymailer
queue} (terminal) and the web admin pages: ages, header lines, envelopes,
and text from the network made harmless for display.

Shown from the typed L{pymailer.queue.model.QueueEntry} and its
L{pymailer.envelope.Envelope} only: how a backend stores an envelope (a
JSON file, a database row) is its own business, and C{entry.raw} is shown
as opaque text when nothing else could be read, never parsed.
"""

import dataclasses
import json


def clean(text):
    """
    Text from the network (addresses, remote servers' replies) made safe for
    a terminal: control characters (escape sequences) become C{?}.
    """
    return "".join(c if c.isprintable() else "?" for c in str(text))


def age(seconds):
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def headerLines(f, limit):
    """The first C{limit} lines of the message's header block."""
    lines = []
    while len(lines) < limit:
        line = f.readline(4096)
        if not line or line in (b"\r\n", b"\n"):
            break
        lines.append(line.rstrip(b"\r\n").decode("utf-8", "replace"))
    return lines


def envelopeLines(entry):
    """
    The envelope of a queued message for a terminal: a heading, then its
    fields as indented JSON (sorted keys, as stored by the file spool), or,
    if the backend could not read it, what is stored as one opaque line.
    Not yet made safe for a terminal: pass each line through L{clean}.
    """
    if entry.envelope is None:
        stored = "(nothing stored)" if entry.raw is None else entry.raw.decode("utf-8", "replace")
        return ["envelope (unreadable, shown as stored):", stored]
    # ensure_ascii=False keeps addresses readable; clean() still stops
    # terminal escapes that JSON does not escape (DEL, C1 controls).
    text = json.dumps(dataclasses.asdict(entry.envelope), indent=2, sort_keys=True,
                      ensure_ascii=False)
    return ["envelope:", *text.splitlines()]
