"""Admin Center logins in SQLite (``store.protocols.UserDirectory``).

May import ``core``, ``store.codec``, ``store.protocols``, ``store.sqlite.database`` and
the stdlib.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from supervisor.core.errors import DefinitionError
from supervisor.store.codec import check_new_user, parse_ts, ts
from supervisor.store.protocols import Changed, KeepOne, StoredUser, UserChange, new_stamp
from supervisor.store.sqlite.database import Database


class SqliteUsers:
    _db: Database

    def add_user(
        self,
        name: str,
        *,
        role: str,
        password_hash: str,
        created_at: datetime | None = None,
    ) -> None:
        check_new_user(name, role)
        created = ts(created_at if created_at is not None else datetime.now(UTC))
        with self._db.write() as conn:
            try:
                conn.execute(
                    "INSERT INTO users (name, role, password_hash, created_at, stamp)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, role, password_hash, created, new_stamp()),
                )
            except sqlite3.IntegrityError:
                raise DefinitionError("name", f"user {name!r} already exists") from None

    def get_user(self, name: str) -> StoredUser | None:
        with self._db.read() as conn:
            rows = conn.execute(_SELECT + " WHERE name = ?", (name,)).fetchall()
        return _user_from_row(rows[0]) if rows else None

    def list_users(self) -> list[StoredUser]:
        with self._db.read() as conn:
            rows = conn.execute(_SELECT + " ORDER BY name").fetchall()
        return [_user_from_row(row) for row in rows]

    def change_user(self, name: str, change: UserChange, *, keep: KeepOne | None = None) -> Changed:
        if change.role is not None:
            check_new_user(name, change.role)
        with self._db.write() as conn:  # BEGIN IMMEDIATE: no other writer until it ends
            rows = conn.execute(_SELECT + " WHERE name = ?", (name,)).fetchall()
            before = _user_from_row(rows[0]) if rows else None
            if before is None or change.stale(before):
                return Changed.STALE
            after = change.applied(before)
            if keep is not None:
                others = conn.execute(_SELECT + " WHERE role = ? AND name != ?", (keep.role, name))
                count = sum(keep.holds_for(_user_from_row(row)) for row in others)
                if keep.refuses(before, after, count):
                    return Changed.REFUSED
            if after is None:
                conn.execute("DELETE FROM users WHERE name = ?", (name,))
            else:
                # Without a new stamp the stamp is kept on purpose: said with keep_stamp,
                # or the database makes a new one for a new hash (schema version 5).
                conn.execute(
                    "UPDATE users SET role = ?, password_hash = ?, stamp = ?, keep_stamp = ?"
                    " WHERE name = ?",
                    (after.role, after.password_hash, after.stamp, change.stamp is None, name),
                )
            return Changed.DONE


_SELECT = "SELECT name, role, password_hash, created_at, stamp FROM users"


def _user_from_row(row: Sequence[Any]) -> StoredUser:
    return StoredUser(
        name=row[0], role=row[1], password_hash=row[2], created_at=parse_ts(row[3]), stamp=row[4]
    )
