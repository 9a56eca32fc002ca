"""User management as use cases: permission checked, audit written, names validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.core.access import su, with_role
from supervisor.core.errors import DefinitionError, PermissionDenied
from supervisor.core.passwords import verify_password
from supervisor.store.sqlite import SqliteStore
from supervisor.usecases.accounts import Accounts


def test_admins_manage_users_and_every_change_is_audited(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "state.db") as store:
        accounts = Accounts(store)
        admin = with_role("ada", "admin")
        accounts.add(admin, "olga", role="operator", password="correct horse")
        stored = store.get_user("olga")
        assert stored is not None and stored.role == "operator"
        assert verify_password("correct horse", stored.password_hash)
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
