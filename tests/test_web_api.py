"""
The JSON API under /api/ (issue 16): a real server (twistd) on loopback
over TLS, driven as a script would drive it: curl with a cookie jar, and
Python's http client.
"""

import json
import pathlib
import subprocess
from unittest import mock

import pytest

from mailserver import DOMAIN, PASSWORD
from test_web import curl
from test_web_admin import (  # noqa: F401 (fixtures)
    assertIMAPLogin, base, deferredMessage, webServer)
from pymailer.web.admin import LOGIN_FAILED


class Script:
    """curl with a cookie jar and the CSRF token of its login, as a shell script uses the API."""

    def __init__(self, server, tmp_path, name="script"):
        self.root = base(server)
        self.jar = str(tmp_path / f"{name}.cookies")
        self.csrf = None

    def call(self, path, body=None, csrf=True, form=None):
        """C{(status, headers, decoded JSON)} of GET C{path}, or POST with a JSON C{body}."""
        args = ["-k", "-b", self.jar, "-c", self.jar]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        if form is not None:
            for name, value in form.items():
                args += ["--data-urlencode", f"{name}={value}"]
        if csrf and self.csrf and (body is not None or form is not None):
            args += ["-H", f"X-CSRF-Token: {self.csrf}"]
        status, headers, raw = curl(*args, self.root + path)
        assert headers["content-type"] == "application/json", (status, raw)
        return status, headers, json.loads(raw)

    def logIn(self, address, password=PASSWORD):
        status, headers, value = self.call("/api/login",
                                           {"address": address, "password": password})
        if status == 200:
            self.csrf = value["csrf"]
        return status, headers, value


def test_scriptAddsAUserWhoLogsInOverIMAP(webServer, tmp_path):
    """
    A script logs in with JSON, lists the users, creates one, and that user
    logs in over IMAP at once; the cookie it got is the pages' (Secure,
    HttpOnly, SameSite=Strict): otherwise scripting the server means
    scraping HTML, or the API is a second, weaker way in.
    """
    script = Script(webServer, tmp_path)
    status, headers, value = script.logIn(f"alice@{DOMAIN}")
    assert status == 200
    assert value["user"] == f"alice@{DOMAIN}" and value["admin"] is True
    cookie = headers["set-cookie"]
    assert cookie.startswith("__Host-pymailer=") and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower() and "Secure" in cookie

    status, _, users = script.call("/api/users")
    assert status == 200
    assert {"address": f"bob@{DOMAIN}", "admin": False, "disabled": False} in users

    carol = f"carol@{DOMAIN}"
    status, _, value = script.call("/api/users", {"address": carol, "password": " carol pw "})
    assert (status, value) == (201, {"message": f"added user {carol}"})
    assertIMAPLogin(webServer, carol, " carol pw ", refused="carol pw")
    assert any(u["address"] == carol for u in script.call("/api/users")[2])
    # Adding it again: a conflict, said as JSON.
    status, _, value = script.call("/api/users", {"address": carol, "password": "x"})
    assert status == 409 and "exists" in value["error"]

    status, _, value = script.call(f"/api/users/{carol}/password", {"password": "other"})
    assert status == 200
    assertIMAPLogin(webServer, carol, "other", refused=" carol pw ")
    assert script.call(f"/api/users/{carol}/admin", {"admin": True})[0] == 200
    assert script.call(f"/api/users/{carol}/disable", {})[0] == 200
    [row] = [u for u in script.call("/api/users")[2] if u["address"] == carol]
    assert row == {"address": carol, "admin": True, "disabled": True}
    assert "(admin)" in webServer.admin("user", "list").stdout


def test_missingCSRFTokenRefused(webServer, tmp_path):
    """
    A logged-in admin's POST without the X-CSRF-Token header, or with a
    wrong one, gets 403 and changes nothing; the form field works as the
    header does: otherwise another site could make the admin's browser
    call the API.
    """
    script = Script(webServer, tmp_path)
    script.logIn(f"alice@{DOMAIN}")
    status, _, value = script.call("/api/domains", {"domain": "evil.example"}, csrf=False)
    assert status == 403 and value == {"error": "Missing or wrong X-CSRF-Token."}
    token, script.csrf = script.csrf, "guessed"
    assert script.call("/api/domains", {"domain": "evil.example"})[0] == 403
    assert "evil.example" not in webServer.admin("domain", "list").stdout
    script.csrf = None
    status, _, value = script.call("/api/domains", form={"domain": "good.example",
                                                         "csrf": token})
    assert status == 201
    assert {"domain": "good.example", "catchAll": None} in script.call("/api/domains")[2]


