"""The user-management page and the audit trail's filters, over a real SQLite store.

An admin lists, adds (with a one-time password), re-roles, disables, enables, deletes
users and resets passwords; each change is audited, ends the affected user's sessions
where it should, and is refused to anyone else. Logins and refused logins land in the
audit trail with user and address, never the password. The audit page filters by user,
action, scheduler and dates given in the URL.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from supervisor.core.records import AuditEntry
from supervisor.store.sqlite import SqliteStore
from supervisor.usecases.schedulers import UseCases
from supervisor.web.app import create_app
from tests.test_web_fakes import FAST, PASSWORD, Client, make_world


@dataclass
class World:
    app: Any
    store: SqliteStore

    def client(self, name: str | None = None, password: str = PASSWORD) -> Client:
        client = Client(self.app)
        if name is not None:
            response = client.login(name, password)
            assert response.status == 303, response.body
        return client

    def actions(self) -> list[tuple[str, str, str]]:
        return [(e.actor, e.action, e.detail or "") for _, e in self.store.audit(limit=1000)][::-1]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = SqliteStore.open(tmp_path / "state.db")
    use_cases, backend, _audit, directory, clock = make_world(users=store)
    # the use cases read the same trail the accounts write, as in the product
    use_cases = UseCases(use_cases.registry, backend=backend, audit=store, clock=clock)
    stop = threading.Event()
    app = create_app(use_cases, users=directory, config=FAST, stop=stop, sleep=lambda _: None)
    yield World(app, store)
    stop.set()
    store.close()


def post(client: Client, path: str, **form: str) -> Any:
    return client.post(path, {"csrf": client.csrf("/users"), "back": "/users", **form})


def notice(client: Client) -> str:
    """The text of the page's notices (flashes) after a redirect to /users."""
    body = client.get("/users").body
    return " ".join(re.findall(r'<div class="flash[^"]*">(.*?)</div>', body, re.S))


def one_time_password(text: str) -> str:
    match = re.search(r"one-time password: (\S+)", text)
    assert match is not None, text
    return match.group(1)


def test_an_admin_sees_every_user_with_their_role(world: World) -> None:
    body = world.client("ada").get("/users").body
    for name, role in (("ada", "admin"), ("otto", "operator"), ("vera", "viewer")):
        row = re.search(rf'<tr data-user="{name}".*?</tr>', body, re.S)
        assert row is not None, name
        assert f'value="{role}" selected' in row.group(0) or f"role-{role}" in row.group(0)
    assert 'href="/users"' in body  # in the navigation


def test_others_do_not_see_the_page_nor_the_link(world: World) -> None:
    for name in ("otto", "vera"):
        client = world.client(name)
        assert 'href="/users"' not in client.get("/").body
        assert client.get("/users").status == 403


def test_add_a_user_with_a_one_time_password_changed_at_the_first_login(world: World) -> None:
    admin = world.client("ada")
    assert post(admin, "/users/add", name="bob", role="operator").status == 303
    shown = notice(admin)
    password = one_time_password(shown)
    assert "must be changed at the first login" in shown
    assert notice(admin) == ""  # shown once only
    assert world.store.get_user("bob") is not None
    bob = world.client()
    response = bob.login("bob", password)
    assert response.header("Location") == "/account/password"
    assert bob.get("/").header("Location") == "/account/password"
    token = bob.csrf("/account/password")
    changed = bob.post(
        "/account/password",
        {
            "csrf": token,
            "current": password,
            "password": "bob's own pass",
            "repeat": "bob's own pass",
        },
    )
    assert changed.status == 303
    assert bob.get("/").status == 200
    assert ("ada", "add user", "bob (operator)") in world.actions()
    assert all(password not in detail for _, _, detail in world.actions())


def test_add_with_a_typed_password_and_refusals_stay_on_the_page(world: World) -> None:
    admin = world.client("ada")
    post(admin, "/users/add", name="carol", role="viewer", password="a typed one-time pass")
    assert "the password you typed" in notice(admin)
    carol = world.client()
    assert carol.login("carol", "a typed one-time pass").header("Location") == ("/account/password")
    response = post(admin, "/users/add", name="carol", role="viewer")
    assert response.header("Location") == "/users"
    assert "already exists" in notice(admin)
    post(admin, "/users/add", name="bad name!", role="viewer")
    assert "use letters, digits" in notice(admin)
    post(admin, "/users/add", name="dave", role="root")
    assert "choose one of" in notice(admin)
    assert world.store.get_user("dave") is None


