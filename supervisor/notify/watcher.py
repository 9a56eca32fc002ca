"""Watching a backend's schedulers and turning what happens into notifications.

Each run that ended since the watcher started (see ``feed``) goes through
``policy.after_run`` once. A scheduler that is active, not running, and past
its planned start by the grace is reported missed (the dead-man's switch). Works the same
over the manager and the systemd backend: it needs only the two read methods.

Every failed, crashed or timed-out run also gets one line on stderr, with a journald
priority prefix when stderr goes to the journal. A look that fails (a store that cannot be
read: corrupt, locked, unreachable) is said once when the streak begins and once when it
ends; meanwhile the looks back off (twice the pause each time, up to
``MAX_BACKOFF_SECONDS``) and say nothing, so an outage does not flood the log.

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
from typing import IO, Final

from supervisor.core.clock import Clock, SystemClock
from supervisor.core.records import RunRecord, SchedulerStatus, State
from supervisor.notify.dispatch import Dispatcher
from supervisor.notify.events import Notification, NotificationKind
from supervisor.notify.feed import RunFeed, RunSource
from supervisor.notify.policy import FAILING, Health, after_run, overdue
from supervisor.notify.targets import Target

JOURNAL_ERR = "<3>"  # sd-daemon(3) priority prefix: err
JOURNAL_WARNING = "<4>"
DEFAULT_INTERVAL_SECONDS: Final = 2.0
MAX_BACKOFF_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Routing:
    """Which targets hear about which scheduler: per-scheduler targets replace the
    default ones (an empty tuple silences a scheduler)."""

    default: tuple[Target, ...] = ()
    per_scheduler: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)
    missed_grace: timedelta = timedelta(minutes=5)

    def targets(self, scheduler_id: str) -> tuple[Target, ...]:
        return self.per_scheduler.get(scheduler_id, self.default)


class Watcher:
    def __init__(
        self,
        source: RunSource,
        routing: Routing,
        dispatcher: Dispatcher,
        *,
        app: str,
        clock: Clock | None = None,
        err: IO[str] | None = None,
        host: str | None = None,
        journal: bool | None = None,
    ) -> None:
        self._routing = routing
        self._dispatcher = dispatcher
        self._app = app
        self._clock = clock or SystemClock()
        self._err = err if err is not None else sys.stderr
        self._host = host or socket.gethostname()
        self._journal = bool(os.environ.get("JOURNAL_STREAM")) if journal is None else journal
        self._feed = RunFeed(source)
        self._health: dict[str, Health] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing_since: float | None = None  # monotonic: the failing looks' streak
        self._pause = DEFAULT_INTERVAL_SECONDS

    # -- one look ------------------------------------------------------------------------

    def tick(self) -> None:
        """Look once at every scheduler (tests call this directly)."""
        now = self._clock.now()
        for look in self._feed.look():
            status = look.status
            health = self._health.get(status.id, Health())
            for run in look.history:  # before the watcher started: learn, send nothing
                assert run.outcome is not None
                health, _ = after_run(health, run.outcome)
            for run in look.ended:
                assert run.outcome is not None
                health, kind = after_run(health, run.outcome)
                if run.outcome in FAILING:
                    self._log_failure(status, run, health.failures_in_a_row)
                if kind is not None:
                    self._send(status, kind, run=run, failures=health.failures_in_a_row)
            self._health[status.id] = self._check_missed(status, health, now)

    def _check_missed(self, status: SchedulerStatus, health: Health, now: datetime) -> Health:
        if status.state is not State.PAUSED:
            return health
        health, missed = overdue(
            health,
            planned_at=status.next_planned_at,
            running=status.current_run_id is not None,
            grace=self._routing.missed_grace,
            now=now,
        )
        if missed:
            self._send(status, NotificationKind.MISSED, expected_at=status.next_planned_at)
        return health

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

    def step(self, interval_seconds: float = DEFAULT_INTERVAL_SECONDS) -> float:
        """One look as the thread makes it: how many seconds to wait before the next. A
        failing look never ends the watching; the first of a streak is said, the rest
        only lengthen the pause, and the first look that works again says so."""
        try:
            self.tick()
        except Exception as error:
            if self._failing_since is None:
                self._failing_since = self._clock.monotonic()
                self._pause = interval_seconds
                self._say(
                    f"supervisor: notification watcher: cannot look at the schedulers"
                    f" ({_named(error)}); notifications wait until it can (tried again every"
                    f" {interval_seconds:g} s and less often while it lasts, up to every"
                    f" {MAX_BACKOFF_SECONDS:g} s)"
                )
                return self._pause
            self._pause = min(self._pause * 2, max(MAX_BACKOFF_SECONDS, interval_seconds))
            return self._pause
        if self._failing_since is not None:
            took = max(0, round(self._clock.monotonic() - self._failing_since))
            self._failing_since = None
            self._say(
                f"supervisor: notification watcher: looking at the schedulers works again"
                f" after {took} s; the runs that ended meanwhile are told now"
            )
        self._pause = interval_seconds
        return interval_seconds

    def _say(self, line: str) -> None:
        prefix = JOURNAL_WARNING if self._journal else ""
        print(f"{prefix}{line}", file=self._err, flush=True)

    def start(self, *, interval_seconds: float = DEFAULT_INTERVAL_SECONDS) -> None:
        def loop() -> None:
            pause = interval_seconds
            while not self._stop.wait(pause):
                pause = self.step(interval_seconds)

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


def _named(error: BaseException) -> str:
    """``TimeoutError: …``, or the type alone for an error without a message."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
