"""Accessibility and phone layout of every Admin Center page, in a real headless Chromium.

axe-core (pinned by ``tests/package-lock.json``, installed by ``npm ci --prefix tests``)
is evaluated in each page, in the light and the dark theme; no serious or critical
violation may be reported. The history and the audit trail must fit a 390 px wide phone
without sideways scrolling. Screenshots go to ``tests/artifacts/``.

This module is also the application the manager runs (``tests.test_browser_a11y:cfg``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor import Configurator, cfgscheduler, scheduler, user
from tests.browsing import (
    ARTIFACTS,
    AXE,
    DESKTOP,
    NEWBIE,
    VIEWER,
    Problems,
    Site,
    admin_center,
    browser,
    log_in,
    missing_axe,
    new_page,
)
from tests.required import skip_or_fail
from tests.waiting import wait_for

__all__ = ["browser"]  # the fixture, used below by name

pytestmark = pytest.mark.browser

APP_SPEC = "tests.test_browser_a11y:cfg"
SERIOUS = ("serious", "critical")
PHONE = {"width": 390, "height": 844}

# -- the application the manager runs ------------------------------------------------------

cfg = Configurator("a11y-demo")
schedulers = cfgscheduler.enable(cfg)


def greet(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    log.info("Hello from scheduler", rows=3)
    log.warning("a warning with a field", disk="93%")


def fail(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).error("cannot reach the ERP host")
    raise scheduler.RunError("ERP host erp-prod-01.example.internal refused the connection")


for _options in (
    scheduler.Options(
        id="demo.hello",
        name="Hello World Job",
        description="Runs once after startup and logs a greeting",
        kind=scheduler.Kind.ONE_SHOT,
        runner=greet,
    ),
    scheduler.Options(
        id="demo.broken",
        name="Broken export with a rather long name",
        description="Fails every time, so its card and history are red",
        kind=scheduler.Kind.ONE_SHOT,
        runner=fail,
    ),
    scheduler.Options(
        id="demo.nightly",
        name="Nightly cleanup",
        description="Removes old exports at 03:00 Berlin time",
        kind=scheduler.Kind.CRON,
        runner=greet,
        defaults=scheduler.Settings(cron="0 3 * * *", timezone="Europe/Berlin"),
    ),
):
    schedulers.use_cases.configure(user.su(), _options)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    skip_or_fail("axe", missing_axe())
    state_dir = tmp_path_factory.mktemp("a11y") / "state"
    with admin_center(cfg, APP_SPEC, state_dir, accounts=(VIEWER, NEWBIE)) as found:
        wait_for(
            lambda: "outcome-failed" in found.admin.request("GET", "/schedulers/demo.broken")[2],
            timeout=30,
            what="the broken scheduler's failed run",
        )
        guesser = found.session()  # a refused login for the audit
        token = guesser.csrf("/login")
        status, _, _ = guesser.request(
            "POST", "/login", {"csrf": token, "name": "mallory", "password": "guess"}
        )
        assert status == 401
        yield found


def axe_violations(page: Any) -> list[str]:
    """The serious and critical axe-core violations of the page as shown, one line each."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())  # evaluated by the driver: the page's CSP allows it
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    lines = []
    for violation in found:
        if violation["impact"] not in SERIOUS:
            continue
        for node in violation["nodes"]:
            summary = node.get("failureSummary", "").replace("\n", " ")
            lines.append(f"{violation['id']} ({violation['impact']}) {node['target']}: {summary}")
    return lines


def unexpected(problems: Problems) -> list[str]:
    """Console errors but the browser's note of the error pages' own 4xx statuses (that
    no style sheet, script or icon failed is checked by ``FailedLoads``)."""
    return [
        seen for seen in problems.seen if "the server responded with a status of 40" not in seen
    ]


class FailedLoads:
    """Every response of 400 or more to anything but the page itself (style, script...)."""

    def __init__(self, page: Any) -> None:
        self.seen: list[str] = []

        def note(response: Any) -> None:
            if response.status >= 400 and response.request.resource_type != "document":
                self.seen.append(f"{response.status} {response.url}")

        page.on("response", note)


def sideways(page: Any, selector: str) -> list[tuple[int, int]]:
    """(scroll width, visible width) of each ``selector`` element wider than it shows."""
    found: list[tuple[int, int]] = page.evaluate(
        """selector => [...document.querySelectorAll(selector)]
            .map(e => [e.scrollWidth, e.clientWidth]).filter(([s, c]) => s > c)""",
        selector,
    )
    return found


