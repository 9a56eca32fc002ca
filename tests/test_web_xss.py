"""Hostile text in scheduler names, descriptions, action titles and results, log messages,
log fields, run errors, settings input and login input comes out inert on every page."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest

from supervisor.core.access import with_role
from supervisor.core.definitions import CustomAction, Kind, Options, Settings
from supervisor.core.records import Level, Outcome, Source
from supervisor.web.app import create_app
from tests.test_web_fakes import PASSWORD, Client, FakeBackend, make_world, noop
from tests.test_web_routes import FAST

SCRIPT = '<script>alert("xss")</script>'
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
SINGLE = "' onmouseover='alert(2)"
JS_URL = "javascript:alert(3)"
SVG = "<svg onload=alert(4)>"
PAYLOADS = (SCRIPT, ATTRIBUTE, SINGLE, JS_URL, SVG)


class _Scanner(HTMLParser):
    """Collects what a browser would run: scripts, event handlers, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.live: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and not (dict(attrs).get("src") or "").startswith("/static/"):
            self.live.append(f"<script> without our src: {attrs}")
        if tag == "img":
            self.live.append(f"<img {attrs}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.live.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action", "formaction", "xlink:href") and (
                (value or "").strip().lower().startswith(("javascript:", "data:"))
            ):
                self.live.append(f"<{tag} {name}={value!r}>")


def boom() -> str:
    raise RuntimeError(SCRIPT + ATTRIBUTE)


def hostile_options() -> list[Options]:
    return [
        Options(
            id="evil.one",
            name=SCRIPT + ATTRIBUTE,
            description=SINGLE + JS_URL + SVG,
            kind=Kind.SCHEDULE,
            runner=noop,
            defaults=Settings(pause_time=Settings().pause_time),
            actions=[
                CustomAction(id="show", title=SVG + SINGLE, action=lambda: SCRIPT + SVG),
                CustomAction(id="fail", title="Fail " + ATTRIBUTE, action=boom),
            ],
        ),
        Options(
            id="evil.cron",
            name=SINGLE,
            kind=Kind.CRON,
            runner=noop,
            defaults=Settings(cron="0 3 * * *"),
        ),
    ]


class Hostile:
    def __init__(self) -> None:
        self.use_cases, self.backend, self.audit, self.users, self.clock = make_world(
            hostile_options()
        )
        self.stop = threading.Event()
        self.app = create_app(
            self.use_cases, users=self.users, config=FAST, stop=self.stop, sleep=lambda _: None
        )
        backend: FakeBackend = self.backend
        run_id = backend.execute("evil.one", actor=SCRIPT)
        hostile_fields: dict[str, Any] = {SCRIPT: ATTRIBUTE, "url": JS_URL, "nested": {"k": SVG}}
        backend.log("evil.one", SCRIPT, level=Level.ERROR, **hostile_fields)
        backend.log("evil.one", ATTRIBUTE + SINGLE, source=Source.STDERR, run_id=run_id)
        backend.finish("evil.one", Outcome.FAILED, error=SCRIPT + ATTRIBUTE + JS_URL)
        self.use_cases.update_settings(
            with_role("ada", "admin"), "evil.cron", {"timezone": "Europe/Berlin"}
        )
        self.client = Client(self.app)
        assert self.client.login("ada").status == 303


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    h = Hostile()
    yield h
    h.stop.set()


def assert_inert(body: str, where: str) -> None:
    scanner = _Scanner()
    scanner.feed(body)
    scanner.close()
    assert scanner.live == [], f"live markup in {where}: {scanner.live}"
    for marker in ("<script>alert", "<img src=x", "<svg onload"):
        assert marker not in body, f"{marker!r} appears unescaped in {where}"


def test_the_scanner_would_see_live_markup() -> None:
    for sample in (
        '<p title="x" onmouseover="a()">',
        '<a href=" javascript:alert(1)">x</a>',
        "<script>alert(1)</script>",
        '<img src="x">',
    ):
        with pytest.raises(AssertionError):
            assert_inert(sample, "a sample")


