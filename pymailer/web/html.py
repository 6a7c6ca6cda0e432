"""
Server-rendered HTML for the login and admin pages: small builders that
escape every value they are given.

Rule: every piece of text that is not a literal in this module goes
through L{esc} (or a builder that calls it); builders return L{Markup},
which is the only thing inserted unescaped.  Nothing here runs script:
the pages work under a CSP without C{script-src}, and the one style sheet
is a file of ours (L{STYLE}).
"""

from __future__ import annotations

import html
import re

from pymailer.store import BIDI_CONTROLS

# Pages of this kind may submit forms to us and load our style sheet; the
# rest of the site's policy (pymailer.web.site) stays as it is.
CONTENT_SECURITY_POLICY = (b"default-src 'none'; style-src 'self'; form-action 'self'; "
                           b"frame-ancestors 'none'; base-uri 'none'")
STYLE_PATH = "/static/admin.css"
STYLE = b"""\
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #f6f7f9; }
header { background: #234; color: #fff; padding: .6em 1.2em; display: flex; gap: 1.2em;
         align-items: center; }
header a { color: #dde; text-decoration: none; }
header a.current { color: #fff; font-weight: bold; }
header form { margin-left: auto; }
main { padding: 1em 1.5em; max-width: 70em; }
table { border-collapse: collapse; background: #fff; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #e8ebf0; }
form.inline { display: inline; margin: 0; }
fieldset { background: #fff; border: 1px solid #ccd; margin: 1em 0; }
label { display: inline-block; margin: .2em .8em .2em 0; }
.notice { padding: .5em 1em; border-radius: 4px; }
.ok { background: #dfd; border: 1px solid #9c9; }
.error { background: #fdd; border: 1px solid #c99; }
pre { background: #fff; border: 1px solid #ccd; padding: .5em; overflow-x: auto; }
.status-ok { color: #170; } .status-info { color: #555; }
.status-missing, .status-wrong, .status-error, .status-listed { color: #b00; }
td + td { overflow-wrap: anywhere; max-width: 40em; }
.login { max-width: 24em; margin: 4em auto; background: #fff; padding: 1.5em;
         border: 1px solid #ccd; }
.login input { width: 100%; box-sizing: border-box; margin-bottom: .8em; }
"""


class Markup(str):
    """HTML that is already safe (built here)."""


# UAX #9 2.4: FIRST STRONG ISOLATE ... POP DIRECTIONAL ISOLATE, the
# isolate of plain text (a page title, a notice), as <bdi> is in HTML.
FSI, PDI = "\u2068", "\u2069"


def esc(value) -> Markup:
    """C{value} as HTML text (L{Markup} passes through unchanged)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def isolate(text) -> Markup:
    """
    C{text} that a user chose (a folder's name) as a bidirectional isolate,
    C{<bdi>} (HTML 4.5.24, UAX #9 isolates): bidi formatting characters in
    it (a right-to-left override, in a name made before such names were
    refused) reorder it alone, never the page's words around it.
    """
    return element("bdi", text)


def isolatedText(text) -> str:
    """
    L{isolate} for plain text (a notice): C{text} between FSI and PDI when
    it holds bidi formatting characters, the ones that could reorder the
    words around it (other names stay as they are, for copying).
    """
    text = str(text)
    if BIDI_CONTROLS.isdisjoint(text):
        return text
    return f"{FSI}{text}{PDI}"


def plainText(value) -> str:
    """
    C{value} (L{Markup} built here, or text) as plain text, its L{isolate}s
    as FSI ... PDI: for a page's C{<title>}, which holds no markup.
    """
    if not isinstance(value, Markup):
        return str(value)
    text = value.replace("<bdi>", FSI).replace("</bdi>", PDI)
    return html.unescape(re.sub(r"<[^>]*>", "", text))


def join(parts) -> Markup:
    return Markup("".join(esc(p) for p in parts))


def element(tag, content="", **attributes) -> Markup:
    """
    C{<tag a="v">content</tag>}; attribute names with a trailing C{_}
    lose it (C{class_}), C{True} values are bare, C{None}/C{False} left out.
    """
    attrs = []
    for name, value in attributes.items():
        name = name.rstrip("_").replace("_", "-")
        if value is None or value is False:
            continue
        attrs.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    if tag in ("input", "link", "meta"):
        return Markup(f"<{tag}{''.join(attrs)}>")
    return Markup(f"<{tag}{''.join(attrs)}>{esc(content)}</{tag}>")


def table(headings, rows) -> Markup:
    head = element("tr", join(element("th", h) for h in headings))
    body = join(element("tr", join(element("td", cell) for cell in row)) for row in rows)
    return element("table", join([head, body]))


def form(action, csrf, fields, button, class_=None, method="post") -> Markup:
    """A POST form with the session's CSRF token."""
    hidden = element("input", type="hidden", name="csrf", value=csrf)
    return element("form", join([hidden, fields, element("button", button, type="submit")]),
                   method=method, action=action, class_=class_)


def field(label, name, type="text", value=None, required=True, **extra) -> Markup:
    return element("label", join([
        label + " ", element("input", name=name, type=type, value=value,
                             required=required, **extra)]))


def page(title, content, csrf=None, current=None, notice=None, nav=(), styles=()) -> bytes:
    """
    A whole page.  With C{csrf} (logged in) the header has the navigation
    C{nav} (C{(path, label)} pairs) and a logout button.  C{styles}: paths
    of style sheets of ours loaded after L{STYLE}.
    """
    header = [element("strong", "pymailer")]
    if csrf is not None:
        header += [element("a", label, href=path, class_="current" if path == current else None)
                   for path, label in nav]
        header.append(form("/logout", csrf, "", "Log out"))
    parts = [element("header", join(header))]
    body = [element("h1", title)]
    if notice is not None:
        kind, text = notice
        body.append(element("p", text, class_=f"notice {kind}", role="status"))
    body.append(content)
    parts.append(element("main", join(body)))
    head = join([element("meta", charset="utf-8"),
                 # Phones lay the page out at their own width, not a desktop's.
                 element("meta", name="viewport", content_="width=device-width, initial-scale=1"),
                 element("title", f"{plainText(title)} - pymailer"),
                 element("link", rel="stylesheet", href=STYLE_PATH)]
                + [element("link", rel="stylesheet", href=path) for path in styles])
    document = element("html", join([element("head", head), element("body", join(parts))]),
                       lang="en")
    return ("<!DOCTYPE html>\n" + document).encode("utf-8")