def test_nonAdminGets403(webServer, tmp_path):
    """
    A user not marked admin gets 403 from every admin endpoint, reads and
    changes alike, but has their own /api/account: otherwise any mailbox
    owner could run the server through the API.
    """
    script = Script(webServer, tmp_path)
    status, _, value = script.logIn(f"bob@{DOMAIN}")
    assert (status, value["admin"]) == (200, False)
    for path in ("/api/users", "/api/domains", "/api/aliases", "/api/queue"):
        status, _, value = script.call(path)
        assert status == 403 and value == {"error": "Your account may not use the admin pages."}
    assert script.call("/api/users", {"address": f"eve@{DOMAIN}", "password": "x"})[0] == 403
    assert f"eve@{DOMAIN}" not in webServer.admin("user", "list").stdout

    status, _, account = script.call("/api/account")
    assert status == 200 and account["user"] == f"bob@{DOMAIN}"
    assert "INBOX" in [m["name"] for m in account["mailboxes"]]
    status, _, value = script.call("/api/account/forwarding",
                                   {"targets": ["bob@example.net"], "keepCopy": False})
    assert status == 200
    assert script.call("/api/account")[2]["forwarding"] == {
        "targets": ["bob@example.net"], "keepCopy": False}
    status, _, value = script.call("/api/account/password",
                                   {"current": "wrong", "new": "n"})
    assert status == 400 and "current password is wrong" in value["error"]
    assert script.call("/api/account/password",
                       {"current": PASSWORD, "new": "bob's new"})[0] == 200
    assertIMAPLogin(webServer, f"bob@{DOMAIN}", "bob's new", refused=PASSWORD)


def test_loginSameAnswerWhateverTheReason(webServer, tmp_path):
    """
    A wrong password, an unknown address and an unknown domain get the very
    same 401 and body, no cookie, and a form-encoded login is refused:
    otherwise the API would tell a stranger which accounts exist, or a page
    of another site could log a browser in.
    """
    answers = []
    for address, password in ((f"alice@{DOMAIN}", "wrong"), (f"nobody@{DOMAIN}", PASSWORD),
                              ("nobody@example.net", PASSWORD)):
        status, headers, value = Script(webServer, tmp_path).logIn(address, password)
        assert "set-cookie" not in headers
        answers.append((status, value))
    assert answers[0] == (401, {"error": LOGIN_FAILED})
    assert answers[0] == answers[1] == answers[2]
    status, _, value = Script(webServer, tmp_path).call(
        "/api/login", form={"address": f"alice@{DOMAIN}", "password": PASSWORD})
    assert status == 400
    status, _, value = Script(webServer, tmp_path).call("/api/users")
    assert (status, value) == (401, {"error": "Not logged in."})


def test_queueThroughPythonHTTPClient(webServer):
    """
    With Python's http.client: the deferred message is listed (filtered by
    state) with its last error, shown with its headers and recipients,
    held, released and deleted; unknown ids and actions get JSON 404s, an
    action in the wrong state 409: otherwise a script cannot manage the
    queue as `pymailer queue` does.
    """
    import http.client
    from mailserver import insecureTLS

    deferredMessage(webServer)
    connection = http.client.HTTPSConnection("127.0.0.1", webServer.ports["https"],
                                             context=insecureTLS(), timeout=20)
    headers = {}

    def call(method, path, body=None):
        sent = dict(headers)
        if body is not None:
            sent["Content-Type"] = "application/json"
        connection.request(method, path, json.dumps(body) if body is not None else None, sent)
        response = connection.getresponse()
        return response.status, response, json.loads(response.read())

    status, response, value = call("POST", "/api/login",
                                   {"address": f"alice@{DOMAIN}", "password": PASSWORD})
    assert status == 200
    headers["Cookie"] = response.getheader("Set-Cookie").split(";")[0]
    headers["X-CSRF-Token"] = value["csrf"]

    status, _, entries = call("GET", "/api/queue?state=deferred")
    assert status == 200 and len(entries) == 1
    [entry] = entries
    assert entry["recipients"] == ["someone@example.net"] and entry["state"] == "deferred"
    assert call("GET", "/api/queue?state=hold")[2] == []
    assert call("GET", "/api/queue?state=bogus")[0] == 400
    queueId = entry["queueId"]
    status, _, shown = call("GET", f"/api/queue/{queueId}")
    assert status == 200 and any(line.startswith("Subject: stuck") for line in shown["headers"])
    assert shown["envelope"]["recipients"][0]["address"] == "someone@example.net"

    assert call("POST", f"/api/queue/{queueId}/hold", {})[2] == {
        "message": f"{queueId}: on hold (was deferred)"}
    status, _, value = call("POST", f"/api/queue/{queueId}/hold", {})
    assert status == 409 and "error" in value
    assert call("POST", f"/api/queue/{queueId}/release", {})[0] == 200
    assert call("POST", f"/api/queue/{queueId}/explode", {})[0] == 404
    assert call("POST", f"/api/queue/{queueId}/delete", {})[0] == 200
    assert call("GET", f"/api/queue/{queueId}")[0] == 404
    assert call("GET", "/api/no/such/thing")[0] == 404
    assert webServer.admin("queue", "list").stdout == "queue is empty\n"

    assert call("POST", "/api/logout", {})[0] == 200
    assert call("GET", "/api/queue")[0] == 401
    connection.close()


