"""
Sizes as people write and read them: C{500M} in an admin command,
C{12.3 MiB} on a page.  Binary units throughout (C{M} is 1024 * 1024 octets,
as Dovecot's quota settings take it).
"""

_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def parseSize(text):
    """
    C{"500M"}, C{"2G"}, C{"100k"}, C{"1024"} (octets) -> octets; an optional
    C{B}/C{iB} after the unit is accepted (C{"2GiB"}, C{"10KB"}).

    @raise ValueError: anything else, negative numbers included.
    """
    value = text.strip().upper()
    for suffix in ("IB", "B"):
        if value.endswith(suffix) and value[:-len(suffix)][-1:].isalpha():
            value = value[:-len(suffix)]
            break
    number, unit = (value[:-1], value[-1]) if value and value[-1] in _UNITS else (value, "")
    if not (number.isascii() and number.isdigit()):
        raise ValueError(f"not a size: {text!r} (examples: 500M, 2G, 1048576)")
    return int(number) * _UNITS[unit]


def formatSize(size):
    """C{size} bytes as a person reads it (C{"12.3 MiB"})."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
