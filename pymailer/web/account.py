"""
C{/account/}: every logged-in user's own page.  Change their password,
see their mailboxes (messages and size), set forwarding.

It shares the login, sessions and page plumbing of L{pymailer.web.admin}
(one L{AdminApp}); any logged-in user may use it, admin or not, and only
for their own account (the address is the session's, never the form's).

What it reads and changes is done by L{pymailer.web.operations} (shared
with the JSON API): a password change asks for the current password
through the same portal, checkers and lockouts as a login; mailboxes are
read through the store interface, forwarding is kept by the directory.

Trust: every form value is the client's; the directory validates
addresses, and every value on the page is escaped (L{pymailer.web.html}).
"""

from klein import Klein
from twisted.internet import defer

from pymailer.sizes import formatSize
from pymailer.web import autoconfig
from pymailer.web.admin import ACCOUNT_PATH, Refused, _arg, _clientIP, splitTargets
from pymailer.web.html import element, field, form, join, table

# Routes under this prefix go to this module (pymailer.web.app.Paths).
PREFIX = b"/account/"
ADMIN_NAV = (("/admin/", "Administration"),)
WEBMAIL_NAV = (("/webmail/", "Mail"),)
PROFILE_FILENAME = b"mail.mobileconfig"
NO_PROFILE = "This server has no IMAP or no submission listener to put in a profile."


