"""Logins through a trusted proxy's user header are audited like password logins: once
per user and client address an hour (not per request, nor per session: a client keeping
no cookie makes one each request), as the user the header names, with the client's
address; refused ones too; a trail that cannot be written makes no session. Such
cookie-less clients cannot log anyone else out. Users and audit trail are a real
SqliteStore."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from supervisor.core.clock import FakeClock
from supervisor.core.errors import StoreError
from supervisor.core.records import AuditEntry
from supervisor.store.sqlite import SqliteStore
from supervisor.usecases.accounts import Accounts
from supervisor.web.app import COOKIE_NAME, AdminConfig, create_app
from supervisor.web.sessions import SessionStore
from tests.test_web_auth import Tick
from tests.test_web_fakes import FAST, Client, make_world

HEADER = "X-Remote-User"
PROXIED = replace(FAST, proxy_user_header=HEADER)


class FailingTrail:
    """The store, except that writing the audit trail fails while ``failing`` is set."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.failing = False

    def add_audit(self, entry: AuditEntry) -> None:
        if self.failing:
            raise StoreError("disk I/O error")
        self._store.add_audit(entry)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "state.db") as opened:
        yield opened


def build(
    users: Any,
    *,
    config: AdminConfig = PROXIED,
    sessions: SessionStore | None = None,
    clock: FakeClock | None = None,
) -> Any:
    use_cases, _backend, _audit, directory, _clock = make_world(users=users)
    return create_app(
        use_cases,
        users=directory,
        accounts=Accounts(directory, cost=config.password_cost, clock=clock),
        config=config,
        sessions=sessions,
        stop=threading.Event(),
        sleep=lambda _seconds: None,
    )


def logins(store: SqliteStore) -> list[tuple[str, str | None]]:
    return [(e.actor, e.detail) for _, e in reversed(store.audit(action="login"))]


def test_a_proxy_login_is_audited_once_per_user_and_address_an_hour(store: SqliteStore) -> None:
    tick, clock = Tick(), FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    app = build(store, sessions=SessionStore(idle_seconds=60, monotonic=tick), clock=clock)
    browser = Client(app)
    for _ in range(5):
        assert browser.get("/", headers={HEADER: "otto"}).status == 200
    once = ("otto", f"through proxy header {HEADER}, from 127.0.0.1")
    assert logins(store) == [once]
    for _ in range(5):  # clients keeping no cookie: a new session each, no new audit row
        assert Client(app).get("/", headers={HEADER: "otto"}).status == 200
    assert logins(store) == [once]
    tick.now += 61  # the session expired: a new one, within the hour
    assert browser.get("/", headers={HEADER: "otto"}).status == 200
    assert logins(store) == [once]
    assert browser.get("/", headers={HEADER: "vera"}).status == 200  # the proxy's user changed
    vera = ("vera", f"through proxy header {HEADER}, from 127.0.0.1")
    assert logins(store) == [once, vera]
    clock.advance(3600)
    assert Client(app).get("/", headers={HEADER: "otto"}).status == 200
    assert logins(store) == [once, vera, once]


def test_cookie_less_proxy_requests_log_no_browser_out(store: SqliteStore) -> None:
    app = build(store, sessions=SessionStore(max_sessions=20))
    by_password, by_proxy = Client(app), Client(app)
    assert by_password.login("otto").status == 303
    assert by_password.get("/").status == 200
    assert by_proxy.get("/", headers={HEADER: "vera"}).status == 200
    token = by_proxy.cookies[COOKIE_NAME]
    assert by_proxy.get("/", headers={HEADER: "vera"}).status == 200  # it keeps its cookie
    for _ in range(200):  # a scraper behind the proxy, keeping no cookie
        assert Client(app).get("/", headers={HEADER: "ada"}).status == 200
    assert by_password.get("/").status == 200  # still logged in
    assert by_proxy.get("/", headers={HEADER: "vera"}).status == 200
    assert by_proxy.cookies[COOKIE_NAME] == token  # the same session, not a new login
    assert [actor for actor, _ in logins(store)] == ["otto", "vera", "ada"]


def test_the_audited_address_is_the_client_a_trusted_proxy_forwards(store: SqliteStore) -> None:
    app = build(store, config=replace(PROXIED, forwarded_from=frozenset({"127.0.0.1"})))
    headers = {HEADER: "ada", "X-Forwarded-For": "203.0.113.9"}
    assert Client(app).get("/", headers=headers).status == 200
    assert logins(store) == [("ada", f"through proxy header {HEADER}, from 203.0.113.9")]


def test_a_name_that_is_no_enabled_user_is_audited_as_refused(store: SqliteStore) -> None:
    app = build(store)
    accounts = Accounts(store)
    browser = Client(app)
    assert browser.get("/", headers={HEADER: "mallory"}).status == 303
    assert COOKIE_NAME not in browser.cookies
    from supervisor.core.access import su

    accounts.disable(su("root"), "vera")
    assert browser.get("/", headers={HEADER: "vera"}).status == 303
    assert logins(store) == []
    for _ in range(5):
        assert Client(app).get("/", headers={HEADER: "mallory"}).status == 303
        assert Client(app).get("/", headers={HEADER: "vera"}).status == 303
    refused = [(e.actor, e.detail) for _, e in reversed(store.audit(action="login refused"))]
    assert refused == [  # refused logins are audited too, once an hour each
        ("mallory", f"unknown user, through proxy header {HEADER}, from 127.0.0.1"),
        ("vera", f"user disabled, through proxy header {HEADER}, from 127.0.0.1"),
    ]
    assert Client(app).get("/", headers={HEADER: "otto"}).status == 200
    assert [actor for actor, _ in logins(store)] == ["otto"]


def test_a_proxy_login_whose_audit_cannot_be_written_makes_no_session(
    store: SqliteStore,
) -> None:
    trail = FailingTrail(store)
    app = build(trail)
    browser = Client(app)
    trail.failing = True
    refused = browser.get("/", headers={HEADER: "otto"})
    assert refused.status == 500
    assert COOKIE_NAME not in browser.cookies
    assert logins(store) == []
    trail.failing = False
    assert browser.get("/", headers={HEADER: "otto"}).status == 200
    assert [actor for actor, _ in logins(store)] == ["otto"]


def test_a_password_login_is_audited_as_before(store: SqliteStore) -> None:
    browser = Client(build(store))
    assert browser.login("otto").status == 303
    assert browser.get("/").status == 200
    assert logins(store) == [("otto", "from 127.0.0.1")]
