"""What the browser test modules share: a real manager with its Admin Center for Chromium
(``admin_center``), Debian's Chromium driven by Playwright (the ``browser`` fixture), a
page's console errors (``Problems``) and logging in.

Chromium is Debian's ``/usr/bin/chromium``, never a downloaded browser. Without it,
Playwright or axe-core (``npm ci --prefix tests``) the tests skip, or fail where CI
requires them (tests/required.py). Imports pytest, supervisor's manager service and
Admin Center, ``tests.http_session``, ``tests.required`` and the standard library;
Playwright only inside the ``browser`` fixture, so a run of a test app never imports it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from supervisor import Configurator
from supervisor.core.passwords import hash_password
from supervisor.service.manager_mode import RunOptions, Service
from supervisor.web.server import AdminServer, start_admin
from tests.http_session import HttpSession, bootstrap_password
from tests.required import skip_or_fail

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
ADMIN_PASSWORD = "the admin's own passphrase"


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """A user the Admin Center has from the start; ``temporary``: a one-time password."""

    name: str
    role: str
    password: str
    temporary: bool = False


VIEWER = Account(name="vic", role="viewer", password="viewer-password-123")
NEWBIE = Account(
    name="newbie", role="operator", password="one-time-password-for-newbie", temporary=True
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """A running Admin Center: its URL, and ``admin`` logged in over plain HTTP."""

    url: str
    admin_password: str
    admin: HttpSession

    def session(self) -> HttpSession:
        """A new HTTP session, not logged in."""
        return HttpSession(self.admin.host, self.admin.port)


def missing_browser() -> str | None:
    """Why Chromium cannot be driven here, or None when it can."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


def missing_axe() -> str | None:
    """Why axe-core cannot be injected here, or None when it can."""
    return None if AXE.is_file() else f"{AXE} is missing"


@contextmanager
def admin_center(
    app: Configurator,
    app_spec: str,
    state_dir: Path,
    *,
    admin_password: str = ADMIN_PASSWORD,
    accounts: Sequence[Account] = (),
) -> Iterator[Site]:
    """Run ``app`` (importable as ``app_spec``) in a real manager with its Admin Center on
    a free port, with ``accounts`` added and the admin's first login done (the bootstrap
    password is never printed); stop it all afterwards.

    Skips (or fails where required) without a browser to drive it.
    """
    skip_or_fail("browser", missing_browser())
    holder: list[AdminServer] = []
    out = io.StringIO()

    def factory(found: Any, store: Any, options: RunOptions) -> AdminServer:
        server = start_admin(found, store, options, out=out)
        for account in accounts:
            hashed = hash_password(account.password, temporary=account.temporary)
            store.add_user(account.name, role=account.role, password_hash=hashed)
        holder.append(server)
        return server

    options = RunOptions(
        app_spec=app_spec, state_dir=state_dir, admin=("127.0.0.1", 0), grace_seconds=1.0
    )
    service = Service(options, app=app, log=io.StringIO(), admin_factory=factory)
    service.start()
    try:
        server = holder[0]
        one_time = bootstrap_password(options.state_dir)
        assert one_time not in out.getvalue()
        admin = HttpSession(server.host, server.port)
        admin.first_login("admin", one_time, admin_password)
        yield Site(url=server.url, admin_password=admin_password, admin=admin)
    finally:
        service.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for the test module (skipped, or failed where required, without)."""
    skip_or_fail("browser", missing_browser())
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Problems:
    """Console errors and CSP violations seen by a page (there must be none)."""

    def __init__(self, page: Any) -> None:
        self.seen: list[str] = []
        page.on("console", lambda m: self.seen.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.seen.append(str(e)))


def log_in(page: Any, base: str, name: str, password: str) -> None:
    page.goto(base + "/")
    assert "/login" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(base + "/")


DESKTOP = {"width": 1280, "height": 900}


def new_page(browser: Any, **options: Any) -> tuple[Any, Any, Problems]:
    """A page in a new browser context (a desktop window unless ``options`` give another
    ``viewport``), and the problems it will see."""
    context = browser.new_context(**{"viewport": DESKTOP, **options})
    page = context.new_page()
    return context, page, Problems(page)
