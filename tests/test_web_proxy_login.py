"""Logins through a trusted proxy's user header are audited like password logins: once
per new session (not per request), as the user the header names, with the client's
address; a trail that cannot be written makes no session. Users and audit trail are a
real SqliteStore."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

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
    users: Any, *, config: AdminConfig = PROXIED, sessions: SessionStore | None = None
) -> Any:
    use_cases, _backend, _audit, directory, _clock = make_world(users=users)
    return create_app(
        use_cases,
        users=directory,
        accounts=Accounts(directory, cost=config.password_cost),
        config=config,
        sessions=sessions,
        stop=threading.Event(),
        sleep=lambda _seconds: None,
    )


def logins(store: SqliteStore) -> list[tuple[str, str | None]]:
    return [(e.actor, e.detail) for _, e in reversed(store.audit(action="login"))]


def test_a_proxy_login_is_audited_once_per_session(store: SqliteStore) -> None:
    tick = Tick()
    app = build(store, sessions=SessionStore(idle_seconds=60, monotonic=tick))
    browser = Client(app)
    for _ in range(5):
        assert browser.get("/", headers={HEADER: "otto"}).status == 200
    once = ("otto", f"through proxy header {HEADER}, from 127.0.0.1")
    assert logins(store) == [once]
    assert Client(app).get("/", headers={HEADER: "otto"}).status == 200  # another browser
    assert logins(store) == [once, once]
    tick.now += 61  # the session expired: the next request is a new login
    assert browser.get("/", headers={HEADER: "otto"}).status == 200
    assert browser.get("/", headers={HEADER: "otto"}).status == 200
    assert len(logins(store)) == 3
    assert browser.get("/", headers={HEADER: "vera"}).status == 200  # the proxy's user changed
    assert logins(store)[-1] == ("vera", f"through proxy header {HEADER}, from 127.0.0.1")
    assert len(logins(store)) == 4


def test_the_audited_address_is_the_client_a_trusted_proxy_forwards(store: SqliteStore) -> None:
    app = build(store, config=replace(PROXIED, forwarded_from=frozenset({"127.0.0.1"})))
    headers = {HEADER: "ada", "X-Forwarded-For": "203.0.113.9"}
    assert Client(app).get("/", headers=headers).status == 200
    assert logins(store) == [("ada", f"through proxy header {HEADER}, from 203.0.113.9")]


def test_no_login_is_audited_for_a_name_that_is_no_enabled_user(store: SqliteStore) -> None:
    app = build(store)
    accounts = Accounts(store)
    browser = Client(app)
    assert browser.get("/", headers={HEADER: "mallory"}).status == 303
    assert COOKIE_NAME not in browser.cookies
    from supervisor.core.access import su

    accounts.disable(su("root"), "vera")
    assert browser.get("/", headers={HEADER: "vera"}).status == 303
    assert logins(store) == []
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
