"""
The webmail's routes for organising (issue 17): search, the folders page
(create, rename, delete) and emptying Trash or Junk, the live-update
state a folder page polls, and the script that polls it.

The routes are methods of L{pymailer.web.webmail.app.WebmailApp} (it
registers L{ROUTES}): C{self} is that app, its session plumbing and page
parts.  As everywhere in the webmail, the user is the session's and every
folder name is looked up among that user's folders only; every change is
a POST with the session's CSRF token (L{pymailer.web.admin.AdminApp.postAction}).

Trust: everything in the request.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from twisted.internet import defer

from pymailer.web.admin import _arg
from pymailer.web.html import element, field, isolate, isolatedText, join
from pymailer.web.webmail import app as pages, folders as folderOps, script
from pymailer.web.webmail.folders import EMPTIED_USES, PROTECTED_USES
from pymailer.web.webmail.mailbox import JUNK
from pymailer.web.webmail.search import FIELDS, search

FOLDERS_PATH = "/webmail/folders"
SEARCH_PATH = "/webmail/search"
STATE_PATH = "/webmail/state"
# Searches read messages (the store has no full-text index): in the
# shared thread pool, so at most this many at once in the process, and
# one at a time per user; more wait their turn.  Thirty at once from one
# user held every thread for 18 s: logins, pages and mail intake waited.
MAX_SEARCHES = 2
FIELD_LABELS = {"all": "Everywhere", "from": "From", "to": "To", "subject": "Subject",
                "body": "Text"}


def stateURL(name):
    return STATE_PATH + "?" + urlencode({"name": name}, quote_via=quote)


def searchURL(name, query, where, page):
    return SEARCH_PATH + "?" + urlencode(
        {"name": name, "q": query, "field": where, "page": page}, quote_via=quote)


def searchForm(name, query="", where="all"):
    """The search box of a folder (a GET form: a search changes nothing)."""
    options = join(element("option", FIELD_LABELS[f], value=f, selected=f == where)
                   for f in FIELDS)
    return element("form", join([
        element("input", type="hidden", name="name", value=name),
        element("input", type="search", name="q", value=query, aria_label="Search",
                placeholder=f"Search {isolatedText(name)}", maxlength=200),
        element("select", options, name="field", aria_label="Search in"),
        element("button", "Search", type="submit")]),
        method="get", action=SEARCH_PATH, class_="search", role="search")


def _postForm(csrf, action, fields, button, **extra):
    hidden = element("input", type="hidden", name="csrf", value=csrf)
    return element("form", join([hidden, fields, element("button", button, type="submit")]),
                   method="post", action=action, **extra)


def emptyForm(csrf, name):
    return _postForm(csrf, FOLDERS_PATH + "/empty",
                     element("input", type="hidden", name="name", value=name),
                     join(["Empty ", isolate(name)]), class_="empty")


class SearchTurns:
    """Turns for searches: L{MAX_SEARCHES} in all, one per user."""

    def __init__(self, size=MAX_SEARCHES):
        self.all = defer.DeferredSemaphore(size)
        self.users = {}

    def run(self, user, f, *args):
        """A Deferred of C{f(*args)}, called in C{user}'s turn and a free slot's."""
        lock = self.users.setdefault(user, defer.DeferredLock())

        def done(result):
            if not lock.locked and not lock.waiting:
                self.users.pop(user, None)
            return result

        return lock.run(self.all.run, f, *args).addBoth(done)


# -- routes (methods of WebmailApp) -----------------------------------------------

@defer.inlineCallbacks
def searchPage(self, request):
    session, refused = yield self._user(request)
    if session is None:
        return refused
    name, query, where = _arg(request, "name"), _arg(request, "q"), _arg(request, "field")
    pageArg = _arg(request, "page")
    page = min(pages._number(pageArg) or 0, 1000)
    folders = yield self.admin.inThread(self.mail.folders, session.user)
    uses = yield self.admin.inThread(self.mail.store.specialUses, session.user)

    def run():
        return search(self.mail._mailbox(session.user, name), query, where, page)

    try:
        found = yield self.searchTurns.run(session.user, self.admin.inThread, run)
    except KeyError:
        return self._notFound(request, session)
    except ValueError as e:
        found, problem = None, str(e)
    parts = [element("p", element("a", join(["\u2190 ", isolate(name)]),
                                  href=pages.folderURL(name))),
             searchForm(name, query, where if where in FIELDS else "all")]
    if found is None:
        parts.append(element("p", problem))
    else:
        listing = self._messageList(found.name, found.rows)
        back = searchURL(found.name, query, where, found.page)
        parts.append(element("form", join([
            self._actions(session.csrf, found.name, folders, back=back,
                          inJunk=JUNK in uses.get(found.name, ())), listing]),
            method="post", action=pages.HOME + "action", class_="message-actions"))
        paging = []
        if found.page > 0:
            paging.append(element("a", "\u2190 Newer",
                                  href=searchURL(found.name, query, where, found.page - 1),
                                  rel="prev"))
        paging.append(element("span", f"Page {found.page + 1}"))
        if found.more:
            paging.append(element("a", "Older \u2192",
                                  href=searchURL(found.name, query, where, found.page + 1),
                                  rel="next"))
        parts.append(element("div", join(paging), class_="paging"))
    content = element("div", join([
        self._folderList(folders, name),
        element("section", join(parts), class_="messages")]), class_="webmail")
    return self._answer(request, join(["Search ", isolate(name)]), content, session,
                        withScript=True)


@defer.inlineCallbacks
def foldersPage(self, request):
    session, refused = yield self._user(request)
    if session is None:
        return refused
    user = session.user
    folders = yield self.admin.inThread(self.mail.folders, user)
    uses = yield self.admin.inThread(self.mail.store.specialUses, user)
    csrf = session.csrf
    rows = [element("tr", join(element("th", h) for h in ("Folder", "Messages", "Rename",
                                                            "Delete")))]
    for name, unread, total in folders:
        special = uses.get(name, frozenset())
        nameField = element("input", type="hidden", name="name", value=name)
        if name == "INBOX":
            rename = remove = ""
        else:
            rename = _postForm(csrf, FOLDERS_PATH + "/rename", join([
                nameField, element("input", type="text", name="newname", value=name,
                                   required=True, aria_label=f"New name for {name}")]),
                "Rename")
            confirm = ""
            if special & PROTECTED_USES:
                confirm = element("label", join([
                    element("input", type="checkbox", name="confirm", value="1"),
                    " yes, delete this special folder"]))
            remove = _postForm(csrf, FOLDERS_PATH + "/delete", join([nameField, confirm]),
                               "Delete")
        counts = f"{total} ({unread} unread)"
        if special & EMPTIED_USES and total:
            counts = join([counts, emptyForm(csrf, name)])
        label = join([element("a", isolate(name), href=pages.folderURL(name)),
                      element("small", " (special folder)") if special else ""])
        rows.append(element("tr", join([element("td", label), element("td", counts),
                                        element("td", rename), element("td", remove)]),
                            data_folder=name))
    create = _postForm(csrf, FOLDERS_PATH + "/create",
                       field("New folder (use / for a subfolder)", "name"), "Create",
                       class_="create")
    content = join([element("p", element("a", "\u2190 Mail", href=pages.HOME)), create,
                    element("table", join(rows), class_="manage")])
    return self._answer(request, "Folders", content, session)


def _folderAction(self, request, operation, *names):
    """A POST on the folders page: C{operation(store, user, *values of names)}."""
    values = [_arg(request, n) for n in names]

    def act(session):
        return self.admin.inThread(operation, self.mail.store, session.user, *values)

    return self.admin.postAction(request, FOLDERS_PATH, act, admin=False)


def createFolder(self, request):
    return _folderAction(self, request, folderOps.createFolder, "name")


def renameFolder(self, request):
    return _folderAction(self, request, folderOps.renameFolder, "name", "newname")


def deleteFolder(self, request):
    confirmed = _arg(request, "confirm") == "1"

    def delete(store, user, name):
        return folderOps.deleteFolder(store, user, name, confirmed)

    return _folderAction(self, request, delete, "name")


def emptyFolder(self, request):
    name = _arg(request, "name")

    def act(session):
        return self.admin.inThread(folderOps.emptyFolder, self.mail.store, session.user, name)

    return self.admin.postAction(request, pages.folderURL(name), act, admin=False)


@defer.inlineCallbacks
def liveState(self, request):
    """
    GET: C{{"state": token}} of folder C{name} (L{folderOps.state}), for
    the page's poll; 403 (no redirect) when not logged in.
    """
    session, refused = yield self._user(request)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Type", b"application/json")
    if session is None:
        request.setResponseCode(403)
        request.responseHeaders.removeHeader(b"Location")
        return b'{"state": null}'
    token = yield self.admin.inThread(folderOps.state, self.mail.store, session.user,
                                      _arg(request, "name"))
    return json.dumps({"state": token}).encode("ascii")


def scriptFile(self, request):
    request.setHeader(b"Content-Type", b"text/javascript; charset=utf-8")
    return script.SCRIPT


ROUTES = (
    (SEARCH_PATH, ["GET"], searchPage),
    (FOLDERS_PATH, ["GET"], foldersPage),
    (FOLDERS_PATH + "/create", ["POST"], createFolder),
    (FOLDERS_PATH + "/rename", ["POST"], renameFolder),
    (FOLDERS_PATH + "/delete", ["POST"], deleteFolder),
    (FOLDERS_PATH + "/empty", ["POST"], emptyFolder),
    (STATE_PATH, ["GET"], liveState),
    (script.PATH, ["GET", "HEAD"], scriptFile),
)
