"""User management as use cases: permission checked, audit written, names validated;
passwords: their cost, their minimum length, changing them (use case and ``users passwd``),
one-time passwords and the bootstrap file."""

from __future__ import annotations

import io
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from supervisor.cli.main import main
from supervisor.core.access import su, with_role
from supervisor.core.errors import DefinitionError, PermissionDenied
from supervisor.core.passwords import (
    CURRENT_COST,
    ScryptCost,
    hash_password,
    is_temporary,
    needs_rehash,
    verify_password,
)
from supervisor.store.protocols import Store, StoredUser
from supervisor.store.sqlite import SqliteStore
from supervisor.usecases.accounts import Accounts, is_disabled
from tests.postgres import PostgresCluster, pg_cluster

__all__ = ["pg_cluster"]  # the fixture, used by name


def test_admins_manage_users_and_every_change_is_audited(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "state.db") as store:
        accounts = Accounts(store)
        admin = with_role("ada", "admin")
        accounts.add(admin, "olga", role="operator", password="correct horse battery")
        stored = store.get_user("olga")
        assert stored is not None and stored.role == "operator"
        assert verify_password("correct horse battery", stored.password_hash)
        assert [a.name for a in accounts.list(admin)] == ["olga"]
        accounts.remove(su("root"), "olga")
        assert store.get_user("olga") is None
        trail = [(e.actor, e.action, e.detail) for _, e in store.audit()]
        assert trail == [("root", "remove user", "olga"), ("ada", "add user", "olga (operator)")]


def test_operators_cannot_manage_users(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "state.db") as store:
        accounts = Accounts(store)
        with pytest.raises(PermissionDenied):
            accounts.add(with_role("olga", "operator"), "eve", role="admin", password="x")
        assert store.list_users() == []
        assert store.audit() == []


@pytest.mark.parametrize(
    ("name", "role", "password", "field"),
    [
        ("bad name!", "viewer", "pw", "name"),
        ("ok", "god", "pw", "role"),
        ("ok", "viewer", "", "password"),
        ("ok", "viewer", "eleven char", "password"),
        ("ok", "viewer", "x" * 2000, "password"),
    ],
)
def test_bad_accounts_are_refused_naming_the_field(
    tmp_path: Path, name: str, role: str, password: str, field: str
) -> None:
    with SqliteStore.open(tmp_path / "state.db") as store:
        with pytest.raises(DefinitionError) as caught:
            Accounts(store).add(su(), name, role=role, password=password)
        assert caught.value.field == field
        assert store.list_users() == []


def test_removing_a_missing_user_says_so(tmp_path: Path) -> None:
    with (
        SqliteStore.open(tmp_path / "state.db") as store,
        pytest.raises(DefinitionError, match="no user 'ghost'"),
    ):
        Accounts(store).remove(su(), "ghost")


CHEAP = ScryptCost(n=1 << 10)


def test_the_scrypt_cost_is_at_least_owasps_minimum() -> None:
    assert (CURRENT_COST.n, CURRENT_COST.r, CURRENT_COST.p) >= (1 << 17, 8, 1)
    assert CURRENT_COST.memory > 128 * 8 * (1 << 17)  # maxmem leaves room for the check
    stored = hash_password("a long enough password")
    assert stored.startswith(f"scrypt${1 << 17}$8$1$")
    assert verify_password("a long enough password", stored)
    assert not needs_rehash(stored)
    assert needs_rehash(hash_password("a long enough password", cost=CHEAP))
    assert needs_rehash("not a hash at all")


def test_malformed_or_planted_hashes_never_verify() -> None:
    good = hash_password("a long enough password", cost=CHEAP)
    scheme, n, r, p, salt, digest = good.split("$")
    for bad in (
        "",
        "plain",
        good + "$extra",
        "$".join([scheme, str(1 << 30), r, p, salt, digest]),  # would eat 128 GiB
        "$".join([scheme, "3", r, p, salt, digest]),  # not a power of two
        "$".join([scheme, n, r, p, "***", digest]),
    ):
        assert not verify_password("a long enough password", bad), bad