def test_plainHTTPRefused(webServer):
    """
    Over plain HTTP the API answers nothing but a redirect to HTTPS (no
    cookie, no token): otherwise a password and a session cookie would
    cross the network in clear.
    """
    result = subprocess.run(
        ["curl", "-s", "-i", "--max-time", "20", "-H", "Content-Type: application/json",
         "--data-binary", json.dumps({"address": f"alice@{DOMAIN}", "password": PASSWORD}),
         f"http://127.0.0.1:{webServer.ports['http']}/api/login"],
        capture_output=True, timeout=30)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert b"set-cookie" not in head.lower() and b"csrf" not in body
    assert head.split()[1] == b"301"


def test_sessionSharedBetweenTwoServers(makeMailServer, tmp_path):
    """
    Two servers on one data directory: a login through one is accepted by
    the other (the API and the pages, a change's notice shown by the
    other), and a logout through one is refused by both: otherwise with
    two processes (or workers) a user is logged out at random, or stays
    logged in after logging out.
    """
    from test_web_admin import Client

    one = makeMailServer("one", roles=("https", "imaps"), start=False)
    one.admin("user", "admin", f"alice@{DOMAIN}")
    # Two twistd starting on a loaded machine: more than the usual 20 s.
    one.start(timeout=60)
    other = makeMailServer("other", provision=False, start=False, roles=("https",))
    other.dataDir = one.dataDir
    other.writeConfig()
    other.start(timeout=60)

    script = Script(one, tmp_path)
    assert script.logIn(f"alice@{DOMAIN}")[0] == 200
    # The cookie jar is per host, not per port: the same cookie goes to both.
    script.root = base(other)
    status, _, users = script.call("/api/users")
    assert status == 200 and f"bob@{DOMAIN}" in [u["address"] for u in users]
    assert script.call("/api/domains", {"domain": "two.example"})[0] == 201

    pages = Client(base(one))
    pages.logIn(f"alice@{DOMAIN}")
    token = pages.csrf("/admin/domains")
    assert pages.request("/admin/domains/add", {"domain": "three.example",
                                                "csrf": token})[0] == 303
    pages.root = base(other)
    status, _, body = pages.request("/admin/domains")
    assert status == 200 and "added domain three.example" in body

    # Log out through one; the old cookie (kept, as a thief would) opens
    # nothing on either.
    script.root = base(one)
    kept = pathlib.Path(script.jar).read_bytes()
    assert script.call("/api/logout", {})[0] == 200
    pathlib.Path(script.jar).write_bytes(kept)
    for server in (one, other):
        script.root = base(server)
        assert script.call("/api/users") == (401, mock.ANY, {"error": "Not logged in."})
    # The pages' session ends the same way, through the other.
    old = {"Cookie": "; ".join(f"{c.name}={c.value}" for c in pages.jar)}
    assert pages.request("/logout", {"csrf": token})[0] == 303
    for server in (one, other):
        status, headers, _ = Client(base(server)).request("/admin/domains", headers=old)
        assert (status, headers["Location"]) == (303, "/login")


def test_apiLoginFailuresLockOutLikeIMAP(webServer, tmp_path):
    """
    Five wrong passwords for bob through /api/login lock the address out
    for bob: the right password then gets the same 401 there, and IMAP
    refuses it too: otherwise the API would be a way to guess passwords
    without the lockouts of every other login.
    """
    import imaplib
    from mailserver import insecureTLS

    for _ in range(5):
        assert Script(webServer, tmp_path).logIn(f"bob@{DOMAIN}", "guess")[0] == 401
    assert Script(webServer, tmp_path).logIn(f"bob@{DOMAIN}") == (
        401, mock.ANY, {"error": LOGIN_FAILED})
    with imaplib.IMAP4_SSL("127.0.0.1", webServer.ports["imaps"], ssl_context=insecureTLS(),
                           timeout=20) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(f"bob@{DOMAIN}", PASSWORD)
