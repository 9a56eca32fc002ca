"""The audit trail in SQLite (``store.protocols.AuditTrail``).

May import ``core.records``, ``store.codec``, ``store.sqlite.database`` and the stdlib.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from supervisor.core.records import AuditEntry
from supervisor.store.codec import decode_values, encode_values, parse_ts, ts
from supervisor.store.sqlite.database import Database

_SELECT_AUDIT: Final = (
    "SELECT id, time, actor, action, scheduler_id, detail, before, after FROM audit"
)


class SqliteAudit:
    _db: Database

    def add_audit(self, entry: AuditEntry) -> None:
        row = (
            ts(entry.time),
            entry.actor,
            entry.action,
            entry.scheduler_id,
            entry.detail,
            None if entry.before is None else encode_values(entry.before),
            None if entry.after is None else encode_values(entry.after),
        )
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO audit (time, actor, action, scheduler_id, detail, before, after)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def audit(
        self,
        *,
        scheduler_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[tuple[int, AuditEntry]]:
        if limit <= 0:
            return []
        where = ["1"]
        params: list[object] = []
        for column, value in (
            ("scheduler_id", scheduler_id),
            ("actor", actor),
            ("action", action),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        # times are fixed-width ISO 8601 in UTC: text order is time order
        if since is not None:
            where.append("time >= ?")
            params.append(ts(since))
        if until is not None:
            where.append("time < ?")
            params.append(ts(until))
        if before is not None:
            where.append("id < ?")
            params.append(before)
        with self._db.read() as conn:
            rows = conn.execute(
                _SELECT_AUDIT + f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [
            (
                row[0],
                AuditEntry(
                    time=parse_ts(row[1]),
                    actor=row[2],
                    action=row[3],
                    scheduler_id=row[4],
                    detail=row[5],
                    before=None if row[6] is None else decode_values(row[6]),
                    after=None if row[7] is None else decode_values(row[7]),
                ),
            )
            for row in rows
        ]

    def last_actor(self, scheduler_id: str) -> str | None:
        entries = self.audit(scheduler_id=scheduler_id, limit=1)
        return entries[0][1].actor if entries else None
