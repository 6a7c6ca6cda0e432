"""
Twisted server endpoint strings (C{tcp:25}, C{ssl:993:privateKey=...}),
checked syntactically without a reactor; the service binds them later.
"""

from __future__ import annotations


# Parameters of Twisted's built-in server endpoint parsers, in positional
# order (twisted.internet.endpoints._parseTCP/_parseSSL/_parseUNIX and the
# tcp6 plugin).  Keeping the signatures lets us catch "tcp:25:bogus=1" now
# rather than as a TypeError at startup.
_BUILTIN_ENDPOINTS = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface",
            "backlog", "extraCertChain", "dhParameters"),
    "unix": ("address", "mode", "backlog", "lockfile"),
}


# The listen backlog when an endpoint names none.  Twisted's is 50: a
# burst of clients above that (every IMAP client reconnecting after a
# restart) overflows the accept queue, and with SYN cookies a client whose
# handshake the kernel then forgot believes it is connected and waits
# forever for a greeting that never comes (seen with 500 IMAP connections
# at once, bench/imap_idle_many.py).  The kernel caps it at somaxconn.
LISTEN_BACKLOG = 1024


def withBacklog(description, backlog=LISTEN_BACKLOG):
    """
    C{description} with C{backlog=} added if it is a built-in endpoint
    (tcp, tcp6, ssl, unix) that names none; anything else unchanged.
    """
    kind = description.partition(":")[0].lower()
    params = _BUILTIN_ENDPOINTS.get(kind)
    if params is None:
        return description
    args, kwargs = splitEndpoint(description)
    if "backlog" in kwargs or len(args) - 1 > params.index("backlog"):
        return description
    return f"{description}:backlog={backlog}"


def splitEndpoint(description):
    """
    Split an endpoint string like Twisted's C{_parse} does: C{:} separates
    arguments, the first C{=} of an argument makes it C{key=value}, and a
    backslash escapes the next character.

    @return: C{(args, kwargs)}.
    @raise ValueError: a trailing backslash.
    """
    args, kwargs = [], {}
    parts, current, ops = [], "", ":="
    chars = iter(description)
    for c in chars:
        if c in ops:
            parts.append(current)
            current = ""
            if c == ":":
                _addArg(parts, args, kwargs)
                parts, ops = [], ":="
            else:
                ops = ":"
        elif c == "\\":
            try:
                current += next(chars)
            except StopIteration:
                raise ValueError("trailing backslash") from None
        else:
            current += c
    parts.append(current)
    _addArg(parts, args, kwargs)
    return args, kwargs


def usesOwnCertificate(description):
    """
    Does an C{ssl:} endpoint name its own key (C{privateKey=}/C{certKey=})?
    If not, the service wraps it in the C{[tls]} certificate.
    """
    _, kwargs = splitEndpoint(description)
    return "privateKey" in kwargs or "certKey" in kwargs


def _addArg(parts, args, kwargs):
    if len(parts) == 1:
        args.append(parts[0])
    else:
        key, value = parts
        if key in kwargs:
            raise ValueError(f"{key} given twice")
        kwargs[key] = value


def _pluginPrefixes():
    """
    @return: the lower-cased prefixes of installed
        C{IStreamServerEndpointStringParser} plugins.  Scanned only when an
        endpoint names a type we do not know, because plugin discovery
        imports every plugin module.
    """
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    return {p.prefix.lower()
            for p in getPlugins(IStreamServerEndpointStringParser)}


def validateEndpoint(description: str) -> None:
    """
    Check a server endpoint string without a reactor.

    @raise ValueError: with the reason, e.g. C{"port must be an integer
        0-65535"}.
    """
    if not description.strip():
        raise ValueError("empty endpoint")
    args, kwargs = splitEndpoint(description)
    if not args or not args[0]:
        raise ValueError("missing endpoint type (e.g. 'tcp:25')")
    kind, positional = args[0], args[1:]
    params = _BUILTIN_ENDPOINTS.get(kind)
    if params is None:
        if kind.lower() not in _pluginPrefixes():
            raise ValueError(
                f"unknown endpoint type {kind!r} (expected tcp, tcp6, ssl,"
                " unix or an installed endpoint plugin)")
        return  # The plugin parses its own arguments.
    if len(positional) > len(params):
        raise ValueError(f"too many arguments for {kind}")
    bound = dict(zip(params, positional))
    for key, value in kwargs.items():
        if key not in params:
            raise ValueError(f"unknown argument {key!r} for {kind}")
        if key in bound:
            raise ValueError(f"{key} given twice")
        bound[key] = value
    if params[0] not in bound:
        raise ValueError(f"missing {params[0]}")
    if kind == "unix":
        if not bound["address"]:
            raise ValueError("missing address")
        return
    port = bound["port"]
    if not (port.isascii() and port.isdigit() and 0 <= int(port) <= 65535):
        raise ValueError("port must be an integer 0-65535")
    if "backlog" in bound and not (bound["backlog"].isascii()
                                   and bound["backlog"].isdigit()):
        raise ValueError("backlog must be a non-negative integer")
