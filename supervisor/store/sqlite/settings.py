"""Settings overrides and operators' decisions in SQLite (``store.protocols.SettingsOverrides``).

May import ``core.records``, ``store.codec``, ``store.sqlite.database`` and the stdlib.
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
from supervisor.store.sqlite.database import Database


class SqliteSettings:
    _db: Database

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT settings FROM overrides WHERE scheduler_id = ?", (scheduler_id,)
            ).fetchall()
        return decode_values(rows[0][0]) if rows else {}

    def all_overrides(self) -> dict[str, dict[str, Any]]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT scheduler_id, settings FROM overrides").fetchall()
        return {scheduler_id: decode_values(text) for scheduler_id, text in rows}

    def set_overrides(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        encoded = encode_overrides(overrides)
        with self._db.write() as conn:
            if overrides:
                conn.execute(
                    "INSERT OR REPLACE INTO overrides (scheduler_id, settings) VALUES (?, ?)",
                    (scheduler_id, encoded),
                )
            else:
                conn.execute("DELETE FROM overrides WHERE scheduler_id = ?", (scheduler_id,))

    def delete_overrides(self, scheduler_id: str) -> bool:
        with self._db.write() as conn:
            cursor = conn.execute("DELETE FROM overrides WHERE scheduler_id = ?", (scheduler_id,))
            return cursor.rowcount > 0

    def decision(self, scheduler_id: str) -> Decision | None:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT decision FROM decisions WHERE scheduler_id = ?", (scheduler_id,)
            ).fetchall()
        return decode_decision(rows[0][0]) if rows else None

    def all_decisions(self) -> dict[str, Decision]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT scheduler_id, decision FROM decisions").fetchall()
        return {scheduler_id: decode_decision(text) for scheduler_id, text in rows}

    def set_decision(self, scheduler_id: str, decision: Decision | None) -> None:
        encoded = None if decision is None else encode_decision(decision)
        with self._db.write() as conn:
            if encoded is None:
                conn.execute("DELETE FROM decisions WHERE scheduler_id = ?", (scheduler_id,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO decisions (scheduler_id, decision) VALUES (?, ?)",
                    (scheduler_id, encoded),
                )
