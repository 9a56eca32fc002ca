"""When a scheduler runs next: a pure function of its kind, settings, anchor and now.

Delays and pauses are measured on the monotonic clock so a wall-clock jump never causes
a burst of runs; cron times are wall-clock times in the scheduler's time zone.
May import ``definitions``, ``records`` and ``timing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from supervisor.core.definitions import Kind, Settings
from supervisor.core.records import Trigger
from supervisor.core.timing import missed_cron_run, next_cron_run


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """A planned run: ``due`` on the monotonic clock, ``planned_at`` on the wall clock."""

    due: float
    planned_at: datetime
    trigger: Trigger
    follows_wall_clock: bool = False  # cron plans: the wall time decides, not ``due``


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    """What the next plan is measured from: the scheduler's start, or its last run's end."""

    mono: float
    wall: datetime
    after_run: bool


def _after(anchor: Anchor, delay: timedelta, trigger: Trigger) -> Plan:
    seconds = delay.total_seconds()
    return Plan(due=anchor.mono + seconds, planned_at=anchor.wall + delay, trigger=trigger)


def cron_plan(settings: Settings, *, now_mono: float, now_wall: datetime) -> Plan:
    """The next cron time strictly after ``now_wall``."""
    assert settings.cron is not None
    at = next_cron_run(settings.cron, settings.timezone, now_wall)
    return Plan(
        due=now_mono + (at - now_wall).total_seconds(),
        planned_at=at,
        trigger=Trigger.CRON,
        follows_wall_clock=True,
    )


def next_plan(
    kind: Kind,
    settings: Settings,
    anchor: Anchor,
    *,
    now_mono: float,
    now_wall: datetime,
) -> Plan | None:
    """The next planned run, or None when nothing is planned (MANUAL, finished ONE_SHOT,
    disabled)."""
    if settings.disabled:
        return None
    if kind is Kind.MANUAL:
        return None
    if kind is Kind.ONE_SHOT:
        return None if anchor.after_run else _after(anchor, settings.start_delay, Trigger.START)
    if kind is Kind.SCHEDULE:
        if anchor.after_run:
            return _after(anchor, settings.pause_time, Trigger.SCHEDULE)
        return _after(anchor, settings.start_delay, Trigger.SCHEDULE)
    return cron_plan(settings, now_mono=now_mono, now_wall=now_wall)


def catch_up_plan(
    settings: Settings,
    *,
    last_planned: datetime | None,
    now_mono: float,
    now_wall: datetime,
) -> Plan | None:
    """A CRON run missed while the supervisor was down, to run once at start (after the
    start delay), like systemd's ``Persistent=true``; None if nothing was missed."""
    if settings.cron is None or settings.disabled or last_planned is None:
        return None
    missed = missed_cron_run(
        settings.cron, settings.timezone, last_planned=last_planned, now=now_wall
    )
    if missed is None:
        return None
    delay = settings.start_delay
    return Plan(
        due=now_mono + delay.total_seconds(), planned_at=now_wall + delay, trigger=Trigger.MISSED
    )
