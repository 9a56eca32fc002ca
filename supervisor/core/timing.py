"""When a CRON scheduler runs: pure functions of (expression, time zone, instants).

No I/O and no clock reads: every instant is passed in (aware) and comes back as an aware
UTC datetime. Daylight-saving time is handled exactly like ISC cron (Debian's cron):

- A *fixed-time* job (``CronExpr.fixed_time``: no time-of-day field starts with ``*``)
  whose wall time falls in a skipped hour runs once, at the instant of the jump (NY
  2026-03-08 ``30 2 * * *`` -> 03:00 EDT); several skipped times collapse to that one
  run. In a repeated hour it runs once, at the first occurrence.
- A *wildcard* job (``*/15 * * * *``, ``30 * * * *``, ``0 */2 * * *``) follows elapsed
  time: skipped wall times do not occur, repeated ones occur twice.

Results never show a nonexistent local time and strictly increase.

Imports ``supervisor.core.cronexpr``, ``supervisor.core.errors`` and the standard library.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from supervisor.core.cronexpr import (
    CronExpr,
    parse_cron,
    validate_timezone,
    wall_times_after,
    wall_times_before,
)
from supervisor.core.errors import DefinitionError

_SECOND = timedelta(seconds=1)
# Time zones never change their offset twice within this span, so offsets sampled at
# both ends of it bound the wall clock near an instant.
_OFFSET_HORIZON = timedelta(days=2)


def next_cron_run(expr: str, timezone: str, after: datetime) -> datetime:
    """The first planned run strictly after aware ``after``, as aware UTC."""
    return cron_runs(expr, timezone, after, 1)[0]


def cron_runs(expr: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` planned runs strictly after aware ``after`` (aware UTC, ascending)."""
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    cron, zone = parse_cron(expr), _zone(timezone)
    runs = list(itertools.islice(_runs_after(cron, zone, _utc(after, "after")), count))
    if len(runs) < count:
        raise DefinitionError("cron", f"{expr!r} has no run after {after.isoformat()}")
    return runs


def missed_cron_run(
    expr: str, timezone: str, *, last_planned: datetime, now: datetime
) -> datetime | None:
    """The latest planned run in ``(last_planned, now]`` (aware UTC), or None.

    What to run once at start for a run missed while the supervisor was down, like
    systemd's ``Persistent=true``.
    """
    cron, zone = parse_cron(expr), _zone(timezone)
    since, until = _utc(last_planned, "last_planned"), _utc(now, "now")
    if since >= until:
        return None
    latest: datetime | None = None
    # Newest wall times first; stop once no older wall time can beat what we have.
    for wall in wall_times_before(cron, _latest_wall(until, zone) + _SECOND):
        runs, _first, last = _plan(cron, zone, wall)
        for run in runs:
            if since < run <= until and (latest is None or run > latest):
                latest = run
        if last <= since or (latest is not None and latest >= last):
            return latest
    return latest


def _runs_after(cron: CronExpr, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Planned runs strictly after ``after``, ascending, without duplicates."""
    pending: list[datetime] = []
    last = after
    for wall in wall_times_after(cron, _earliest_wall(after, zone) - _SECOND):
        runs, first, _last = _plan(cron, zone, wall)
        for run in runs:
            heapq.heappush(pending, run)
        # Later wall times never plan before ``first`` (a repeated hour's second pass
        # is the only thing that comes out of order), so everything up to it is final.
        while pending and pending[0] <= first:
            run = heapq.heappop(pending)
            if run > last:
                last = run
                yield run
    while pending:
        run = heapq.heappop(pending)
        if run > last:
            last = run
            yield run


def _plan(
    cron: CronExpr, zone: ZoneInfo, wall: datetime
) -> tuple[tuple[datetime, ...], datetime, datetime]:
    """The runs a matching wall time gives, and the first and last instant it stands for."""
    occurrences = _occurrences(wall, zone)
    if not occurrences:  # skipped by a forward jump
        jump = _jump_past(wall, zone)
        return ((jump,) if cron.fixed_time else ()), jump, jump
    runs = occurrences[:1] if cron.fixed_time else occurrences
    return runs, occurrences[0], occurrences[-1]


def _occurrences(wall: datetime, zone: ZoneInfo) -> tuple[datetime, ...]:
    """The UTC instants whose wall clock in ``zone`` reads ``wall``: none, one or two."""
    candidates = {wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)}
    return tuple(sorted(c for c in candidates if _wall(c, zone) == wall))


def _jump_past(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant whose wall clock reads ``wall`` or later (``wall`` is skipped)."""
    # In a gap, the two folds bracket the jump; find it to the second.
    low, high = sorted(wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    while high - low > _SECOND:
        middle = low + (high - low) // 2
        middle -= timedelta(microseconds=middle.microsecond)
        if _wall(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return high


def _earliest_wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """A wall time no later than any wall time shown after ``instant``."""
    offset = min(_offset(instant, zone), _offset(instant + _OFFSET_HORIZON, zone))
    return (instant + offset).replace(tzinfo=None)


def _latest_wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """A wall time no earlier than any wall time shown up to ``instant``."""
    offset = max(_offset(instant, zone), _offset(instant - _OFFSET_HORIZON, zone))
    return (instant + offset).replace(tzinfo=None)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    return zone.utcoffset(instant.astimezone(zone)) or timedelta(0)


def _utc(instant: datetime, name: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {instant.isoformat()}")
    return instant.astimezone(UTC)


def _zone(timezone: str) -> ZoneInfo:
    return ZoneInfo(validate_timezone(timezone))
