"""Operator triage in a real headless Chromium, over the real manager: health on the cards,
live, every time with its zone, and errors that stay readable.

The browser runs in America/New_York while the server writes UTC, so a time that was
reformatted by the page's script (``Intl.DateTimeFormat``) is told from one that was not.
It watches a card turn red and back without a reload (its health line and strip too),
filters by the Failing summary, by outcome and by text (kept in the URL, "No scheduler
matches" instead of a blank page), checks that every ``<time>`` on every page names its
zone and that a cron scheduler shows its own, and opens a clamped traceback with "show
all". Screenshots go to ``tests/artifacts/``.

This module is also the application the manager runs (``tests.test_browser_health:cfg``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor import Configurator, cfgscheduler, scheduler, user
from supervisor.core.definitions import command
from tests.browsing import ARTIFACTS, Site, admin_center, browser, log_in, new_page

__all__ = ["browser"]  # the fixture, used below by name

pytestmark = pytest.mark.browser

APP_SPEC = "tests.test_browser_health:cfg"
FLAG_DIR = "TRIAGE_FLAG_DIR"  # where the flaky scheduler looks for its "fail" file
PASSWORD = "the triage admin's passphrase"
BROWSER_ZONE = "America/New_York"
# what Intl names zones as in en-US: EST/EDT, GMT+1 for Berlin, UTC
ZONE_LABEL = re.compile(r"(EST|EDT|UTC|GMT[+-]\d+|CET|CEST)\)?$")

# -- the application the manager runs ------------------------------------------------------

cfg = Configurator("triage-demo")
schedulers = cfgscheduler.enable(cfg)


def flaky(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("connecting to the database")
    if (Path(os.environ[FLAG_DIR]) / "fail").exists():
        raise RuntimeError("database is down")


def _connect(depth: int) -> None:
    if depth == 0:
        raise ConnectionError("db.internal:5432 refused the connection\nafter 3 attempts")
    _connect(depth - 1)


def broken(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).error("giving up")
    _connect(6)  # a traceback of many lines


def steady(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("all good")


for _options in (
    scheduler.Options(
        id="triage.broken", name="Broken export", kind=scheduler.Kind.MANUAL, runner=broken
    ),
    scheduler.Options(
        id="triage.steady", name="Steady sync", kind=scheduler.Kind.MANUAL, runner=steady
    ),
    # not first: failing, it moves to the front; recovered, back to its place
    scheduler.Options(
        id="triage.flaky", name="Flaky import", kind=scheduler.Kind.MANUAL, runner=flaky
    ),
    scheduler.Options(
        id="triage.exit3",
        name="Shell check",
        kind=scheduler.Kind.MANUAL,
        runner=command(["/bin/sh", "-c", "echo checking; exit 3"]),
    ),
    scheduler.Options(
        id="triage.nightly",
        name="Nightly rollup",
        kind=scheduler.Kind.CRON,
        runner=steady,
        defaults=scheduler.Settings(cron="0 3 * * *", timezone="Europe/Berlin"),
    ),
):
    schedulers.use_cases.configure(user.su(), _options)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flags(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the flaky scheduler's runs (which inherit the environment) look for "fail"."""
    found = tmp_path_factory.mktemp("flags")
    (found / "fail").touch()
    before = os.environ.get(FLAG_DIR)
    os.environ[FLAG_DIR] = str(found)
    try:
        yield found
    finally:
        if before is None:
            os.environ.pop(FLAG_DIR, None)
        else:
            os.environ[FLAG_DIR] = before


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, flags: Path) -> Iterator[Site]:
    state_dir = tmp_path_factory.mktemp("triage") / "state"
    with admin_center(cfg, APP_SPEC, state_dir, admin_password=PASSWORD) as found:
        yield found


@pytest.fixture(scope="module")
def page(site: Site, browser: Any) -> Iterator[Any]:
    context, found, found.problems = new_page(browser, timezone_id=BROWSER_ZONE, locale="en-US")
    log_in(found, site.url, "admin", PASSWORD)
    yield found
    assert found.problems.seen == []
    context.close()


def execute(page: Any, base: str, sid: str) -> None:
    """Execute Now, posted from the page's own session (its logout form has the token)."""
    token = page.get_attribute("input[name=csrf]", "value")
    assert token
    response = page.request.post(
        f"{base}/schedulers/{sid}/execute", form={"csrf": token}, max_redirects=0
    )
    assert response.status == 303, response.status


def card(sid: str) -> str:
    return f'article.card[data-id="{sid}"]'


