"""The Admin Center end to end in a real headless Chromium, over the real manager.

Debian's ``chromium`` driven by Playwright for Python (never a downloaded browser). It
logs in, sees the cards, runs Execute Now and watches the log lines arrive without a
reload, changes the pause and sees the next run move, stops, resets, and checks that a
viewer sees no controls and is refused when posting anyway. Screenshots of the overview,
the scheduler page and the log viewer go to ``tests/artifacts/``.

This module is also the application the manager runs (``tests.test_browser:cfg``); the
browser library is imported only by the tests, never by the runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from supervisor import Configurator, cfgscheduler, scheduler, user
from tests.browsing import (
    ARTIFACTS,
    NEWBIE,
    VIEWER,
    Site,
    admin_center,
    browser,
    log_in,
    new_page,
)

__all__ = ["browser"]  # the fixture, used below by name

pytestmark = pytest.mark.browser

APP_SPEC = "tests.test_browser:cfg"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"

# -- the application the manager runs ------------------------------------------------------

cfg = Configurator("browser-demo")
schedulers = cfgscheduler.enable(cfg)


def chatty(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    log.info("report started", rows=0)
    for step in range(1, 6):
        if not ctx.sleep(0.3):
            raise ctx.err() or scheduler.RunError("cancelled")
        log.info("processed a batch", step=step, rows=step * 250)
    log.warning(HOSTILE, note="markup in a message stays text")
    log.info("report done", rows=1250)


def hang(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("waiting for work")
    while ctx.sleep(0.05):
        pass
    raise ctx.err() or scheduler.RunError("cancelled")


def greet(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("Hello from scheduler")


def count_rows() -> str:
    return "1250 rows in the report table"


for _options in (
    scheduler.Options(
        id="demo.report",
        name="Hourly report",
        description="Builds the report in batches and logs each one",
        kind=scheduler.Kind.SCHEDULE,
        runner=chatty,
        defaults=scheduler.Settings(pause_time=timedelta(hours=1)),
        actions=[scheduler.CustomAction(id="count", title="Count rows", action=count_rows)],
    ),
    scheduler.Options(
        id="demo.hello",
        name="Hello World Job",
        description="Runs once after startup and logs a greeting",
        kind=scheduler.Kind.ONE_SHOT,
        runner=greet,
    ),
    scheduler.Options(
        id="demo.nightly",
        name="Nightly cleanup",
        description="Removes old exports at 03:00 Berlin time",
        kind=scheduler.Kind.CRON,
        runner=greet,
        defaults=scheduler.Settings(cron="0 3 * * *", timezone="Europe/Berlin"),
    ),
    scheduler.Options(
        id="demo.worker",
        name="Queue worker",
        description="Waits for work until stopped",
        kind=scheduler.Kind.MANUAL,
        runner=hang,
    ),
):
    schedulers.use_cases.configure(user.su(), _options)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    state_dir = tmp_path_factory.mktemp("browser") / "state"
    with admin_center(cfg, APP_SPEC, state_dir, accounts=(VIEWER, NEWBIE)) as found:
        yield found


def next_planned(page: Any) -> datetime:
    stamp = page.get_attribute('.status-panel [data-field="next_planned_at"] time', "datetime")
    assert stamp, "no next planned run shown"
    return datetime.fromisoformat(stamp)


# -- the walk-through ---------------------------------------------------------------------


def test_an_operator_session_end_to_end(site: Site, browser: Any) -> None:
    base, password = site.url, site.admin_password
    context, page, problems = new_page(browser)
    log_in(page, base, "admin", password)

    # the cards
    cards = page.locator("article.card")
    assert cards.count() == 4
    report = page.locator('article.card[data-id="demo.report"]')
    assert "Hourly report" in report.inner_text()
    assert "Repeating" in report.inner_text()
    page.wait_for_selector('article.card[data-id="demo.hello"] .outcome-succeeded')
    # the report ran once at start (no start delay); wait for it to finish, live
    page.wait_for_selector('article.card[data-id="demo.report"] .outcome-succeeded', timeout=15_000)
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    # Execute Now, then the log lines arrive live, without a reload
    report.locator("a").first.click()
    page.wait_for_url(base + "/schedulers/demo.report")
    page.click("button:has-text('Execute Now')")
    page.wait_for_url(base + "/schedulers/demo.report")
    assert "Run started" in page.inner_text(".flashes")
    page.evaluate("window.__sameDocument = true")
    live = ".log-panel .log-row.is-new"  # rows the script added from the event stream
    page.wait_for_selector(f"{live}:has-text('processed a batch')", timeout=15_000)
    page.wait_for_selector(f"{live}:has-text('report done')", timeout=15_000)
    assert page.locator(f"{live}:has-text('processed a batch')").count() >= 2
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    batch = page.locator(f"{live}:has-text('processed a batch')").last
    assert "step" in batch.locator(".field-key").all_inner_texts()
    # the hostile message arrived as text
    assert page.locator(".log-panel .log-row img").count() == 0
    assert page.locator(live, has_text="onerror=").count() == 1
    assert page.title() != "pwned"
    # the state and the run history followed by themselves
    page.wait_for_selector('.status-panel [data-field="last_outcome"] .outcome-succeeded')
    page.wait_for_selector("#run-table .outcome-succeeded")
    page.wait_for_selector("#run-chart rect.bar.outcome-succeeded")

    # change the pause: the next run moves
    before = next_planned(page)
    page.fill("#f-pause_time", "2h")
    page.click("button:has-text('Save settings')")
    page.wait_for_selector(".flash-ok:has-text('Settings saved')")
    after = next_planned(page)
    assert after - before == timedelta(hours=1)
    assert page.locator(".field-row.is-overridden #f-pause_time").count() == 1
    page.screenshot(path=str(ARTIFACTS / "scheduler.png"), full_page=True)

    # a custom action shows its result
    page.click("button:has-text('Count rows')")
    page.wait_for_selector(".flash-ok:has-text('1250 rows in the report table')")

    # Stop (it asks first)
    page.click("button[data-control=stop]")
    page.click("#confirm-stop button[type=submit]")
    page.wait_for_selector('.status-panel [data-field="state"].state-stopped')

    # Reset to the defaults
    page.click("button:has-text('Reset to defaults')")
    page.wait_for_selector(".flash-ok:has-text('Settings reset')")
    assert page.input_value("#f-pause_time") == "1h"
    assert page.locator(".field-row.is-overridden").count() == 0

    # the log viewer: level filter and live tail of a running worker
    page.goto(base + "/schedulers/demo.report/logs?level=warning")
    assert page.locator(".log-row").count() == page.locator(".log-row.level-warning").count() == 2
    page.goto(base + "/schedulers/demo.worker")
    page.click("button:has-text('Execute Now')")
    page.wait_for_selector(".flash-ok:has-text('Run started')")
    page.goto(base + "/schedulers/demo.worker/logs")
    page.wait_for_selector(".log-row:has-text('waiting for work')", timeout=15_000)
    page.goto(base + "/schedulers/demo.report/logs")
    page.wait_for_selector(".live-indicator:not([hidden])")
    page.screenshot(path=str(ARTIFACTS / "logs.png"), full_page=True)
    page.goto(base + "/schedulers/demo.worker")
    page.click("button[data-control=stop]")
    page.click("#confirm-stop button[type=submit]")
    page.wait_for_selector("#run-table .outcome-cancelled", timeout=15_000)

    # the audit trail
    page.goto(base + "/audit")
    audit = page.inner_text("table.audit")
    for action in ("execute", "update settings", "reset settings", "stop", "action count"):
        assert action in audit, action
    page.screenshot(path=str(ARTIFACTS / "audit.png"), full_page=True)
    assert problems.seen == []
    context.close()


def test_a_viewer_sees_no_controls_and_is_refused(site: Site, browser: Any) -> None:
    base = site.url
    context, page, problems = new_page(browser)
    log_in(page, base, VIEWER.name, VIEWER.password)
    page.goto(base + "/schedulers/demo.report")
    for label in ("Execute Now", "Start", "Stop", "Count rows", "Save settings", "Reset"):
        assert page.locator(f"button:has-text('{label}')").count() == 0, label
    token = page.get_attribute("input[name=csrf]", "value")  # of the logout form
    assert token
    for path in ("execute", "stop", "settings/reset", "actions/count"):
        response = page.request.post(
            f"{base}/schedulers/demo.report/{path}", form={"csrf": token}, max_redirects=0
        )
        assert response.status == 403, path
    assert page.request.get(base + "/audit").status == 403
    assert problems.seen == []
    context.close()


def test_a_one_time_password_is_changed_at_the_first_login(site: Site, browser: Any) -> None:
    base = site.url
    context, page, problems = new_page(browser)
    page.goto(base + "/")
    page.fill("input[name=name]", NEWBIE.name)
    page.fill("input[name=password]", NEWBIE.password)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(base + "/account/password")
    assert "one-time password" in page.inner_text("main")
    assert page.locator("nav.nav").count() == 0  # nothing else to go to yet
    page.goto(base + "/schedulers/demo.report")
    page.wait_for_url(base + "/account/password")
    page.screenshot(path=str(ARTIFACTS / "first-login-password.png"), full_page=True)
    page.fill("input[name=current]", NEWBIE.password)
    page.fill("input[name=password]", "newbie's own passphrase")
    page.fill("input[name=repeat]", "newbie's own passphrase")
    page.click("form.stack button[type=submit]")
    page.wait_for_url(base + "/")
    assert "Password changed" in page.inner_text(".flashes")
    assert page.locator("article.card").count() == 4
    assert problems.seen == []
    context.close()


def test_dark_mode_and_a_phone(site: Site, browser: Any) -> None:
    base, password = site.url, site.admin_password
    context, page, problems = new_page(
        browser,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        color_scheme="dark",
    )
    log_in(page, base, "admin", password)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 17, 23)"  # the dark palette
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing sticks out sideways
    page.screenshot(path=str(ARTIFACTS / "overview-phone-dark.png"), full_page=True)
    page.goto(base + "/schedulers/demo.report")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "scheduler-phone-dark.png"), full_page=True)
    assert problems.seen == []
    context.close()


def test_a_pause_date_across_a_dst_change_is_read_in_the_browsers_zone(
    site: Site, browser: Any
) -> None:
    base, password = site.url, site.admin_password
    berlin = ZoneInfo("Europe/Berlin")
    context, page, problems = new_page(browser, timezone_id=berlin.key)
    log_in(page, base, "admin", password)
    page.goto(base + "/schedulers/demo.nightly")
    assert page.input_value('#confirm-pause input[name="zone"]') == "Europe/Berlin"
    # A date in the other half of the year from now: across a DST change.
    now = datetime.now(berlin)
    summer = bool(now.dst())
    local = datetime(now.year + 1, 1 if summer else 7, 15, 9, 0)
    expected = local.replace(tzinfo=berlin).astimezone(UTC)
    page.click('button[data-confirm="confirm-pause"]')
    page.fill("#until-pause", local.isoformat(timespec="minutes"))
    page.click("#confirm-pause button[type=submit]")
    page.wait_for_url(base + "/schedulers/demo.nightly")
    assert f"resumes by itself at {expected:%Y-%m-%d %H:%M} UTC" in page.inner_text(".flashes")
    page.click("button:has-text('Resume')")
    page.wait_for_url(base + "/schedulers/demo.nightly")
    assert problems.seen == []
    context.close()