def test_change_a_role_takes_effect_at_the_next_request(world: World) -> None:
    otto = world.client("otto")
    assert otto.get("/audit").status == 200
    admin = world.client("ada")
    post(admin, "/users/role", name="otto", role="viewer")
    assert "otto is now viewer" in notice(admin)
    assert otto.get("/audit").status == 403
    assert ("ada", "set role", "otto: operator -> viewer") in world.actions()


def test_disable_logs_out_and_refuses_logins_enable_lets_in_again(world: World) -> None:
    vera = world.client("vera")
    admin = world.client("ada")
    post(admin, "/users/disable", name="vera")
    assert "vera disabled" in notice(admin)
    assert (
        vera.get("/").header(
            "Location",
        )
        is not None
    )
    assert vera.get("/").status == 303  # back to the login page
    assert world.client().login("vera").status == 401
    assert ("vera", "login refused") in [(a, b) for a, b, _ in world.actions()]
    assert "Disabled" in admin.get("/users").body
    post(admin, "/users/enable", name="vera")
    assert world.client().login("vera").status == 303
    actions = [(a, b) for a, b, _ in world.actions()]
    assert ("ada", "disable user") in actions and ("ada", "enable user") in actions


def test_delete_and_reset_password(world: World) -> None:
    otto = world.client("otto")
    admin = world.client("ada")
    post(admin, "/users/password", name="otto")
    password = one_time_password(notice(admin))
    assert otto.get("/").status == 303  # logged out
    assert world.client().login("otto").status == 401  # the old password is gone
    again = world.client()
    assert again.login("otto", password).header("Location") == "/account/password"
    post(admin, "/users/remove", name="otto")
    assert "otto deleted" in notice(admin)
    assert world.store.get_user("otto") is None
    assert again.get("/account/password").status == 303  # its session ended
    actions = [(a, b, d) for a, b, d in world.actions()]
    assert ("ada", "set password", "otto (one-time)") in actions
    assert ("ada", "remove user", "otto") in actions


def test_an_admin_cannot_remove_disable_or_demote_themselves(world: World) -> None:
    admin = world.client("ada")
    page = admin.get("/users").body
    own = re.search(r'<tr data-user="ada".*?</tr>', page, re.S)
    assert own is not None and "<form" not in own.group(0)  # no controls on one's own row
    for path, extra in (
        ("/users/remove", {}),
        ("/users/disable", {}),
        ("/users/role", {"role": "viewer"}),
    ):
        post(admin, path, name="ada", **extra)
        assert "your own account" in notice(admin), path
    assert world.store.get_user("ada") is not None
    assert admin.get("/users").status == 200


def test_refused_for_operators_and_viewers_and_nothing_changes(world: World) -> None:
    for name in ("otto", "vera"):
        client = world.client(name)
        token = client.csrf("/")
        before = world.actions()
        for path in (
            "/users/add",
            "/users/role",
            "/users/disable",
            "/users/remove",
            "/users/password",
        ):
            response = client.post(
                path, {"csrf": token, "name": "ada", "role": "viewer", "password": "x" * 20}
            )
            assert response.status == 403, (name, path)
        assert world.actions() == before
        assert world.store.get_user("ada") is not None


def test_logins_and_refused_logins_are_audited_without_the_password(world: World) -> None:
    world.client("vera")
    world.client().login("vera", "a wrong secret guess")
    world.client().login("mallory", "another secret guess")
    entries = [e for _, e in world.store.audit(limit=100)]
    logins = [(e.actor, e.action) for e in entries if e.action.startswith("login")]
    assert ("vera", "login") in logins
    assert ("vera", "login refused") in logins
    assert ("mallory", "login refused") in logins
    for entry in entries:
        assert "secret guess" not in f"{entry.detail}", entry
        if entry.action.startswith("login"):
            assert "from " in (entry.detail or "")  # the address
            assert entry.time.tzinfo is not None


def rows_of(body: str) -> list[tuple[str, str]]:
    """(who, what) of each audit row shown."""
    return re.findall(
        r'<td class="audit-who"><a[^>]*>([^<]*)</a></td>\s*'
        r'<td class="audit-what"><span class="action">([^<]*)</span>',
        body,
    )


