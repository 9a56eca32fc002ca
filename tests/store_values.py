"""Values the store tests build runs and log records from (shared by the SQLite tests and
the store conformance suite)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from supervisor.core.records import Level, LogRecord, Outcome, RunRecord, Source, Trigger
from supervisor.store.protocols import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_run(
    run_id: str,
    scheduler_id: str = "demo.job",
    *,
    started_at: datetime = T0,
    trigger: Trigger = Trigger.SCHEDULE,
    triggered_by: str | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        scheduler_id=scheduler_id,
        trigger=trigger,
        triggered_by=triggered_by,
        started_at=started_at,
    )


def record(
    run_id: str,
    message: str = "hello",
    *,
    level: Level = Level.INFO,
    fields: Mapping[Any, Any] | None = None,
    source: Source = Source.LOGGER,
    at: datetime = T0,
) -> LogRecord:
    return LogRecord(
        time=at,
        level=level,
        message=message,
        fields=dict(fields or {}),
        run_id=run_id,
        source=source,
    )


def finish(store: Store, run_id: str, *, at: datetime = T0) -> RunRecord:
    return store.finish_run(
        run_id, ended_at=at, outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None
    )