def failing_count(page: Any, count: int) -> None:
    """Wait until the Failing summary says ``count``."""
    page.wait_for_selector(f'a.pill.health-failing strong:text-is("{count}")')


def zones_of_times(page: Any) -> list[tuple[str, str]]:
    """(text, datetime) of every <time> shown on the page whose text names no zone."""
    found: list[tuple[str, str]] = page.eval_on_selector_all(
        "time[datetime]:not([data-fmt=ago])",
        "els => els.map(e => [e.textContent.trim(), e.getAttribute('datetime')])",
    )
    return [(text, iso) for text, iso in found if not ZONE_LABEL.search(text.split(" (")[0])]


# -- the tests ----------------------------------------------------------------------------


def test_a_card_turns_red_and_back_live_with_its_health_line_and_strip(
    site: Site, flags: Path, page: Any
) -> None:
    base = site.url
    page.goto(base + "/")
    page.evaluate("window.__sameDocument = true")
    page.wait_for_selector(".live-indicator:not([hidden])")
    flaky = page.locator(card("triage.flaky"))
    assert flaky.get_attribute("data-health") == "ok"
    ids = "cs => cs.map(c => c.dataset.id)"
    served = page.eval_on_selector_all("article.card", ids)
    assert flaky.locator(".strip").count() == 0  # no runs yet
    failing_pill = page.locator("a.pill.health-failing strong")
    before = int(failing_pill.inner_text())

    execute(page, base, "triage.flaky")
    page.wait_for_selector(f'{card("triage.flaky")}[data-health="failing"] .card-health')
    page.wait_for_selector('.cards > article.card:first-child[data-id="triage.flaky"]')
    health = flaky.locator(".card-health").inner_text()
    assert re.fullmatch(
        r"failing since (\d\d/\d\d/\d{4} )?\d\d:\d\d E[SD]T \(1 in a row\)"
        r" · no success in the last run",
        health,
    ), health
    assert flaky.locator(".strip li").count() == 1
    assert flaky.locator(".strip .strip-failed").count() == 1
    assert flaky.locator('[data-field="last_outcome"] .outcome-failed').count() == 1
    assert "database is down" in flaky.locator(".card-error").inner_text()
    failing_count(page, before + 1)

    execute(page, base, "triage.flaky")
    page.wait_for_selector(f"{card('triage.flaky')} .strip li:nth-child(2).strip-failed")
    assert "(2 in a row)" in flaky.locator(".card-health").inner_text()

    (flags / "fail").unlink()
    execute(page, base, "triage.flaky")
    page.wait_for_selector(f'{card("triage.flaky")}[data-health="ok"] .strip-succeeded')
    assert flaky.locator(".card-health").count() == 0
    assert [
        c.split("-", 1)[1]
        for c in flaky.locator(".strip li").evaluate_all("l => l.map(e => e.className)")
    ] == ["failed", "failed", "succeeded"]
    assert flaky.locator(".badge.health-failing").count() == 0
    failing_count(page, before)
    # recovered, it goes back to its place: the order is the server's again
    assert page.eval_on_selector_all("article.card", ids) == served
    # failing first, live too: the fourth card moves to the front when its run fails
    order = page.eval_on_selector_all("article.card", ids)
    assert order.index("triage.exit3") > 0
    execute(page, base, "triage.exit3")
    page.wait_for_selector(f'{card("triage.exit3")}[data-health="failing"]')
    page.wait_for_selector('.cards > article.card:first-child[data-id="triage.exit3"]')
    assert page.locator("article.card").count() == 5  # moved, none lost
    assert page.evaluate("window.__sameDocument") is True  # all of it without a reload
    assert page.problems.seen == []


