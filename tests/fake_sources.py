"""A backend's two read methods (``statuses``, ``runs``) over values a test edits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from supervisor.core.definitions import Kind, Settings
from supervisor.core.records import Outcome, RunRecord, SchedulerStatus, State, Trigger

T0 = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)


class FakeSource:
    """A backend's two read methods over lists the test edits."""

    def __init__(self) -> None:
        self.status = SchedulerStatus(
            id="nightly.export",
            name="Nightly export",
            description="",
            kind=Kind.SCHEDULE,
            state=State.PAUSED,
            settings=Settings(),
            defaults=Settings(),
            next_planned_at=T0 + timedelta(hours=1),
        )
        self.history: list[RunRecord] = []

    def statuses(self) -> list[SchedulerStatus]:
        return [self.status]

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        return list(reversed(self.history))[:limit]

    def end_run(
        self,
        outcome: Outcome,
        at: datetime,
        *,
        seconds: float = 0.0,
        truncated: bool = False,
        dropped: int = 0,
    ) -> None:
        run = RunRecord(
            run_id=f"r{len(self.history) + 1}",
            scheduler_id=self.status.id,
            trigger=Trigger.SCHEDULE,
            triggered_by=None,
            started_at=at - timedelta(seconds=seconds),
            ended_at=at,
            log_truncated=truncated,
            dropped_log_records=dropped,
            outcome=outcome,
            error=None if outcome is Outcome.SUCCEEDED else "Traceback\nValueError: bad row 7",
        )
        self.history.append(run)
        self.status = replace(
            self.status,
            last_started_at=at,
            last_completed_at=at,
            last_outcome=outcome,
            next_planned_at=at + timedelta(hours=1),
        )
