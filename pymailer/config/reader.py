"""
Typed access to the TOML tables of the configuration file, and the one-line
error (L{ConfigError}) that names the file, the key and the reason.
"""

from __future__ import annotations

import ipaddress
import os
import pathlib


class ConfigError(Exception):
    """
    A configuration problem.  C{str()} is one line:
    C{"<file>: <key>: <reason>"}, or C{"<file>: <reason>"} for a problem with
    the file as a whole.

    @ivar source: the config file path (C{str}), or C{"embedded default"}.
    @ivar key: the dotted key (C{"smtp.max_message_size"}) or C{None}.
    @ivar reason: what is wrong.
    """

    def __init__(self, source, key, reason):
        # One line, always: tomllib and OS messages are, but be sure.
        reason = " ".join(str(reason).split())
        self.source = source
        self.key = key
        self.reason = reason
        parts = [str(source)] + ([key] if key else []) + [reason]
        super().__init__(": ".join(parts))


def showValue(value):
    """Render a bad value the way the user wrote it (TOML spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class TableReader:
    """Typed access to one TOML table, naming keys in errors."""

    def __init__(self, source, table, prefix=""):
        self.source = source
        self.table = table
        self.prefix = prefix
        self.seen = set()

    def error(self, key, reason):
        return ConfigError(self.source, self.prefix + key, reason)

    def get(self, key):
        self.seen.add(key)
        return self.table.get(key)

    def checkUnknown(self, known):
        for key in self.table:
            if key not in known:
                raise self.error(key, "unknown key")

    def positiveInt(self, key, default):
        value = self.get(key)
        if value is None:
            return default
        # bool is a subclass of int: 'true' is not a size.
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(
                key, f"expected a positive integer, got {showValue(value)}")
        return value

    def number(self, key, default, minimum=0.0, strict=True):
        value = self.get(key)
        if value is None:
            return default
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and value == value and value != float("inf"))
        if ok:
            ok = value > minimum if strict else value >= minimum
        if not ok:
            what = ("a positive number" if (strict and minimum == 0)
                    else f"a number >= {minimum:g}" if not strict
                    else f"a number > {minimum:g}")
            raise self.error(key, f"expected {what}, got {showValue(value)}")
        return float(value)

    def string(self, key, required=False):
        value = self.get(key)
        if value is None:
            if required:
                raise self.error(key, "missing required key")
            return None
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {showValue(value)}")
        return value

    def hostPort(self, key, defaultPort):
        """A C{"host:port"} string (checked by L{parseHostPort}), or C{None}."""
        value = self.string(key)
        if value is not None:
            try:
                parseHostPort(value, defaultPort)
            except ValueError as e:
                raise self.error(key, f"bad host:port {value!r}: {e}")
        return value

    def boolean(self, key, default):
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {showValue(value)}")
        return value

    def path(self, key, baseDir):
        value = self.string(key)
        if value is None:
            return None
        if not value or "\0" in value:
            raise self.error(key, "expected a file path")
        path = pathlib.Path(value)
        return path if path.is_absolute() else baseDir / path

    def table_(self, key):
        value = self.get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {showValue(value)}")
        return TableReader(self.source, value, self.prefix + key + ".")


def checkReadable(reader, key, path):
    if not os.access(path, os.R_OK):
        reason = "no such file" if not path.exists() else "not readable"
        raise reader.error(key, f"cannot read {path}: {reason}")


def stringList(reader, key, default):
    value = reader.get(key)
    if value is None:
        return tuple(default)
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise reader.error(key, f"expected an array of strings, got {showValue(value)}")
    return tuple(value)


def nonNegativeInt(reader, key, default):
    value = reader.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise reader.error(key, f"expected an integer >= 0, got {showValue(value)}")
    return value


def networks(reader, key):
    """An array of IPs and networks ("192.0.2.0/24", "2001:db8::1")."""
    nets = stringList(reader, key, ())
    for net in nets:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise reader.error(key, f"not an IP address or network: {showValue(net)}") from None
    return nets


def zoneName(reader, key, name):
    labels = name.rstrip(".").split(".")
    if not all(0 < len(label) <= 63 and label.isascii() and " " not in label
               for label in labels) or len(labels) < 2:
        raise reader.error(key, f"not a DNS zone: {showValue(name)}")
    return name.rstrip(".").lower()


def parseHostPort(text, defaultPort):
    """
    "host", "host:port", "[v6]" or "[v6]:port" -> C{(host, port)}.
    @raise ValueError: malformed.
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("expected [address]:port")
        portText = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, portText = text.split(":")
    else:
        host, portText = text, None
    if not host:
        raise ValueError("empty host")
    if portText is None:
        return host, defaultPort
    if not portText.isdigit() or not 0 < int(portText) < 65536:
        raise ValueError("port must be an integer 1-65535")
    return host, int(portText)
