"""How healthy a scheduler is, from its status and its newest runs: what a card shows.

A scheduler is failing when its state is ``failing`` (its starts fail) or its last run
failed, crashed or timed out. Pure functions of values and a time given by the caller.
May import ``records`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from supervisor.core.records import Outcome, RunRecord, SchedulerStatus, State

STRIP_RUNS = 20  # outcomes shown per card
BAD: frozenset[Outcome] = frozenset({Outcome.FAILED, Outcome.CRASHED, Outcome.TIMED_OUT})


@dataclass(frozen=True, slots=True)
class StripRun:
    """One entry of a card's strip of outcomes (None: still running)."""

    run_id: str
    outcome: Outcome | None
    started_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    failing: bool
    streak: int = 0  # failed runs in a row, newest first (failed starts if more)
    more: bool = False  # the streak may be longer than the runs read
    since: datetime | None = None  # when the first run of the streak started
    since_text: str = ""  # ``since`` as HH:MM UTC (with the date when not today)
    last_success_text: str = ""  # "3 min ago", or "" when no success is known
    last_success: datetime | None = None  # when that success ended
    # the newest finished run's exit code (a failed command shows "exit code 3")
    last_exit_code: int | None = None
    strip: tuple[StripRun, ...] = ()  # oldest first


def ago(seconds: float) -> str:
    """A past moment for reading: ``just now``, ``12 min ago``, ``3 h ago``, ``2 d ago``."""
    if seconds < 60:
        return "just now"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min ago"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h ago"
    return f"{hours // 24} d ago"


def clock_text(moment: datetime, now: datetime) -> str:
    """``HH:MM UTC``, with the date in front unless it is ``now``'s (UTC) date."""
    if moment.utcoffset() is not None:
        moment = moment.astimezone(UTC)
    if now.utcoffset() is not None:
        now = now.astimezone(UTC)
    if moment.date() == now.date():
        return moment.strftime("%H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def health_of(status: SchedulerStatus, runs: Sequence[RunRecord], now: datetime) -> Health:
    """``runs``: the scheduler's newest runs, newest first (at most ``STRIP_RUNS`` shown)."""
    newest = list(runs[:STRIP_RUNS])
    strip = tuple(
        StripRun(run_id=r.run_id, outcome=r.outcome, started_at=r.started_at)
        for r in reversed(newest)
    )
    finished = [r for r in newest if r.outcome is not None]
    streak = 0
    for run in finished:
        if run.outcome not in BAD:
            break
        streak += 1
    since = finished[streak - 1].started_at if streak else None
    more = streak > 0 and streak == len(finished) and len(runs) >= STRIP_RUNS
    last_bad = status.last_outcome is not None and status.last_outcome in BAD
    failing = status.state is State.FAILING or last_bad
    if status.state is State.FAILING and status.failed_starts > streak:
        streak, more = status.failed_starts, False
    if failing and since is None and status.last_completed_at is not None and last_bad:
        since, streak = status.last_completed_at, max(streak, 1)
    success = next((r for r in finished if r.outcome is Outcome.SUCCEEDED), None)
    success_at = None if success is None else (success.ended_at or success.started_at)
    return Health(
        failing=failing,
        streak=streak,
        more=more,
        since=since,
        since_text="" if since is None else clock_text(since, now),
        last_success_text="" if success_at is None else ago((now - success_at).total_seconds()),
        last_success=success_at,
        last_exit_code=finished[0].exit_code if finished else None,
        strip=strip,
    )
