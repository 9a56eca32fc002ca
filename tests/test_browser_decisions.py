"""Decisions and refusals in a real headless Chromium over the real manager.

Stop asks in a dialog (and, without the script, on a confirmation page) and takes a
reason that shows on the page, the card and the stopped run's log (a WARNING, no ERROR);
Start and Stop are greyed while they would do nothing; a pause shows until when; a
refused Execute Now stays on its page and links to the running run's live log.
Screenshots go to ``tests/artifacts/``. The application is ``tests.test_browser:cfg``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browsing import ARTIFACTS, DESKTOP, Site, browser, log_in, new_page
from tests.test_browser import site

pytestmark = pytest.mark.browser
__all__ = ["browser", "site"]  # the fixtures, shared with the walk-through


def test_stop_asks_keeps_its_reason_and_refusals_stay_on_the_page(site: Site, browser: Any) -> None:
    base, password = site.url, site.admin_password
    context, page, problems = new_page(browser)
    log_in(page, base, "admin", password)
    worker = base + "/schedulers/demo.worker"
    page.goto(worker)

    # waiting for a trigger: Start would do nothing, so it is greyed and says why
    start = page.locator("button[data-control=start]")
    assert start.is_disabled() and start.get_attribute("title") == "Already active: it plans runs"
    assert page.locator("button[data-control=stop]").is_enabled()

    # a refused Execute Now stays on the page and links to the running run's live log
    page.click("button[data-control=execute]")
    page.wait_for_selector(".flash-ok:has-text('Run started')")
    page.click("button[data-control=execute]")
    page.wait_for_selector(".flash-error:has-text('Execute Now refused')")
    assert page.url == worker
    assert "already running" in page.inner_text(".flash-error")
    page.screenshot(path=str(ARTIFACTS / "refused-execute.png"), full_page=True)
    page.click(".flash-error a.flash-link")
    page.wait_for_url(f"{worker}/logs?run=*")
    page.wait_for_selector(".log-row:has-text('waiting for work')", timeout=15_000)
    run_id = page.url.rsplit("=", 1)[1]

    # Stop opens a dialog that asks for a reason; cancelling it does nothing
    page.goto(worker)
    page.click("button[data-control=stop]")
    dialog = page.locator("dialog#confirm-stop")
    assert dialog.is_visible() and "will be cancelled" in dialog.inner_text()
    dialog.locator("[data-close]").click()
    assert not dialog.is_visible()
    assert page.locator('.status-panel [data-field="state"]').inner_text() == "Running"
    page.click("button[data-control=stop]")
    page.fill("#reason-stop", "ERP maintenance")
    page.screenshot(path=str(ARTIFACTS / "stop-dialog.png"))
    dialog.locator("button[type=submit]").click()
    page.wait_for_selector(".flash-ok:has-text('Stopped')")
    page.wait_for_selector("#run-table .outcome-cancelled", timeout=15_000)
    decision = page.inner_text('.status-panel [data-field="decision"]')
    assert decision.startswith("stopped by admin ") and decision.endswith(": ERP maintenance")
    page.wait_for_selector('.status-panel [data-field="state"].state-stopped')
    stop = page.locator("button[data-control=stop]")
    page.wait_for_function("document.querySelector('button[data-control=stop]').disabled")
    assert stop.get_attribute("title") == "Already stopped"
    assert page.locator("button[data-control=start]").is_enabled()
    page.screenshot(path=str(ARTIFACTS / "stopped-with-reason.png"), full_page=True)

    # the run's log: a WARNING naming who stopped it and why, no ERROR "run failed"
    page.goto(f"{worker}/logs?run={run_id}")
    page.wait_for_selector(".log-row.level-warning:has-text('stopped by admin')")
    assert page.locator(".log-row.level-error").count() == 0
    assert page.locator(".log-row:has-text('run failed')").count() == 0

    # the card says it too
    page.goto(base + "/")
    card = page.locator('article.card[data-id="demo.worker"] [data-field="decision"]')
    assert "ERP maintenance" in card.inner_text()

    # a time-boxed pause shows until when; Start becomes Resume and ends it
    page.goto(base + "/schedulers/demo.nightly")
    page.click("button[data-control=pause]")
    assert "your local time" in page.inner_text("dialog#confirm-pause")
    page.fill("#until-pause", "2h")
    page.fill("#reason-pause", "backup window")
    page.locator("dialog#confirm-pause button[type=submit]").click()
    page.wait_for_selector(".flash-ok:has-text('Paused')")
    decision = page.inner_text('.status-panel [data-field="decision"]')
    assert decision.startswith("paused until ") and decision.endswith(": backup window")
    resume = page.locator("button[data-control=start]")
    assert resume.inner_text() == "Resume" and resume.is_enabled()
    page.screenshot(path=str(ARTIFACTS / "paused-until.png"), full_page=True)
    resume.click()
    page.wait_for_selector(".flash-ok:has-text('Started')")
    assert page.locator('.status-panel [data-field="decision"]').is_hidden()
    assert problems.seen == []
    context.close()


def test_without_the_script_stop_asks_on_a_page_of_its_own(site: Site, browser: Any) -> None:
    base, password = site.url, site.admin_password
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    page = context.new_page()
    log_in(page, base, "admin", password)
    page.goto(base + "/schedulers/demo.report")
    page.click("button[data-control=stop]")
    page.wait_for_url(base + "/schedulers/demo.report/stop")
    assert "Stop Hourly report?" in page.inner_text("main")
    page.fill("#reason-stop", "no script here")
    page.screenshot(path=str(ARTIFACTS / "stop-confirm-page.png"), full_page=True)
    page.click(".confirm-panel button[type=submit]")
    page.wait_for_url(base + "/schedulers/demo.report")
    assert "no script here" in page.inner_text('.status-panel [data-field="decision"]')
    page.click("button[data-control=start]")
    page.wait_for_url(base + "/schedulers/demo.report")
    assert "Started" in page.inner_text(".flashes")
    context.close()
