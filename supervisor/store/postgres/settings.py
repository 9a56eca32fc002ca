"""Settings overrides and operators' decisions in PostgreSQL
(``store.protocols.SettingsOverrides``).

May import ``core.records``, ``store.codec``, ``store.postgres.database`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from supervisor.core.records import Decision
from supervisor.store.codec import (
    decode_decision,
    decode_values,
    encode_decision,
    encode_overrides,
)
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

    def decision(self, scheduler_id: str) -> Decision | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT decision FROM sst_decisions WHERE scheduler_id = %s", (scheduler_id,)
            ).fetchone()
        return decode_decision(row[0]) if row else None

    def all_decisions(self) -> dict[str, Decision]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT scheduler_id, decision FROM sst_decisions").fetchall()
        return {scheduler_id: decode_decision(text) for scheduler_id, text in rows}

    def set_decision(self, scheduler_id: str, decision: Decision | None) -> None:
        encoded = None if decision is None else encode_decision(decision)
        with self._db.single() as conn:  # one statement either way
            if encoded is None:
                conn.execute("DELETE FROM sst_decisions WHERE scheduler_id = %s", (scheduler_id,))
            else:
                conn.execute(
                    "INSERT INTO sst_decisions (scheduler_id, decision) VALUES (%s, %s)"
                    " ON CONFLICT (scheduler_id) DO UPDATE SET decision = EXCLUDED.decision",
                    (scheduler_id, encoded),
                )
