"""Logins: session rotation and expiry, logout, slowing down guessers, removed users,
the bootstrap admin, the trusted proxy header, and users kept in a real SqliteStore."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest

from supervisor.store.sqlite import SqliteStore
from supervisor.web.app import COOKIE_NAME, AdminConfig, create_app
from supervisor.web.auth import check_password, ensure_bootstrap_admin, subject_for
from supervisor.web.sessions import LoginThrottle, SessionStore
from tests.test_web_fakes import PASSWORD, Client, MemoryUser, fast_hash, make_world


class Tick:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(
    *,
    users: Any = None,
    config: AdminConfig | None = None,
    sessions: SessionStore | None = None,
    throttle: LoginThrottle | None = None,
) -> tuple[Any, list[float], Any]:
    use_cases, _backend, _audit, directory, _clock = make_world(users=users)
    slept: list[float] = []
    app = create_app(
        use_cases,
        users=directory,
        config=config,
        sessions=sessions,
        throttle=throttle,
        stop=threading.Event(),
        sleep=slept.append,
    )
    return app, slept, directory


def test_login_rotates_the_session_token() -> None:
    app, _, _ = build()
    client = Client(app)
    client.get("/login")
    anonymous = client.cookies[COOKIE_NAME]
    assert client.login("ada").status == 303
    logged_in = client.cookies[COOKIE_NAME]
    assert logged_in != anonymous
    stale = Client(app)
    stale.cookies[COOKIE_NAME] = anonymous
    assert stale.get("/login").status == 200  # the old token is no session any more
    assert client.get("/").status == 200


def test_logout_ends_the_session() -> None:
    app, _, _ = build()
    client = Client(app)
    client.login("otto")
    token = client.cookies[COOKIE_NAME]
    response = client.post("/logout", {"csrf": client.csrf("/")})
    assert response.status == 303 and response.header("Location") == "/login"
    assert COOKIE_NAME not in client.cookies
    replay = Client(app)
    replay.cookies[COOKIE_NAME] = token
    assert replay.get("/").status == 303


def test_sessions_expire_when_idle_and_after_their_lifetime() -> None:
    tick = Tick()
    sessions = SessionStore(idle_seconds=60, lifetime_seconds=300, monotonic=tick)
    app, _, _ = build(sessions=sessions)
    client = Client(app)
    client.login("vera")
    tick.now += 59
    assert client.get("/").status == 200
    for _ in range(4):  # keep it busy: only the lifetime ends it now
        tick.now += 59
        assert client.get("/").status == 200
    tick.now += 59
    assert client.get("/").status == 303


def test_an_idle_session_expires() -> None:
    tick = Tick()
    app, _, _ = build(sessions=SessionStore(idle_seconds=60, monotonic=tick))
    client = Client(app)
    client.login("vera")
    tick.now += 61
    response = client.get("/schedulers/jobs.repeat")
    assert response.status == 303
    assert response.header("Location") == "/login?next=/schedulers/jobs.repeat"


def test_a_wrong_password_is_slowed_down_and_then_refused() -> None:
    tick = Tick()
    throttle = LoginThrottle(free_attempts=3, base_wait=2, failure_delay=0.5, monotonic=tick)
    app, slept, _ = build(throttle=throttle)
    client = Client(app)
    for _ in range(3):
        token = client.csrf("/login")
        response = client.post("/login", {"csrf": token, "name": "ada", "password": "guess"})
        assert response.status == 401
        assert "Wrong user name or password" in response.body
    assert slept == [0.5, 0.5, 0.5]
    token = client.csrf("/login")
    refused = client.post("/login", {"csrf": token, "name": "ada", "password": PASSWORD})
    assert refused.status == 429  # even the right password waits
    assert "Try again in" in refused.body
    tick.now += 2.1
    token = client.csrf("/login")
    assert client.post("/login", {"csrf": token, "name": "ada", "password": PASSWORD}).status == 303


def test_guessing_from_one_address_slows_every_name_from_it() -> None:
    tick = Tick()
    throttle = LoginThrottle(free_attempts=2, base_wait=10, monotonic=tick)
    for name in ("a", "b"):
        throttle.failed(name, "10.0.0.9")
    assert throttle.wait_needed("c", "10.0.0.9") == pytest.approx(10)
    assert throttle.wait_needed("c", "10.0.0.10") == 0
    tick.now += 901
    assert throttle.wait_needed("c", "10.0.0.9") == 0  # forgotten


def test_the_wait_doubles_up_to_a_cap() -> None:
    tick = Tick()
    throttle = LoginThrottle(free_attempts=1, base_wait=1, max_wait=5, monotonic=tick)
    waits = []
    for _ in range(6):
        throttle.failed("ada", "1.2.3.4")
        waits.append(throttle.wait_needed("ada", "1.2.3.4"))
    assert waits == [1, 2, 4, 5, 5, 5]


def test_a_removed_user_is_logged_out_and_a_demoted_one_loses_rights() -> None:
    app, _, users = build()
    otto, ada = Client(app), Client(app)
    otto.login("otto")
    ada.login("ada")
    users.remove_user("otto")
    assert otto.get("/").status == 303
    users.users["ada"] = MemoryUser("ada", "viewer", fast_hash(PASSWORD))
    response = ada.post("/schedulers/jobs.repeat/execute", {"csrf": ada.csrf("/")})
    assert response.status == 403


def test_unknown_names_and_wrong_passwords_are_both_refused() -> None:
    _, _, users = build()
    assert check_password(users, "nobody", PASSWORD) is None
    assert check_password(users, "ada", "wrong") is None
    found = check_password(users, "ada", PASSWORD)
    assert found is not None and found.role == "admin"


# -- the bootstrap admin, with users in the real store ------------------------------------------


def test_the_first_start_creates_an_admin_and_prints_its_password_once(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    try:
        out = io.StringIO()
        password = ensure_bootstrap_admin(store, out=out)
        assert password is not None and password in out.getvalue()
        assert out.getvalue().count(password) == 1
        assert check_password(store, "admin", password) is not None
        again = io.StringIO()
        assert ensure_bootstrap_admin(store, out=again) is None
        assert again.getvalue() == ""
        subject = subject_for(store, "admin")
        assert subject is not None and subject.role == "admin"
    finally:
        store.close()


def test_no_bootstrap_admin_when_users_exist(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    try:
        store.add_user("vera", role="viewer", password_hash=fast_hash(PASSWORD))
        out = io.StringIO()
        assert ensure_bootstrap_admin(store, out=out) is None
        assert store.get_user("admin") is None and out.getvalue() == ""
    finally:
        store.close()


def test_logging_in_against_the_real_store(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    try:
        app, _, _ = build(users=store)
        client = Client(app)
        assert client.login("otto").status == 303
        assert "otto" in client.get("/").body
        store.remove_user("otto")
        assert client.get("/").status == 303
    finally:
        store.close()


# -- the trusted reverse proxy --------------------------------------------------------------


def test_a_proxy_user_header_is_ignored_unless_configured() -> None:
    app, _, _ = build()
    client = Client(app)
    assert client.get("/", headers={"X-Remote-User": "ada"}).status == 303


def test_a_configured_proxy_header_logs_in_known_users_from_trusted_addresses() -> None:
    config = AdminConfig(proxy_user_header="X-Remote-User")
    app, _, _ = build(config=config)
    proxied = Client(app)
    headers = {"X-Remote-User": "otto"}
    page = proxied.get("/", headers=headers)
    assert page.status == 200 and "otto" in page.body
    assert "Log out" not in page.body  # the proxy owns the login
    response = proxied.post(
        "/schedulers/jobs.repeat/execute",
        {"csrf": proxied.csrf("/schedulers/jobs.repeat", headers=headers)},
        headers=headers,
    )
    assert response.status == 303
    no_token = proxied.post("/schedulers/jobs.repeat/stop", {}, headers=headers)
    assert no_token.status == 403  # CSRF still applies
    outsider = Client(app, remote_addr="10.1.2.3")
    assert outsider.get("/", headers=headers).status == 303
    stranger = Client(app)
    assert stranger.get("/", headers={"X-Remote-User": "mallory"}).status == 303


def test_behind_a_proxy_the_forwarded_address_is_throttled() -> None:
    tick = Tick()
    throttle = LoginThrottle(free_attempts=1, base_wait=60, monotonic=tick)
    app, _, _ = build(config=AdminConfig(behind_proxy=True), throttle=throttle)
    guesser = Client(app)
    headers = {"X-Forwarded-For": "203.0.113.7"}
    token = guesser.csrf("/login")
    guesser.post("/login", {"csrf": token, "name": "x", "password": "y"}, headers=headers)
    assert throttle.wait_needed("other", "203.0.113.7") > 0
    assert throttle.wait_needed("other", "127.0.0.1") == 0


def test_behind_an_https_proxy_the_cookie_is_secure() -> None:
    app, _, _ = build(config=AdminConfig(behind_proxy=True))
    forwarded = Client(app).get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in (forwarded.header("Set-Cookie") or "")
    outsider = Client(app, remote_addr="10.9.9.9")
    spoofed = outsider.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in (spoofed.header("Set-Cookie") or "")  # not a trusted proxy


# -- the session store ------------------------------------------------------------------------


def test_the_session_store_drops_anonymous_sessions_first() -> None:
    sessions = SessionStore(max_sessions=3)
    token_user, _ = sessions.create("ada")
    anonymous = [sessions.create(None)[0] for _ in range(5)]
    assert len(sessions) == 3
    assert sessions.get(token_user) is not None
    assert sessions.get(anonymous[-1]) is not None
    assert sessions.get(anonymous[0]) is None


def test_session_tokens_are_random_and_kept_hashed() -> None:
    sessions = SessionStore()
    token, session = sessions.create("ada")
    other, _ = sessions.create("ada")
    assert token != other and len(token) >= 40
    assert token not in session.key and session.csrf != token
