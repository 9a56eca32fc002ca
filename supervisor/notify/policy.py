"""When to notify: pure functions of what happened before and what happened now.

A failing scheduler notifies once when it starts failing (not on every failed run) and
once when it recovers; a scheduler that has not started by its planned time plus a grace
notifies once per missed plan. May import ``core`` and the stdlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from supervisor.core.records import Outcome
from supervisor.notify.events import NotificationKind

FAILING = frozenset({Outcome.FAILED, Outcome.CRASHED, Outcome.TIMED_OUT})
# Ends that say nothing about the scheduler's health: an operator stopped it, or the
# manager went away while it ran.
NEUTRAL = frozenset({Outcome.CANCELLED, Outcome.INTERRUPTED})


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    """What the policy remembers per scheduler."""

    failures_in_a_row: int = 0
    notified_failure: bool = False
    missed_plan: datetime | None = None  # the planned time already reported as missed


def after_run(health: Health, outcome: Outcome) -> tuple[Health, NotificationKind | None]:
    """The new health after a run ended with ``outcome``, and what to send, if anything."""
    if outcome in NEUTRAL:
        return health, None
    if outcome in FAILING:
        streak = health.failures_in_a_row + 1
        if health.notified_failure:
            return Health(failures_in_a_row=streak, notified_failure=True), None
        return Health(failures_in_a_row=streak, notified_failure=True), NotificationKind.FAILURE
    recovered = health.notified_failure
    return Health(), NotificationKind.RECOVERY if recovered else None


def overdue(
    health: Health,
    *,
    planned_at: datetime | None,
    running: bool,
    grace: timedelta,
    now: datetime,
) -> tuple[Health, bool]:
    """Whether a start planned at ``planned_at`` is now overdue (and not yet reported)."""
    if planned_at is None or running or now < planned_at + grace:
        return health, False
    if health.missed_plan == planned_at:
        return health, False
    return (
        Health(
            failures_in_a_row=health.failures_in_a_row,
            notified_failure=health.notified_failure,
            missed_plan=planned_at,
        ),
        True,
    )
