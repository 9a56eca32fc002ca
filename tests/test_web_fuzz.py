"""Hostile input on every route: no reply is a 500, none shows a traceback.

Every route of the app (the route table is taken from the app itself, so a new route is
fuzzed too) gets a table of hostile values in each of its path arguments, query
parameters, form fields and the headers it reads, as an admin (who reaches the most
code) and anonymously; a hypothesis test throws arbitrary text at the same places.
Odd text already stored (lone surrogates in a run's error, a log record, an audit entry)
must not break any page or stream either (regression, issue 13.5).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.core.records import AuditEntry, Level, Outcome
from supervisor.web.app import create_app
from tests.test_web_fakes import FAST, ROLE_USERS, Client, Response, make_world

HOSTILE = [
    "",
    " ",
    "²",
    "①",
    "٣",
    "é",
    "🙂",
    "\udc80",
    "\x00",
    "\r\nSet-Cookie: x=y",
    "%",
    "%zz",
    "%ff%fe",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "-1",
    "1e9",
    "NaN",
    "9" * 40,
    "a" * 3000,
    "0x10",
    "∞",
]
QUERY_NAMES = ["next", "before", "after", "level", "run", "scheduler", "id", "cron", "timezone"]
FORM_NAMES = [
    "csrf",
    "name",
    "password",
    "current",
    "repeat",
    "next",
    "back",
    "start_delay",
    "pause_time",
    "cron",
    "timezone",
    "timeout",
    "disabled",
]
HEADERS = ["Last-Event-ID", "Cookie", "X-Forwarded-For", "X-Forwarded-Proto", "Content-Type"]


class World:
    def __init__(self) -> None:
        self.use_cases, self.backend, self.audit, self.users, self.clock = make_world()
        self.stop = threading.Event()
        self.app = create_app(
            self.use_cases, users=self.users, config=FAST, stop=self.stop, sleep=lambda _: None
        )
        self.admin = Client(self.app)
        assert self.admin.login(ROLE_USERS["admin"]).status == 303
        self.csrf = self.admin.csrf("/")


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    w = World()
    yield w
    w.stop.set()


def fill(rule: str, value: str | None = None) -> str:
    text = quote(value.encode("utf-8", "surrogatepass"), safe="") if value is not None else None
    sid = text if text is not None else "jobs.repeat"
    action = text if text is not None else "count"
    name = text if text is not None else "admin.css"
    return rule.replace("<sid>", sid).replace("<action>", action).replace("<name>", name)


def routes(world: World) -> list[tuple[str, str]]:
    return sorted(
        (r.method, r.rule)
        for r in world.app.routes
        if (r.method, r.rule) not in {("POST", "/logout")}  # would end the shared session
    )


def send(
    client: Client,
    method: str,
    path: str,
    *,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    if path.startswith("/events/") and method == "GET":
        status, out_headers, chunks = client.open_stream(path, headers=headers)
        try:
            first = next(chunks, b"").decode("utf-8", errors="replace")
        finally:
            chunks.close()  # type: ignore[attr-defined]
        return Response(status, out_headers, first)
    return client.request(method, path, form=form, headers=headers)


def sound(response: Response, what: object) -> None:
    assert response.status < 500, (what, response.status, response.body[:300])
    assert "Traceback" not in response.body, what


def quoted_query(name: str, value: str) -> str:
    return name + "=" + quote(value.encode("utf-8", errors="surrogatepass"), safe="")


def base_form(world: World) -> dict[str, str]:
    return {"csrf": world.csrf, "back": "/"}


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_path_arguments(world: World, value: str) -> None:
    for method, rule in routes(world):
        if "<" not in rule:
            continue
        path = fill(rule, value)
        form = base_form(world) if method == "POST" else None
        sound(send(world.admin, method, path, form=form), (method, rule, value))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_query_parameters(world: World, value: str) -> None:
    for method, rule in routes(world):
        for name in QUERY_NAMES:
            path = fill(rule) + "?" + quoted_query(name, value)
            form = base_form(world) if method == "POST" else None
            sound(send(world.admin, method, path, form=form), (method, rule, name, value))
        raw = fill(rule) + "?before=" + value.encode("utf-8", "surrogatepass").decode("latin-1")
        sound(send(world.admin, "GET" if method == "GET" else method, raw), (rule, "raw", value))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_form_fields(world: World, value: str) -> None:
    for method, rule in routes(world):
        if method != "POST" or rule == "/login":
            continue
        for name in FORM_NAMES:
            form = {**base_form(world), name: value}
            sound(send(world.admin, method, fill(rule), form=form), (rule, name, value))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_logins(world: World, value: str) -> None:
    anonymous = Client(world.app)
    token = anonymous.csrf("/login")
    for name in ("csrf", "name", "password", "next"):
        form = {"csrf": token, "name": "nobody", "password": "x", "next": "/", name: value}
        sound(anonymous.post("/login", form), ("login", name, value))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_headers(world: World, value: str) -> None:
    text = value.encode("utf-8", errors="surrogatepass").decode("latin-1")
    for method, rule in routes(world):
        for header in HEADERS:
            client = Client(world.app)
            client.cookies = dict(world.admin.cookies)
            form = base_form(world) if method == "POST" else None
            response = send(client, method, fill(rule), form=form, headers={header: text})
            sound(response, (method, rule, header, value))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_anonymously(world: World, value: str) -> None:
    for method, rule in routes(world):
        client = Client(world.app)
        path = fill(rule, value if "<" in rule else None) + "?" + quoted_query("next", value)
        form = {"csrf": value} if method == "POST" else None
        sound(send(client, method, path, form=form), (method, rule, value))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(max_size=40), choice=st.integers(min_value=0, max_value=10_000))
def test_arbitrary_text_anywhere(world: World, value: str, choice: int) -> None:
    every = routes(world)
    method, rule = every[choice % len(every)]
    name = QUERY_NAMES[choice % len(QUERY_NAMES)]
    field = FORM_NAMES[choice % len(FORM_NAMES)]
    path = fill(rule, value if "<" in rule and choice % 2 else None)
    path += "?" + quoted_query(name, value)
    form = {**base_form(world), field: value} if method == "POST" else None
    sound(send(world.admin, method, path, form=form), (method, rule, name, field, value))


def test_odd_stored_text_breaks_no_page() -> None:
    """Regression (issue 13.5): a lone surrogate in stored text made the overview 500."""
    w = World()
    try:
        odd = "bad \udc80 text \ud800"
        run_id = w.backend.execute("jobs.repeat", actor="ada")
        w.backend.log("jobs.repeat", odd, level=Level.ERROR, field=odd)
        w.backend.finish("jobs.repeat", Outcome.FAILED, error=odd)
        w.audit.add_audit(
            AuditEntry(
                time=datetime(2026, 3, 1, tzinfo=UTC),
                actor=odd,
                action=odd,
                scheduler_id="jobs.repeat",
                detail=odd,
                before={"x": odd},
                after={"x": "y"},
            )
        )
        for path in (
            "/",
            "/audit",
            "/schedulers/jobs.repeat",
            "/schedulers/jobs.repeat/history",
            "/schedulers/jobs.repeat/logs",
            f"/schedulers/jobs.repeat/logs?run={run_id}",
            "/events/status",
            "/events/schedulers/jobs.repeat/logs?after=0",
        ):
            response = send(w.admin, "GET", path)
            assert response.status == 200, (path, response.status, response.body[:300])
        logs = send(w.admin, "GET", "/schedulers/jobs.repeat/logs")
        assert "bad" in logs.body and "text" in logs.body
    finally:
        w.stop.set()


def test_a_non_ascii_csrf_token_is_refused_not_crashed(world: World) -> None:
    """Regression (issue 13.5): ``compare_digest`` raised TypeError on non-ASCII text."""
    response = world.admin.post("/schedulers/jobs.repeat/execute", {"csrf": "é" * 43})
    assert response.status == 403 and "security token" in response.body


@pytest.mark.parametrize("value", ["²", "①", "٣"])
def test_unicode_digits_are_not_cursors(world: World, value: str) -> None:
    """Regression (issue 13.5): ``str.isdigit`` accepts ² and ①; ``int`` does not."""
    for path in (
        f"/schedulers/jobs.repeat/logs?before={quote(value)}",
        f"/schedulers/jobs.repeat/logs?after={quote(value)}",
        f"/audit?before={quote(value)}",
    ):
        assert world.admin.get(path).status == 400, path
    status, _, chunks = world.admin.open_stream(
        "/events/schedulers/jobs.repeat/logs", headers={"Last-Event-ID": value}
    )
    chunks.close()  # type: ignore[attr-defined]
    assert status == 400
