"""Settings overrides in PostgreSQL (``store.protocols.SettingsOverrides``).

May import ``store.codec``, ``store.postgres.database`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from supervisor.store.codec import decode_values, encode_overrides
from supervisor.store.postgres.database import Database


class PostgresSettings:
    _db: Database

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT settings FROM sst_overrides WHERE scheduler_id = %s", (scheduler_id,)
            ).fetchone()
        return decode_values(row[0]) if row else {}

    def all_overrides(self) -> dict[str, dict[str, Any]]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT scheduler_id, settings FROM sst_overrides").fetchall()
        return {scheduler_id: decode_values(text) for scheduler_id, text in rows}

    def set_overrides(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        encoded = encode_overrides(overrides)
        with self._db.single() as conn:  # one statement either way
            if overrides:
                conn.execute(
                    "INSERT INTO sst_overrides (scheduler_id, settings) VALUES (%s, %s)"
                    " ON CONFLICT (scheduler_id) DO UPDATE SET settings = EXCLUDED.settings",
                    (scheduler_id, encoded),
                )
            else:
                conn.execute("DELETE FROM sst_overrides WHERE scheduler_id = %s", (scheduler_id,))

    def delete_overrides(self, scheduler_id: str) -> bool:
        with self._db.single() as conn:
            cursor = conn.execute(
                "DELETE FROM sst_overrides WHERE scheduler_id = %s", (scheduler_id,)
            )
            return cursor.rowcount > 0
