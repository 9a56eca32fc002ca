"""Logins: session rotation and expiry, logout, slowing down guessers, removed users,
the bootstrap admin, the trusted proxy header, and users kept in a real SqliteStore."""

from __future__ import annotations

import io
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from supervisor.core.access import su
from supervisor.core.passwords import ScryptCost, hash_password, needs_rehash, verify_password
from supervisor.store.protocols import Changed, UserChange
from supervisor.store.sqlite import SqliteStore
from supervisor.usecases.accounts import Accounts
from supervisor.web.app import COOKIE_NAME, AdminConfig, create_app
from supervisor.web.auth import CHANGED_SINCE_LOGIN, ensure_bootstrap_admin, subject_for
from supervisor.web.guard import CHANGED_HERE
from supervisor.web.sessions import Attempt, LoginThrottle, SessionStore, Throttled
from tests.test_web_fakes import (
    FAST,
    PASSWORD,
    TEST_COST,
    Client,
    MemoryUser,
    MemoryUsers,
    fast_hash,
    make_world,
)
from tests.waiting import wait_for


class Tick:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(
    *,
    users: Any = None,
    config: AdminConfig = FAST,
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


def test_guessing_one_name_leaves_other_names_from_the_same_address_alone() -> None:
    """Regression (issue 13.3): every ssh -L user is 127.0.0.1; a guesser locked them all out."""
    tick = Tick()
    throttle = LoginThrottle(free_attempts=2, base_wait=10, monotonic=tick)
    app, _, _ = build(throttle=throttle)
    guesser = Client(app)
    for _ in range(6):
        token = guesser.csrf("/login")
        guesser.post("/login", {"csrf": token, "name": "ada", "password": "guess"})
    assert throttle.wait_needed("ada", "127.0.0.1") > 0
    assert Client(app).login("otto").status == 303  # same address, another name: works
    assert throttle.wait_needed("ada", "10.0.0.10") == 0
    tick.now += 901
    assert throttle.wait_needed("ada", "127.0.0.1") == 0  # forgotten


def test_attempts_are_counted_before_their_check() -> None:
    throttle = LoginThrottle(free_attempts=3, base_wait=60, monotonic=Tick())
    began = [throttle.begin("ada", "127.0.0.1") for _ in range(40)]
    assert sum(isinstance(b, Attempt) for b in began) == 3
    assert all(isinstance(b, Throttled) for b in began[3:])


def test_the_wait_doubles_up_to_a_cap() -> None:
    tick = Tick()
    throttle = LoginThrottle(free_attempts=1, base_wait=1, max_wait=5, monotonic=tick)
    waits = []
    for _ in range(6):
        attempt = throttle.begin("ada", "1.2.3.4")
        assert isinstance(attempt, Attempt)
        throttle.failed(attempt)
        waits.append(throttle.wait_needed("ada", "1.2.3.4"))
        tick.now += waits[-1]
    assert waits == [1, 2, 4, 5, 5, 5]


def test_the_global_cap_never_refuses_a_pair_that_did_not_fail() -> None:
    tick = Tick()
    throttle = LoginThrottle(
        free_attempts=3, global_failures=10, global_window=60, base_wait=1, monotonic=tick
    )
    for index in range(10):  # a spray: one guess for each of ten names
        attempt = throttle.begin(f"user{index}", "127.0.0.1")
        assert isinstance(attempt, Attempt)
        throttle.failed(attempt)
    refused = throttle.begin("user1", "127.0.0.1")  # failed before: over the global cap
    assert isinstance(refused, Throttled) and refused.wait > 0
    fresh = throttle.begin("ada", "127.0.0.1")  # has not failed: still checked
    assert isinstance(fresh, Attempt)
    throttle.succeeded(fresh)
    tick.now += 61
    assert isinstance(throttle.begin("user1", "127.0.0.1"), Attempt)


def test_logins_and_refused_logins_are_audited() -> None:
    throttle = LoginThrottle(free_attempts=1, base_wait=60, monotonic=Tick())
    app, _, users = build(throttle=throttle)
    client = Client(app)
    client.login("otto", "wrong password")
    for _ in range(5):  # throttled: refused unchecked, noted once
        client.login("otto", "wrong password")
    client.login("nobody", "whatever")
    client.login("ada")
    assert users.actions() == [
        ("otto", "login refused"),
        ("otto", "login refused"),
        ("nobody", "login refused"),
        ("ada", "login"),
    ]
    details = [e.detail or "" for e in users.entries]
    assert details[0] == "wrong password, from 127.0.0.1"
    assert "throttled" in details[1] and "unknown user" in details[2]


def test_a_login_rehashes_a_password_stored_with_a_lower_cost() -> None:
    users = MemoryUsers()
    weak = ScryptCost(n=1 << 8, r=8, p=1)
    users.add_user("ada", role="admin", password_hash=hash_password(PASSWORD, cost=weak))
    app, _, directory = build(users=users)
    assert Client(app).login("ada").status == 303
    stored = directory.get_user("ada").password_hash
    assert stored.startswith(f"scrypt${TEST_COST.n}$") and verify_password(PASSWORD, stored)
    assert not needs_rehash(stored, cost=TEST_COST)


def test_a_removed_user_is_logged_out_and_a_demoted_one_loses_rights() -> None:
    app, _, users = build()
    otto, ada = Client(app), Client(app)
    otto.login("otto")
    ada.login("ada")
    del users.users["otto"]
    assert otto.get("/").status == 303
    users.users["ada"] = MemoryUser("ada", "viewer", fast_hash(PASSWORD))
    response = ada.post("/schedulers/jobs.repeat/execute", {"csrf": ada.csrf("/")})
    assert response.status == 403


def test_unknown_names_and_wrong_passwords_are_both_refused() -> None:
    _, _, users = build()
    accounts = Accounts(users, cost=TEST_COST)
    assert accounts.authenticate("nobody", PASSWORD, address="t") is None
    assert accounts.authenticate("ada", "wrong", address="t") is None
    found = accounts.authenticate("ada", PASSWORD, address="t")
    assert found is not None and found.role == "admin" and not found.must_change_password


# -- the bootstrap admin, with users in the real store ------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bootstrap_password_is_shown_on_a_terminal_only(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    try:
        out = Terminal()
        made = ensure_bootstrap_admin(store, out=out, state_dir=tmp_path, cost=TEST_COST)
        assert made is not None and made.file is None
        assert out.getvalue().count(made.password) == 1
        assert not (tmp_path / "admin-password").exists()
        again = Terminal()
        assert ensure_bootstrap_admin(store, out=again, state_dir=tmp_path) is None
        assert again.getvalue() == ""
        subject = subject_for(store, "admin")
        assert subject is not None and subject.role == "admin"
    finally:
        store.close()


def test_a_service_gets_the_bootstrap_password_in_a_private_file(tmp_path: Path) -> None:
    """Regression (issue 13.7): the one-time password stayed readable in the journal."""
    store = SqliteStore.open(tmp_path / "state.db")
    try:
        journal = io.StringIO()  # not a terminal, like a service's output
        made = ensure_bootstrap_admin(store, out=journal, state_dir=tmp_path, cost=TEST_COST)
        assert made is not None and made.file == tmp_path / "admin-password"
        assert made.password not in journal.getvalue()
        assert str(made.file) in journal.getvalue()
        assert made.file.read_text().strip() == made.password
        assert stat.S_IMODE(made.file.stat().st_mode) == 0o600
    finally:
        store.close()


def test_no_bootstrap_admin_when_users_exist(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    try:
        store.add_user("vera", role="viewer", password_hash=fast_hash(PASSWORD))
        out = io.StringIO()
        assert ensure_bootstrap_admin(store, out=out, state_dir=tmp_path) is None
        assert store.get_user("admin") is None and out.getvalue() == ""
    finally:
        store.close()


def test_the_bootstrap_password_must_be_changed_at_first_login(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    try:
        made = ensure_bootstrap_admin(store, out=io.StringIO(), state_dir=tmp_path, cost=TEST_COST)
        assert made is not None and made.file is not None
        app, _, _ = build(users=store, config=replace(FAST, bootstrap_file=made.file))
        client = Client(app)
        response = client.login("admin", made.password)
        assert response.status == 303 and response.header("Location") == "/account/password"
        # limited to the password page until then
        assert client.get("/").header("Location") == "/account/password"
        assert client.get("/audit").header("Location") == "/account/password"
        token = client.csrf("/account/password")
        refused = client.post("/schedulers/jobs.repeat/execute", {"csrf": token})
        assert refused.status == 403
        stream_status, _, chunks = client.open_stream("/events/status")
        chunks.close()  # type: ignore[attr-defined]
        assert stream_status == 403
        short = client.post(
            "/account/password",
            {"csrf": token, "current": made.password, "password": "short", "repeat": "short"},
        )
        assert short.status == 400 and "at least 12 characters" in short.body
        new = "a much longer passphrase"
        changed = client.post(
            "/account/password",
            {"csrf": token, "current": made.password, "password": new, "repeat": new},
        )
        assert changed.status == 303, changed.body
        assert client.get("/").status == 200
        assert not made.file.exists()  # the one-time password is gone for good
        assert Client(app).login("admin", made.password).status == 401
        assert Client(app).login("admin", new).status == 303
        actions = [e.action for _, e in store.audit()]
        assert "change password" in actions and "login" in actions
    finally:
        store.close()


def test_a_user_changes_their_password_and_other_sessions_end() -> None:
    app, _, users = build()
    client, elsewhere = Client(app), Client(app)
    client.login("otto")
    elsewhere.login("otto")
    token = client.csrf("/account/password")
    wrong = client.post(
        "/account/password",
        {"csrf": token, "current": "nope", "password": "x" * 12, "repeat": "x" * 12},
    )
    assert wrong.status == 400 and "not your current password" in wrong.body
    new = "another long passphrase"
    response = client.post(
        "/account/password", {"csrf": token, "current": PASSWORD, "password": new, "repeat": new}
    )
    assert response.status == 303
    assert client.get("/").status == 200
    assert elsewhere.get("/").status == 303  # logged out
    assert verify_password(new, users.get_user("otto").password_hash)


def test_logging_in_against_the_real_store(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    try:
        app, _, _ = build(users=store)
        client = Client(app)
        assert client.login("otto").status == 303
        assert "otto" in client.get("/").body
        otto = store.get_user("otto")
        assert otto is not None
        assert (
            store.change_user("otto", UserChange(expected_hash=otto.password_hash, remove=True))
            is Changed.DONE
        )
        assert client.get("/").status == 303
    finally:
        store.close()


# -- the trusted reverse proxy --------------------------------------------------------------


def test_a_proxy_user_header_is_ignored_unless_configured() -> None:
    app, _, _ = build()
    client = Client(app)
    assert client.get("/", headers={"X-Remote-User": "ada"}).status == 303


def test_a_configured_proxy_header_logs_in_known_users_from_trusted_addresses() -> None:
    app, _, _ = build(config=replace(FAST, proxy_user_header="X-Remote-User"))
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


def test_a_forwarded_address_counts_only_from_a_configured_proxy() -> None:
    """Regression (issue 13.4): any local process could pick its throttle address."""
    tick = Tick()
    throttle = LoginThrottle(free_attempts=1, base_wait=60, monotonic=tick)
    app, _, _ = build(config=FAST, throttle=throttle)
    spoofer = Client(app)
    headers = {"X-Forwarded-For": "203.0.113.7"}
    token = spoofer.csrf("/login")
    spoofer.post("/login", {"csrf": token, "name": "x", "password": "y"}, headers=headers)
    assert throttle.wait_needed("x", "127.0.0.1") > 0  # its real address was counted
    assert throttle.wait_needed("x", "203.0.113.7") == 0

    throttle = LoginThrottle(free_attempts=1, base_wait=60, monotonic=tick)
    config = replace(FAST, forwarded_from=frozenset({"127.0.0.1"}))
    app, _, _ = build(config=config, throttle=throttle)
    proxied = Client(app)
    token = proxied.csrf("/login")
    proxied.post("/login", {"csrf": token, "name": "x", "password": "y"}, headers=headers)
    assert throttle.wait_needed("x", "203.0.113.7") > 0
    assert throttle.wait_needed("x", "127.0.0.1") == 0


def test_behind_an_https_proxy_the_cookie_is_secure() -> None:
    config = replace(FAST, forwarded_from=frozenset({"127.0.0.1"}))
    app, _, _ = build(config=config)
    forwarded = Client(app).get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in (forwarded.header("Set-Cookie") or "")
    outsider = Client(app, remote_addr="10.9.9.9")
    spoofed = outsider.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in (spoofed.header("Set-Cookie") or "")  # not a trusted proxy


def test_secure_cookies_can_be_forced() -> None:
    app, _, _ = build(config=replace(FAST, secure_cookies=True))
    assert "Secure" in (Client(app).get("/login").header("Set-Cookie") or "")


@pytest.mark.parametrize("variant", ["X_Remote_User", "x_remote_user", "X-Remote_User"])
def test_an_underscore_variant_of_the_proxy_header_is_refused(variant: str) -> None:
    """Regression (issue 13.4): WSGI folds X_Remote_User into X-Remote-User's key."""
    app, _, _ = build(config=replace(FAST, proxy_user_header="X-Remote-User"))
    client = Client(app)
    alone = client.get("/", headers={variant: "ada"})
    assert alone.status == 400 and "look-alike" in alone.body
    both = client.get("/", headers={"X-Remote-User": "vera", variant: "ada"})
    assert both.status == 400
    assert "ada" not in client.get("/").body


def test_the_proxy_header_twice_is_refused() -> None:
    app, _, _ = build(config=replace(FAST, proxy_user_header="X-Remote-User"))
    client = Client(app)
    environ_headers = {"X-Remote-User": "vera", "x-remote-user": "ada"}
    assert client.get("/", headers=environ_headers).status == 400


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


def test_a_flood_of_logins_waits_in_a_bounded_queue() -> None:
    throttle = LoginThrottle(max_parallel_checks=1, max_waiting_checks=2, check_wait=5)
    release = threading.Event()
    entered = threading.Barrier(3)  # the holder, and two waiters counted in

    def hold() -> None:
        with throttle.checking() as turn:
            assert turn
            entered.wait(5)
            release.wait(5)

    def wait_turn(results: list[bool]) -> None:
        entered.wait(5)
        with throttle.checking() as turn:
            results.append(turn)

    results: list[bool] = []
    holder = threading.Thread(target=hold)
    holder.start()
    waiters = [threading.Thread(target=wait_turn, args=(results,)) for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    wait_for(lambda: throttle.waiting == 2, timeout=5, what="two waiting checks")
    with throttle.checking() as turn:
        assert turn is False  # the queue is full: busy at once, no thread held
    release.set()
    for thread in (holder, *waiters):
        thread.join(10)
    assert results == [True, True]


# -- sessions end when the account changes, wherever the change is made -----------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """The users store the Admin Center under test reads, a real SQLite file."""
    with SqliteStore.open(tmp_path / "state.db") as opened:
        yield opened


def _ended_at_login(client: Client, path: str = "/") -> str:
    """``path`` sends the client to the login page; that page's text (its notice)."""
    response = client.get(path)
    assert response.status == 303, response.body
    location = response.header("Location") or ""
    assert location.startswith("/login?next="), location
    page = client.get(location)
    assert page.status == 200 and 'action="/login"' in page.body
    return page.body


def test_regression_a_password_set_in_the_store_by_another_process_ends_the_session(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Regression: sessions lived in the server's memory only, so a password reset from
    the shell (``supervisor users passwd``, its own store connection) left them open."""
    with SqliteStore.open(tmp_path / "state.db") as shell:  # as the CLI opens it
        app, _, _ = build(users=store)
        otto = Client(app)
        otto.login("otto")
        assert otto.get("/").status == 200
        Accounts(shell, cost=TEST_COST).set_password(su("root"), "otto", "a brand new secret")
        page = _ended_at_login(otto, "/schedulers/jobs.repeat")
        assert "Your session ended because your account changed" in page
        assert "Your password was changed" in page
        assert otto.get("/").status == 303  # the old session is gone for good
        ended = [e for _, e in store.audit(action="session ended")]
        assert [(e.actor, e.detail) for e in ended] == [
            ("otto", f"{CHANGED_SINCE_LOGIN}, from 127.0.0.1")
        ]
        # The new password logs in again, and that session goes on.
        assert otto.login("otto", "a brand new secret").status == 303
        assert otto.get("/").status == 200


@pytest.mark.parametrize("change", ["password", "disable and enable"])
def test_regression_a_change_by_a_writer_that_knows_no_stamps_ends_the_session(
    store: SqliteStore, tmp_path: Path, change: str
) -> None:
    """Regression: a new password, or a disable and enable, written by code that knows
    nothing of stamps (the release before, during an upgrade; the sqlite3 shell) left
    the stamp, and the session went on. The database gives the login a new stamp for
    every changed hash."""
    app, _, _ = build(users=store)
    otto = Client(app)
    otto.login("otto")
    assert otto.get("/").status == 200
    if change == "password":
        statements = [("UPDATE users SET password_hash = ? WHERE name = 'otto'",
                       (fast_hash("a brand new secret"),))]  # fmt: skip
    else:
        statements = [
            ("UPDATE users SET password_hash = '!' || password_hash WHERE name = 'otto'", ()),
            ("UPDATE users SET password_hash = substr(password_hash, 2) WHERE name = 'otto'", ()),
        ]
    conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    try:
        for statement, values in statements:
            conn.execute(statement, values)
    finally:
        conn.close()
    assert "Your session ended" in _ended_at_login(otto)
    assert [e.actor for _, e in store.audit(action="session ended")] == ["otto"]


class HeldReads:
    """The real store, whose ``get_user`` calls, once ``hold`` is called, wait until
    ``count`` of them have arrived: requests that read the user at once."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._barrier: threading.Barrier | None = None

    def hold(self, count: int) -> None:
        self._barrier = threading.Barrier(count, timeout=30)

    def get_user(self, name: str) -> Any:
        found = self._store.get_user(name)
        if self._barrier is not None:
            self._barrier.wait()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("where", ["ended here", "another process"])
def test_regression_requests_of_one_stale_session_at_once_audit_its_end_once(
    store: SqliteStore, tmp_path: Path, where: str
) -> None:
    """Regression: several requests of a session whose account changed (a page, its event
    streams, a script's poll) arriving at once each ended it and each wrote a
    ``session ended`` entry. The request that ends it writes the entry; the others are
    sent to the login page without one."""
    users, sessions = HeldReads(store), SessionStore()
    app, _, _ = build(users=users, sessions=sessions)
    otto = Client(app)
    otto.login("otto")
    assert otto.get("/").status == 200
    if where == "ended here":  # as this server's Users page does after a change
        assert sessions.end_user("otto") == 1
        reason = CHANGED_HERE
    else:
        with SqliteStore.open(tmp_path / "state.db") as shell:
            Accounts(shell, cost=TEST_COST).set_password(su("root"), "otto", "a new secret")
        reason = CHANGED_SINCE_LOGIN
    count = 8
    users.hold(count)
    statuses: list[int] = []
    lock = threading.Lock()

    def request() -> None:
        client = Client(app)
        client.cookies = dict(otto.cookies)
        status = client.get("/").status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=request) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [303] * count
    ended = [e for _, e in store.audit(action="session ended")]
    assert [(e.actor, e.detail) for e in ended] == [("otto", f"{reason}, from 127.0.0.1")]


def test_a_disable_and_enable_in_between_requests_still_ends_the_session(
    store: SqliteStore,
) -> None:
    app, _, _ = build(users=store)
    otto = Client(app)
    otto.login("otto")
    accounts = Accounts(store, cost=TEST_COST)
    accounts.disable(su("root"), "otto")
    accounts.enable(su("root"), "otto")
    assert "Your session ended" in _ended_at_login(otto)


def test_a_role_change_keeps_the_session_and_holds_from_the_next_request(
    store: SqliteStore,
) -> None:
    app, _, _ = build(users=store)
    otto = Client(app)
    otto.login("otto")
    assert otto.get("/users").status == 403
    Accounts(store, cost=TEST_COST).set_role(su("root"), "otto", "admin")
    assert otto.get("/users").status == 200  # the next request acts as an admin
    Accounts(store, cost=TEST_COST).set_role(su("root"), "otto", "viewer")
    assert otto.get("/users").status == 403
    assert otto.get("/").status == 200  # still logged in
    assert [e for _, e in store.audit(action="session ended")] == []


def test_a_rehash_at_login_keeps_the_users_other_sessions(store: SqliteStore) -> None:
    cheap = ScryptCost(n=1 << 9, r=8, p=1)
    store.add_user("olga", role="operator", password_hash=hash_password(PASSWORD, cost=cheap))
    app, _, _ = build(users=store)
    first, second = Client(app), Client(app)
    first.login("olga")  # stores a hash of the current cost
    second.login("olga")
    assert first.get("/").status == 200 and second.get("/").status == 200


def test_a_post_with_an_ended_session_is_not_done_and_goes_to_the_login_page(
    store: SqliteStore,
) -> None:
    app, _, _ = build(users=store)
    otto = Client(app)
    otto.login("otto")
    token = otto.csrf("/")
    Accounts(store, cost=TEST_COST).set_password(su("root"), "otto", "a brand new secret")
    response = otto.post(
        "/schedulers/jobs.repeat/execute", {"csrf": token, "back": "/schedulers/jobs.repeat"}
    )
    assert response.status == 303
    assert response.header("Location") == "/login?next=/schedulers/jobs.repeat"
    assert "Your session ended" in otto.get("/login?next=/schedulers/jobs.repeat").body
    assert [e.action for _, e in store.audit(actor="otto", action="execute")] == []
    # A script reading an event stream is told in plain text.
    script = Client(app)
    script.login("otto", "a brand new secret")
    Accounts(store, cost=TEST_COST).set_password(su("root"), "otto", "another new secret")
    refused = script.get("/events/status")
    assert refused.status == 401 and "Your session ended" in refused.body


def test_a_proxy_session_whose_user_changed_is_made_again_by_the_proxy(
    store: SqliteStore,
) -> None:
    config = replace(FAST, proxy_user_header="X-Remote-User")
    app, _, _ = build(users=store, config=config)
    client = Client(app)
    header = {"X-Remote-User": "otto"}
    assert client.get("/", headers=header).status == 200
    first = dict(client.cookies)
    Accounts(store, cost=TEST_COST).set_password(su("root"), "otto", "a brand new secret")
    assert client.get("/", headers=header).status == 200  # the proxy vouches again
    assert client.cookies != first
    Accounts(store, cost=TEST_COST).disable(su("root"), "otto")
    assert client.get("/", headers=header).status == 303
