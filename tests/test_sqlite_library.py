"""The SQLite store refuses a library too old for its statements, before writing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from supervisor.core.errors import StoreError
from supervisor.store.sqlite import SqliteStore
from supervisor.store.sqlite.opening import MIN_SQLITE


def test_an_sqlite_library_older_than_the_store_needs_is_refused_and_nothing_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    path = tmp_path / "state" / "state.db"
    with pytest.raises(StoreError) as raised:
        SqliteStore.open(path)
    assert str(raised.value) == (
        f"cannot use state database {path}: the SQLite library is 3.34.1;"
        " the store needs 3.35.0 or newer"
    )
    assert not path.parent.exists()


def test_an_existing_database_is_left_as_it_was_under_an_old_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()
    before = path.read_bytes()
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 0))
    with pytest.raises(StoreError, match=r"library is 3\.31\.0;"):
        SqliteStore.open(path)
    assert path.read_bytes() == before


def test_this_machines_library_is_new_enough() -> None:
    assert sqlite3.sqlite_version_info >= MIN_SQLITE