def test_the_audit_page_filters_by_user_action_and_dates(world: World) -> None:
    day = datetime(2026, 3, 1, 12, tzinfo=UTC)
    for offset, actor, action in (
        (0, "ada", "start"),
        (1, "otto", "stop"),
        (2, "ada", "stop"),
        (3, "otto", "start"),
    ):
        world.store.add_audit(
            AuditEntry(
                time=day + timedelta(days=offset),
                actor=actor,
                action=action,
                scheduler_id="jobs.repeat",
            )
        )
    admin = world.client("ada")
    assert rows_of(admin.get("/audit?user=otto").body) == [("otto", "start"), ("otto", "stop")]
    assert rows_of(admin.get("/audit?action=stop").body) == [("ada", "stop"), ("otto", "stop")]
    assert rows_of(admin.get("/audit?user=ada&action=stop").body) == [("ada", "stop")]
    ranged = admin.get("/audit?from=2026-03-02&to=2026-03-03").body
    assert rows_of(ranged) == [("ada", "stop"), ("otto", "stop")]
    assert 'value="2026-03-02"' in ranged and 'value="2026-03-03"' in ranged  # kept in the form
    assert rows_of(admin.get("/audit?from=2026-03-04&scheduler=jobs.repeat").body) == [
        ("otto", "start")
    ]
    none = admin.get("/audit?user=nobody").body
    assert "No entry matches these filters" in none
    assert admin.get("/audit?from=yesterday").status == 400
    assert admin.get("/audit?from=2026-03-04&to=2026-03-01").status == 400


def test_the_older_link_keeps_the_filters(world: World) -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    for minute in range(60):
        world.store.add_audit(
            AuditEntry(
                time=day + timedelta(minutes=minute),
                actor="otto",
                action="start",
                scheduler_id=None,
            )
        )
    admin = world.client("ada")
    body = admin.get("/audit?user=otto&from=2026-03-01").body
    assert len(rows_of(body)) == 50
    match = re.search(r'href="(/audit\?[^"]*before=[^"]*)"', body)
    assert match is not None
    link = match.group(1).replace("&amp;", "&")
    assert "user=otto" in link and "from=2026-03-01" in link
    assert rows_of(admin.get(link).body) == [("otto", "start")] * 10


def test_a_disabled_user_named_by_a_trusted_proxy_is_not_let_in(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    use_cases, backend, _audit, directory, clock = make_world(users=store)
    use_cases = UseCases(use_cases.registry, backend=backend, audit=store, clock=clock)
    stop = threading.Event()
    config = replace(FAST, proxy_user_header="X-Remote-User")
    app = create_app(use_cases, users=directory, config=config, stop=stop, sleep=lambda _: None)
    try:
        world = World(app, store)
        headers = {"X-Remote-User": "otto"}
        proxied = Client(app)
        assert proxied.get("/", headers=headers).status == 200
        admin = world.client("ada")
        post(admin, "/users/disable", name="otto")
        assert proxied.get("/", headers=headers).status == 303  # to the login page
        post(admin, "/users/enable", name="otto")
        assert proxied.get("/", headers=headers).status == 200
    finally:
        stop.set()
        store.close()


def test_the_users_page_ends_sessions_as_the_shell_does_saying_why(world: World) -> None:
    """A reset, a disable and a delete made on this page end the user's sessions the way
    one made by ``supervisor users`` or on another host does: the next request goes to the
    login page, which says why, and the end is in the audit trail."""
    admin = world.client("ada")
    for path, name, reason in (
        ("/users/password", "otto", "Your password was changed"),
        ("/users/disable", "vera", "Your account was disabled"),
    ):
        user = world.client(name)
        post(admin, path, name=name)
        response = user.get("/")
        assert response.status == 303 and response.header("Location") == "/login?next=/"
        page = user.get("/login?next=/").body
        assert "Your session ended because your account changed" in page and reason in page
        assert user.get("/").status == 303  # and stays ended
    bob_password = "bob's own long pass"
    post(admin, "/users/add", name="bob", role="viewer", password=bob_password)
    bob = world.client()
    bob.login("bob", bob_password)
    bob.post(
        "/account/password",
        {
            "csrf": bob.csrf("/account/password"),
            "current": bob_password,
            "password": "bob's next long pass",
            "repeat": "bob's next long pass",
        },
    )
    assert bob.get("/").status == 200
    post(admin, "/users/remove", name="bob")
    assert "Your account was removed" in bob.get("/login").body
    ended = [(a, d.rsplit(", from", 1)[0]) for a, b, d in world.actions() if b == "session ended"]
    assert ended == [
        ("otto", "the password was changed or the user disabled since the login"),
        ("vera", "user disabled"),
        ("bob", "user removed"),
    ]
