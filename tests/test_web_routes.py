"""Every route of the Admin Center, without a session and with each role; CSRF; GETs that
must not change anything; the security headers and the session cookie.

The route table below is the contract: a route the app has but this table lacks fails
``test_every_route_is_listed``, so a new route cannot go in unprotected by accident.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from supervisor.core.access import ROLES, Permission, with_role
from supervisor.web.app import PUBLIC, AdminConfig, create_app
from tests.test_web_fakes import FAST, PASSWORD, ROLE_USERS, Client, make_world

LOGGED_IN = "logged-in"

# (method, rule) -> who may use it
ROUTES: dict[tuple[str, str], object] = {
    ("GET", "/static/<name>"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): LOGGED_IN,
    ("GET", "/account/password"): LOGGED_IN,
    ("POST", "/account/password"): LOGGED_IN,
    ("GET", "/"): Permission.LIST,
    ("GET", "/audit"): Permission.VIEW_AUDIT,
    ("GET", "/users"): Permission.VIEW_USERS,
    ("POST", "/users/add"): Permission.MANAGE_USERS,
    ("POST", "/users/role"): Permission.MANAGE_USERS,
    ("POST", "/users/disable"): Permission.MANAGE_USERS,
    ("POST", "/users/enable"): Permission.MANAGE_USERS,
    ("POST", "/users/remove"): Permission.MANAGE_USERS,
    ("POST", "/users/password"): Permission.RESET_PASSWORDS,
    ("GET", "/logs"): Permission.VIEW_LOGS,
    ("GET", "/schedulers/<sid>"): Permission.STATUS,
    ("GET", "/schedulers/<sid>/history"): Permission.STATUS,
    ("GET", "/schedulers/<sid>/logs"): Permission.VIEW_LOGS,
    ("GET", "/schedulers/<sid>/preview"): Permission.FIND_SETTINGS,
    ("POST", "/schedulers/<sid>/start"): Permission.START,
    ("POST", "/schedulers/<sid>/stop"): Permission.STOP,
    ("POST", "/schedulers/<sid>/pause"): Permission.STOP,
    ("POST", "/schedulers/<sid>/disable"): Permission.UPDATE_SETTINGS,
    ("POST", "/schedulers/<sid>/enable"): Permission.UPDATE_SETTINGS,
    ("POST", "/schedulers/<sid>/execute"): Permission.EXECUTE,
    ("POST", "/schedulers/<sid>/actions/<action>"): Permission.RUN_ACTION,
    ("POST", "/schedulers/<sid>/settings"): Permission.UPDATE_SETTINGS,
    ("POST", "/schedulers/<sid>/settings/reset"): Permission.RESET_SETTINGS,
    ("GET", "/events/status"): Permission.LIST,
    ("GET", "/events/schedulers/<sid>/logs"): Permission.VIEW_LOGS,
    ("GET", "/metrics"): "metrics",  # a scraper's bearer token, else a session with LIST
}


def path_of(rule: str) -> str:
    return (
        rule.replace("<sid>", "jobs.repeat")
        .replace("<action>", "count")
        .replace("<name>", "admin.css")
    )


def is_stream(rule: str) -> bool:
    return rule.startswith("/events/")


class World:
    def __init__(self, config: AdminConfig = FAST) -> None:
        self.use_cases, self.backend, self.audit, self.users, self.clock = make_world()
        self.stop = threading.Event()
        self.app = create_app(
            self.use_cases, users=self.users, config=config, stop=self.stop, sleep=lambda _: None
        )

    def client(self, role: str | None = None) -> Client:
        client = Client(self.app)
        if role is not None:
            response = client.login(ROLE_USERS[role])
            assert response.status == 303, response.body
        return client

    def changes(self) -> tuple[int, int, dict[str, Any]]:
        overrides = {sid: dict(slot.overrides) for sid, slot in self.backend.slots.items()}
        return len(self.backend.commands), len(self.audit.entries), overrides


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.stop.set()


def first_chunk(client: Client, path: str) -> tuple[int, str]:
    status, _headers, chunks = client.open_stream(path)
    try:
        return status, next(chunks, b"").decode()
    finally:
        chunks.close()  # type: ignore[attr-defined]


def call(world: World, client: Client, method: str, rule: str) -> Any:
    path = path_of(rule)
    if method == "GET" and is_stream(rule):
        status, text = first_chunk(client, path)
        return status, text, None
    if method == "GET":
        response = client.get(path)
        return response.status, response.body, response
    form = {"csrf": client.csrf("/") if client.cookies else ""}
    if rule == "/login":
        logged_in = client.get("/login").status == 303
        token = client.csrf("/" if logged_in else "/login")
        form = {"csrf": token, "name": "nobody", "password": "x"}
    response = client.post(path, form)
    return response.status, response.body, response


# -- the table is complete -----------------------------------------------------------------


def test_every_route_is_listed(world: World) -> None:
    found = {(route.method, route.rule) for route in world.app.routes}
    assert found == set(ROUTES), (
        "routes missing from ROUTES (classify them): "
        f"{sorted(found - set(ROUTES))}; listed but gone: {sorted(set(ROUTES) - found)}"
    )


def test_declared_access_matches_the_table(world: World) -> None:
    for route in world.app.routes:
        assert route.config.get("access") == ROUTES[(route.method, route.rule)], route.rule


# -- every route x role x method: the exact set each role may use --------------------------

ANONYMOUS = "anonymous"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
PATHS = sorted({rule for _, rule in ROUTES})

EVERYONE = {("GET", "/static/<name>"), ("GET", "/login"), ("POST", "/login")}
ANY_USER = EVERYONE | {
    ("POST", "/logout"),
    ("GET", "/account/password"),
    ("POST", "/account/password"),
}
VIEWER = ANY_USER | {
    ("GET", "/"),
    ("GET", "/schedulers/<sid>"),
    ("GET", "/schedulers/<sid>/history"),
    ("GET", "/schedulers/<sid>/logs"),
    ("GET", "/logs"),
    ("GET", "/schedulers/<sid>/preview"),
    ("GET", "/events/status"),
    ("GET", "/events/schedulers/<sid>/logs"),
    ("GET", "/metrics"),
}
OPERATOR = VIEWER | {
    ("GET", "/audit"),
    ("POST", "/schedulers/<sid>/start"),
    ("POST", "/schedulers/<sid>/stop"),
    ("POST", "/schedulers/<sid>/pause"),
    ("POST", "/schedulers/<sid>/execute"),
    ("POST", "/schedulers/<sid>/actions/<action>"),
}
ADMIN = OPERATOR | {
    ("POST", "/schedulers/<sid>/disable"),
    ("POST", "/schedulers/<sid>/enable"),
    ("POST", "/schedulers/<sid>/settings"),
    ("POST", "/schedulers/<sid>/settings/reset"),
    ("GET", "/users"),
    ("POST", "/users/add"),
    ("POST", "/users/role"),
    ("POST", "/users/disable"),
    ("POST", "/users/enable"),
    ("POST", "/users/remove"),
    ("POST", "/users/password"),
}
# Written out, not derived from ROLES: a permission moved between roles fails here.
ALLOWED = {ANONYMOUS: EVERYONE, "viewer": VIEWER, "operator": OPERATOR, "admin": ADMIN}


def outcome(world: World, role: str, method: str, rule: str) -> tuple[str, int]:
    """What happened: ``allowed``, ``login`` (sent to log in), ``denied`` or ``no-method``."""
    client = Client(world.app) if role == ANONYMOUS else world.client(role)
    before = world.changes()
    if (method, rule) in ROUTES:
        status, body, response = call(world, client, method, rule)
    else:
        response = client.request(method, path_of(rule))
        status, body = response.status, response.body
    if status == 405:
        assert world.changes() == before
        return "no-method", status
    location = (response.header("Location") or "") if response is not None else ""
    if status == 303 and location.startswith("/login?next="):
        return "login", status
    if (status == 401 and (is_stream(rule) or rule.endswith("/preview"))) or (
        status == 403 and "log in first" in body
    ):
        assert world.changes() == before
        return "login", status
    if status == 403:
        assert world.changes() == before, (role, method, rule)
        return "denied", status
    return "allowed", status


@pytest.mark.parametrize("role", [ANONYMOUS, *sorted(ROLES)])
def test_each_role_may_use_exactly_its_routes(world: World, role: str) -> None:
    seen: dict[tuple[str, str], tuple[str, int]] = {}
    for rule in PATHS:
        for method in METHODS:
            seen[(method, rule)] = outcome(world, role, method, rule)
    allowed = {key for key, (what, _) in seen.items() if what == "allowed"}
    assert allowed == ALLOWED[role], (
        f"{role}: allowed but should not be {sorted(allowed - ALLOWED[role])};"
        f" refused but should be allowed {sorted(ALLOWED[role] - allowed)}"
    )
    for key, (what, status) in seen.items():
        if key not in ROUTES:
            assert what == "no-method", (role, key, status)
        elif key not in ALLOWED[role]:
            assert what == ("login" if role == ANONYMOUS else "denied"), (role, key, status)


def test_the_table_agrees_with_the_roles() -> None:
    for role in ROLES:
        by_permission = {
            key
            for key, access in ROUTES.items()
            if access in (PUBLIC, LOGGED_IN)
            or access in ROLES[role]
            or (access == "metrics" and Permission.LIST in ROLES[role])
        }
        assert by_permission == ALLOWED[role], role


@pytest.mark.parametrize("role", sorted(ROLES))
def test_an_allowed_stream_opens(world: World, role: str) -> None:
    client = world.client(role)
    for rule in ("/events/status", "/events/schedulers/<sid>/logs"):
        status, text = first_chunk(client, path_of(rule))
        assert status == 200 and text.startswith("retry:"), (role, rule)


def test_a_viewer_sees_no_control_buttons(world: World) -> None:
    page = world.client("viewer").get("/schedulers/jobs.repeat").body
    for action in ("execute", "start", "stop", "actions/count", "settings", "settings/reset"):
        assert f'action="/schedulers/jobs.repeat/{action}"' not in page
    assert "Save settings" not in page
    assert "Audit" not in page  # viewers may not read the audit trail


def test_an_admin_sees_every_control(world: World) -> None:
    page = world.client("admin").get("/schedulers/jobs.repeat").body
    for action in ("execute", "start", "stop", "actions/count", "settings", "settings/reset"):
        assert f'action="/schedulers/jobs.repeat/{action}"' in page


# -- CSRF ------------------------------------------------------------------------------------

POSTS = sorted(rule for (method, rule) in ROUTES if method == "POST")


@pytest.mark.parametrize("rule", POSTS)
def test_a_post_without_csrf_token_is_refused(world: World, rule: str) -> None:
    client = world.client("admin")
    before = world.changes()
    response = client.post(path_of(rule), {"name": "ada", "password": PASSWORD})
    assert response.status == 403
    assert "security token" in response.body
    assert world.changes() == before


@pytest.mark.parametrize("rule", POSTS)
def test_a_post_with_a_foreign_csrf_token_is_refused(world: World, rule: str) -> None:
    client = world.client("admin")
    other = world.client("admin")
    foreign = other.csrf("/")
    assert foreign != client.csrf("/")
    before = world.changes()
    response = client.post(path_of(rule), {"csrf": foreign, "name": "ada", "password": PASSWORD})
    assert response.status == 403
    assert world.changes() == before


def test_the_login_form_needs_its_csrf_token(world: World) -> None:
    client = Client(world.app)
    client.get("/login")
    response = client.post("/login", {"name": "ada", "password": PASSWORD, "csrf": "guess"})
    assert response.status == 403
    assert client.get("/").status == 303  # still not logged in


def test_a_form_sent_as_json_is_refused(world: World) -> None:
    client = world.client("admin")
    environ_headers = {"Content-Type": "application/json"}
    response = client.request(
        "POST",
        "/schedulers/jobs.repeat/execute",
        form={"csrf": client.csrf("/")},
        headers=environ_headers,
    )
    assert response.status == 415
    assert world.backend.commands == []


# -- GET never changes state ------------------------------------------------------------------

GET_VARIANTS = [
    "/",
    "/audit",
    "/audit?scheduler=jobs.repeat",
    "/schedulers/jobs.repeat",
    "/schedulers/jobs.repeat?execute=1",
    "/schedulers/jobs.repeat/history",
    "/schedulers/jobs.repeat/logs",
    "/schedulers/jobs.repeat/logs?level=error&run=x",
    "/schedulers/jobs.repeat/logs?at=3",
    "/logs?q=x&fields=a%3D1&level=error&since=1h&scheduler=jobs.repeat",
    "/schedulers/jobs.nightly/preview?cron=0+4+*+*+*&timezone=UTC",
    "/schedulers/jobs.repeat/execute",
    "/schedulers/jobs.repeat/stop",
    "/schedulers/jobs.repeat/settings?pause_time=1s",
    "/schedulers/jobs.repeat/settings/reset",
    "/schedulers/jobs.repeat/actions/count",
    "/logout",
    "/static/admin.js",
]


def test_get_never_changes_state(world: World) -> None:
    client = world.client("admin")
    world.use_cases.execute(with_role("ada", "admin"), "jobs.repeat")
    world.backend.log("jobs.repeat", "one line")
    before = world.changes()
    statuses = {}
    for path in GET_VARIANTS:
        statuses[path] = client.get(path).status
    for rule in ("/events/status", "/events/schedulers/jobs.repeat/logs"):
        statuses[rule] = first_chunk(client, rule)[0]
    assert world.changes() == before
    assert statuses["/schedulers/jobs.repeat/execute"] == 405
    assert statuses["/logout"] == 405
    assert client.get("/").status == 200  # still logged in: GET /logout did nothing


# -- headers and cookies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/login", "/static/admin.css", "/no/such/page", "/schedulers/jobs.repeat"]
)
def test_every_response_carries_a_csp_without_inline_script(world: World, path: str) -> None:
    response = world.client("admin").get(path)
    csp = response.header("Content-Security-Policy")
    assert csp is not None
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("X-Frame-Options") == "DENY"


def test_pages_have_no_inline_script_or_style(world: World) -> None:
    client = world.client("admin")
    for path in ("/", "/login", "/schedulers/jobs.repeat", "/schedulers/jobs.repeat/logs"):
        body = client.get(path).body
        assert not re.search(r"<script(?![^>]*\bsrc=)", body), path
        assert " style=" not in body and "<style" not in body, path
        assert not re.search(r"\son[a-z]+=", body), path


def test_the_session_cookie_is_httponly_and_strict(world: World) -> None:
    client = Client(world.app)
    cookie = client.get("/login").header("Set-Cookie")
    assert cookie is not None
    parts = [p.strip() for p in cookie.split(";")]
    assert "HttpOnly" in parts and "SameSite=Strict" in parts and "Path=/" in parts
    assert "Secure" not in parts  # plain HTTP on loopback


def test_the_cookie_is_secure_over_https(world: World) -> None:
    cookie = Client(world.app, https=True).get("/login").header("Set-Cookie")
    assert cookie is not None
    assert "Secure" in [p.strip() for p in cookie.split(";")]
