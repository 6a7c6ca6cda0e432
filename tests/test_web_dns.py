"""
C{/admin/dns} (issue 16, third step): the checks of C{pymailer doctor} on
the admin's page, against a loopback DNS server, in headless Chromium.
"""

import pytest

from dnsserver import DNSServer
from mailserver import DOMAIN, HOSTNAME, PASSWORD
from test_web_admin import base, browser, logIn, screenshot  # noqa: F401 (fixtures)


@pytest.fixture
def dnsServer():
    with DNSServer({}) as server:
        yield server


@pytest.fixture
def dnsWebServer(makeMailServer, dnsServer):
    server = makeMailServer(
        roles=("https", "submissions", "imaps"), start=False,
        sections={"auth": {"failure_delay": 0},
                  "dns": {"servers": [dnsServer.address], "timeout": 2.0}})
    server.admin("user", "admin", f"alice@{DOMAIN}")
    return server.start()


@pytest.mark.browser
def test_adminSeesDNSChecks(dnsWebServer, dnsServer, browser, tmp_path):
    """
    The DNS page shows each needed record with what DNS publishes: our MX
    ok, another SPF record wrong, a missing DMARC record missing, and that
    the listeners are loopback-only instead of a PTR or blocklist failure,
    with port 25 explained: otherwise the
    admin could not see from the browser why mail to the domain fails.
    """
    from selenium.webdriver.common.by import By
    dnsServer.records.update({
        f"{DOMAIN}.": [("MX", f"10 {HOSTNAME}."), ("TXT", '"v=spf1 a -all"')],
    })
    logIn(browser, dnsWebServer, f"alice@{DOMAIN}", PASSWORD)
    browser.get(base(dnsWebServer) + "/admin/dns")
    assert browser.find_element(By.TAG_NAME, "h1").text == "DNS records"
    rows = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "table tr"):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        if cells:
            rows[(cells[1], cells[2], cells[3].split()[0])] = cells
    assert rows[(f"{DOMAIN}.", "MX", "10")][0] == "ok"
    spf = rows[(f"{DOMAIN}.", "TXT", '"v=spf1')]
    assert spf[0] == "wrong" and spf[4] == "v=spf1 a -all"
    assert rows[(f"_dmarc.{DOMAIN}.", "TXT", '"v=DMARC1;')][0] == "missing"
    assert "bound to loopback" in browser.find_element(By.TAG_NAME, "main").text
    # The blocklists and port 25 are on the page too (loopback: explained).
    assert rows[("zen.spamhaus.org, bl.spamcop.net, b.barracudacentral.org", "A",
                 "not")][0] == "ok"
    port25 = rows[(f"{HOSTNAME}:25", "TCP", "reachable")]
    assert port25[0] == "info" and "cannot reach it" in port25[5]
    assert "not as needed" in browser.find_element(By.CSS_SELECTOR, "p.notice").text
    screenshot(browser, tmp_path, "dns.png")