def test_filters_failing_first_outcome_text_in_the_url_and_no_blank_page(
    site: Site, flags: Path, page: Any
) -> None:
    base = site.url
    (flags / "fail").touch()
    for sid in ("triage.broken", "triage.flaky", "triage.steady", "triage.exit3"):
        execute(page, base, sid)
    page.goto(base + "/")
    for sid, health in (("triage.broken", "failing"), ("triage.flaky", "failing")):
        page.wait_for_selector(f'{card(sid)}[data-health="{health}"]', timeout=15_000)
    page.wait_for_selector(f"{card('triage.steady')} .outcome-succeeded")
    page.wait_for_selector(f'{card("triage.exit3")}[data-outcome]:not([data-outcome="none"])')
    page.reload()
    order = page.eval_on_selector_all("article.card", "cs => cs.map(c => c.dataset.health)")
    failing = order.count("failing")
    assert failing >= 2 and order[:failing] == ["failing"] * failing  # failing first
    page.screenshot(path=str(ARTIFACTS / "health-overview.png"), full_page=True)

    # the Failing summary filters, in the URL
    page.click("a.pill.health-failing")
    page.wait_for_url(base + "/?filter=failing")
    shown = page.eval_on_selector_all("article.card", "cs => cs.map(c => c.dataset.id)")
    assert set(shown) >= {"triage.broken", "triage.flaky"} and "triage.steady" not in shown
    assert f"Showing {len(shown)} of 5" in page.inner_text('[data-field="filter"]')

    # typing filters at once and keeps the text in the URL; no match says so
    page.fill("input[data-filter]", "zzz")
    page.wait_for_url(re.compile(r"q=zzz"))
    assert "filter=failing" in page.url
    assert page.locator("article.card:visible").count() == 0
    message = page.locator('[data-field="no-match"]')
    assert message.is_visible()
    assert "No scheduler matches 'zzz' among the failing ones" in message.inner_text()
    page.screenshot(path=str(ARTIFACTS / "health-no-match.png"), full_page=True)
    page.reload()  # the server says the same from the URL
    assert "No scheduler matches 'zzz'" in page.locator('[data-field="no-match"]').inner_text()
    # a wider text asks the server again: the cards come back
    page.fill("input[data-filter]", "broken")
    page.wait_for_selector(f"{card('triage.broken')}:visible")
    assert not page.locator('[data-field="no-match"]').is_visible()

    # by outcome, kept in the URL
    page.goto(base + "/")
    page.select_option("select[data-outcome-filter]", "succeeded")
    page.wait_for_url(re.compile(r"outcome=succeeded"))
    visible = page.eval_on_selector_all(
        "article.card:not([hidden])", "cs => cs.map(c => c.dataset.outcome)"
    )
    assert visible and set(visible) == {"succeeded"}
    page.reload()
    assert page.input_value("select[data-outcome-filter]") == "succeeded"
    served = page.eval_on_selector_all("article.card", "cs => cs.map(c => c.dataset.outcome)")
    assert served == visible
    page.select_option("select[data-outcome-filter]", "timed_out")
    page.wait_for_url(re.compile(r"outcome=timed_out"))
    assert "No scheduler's last run timed out" in page.inner_text('[data-field="no-match"]')


def test_every_time_names_its_zone_and_a_cron_scheduler_its_own(site: Site, page: Any) -> None:
    base = site.url
    execute(page, base, "triage.steady")
    page.goto(base + "/schedulers/triage.steady")
    page.wait_for_selector("#run-table tbody tr:not(.is-running) .outcome-succeeded")
    pages = [
        "/",
        "/schedulers/triage.steady",
        "/schedulers/triage.nightly",
        "/schedulers/triage.steady/logs",
        "/audit",
    ]
    for path in pages:
        page.goto(base + path)
        assert page.locator("time[datetime]").count() > 0, path
        assert zones_of_times(page) == [], path
        # reformatted in the browser's zone (the server wrote UTC)
        texts = page.eval_on_selector_all(
            "time[datetime]:not([data-zone])", "t => t.map(e => e.textContent)"
        )
        assert not any(t.endswith(" UTC") for t in texts), (path, texts)
    # the history fragment and live log rows, inserted later, are formatted too
    page.goto(base + "/schedulers/triage.steady")
    rows_before = page.locator("#run-table tbody tr").count()
    page.evaluate("window.__sameDocument = true")
    execute(page, base, "triage.steady")
    page.wait_for_function(
        "n => document.querySelectorAll('#run-table tbody tr').length > n", arg=rows_before
    )
    page.wait_for_selector(".log-panel .log-row.is-new")
    assert zones_of_times(page) == []
    assert page.evaluate("window.__sameDocument") is True
    assert re.search(r"E[SD]T$", page.locator("#run-table tbody tr time").first.inner_text())

    # a cron scheduler shows its expression with its own zone, and its next run there
    page.goto(base + "/")
    nightly = page.locator(card("triage.nightly"))
    schedule = nightly.locator('[data-field="schedule"]').inner_text()
    assert "0 3 * * *" in schedule and "Europe/Berlin" in schedule
    there = nightly.locator(".zone-time time").inner_text()
    assert re.fullmatch(r"(\d\d/\d\d/\d{4} )?03:00 GMT\+[12]", there), there
    here = nightly.locator('[data-field="next_planned_at"] > time').inner_text()
    assert re.match(r"(\d\d/\d\d/\d{4} )?(21|22):00 E[SD]T", here), here
    page.goto(base + "/schedulers/triage.nightly")
    assert "Europe/Berlin" in page.inner_text('.status-panel [data-field="schedule"]')
    # the cron preview: its next runs in the cron's zone, named
    previews = page.locator(".preview-list time").all_inner_texts()
    assert previews and all(re.search(r"03:00:00 GMT\+[12]$", t) for t in previews), previews
    page.screenshot(path=str(ARTIFACTS / "health-cron-zone.png"), full_page=True)


