"""The audit trail in PostgreSQL (``store.protocols.AuditTrail``).

May import ``core.records``, ``store.codec``, ``store.postgres.database``,
``store.postgres.text`` and the stdlib.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from supervisor.core.records import AuditEntry
from supervisor.store.codec import decode_values, encode_values, require_aware
from supervisor.store.postgres.database import Database
from supervisor.store.postgres.text import storable, storable_or_none

_SELECT_AUDIT: Final = (
    "SELECT id, time, actor, action, scheduler_id, detail, before, after FROM sst_audit"
)


class PostgresAudit:
    _db: Database

    def add_audit(self, entry: AuditEntry) -> None:
        row = (
            require_aware(entry.time),
            storable(entry.actor),
            storable(entry.action),
            storable_or_none(entry.scheduler_id),
            storable_or_none(entry.detail),
            None if entry.before is None else encode_values(entry.before),
            None if entry.after is None else encode_values(entry.after),
        )
        with self._db.single() as conn:
            conn.execute(
                "INSERT INTO sst_audit (time, actor, action, scheduler_id, detail, before, after)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
        where = ["true"]
        params: list[object] = []
        for column, value in (
            ("scheduler_id", scheduler_id),
            ("actor", actor),
            ("action", action),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(storable(value))
        if since is not None:
            where.append("time >= %s")
            params.append(require_aware(since))
        if until is not None:
            where.append("time < %s")
            params.append(require_aware(until))
        if before is not None:
            where.append("id < %s")
            params.append(before)
        with self._db.read() as conn:
            rows = conn.execute(
                _SELECT_AUDIT + f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
                [*params, limit],
            ).fetchall()
        return [
            (
                row[0],
                AuditEntry(
                    time=row[1].astimezone(UTC),
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
