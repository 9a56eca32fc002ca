"""Values the store tests build runs and log records from (shared by the SQLite tests and
the store conformance suite)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from supervisor.core.records import (
    Level,
    LogQuery,
    LogRecord,
    Outcome,
    RunRecord,
    Source,
    Trigger,
)
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


def run_six_and_one_other(store: Store) -> None:
    """Finished runs, three records each: r0..r5 of demo.job a minute apart, after
    ``keep-me`` of other.job (one record). (With ``max_runs_per_scheduler=3`` retention
    keeps r3, r4 and r5.)"""
    store.insert_run(make_run("keep-me", "other.job"))
    store.append_logs([record("keep-me", "other scheduler")])
    finish(store, "keep-me")
    for i in range(6):
        run_id = f"r{i}"
        store.insert_run(make_run(run_id, started_at=T0 + timedelta(minutes=i)))
        store.append_logs([record(run_id, f"{run_id} line {n}") for n in range(3)])
        finish(store, run_id, at=T0 + timedelta(minutes=i, seconds=30))


def delete_the_newest_record(store: Store) -> int:
    """In a store with ``max_runs_per_scheduler=1``: run ``a`` logs one record and ends,
    then run ``b`` ends, and retention deletes ``a`` with its record, the newest of all.
    Returns the cursor that record had (asserting it is gone)."""
    store.insert_run(make_run("a", started_at=T0))
    store.append_logs([record("a", "from a")])
    finish(store, "a")
    ((cursor, _),) = store.logs(LogQuery(scheduler_id="demo.job"))
    store.insert_run(make_run("b", started_at=T0 + timedelta(minutes=1)))
    finish(store, "b")
    assert store.logs(LogQuery(scheduler_id="demo.job")) == []
    return cursor