def test_a_temporary_password_is_marked_and_verifies() -> None:
    stored = hash_password("one-time password!", cost=CHEAP, temporary=True)
    assert is_temporary(stored) and verify_password("one-time password!", stored)
    assert not is_temporary(hash_password("one-time password!", cost=CHEAP))


def test_an_admin_sets_a_password_and_a_user_changes_their_own(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "state.db") as store:
        accounts = Accounts(store, cost=CHEAP)
        accounts.add(su("root"), "olga", role="viewer", password="first passphrase", temporary=True)
        assert accounts.must_change_password("olga")
        with pytest.raises(PermissionDenied):
            accounts.set_password(with_role("olga", "viewer"), "olga", "x" * 12)
        with pytest.raises(DefinitionError, match="current"):
            accounts.change_own_password(
                with_role("olga", "viewer"), current="wrong", new="second passphrase"
            )
        accounts.change_own_password(
            with_role("olga", "viewer"), current="first passphrase", new="second passphrase"
        )
        stored = store.get_user("olga")
        assert stored is not None and verify_password("second passphrase", stored.password_hash)
        assert not accounts.must_change_password("olga")
        accounts.set_password(su("root"), "olga", "third passphrase")
        with pytest.raises(DefinitionError, match="no user"):
            accounts.set_password(su("root"), "ghost", "third passphrase")
        trail = [(e.actor, e.action) for _, e in store.audit()]
        assert trail[:3] == [
            ("root", "set password"),
            ("olga", "change password"),
            ("olga", "change password refused"),
        ]


def test_users_passwd_sets_a_password_and_removes_the_bootstrap_file(tmp_path: Path) -> None:
    from supervisor.web.auth import ensure_bootstrap_admin

    with SqliteStore.open(tmp_path / "state.db") as store:
        made = ensure_bootstrap_admin(store, out=io.StringIO(), state_dir=tmp_path, cost=CHEAP)
    assert made is not None and made.file is not None and made.file.exists()
    runner = CliRunner()
    short = runner.invoke(
        main,
        ["users", "passwd", "admin", "--password-stdin", "--state-dir", str(tmp_path)],
        input="short\n",
    )
    assert short.exit_code == 2 and "at least 12 characters" in short.output
    assert made.file.exists()
    changed = runner.invoke(
        main,
        ["users", "passwd", "admin", "--password-stdin", "--state-dir", str(tmp_path)],
        input="the admin's new passphrase\n",
    )
    assert changed.exit_code == 0, changed.output
    assert not made.file.exists()
    prompted = runner.invoke(
        main,
        ["users", "passwd", "admin", "--state-dir", str(tmp_path)],
        input="typed at the prompt\ntyped at the prompt\n",
    )
    assert prompted.exit_code == 0, prompted.output
    assert "typed at the prompt" not in prompted.output  # not echoed
    with SqliteStore.open(tmp_path / "state.db") as store:
        stored = store.get_user("admin")
        assert stored is not None
        assert verify_password("typed at the prompt", stored.password_hash)
        assert not is_temporary(stored.password_hash)
    missing = runner.invoke(
        main,
        ["users", "passwd", "ghost", "--password-stdin", "--state-dir", str(tmp_path)],
        input="a long enough one\n",
    )
    assert missing.exit_code == 2 and "no user 'ghost'" in missing.output


def test_users_add_without_a_password_makes_a_one_time_one(tmp_path: Path) -> None:
    added = CliRunner().invoke(
        main, ["users", "add", "olga", "--role", "viewer", "--state-dir", str(tmp_path)]
    )
    assert added.exit_code == 0, added.output
    assert "one-time" in added.output
    with SqliteStore.open(tmp_path / "state.db") as store:
        stored = store.get_user("olga")
        assert stored is not None and is_temporary(stored.password_hash)


