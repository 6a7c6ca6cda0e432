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

What the pages read and change is done by L{pymailer.web.operations}
(shared with the JSON API), in the thread pool: it touches SQLite, the
disk and argon2.

Trust: every form value and cookie is the client's.  Values are
validated by the directory and the spool (which raise L{ValueError},
L{KeyError} or L{QueueError} with a one-line reason shown back to the
admin), and every value on a page is escaped (L{pymailer.web.html}).
Sessions and logins are for HTTPS only: over plain HTTP these pages
answer 403.
"""

from __future__ import annotations

import time
from urllib.parse import quote, urlencode

from klein import Klein
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pymailer import doctor
from pymailer.auth.login import guardedLogin
from pymailer.interfaces import IWebUser
from pymailer.queue import model as queueModel
from pymailer.queue.display import age, clean
from pymailer.web.html import (
    CONTENT_SECURITY_POLICY, STYLE, STYLE_PATH, Markup, element, esc, field, form, join, page,
    table)
from pymailer.web.operations import QUEUE_ACTIONS, SHOW_HEADER_LINES, Operations, errorText
from pymailer.web.sessions import COOKIE, openSessions

# One text for every failed login: wrong password, unknown user, locked
# out account or address.
LOGIN_FAILED = "Login failed: wrong address or password, or too many attempts. Try again later."
FORM_EXPIRED = "This form has expired or was not sent from our page. Reload it and try again."
HTTPS_ONLY = "The admin pages are served over HTTPS only."
NOT_ADMIN = "Your account may not use the admin pages."
CSRF_HEADER = b"X-CSRF-Token"

# Every logged-in user's own page (pymailer.web.account).
ACCOUNT_PATH = "/account/"
NAV = (("/admin/domains", "Domains"), ("/admin/users", "Users"),
       ("/admin/aliases", "Aliases"), ("/admin/queue", "Queue"), ("/admin/dns", "DNS"),
       ("/admin/monitoring", "Monitoring"), (ACCOUNT_PATH, "My account"))


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


def csrfToken(request):
    """
    The CSRF token a state-changing request carries: the C{X-CSRF-Token}
    header (scripts, L{pymailer.web.api}) or the form's C{csrf} field.
    """
    header = request.getHeader(CSRF_HEADER)
    return header if header is not None else _arg(request, "csrf")


def splitTargets(text):
    """Addresses separated by commas or spaces (the forms' target fields)."""
    return text.replace(",", " ").split()


def _clientIP(request):
    return getattr(request.getClientAddress(), "host", "")


class Refused(Exception):
    """
    Answer with C{code} and a page saying C{text} (with the navigation of
    C{session}, a logged-in user's, if given).
    """

    def __init__(self, code, text, session=None):
        Exception.__init__(self, text)
        self.code = code
        self.text = text
        self.session = session


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
        self.config = parts.config
        self.resolver = parts.resolver
        self.sessions = sessions if sessions is not None else openSessions(parts)
        self.ops = Operations(parts, self.inThread)

    def inThread(self, f, *args, **kwargs):
        return deferToThreadPool(self.reactor, self.threadpool, f, *args, **kwargs)

    # -- plumbing -------------------------------------------------------------

    def answer(self, request, title, content, code=200, session=None, current=None,
                nav=NAV, styles=()):
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY)
        # Pages with account data are never cached (shared computers, back button).
        request.setHeader(b"Cache-Control", b"no-store")
        notice = session.popNotice() if session is not None else None
        return page(title, content, csrf=session.csrf if session and session.user else None,
                    current=current, notice=notice, nav=nav, styles=styles)

    def refusal(self, request, refused, session=None):
        return self.answer(request, "Not allowed", element("p", refused.text),
                            code=refused.code, session=session or refused.session)

    def _setCookie(self, request, session):
        # RFC 6265 §4.1.2.5/6 Secure, HttpOnly; SameSite=Strict: no other
        # site's page can send a request that carries it.
        request.addCookie(COOKIE, session.id.encode("ascii"), path=b"/", secure=True,
                          httpOnly=True, sameSite=b"strict")

    def _session(self, request):
        """A Deferred of the request's live session, or C{None}."""
        return self.sessions.get(request.getCookie(COOKIE))

    def uploader(self, request):
        """
        A Deferred: the user of C{request}'s logged-in session over HTTPS,
        who may send an upload (L{pymailer.web.site.Upload}), or C{None}.
        """
        if not request.isSecure():
            return defer.succeed(None)
        return self.sessions.get(request.getCookie(COOKIE), takeNotice=False).addCallback(
            lambda session: session.user if session is not None else None)

    def _requireHTTPS(self, request):
        if not request.isSecure():
            raise Refused(403, HTTPS_ONLY)

    @defer.inlineCallbacks
    def loggedIn(self, request, post=False):
        """
        The session of a logged-in user (any user: the account pages).

        @raise Refused: plain HTTP (403), a POST without this session's
            CSRF token (403).
        @return: a Deferred of the session, or C{None} if not logged in
            (the caller redirects to the login page).
        """
        if post:
            session = yield self._postedSession(request)
        else:
            self._requireHTTPS(request)
            session = yield self._session(request)
        if session is None or session.user is None:
            return None
        return session

    @defer.inlineCallbacks
    def _postedSession(self, request):
        """
        The session a form was posted from, logged in or not (the login
        form has one too, for its CSRF token).

        @raise Refused: plain HTTP (403); no session, or not this
            session's CSRF token (403).
        """
        self._requireHTTPS(request)
        session = yield self._session(request)
        if session is None or not session.csrfMatches(csrfToken(request)):
            raise Refused(403, FORM_EXPIRED)
        return session

    @defer.inlineCallbacks
    def _admin(self, request, post=False):
        """
        The session of a logged-in admin: L{loggedIn}, and also refused
        (403) if the user is not an admin.
        """
        session = yield self.loggedIn(request, post)
        if session is None:
            return None
        if not (yield self.inThread(self.directory.isAdmin, session.user)):
            # The page still shows the navigation and the logout button.
            raise Refused(403, NOT_ADMIN, session)
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
            return self.refusal(request, e)
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
            notice = ("error", errorText(e))
        else:
            self.log.info("web {user}: {done}", user=session.user, done=done)
            notice = ("ok", done)
        # For the page at `back`, whichever process serves it.
        yield self.sessions.setNotice(session, notice)
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
    @defer.inlineCallbacks
    def loginForm(self, request):
        try:
            self._requireHTTPS(request)
        except Refused as e:
            return self.refusal(request, e)
        session = yield self._session(request)
        if session is None:
            # A session before login, for the login form's CSRF token.
            session = yield self.sessions.new()
            self._setCookie(request, session)
        return self._loginPage(request, session)

    @app.route("/login", methods=["POST"])
    @defer.inlineCallbacks
    def login(self, request):
        try:
            session = yield self._postedSession(request)
        except Refused as e:
            return self.refusal(request, e)
        try:
            session = yield self.startSession(request, _arg(request, "address"),
                                              request.args.get(b"password", [b""])[0], session)
        except UnauthorizedLogin:
            # LoginBlocked too: the same answer whatever the reason.
            return self._loginPage(request, session, LOGIN_FAILED, code=403)
        admin = yield self.inThread(self.directory.isAdmin, session.user)
        return self.redirect(request, "/admin/" if admin else ACCOUNT_PATH)

    @defer.inlineCallbacks
    def startSession(self, request, address, password, old=None):
        """
        Log C{address} in with C{password} (bytes, as typed) through the
        portal, checkers and lockouts (L{guardedLogin}, as IMAP); then a
        new session replaces C{old} (a new id at login: no session
        fixation) and its cookie is set.

        @return: a Deferred of the new session.
        @raise UnauthorizedLogin: whatever the reason (a locked out
            address or account too), after the guard's delay.
        """
        credentials = UsernamePassword(address.encode("utf-8"), password)
        _, user, logout = yield guardedLogin(
            self.portal, self.guard, _clientIP(request), credentials, IWebUser, "web")
        logout()
        if old is not None:
            yield self.sessions.end(old)
        session = yield self.sessions.new(user)
        self._setCookie(request, session)
        return session

    def endSession(self, request, session):
        """
        Log out: a Deferred firing once the session is gone for every
        process; the browser forgets its cookie.
        """
        request.addCookie(COOKIE, b"", path=b"/", secure=True, httpOnly=True,
                          sameSite=b"strict", max_age=b"0")
        return self.sessions.end(session)

    @app.route("/logout", methods=["POST"])
    @defer.inlineCallbacks
    def logout(self, request):
        try:
            session = yield self._postedSession(request)
        except Refused as e:
            return self.refusal(request, e)
        yield self.endSession(request, session)
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

    @defer.inlineCallbacks
    def _domains(self, session):
        rows = []
        for domain, catchAll in (yield self.inThread(self.ops.domains)):
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
        return self._adminAction(request, "/admin/domains", self.ops.addDomain,
                                 _arg(request, "domain"), _arg(request, "catchall"))

    @app.route("/admin/domains/remove", methods=["POST"])
    def removeDomain(self, request):
        return self._adminAction(request, "/admin/domains", self.ops.removeDomain,
                                 _arg(request, "domain"))

    @app.route("/admin/domains/catchall", methods=["POST"])
    def setCatchAll(self, request):
        return self._adminAction(request, "/admin/domains", self.ops.setCatchAll,
                                 _arg(request, "domain"), _arg(request, "target"))

    # -- admin: users ---------------------------------------------------------

    @app.route("/admin/users", methods=["GET"])
    def users(self, request):
        return self._adminPage(request, "Users", "/admin/users", self._users)

    @defer.inlineCallbacks
    def _users(self, session):
        rows = []
        for user, admin, disabled in (yield self.inThread(self.ops.users)):
            hidden = element("input", type="hidden", name="address", value=user)
            rows.append([
                user, ", ".join(mark for mark, on in (("admin", admin), ("disabled", disabled))
                                if on),
                form("/admin/users/enable" if disabled else "/admin/users/disable",
                     session.csrf, hidden, "Enable" if disabled else "Disable",
                     class_="inline"),
                form("/admin/users/unadmin" if admin else "/admin/users/admin",
                     session.csrf, hidden, "Remove admin" if admin else "Make admin",
                     class_="inline"),
                form("/admin/users/password", session.csrf, join([
                    hidden, element("input", type="password", name="password", required=True,
                                    autocomplete="new-password",
                                    **{"aria-label": f"new password for {user}"})]),
                     "Reset password", class_="inline"),
                form("/admin/users/remove", session.csrf, hidden, "Remove", class_="inline"),
            ])
        return join([
            table(["User", "", "Logins", "Admin pages", "Password", ""], rows) if rows
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
        return self._adminAction(request, "/admin/users", self.ops.addUser,
                                 _arg(request, "address"), _arg(request, "password", strip=False))

    @app.route("/admin/users/password", methods=["POST"])
    def resetPassword(self, request):
        return self._adminAction(request, "/admin/users", self.ops.resetPassword,
                                 _arg(request, "address"), _arg(request, "password", strip=False))

    @app.route("/admin/users/disable", methods=["POST"])
    @app.route("/admin/users/enable", methods=["POST"])
    def disableUser(self, request):
        return self._adminAction(request, "/admin/users", self.ops.setDisabled,
                                 _arg(request, "address"), request.path.endswith(b"/disable"))

    @app.route("/admin/users/admin", methods=["POST"])
    @app.route("/admin/users/unadmin", methods=["POST"])
    def setAdmin(self, request):
        return self._adminAction(request, "/admin/users", self.ops.setAdmin,
                                 _arg(request, "address"), request.path.endswith(b"/admin"))

    @app.route("/admin/users/remove", methods=["POST"])
    def removeUser(self, request):
        return self._adminAction(request, "/admin/users", self.ops.removeUser,
                                 _arg(request, "address"))

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
                for alias, targets in (yield self.inThread(self.ops.aliases))]
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
        return self._adminAction(request, "/admin/aliases", self.ops.addAlias,
                                 _arg(request, "alias"), splitTargets(_arg(request, "targets")))

    @app.route("/admin/aliases/remove", methods=["POST"])
    def removeAlias(self, request):
        return self._adminAction(request, "/admin/aliases", self.ops.removeAlias,
                                 _arg(request, "alias"))

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
        entries = yield self.inThread(self.ops.queue, state)
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
        return self._adminAction(request, "/admin/queue", self.ops.flushAll)

    @app.route("/admin/queue/<queueId>", methods=["GET"])
    def showMessage(self, request, queueId):
        return self._adminPage(request, f"Message {queueId}", "/admin/queue",
                               lambda session: self._message(session, queueId))

    @defer.inlineCallbacks
    def _message(self, session, queueId):
        # Rendered from the typed QueueEntry and Envelope only: how a
        # backend stores an envelope (a JSON file, SQL columns) is its own
        # business.  entry.raw is shown as opaque text when nothing else
        # could be read, never parsed.
        try:
            entry, lines = yield self.inThread(self.ops.message, queueId)
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
        back = "/admin/queue" if action == "delete" else "/admin/queue/" + quote(queueId)
        return self._adminAction(request, back, self.ops.queueAction, queueId, action)

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
