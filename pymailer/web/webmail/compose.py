"""
The webmail's compose page under C{/webmail/compose}: a new message, a
reply, a reply to all, a forward (inline, or as an attachment), or a
saved draft opened again; sent through L{sending.Submitter} (the
submission path: sender ownership, policy, DKIM, queue) with a copy in
Sent, or saved to Drafts.

The form is C{multipart/form-data} (files), up to the submission size
limit (L{pymailer.web.site.WebSite.uploads}: Twisted leaves the body
alone; it is parsed here, in the thread pool).  A message the form takes
parts from (the forwarded one, the draft) is named by folder and UID and
read as the session's user: another user's is not found (404), whatever
the form says.  Every POST carries the session's CSRF token.

Trust: the whole request; the form's values go through
L{outgoing} (addresses parsed, header values one line).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlencode

from klein import Klein
from twisted.internet import defer

from pymailer.sizes import formatSize
from pymailer.smtp.reply import SMTPReply
from pymailer.web.admin import Refused, _arg, _clientIP
from pymailer.web import formdata
from pymailer.web.html import element, join
from pymailer.web.webmail import content, outgoing
from pymailer.web.webmail.app import (
    NAV, PAGE_POLICY, STYLE_PATH, _number, folderURL, messageURL)
from pymailer.web.webmail.sending import Outbox, Submitter

PATH = "/webmail/compose"
PREFIX = PATH.encode("ascii")
MODES = ("new", "reply", "replyall", "forward", "forwardattach", "draft")
# The whole original, attached as message/rfc822 (a forward as attachment).
WHOLE = "whole"
# Drafts only: how the draft relates to a message of the user's, so that
# sending it later flags that one (mode, UID, folder).
ORIGIN_HEADER = "X-Pymailer-Origin"
NOT_FOUND = "No such message."
# Sends and saves handled at once: each holds a few copies of its message
# (up to the submission size limit) while it is parsed and built; more
# wait their turn, so memory stays bounded however many post at once.
MAX_CONCURRENT = 2
SENT = "Message sent to {n} recipient{s}; a copy is in {folder}."
SAVED = "Draft saved in {folder}."
CHOOSE_FILES_AGAIN = "Attachments chosen before an error must be chosen again."
COMPOSE_STYLE = """\
form.compose { display: grid; gap: .5em; max-width: 60em; }
form.compose label { display: grid; grid-template-columns: 5em 1fr; align-items: baseline; }
form.compose input[type=text], form.compose textarea { width: 100%; box-sizing: border-box; }
form.compose textarea { min-height: 20em; font-family: inherit; }
"""


def composeURL(mode, name=None, uid=None):
    query = {"mode": mode}
    if name is not None:
        query.update(name=name, uid=uid)
    return PATH + "?" + urlencode(query, quote_via=quote)


def parseForm(contentType, body):
    """
    A C{multipart/form-data} body (RFC 7578; a binary file): C{(fields,
    files)}, the fields as C{{name: text}} (the first of each) and the
    non-empty files of the C{attachment} inputs as
    L{outgoing.Attachment}s, in order.

    @raise ValueError: not a multipart body, or one past the bounds of
        L{formdata.parse}.
    """
    fields, files, keep = {}, [], []
    for part in formdata.parse(contentType, body):
        if part.filename is not None or part.name == "attachment":
            if part.data:
                files.append(outgoing.Attachment(part.filename or "attachment",
                                                 part.contentType, part.data))
        elif part.name == "keep":
            keep.append(part.data.decode("utf-8", "replace"))
        else:
            fields.setdefault(part.name, part.data.decode("utf-8", "replace"))
    fields["keep"] = keep
    return fields, files


def attachable(message):
    """
    What of C{message} can go into a new one: C{[(key, filename,
    contentType, size)]}, the key its index in the MIME walk
    (L{content.attachments}: an attached message is one item).
    """
    return [(str(a.part), a.filename, a.contentType, a.size)
            for a in content.attachments(message, content._bodyPart(message))]


def takeParts(octets, keys):
    """
    The parts C{keys} of the message C{octets} (L{attachable}'s keys, or
    L{WHOLE}): C{(attachments, messages)} for L{outgoing.Composed}.
    """
    wanted = set(keys)
    attachments, messages = [], []
    if WHOLE in wanted:
        messages.append(octets)
    message = content.parse(octets)
    for key, _, _, _ in attachable(message):
        if key in wanted:
            contentType, filename, data = content.attachmentPart(message, int(key))
            if contentType == content.MESSAGE:
                messages.append(data)
            else:
                attachments.append(outgoing.Attachment(filename, contentType, data))
    return attachments, messages


def originHeader(mode, name, uid):
    return f"{mode} {uid} {quote(name, safe='')}"


def parseOrigin(value):
    """C{(mode, name, uid)} of a draft's L{ORIGIN_HEADER}, or C{None}."""
    match = re.fullmatch(r"(\w+) (\d{1,10}) (\S+)", outgoing.oneLine(value))
    if match is None or match.group(1) not in MODES:
        return None
    return match.group(1), unquote(match.group(3)), int(match.group(2))


