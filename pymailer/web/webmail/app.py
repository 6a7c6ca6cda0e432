"""
The routes under C{/webmail/}: folders, a folder's messages (paged), one
message, its body frame and its attachments, and the actions on messages.

Any logged-in user may use it, for their own mail only: the user is the
session's (L{pymailer.web.admin.AdminApp.loggedIn}, the same login,
lockouts and sessions as the other web pages), never a URL's.  Folder and
UID come from the URL; one that is not the user's is simply not found
(404, the same answer as for one that does not exist).  Every change is a
POST with the session's CSRF token.  The store is read in the thread pool
(L{pymailer.web.webmail.mailbox}).

A message's body is served from its own URL (C{body}) with its own CSP
(no script, nothing loaded from elsewhere unless the user asked for
remote images, and a CSP sandbox) into an C{<iframe sandbox>} without
C{allow-scripts}: even HTML the sanitiser let through cannot run or load
anything.  Attachments are served as downloads (C{Content-Disposition:
attachment}, C{nosniff}), never rendered.

Trust: everything in the request and in the messages; every value shown is
escaped (L{pymailer.web.html}), the body sanitised
(L{pymailer.web.webmail.content}).
"""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import quote, urlencode

from klein import Klein
from twisted.internet import defer

from pymailer.sizes import formatSize
from pymailer.web.account import AccountApp
from pymailer.web.admin import ACCOUNT_PATH, _arg
from pymailer.web.html import CONTENT_SECURITY_POLICY, element, isolate, isolatedText, join
from pymailer.web.webmail import organise, script
from pymailer.web.webmail.folders import EMPTIED_USES, pageState
from pymailer.web.webmail.mailbox import ACTIONS, ANSWERED, FLAGGED, JUNK, SEEN, Webmail
from pymailer.web.webmail.outgoing import MEDIA_TYPE

# Routes under this prefix go to this module (pymailer.web.app.Paths).
PREFIX = b"/webmail/"
HOME = "/webmail/"
STYLE_PATH = "/webmail/style.css"
# The compose page (pymailer.web.webmail.compose) and its modes on a message.
COMPOSE = "/webmail/compose"
NAV = ((HOME, "Mail"), (COMPOSE, "Write"), (ACCOUNT_PATH, "My account"))
NOT_FOUND = "No such folder or message."
WRITE_MODES = (("reply", "Reply"), ("replyall", "Reply all"), ("forward", "Forward"),
               ("forwardattach", "Forward as attachment"), ("draft", "Edit"))
# The message page may frame its body (from our own origin) and nothing
# else; the rest as for every page of ours.
PAGE_POLICY = CONTENT_SECURITY_POLICY + b"; frame-src 'self'"
# Pages that load our script (pymailer.web.webmail.script): that one
# script element only (its nonce), and its polls of our own URLs.
SCRIPT_POLICY = PAGE_POLICY + b"; script-src 'nonce-%s'; connect-src 'self'"
# The body frame: no script, no form, inline style only, images only from
# inside the message (data:, cid:) -- or from anywhere when asked.  The CSP
# sandbox keeps it script-less even if opened as a page of its own; popups
# (links with target=_blank) leave the sandbox.
SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
BODY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data: cid:{remote}; "
               "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; "
               f"sandbox {SANDBOX}")
