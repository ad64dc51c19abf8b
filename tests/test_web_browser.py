"""The status page in a real browser: Debian's headless Chromium, driven by Selenium
(chromium-driver), loading the page of a real logwatchd with real state. The plots render,
a search finds a banned IP, the paging works, a `<script>` from a log line does not run, and
a screenshot is kept (tmp dir; in CI and `make test` also artefacts/web-status.png)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from needs import require, strict
from webdaemon import HOSTILE_USER, WebDaemon

pytestmark = pytest.mark.needs("chromium", "chromedriver", "selenium", "postmap")

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1400,2000")


def artefact_dir() -> Path | None:
    """Where CI keeps the screenshot (README, "Status page"): LOGWATCHD_ARTEFACTS, or
    artefacts/ in the tree under CI / make test; None otherwise (tmp dir only)."""
    if os.environ.get("LOGWATCHD_ARTEFACTS"):
        return Path(os.environ["LOGWATCHD_ARTEFACTS"])
    return REPO / "artefacts" if strict() else None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    require("chromium", "chromedriver", "selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver",
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()          # also ends chromium and chromedriver


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebDaemon]:
    w = WebDaemon(tmp_path / "daemon", accounting=True)
    try:
        w.start()
        w.populate(40)
        assert w.proc.req(cmd="suspend", user="mallory@example.org")["ok"]
        yield w
    finally:
        w.stop()


def test_the_page_in_chromium(web: WebDaemon, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(web.url + "/?span=day")
    # The page's own script ran (scripts are on), and the log line's did not.
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("data-script") == "ran"
    assert browser.title == "logwatchd status"
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    user_cells = browser.find_elements(By.CSS_SELECTOR, "table.grants tbody td")
    assert user_cells[1].text == HOSTILE_USER                  # shown as text
    assert browser.find_elements(By.CSS_SELECTOR, "table.grants script") == []

    # Plots render: non-empty SVGs with drawn lines.
    plots = browser.find_elements(By.CSS_SELECTOR, "#panel-events svg.plot, "
                                                   "#panel-activity svg.plot, "
                                                   "#panel-messages svg.plot")
    assert len(plots) == 3
    for svg in plots:
        assert svg.size["width"] > 200 and svg.size["height"] > 50
        lines = svg.find_elements(By.CSS_SELECTOR, "polyline.series")
        assert lines and all(len(p.get_attribute("points").split()) > 100 for p in lines)
    bars = browser.find_elements(By.CSS_SELECTOR, "#panel-senders rect.bar")
    assert len(bars) == 2 and all(b.size["width"] > 0 for b in bars)
    assert "mallory@example.org" in browser.find_element(By.ID, "panel-suspended").text
    keep_screenshot(browser, tmp_path)

    # Paging, then a search that finds one banned IP (each a new page: wait for it).
    assert browser.find_element(By.ID, "bans-total").text == "40 bans"
    browser.find_element(By.ID, "bans-next").click()
    WebDriverWait(browser, 10).until(lambda b: "bans_page=1" in b.current_url)
    assert "page 2 of 3" in browser.find_element(By.ID, "panel-bans").text
    box = browser.find_element(By.ID, "bans-q")
    box.clear()
    box.send_keys("198.51.100.33")
    browser.find_element(By.ID, "bans-search").click()
    WebDriverWait(browser, 10).until(lambda b: "bans_q=198.51.100.33" in b.current_url)
    assert browser.find_element(By.ID, "bans-total").text == "1 bans"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.bans tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == ["198.51.100.33/32"]
    assert "span=day" in browser.current_url          # the other parameters were kept
    assert browser.execute_script("return typeof window.pwned") == "undefined"


def keep_screenshot(browser: Any, tmp_path: Path) -> None:
    shot = tmp_path / "web-status.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    target = artefact_dir()
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target / "web-status.png")
