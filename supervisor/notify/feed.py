"""The runs that ended since the last look, read from any backend.

Polls ``statuses()`` (in memory for the manager) and, only for a scheduler whose last
start or end moved, reads its newest runs; each ended run is handed out once. What had
ended before the first look is handed out as history, apart from the new runs. Used by
the notification watcher and the metrics collector. May import ``core`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from supervisor.core.records import RunRecord, SchedulerStatus

RUNS_PER_LOOK = 50


class RunSource(Protocol):
    """The reads a feed needs; ``usecases.backend.Backend`` provides them."""

    def statuses(self) -> list[SchedulerStatus]: ...

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]: ...


@dataclass(frozen=True, slots=True)
class Look:
    """One scheduler at one look: its status, runs that ended before the feed's first
    look (oldest first, only on that first look), and runs that ended since."""

    status: SchedulerStatus
    history: Sequence[RunRecord] = ()
    ended: Sequence[RunRecord] = ()


@dataclass(slots=True)
class _Seen:
    started: datetime | None
    completed: datetime | None
    run_ids: set[str] = field(default_factory=set)


class RunFeed:
    def __init__(self, source: RunSource) -> None:
        self._source = source
        self._seen: dict[str, _Seen] = {}

    def look(self) -> list[Look]:
        """Each scheduler as it is now. Raises what the source raises, having handed out
        and noted nothing: the next look hands out what this one could not."""
        looks = []
        noted: dict[str, _Seen] = {}
        for status in self._source.statuses():
            seen = self._seen.get(status.id)
            moved = seen is None or (status.last_started_at, status.last_completed_at) != (
                seen.started,
                seen.completed,
            )
            if not moved:
                looks.append(Look(status))
                continue
            runs = sorted(
                (r for r in self._source.runs(status.id, limit=RUNS_PER_LOOK) if r.outcome),
                key=lambda r: r.started_at,
            )
            if seen is None:
                noted[status.id] = _Seen(
                    status.last_started_at, status.last_completed_at, {r.run_id for r in runs}
                )
                looks.append(Look(status, history=runs))
                continue
            new = [r for r in runs if r.run_id not in seen.run_ids]
            run_ids = seen.run_ids | {r.run_id for r in new}
            if len(run_ids) > 4 * RUNS_PER_LOOK:  # keep memory bounded
                run_ids &= {r.run_id for r in runs}
            noted[status.id] = _Seen(status.last_started_at, status.last_completed_at, run_ids)
            looks.append(Look(status, ended=new))
        self._seen.update(noted)
        return looks
