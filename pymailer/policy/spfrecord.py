"""
The language of SPF records (RFC 7208 §4.5, §4.6, §5, §6, §7 and the ABNF
of §12): choosing the record among a domain's TXT strings, parsing it into
directives and modifiers, parsing domain-specs and explanation strings into
macro strings, and expanding macros.

Pure functions on text: no DNS, no reactor.  L{pymailer.policy.spf}
evaluates what this module parses.

Trust: everything here comes from DNS, i.e. from whoever controls the
sender's domain (or claims to).  A record is parsed in full before any of it
is evaluated, so a syntax error anywhere is a permerror (RFC 7208 §4.6) and
no lookup is made on behalf of a broken record.  Macro expansion inserts
attacker-chosen text (the local-part) into DNS names; the evaluator checks
the names before it queries them.
"""

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote


class SPFSyntaxError(ValueError):
    """The text breaks the RFC 7208 grammar: a permerror for records."""


#: Macro letters allowed in domain-specs (RFC 7208 §7.2); "c", "r" and "t"
#: are allowed in explanation strings only (§7.2: "only allowed in 'exp'
#: text").
DOMAIN_LETTERS = "slodipvh"
EXPLANATION_LETTERS = "slodipvhcrt"

#: §5, in the order the term parser tries them ("all" before "a").
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")

QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


@dataclass(frozen=True)
class Macro:
    """One C{%{...}} (RFC 7208 §7.1)."""

    letter: str  # lower case
    urlEscape: bool  # the letter was upper case (§7.3)
    digits: int | None  # keep this many right-hand parts
    reverse: bool
    delimiters: str  # "." unless given


@dataclass(frozen=True)
class MacroString:
    """
    A parsed macro-string: C{parts} are literal C{str} (with C{%%}, C{%_}
    and C{%-} already replaced) and L{Macro}s.
    """

    text: str
    parts: tuple

    @property
    def letters(self):
        return {p.letter for p in self.parts if isinstance(p, Macro)}


@dataclass(frozen=True)
class Directive:
    """
    A qualifier and a mechanism (RFC 7208 §4.6.2, §5).  C{text} is the term
    as published, for results and Authentication-Results comments.
    """

    text: str
    qualifier: str  # one of QUALIFIERS
    mechanism: str  # one of MECHANISMS, lower case
    domainSpec: MacroString | None = None
    network: object = None  # ip4/ip6: an ipaddress network
    cidr4: int = 32
    cidr6: int = 128

    @property
    def result(self):
        return QUALIFIERS[self.qualifier]


@dataclass(frozen=True)
class Record:
    text: str
    directives: tuple
    redirect: MacroString | None = None
    explanation: MacroString | None = None


# -- choosing the record -----------------------------------------------------


def isSPFRecord(data):
    """
    RFC 7208 §4.5: a TXT record (its strings already concatenated without
    separator, §3.3) is an SPF record if it starts with "v=spf1" (case
    insensitive, §4.5/§12 ABNF strings) followed by a space or the end.
    "v=spf10" is not one; non-SPF TXT records may hold anything, bytes
    included.
    """
    return data[:6].lower() == b"v=spf1" and data[6:7] in (b"", b" ")


# -- parsing the record -----------------------------------------------------

_MECHANISM = re.compile(r"([+\-~?]?)(" + "|".join(MECHANISMS) + r")((?:[:/].*)?)", re.I | re.S)
# §12: name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)", re.S)
# a/mx: [ ":" domain-spec ] [ dual-cidr-length ].  The domain-spec may
# itself contain "/" (a macro-literal), so the CIDR suffix is taken from
# the end, shortest domain-spec first.
_DUAL_CIDR = re.compile(r"(.*?)(?:/([0-9]+))?(?://([0-9]+))?", re.S)
_IP4 = re.compile(r":([0-9.]+)(?:/([0-9]+))?", re.S)
_IP6 = re.compile(r":([0-9A-Fa-f:.]+)(?:/([0-9]+))?", re.S)
_QNUM = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IP4_NETWORK = re.compile(r"\.".join([_QNUM] * 4))


