"""
Login, logout and the admin pages under C{/admin/}: domains, users,
aliases and the mail queue.

The login goes through the same portal, checkers and lockouts as IMAP
(L{guardedLogin} with the listener's L{LoginGuard}); a failed login
answers the same page and status whatever the reason (wrong password,
unknown user, locked out), so nothing tells whether an account exists.
Sessions are server-side (L{pymailer.web.sessions}); every form carries
the session's CSRF token and every POST is refused without it.  The admin
pages are for users marked admin in the directory, checked on every
request (so C{pymailer user admin ADDRESS --off} applies at once); other
users get 403.

Changes go through the same directory and spool functions as the
C{pymailer} command (so they apply in the running server as the command's
do), in the thread pool: they touch SQLite, the disk and argon2.

Trust: every form value and cookie is the client's.  Values are
validated by the directory and the spool (which raise L{ValueError},
L{KeyError} or L{QueueError} with a one-line reason shown back to the
admin), and every value on a page is escaped (L{pymailer.web.html}).
Sessions and logins are for HTTPS only: over plain HTTP these pages
answer 403.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote, urlencode

from klein import Klein
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pymailer import doctor
from pymailer.auth.directory import normaliseAddress
from pymailer.auth.login import guardedLogin
from pymailer.auth.passwords import hashPassword
from pymailer.interfaces import IWebUser
from pymailer.queue import model as queueModel
from pymailer.queue.display import age, clean, headerLines
from pymailer.web.html import (
    CONTENT_SECURITY_POLICY, STYLE, STYLE_PATH, Markup, element, esc, field, form, join, page,
    table)
from pymailer.web.sessions import COOKIE, SessionStore

# One text for every failed login: wrong password, unknown user, locked
# out account or address.
LOGIN_FAILED = "Login failed: wrong address or password, or too many attempts. Try again later."
FORM_EXPIRED = "This form has expired or was not sent from our page. Reload it and try again."
HTTPS_ONLY = "The admin pages are served over HTTPS only."
NOT_ADMIN = "Your account may not use the admin pages."
# The queue ids and header lines `pymailer queue show` shows; the same here.
SHOW_HEADER_LINES = 40

# Every logged-in user's own page (pymailer.web.account).
ACCOUNT_PATH = "/account/"
NAV = (("/admin/domains", "Domains"), ("/admin/users", "Users"),
       ("/admin/aliases", "Aliases"), ("/admin/queue", "Queue"), ("/admin/dns", "DNS"),
       ("/admin/monitoring", "Monitoring"), (ACCOUNT_PATH, "My account"))
QUEUE_ACTIONS = ("flush", "hold", "release", "delete", "bounce")


def buildWebUser(parts):
    """The realm's avatar factory for L{IWebUser}: the address itself."""
    return lambda user: user


def _arg(request, name, strip=True):
    """
    A form or query value as text (C{""} if absent), stripped unless
    C{strip} is false: a password is read as typed (spaces are part of it,
    as at login).
    """
    values = request.args.get(name.encode("ascii"))
    if not values:
        return ""
    value = values[0].decode("utf-8", "replace")
    return value.strip() if strip else value


def _clientIP(request):
    return getattr(request.getClientAddress(), "host", "")


class Refused(Exception):
    """Answer with C{code} and a page saying C{text}."""

    def __init__(self, code, text):
        Exception.__init__(self, text)
        self.code = code
        self.text = text


