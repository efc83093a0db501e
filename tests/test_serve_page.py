"""The web page end to end in headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium; nothing is downloaded): pick a user, see their history and recommendations, click an
item, watch it join the history and the list change."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import httpx
import pytest

from _serve_support import API_KEY, ServerProcess, require_binary, tiny_artifact


@pytest.fixture(scope="module")
def browser():
    chromium = require_binary("chromium", "chromium")
    driver_path = require_binary("chromedriver", "chromium-driver")
    try:
        from selenium import webdriver
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("selenium is missing: CI installs it with the dev extra")
        pytest.skip("selenium is not installed: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="seqrec-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-extensions", "--window-size=1280,900",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_click_an_item_and_watch_the_recommendations_change(browser, ml100k_slice, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from seqrec.recommend import Recommender

    artifact = tiny_artifact(ml100k_slice, "sasrec", "model.d_model=16")
    rec = Recommender.load(artifact)
    user = rec.users.ids[0]
    n_hist = len(rec.user_history(user))
    wait = WebDriverWait(browser, 20)
    with ServerProcess(artifact, f"sqlite:{tmp_path / 'h.sqlite3'}", tmp_path / "server.log") as server:
        browser.get(server.url + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert "sasrec" in browser.find_element(By.ID, "model-info").text
        options = browser.find_elements(By.CSS_SELECTOR, "#user-list option")
        assert str(user) in [o.get_attribute("value") for o in options]

        browser.find_element(By.ID, "api-key").send_keys(API_KEY)
        browser.find_element(By.ID, "user-input").send_keys(str(user))
        browser.find_element(By.ID, "load-user").click()

        def rows(list_id: str) -> list:
            return browser.find_elements(By.CSS_SELECTOR, f"#{list_id} li")

        wait.until(lambda d: len(rows("history-list")) == n_hist and len(rows("recs-list")) == 10)
        titles = [li.text for li in rows("history-list")]
        assert titles[0].startswith(rec.title(rec.items.index(rec.user_history(user)[0])))
        before = [li.get_attribute("data-item-id") for li in rows("recs-list")]
        want = [str(i) for i in rec.recommend_user(user, k=10).items]
        assert before == want  # the page shows the served list, in order
        assert all(li.find_element(By.CLASS_NAME, "score").text for li in rows("recs-list"))

        clicked = before[0]
        rows("recs-list")[0].find_element(By.TAG_NAME, "button").click()
        wait.until(lambda d: len(rows("history-list")) == n_hist + 1)
        last = rows("history-list")[-1]
        assert last.get_attribute("data-item-id") == clicked and "live" in last.get_attribute("class")
        wait.until(lambda d: [li.get_attribute("data-item-id") for li in rows("recs-list")] != before)
        after = [li.get_attribute("data-item-id") for li in rows("recs-list")]
        assert clicked not in after and len(after) == 10
        browser.save_screenshot(str(Path(tmp_path) / "page.png"))

        stored = httpx.get(f"{server.url}/users/{user}/history").json()["events"]
        assert str(stored[-1]["item_id"]) == clicked and stored[-1]["source"] == "live"

        # a wrong key is shown as an error, and nothing is stored
        key = browser.find_element(By.ID, "api-key")
        key.clear()
        key.send_keys("wrong-key-wrong-key")
        rows("recs-list")[0].find_element(By.TAG_NAME, "button").click()
        wait.until(lambda d: "invalid API key" in d.find_element(By.ID, "status").text)
        assert len(httpx.get(f"{server.url}/users/{user}/history").json()["events"]) == n_hist + 1