FAST_COST = ScryptCost(n=1 << 10, r=8, p=1)


def test_a_disabled_user_cannot_log_in_and_keeps_its_password_for_enable(
    tmp_path: Path,
) -> None:
    with SqliteStore.open(tmp_path / "state.db") as store:
        accounts = Accounts(store, cost=FAST_COST)
        admin = with_role("ada", "admin")
        accounts.add(admin, "olga", role="operator", password="olga's first password")
        accounts.disable(admin, "olga")
        assert accounts.authenticate("olga", "olga's first password", address="10.0.0.7") is None
        last = store.audit(limit=1)[0][1]
        assert (last.actor, last.action, last.detail) == (
            "olga",
            "login refused",
            "user disabled, from 10.0.0.7",
        )
        # a reset while disabled keeps the user disabled
        accounts.set_password(admin, "olga", "a one-time password", temporary=True)
        assert accounts.authenticate("olga", "a one-time password", address="t") is None
        accounts.enable(admin, "olga")
        found = accounts.authenticate("olga", "a one-time password", address="t")
        assert found is not None and found.must_change_password
        actions = [e.action for _, e in store.audit()][::-1]
        assert actions[:4] == ["add user", "disable user", "login refused", "set password"]
        assert "enable user" in actions
        # disabling twice or enabling an enabled user changes and records nothing
        count = len(store.audit())
        accounts.enable(admin, "olga")
        assert len(store.audit()) == count


def test_a_role_change_is_audited_with_before_and_after(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "state.db") as store:
        accounts = Accounts(store, cost=FAST_COST)
        accounts.add(su(), "olga", role="viewer", password="olga's first password")
        accounts.set_role(with_role("ada", "admin"), "olga", "operator")
        stored = store.get_user("olga")
        assert stored is not None and stored.role == "operator"
        last = store.audit(limit=1)[0][1]
        assert (last.actor, last.action, last.detail) == (
            "ada",
            "set role",
            "olga: viewer -> operator",
        )
        with pytest.raises(DefinitionError) as caught:
            accounts.set_role(su(), "olga", "wizard")
        assert caught.value.field == "role"
        with pytest.raises(DefinitionError):
            accounts.set_role(su(), "nobody", "viewer")


# -- changes that race (several hosts share one PostgreSQL store) --------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A real store: a SQLite file, or a database of the throwaway PostgreSQL cluster."""
    if request.param == "sqlite":
        with SqliteStore.open(tmp_path / "state.db") as store:
            yield store
        return
    from supervisor.store.postgres import PostgresStore

    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    with PostgresStore.open(cluster.create_database(f"a{secrets.token_hex(6)}")) as store:
        yield store


