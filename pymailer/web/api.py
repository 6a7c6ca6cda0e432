"""
A small JSON API under C{/api/}, for scripts (and pages) that would
rather not scrape HTML: the queue, domains, users, aliases (admins), and
C{/api/account}, the logged-in user's own.

It is the admin and account pages in another form: the same sessions,
login (L{AdminApp.startSession}: the same portal, checkers and lockouts as
IMAP), admin check on every request, and operations
(L{pymailer.web.operations}).  A script logs in with C{POST /api/login}
and a JSON body C{{"address": ..., "password": ...}}; the answer sets the
session cookie and carries the session's CSRF token, which every later
POST sends back in the C{X-CSRF-Token} header (or a form's C{csrf} field).

Answers are JSON.  A change answers C{{"message": "..."}} (the line the
page would show).  Errors answer C{{"error": "..."}} with their code: 400
bad input, 401 not logged in (or a failed login, the same whatever the
reason), 403 plain HTTP, no or a wrong CSRF token, not an admin; 404 no
such thing, 409 it exists already or is in the wrong state.

Trust: every body, path segment and header is the client's; bodies are
at most L{pymailer.web.site.MAX_BODY} bytes, values must have the
expected JSON types, and the directory and spool validate them.  An admin
may learn which accounts exist (they list them); nobody else can: the
login and the account endpoints answer the same whatever the address.
C{/api/login} takes JSON only, so that a page of another site cannot post
it from a form (a cross-site JSON POST needs CORS, which we never allow).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time

from klein import Klein
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound

from pymailer.queue import model as queueModel
from pymailer.web.admin import (
    FORM_EXPIRED, LOGIN_FAILED, Refused, _clientIP, splitTargets)
from pymailer.web.operations import QUEUE_ACTIONS, errorText, isConflict

PREFIX = b"/api/"
JSON = b"application/json"
OK, CREATED = 200, 201
BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED, CONFLICT = (
    400, 401, 403, 404, 405, 409)
NOT_LOGGED_IN = "Not logged in."
BAD_CSRF = "Missing or wrong X-CSRF-Token."
JSON_ONLY = "Send the credentials as JSON (Content-Type: application/json)."
# The pages' refusal texts, as a script needs them.
API_TEXT = {FORM_EXPIRED: BAD_CSRF}


class APIError(Exception):
    def __init__(self, code, text):
        Exception.__init__(self, text)
        self.code = code
        self.text = text


def _body(request):
    """
    The request's values: its JSON object (C{Content-Type:
    application/json}), else its form fields (first value of each).
    """
    contentType = (request.getHeader(b"Content-Type") or b"").split(b";")[0].strip().lower()
    if contentType == JSON:
        try:
            body = json.loads(request.content.read().decode("utf-8"))
        except ValueError:
            raise APIError(BAD_REQUEST, "The body is not JSON.")
        if not isinstance(body, dict):
            raise APIError(BAD_REQUEST, "The body is not a JSON object.")
        return body
    return {k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
            for k, v in request.args.items() if v}


def text(body, name, default=None, strip=True):
    """
    C{body[name]} as a string (stripped unless C{strip}: a password is
    taken as typed); without it C{default}, or 400 if that is C{None}.
    """
    value = body.get(name, default)
    if value is None:
        raise APIError(BAD_REQUEST, f"{name!r} is missing.")
    if not isinstance(value, str):
        raise APIError(BAD_REQUEST, f"{name!r} must be a string.")
    return value.strip() if strip else value


def flag(body, name, default=False):
    """C{body[name]} as a boolean (JSON true/false, or a form's "1"/"0")."""
    value = body.get(name, default)
    if isinstance(value, bool):
        return value
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("", "0", "false", "off", "no"):
        return False
    raise APIError(BAD_REQUEST, f"{name!r} must be true or false.")


def addresses(body, name):
    """C{body[name]}: a JSON list of strings, or one string (comma or space separated)."""
    value = body.get(name, [])
    if isinstance(value, str):
        return splitTargets(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise APIError(BAD_REQUEST, f"{name!r} must be a list of addresses.")


def errorCode(error):
    """The HTTP status of a refused operation (see L{pymailer.web.operations})."""
    if isinstance(error, queueModel.NoSuchMessage):
        return NOT_FOUND
    if isinstance(error, queueModel.QueueError):
        return CONFLICT
    if isinstance(error, KeyError):
        return CONFLICT if isConflict(error) else NOT_FOUND
    return BAD_REQUEST


def endpoint(admin=True, post=False):
    """
    An API handler C{f(self, request, session, body, **pathArgs)} (a
    Deferred or a value; C{(code, value)} for another status than 200):
    checked for HTTPS, a logged-in (admin) session and, for C{post}, the
    CSRF token; its value (or error) answered as JSON.
    """
    def decorate(f):
        @functools.wraps(f)
        @defer.inlineCallbacks
        def handler(self, request, **kwargs):
            pages = self.pages
            try:
                try:
                    session = yield (pages._admin(request, post) if admin
                                     else pages.loggedIn(request, post))
                except Refused as e:
                    raise APIError(e.code, API_TEXT.get(e.text, e.text))
                if session is None:
                    raise APIError(UNAUTHORIZED, NOT_LOGGED_IN)
                body = _body(request) if post else {}
                try:
                    result = yield f(self, request, session, body, **kwargs)
                except (ValueError, KeyError, queueModel.QueueError) as e:
                    raise APIError(errorCode(e), errorText(e))
            except APIError as e:
                return answer(request, e.code, {"error": e.text})
            code, value = result if isinstance(result, tuple) else (OK, result)
            if post:
                self.log.info("web api {user}: {done}", user=session.user,
                              done=value.get("message", request.path))
            return answer(request, code, value)
        return handler
    return decorate


def answer(request, code, value):
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", JSON)
    # Account data: never cached (shared computers, proxies).
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(value).encode("utf-8")


def done(message):
    return {"message": message}


def entryJSON(entry, now, full=False):
    """A L{QueueEntry} as JSON: the queue page's columns, or (C{full}) all it has."""
    envelope = entry.envelope
    value = {"queueId": entry.queueId, "state": entry.state, "size": entry.size,
             "nextAttempt": entry.nextAttempt, "age": entry.age(now),
             "sender": None if envelope is None else envelope.sender,
             "recipients": [] if envelope is None else [r.address for r in envelope.recipients],
             "lastError": entry.lastError}
    if full:
        value["envelope"] = None if envelope is None else dataclasses.asdict(envelope)
        if envelope is None and entry.raw is not None:
            # Unreadable: what is stored, as opaque text.
            value["raw"] = entry.raw.decode("utf-8", "replace")
    return value


class APIApp:
    """
    The routes under C{/api/}.

    @param pages: the L{pymailer.web.admin.AdminApp} whose sessions, login
        and operations these share.
    """

    app = Klein()
    log = Logger()

    def __init__(self, pages):
        self.pages = pages
        self.ops = pages.ops
        self.inThread = pages.inThread

    @app.handle_errors(NotFound)
    def notFound(self, request, failure):
        return answer(request, NOT_FOUND, {"error": "No such endpoint."})

    @app.handle_errors(MethodNotAllowed)
    def notAllowed(self, request, failure):
        return answer(request, METHOD_NOT_ALLOWED, {"error": "Method not allowed."})

    # -- logging in and out ---------------------------------------------------

    @app.route("/api/login", methods=["POST"])
    @defer.inlineCallbacks
    def login(self, request):
        try:
            self.pages._requireHTTPS(request)
        except Refused as e:
            return answer(request, e.code, {"error": e.text})
        contentType = (request.getHeader(b"Content-Type") or b"").split(b";")[0].strip()
        if contentType.lower() != JSON:
            return answer(request, BAD_REQUEST, {"error": JSON_ONLY})
        try:
            body = _body(request)
            address = text(body, "address")
            password = text(body, "password", strip=False).encode("utf-8")
        except APIError as e:
            return answer(request, e.code, {"error": e.text})
        try:
            session = yield self.pages.startSession(request, address, password,
                                                    (yield self.pages._session(request)))
        except UnauthorizedLogin:
            # The same answer whatever the reason (unknown, wrong, locked out).
            return answer(request, UNAUTHORIZED, {"error": LOGIN_FAILED})
        isAdmin = yield self.inThread(self.pages.directory.isAdmin, session.user)
        self.log.info("web api login {user} from {ip}", user=session.user,
                      ip=_clientIP(request))
        return answer(request, OK, {"user": session.user, "admin": isAdmin,
                                    "csrf": session.csrf})

    @app.route("/api/logout", methods=["POST"])
    @endpoint(admin=False, post=True)
    def logout(self, request, session, body):
        return self.pages.endSession(request, session).addCallback(
            lambda _: done("logged out"))

    # -- the user's own account -----------------------------------------------

    @app.route("/api/account", methods=["GET"])
    @endpoint(admin=False)
    @defer.inlineCallbacks
    def account(self, request, session, body):
        mailboxes, (targets, keepCopy), isAdmin = yield self.inThread(
            self.ops.account, session.user)
        return {"user": session.user, "admin": isAdmin,
                "mailboxes": [{"name": name, "messages": count, "size": size}
                              for name, count, size in mailboxes],
                "size": sum(size for _, _, size in mailboxes),
                "forwarding": {"targets": targets, "keepCopy": keepCopy}}

    @app.route("/api/account/password", methods=["POST"])
    @endpoint(admin=False, post=True)
    @defer.inlineCallbacks
    def changePassword(self, request, session, body):
        new = text(body, "new", strip=False)
        message = yield self.ops.changePassword(
            session.user, text(body, "current", strip=False).encode("utf-8"), new,
            text(body, "again", new, strip=False), _clientIP(request))
        return done(message)

    @app.route("/api/account/forwarding", methods=["POST"])
    @endpoint(admin=False, post=True)
    @defer.inlineCallbacks
    def setForwarding(self, request, session, body):
        return done((yield self.inThread(self.ops.setForwarding, session.user,
                                         addresses(body, "targets"),
                                         flag(body, "keepCopy", True))))

    # -- admin: domains ---------------------------------------------------------

    @app.route("/api/domains", methods=["GET"])
    @endpoint()
    @defer.inlineCallbacks
    def domains(self, request, session, body):
        return [{"domain": d, "catchAll": c} for d, c in (yield self.inThread(self.ops.domains))]

    @app.route("/api/domains", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def addDomain(self, request, session, body):
        return CREATED, done((yield self.inThread(
            self.ops.addDomain, text(body, "domain"), text(body, "catchAll", ""))))

    @app.route("/api/domains/<domain>/catchall", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def setCatchAll(self, request, session, body, domain):
        return done((yield self.inThread(self.ops.setCatchAll, domain,
                                         text(body, "target", ""))))

    @app.route("/api/domains/<domain>/remove", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def removeDomain(self, request, session, body, domain):
        return done((yield self.inThread(self.ops.removeDomain, domain)))

    # -- admin: users -----------------------------------------------------------

    @app.route("/api/users", methods=["GET"])
    @endpoint()
    @defer.inlineCallbacks
    def users(self, request, session, body):
        return [{"address": u, "admin": a, "disabled": d}
                for u, a, d in (yield self.inThread(self.ops.users))]

    @app.route("/api/users", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def addUser(self, request, session, body):
        return CREATED, done((yield self.inThread(
            self.ops.addUser, text(body, "address"), text(body, "password", strip=False),
            flag(body, "admin"))))

    @app.route("/api/users/<address>/password", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def resetPassword(self, request, session, body, address):
        return done((yield self.inThread(self.ops.resetPassword, address,
                                         text(body, "password", strip=False))))

    @app.route("/api/users/<address>/disable", methods=["POST"])
    @app.route("/api/users/<address>/enable", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def setDisabled(self, request, session, body, address):
        return done((yield self.inThread(self.ops.setDisabled, address,
                                         request.path.endswith(b"/disable"))))

    @app.route("/api/users/<address>/admin", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def setAdmin(self, request, session, body, address):
        return done((yield self.inThread(self.ops.setAdmin, address,
                                         flag(body, "admin", True))))

    @app.route("/api/users/<address>/remove", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def removeUser(self, request, session, body, address):
        return done((yield self.inThread(self.ops.removeUser, address)))

    # -- admin: aliases ---------------------------------------------------------

    @app.route("/api/aliases", methods=["GET"])
    @endpoint()
    @defer.inlineCallbacks
    def aliases(self, request, session, body):
        return [{"alias": a, "targets": list(t)} for a, t in (yield self.inThread(self.ops.aliases))]

    @app.route("/api/aliases", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def addAlias(self, request, session, body):
        return CREATED, done((yield self.inThread(self.ops.addAlias, text(body, "alias"),
                                                  addresses(body, "targets"))))

    @app.route("/api/aliases/<alias>/remove", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def removeAlias(self, request, session, body, alias):
        return done((yield self.inThread(self.ops.removeAlias, alias)))

    # -- admin: the queue -------------------------------------------------------

    @app.route("/api/queue", methods=["GET"])
    @endpoint()
    @defer.inlineCallbacks
    def queue(self, request, session, body):
        state = request.args.get(b"state", [b""])[0].decode("utf-8", "replace")
        entries = yield self.inThread(self.ops.queue, state)
        now = time.time()
        return [entryJSON(entry, now) for entry in entries]

    @app.route("/api/queue/flush", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def flushAll(self, request, session, body):
        return done((yield self.inThread(self.ops.flushAll)))

    @app.route("/api/queue/<queueId>", methods=["GET"])
    @endpoint()
    @defer.inlineCallbacks
    def message(self, request, session, body, queueId):
        entry, lines = yield self.inThread(self.ops.message, queueId)
        value = entryJSON(entry, time.time(), full=True)
        value["headers"] = lines
        return value

    @app.route("/api/queue/<queueId>/<action>", methods=["POST"])
    @endpoint(post=True)
    @defer.inlineCallbacks
    def queueAction(self, request, session, body, queueId, action):
        if action not in QUEUE_ACTIONS:
            raise APIError(NOT_FOUND, "No such endpoint.")
        return done((yield self.inThread(self.ops.queueAction, queueId, action)))