def test_a_traceback_keeps_its_lines_clamped_with_show_all(site: Site, page: Any) -> None:
    base = site.url
    page.goto(base + "/schedulers/triage.broken")
    if page.locator("#run-table .outcome-failed").count() == 0:
        execute(page, base, "triage.broken")
        page.wait_for_selector("#run-table .outcome-failed", timeout=15_000)
    width = page.evaluate("document.documentElement.scrollWidth")
    for box in (".status-panel .card-error", "#run-table .run-error"):
        error = page.locator(box).first
        assert error.evaluate("e => getComputedStyle(e).whiteSpace") == "pre-wrap", box
        assert "Traceback" in error.inner_text() and "\n" in error.inner_text(), box
        clamped = error.evaluate("e => [e.clientHeight, e.scrollHeight]")
        assert clamped[0] < clamped[1], (box, clamped)  # a few lines, not all
        toggle = page.locator(f"{box} + button.clamp-toggle").first
        assert toggle.is_visible() and toggle.inner_text() == "show all"
        toggle.click()
        assert toggle.get_attribute("aria-expanded") == "true"
        opened = error.evaluate("e => [e.clientHeight, e.scrollHeight]")
        assert opened[0] >= opened[1] - 1 and opened[0] > clamped[0], (box, opened)
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways
    page.screenshot(path=str(ARTIFACTS / "health-traceback.png"), full_page=True)
    # on the card too, and its toggle is not swallowed by the card's link
    page.goto(base + "/")
    error = page.locator(f"{card('triage.broken')} .card-error")
    assert "\n" in error.inner_text()
    toggle = page.locator(f"{card('triage.broken')} button.clamp-toggle")
    toggle.click()
    assert page.url == base + "/"
    assert toggle.get_attribute("aria-expanded") == "true"


def test_a_command_exiting_non_zero_shows_its_exit_code(site: Site, page: Any) -> None:
    base = site.url
    page.goto(base + "/schedulers/triage.exit3")
    if page.locator("#run-table tbody tr").count() == 0:
        execute(page, base, "triage.exit3")
    page.wait_for_selector("#run-table tbody tr:not(.is-running) .outcome", timeout=15_000)
    outcome = page.locator("#run-table tbody tr .outcome").first
    assert outcome.inner_text() == "Failed (exit code 3)"
    assert "exit 3" not in page.inner_text("#run-table tbody tr")  # said once
    panel = page.inner_text('.status-panel [data-field="last_outcome"]')
    assert panel == "Failed (exit code 3)", panel
    page.goto(base + "/")
    last = page.locator(f'{card("triage.exit3")} [data-field="last_outcome"]').inner_text()
    assert last == "Failed (exit code 3)", last
    page.goto(base + "/schedulers/triage.exit3")
    page.screenshot(path=str(ARTIFACTS / "health-exit-code.png"), full_page=True)


def test_the_scheduler_page_redraws_its_health_line_live(
    site: Site, flags: Path, page: Any
) -> None:
    base = site.url
    (flags / "fail").touch()
    page.goto(base + "/schedulers/triage.flaky")
    page.evaluate("window.__sameDocument = true")
    page.wait_for_selector(".live-indicator:not([hidden])")
    line = page.locator("#health-line")
    found = re.search(r"\((\d+) in a row\)", line.inner_text())
    streak = int(found.group(1)) if found else 0
    execute(page, base, "triage.flaky")
    page.wait_for_selector(f"#health-line .card-health:has-text('({streak + 1} in a row)')")
    assert re.match(r"failing since (\d\d/\d\d/\d{4} )?\d\d:\d\d E[SD]T", line.inner_text())
    page.wait_for_selector(".status-panel #last-outcome .outcome-failed")
    page.wait_for_selector(".status-panel .card-error:has-text('database is down')")
    assert page.evaluate("window.__sameDocument") is True
    (flags / "fail").unlink()
    execute(page, base, "triage.flaky")
    page.wait_for_selector(".status-panel #last-outcome .outcome-succeeded")
    page.wait_for_selector("#health-line:empty", state="attached")
    assert page.locator(".status-panel .card-health").count() == 0
    page.screenshot(path=str(ARTIFACTS / "health-scheduler.png"), full_page=True)