class HeldRead:
    """The store, except that ``list_users`` returns only once ``parties`` callers have
    read (so each decides on what it read before any of them writes)."""

    def __init__(self, store: Store, parties: int) -> None:
        self._store = store
        self._read = threading.Barrier(parties)

    def list_users(self) -> list[StoredUser]:
        found = self._store.list_users()
        self._read.wait(timeout=30)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class PausedRead:
    """The store, except that the first ``get_user`` pauses after reading until ``go``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.read, self.go = threading.Event(), threading.Event()

    def get_user(self, name: str) -> StoredUser | None:
        found = self._store.get_user(name)
        if not self.read.is_set():
            self.read.set()
            assert self.go.wait(timeout=30)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_two_admins_disabled_at_once_leave_an_enabled_admin(shared: Store) -> None:
    """Regression: both read two enabled admins, then both disabled theirs."""
    for name in ("ada", "bea"):
        shared.add_user(name, role="admin", password_hash=hash_password("x" * 12, cost=CHEAP))
    accounts = Accounts(HeldRead(shared, 2), cost=CHEAP)  # type: ignore[arg-type]
    runs = [in_thread(lambda n=name: accounts.disable(su("root"), n)) for name in ("ada", "bea")]
    for thread, _ in runs:
        thread.join(timeout=60)
    refused = [error for _, errors in runs for error in errors]
    assert len(refused) == 1, refused
    assert isinstance(refused[0], DefinitionError) and "is the last admin" in str(refused[0])
    assert [u.name for u in shared.list_users() if not is_disabled(u)] in (["ada"], ["bea"])


def disabled_meanwhile(
    shared: Store, write: Callable[[Accounts], object], *, cost: ScryptCost
) -> str:
    """Run ``write`` (on accounts over ``shared`` with ``cost``), pausing it after its first
    read of the user while another ``disable``s olga; olga's stored hash afterwards."""
    shared.add_user("olga", role="operator", password_hash=hash_password("x" * 12, cost=CHEAP))
    paused = PausedRead(shared)
    writer = Accounts(paused, cost=cost)  # type: ignore[arg-type]
    thread, errors = in_thread(lambda: write(writer))
    assert paused.read.wait(timeout=30)
    assert Accounts(shared, cost=CHEAP).disable(su("root"), "olga")
    paused.go.set()
    thread.join(timeout=60)
    assert errors == []
    olga = shared.get_user("olga")
    assert olga is not None
    return olga.password_hash


def test_a_password_set_while_the_user_is_disabled_keeps_them_disabled(shared: Store) -> None:
    """Regression: set_password read "enabled", hashed, then wrote an unlocked hash."""
    stored = disabled_meanwhile(
        shared, lambda a: a.set_password(su("root"), "olga", "a new passphrase"), cost=CHEAP
    )
    assert stored.startswith("!")
    assert verify_password("a new passphrase", stored.removeprefix("!"))


def test_a_login_rehash_while_the_user_is_disabled_keeps_them_disabled(shared: Store) -> None:
    """Regression: a login that rehashed a cheap hash wrote it over a disable."""
    stronger = ScryptCost(n=1 << 11, r=8, p=1)
    login = disabled_meanwhile(
        shared, lambda a: a.authenticate("olga", "x" * 12, address="::1"), cost=stronger
    )
    assert login.startswith("!")


@pytest.mark.parametrize("meanwhile", ["reset", "disable and enable"])
def test_an_own_password_change_never_undoes_an_admins_change_made_while_it_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    """A stale session changing its password while an admin resets it (or disables and
    enables the login) is refused, and what the admin set stays: the change is written
    only over the login it checked."""
    with SqliteStore.open(tmp_path / "state.db") as store:
        accounts = Accounts(store, cost=CHEAP)
        accounts.add(su("root"), "bob", role="operator", password="bob's first words")
        login = store.get_user("bob")
        assert login is not None
        checking = verify_password

        def admin_acts_meanwhile(password: str, stored: str) -> bool:
            if meanwhile == "reset":
                accounts.set_password(su("root"), "bob", "the admin's reset words")
            else:
                accounts.disable(su("root"), "bob")
                accounts.enable(su("root"), "bob")
            return checking(password, stored)

        monkeypatch.setattr("supervisor.usecases.accounts.verify_password", admin_acts_meanwhile)
        with pytest.raises(DefinitionError, match="changed meanwhile"):
            accounts.change_own_password(
                with_role("bob", "operator"),
                current="bob's first words",
                new="the attacker's words",
                stamp=login.stamp,
            )
        monkeypatch.setattr("supervisor.usecases.accounts.verify_password", checking)
        after = store.get_user("bob")
        assert after is not None and after.stamp != login.stamp
        assert not verify_password("the attacker's words", after.password_hash)
        if meanwhile == "reset":
            assert verify_password("the admin's reset words", after.password_hash)
        # A session made before either change is refused outright afterwards.
        with pytest.raises(PermissionDenied):
            accounts.change_own_password(
                with_role("bob", "operator"),
                current="bob's first words",
                new="the attacker's words",
                stamp=login.stamp,
            )