PAGES = [
    "/",
    "/audit",
    "/schedulers/evil.one",
    "/schedulers/evil.one/history",
    "/schedulers/evil.one/logs",
    "/schedulers/evil.one/logs?level=error",
    "/schedulers/evil.cron",
]


@pytest.mark.parametrize("path", PAGES)
def test_pages_escape_every_hostile_value(hostile: Hostile, path: str) -> None:
    response = hostile.client.get(path)
    assert response.status == 200
    assert_inert(response.body, path)


def test_the_escaped_text_is_still_shown(hostile: Hostile) -> None:
    overview = hostile.client.get("/").body
    assert "&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;" in overview  # the name
    logs = hostile.client.get("/schedulers/evil.one/logs").body
    assert "&lt;script&gt;" in logs and "javascript:alert(3)" in logs  # as text, not a link


def test_action_results_and_errors_are_escaped(hostile: Hostile) -> None:
    client = hostile.client
    token = client.csrf("/schedulers/evil.one")
    shown = client.post("/schedulers/evil.one/actions/show", {"csrf": token})
    assert shown.status == 303
    page = client.get(shown.header("Location") or "/").body
    assert "&lt;script&gt;" in page and "&lt;svg onload" in page
    assert_inert(page, "action result")
    failed = client.post("/schedulers/evil.one/actions/fail", {"csrf": token})
    page = client.get(failed.header("Location") or "/").body
    assert "RuntimeError" in page
    assert_inert(page, "action error")
    assert_inert(client.get("/audit").body, "audit after actions")


def test_settings_input_is_escaped_when_shown_back(hostile: Hostile) -> None:
    client = hostile.client
    token = client.csrf("/schedulers/evil.cron")
    response = client.post(
        "/schedulers/evil.cron/settings",
        {"csrf": token, "cron": SCRIPT, "timezone": ATTRIBUTE, "timeout": SVG},
    )
    assert response.status == 400
    assert_inert(response.body, "settings errors")
    assert 'value="&lt;script&gt;' in response.body


def test_the_cron_preview_answers_json_only(hostile: Hostile) -> None:
    response = hostile.client.get("/schedulers/evil.cron/preview?cron=" + "%3Cscript%3E")
    assert response.header("Content-Type") == "application/json"
    data = json.loads(response.body)
    assert data["times"] == [] and data["error"]["field"] == "cron"


def test_login_input_is_escaped(hostile: Hostile) -> None:
    client = Client(hostile.app)
    token = client.csrf("/login?next=" + "%22%3E%3Cscript%3Ealert(1)%3C/script%3E")
    response = client.post("/login", {"csrf": token, "name": ATTRIBUTE, "password": "wrong"})
    assert response.status == 401
    assert_inert(response.body, "login page")


@pytest.mark.parametrize(
    "target", ["javascript:alert(1)", "//evil.example/", "https://evil.example/", "/\\evil"]
)
def test_login_never_redirects_off_site(hostile: Hostile, target: str) -> None:
    client = Client(hostile.app)
    token = client.csrf("/login")
    response = client.post(
        "/login", {"csrf": token, "name": "ada", "password": PASSWORD, "next": target}
    )
    assert response.status == 303
    assert response.header("Location") == "/"


def test_event_streams_carry_hostile_text_as_json_strings(hostile: Hostile) -> None:
    status, _headers, chunks = hostile.client.open_stream(
        "/events/schedulers/evil.one/logs?after=0"
    )
    try:
        assert status == 200
        text = ""
        for chunk in chunks:
            text += chunk.decode()
            if "event: log" in text:
                break
    finally:
        chunks.close()  # type: ignore[attr-defined]
    data_line = next(line for line in text.splitlines() if line.startswith("data: ["))
    records = json.loads(data_line[len("data: ") :])
    assert records[0]["message"] == SCRIPT  # the script sets it with textContent
    assert records[0]["fields"][SCRIPT] == ATTRIBUTE