# Every page, as (name, path, who sees it).
PAGES: list[tuple[str, str, str]] = [
    ("overview", "/", "admin"),
    ("overview-filtered", "/?q=no-such-scheduler", "admin"),
    ("scheduler", "/schedulers/demo.broken", "admin"),
    ("scheduler-ok", "/schedulers/demo.hello", "admin"),
    ("scheduler-cron", "/schedulers/demo.nightly", "admin"),
    ("logs", "/schedulers/demo.broken/logs", "admin"),
    ("logs-hello", "/schedulers/demo.hello/logs", "admin"),
    ("audit", "/audit", "admin"),
    ("log-search", "/logs?q=ERP", "admin"),
    ("password", "/account/password", "admin"),
    ("users", "/users", "admin"),
    ("not-found", "/no/such/page", "admin"),
    ("method-not-allowed", "/logout", "admin"),
    ("unknown-scheduler", "/schedulers/no.such", "admin"),
    ("forbidden", "/audit", "vic"),
    ("viewer-scheduler", "/schedulers/demo.broken", "vic"),
]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_no_serious_or_critical_axe_violation_on_any_page(
    site: Site, browser: Any, theme: str
) -> None:
    context, page, problems = new_page(browser, color_scheme=theme)
    failed = FailedLoads(page)
    report: dict[str, list[str]] = {}

    page.goto(site.url + "/login")
    report["login"] = axe_violations(page)
    page.fill("input[name=name]", "nobody")
    page.fill("input[name=password]", "wrong")
    page.click("form.stack button[type=submit]")
    page.wait_for_selector(".form-error")
    report["login-refused"] = axe_violations(page)

    sessions = {"admin": context, "vic": browser.new_context(color_scheme=theme)}
    log_in(page, site.url, "admin", site.admin_password)
    viewer = sessions["vic"].new_page()
    log_in(viewer, site.url, "vic", VIEWER.password)
    pages = {"admin": page, "vic": viewer}
    for name, path, who in PAGES:
        shown = pages[who]
        shown.goto(site.url + path)
        report[name] = axe_violations(shown)
        shown.screenshot(path=str(ARTIFACTS / f"a11y-{name}-{theme}.png"), full_page=True)
    # a decision's confirmation, as a dialog over the page
    page.goto(site.url + "/schedulers/demo.nightly")
    page.click('button[data-control="disable"]')
    page.wait_for_selector("dialog[open]")
    report["confirm-dialog"] = axe_violations(page)
    page.screenshot(path=str(ARTIFACTS / f"a11y-confirm-dialog-{theme}.png"), full_page=True)
    page.keyboard.press("Escape")
    # the states with errors: a refused password change, a refused user change
    page.goto(site.url + "/account/password")
    page.fill("input[name=current]", "not my password at all")
    page.fill("input[name=password]", "a new password here")
    page.fill("input[name=repeat]", "a new password here")
    page.click("form.stack button[type=submit]")
    page.wait_for_selector(".field-error")
    report["password-refused"] = axe_violations(page)
    page.goto(site.url + "/users")
    page.fill(".add-user input[name=name]", "vic")
    page.click(".add-user button[type=submit]")
    page.wait_for_selector(".flash-error")
    report["users-refused"] = axe_violations(page)
    page.screenshot(path=str(ARTIFACTS / f"a11y-users-refused-{theme}.png"), full_page=True)
    # the first login with a one-time password: only the password page, with its alert
    newbie = browser.new_context(color_scheme=theme)
    first = newbie.new_page()
    first.goto(site.url + "/login")
    first.fill("input[name=name]", "newbie")
    first.fill("input[name=password]", NEWBIE.password)
    first.click("form.stack button[type=submit]")
    first.wait_for_url(site.url + "/account/password")
    report["first-login-password"] = axe_violations(first)
    newbie.close()
    found = {name: lines for name, lines in report.items() if lines}
    assert found == {}, json.dumps(found, indent=1)
    assert unexpected(problems) == []
    assert failed.seen == []
    sessions["vic"].close()
    context.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_history_and_audit_fit_a_390_px_phone(site: Site, browser: Any, theme: str) -> None:
    context, page, problems = new_page(
        browser,
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        color_scheme=theme,
    )
    log_in(page, site.url, "admin", site.admin_password)
    for name, path, table in (
        ("history", "/schedulers/demo.broken", "table.runs"),
        ("audit", "/audit", "table.audit"),
        ("users", "/users", "table.users"),
        ("logs", "/schedulers/demo.broken/logs", ".log"),
        ("overview", "/", ".cards"),
    ):
        page.goto(site.url + path)
        page.wait_for_selector(table)
        page.screenshot(path=str(ARTIFACTS / f"phone-{name}-{theme}.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (name, width)
        # nothing scrolls sideways inside the page either: no table wider than its box
        assert sideways(page, f".table-wrap, {table}") == [], name
    assert unexpected(problems) == []
    context.close()


def test_an_admin_manages_users_and_filters_the_audit_in_the_browser(
    site: Site, browser: Any
) -> None:
    context, page, problems = new_page(browser)
    log_in(page, site.url, "admin", site.admin_password)
    page.click("nav.nav a:has-text('Users')")
    page.wait_for_url(site.url + "/users")

    # add a user: the one-time password is shown once
    page.fill(".add-user input[name=name]", "olga")
    page.select_option(".add-user select[name=role]", "operator")
    page.click(".add-user button[type=submit]")
    page.wait_for_selector(".flash-ok:has-text('User olga added (operator)')")
    shown = page.inner_text(".flash-ok .flash-text")
    one_time = shown.split("one-time password: ")[1].split()[0]
    assert axe_violations(page) == []
    page.screenshot(path=str(ARTIFACTS / "users-added.png"), full_page=True)
    row = page.locator('tr[data-user="olga"]')
    assert "must change password" in row.inner_text()

    # olga logs in with it and must choose her own first
    olga_context = browser.new_context(viewport=DESKTOP)
    olga = olga_context.new_page()
    olga.goto(site.url + "/login")
    olga.fill("input[name=name]", "olga")
    olga.fill("input[name=password]", one_time)
    olga.click("form.stack button[type=submit]")
    olga.wait_for_url(site.url + "/account/password")
    olga.fill("input[name=current]", one_time)
    olga.fill("input[name=password]", "olga's own passphrase")
    olga.fill("input[name=repeat]", "olga's own passphrase")
    olga.click("form.stack button[type=submit]")
    olga.wait_for_url(site.url + "/")
    assert olga.locator("nav.nav a:has-text('Audit')").count() == 1  # an operator

    # the admin makes her a viewer: her next page has no audit link
    row.locator("select[name=role]").select_option("viewer")
    row.locator("button:has-text('Change role')").click()
    page.wait_for_selector(".flash-ok:has-text('olga is now viewer')")
    olga.goto(site.url + "/")
    assert olga.locator("nav.nav a:has-text('Audit')").count() == 0

    # disable: she is logged out at once
    page.locator('tr[data-user="olga"] button:has-text("Disable")').click()
    page.wait_for_selector(".flash-ok:has-text('olga disabled')")
    assert "Disabled" in page.inner_text('tr[data-user="olga"]')
    olga.goto(site.url + "/")
    assert "/login" in olga.url
    olga_context.close()

    # delete asks first
    page.locator('tr[data-user="olga"] summary:has-text("Delete")').click()
    assert axe_violations(page) == []
    page.locator('tr[data-user="olga"] button:has-text("Delete olga for good")').click()
    page.wait_for_selector(".flash-ok:has-text('olga deleted')")
    assert page.locator('tr[data-user="olga"]').count() == 0

    # the audit trail: filtered through the form, the filters in the URL
    page.goto(site.url + "/audit")
    page.fill(".audit-filters input[name=user]", "olga")
    page.fill(".audit-filters input[name=action]", "login")
    page.click(".audit-filters button[type=submit]")
    page.wait_for_url("**/audit?*user=olga*")
    assert "action=login" in page.url
    shown_actions = page.locator("table.audit .action").all_inner_texts()
    assert shown_actions and set(shown_actions) == {"login"}
    page.goto(site.url + "/audit?user=admin")
    actions = page.locator("table.audit .action").all_inner_texts()
    for action in ("add user", "set role", "disable user", "remove user"):
        assert action in actions, action
    assert axe_violations(page) == []
    page.screenshot(path=str(ARTIFACTS / "audit-filtered.png"), full_page=True)
    page.goto(site.url + "/audit?action=login+refused")
    assert "mallory" in page.inner_text("table.audit")
    assert unexpected(problems) == []
    context.close()


def test_ci_installs_the_pinned_axe_core() -> None:
    tests = Path(__file__).resolve().parent
    wanted = json.loads((tests / "package.json").read_text())["devDependencies"]["axe-core"]
    locked = json.loads((tests / "package-lock.json").read_text())
    assert locked["packages"]["node_modules/axe-core"]["version"] == wanted
    assert wanted[0].isdigit(), "pin an exact version"
    ci = (tests.parent / ".ci" / "run").read_text()
    assert "npm ci --prefix tests" in ci