REMOTE_SOURCES = " http: https:"
# An attachment's type as stored: kept only if it is a plain type/subtype
# (MEDIA_TYPE), else this.
DOWNLOAD_TYPE = "application/octet-stream"
# Where an action's redirect may go: one of our pages, printable ASCII.
SAFE_BACK = re.compile(r"\A/webmail/[\x21-\x7e]*\Z")  # \Z: "$" passes a final newline
STYLE = b"""\
.webmail { display: flex; gap: 1.2em; align-items: flex-start; }
.folders ul { list-style: none; padding: 0; margin: 0; min-width: 10em; }
.folders li { padding: .2em 0; }
.folders a.current { font-weight: bold; }
.unread-count { background: #234; color: #fff; border-radius: .8em; padding: 0 .5em;
                font-size: .85em; margin-left: .3em; }
.messages { flex: 1; min-width: 0; }
.toolbar { display: flex; flex-wrap: wrap; gap: .3em; margin: .3em 0; align-items: center; }
ul.list { list-style: none; padding: 0; margin: 0; background: #fff; border: 1px solid #ccd; }
ul.list li { display: flex; align-items: baseline; gap: .6em; padding: .35em .5em;
             border-top: 1px solid #eef; }
ul.list li:first-child { border-top: 0; }
ul.list li.unread a .subject { font-weight: bold; }
ul.list a { flex: 1; min-width: 0; display: flex; flex-wrap: wrap; gap: 0 .8em;
            color: inherit; text-decoration: none; }
ul.list .from { flex: 0 0 14em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
ul.list .subject { flex: 1 1 12em; min-width: 0; overflow-wrap: anywhere; }
ul.list .date, ul.list .size, ul.list .marks { color: #555; font-size: .9em; white-space: nowrap; }
.paging { display: flex; gap: 1em; margin: .5em 0; }
dl.headers { display: grid; grid-template-columns: max-content 1fr; gap: .2em .8em;
             background: #fff; border: 1px solid #ccd; padding: .5em; margin: 0 0 .5em; }
dl.headers dt { font-weight: bold; } dl.headers dd { margin: 0; overflow-wrap: anywhere; }
iframe.body { width: 100%; height: 70vh; border: 1px solid #ccd; background: #fff;
              box-sizing: border-box; }
.attachments a { overflow-wrap: anywhere; }
.folders a.drop-target { outline: 2px dashed #234; }
.folders .manage { margin-top: .6em; font-size: .9em; }
form.search { display: flex; flex-wrap: wrap; gap: .3em; margin: 0 0 .5em; }
form.search input[type=search] { flex: 1 1 12em; min-width: 0; }
#live { background: #ffd; border: 1px solid #cc9; padding: .3em .5em; }
table.manage { border-collapse: collapse; width: 100%; }
table.manage td, table.manage th { padding: .3em; border-top: 1px solid #ccd; text-align: left;
                                   vertical-align: top; }
table.manage form { display: flex; flex-wrap: wrap; gap: .3em; }
table.manage input[type=text] { min-width: 0; flex: 1 1 8em; }
@media (max-width: 40em) {
  table.manage, table.manage tbody, table.manage tr, table.manage td { display: block; }
  table.manage tr:first-child, table.manage td:empty { display: none; }
  main { padding: .5em; }
  header { flex-wrap: wrap; gap: .6em; padding: .5em; }
  .webmail { flex-direction: column; gap: .5em; }
  .folders ul { display: flex; flex-wrap: wrap; gap: .2em 1em; }
  ul.list .from { flex: 1 1 100%; }
  dl.headers { grid-template-columns: 1fr; }
}
"""


def folderURL(name, page=0):
    query = {"name": name}
    if page:
        query["page"] = page
    return HOME + "folder?" + urlencode(query, quote_via=quote)


def messageURL(name, uid, view="message", **extra):
    return f"{HOME}{view}?" + urlencode(dict(name=name, uid=uid, **extra), quote_via=quote)


def formatDate(seconds):
    """A message's date for a list, in UTC (the server knows no user's zone)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return ""


# UIDs are 32-bit (RFC 3501 2.3.1.1); so are our part numbers, and a larger
# number would overflow the store's integer column.
MAX_NUMBER = 2 ** 32 - 1


def _number(text):
    """
    A UID or part number, or C{None}.  ASCII digits only: C{str.isdigit}
    also says yes to "\u00b2" and other digits C{int} refuses.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_NUMBER:
        return None
    return int(text)


def _intArg(request, name):
    """A UID or part number of the query; L{KeyError} (not found) if missing or not one."""
    number = _number(_arg(request, name))
    if number is None:
        raise KeyError(name)
    return number


def contentDisposition(filename):
    """
    C{attachment} with the name as ASCII and, for any other name, as
    RFC 6266 4.3's C{filename*} (RFC 8187 UTF-8).
    """
    ascii = re.sub(r'[^A-Za-z0-9._ -]', "_", filename)[:200] or "attachment"
    value = f'attachment; filename="{ascii}"'
    if ascii != filename:
        value += "; filename*=UTF-8''" + quote(filename[:200], safe="")
    return value.encode("ascii")