class AdminApp:
    """
    The routes of the login and admin pages (mounted by
    L{pymailer.web.app.WebApp}).

    @param parts: the service's L{pymailer.service.Parts}.
    """

    app = Klein()
    log = Logger()

    def __init__(self, parts, sessions=None):
        self.reactor = parts.reactor
        self.threadpool = parts.threadpool
        self.portal = parts.portal
        self.guard = parts.guard
        self.directory = parts.directory
        self.store = parts.store
        self.spool = parts.spool
        self.config = parts.config
        self.resolver = parts.resolver
        self.sessions = sessions if sessions is not None else SessionStore(parts.reactor)

    def inThread(self, f, *args, **kwargs):
        return deferToThreadPool(self.reactor, self.threadpool, f, *args, **kwargs)

    # -- plumbing -------------------------------------------------------------

    def answer(self, request, title, content, code=200, session=None, current=None,
                nav=NAV):
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY)
        # Pages with account data are never cached (shared computers, back button).
        request.setHeader(b"Cache-Control", b"no-store")
        notice = session.popNotice() if session is not None else None
        return page(title, content, csrf=session.csrf if session and session.user else None,
                    current=current, notice=notice, nav=nav)

    def refusal(self, request, refused, session=None):
        return self.answer(request, "Not allowed", element("p", refused.text),
                            code=refused.code, session=session)

    def _setCookie(self, request, session):
        # RFC 6265 §4.1.2.5/6 Secure, HttpOnly; SameSite=Strict: no other
        # site's page can send a request that carries it.
        request.addCookie(COOKIE, session.id.encode("ascii"), path=b"/", secure=True,
                          httpOnly=True, sameSite=b"strict")

    def _session(self, request):
        return self.sessions.get(request.getCookie(COOKIE))

    def _requireHTTPS(self, request):
        if not request.isSecure():
            raise Refused(403, HTTPS_ONLY)

    def loggedIn(self, request, post=False):
        """
        The session of a logged-in user (any user: the account pages).

        @raise Refused: plain HTTP (403), a POST without this session's
            CSRF token (403).
        @return: the session, or C{None} if not logged in (the caller
            redirects to the login page).
        """
        self._requireHTTPS(request)
        session = self._session(request)
        if post and (session is None or not session.csrfMatches(_arg(request, "csrf"))):
            raise Refused(403, FORM_EXPIRED)
        if session is None or session.user is None:
            return None
        return session

    @defer.inlineCallbacks
    def _admin(self, request, post=False):
        """
        The session of a logged-in admin: L{loggedIn}, and also refused
        (403) if the user is not an admin.
        """
        session = self.loggedIn(request, post)
        if session is None:
            return None
        if not (yield self.inThread(self.directory.isAdmin, session.user)):
            raise Refused(403, NOT_ADMIN)
        return session

    def redirect(self, request, location):
        request.setResponseCode(303)
        request.setHeader(b"Location", location.encode("ascii"))
        return b""

    @defer.inlineCallbacks
    def _adminPage(self, request, title, current, render):
        """GET: C{render(session)} (a Deferred of markup) for an admin."""
        try:
            session = yield self._admin(request)
        except Refused as e:
            return self.refusal(request, e, self._session(request))
        if session is None:
            return self.redirect(request, "/login")
        content = yield render(session)
        return self.answer(request, title, content, session=session, current=current)

    def _adminAction(self, request, back, action, *args):
        """
        POST: run the blocking C{action(*args)} in the thread pool for an
        admin; its text (or its error's) is shown on the page at C{back}.
        """
        return self.postAction(request, back, lambda session: self.inThread(action, *args))

    @defer.inlineCallbacks
    def postAction(self, request, back, action, admin=True):
        """
        POST: C{action(session)} (a Deferred of the text to show) for a
        logged-in admin (any logged-in user unless C{admin}); its text, or
        its L{ValueError}'s, L{KeyError}'s or L{QueueError}'s, is shown on
        the page at C{back}.
        """
        try:
            session = yield (self._admin(request, post=True) if admin
                             else self.loggedIn(request, post=True))
        except Refused as e:
            return self.refusal(request, e)
        if session is None:
            return self.redirect(request, "/login")
        try:
            done = yield action(session)
        except (ValueError, KeyError, queueModel.QueueError) as e:
            text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            session.notice = ("error", " ".join(str(text).split()))
        else:
            self.log.info("web {user}: {done}", user=session.user, done=done)
            session.notice = ("ok", done)
        return self.redirect(request, back)

    # -- login ----------------------------------------------------------------

    @app.route(STYLE_PATH, methods=["GET", "HEAD"])
    def style(self, request):
        request.setHeader(b"Content-Type", b"text/css; charset=utf-8")
        return STYLE

    def _loginPage(self, request, session, error=None, code=200):
        content = join([
            element("p", error, class_="notice error", role="alert") if error else "",
            form("/login", session.csrf, join([
                field("Address", "address", autocomplete="username", autofocus=True),
                field("Password", "password", type="password",
                      autocomplete="current-password")]), "Log in")])
        return self.answer(request, "Log in", element("div", content, class_="login"),
                            code=code)

    @app.route("/login", methods=["GET"])
    def loginForm(self, request):
        try:
            self._requireHTTPS(request)
        except Refused as e:
            return self.refusal(request, e)
        session = self._session(request)
        if session is None:
            # A session before login, for the login form's CSRF token.
            session = self.sessions.new()
            self._setCookie(request, session)
        return self._loginPage(request, session)

    @app.route("/login", methods=["POST"])
    @defer.inlineCallbacks
    def login(self, request):
        try:
            self._requireHTTPS(request)
        except Refused as e:
            return self.refusal(request, e)
        session = self._session(request)
        if session is None or not session.csrfMatches(_arg(request, "csrf")):
            return self.refusal(request, Refused(403, FORM_EXPIRED))
        credentials = UsernamePassword(_arg(request, "address").encode("utf-8"),
                                       request.args.get(b"password", [b""])[0])
        try:
            _, user, logout = yield guardedLogin(
                self.portal, self.guard, _clientIP(request), credentials, IWebUser, "web")
        except UnauthorizedLogin:
            # LoginBlocked too: the same answer whatever the reason.
            return self._loginPage(request, session, LOGIN_FAILED, code=403)
        logout()
        # A new id at login (no session fixation); the old one is gone.
        self.sessions.end(session)
        session = self.sessions.new(user)
        self._setCookie(request, session)
        admin = yield self.inThread(self.directory.isAdmin, user)
        return self.redirect(request, "/admin/" if admin else ACCOUNT_PATH)

    @app.route("/logout", methods=["POST"])
    def logout(self, request):
        try:
            self._requireHTTPS(request)
        except Refused as e:
            return self.refusal(request, e)
        session = self._session(request)
        if session is None or not session.csrfMatches(_arg(request, "csrf")):
            return self.refusal(request, Refused(403, FORM_EXPIRED))
        self.sessions.end(session)
        request.addCookie(COOKIE, b"", path=b"/", secure=True, httpOnly=True,
                          sameSite=b"strict", max_age=b"0")
        return self.redirect(request, "/login")

    # -- admin: domains -------------------------------------------------------

    @app.route("/admin/", methods=["GET"])
    @app.route("/admin", methods=["GET"])
    def index(self, request):
        return self._adminPage(request, "Administration", None, self._index)

    def _index(self, session):
        return defer.succeed(element("ul", join(
            element("li", element("a", label, href=path)) for path, label in NAV)))

    @app.route("/admin/domains", methods=["GET"])
    def domains(self, request):
        return self._adminPage(request, "Domains", "/admin/domains", self._domains)

    def _listDomains(self):
        return [(d, self.directory.catchAll(d)) for d in self.directory.listDomains()]

    @defer.inlineCallbacks
    def _domains(self, session):
        rows = []
        for domain, catchAll in (yield self.inThread(self._listDomains)):
            rows.append([
                domain,
                form("/admin/domains/catchall", session.csrf, join([
                    element("input", type="hidden", name="domain", value=domain),
                    element("input", name="target", value=catchAll or "",
                            placeholder="none", **{"aria-label": f"catch-all of {domain}"})]),
                     "Set", class_="inline"),
                form("/admin/domains/remove", session.csrf,
                     element("input", type="hidden", name="domain", value=domain),
                     "Remove", class_="inline"),
            ])
        return join([
            table(["Domain", "Catch-all (empty: none)", ""], rows) if rows
            else element("p", "No domains yet."),
            element("fieldset", join([
                element("legend", "Add a domain"),
                form("/admin/domains/add", session.csrf, join([
                    field("Domain", "domain"),
                    field("Catch-all", "catchall", required=False)]), "Add domain")])),
        ])

    @app.route("/admin/domains/add", methods=["POST"])
    def addDomain(self, request):
        domain, catchAll = _arg(request, "domain"), _arg(request, "catchall") or None

        def add():
            self.directory.addDomain(domain, catchAll=catchAll)
            return f"added domain {domain}"

        return self._adminAction(request, "/admin/domains", add)

    @app.route("/admin/domains/remove", methods=["POST"])
    def removeDomain(self, request):
        domain = _arg(request, "domain")

        def remove():
            self.directory.removeDomain(domain)
            return f"removed domain {domain} with its users and aliases (mail on disk is kept)"

        return self._adminAction(request, "/admin/domains", remove)

    @app.route("/admin/domains/catchall", methods=["POST"])
    def setCatchAll(self, request):
        domain, target = _arg(request, "domain"), _arg(request, "target") or None

        def change():
            self.directory.setCatchAll(domain, target)
            return f"catch-all of {domain}: {target or 'none'}"

        return self._adminAction(request, "/admin/domains", change)

    # -- admin: users ---------------------------------------------------------

    @app.route("/admin/users", methods=["GET"])
    def users(self, request):
        return self._adminPage(request, "Users", "/admin/users", self._users)

    def _listUsers(self):
        return [(u, self.directory.isAdmin(u), self.directory.isDisabled(u))
                for u in self.directory.listUsers()]

    @defer.inlineCallbacks
    def _users(self, session):
        rows = []
        for user, admin, disabled in (yield self.inThread(self._listUsers)):
            hidden = element("input", type="hidden", name="address", value=user)
            rows.append([
                user, ", ".join(mark for mark, on in (("admin", admin), ("disabled", disabled))
                                if on),
                form("/admin/users/enable" if disabled else "/admin/users/disable",
                     session.csrf, hidden, "Enable" if disabled else "Disable",
                     class_="inline"),
                form("/admin/users/password", session.csrf, join([
                    hidden, element("input", type="password", name="password", required=True,
                                    autocomplete="new-password",
                                    **{"aria-label": f"new password for {user}"})]),
                     "Reset password", class_="inline"),
                form("/admin/users/remove", session.csrf, hidden, "Remove", class_="inline"),
            ])
        return join([
            table(["User", "", "Logins", "Password", ""], rows) if rows
            else element("p", "No users yet."),
            element("fieldset", join([
                element("legend", "Add a user"),
                form("/admin/users/add", session.csrf, join([
                    field("Address", "address"),
                    field("Password", "password", type="password",
                          autocomplete="new-password")]), "Add user")])),
        ])

    @app.route("/admin/users/add", methods=["POST"])
    def addUser(self, request):
        address, password = _arg(request, "address"), _arg(request, "password", strip=False)

        def add():
            if not password:
                raise ValueError("empty password refused")
            # As `pymailer user add`: the account, then its mailboxes, so
            # the first LIST shows INBOX, Sent, Drafts...
            self.directory.addUser(address, hashPassword(password))
            normalised = normaliseAddress(address)
            self.store.createUser(normalised)
            return f"added user {normalised}"

        return self._adminAction(request, "/admin/users", add)

    @app.route("/admin/users/password", methods=["POST"])
    def resetPassword(self, request):
        address, password = _arg(request, "address"), _arg(request, "password", strip=False)

        def change():
            if not password:
                raise ValueError("empty password refused")
            self.directory.setPasswordHash(address, hashPassword(password))
            return f"changed password of {address}"

        return self._adminAction(request, "/admin/users", change)

    @app.route("/admin/users/disable", methods=["POST"])
    @app.route("/admin/users/enable", methods=["POST"])
    def disableUser(self, request):
        address = _arg(request, "address")
        disable = request.path.endswith(b"/disable")

        def change():
            self.directory.setDisabled(address, disable)
            return (f"disabled {address}: it may not log in; its mail is still delivered"
                    if disable else f"enabled {address}: it may log in again")

        return self._adminAction(request, "/admin/users", change)

    @app.route("/admin/users/remove", methods=["POST"])
    def removeUser(self, request):
        address = _arg(request, "address")

        def remove():
            self.directory.removeUser(address)
            return f"removed user {address} (mail on disk is kept)"

        return self._adminAction(request, "/admin/users", remove)

    # -- admin: aliases -------------------------------------------------------

    @app.route("/admin/aliases", methods=["GET"])
    def aliases(self, request):
        return self._adminPage(request, "Aliases", "/admin/aliases", self._aliases)

    @defer.inlineCallbacks
    def _aliases(self, session):
        rows = [[alias, ", ".join(targets),
                 form("/admin/aliases/remove", session.csrf,
                      element("input", type="hidden", name="alias", value=alias),
                      "Remove", class_="inline")]
                for alias, targets in (yield self.inThread(self.directory.listAliases))]
        return join([
            table(["Alias", "Targets", ""], rows) if rows else element("p", "No aliases yet."),
            element("fieldset", join([
                element("legend", "Add an alias (or targets to one)"),
                form("/admin/aliases/add", session.csrf, join([
                    field("Alias", "alias"),
                    field("Targets (comma or space separated)", "targets")]),
                     "Add alias")])),
        ])

    @app.route("/admin/aliases/add", methods=["POST"])
    def addAlias(self, request):
        alias = _arg(request, "alias")
        targets = _arg(request, "targets").replace(",", " ").split()

        def add():
            self.directory.addAlias(alias, targets)
            return f"{alias} -> {', '.join(self.directory.aliasTargets(alias))}"

        return self._adminAction(request, "/admin/aliases", add)

    @app.route("/admin/aliases/remove", methods=["POST"])
    def removeAlias(self, request):
        alias = _arg(request, "alias")

        def remove():
            self.directory.removeAlias(alias)
            return f"removed alias {alias}"

        return self._adminAction(request, "/admin/aliases", remove)

    # -- admin: the queue -----------------------------------------------------

    @app.route("/admin/queue", methods=["GET"])
    def queue(self, request):
        state = _arg(request, "state")
        if state not in queueModel.STATES:
            state = ""
        return self._adminPage(request, "Mail queue", "/admin/queue",
                               lambda session: self._queue(session, state))

    @defer.inlineCallbacks
    def _queue(self, session, state):
        entries = yield self.inThread(self.spool.listMessages, (state,) if state else None)
        now = time.time()
        filters = join(
            [element("a", "all", href="/admin/queue"), " "]
            + [join([element("a", s, href="/admin/queue?" + urlencode({"state": s})), " "])
               for s in queueModel.STATES])
        rows = []
        for entry in entries:
            envelope = entry.envelope
            link = element("a", entry.queueId, href="/admin/queue/" + quote(entry.queueId))
            if envelope is None:
                rows.append([link, entry.state, entry.size, "", "(unreadable envelope)", "", ""])
                continue
            rows.append([
                link, entry.state, "-" if entry.size is None else entry.size,
                age(entry.age(now)), f"<{clean(envelope.sender)}>",
                ", ".join(clean(r.address) for r in envelope.recipients),
                clean(entry.lastError or ""),
            ])
        flushAll = form("/admin/queue/flush", session.csrf, "", "Flush all deferred mail",
                        class_="inline")
        return join([
            element("p", join(["Show: ", filters])),
            table(["Queue id", "State", "Size", "Age", "Sender", "Recipients", "Last error"],
                  rows) if rows else element("p", "No messages."),
            flushAll,
        ])

    @app.route("/admin/queue/flush", methods=["POST"])
    def flushAll(self, request):
        def flush():
            n = len(self.spool.flush(None))
            return f"{n} deferred message{'' if n == 1 else 's'} due now"

        return self._adminAction(request, "/admin/queue", flush)

    @app.route("/admin/queue/<queueId>", methods=["GET"])
    def showMessage(self, request, queueId):
        return self._adminPage(request, f"Message {queueId}", "/admin/queue",
                               lambda session: self._message(session, queueId))

    def _readMessage(self, queueId):
        entry = self.spool.show(queueId)
        try:
            with self.spool.openData(queueId) as f:
                lines = headerLines(f, SHOW_HEADER_LINES)
        except queueModel.NoSuchMessage:
            lines = None
        return entry, lines

    @defer.inlineCallbacks
    def _message(self, session, queueId):
        # Rendered from the typed QueueEntry and Envelope only: how a
        # backend stores an envelope (a JSON file, SQL columns) is its own
        # business.  entry.raw is shown as opaque text when nothing else
        # could be read, never parsed.
        try:
            entry, lines = yield self.inThread(self._readMessage, queueId)
        except queueModel.QueueError as e:
            return element("p", str(e), class_="notice error")
        now = time.time()

        def when(t):
            return f"{age(now - t)} ago" if t <= now else f"in {age(t - now)}"

        def text(value):
            return "" if value is None else clean(value)

        def fields(obj, skip=()):
            return [(name, value) for name, value in vars(obj).items() if name not in skip]

        envelope = entry.envelope
        if envelope is None:
            recipients = element("p", "(unreadable envelope)")
            stored = (clean(entry.raw.decode("utf-8", "replace")) if entry.raw is not None
                      else "(nothing stored)")
            details = join([element("p", "The envelope cannot be read; as stored:"),
                            element("pre", stored)])
        else:
            recipients = table(
                ["Recipient", "State", "Attempts", "Next attempt", "Last error", "Other"],
                [[text(r.address), r.state, r.attempts,
                  when(r.nextAttempt) if r.state == queueModel.PENDING and r.nextAttempt
                  else "",
                  text(r.lastError),
                  "; ".join(f"{name}: {text(value)}" for name, value in fields(
                      r, ("index", "address", "state", "attempts", "nextAttempt",
                          "lastError")) if value not in (None, False, ""))]
                 for r in envelope.recipients])
            rows = [["queue id", entry.queueId], ["state", entry.state],
                    ["size", "" if entry.size is None else f"{entry.size} bytes"],
                    ["next attempt" if entry.state == queueModel.DEFERRED else "since",
                     when(entry.nextAttempt)]]
            for name, value in fields(envelope, ("queueId", "recipients", "session",
                                                 "headers")):
                rows.append([name, when(value) if name == "receivedAt" else text(value)])
            rows.extend([f"session.{name}", text(value)]
                        for name, value in fields(envelope.session))
            rows.append(["headers added", element("pre", "\n".join(
                clean(line) for line in envelope.headers.splitlines()))
                if envelope.headers else ""])
            details = table(["Field", "Value"], rows)
        actions = join(
            form(f"/admin/queue/{quote(queueId)}/{action}", session.csrf, "",
                 action.capitalize(), class_="inline") for action in QUEUE_ACTIONS)
        headers = (element("pre", "\n".join(line.replace("\t", " " * 8) for line in lines))
                   if lines is not None else element("p", "(no message data)"))
        return join([
            element("p", join(["State: ", element("strong", entry.state)])),
            element("p", actions),
            element("h2", "Recipients"), recipients,
            element("h2", f"Headers (first {SHOW_HEADER_LINES} lines at most)"), headers,
            element("h2", "Envelope"), details,
        ])

    @app.route("/admin/queue/<queueId>/<action>", methods=["POST"])
    def queueAction(self, request, queueId, action):
        if action not in QUEUE_ACTIONS:
            request.setResponseCode(404)
            return b"Not found\n"
        back = "/admin/queue/" + quote(queueId)
        operations = {
            "flush": lambda: (self.spool.flush(queueId),
                              f"{queueId}: due now; the server retries it on its next"
                              " queue scan")[1],
            "hold": lambda: f"{queueId}: on hold (was {self.spool.hold(queueId)})",
            "release": lambda: (self.spool.unhold(queueId),
                                f"{queueId}: released; the server delivers it on its"
                                " next queue scan")[1],
            "delete": lambda: (self.spool.delete(queueId), f"{queueId}: deleted")[1],
            "bounce": lambda: (self.spool.bounce(queueId),
                               f"{queueId}: pending recipients failed; the server reports"
                               " to the sender on its next queue scan")[1],
        }
        if action == "delete":
            back = "/admin/queue"
        return self._adminAction(request, back, operations[action])


    # -- admin: DNS -------------------------------------------------------------

    @app.route("/admin/dns", methods=["GET"])
    def dns(self, request):
        return self._adminPage(request, "DNS records", "/admin/dns", self._dns)

    @defer.inlineCallbacks
    def _dns(self, session):
        domains = yield self.inThread(self.directory.listDomains)
        # Many lookups, each up to [dns] timeout: in the resolver's own
        # pool, as every DNS lookup of the server.
        report = yield deferToThreadPool(self.reactor, self.resolver.threadpool,
                                         doctor.diagnose, self.config, self.resolver, domains)
        bad = sum(not c.good for checks in report.values() for c in checks)
        parts = [element("p", "Every record is published as needed." if not bad else
                         f"{bad} record{'' if bad == 1 else 's'} not as needed"
                         " (the same check: pymailer doctor).",
                         class_="notice " + ("ok" if not bad else "error"))]
        for domain, checks in report.items():
            parts.append(element("h2", domain if domain is not None
                                 else doctor.SERVER.capitalize()))
            parts.append(table(
                ["Status", "Name", "Type", "Needed", "Published now", "Note"],
                [[element("strong", c.status, class_="status-" + c.status), c.name, c.rdtype,
                  c.needed, join(element("div", p) for p in c.published), c.note]
                 for c in checks]))
        return join(parts)


__all__ = ["AdminApp", "buildWebUser", "Markup", "esc", "LOGIN_FAILED"]
