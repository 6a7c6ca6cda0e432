"""
C{/admin/monitoring} end to end (issue 16, monitoring): a real server
(twistd), mail sent with smtplib, the page read in headless Chromium and
with urllib; the counts survive a restart of the server.

Units (buckets, flushes, the charts) in tests/test_monitoring.py.
"""

import re
import smtplib

import pytest

from mailserver import DOMAIN, PASSWORD
from test_web_admin import (  # noqa: F401 (fixtures)
    Client, base, browser, clickAndLoad, logIn, screenshot)

PAGE = "/admin/monitoring"


@pytest.fixture
def monitoredServer(makeMailServer):
    """A server with SMTP and the web listener; alice is an admin."""
    server = makeMailServer(roles=("https",), start=False,
                            sections={"auth": {"failure_delay": 0}})
    server.admin("user", "admin", f"alice@{DOMAIN}")
    return server.start()


def sendMessage(server, subject):
    """Send one message to bob over SMTP; its queue id, from the 250 reply."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.ehlo("client.example.net")
        client.mail("ann@example.net")
        client.rcpt(f"bob@{DOMAIN}")
        code, reply = client.data(
            f"From: ann@example.net\r\nTo: bob@{DOMAIN}\r\nSubject: {subject}\r\n\r\nhi\r\n")
    assert code == 250, reply
    return re.search(r"queued as (\S+)", reply.decode()).group(1)


def total(html, kind, window="hour"):
    return int(re.search(rf'<span id="total-{kind}-{window}">(\d+)</span>', html).group(1))


@pytest.mark.browser
def test_adminSeesMessageCountedChartedAndFound(monitoredServer, browser, tmp_path):
    """
    The admin notes the received count, a message is sent, and after a
    reload the count is one more, the hour chart's received bars add up
    to one more, and searching for the message's queue id (from the 250
    reply) lists its events: otherwise the monitoring page would not show
    the mail the server handles.
    """
    from selenium.webdriver.common.by import By
    server = monitoredServer
    logIn(browser, server, f"alice@{DOMAIN}", PASSWORD)

    def received():
        count = int(browser.find_element(By.ID, "total-received-hour").text)
        bars = browser.find_elements(
            By.CSS_SELECTOR, "svg:first-of-type rect.bar[data-series='received']")
        assert len(bars) == 12
        return count, sum(int(b.get_attribute("data-value")) for b in bars)

    browser.get(base(server) + PAGE)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Monitoring"
    count, charted = received()

    queueId = sendMessage(server, "counted")
    server.waitForMessages(f"bob@{DOMAIN}", 1)
    browser.refresh()
    assert received() == (count + 1, charted + 1)
    # Drawn: the SVG shows under the page's CSP (no style, no script).
    svg = browser.find_element(By.CSS_SELECTOR, "svg")
    assert svg.size["width"] > 300 and svg.size["height"] > 100

    box = browser.find_element(By.NAME, "q")
    box.send_keys(queueId)
    clickAndLoad(browser, browser.find_element(By.CSS_SELECTOR, f"form[action='{PAGE}'] button"))
    rows = [[c.text for c in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "table tr")]
    found = [r for r in rows if len(r) == 7 and r[2] == queueId]
    assert {r[1].split()[0] for r in found} == {"received", "delivered"}, rows
    assert all(r[4] == f"bob@{DOMAIN}" and r[3] == "ann@example.net" for r in found)
    assert "127.0.0.1" in [r[5] for r in found]
    browser.get(base(server) + PAGE)
    screenshot(browser, tmp_path, "monitoring.png")


def test_countsSurviveRestart(monitoredServer):
    """
    A message received and delivered, a refused recipient and a failed
    login are still counted after the server restarts: otherwise every
    restart (an upgrade) would wipe the monitoring figures.
    """
    server = monitoredServer
    queueId = sendMessage(server, "before restart")
    server.waitForMessages(f"bob@{DOMAIN}", 1)
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.ehlo("client.example.net")
        client.mail("ann@example.net")
        assert client.rcpt(f"nobody@{DOMAIN}")[0] == 550
    assert Client(base(server)).logIn(f"alice@{DOMAIN}", "wrong")[0] == 403
    server.stop()
    server.start()

    client = Client(base(server))
    assert client.logIn(f"alice@{DOMAIN}")[0] == 303
    status, _, html = client.request(PAGE)
    assert status == 200
    assert [total(html, k, "day") for k in ("received", "delivered", "rejected",
                                           "login_failed")] == [1, 1, 1, 1]
    assert "<td>unknown_recipient</td><td>1</td>" in html
    status, _, html = client.request(PAGE + "?q=" + queueId)
    assert html.count(f"<td>{queueId}</td>") == 2