def parseRecord(data):
    """
    Parse a whole SPF record (bytes or str, "v=spf1 ..."), every term, before
    anything is evaluated (RFC 7208 §4.6: syntax errors anywhere in the
    record make it a permerror, even after a matching mechanism).

    @raise SPFSyntaxError: for anything the grammar of §12 does not allow,
        and for a repeated "redirect" or "exp" (§6).
    """
    if isinstance(data, bytes):
        try:
            # §3.1/§4.5: records are 7-bit ASCII.
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise SPFSyntaxError("the record is not 7-bit ASCII")
    else:
        text = data
        if not text.isascii():
            raise SPFSyntaxError("the record is not 7-bit ASCII")
    if not isSPFRecord(text.encode("ascii")):
        raise SPFSyntaxError("not an SPF record")
    directives = []
    modifiers = {}
    # §4.6.1 and §12: terms are separated by one or more SP, and only SP
    # (a tab or CR stays inside a term and makes it invalid); trailing SP is
    # allowed.
    for term in text[6:].split(" "):
        if not term:
            continue
        m = _MECHANISM.fullmatch(term)
        if m:
            directives.append(_parseDirective(term, m.group(1) or "+", m.group(2).lower(), m.group(3)))
            continue
        m = _MODIFIER.fullmatch(term)
        if not m:
            raise SPFSyntaxError(f"invalid term {term!r}")
        name, value = m.group(1).lower(), m.group(2)
        if name in ("redirect", "exp"):
            # §6: each at most once.  The known modifiers are not "greedy"
            # unknown-modifiers: "redirect=-all" is an error, not an unknown
            # modifier with a macro-string value.
            if name in modifiers:
                raise SPFSyntaxError(f"{name}= appears more than once")
            modifiers[name] = parseDomainSpec(value)
        else:
            # §6.3/A: unknown modifiers are ignored, but their value must
            # still be a valid macro-string.
            parseMacroString(value, EXPLANATION_LETTERS)
    return Record(text, tuple(directives), modifiers.get("redirect"), modifiers.get("exp"))


def _parseDirective(term, qualifier, mechanism, argument):
    if mechanism == "all":
        if argument:
            raise SPFSyntaxError(f"{term!r}: all takes no argument")
        return Directive(term, qualifier, mechanism)
    if mechanism in ("include", "exists"):
        # §5.2, §5.7: ":" domain-spec, required; no CIDR (a "/24" stays in
        # the domain-spec and spoils its domain-end).
        if not argument.startswith(":"):
            raise SPFSyntaxError(f"{term!r}: {mechanism} needs :domain")
        return Directive(term, qualifier, mechanism, parseDomainSpec(argument[1:]))
    if mechanism == "ptr":
        # §5.5: [ ":" domain-spec ], no CIDR.
        spec = None
        if argument:
            if not argument.startswith(":"):
                raise SPFSyntaxError(f"{term!r}: ptr takes no CIDR length")
            spec = parseDomainSpec(argument[1:])
        return Directive(term, qualifier, mechanism, spec)
    if mechanism in ("a", "mx"):
        m = _DUAL_CIDR.fullmatch(argument)
        head, cidr4, cidr6 = m.groups()
        spec = None
        if head:
            if not head.startswith(":"):
                raise SPFSyntaxError(f"invalid term {term!r}")
            spec = parseDomainSpec(head[1:])
        return Directive(
            term, qualifier, mechanism, spec,
            cidr4=_cidr(cidr4, 32, term), cidr6=_cidr(cidr6, 128, term),
        )
    if mechanism == "ip4":
        m = _IP4.fullmatch(argument)
        if not m or not _IP4_NETWORK.fullmatch(m.group(1)):
            raise SPFSyntaxError(f"{term!r}: invalid ip4-network")
        length = _cidr(m.group(2), 32, term)
        network = ipaddress.IPv4Network(f"{m.group(1)}/{length}", strict=False)
        return Directive(term, qualifier, mechanism, network=network, cidr4=length)
    # ip6
    m = _IP6.fullmatch(argument)
    if not m:
        raise SPFSyntaxError(f"{term!r}: invalid ip6-network")
    try:
        address = ipaddress.IPv6Address(m.group(1))
    except ValueError:
        raise SPFSyntaxError(f"{term!r}: invalid ip6-network")
    length = _cidr(m.group(2), 128, term)
    network = ipaddress.IPv6Network(f"{address}/{length}", strict=False)
    return Directive(term, qualifier, mechanism, network=network, cidr6=length)


def _cidr(text, maximum, term):
    """
    §12: ip4-cidr-length = "/" ("0" / %x31-39 0*1DIGIT), 0-32; ip6 0-128.
    No leading zeros ("/032" is an error, as leading zeros are in
    ip4-network).
    """
    if text is None:
        return maximum
    if not re.fullmatch(r"0|[1-9][0-9]{0,2}", text) or int(text) > maximum:
        raise SPFSyntaxError(f"{term!r}: invalid CIDR length /{text}")
    return int(text)


