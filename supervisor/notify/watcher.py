"""Watching a backend's schedulers and turning what happens into notifications.

Polls ``statuses()`` (cheap: in memory for the manager) and, for a scheduler whose last
start or end moved, reads its newest runs; each run that ended since the watcher started
goes through ``policy.after_run`` once. A scheduler that is active, not running, and past
its planned start by the grace is reported missed (the dead-man's switch). Works the same
over the manager and the systemd backend: it needs only the two read methods.

Every failed, crashed or timed-out run also gets one line on stderr, with a journald
priority prefix when stderr goes to the journal.

May import ``core``, ``notify`` and the stdlib.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TextIO

from supervisor.core.clock import Clock, SystemClock
from supervisor.core.records import RunRecord, SchedulerStatus, State
from supervisor.notify.dispatch import Dispatcher
from supervisor.notify.events import Notification, NotificationKind
from supervisor.notify.policy import FAILING, Health, after_run, overdue
from supervisor.notify.targets import Target

RUNS_PER_LOOK = 50
JOURNAL_ERR = "<3>"  # sd-daemon(3) priority prefix: err


class RunSource(Protocol):
    """The reads the watcher needs; ``usecases.backend.Backend`` provides them."""

    def statuses(self) -> list[SchedulerStatus]: ...

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Routing:
    """Which targets hear about which scheduler: per-scheduler targets replace the
    default ones (an empty tuple silences a scheduler)."""

    default: tuple[Target, ...] = ()
    per_scheduler: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)
    missed_grace: timedelta = timedelta(minutes=5)

    def targets(self, scheduler_id: str) -> tuple[Target, ...]:
        return self.per_scheduler.get(scheduler_id, self.default)


@dataclass(slots=True)
class _Seen:
    health: Health
    started: datetime | None
    completed: datetime | None
    run_ids: set[str]


class Watcher:
    def __init__(
        self,
        source: RunSource,
        routing: Routing,
        dispatcher: Dispatcher,
        *,
        app: str,
        clock: Clock | None = None,
        err: TextIO | None = None,
        host: str | None = None,
        journal: bool | None = None,
    ) -> None:
        self._source = source
        self._routing = routing
        self._dispatcher = dispatcher
        self._app = app
        self._clock = clock or SystemClock()
        self._err = err if err is not None else sys.stderr
        self._host = host or socket.gethostname()
        self._journal = bool(os.environ.get("JOURNAL_STREAM")) if journal is None else journal
        self._seen: dict[str, _Seen] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one look ------------------------------------------------------------------------

    def tick(self) -> None:
        """Look once at every scheduler (tests call this directly)."""
        now = self._clock.now()
        for status in self._source.statuses():
            seen = self._seen.get(status.id)
            if seen is None:
                self._seen[status.id] = self._baseline(status)
                continue
            if (status.last_started_at, status.last_completed_at) != (seen.started, seen.completed):
                self._new_runs(status, seen)
                seen.started, seen.completed = status.last_started_at, status.last_completed_at
            self._check_missed(status, seen, now)

    def _baseline(self, status: SchedulerStatus) -> _Seen:
        """What happened before the watcher started is history: learn it, send nothing."""
        runs = self._source.runs(status.id, limit=RUNS_PER_LOOK)
        health = Health()
        for run in sorted(runs, key=lambda r: r.started_at):
            if run.outcome is not None:
                health, _ = after_run(health, run.outcome)
        return _Seen(
            health=health,
            started=status.last_started_at,
            completed=status.last_completed_at,
            run_ids={run.run_id for run in runs if run.outcome is not None},
        )

    def _new_runs(self, status: SchedulerStatus, seen: _Seen) -> None:
        runs = self._source.runs(status.id, limit=RUNS_PER_LOOK)
        for run in sorted(runs, key=lambda r: r.started_at):
            if run.outcome is None or run.run_id in seen.run_ids:
                continue
            seen.run_ids.add(run.run_id)
            seen.health, kind = after_run(seen.health, run.outcome)
            if run.outcome in FAILING:
                self._log_failure(status, run, seen.health.failures_in_a_row)
            if kind is not None:
                self._send(status, kind, run=run, failures=seen.health.failures_in_a_row)
        if len(seen.run_ids) > 4 * RUNS_PER_LOOK:  # keep memory bounded
            keep = {run.run_id for run in runs}
            seen.run_ids &= keep

    def _check_missed(self, status: SchedulerStatus, seen: _Seen, now: datetime) -> None:
        if status.state is not State.PAUSED:
            return
        seen.health, missed = overdue(
            seen.health,
            planned_at=status.next_planned_at,
            running=status.current_run_id is not None,
            grace=self._routing.missed_grace,
            now=now,
        )
        if missed:
            self._send(status, NotificationKind.MISSED, expected_at=status.next_planned_at)

    def _log_failure(self, status: SchedulerStatus, run: RunRecord, streak: int) -> None:
        assert run.outcome is not None
        first_line = (run.error or "").strip().splitlines()[-1:] or ["no error message"]
        prefix = JOURNAL_ERR if self._journal else ""
        print(
            f"{prefix}supervisor: {status.id} run {run.run_id} {run.outcome.value}"
            f" ({streak} in a row): {first_line[0]}",
            file=self._err,
            flush=True,
        )

    def _send(
        self,
        status: SchedulerStatus,
        kind: NotificationKind,
        *,
        run: RunRecord | None = None,
        failures: int = 0,
        expected_at: datetime | None = None,
    ) -> None:
        notification = Notification(
            kind=kind,
            app=self._app,
            host=self._host,
            scheduler_id=status.id,
            scheduler_name=status.name,
            at=self._clock.now(),
            run_id=None if run is None else run.run_id,
            outcome=None if run is None or run.outcome is None else run.outcome.value,
            error=None if run is None else run.error,
            failures_in_a_row=failures,
            expected_at=expected_at,
        )
        self._dispatcher.submit(notification, self._routing.targets(status.id))

    # -- the thread ----------------------------------------------------------------------

    def start(self, *, interval_seconds: float = 1.0) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_seconds):
                try:
                    self.tick()
                except Exception as error:  # a backend hiccup must not end the watching
                    print(f"supervisor: notification watcher: {error!r}", file=self._err)

        self.tick()
        self._thread = threading.Thread(target=loop, name="notify-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.tick_final()

    def tick_final(self) -> None:
        """One last look at shutdown, so the runs that ended meanwhile are told."""
        try:
            self.tick()
        except Exception as error:
            print(f"supervisor: notification watcher: {error!r}", file=self._err)
