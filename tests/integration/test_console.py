"""The web console in a real headless browser (Debian's chromium through
chromedriver and Selenium) against a real lab (tests/networks/console.yaml):
the page loads with no console error, shows the matrix and the graph, and a
mode switched on the page reaches the switches, as a ping between VMs of
that pair shows. Saves the screenshot the README shows (docs/console.png)."""
import os
import shutil
import tempfile

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from topologies import probes
from topologies.lab import Lab

from .conftest import NETWORKS

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "console-token-0123456789abcdef"
# Where to save the README's screenshot; unset, the run leaves the tree alone.
SCREENSHOT = os.environ.get("VGUARD_CONSOLE_SCREENSHOT", "")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console-lab")
    (tmp / "token").write_text(TOKEN + "\n")
    with Lab(f"{NETWORKS}/console.yaml", core="uicore",
             controller_args=["--token-file", str(tmp / "token"),
                              "--state-file", str(tmp / "policy.json")]) as running:
        running.pin_neighbours()       # ARP never crosses segments: the pings need no router
        yield running


@pytest.fixture(scope="module")
def browser():
    # Not a skip: a machine without the browser fails (scripts/setup.sh test installs it).
    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "chromium and chromium-driver are missing: run bash scripts/setup.sh test"
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-proxy-server",
                 f"--user-data-dir={profile}", "--window-size=1400,1200"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def errors(driver) -> list:
    """Console entries at SEVERE since the last call (a failed request, an
    exception, a CSP refusal all land there)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait(driver, what, timeout=20):
    """Until what(driver) is true. An element the page redraws meanwhile
    (a poll brought a change) is found again on the next try."""
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)
                         ).until(lambda d: what(d))


def texts(driver, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def cell(driver, a: str, b: str):
    return driver.find_element(By.CSS_SELECTOR, f'#matrix td[data-a="{a}"][data-b="{b}"]')


def reaches(lab, src: str, dst: str) -> bool:
    sent, received = probes.ping(lab.host(src), str(lab.network.vm(dst).ip), count=3)
    return received > 0


def test_the_page_shows_the_matrix_the_graph_and_health_without_errors(lab, browser):
    browser.get(lab.rest_url + "/")
    wait(browser, lambda d: "front" in texts(d, "#matrix th"))
    assert texts(browser, "#matrix tr:first-child th") == ["from \\ to", "front", "back"]
    assert cell(browser, "front", "back").get_attribute("data-mode") == "deny"
    assert cell(browser, "front", "front").get_attribute("data-mode") == "allow"
    graph = "#graph g[data-kind=hypervisor] text"
    wait(browser, lambda d: sorted(texts(d, graph)) == ["ui1", "ui2"])
    vms = sorted(texts(browser, "#graph g[data-kind=vm] text"))
    assert vms == ["back1", "back2", "front1", "front2"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph g[data-kind=firewall]")) == 2
    # Health: both hypervisors connected and in sync, the IDS ports listed.
    rows = wait(browser, lambda d: [r for r in texts(d, "#health tr")[1:] if "yes" in r])
    assert len(rows) == 2 and all(r.split()[2:4] == ["yes", "yes"] for r in rows), rows
    assert texts(browser, "#ready") == ["ready"]
    wait(browser, lambda d: len(texts(d, "#counters tr")) > 3)     # reasons and totals
    flows_listed = "/api/v1/flows" in lab.api("/api/v1/openapi.json")["paths"]
    if flows_listed:      # the newest records, or a word on why there are none
        wait(browser, lambda d: texts(d, "#flows th") or texts(d, "#flows-note")[0])
    else:
        assert texts(browser, "#flows-note")[0].startswith("flow records: not available")
    assert errors(browser) == []


def test_a_mode_switched_on_the_page_reaches_the_switches(lab, browser):
    browser.get(lab.rest_url + "/ui/")
    wait(browser, lambda d: texts(d, "#matrix th"))
    # Read-only until a token is given: no buttons in the matrix.
    assert not browser.find_elements(By.CSS_SELECTOR, "#matrix button")
    assert not reaches(lab, "front1", "back2")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "token-use").click()
    assert browser.execute_script("return sessionStorage.getItem('vguard-token')") == TOKEN
    # A poll that brings nothing new leaves the matrix's buttons as they are,
    # so a click is never lost to a redraw under the pointer.
    wait(browser, lambda d: cell(d, "front", "back").find_elements(By.TAG_NAME, "button"))
    button = cell(browser, "front", "back").find_element(By.TAG_NAME, "button")
    for _ in range(2):
        before = browser.find_element(By.ID, "status").text
        wait(browser, lambda d: d.find_element(By.ID, "status").text != before)
    # Reading a redrawn button raises StaleElementReferenceException.
    assert button.text == cell(browser, "front", "back").get_attribute("data-mode")

    def switch(mode: str) -> str:
        wait(browser, lambda d: cell(d, "front", "back").find_elements(By.TAG_NAME, "button"))
        cell(browser, "front", "back").find_element(By.TAG_NAME, "button").click()
        assert "Between front and back" in browser.find_element(By.ID, "change-what").text
        Select(browser.find_element(By.ID, "change-mode")).select_by_value(mode)
        browser.find_element(By.ID, "change-confirm").click()
        answer = wait(browser, lambda d: d.find_element(By.ID, "change-answer").text
                      if d.find_element(By.ID, "change-answer").text[:1].isdigit() else None)
        # The next poll shows the new mode in the matrix.
        wait(browser, lambda d: cell(d, "front", "back").get_attribute("data-mode") == mode)
        lab.wait_datapath()
        return answer

    answer = switch("allow")
    assert answer.startswith("200 applied: front ↔ back is allow on ui1, ui2"), answer
    assert lab.api("/api/v1/matrix")["modes"]["back"]["front"] == "allow"
    assert reaches(lab, "front1", "back2") and reaches(lab, "back1", "front2")
    assert reaches(lab, "front1", "back1")             # on one hypervisor too
    _screenshot(browser)
    answer = switch("deny")
    assert answer.startswith("200 applied: front ↔ back is deny"), answer
    assert not reaches(lab, "front1", "back2") and not reaches(lab, "front1", "back1")
    assert errors(browser) == []


def _screenshot(driver) -> None:
    """The page down to the first flow records, for the README."""
    if not SCREENSHOT:
        return
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(height + 20, 1900))
    os.makedirs(os.path.dirname(os.path.abspath(SCREENSHOT)), exist_ok=True)
    driver.save_screenshot(SCREENSHOT)
    driver.set_window_size(1400, 1200)