# -- macro strings ------------------------------------------------------------

# §7.1: macro-expand = "%{" macro-letter transformers *delimiter "}";
# transformers = *DIGIT [ "r" ] (ABNF strings are case-insensitive).
_MACRO = re.compile(r"%\{([A-Za-z])([0-9]*)([rR]?)([.\-+,/_=]*)\}")
# §7.1: toplabel = ( *alphanum ALPHA *alphanum ) /
#                  ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
_DOMAIN_END = re.compile(
    r"\.(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9])\.?\Z"
)


def parseMacroString(text, letters=DOMAIN_LETTERS, explanation=False):
    """
    Parse a macro-string (§7.1), or with C{explanation} an explain-string
    (*( macro-string / SP ), §6.2).

    @return: a L{MacroString}.
    @raise SPFSyntaxError: a "%" not followed by "{", "%", "_" or "-"
        (§7.1), an unknown or disallowed macro letter, a zero DIGIT
        transformer (§7.3: "MUST be nonzero"), or a character outside
        macro-literal (%x21-24 / %x26-7E).
    """
    return _parseMacros(text, letters, explanation)[0]


def parseDomainSpec(text):
    """
    Parse a domain-spec (§7.1): domain-spec = macro-string domain-end, with
    domain-end = ( "." toplabel [ "." ] ) / macro-expand.  So it is never
    empty, never only a toplabel ("a:museum"), and its last label is not
    all-numeric ("a:1.2.3.4" is a common mistake) nor contains ":" or "/".
    """
    macroString, tail, endsWithMacro = _parseMacros(text, DOMAIN_LETTERS, False)
    if not endsWithMacro and not _DOMAIN_END.search(tail):
        raise SPFSyntaxError(f"invalid domain-spec {text!r}")
    return macroString


def _parseMacros(text, letters, explanation):
    """
    @return: C{(MacroString, tail, endsWithMacro)} where C{tail} is the run
        of literal characters after the last macro-expand.
    """
    parts = []
    literal = []
    tail = []
    endsWithMacro = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            following = text[i + 1:i + 2]
            if following in ("%", "_", "-"):
                literal.append({"%": "%", "_": " ", "-": "%20"}[following])
                i += 2
            elif following == "{":
                m = _MACRO.match(text, i)
                if not m:
                    raise SPFSyntaxError(f"invalid macro in {text!r}")
                letter, digits, reverse, delimiters = m.groups()
                if letter.lower() not in letters:
                    raise SPFSyntaxError(f"macro letter {letter!r} not allowed here in {text!r}")
                significant = digits.lstrip("0")
                if digits and not significant:
                    raise SPFSyntaxError(f"zero DIGIT transformer in {text!r}")
                # A domain has at most 127 labels: a longer count keeps
                # them all, and the record's digits never reach int() unbounded.
                count = int(significant or 0) if len(significant) <= 4 else 9999
                if literal:
                    parts.append("".join(literal))
                    literal = []
                parts.append(Macro(
                    letter.lower(), letter.isupper(), count if digits else None,
                    bool(reverse), delimiters or ".",
                ))
                i = m.end()
            else:
                raise SPFSyntaxError(f"'%' must be followed by {{, %, _ or - in {text!r}")
            tail = []
            endsWithMacro = True
            continue
        if "\x21" <= c <= "\x7e" or (explanation and c == " "):
            literal.append(c)
            tail.append(c)
            endsWithMacro = False
            i += 1
            continue
        raise SPFSyntaxError(f"invalid character {c!r} in {text!r}")
    if literal:
        parts.append("".join(literal))
    return MacroString(text, tuple(parts)), "".join(tail), endsWithMacro


def expand(macroString, values):
    """
    Expand C{macroString} (§7.3, §7.4) with C{values}, a mapping from
    macro letters to their values (§7.2).  Only the letters used need be
    present.
    """
    out = []
    for part in macroString.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        # §7.3: split on the delimiters, optionally reverse, keep the
        # DIGIT right-hand parts, join with ".".
        pieces = re.split("[" + re.escape(part.delimiters) + "]", values[part.letter])
        if part.reverse:
            pieces.reverse()
        if part.digits is not None:
            pieces = pieces[-part.digits:]
        value = ".".join(pieces)
        if part.urlEscape:
            # §7.3: upper-case letters are URL-escaped: everything outside
            # RFC 3986 "unreserved" (ALPHA DIGIT - . _ ~).
            value = quote(value, safe="")
        out.append(value)
    return "".join(out)
