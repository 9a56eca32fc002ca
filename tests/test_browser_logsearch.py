"""The log search and a record's permalink in a real headless Chromium, over the real
manager (the application and fixtures of ``tests.test_browser``), and the permalink of a
record arriving live. Screenshots of the search (desktop and phone) and of the log opened
at a record go to ``tests/artifacts/``."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browsing import ARTIFACTS, Site, browser, log_in, new_page
from tests.test_browser import site

__all__ = ["browser", "site"]  # the fixtures, shared with the walk-through

pytestmark = pytest.mark.browser


def test_search_every_scheduler_then_open_a_record_by_its_permalink(
    site: Site,
    browser: Any,
) -> None:
    base, password = site.url, site.admin_password
    context, page, problems = new_page(browser)
    log_in(page, base, "admin", password)
    # the report runs once at start: wait until its last record is stored
    page.wait_for_selector('article.card[data-id="demo.report"] .outcome-succeeded', timeout=15_000)

    page.click("nav.nav a:has-text('Log search')")
    page.wait_for_url(base + "/logs")
    # an ISO time without an offset is in the browser's zone, and the form says which
    assert page.inner_text("[data-zone-note]").startswith("times in your local time (UTC")
    page.fill("input[name=q]", "BATCH")
    page.select_option("select[name=level]", "info")
    page.fill("input[name=since]", "1h")
    page.click("form.log-search button[type=submit]")
    page.wait_for_selector(".search-hit")
    # the filters are in the address: the search is a link
    assert re.search(r"[?&]q=BATCH(&|$)", page.url) and "since=1h" in page.url
    assert "level=info" in page.url
    rows = page.locator(".search-hit")
    assert rows.count() == 5
    assert set(rows.locator(".log-scheduler").all_inner_texts()) == {"Hourly report"}
    assert all(text.startswith("run ") for text in rows.locator(".log-run").all_inner_texts())
    stamp = rows.first.locator("time").get_attribute("datetime") or ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", stamp), stamp
    assert rows.first.locator("time").inner_text().endswith(" UTC")
    page.screenshot(path=str(ARTIFACTS / "log-search.png"), full_page=True)

    # field=value narrows to one record; its permalink opens the log there, highlighted
    page.fill("input[name=fields]", "step=3")
    page.click("form.log-search button[type=submit]")
    page.wait_for_function("document.querySelectorAll('.search-hit').length === 1")
    hit = page.locator(".search-hit")
    assert "processed a batch" in hit.inner_text()
    cursor = hit.get_attribute("data-cursor")
    hit.locator("a.log-permalink").click()
    page.wait_for_url(re.compile(rf"/schedulers/demo\.report/logs\?at={cursor}#log-{cursor}$"))
    marked = page.locator(f"#log-{cursor}")
    assert marked.get_attribute("aria-current") == "true"
    assert "highlighted" in (marked.get_attribute("class") or "")
    assert marked.is_visible()
    assert marked.locator(".field-key").all_inner_texts()[:2] == ["rows", "step"]
    assert page.locator(".log-row.highlighted").count() == 1
    assert page.locator(".log-row").count() >= 8  # the records around it too
    # a reload of the permalink (a link kept elsewhere) opens the same record
    page.goto(page.url)
    assert page.locator(f"#log-{cursor}.highlighted").count() == 1
    page.screenshot(path=str(ARTIFACTS / "log-permalink.png"), full_page=True)

    # the preset: all errors in the last hour (the demo has none)
    page.goto(base + "/logs")
    page.click("a:has-text('Errors in the last hour')")
    page.wait_for_selector("[data-log-empty]")
    assert "level=error" in page.url and "since=1h" in page.url
    # rows arriving live carry their permalink too: the log is open before the run starts
    page.goto(base + "/schedulers/demo.worker/logs")
    page.wait_for_selector(".live-indicator:not([hidden])")
    other = context.new_page()
    other.goto(base + "/schedulers/demo.worker")
    other.click("button:has-text('Execute Now')")
    live = page.locator(".log-row.is-new:has-text('waiting for work')")
    live.wait_for(timeout=15_000)
    href = live.locator("a.log-permalink").get_attribute("href") or ""
    cursor = live.get_attribute("data-cursor")
    assert href == f"/schedulers/demo.worker/logs?at={cursor}#log-{cursor}"
    other.goto(base + "/schedulers/demo.worker")
    other.click("button[data-control=stop]")
    other.click("#confirm-stop button[type=submit]")
    other.wait_for_selector("#run-table .outcome-cancelled", timeout=15_000)
    other.close()

    assert problems.seen == []
    context.close()

    # on a 390 px phone the results read without sideways scrolling
    phone = browser.new_context(viewport={"width": 390, "height": 844})
    page = phone.new_page()
    log_in(page, base, "admin", password)
    page.goto(base + "/logs?q=batch&since=1h")
    page.wait_for_selector(".search-hit")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "log-search-phone.png"), full_page=True)
    phone.close()
