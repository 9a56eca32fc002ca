"""The contract every backend (the manager, systemd) fulfils for the use cases.

Backends do the work; they check no permissions and write no audit (the use cases do),
and they check no settings: ``core.settings`` hands them an ``EffectiveSettings``.
``tests/test_backend_contract.py`` runs one suite over every implementation.
May import ``core``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from supervisor.core.records import Decision, LogQuery, LogRecord, RunRecord, SchedulerStatus
from supervisor.core.settings import EffectiveSettings


class Backend(Protocol):
    """Runs and controls schedulers.

    Every method taking a ``scheduler_id`` raises ``UnknownScheduler`` for an unknown ID
    and ``BackendError`` when the underlying system fails.
    """

    def statuses(self) -> list[SchedulerStatus]:
        """Every scheduler, in definition order."""
        ...

    def status_version(self) -> int | None:
        """A number that moves whenever any status changes, or None: this backend cannot
        tell (its statuses must be read every time)."""
        ...

    def status(self, scheduler_id: str) -> SchedulerStatus: ...

    def start(self, scheduler_id: str, *, actor: str) -> None:
        """Make a stopped scheduler plan runs again (re-applying its start delay)."""
        ...

    def stop(self, scheduler_id: str, *, actor: str, reason: str | None = None) -> None:
        """Cancel the current run, if any, and plan nothing more until started. The status
        shows who stopped it, when and ``reason`` (``decision``) while it stays stopped."""
        ...

    def pause(
        self, scheduler_id: str, *, actor: str, until: datetime, reason: str | None = None
    ) -> None:
        """Plan nothing until ``until`` (aware, in the future), then resume by itself as
        Start would; a run in progress finishes. The pause outlives a restart of the
        backend. ``BackendError`` naming why when it cannot (disabled, stopped: the stop
        stays until Start, shutting down, or a backend without timed pauses)."""
        ...

    def execute(self, scheduler_id: str, *, actor: str) -> str:
        """Start a run now and return its run ID.

        ``AlreadyRunning`` naming the run in progress if there is one (whatever the state).
        """
        ...

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        """The stored setting overrides (only fields that differ from the code defaults)."""
        ...

    def update_settings(
        self,
        scheduler_id: str,
        settings: EffectiveSettings,
        *,
        disabled_by: Decision | None = None,
    ) -> None:
        """Store ``settings.overrides`` (replacing all earlier ones) and apply
        ``settings.effective`` at once (a waiting scheduler re-plans). The value is
        already checked; ``BackendError`` if it cannot be stored or applied, and then
        the stored overrides are the earlier ones. ``disabled_by``: who disabled it and
        why (given when the change disables it); kept, and shown, while it is disabled."""
        ...

    def reset_settings(self, scheduler_id: str) -> None:
        """Delete the overrides and apply the code defaults at once."""
        ...

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        """Newest first."""
        ...

    def recent_runs(
        self, scheduler_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RunRecord]]:
        """The newest ``limit`` runs of each of ``scheduler_ids``, newest first, in one read
        (the overview's strips); a scheduler without runs may be absent. A backend that
        cannot read them cheaply returns an empty dict."""
        ...

    def run(self, run_id: str) -> RunRecord:
        """One run; ``UnknownRun`` if there is none with that ID."""
        ...

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        """Records as (cursor, record) in time order, as ``LogQuery`` describes (of every
        scheduler when ``query.scheduler_id`` is None).

        ``after``/``before`` are cursors from earlier answers: with ``before`` (or neither)
        the newest ``limit`` records before it; with ``after`` the oldest ``limit`` after it.
        """
        ...

    def run_action(self, scheduler_id: str, action_id: str, *, actor: str) -> str:
        """Run a custom action (in a child process) and return its result as text.

        Raises ``UnknownAction``, or ``ActionFailed`` carrying the action's error.
        """
        ...
