"""Admin Center logins in PostgreSQL (``store.protocols.UserDirectory``).

May import ``core``, ``store.codec``, ``store.protocols``, ``store.postgres.database``,
``store.postgres.text`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from supervisor.core.errors import DefinitionError
from supervisor.store.codec import check_new_user, require_aware
from supervisor.store.postgres.database import Database
from supervisor.store.postgres.text import storable
from supervisor.store.protocols import Changed, KeepOne, StoredUser, UserChange, new_stamp

_SELECT_USERS = "SELECT name, role, password_hash, created_at, stamp FROM sst_users"


class PostgresUsers:
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
        created = require_aware(created_at if created_at is not None else datetime.now(UTC))
        with self._db.single() as conn:
            cursor = conn.execute(
                "INSERT INTO sst_users (name, role, password_hash, created_at, stamp)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                (storable(name), role, storable(password_hash), created, new_stamp()),
            )
            if cursor.rowcount == 0:
                raise DefinitionError("name", f"user {name!r} already exists")

    def get_user(self, name: str) -> StoredUser | None:
        with self._db.read() as conn:
            row = conn.execute(_SELECT_USERS + " WHERE name = %s", (storable(name),)).fetchone()
        return _user_from_row(row) if row else None

    def list_users(self) -> list[StoredUser]:
        with self._db.read() as conn:
            rows = conn.execute(_SELECT_USERS + ' ORDER BY name COLLATE "C"').fetchall()
        return [_user_from_row(row) for row in rows]

    def change_user(self, name: str, change: UserChange, *, keep: KeepOne | None = None) -> Changed:
        if change.role is not None:
            check_new_user(name, change.role)
        role = keep.role if keep is not None else None
        with self._db.write() as conn:
            # Lock the login and every one of the kept role, in one order (no deadlock):
            # a concurrent change waits here, then reads the rows as this one left them.
            rows = conn.execute(
                _SELECT_USERS + ' WHERE name = %s OR role = %s ORDER BY name COLLATE "C"'
                " FOR UPDATE",
                (storable(name), role),
            ).fetchall()
            found = [_user_from_row(row) for row in rows]
            before = next((user for user in found if user.name == name), None)
            if before is None or change.stale(before):
                return Changed.STALE
            after = change.applied(before)
            if keep is not None:
                count = sum(keep.holds_for(user) for user in found if user.name != name)
                if keep.refuses(before, after, count):
                    return Changed.REFUSED
            if after is None:
                conn.execute("DELETE FROM sst_users WHERE name = %s", (storable(name),))
            else:
                # Without a new stamp the stamp is kept on purpose: said with keep_stamp,
                # or the database makes a new one for a new hash (schema version 4).
                conn.execute(
                    "UPDATE sst_users SET role = %s, password_hash = %s, stamp = %s,"
                    " keep_stamp = %s WHERE name = %s",
                    (
                        after.role,
                        storable(after.password_hash),
                        after.stamp,
                        change.stamp is None,
                        storable(name),
                    ),
                )
            return Changed.DONE


def _user_from_row(row: Sequence[Any]) -> StoredUser:
    return StoredUser(
        name=row[0],
        role=row[1],
        password_hash=row[2],
        created_at=row[3].astimezone(UTC),
        stamp=row[4],
    )