class AccountApp:
    """
    The routes under C{/account/}.

    @param admin: the L{pymailer.web.admin.AdminApp} whose sessions and
        pages these share.
    """

    app = Klein()

    def __init__(self, admin):
        self.admin = admin
        self.ops = admin.ops

    @defer.inlineCallbacks
    def _user(self, request):
        """
        A Deferred of C{(session, None)} for a logged-in user, else
        C{(None, response)}: the refusal page (plain HTTP) or the redirect
        to the login page.
        """
        admin = self.admin
        try:
            session = yield admin.loggedIn(request)
        except Refused as e:
            return None, admin.refusal(request, e)
        if session is None:
            return None, admin.redirect(request, "/login")
        return session, None

    @app.route("/account/", methods=["GET"])
    @app.route("/account", methods=["GET"])
    @defer.inlineCallbacks
    def page(self, request):
        admin = self.admin
        session, refused = yield self._user(request)
        if session is None:
            return refused
        mailboxes, (targets, keepCopy), isAdmin = yield admin.inThread(
            self.ops.account, session.user)
        (spam, ham), senders = yield admin.inThread(self.ops.spamTraining, session.user)
        csrf = session.csrf
        total = sum(size for _, _, size in mailboxes)
        content = join([
            element("p", join(["Logged in as ", element("strong", session.user)])),
            element("p", join([
                element("a", "Set up this account on an iPhone, iPad or Mac",
                        href=ACCOUNT_PATH + "apple.mobileconfig"),
                " (a configuration profile; it asks for the password)"])),
            element("h2", "Mailboxes"),
            table(["Mailbox", "Messages", "Size"],
                  [[name, count, formatSize(size)] for name, count, size in mailboxes]
                  + [[element("strong", "Total"), sum(c for _, c, _ in mailboxes),
                      formatSize(total)]]),
            element("fieldset", join([
                element("legend", "Change password"),
                form(ACCOUNT_PATH + "password", csrf, join([
                    field("Current password", "current", type="password",
                          autocomplete="current-password"),
                    field("New password", "new", type="password", autocomplete="new-password"),
                    field("New password again", "again", type="password",
                          autocomplete="new-password")]), "Change password")])),
            element("fieldset", join([
                element("legend", "Forwarding"),
                element("p", ("Now forwarding to " + ", ".join(targets)
                              + ("; this mailbox keeps a copy." if keepCopy
                                 else "; no copy is kept here."))
                        if targets else "Not forwarding."),
                form(ACCOUNT_PATH + "forwarding", csrf, join([
                    field("Forward to (empty: stop forwarding)", "target",
                          value=", ".join(targets), required=False),
                    element("label", join([
                        element("input", type="checkbox", name="keep", value="1",
                                checked=keepCopy), " keep a copy in this mailbox"]))]),
                     "Save forwarding")])),
            _spamFilter(csrf, spam, ham, senders),
        ])
        return admin.answer(request, "My account", content, session=session,
                            current=ACCOUNT_PATH,
                            nav=WEBMAIL_NAV + ((ACCOUNT_PATH, "My account"),)
                            + (ADMIN_NAV if isAdmin else ()))

    @app.route("/account/spam/forget", methods=["POST"])
    def forgetSender(self, request):
        kind, value = _arg(request, "kind"), _arg(request, "value")
        return self.admin.postAction(
            request, ACCOUNT_PATH,
            lambda session: self.admin.inThread(
                self.ops.forgetSender, session.user, kind, value),
            admin=False)

    @app.route("/account/spam/reset", methods=["POST"])
    def resetSpamTraining(self, request):
        return self.admin.postAction(
            request, ACCOUNT_PATH,
            lambda session: self.admin.inThread(self.ops.resetSpamTraining, session.user),
            admin=False)

    @app.route("/account/apple.mobileconfig", methods=["GET"])
    @defer.inlineCallbacks
    def appleProfile(self, request):
        """The user's own Apple configuration profile (no password in it)."""
        admin = self.admin
        session, refused = yield self._user(request)
        if session is None:
            return refused
        profile = autoconfig.appleProfile(admin.config, session.user)
        if profile is None:
            return admin.refusal(request, Refused(404, NO_PROFILE), session)
        request.setHeader(b"Content-Type", autoconfig.MOBILECONFIG_TYPE)
        request.setHeader(b"Content-Disposition",
                          b'attachment; filename="' + PROFILE_FILENAME + b'"')
        request.setHeader(b"Cache-Control", b"no-store")
        return profile

    @app.route("/account/password", methods=["POST"])
    def changePassword(self, request):
        current = request.args.get(b"current", [b""])[0]
        new, again = _arg(request, "new", strip=False), _arg(request, "again", strip=False)
        ip = _clientIP(request)
        return self.admin.postAction(
            request, ACCOUNT_PATH,
            lambda session: self.ops.changePassword(session.user, current, new, again, ip),
            admin=False)

    @app.route("/account/forwarding", methods=["POST"])
    def setForwarding(self, request):
        targets = splitTargets(_arg(request, "target"))
        keepCopy = bool(_arg(request, "keep"))
        return self.admin.postAction(
            request, ACCOUNT_PATH,
            lambda session: self.admin.inThread(self.ops.setForwarding, session.user, targets,
                                                keepCopy),
            admin=False)


# How the account page names a sender the filter knows (pymailer.policy.classifier.senderKeys).
SENDER_KINDS = {"address": "Address (SPF or DKIM passed)", "dkim": "DKIM domain",
                "ip": "Sending server"}


def _spamFilter(csrf, spam, ham, senders):
    """
    The account page's spam filter section: what it was trained on (moving
    mail into and out of Junk trains it), the senders it judges by past
    verdicts, each with a button to forget it, and a reset.
    """
    rows = [[SENDER_KINDS.get(kind, kind), value, s, h,
             form(ACCOUNT_PATH + "spam/forget", csrf,
                  join([element("input", type="hidden", name="kind", value=kind),
                        element("input", type="hidden", name="value", value=value)]),
                  "Forget", class_="inline")]
            for kind, value, s, h in senders]
    return element("fieldset", join([
        element("legend", "Spam filter"),
        element("p", f"Trained on {spam} spam and {ham} legitimate messages. "
                     "Move mail into Junk to teach it spam, and out of Junk to teach it "
                     "what is not."),
        table(["Sender", "", "Judged spam", "Judged legitimate", ""], rows) if rows
        else element("p", "It knows no senders yet."),
        form(ACCOUNT_PATH + "spam/reset", csrf, "", "Reset the spam filter's training"),
    ]))