class WebmailApp:
    """
    The routes under C{/webmail/}.

    @param admin: the L{pymailer.web.admin.AdminApp} whose sessions and
        pages these share.
    """

    app = Klein()

    def __init__(self, admin):
        self.admin = admin
        self.mail = Webmail(admin.ops.store)
        self.searchTurns = organise.SearchTurns()

    # -- plumbing -------------------------------------------------------------

    # The session of any logged-in user, or the refusal or redirect to the
    # login page: as the account pages (it uses only self.admin).
    _user = AccountApp._user

    def _answer(self, request, title, content, session, code=200, withScript=False):
        """
        A page of the webmail; C{withScript}: with our script
        (L{pymailer.web.webmail.script}), allowed by this response's nonce.
        """
        policy = PAGE_POLICY
        if withScript:
            nonce = secrets.token_urlsafe(18)
            content = join([content, element("script", "", src=script.PATH, nonce=nonce)])
            policy = SCRIPT_POLICY % nonce.encode("ascii")
        page = self.admin.answer(request, title, content, code=code, session=session,
                                 current=HOME, nav=NAV, styles=(STYLE_PATH,))
        request.setHeader(b"Content-Security-Policy", policy)
        return page

    def _notFound(self, request, session):
        return self._answer(request, "Not found", element("p", NOT_FOUND), session, code=404)

    @defer.inlineCallbacks
    def _lookup(self, request, f, *args):
        """
        For a GET of one message's data: the logged-in session, the C{uid}
        of the query (and C{part}, if C{f} takes one), and C{f(user, name,
        uid, [part,] *args)} run in the thread pool.

        @return: a Deferred of C{(session, uid, result)}, or of C{(None,
            None, response)}: the login redirect, or the 404 page for
            anything not found (or not the user's).
        """
        session, refused = yield self._user(request)
        if session is None:
            return None, None, refused
        try:
            uid = _intArg(request, "uid")
            numbers = (uid, _intArg(request, "part")) if f == self.mail.attachment else (uid,)
            result = yield self.admin.inThread(f, session.user, _arg(request, "name"),
                                               *numbers, *args)
        except KeyError:
            return None, None, self._notFound(request, session)
        return session, uid, result

    def _folderList(self, folders, current):
        items = []
        for name, unread, _ in folders:
            count = element("span", unread, class_="unread-count",
                            title=f"{unread} unread") if unread else ""
            items.append(element("li", join([
                element("a", isolate(name), data_folder=name, href=folderURL(name),
                        class_="current" if name == current else None), count])))
        return element("nav", join([
            element("ul", join(items)),
            element("p", element("a", "Manage folders", href=organise.FOLDERS_PATH),
                    class_="manage")]), class_="folders", aria_label="Folders")

    def _actions(self, csrf, name, folders, uids=(), back=None, inJunk=False):
        """The form's action buttons (and the hidden fields for one message)."""
        fields = [element("input", type="hidden", name="csrf", value=csrf),
                  element("input", type="hidden", name="name", value=name)]
        fields += [element("input", type="hidden", name="uid", value=uid) for uid in uids]
        if back is not None:
            fields.append(element("input", type="hidden", name="back", value=back))
        spam = ("notspam", "Not spam") if inJunk else ("spam", "Spam")
        buttons = [element("button", label, type="submit", name="action", value=action)
                   for action, label in (("read", "Mark read"), ("unread", "Mark unread"),
                                         ("flag", "Flag"), ("unflag", "Unflag"),
                                         ("delete", "Delete"), spam)]
        # An option holds text only: plain-text isolates there.
        targets = [element("option", isolatedText(other), value=other)
                   for other, _, _ in folders if other != name]
        move = join([element("select", join(targets), name="target", aria_label="Move to"),
                     element("button", "Move", type="submit", name="action", value="move")])
        return join(fields + [element("div", join(buttons + [move]), class_="toolbar")])

    def _writeLinks(self, name, uid):
        """Reply, reply all, forward (inline, as attachment), edit (a draft's)."""
        links = [element("a", label, href=f"{COMPOSE}?" + urlencode(
            dict(mode=mode, name=name, uid=uid), quote_via=quote), class_="button")
            for mode, label in WRITE_MODES]
        return element("nav", join(links), class_="toolbar", aria_label="Write")

    # -- pages ----------------------------------------------------------------

    @app.route(STYLE_PATH, methods=["GET", "HEAD"])
    def style(self, request):
        request.setHeader(b"Content-Type", b"text/css; charset=utf-8")
        return STYLE

    @app.route("/webmail", methods=["GET"])
    @app.route("/webmail/", methods=["GET"])
    def home(self, request):
        return self.folder(request, "INBOX")

    @app.route("/webmail/folder", methods=["GET"])
    @defer.inlineCallbacks
    def folder(self, request, name=None):
        session, refused = yield self._user(request)
        if session is None:
            return refused
        name = name or _arg(request, "name")
        pageArg = _arg(request, "page")
        page = _number(pageArg) or 0
        # The state first: a change after it makes the page's poll reload.
        liveState, uses = yield self.admin.inThread(pageState, self.mail.store,
                                                    session.user, name)
        folders = yield self.admin.inThread(self.mail.folders, session.user)
        try:
            shown = yield self.admin.inThread(self.mail.folderPage, session.user, name, page)
        except KeyError:
            return self._notFound(request, session)
        listing = self._messageList(shown.name, shown.rows)
        paging = []
        if shown.page > 0:
            paging.append(element("a", "\u2190 Newer", href=folderURL(shown.name, shown.page - 1),
                                  rel="prev"))
        paging.append(element("span", f"Page {shown.page + 1} of {shown.pages}"
                              f" ({shown.total} message{'' if shown.total == 1 else 's'})"))
        if shown.page + 1 < shown.pages:
            paging.append(element("a", "Older \u2192", href=folderURL(shown.name, shown.page + 1),
                                  rel="next"))
        back = folderURL(shown.name, shown.page)
        form = element("form", join([
            self._actions(session.csrf, shown.name, folders, back=back, inJunk=JUNK in uses),
            listing]), method="post", action=HOME + "action", class_="message-actions")
        tools = [organise.searchForm(shown.name)]
        if uses & EMPTIED_USES and shown.total:
            tools.append(organise.emptyForm(session.csrf, shown.name))
        live = element("p", "This folder changed elsewhere: reload the page to see it.",
                       id="live", hidden=True, data_state=liveState,
                       data_url=organise.stateURL(shown.name))
        content = element("div", join([
            self._folderList(folders, shown.name),
            element("section", join(tools + [live, form,
                                             element("div", join(paging), class_="paging")]),
                    class_="messages")]), class_="webmail")
        return self._answer(request, isolate(shown.name), content, session, withScript=True)

    def _messageList(self, name, shown):
        """The C{ul} of L{pymailer.web.webmail.mailbox.Row}s C{shown}, or "No messages"."""
        rows = []
        for row in shown:
            marks = [(mark, title) for mark, title, on in (
                ("\u2605", "flagged", FLAGGED in row.flags),
                ("\u21a9", "answered", ANSWERED in row.flags),
                ("\U0001F4CE", "attachments", row.hasAttachments)) if on]
            link = element("a", join([
                element("span", row.sender or "(no sender)", class_="from"),
                element("span", row.subject or "(no subject)", class_="subject"),
                element("span", "".join(mark for mark, _ in marks), class_="marks",
                        title=", ".join(title for _, title in marks) or None),
                element("span", formatDate(row.date), class_="date"),
                element("span", formatSize(row.size), class_="size")]),
                href=messageURL(name, row.uid))
            box = element("input", type="checkbox", name="uid", value=row.uid,
                          aria_label="Choose")
            rows.append(element("li", join([box, link]), data_uid=row.uid,
                                class_="unread" if SEEN not in row.flags else "read"))
        return (element("ul", join(rows), class_="list") if rows
                else element("p", "No messages."))

    @app.route("/webmail/message", methods=["GET"])
    @defer.inlineCallbacks
    def message(self, request):
        name, remote = _arg(request, "name"), _arg(request, "remote") == "1"
        session, uid, shown = yield self._lookup(request, self.mail.message, remote)
        if session is None:
            return shown
        folders = yield self.admin.inThread(self.mail.folders, session.user)
        uses = yield self.admin.inThread(self.mail.store.specialUses, session.user)
        subject = dict(shown.headers).get("Subject") or "(no subject)"
        headers = element("dl", join(join([element("dt", field), element("dd", value)])
                                     for field, value in shown.headers), class_="headers")
        parts = [element("p", element("a", join(["\u2190 ", isolate(name)]),
                                      href=folderURL(name))),
                 self._writeLinks(name, uid), headers]
        if shown.attachments:
            parts.append(element("ul", join(
                element("li", join([
                    element("a", a.filename, href=messageURL(name, uid, "part", part=a.part),
                            download=a.filename),
                    f" ({a.contentType}, {formatSize(a.size)})"]))
                for a in shown.attachments), class_="attachments", aria_label="Attachments"))
        if shown.remoteBlocked and not remote:
            parts.append(element("p", join([
                f"{shown.remoteBlocked} remote image"
                f"{'' if shown.remoteBlocked == 1 else 's'} blocked (they would tell the "
                "sender you read this). ",
                element("a", "Show remote content",
                        href=messageURL(name, uid, remote="1"))]), class_="notice"))
        # The actions above the text: on a phone the frame fills the screen.
        parts.append(element("form", self._actions(session.csrf, name, folders, [uid],
                                                   back=folderURL(name),
                                                   inJunk=JUNK in uses.get(name, ())),
                             method="post", action=HOME + "action"))
        bodyURL = messageURL(name, uid, "body", **({"remote": "1"} if remote else {}))
        parts.append(element("iframe", "", src=bodyURL, sandbox=SANDBOX, class_="body",
                             title="Message text", referrerpolicy="no-referrer"))
        return self._answer(request, subject, join(parts), session)

    @app.route("/webmail/body", methods=["GET"])
    @defer.inlineCallbacks
    def body(self, request):
        remote = _arg(request, "remote") == "1"
        # The message page marked it seen already.
        session, _, shown = yield self._lookup(request, self.mail.message, remote, False)
        if session is None:
            return shown
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Security-Policy", BODY_POLICY.format(
            remote=REMOTE_SOURCES if remote else "").encode("ascii"))
        # Our own message page frames it; nobody else's.
        request.setHeader(b"X-Frame-Options", b"SAMEORIGIN")
        return shown.body.encode("utf-8")

    @app.route("/webmail/part", methods=["GET"])
    @defer.inlineCallbacks
    def part(self, request):
        session, _, found = yield self._lookup(request, self.mail.attachment)
        if session is None:
            return found
        contentType, filename, octets = found
        if not MEDIA_TYPE.match(contentType):
            contentType = DOWNLOAD_TYPE
        request.setHeader(b"Content-Type", contentType.encode("ascii"))
        # Always a download, never a page of ours (an HTML attachment would
        # run in our origin); nosniff (on every response) keeps the type.
        request.setHeader(b"Content-Disposition", contentDisposition(filename))
        request.setHeader(b"Cache-Control", b"no-store")
        return octets

    # -- actions --------------------------------------------------------------

    @app.route("/webmail/action", methods=["POST"])
    def action(self, request):
        name, action, target = _arg(request, "name"), _arg(request, "action"), _arg(request, "target")
        uids = [n for n in (_number(v.decode("ascii", "replace"))
                            for v in request.args.get(b"uid", [])) if n is not None]
        back = _arg(request, "back")
        if not SAFE_BACK.match(back):
            back = folderURL(name)
        if action not in ACTIONS:
            action = ""

        def act(session):
            if not action:
                raise ValueError("No such action.")
            return self.admin.inThread(self.mail.act, session.user, name, uids, action,
                                       target)

        return self.admin.postAction(request, back, act, admin=False)

    # Search, folders, live updates, the script (pymailer.web.webmail.organise).
    for _path, _methods, _route in organise.ROUTES:
        app.route(_path, methods=_methods)(_route)
    del _path, _methods, _route