class ComposeApp:
    """
    The compose routes.

    @param admin: the L{pymailer.web.admin.AdminApp} whose sessions these share.
    @param parts: the service's L{pymailer.service.Parts} (policy, events, config).
    """

    app = Klein()

    def __init__(self, admin, parts):
        self.admin = admin
        self.outbox = Outbox(admin.ops.store)
        self.turns = defer.DeferredSemaphore(MAX_CONCURRENT)
        config = parts.config
        self.submitter = Submitter(admin.portal, parts.policy, config.smtp, parts.events,
                                   config.submission.hide_client_ip)

    def _answer(self, request, title, body, session, code=200):
        page = self.admin.answer(request, title, body, code=code, session=session,
                                 current=PATH, nav=NAV, styles=(STYLE_PATH, PATH + "/style.css"))
        request.setHeader(b"Content-Security-Policy", PAGE_POLICY)
        return page

    def _notFound(self, request, session):
        return self._answer(request, "Not found", element("p", NOT_FOUND), session, code=404)

    @app.route(PATH + "/style.css", methods=["GET", "HEAD"])
    def style(self, request):
        request.setHeader(b"Content-Type", b"text/css; charset=utf-8")
        return COMPOSE_STYLE.encode("ascii")

    # -- the form -------------------------------------------------------------

    def _start(self, user, mode, name, uid):
        """
        Blocking: the form's starting fields for C{mode} on message C{uid}
        of folder C{name}: C{(fields, attachable, hidden)}.
        """
        fields = dict(sender=user)
        hidden = {"mode": mode}
        if mode == "new":
            return fields, [], hidden
        octets = self.outbox.octets(user, name, uid)
        message = content.parse(octets)
        hidden.update(source_name=name, source_uid=uid)
        items = attachable(message)
        if mode == "draft":
            fields.update(outgoing.fromDraft(message))
            origin = parseOrigin(content._header(message, ORIGIN_HEADER))
            if origin is not None:
                hidden.update(origin_mode=origin[0], origin_name=origin[1],
                              origin_uid=origin[2])
            if self.outbox.isDraft(user, name):
                hidden["draft"] = uid
            return fields, [(item, True) for item in items], hidden
        hidden.update(origin_mode=mode, origin_name=name, origin_uid=uid)
        if mode in ("reply", "replyall"):
            fields.update(outgoing.reply(message, [user], replyAll=mode == "replyall"))
            return fields, [], hidden
        if mode == "forward":
            fields.update(outgoing.forward(message))
            return fields, [(item, True) for item in items], hidden
        fields.update(outgoing.forwardAsAttachment(message))
        subject = content._header(message, "Subject") or "message"
        return fields, [((WHOLE, subject + ".eml", "message/rfc822", len(octets)), True)], hidden

    def _form(self, session, fields, items, hidden):
        def line(label, name, value, **extra):
            return element("label", join([label, element(
                "input", type="text", name=name, value=value or "", **extra)]))

        hiddenInputs = [element("input", type="hidden", name="csrf", value=session.csrf)]
        hiddenInputs += [element("input", type="hidden", name=k, value=v)
                         for k, v in hidden.items()]
        kept = [element("li", element("label", join([
            element("input", type="checkbox", name="keep", value=key, checked=checked),
            f" {filename} ({contentType}, {formatSize(size)})"])))
            for (key, filename, contentType, size), checked in items]
        parts = hiddenInputs + [
            line("From", "from", fields.get("sender"), autocomplete="email"),
            line("To", "to", fields.get("to"), autocomplete="off"),
            line("Cc", "cc", fields.get("cc"), autocomplete="off"),
            line("Bcc", "bcc", fields.get("bcc"), autocomplete="off"),
            line("Subject", "subject", fields.get("subject")),
            # HTML drops one newline right after <textarea> (HTML 13.2.6.4.7):
            # given here, the text's own first newline stays.
            element("textarea", "\n" + fields.get("body", ""), name="body",
                    aria_label="Text", rows=20),
            element("ul", join(kept), class_="attachments", aria_label="Attachments")
            if kept else "",
            element("label", join(["Attach", element("input", type="file", name="attachment",
                                                     multiple=True)])),
            element("div", join([
                element("button", "Send", type="submit", name="action", value="send"),
                element("button", "Save draft", type="submit", name="action", value="save")]),
                class_="toolbar")]
        return element("form", join(parts), method="post", action=PATH,
                       enctype="multipart/form-data", class_="compose")

    @app.route(PATH, methods=["GET"])
    @defer.inlineCallbacks
    def compose(self, request):
        try:
            session = yield self.admin.loggedIn(request)
        except Refused as e:
            return self.admin.refusal(request, e)
        if session is None:
            return self.admin.redirect(request, "/login")
        mode = _arg(request, "mode") or "new"
        uid = _number(_arg(request, "uid"))
        if mode not in MODES or (mode != "new" and uid is None):
            return self._notFound(request, session)
        try:
            fields, items, hidden = yield self.admin.inThread(
                self._start, session.user, mode, _arg(request, "name"), uid)
        except KeyError:
            return self._notFound(request, session)
        title = {"new": "New message", "draft": "Draft"}.get(mode) or fields.get("subject")
        return self._answer(request, title or "New message",
                            self._form(session, fields, items, hidden), session)

    # -- send and save ----------------------------------------------------------

    def _composed(self, user, fields, files):
        """Blocking: the L{outgoing.Composed} of a posted form, kept parts read."""
        composed = outgoing.Composed(
            sender=fields.get("from", ""), to=fields.get("to", ""), cc=fields.get("cc", ""),
            bcc=fields.get("bcc", ""), subject=fields.get("subject", ""),
            body=fields.get("body", ""), attachments=list(files))
        sourceUID = _number(fields.get("source_uid", ""))
        if sourceUID is not None:
            octets = self.outbox.octets(user, fields.get("source_name", ""), sourceUID)
            attachments, messages = takeParts(octets, fields["keep"])
            composed.attachments[:0] = attachments
            composed.messages += messages
            if fields.get("mode") in ("reply", "replyall", "draft"):
                source = content.parse(octets)
                if fields["mode"] == "draft":
                    start = outgoing.fromDraft(source)
                else:
                    start = outgoing.reply(source, [user])
                composed.inReplyTo, composed.references = start["inReplyTo"], start["references"]
        return composed

    def _origin(self, fields):
        uid = _number(fields.get("origin_uid", ""))
        mode = fields.get("origin_mode", "")
        return (mode, fields.get("origin_name", ""), uid) if uid is not None \
            and mode in MODES else None

    def _save(self, user, fields, files):
        """Blocking: the draft saved (replacing the one edited); C{(folder, uid)}."""
        composed = self._composed(user, fields, files)
        message = outgoing.build(composed, withBcc=True, draft=True)
        origin = self._origin(fields)
        if origin is not None:
            message[ORIGIN_HEADER] = originHeader(*origin)
        return self.outbox.saveDraft(user, outgoing.octetsOf(message),
                                     _number(fields.get("draft", "")))

    def _prepare(self, user, fields, files):
        """Blocking: C{(sender, recipients, octets sent, octets of the Sent copy)}."""
        composed = self._composed(user, fields, files)
        copy = outgoing.octetsOf(outgoing.build(composed, withBcc=True))
        return (outgoing.senderAddress(composed.sender).addr_spec,
                outgoing.recipients(composed), outgoing.withoutBcc(copy), copy)

    def _afterSending(self, user, fields, copy):
        """Blocking: the Sent copy filed, the origin flagged, the draft gone."""
        folder = self.outbox.fileSent(user, copy)
        origin = self._origin(fields)
        if origin is not None:
            self.outbox.markOrigin(user, *origin)
        draft = _number(fields.get("draft", ""))
        if draft is not None:
            self.outbox.discardDraft(user, draft)
        return folder

    def _readForm(self, request):
        """Blocking: L{parseForm} of the request's body."""
        request.content.seek(0)
        return parseForm(request.getHeader(b"Content-Type") or b"", request.content)

    @app.route(PATH, methods=["POST"])
    def post(self, request):
        return self.turns.run(self._post, request)

    @defer.inlineCallbacks
    def _post(self, request):
        try:
            # Not logged in: refused before the body is parsed.
            session = yield self.admin.loggedIn(request)
            if session is None:
                return self.admin.redirect(request, "/login")
            try:
                fields, files = yield self.admin.inThread(self._readForm, request)
            except ValueError:
                fields, files = {"keep": []}, []
            request.args[b"csrf"] = [fields.get("csrf", "").encode("utf-8")]
            session = yield self.admin.loggedIn(request, post=True)
        except Refused as e:
            return self.admin.refusal(request, e)
        user = session.user
        try:
            if fields.get("action") == "save":
                folder, uid = yield self.admin.inThread(self._save, user, fields, files)
                notice = ("ok", SAVED.format(folder=folder))
                back = composeURL("draft", folder, uid)
            else:
                sender, recipients, octets, copy = yield self.admin.inThread(
                    self._prepare, user, fields, files)
                yield self.submitter.submit(user, _clientIP(request), sender, recipients,
                                            octets)
                folder = yield self.admin.inThread(self._afterSending, user, fields, copy)
                n = len(recipients)
                notice = ("ok", SENT.format(n=n, s="" if n == 1 else "s", folder=folder))
                origin = self._origin(fields)
                back = messageURL(origin[1], origin[2]) if origin and origin[0] != "draft" \
                    else folderURL("INBOX")
        except KeyError:
            return self._notFound(request, session)
        except (ValueError, SMTPReply) as e:
            text = e.text if isinstance(e, SMTPReply) else str(e)
            if files:
                text += " " + CHOOSE_FILES_AGAIN
            formFields = dict(fields, sender=fields.get("from", ""))
            items = yield self.admin.inThread(self._keptItems, user, fields)
            page = self._answer(request, "Not sent", join([
                element("p", text, class_="notice error", role="alert"),
                self._form(session, formFields, items, {
                    k: fields[k] for k in ("mode", "source_name", "source_uid", "origin_mode",
                                           "origin_name", "origin_uid", "draft")
                    if fields.get(k)})]), session, code=400)
            return page
        yield self.admin.sessions.setNotice(session, notice)
        return self.admin.redirect(request, back)

    def _keptItems(self, user, fields):
        """Blocking: the source's parts for a form shown again, as they were ticked."""
        uid = _number(fields.get("source_uid", ""))
        if uid is None:
            return []
        try:
            octets = self.outbox.octets(user, fields.get("source_name", ""), uid)
        except KeyError:
            return []
        keep = set(fields["keep"])
        items = attachable(content.parse(octets))
        if fields.get("mode") == "forwardattach":
            items.insert(0, (WHOLE, "message.eml", "message/rfc822", len(octets)))
        return [(item, item[0] in keep) for item in items]
