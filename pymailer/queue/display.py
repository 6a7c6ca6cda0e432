"""
How queued mail is shown to an administrator, the same in C{pymailer
queue} (terminal) and the web admin pages: ages, header lines, and text
from the network made harmless for display.
"""


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
