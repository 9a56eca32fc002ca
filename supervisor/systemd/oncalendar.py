"""Cron expressions as systemd ``OnCalendar=`` values, and where systemd's DST rules differ.

Pure functions: no I/O, no clock reads.

Translation (``to_oncalendar``) works on the parsed value sets of ``supervisor.core.cronexpr``
(so it accepts exactly what the manager accepts: 5 fields, or 6 with seconds first;
lists, ranges, steps, month and day names, the ``@`` macros) and writes each field back
compactly (``*``, ``05..40/5``, ``00..45/15``, ``Mon..Fri``, lists). Macros come out spelled
out: ``@weekly`` is ``Sun *-*-* 00:00:00`` (systemd's own ``weekly`` is Monday).
Cron ORs a restricted day-of-month with a restricted day-of-week (ISC rule: neither
field starts with ``*``) where ``OnCalendar=`` ANDs them, so that case gives two lines,
one per day field; a timer fires on the union of its ``OnCalendar=`` lines.

DST (checked against ``systemd-analyze calendar`` of systemd 252; the manager follows
ISC cron, see ``supervisor.core.timing``). systemd walks wall-clock time forward from the
previous elapse and maps each matching wall time to an instant:

- a wall time inside a spring-forward gap is skipped: ``30 2 * * *`` in New York does
  not run on 2026-03-08 (the manager runs it at 03:00 EDT, right after the jump, like
  ISC cron does for fixed-time jobs);
- a wall time repeated by a fall-back runs once, at its first occurrence (EDT): the
  same as the manager for fixed-time jobs, but wildcard jobs (``*/15 * * * *``,
  ``30 * * * *``) run in both passes of the repeated hour under the manager and only in
  the first under systemd.

(A timer started while the repeated hour is in its second pass maps repeated wall times
to that second pass; ``systemd_runs`` models that too.) ``dst_differences`` lists the
transitions where the two differ, so ``generate-units`` can warn naming the date.

Imports ``supervisor.core.cronexpr``, ``supervisor.core.timing``, ``supervisor.core.errors`` and the
standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from supervisor.core.cronexpr import CronExpr, parse_cron, validate_timezone, wall_times_after
from supervisor.core.errors import DefinitionError
from supervisor.core.timing import cron_runs

# systemd's week starts on Monday; cron's day-of-week 0 is Sunday.
_SYSTEMD_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_SECOND = timedelta(seconds=1)
_TRANSITION_PROBE = timedelta(days=1)  # no zone changes its offset twice within a day


def to_oncalendar(expr: str, timezone: str) -> list[str]:
    """The ``OnCalendar=`` values whose union fires exactly at the wall times of ``expr``.

    Each value ends with ``timezone``. Raises ``DefinitionError("cron", ...)`` for an
    expression the manager would refuse (the only ones that cannot be translated) and
    ``DefinitionError("timezone", ...)`` for an unknown zone.
    """
    cron = parse_cron(expr)
    validate_timezone(timezone)
    fields = (cron.seconds, cron.minutes, cron.hours, cron.days_of_month, cron.months)
    if not all(fields) or not cron.days_of_week:
        raise DefinitionError("cron", f"{expr!r} leaves a field without any value")
    time_of_day = ":".join(
        (
            _component(cron.hours, 0, 23),
            _component(cron.minutes, 0, 59),
            _component(cron.seconds, 0, 59),
        )
    )
    months = _component(cron.months, 1, 12)
    if cron.days_either:
        day_sets: list[tuple[frozenset[int] | None, frozenset[int] | None]] = [
            (cron.days_of_month, None),
            (None, cron.days_of_week),
        ]
    else:
        day_sets = [(cron.days_of_month, cron.days_of_week)]
    lines = []
    for days_of_month, days_of_week in day_sets:
        weekdays = "" if days_of_week is None else _weekdays(days_of_week)
        day = "*" if days_of_month is None else _component(days_of_month, 1, 31)
        date_part = f"*-{months}-{day}"
        prefix = f"{weekdays} " if weekdays else ""
        lines.append(f"{prefix}{date_part} {time_of_day} {timezone}")
    return lines


def _component(values: Iterable[int], low: int, high: int) -> str:
    """One calendar component: ``*``, ``a..b``, ``a..b/step`` or a list."""
    ordered = sorted(values)
    if ordered == list(range(low, high + 1)):
        return "*"
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        if ordered == list(range(ordered[0], ordered[-1] + 1, step)):
            first, last = ordered[0], ordered[-1]
            # Always with an end: systemd 252 loops forever ("Resource deadlock avoided")
            # on an open repetition like "*-01/5-*" in a time zone when the year rolls.
            if step == 1:
                return f"{first:02d}..{last:02d}"
            return f"{first:02d}..{last:02d}/{step}"
    return ",".join(
        f"{run[0]:02d}..{run[-1]:02d}" if len(run) >= 3 else ",".join(f"{v:02d}" for v in run)
        for run in _consecutive_runs(ordered)
    )


def _weekdays(cron_days: frozenset[int]) -> str:
    """Cron days of week (0 = Sunday) as systemd names; empty for every day."""
    indexes = sorted((day - 1) % 7 for day in cron_days)  # Monday = 0
    if len(indexes) == 7:
        return ""
    return ",".join(
        f"{_SYSTEMD_WEEKDAYS[run[0]]}..{_SYSTEMD_WEEKDAYS[run[-1]]}"
        if len(run) >= 3
        else ",".join(_SYSTEMD_WEEKDAYS[i] for i in run)
        for run in _consecutive_runs(indexes)
    )


def _consecutive_runs(ordered: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for value in ordered:
        if runs and runs[-1][-1] == value - 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return runs


# --- DST --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DstDifference:
    """A DST transition where systemd's timer fires otherwise than the manager runs.

    Within ``[affected_from, affected_until)`` (aware UTC) the two differ; everywhere
    else they agree. ``skipped``: clocks spring forward over a wall time the expression
    names; the manager runs at ``transition`` (right after the jump), systemd skips it.
    ``repeated``: clocks fall back and a wildcard job runs in both passes of the repeated
    hour under the manager; systemd only in the pass ``systemd_runs_in`` names: the first,
    unless its timer last fired in standard time (nothing matched since summer time
    began), then the second. The affected interval is the pass systemd leaves out,
    ``manager_first`` the manager's first run in it.
    """

    timezone: str
    kind: Literal["skipped", "repeated"]
    transition: datetime
    local_date: date
    affected_from: datetime
    affected_until: datetime
    manager_first: datetime
    systemd_runs_in: Literal["first", "second"] = "first"

    def affects(self, instant: datetime) -> bool:
        return self.affected_from <= instant < self.affected_until

    def describe(self) -> str:
        """One line for a warning, e.g. from ``generate-units``."""
        zone = ZoneInfo(self.timezone)
        run = self.manager_first.astimezone(zone).strftime("%H:%M:%S %Z")
        day = f"{self.local_date.isoformat()} ({self.timezone})"
        if self.kind == "skipped":
            return (
                f"{day}: clocks spring forward over the scheduled time; the manager runs at "
                f"{run}, right after the jump, but systemd skips that run"
            )
        first = self.affected_from.astimezone(zone).strftime("%H:%M")
        last = self.affected_until.astimezone(zone).strftime("%H:%M")
        if self.systemd_runs_in == "second":
            return (
                f"{day}: clocks fall back and {first}-{last} happens twice; the manager runs "
                f"in both passes (from {run}), systemd only in the second (its timer last "
                "fired before summer time began)"
            )
        return (
            f"{day}: clocks fall back and {first}-{last} happens twice; the manager runs "
            f"in both passes (again from {run}), systemd only in the first"
        )


def dst_differences(
    expr: str, timezone: str, *, start: datetime, horizon_days: int = 400
) -> list[DstDifference]:
    """The DST transitions in ``[start, start + horizon_days]`` where systemd's timer
    fires at other instants than the manager runs ``expr``, oldest first."""
    cron = parse_cron(expr)
    zone = ZoneInfo(validate_timezone(timezone))
    start = _aware_utc(start, "start")
    differences = []
    summer_began = start  # (or earlier): where the last spring-forward put the clocks
    for transition, before, after in _transitions(zone, start, start + timedelta(horizon_days)):
        springs_forward = after > before
        if not springs_forward:
            first_pass = transition - (before - after)
            counted_from = _timer_base(
                expr, timezone, start=start, summer_began=summer_began, until=first_pass
            )
            if _reads_second_pass(counted_from, zone):
                manager = _first_or_none(
                    cron_runs(expr, timezone, first_pass - _SECOND, 1), transition
                )
                if manager is not None:
                    differences.append(
                        DstDifference(
                            timezone=timezone,
                            kind="repeated",
                            transition=transition,
                            local_date=transition.astimezone(zone).date(),
                            affected_from=first_pass,
                            affected_until=transition,
                            manager_first=manager,
                            systemd_runs_in="second",
                        )
                    )
                continue
        else:
            summer_began = transition
        until = transition + (_SECOND if springs_forward else before - after)
        manager = _first_or_none(cron_runs(expr, timezone, transition - _SECOND, 1), until)
        systemd = _first_or_none(
            list(_systemd_runs(cron, zone, transition - _SECOND, count=1)), until
        )
        if manager is not None and manager != systemd:
            differences.append(
                DstDifference(
                    timezone=timezone,
                    kind="skipped" if springs_forward else "repeated",
                    transition=transition,
                    local_date=transition.astimezone(zone).date(),
                    affected_from=transition,
                    affected_until=until,
                    manager_first=manager,
                )
            )
    return differences


def systemd_runs(expr: str, timezone: str, *, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` elapses after ``after`` of the timer ``to_oncalendar`` gives,
    chained from ``after`` (aware UTC), following systemd 252's DST rules."""
    zone = ZoneInfo(validate_timezone(timezone))
    return list(_systemd_runs(parse_cron(expr), zone, _aware_utc(after, "after"), count=count))


def _systemd_runs(
    cron: CronExpr, zone: ZoneInfo, after: datetime, *, count: int
) -> Iterator[datetime]:
    if count <= 0:
        return
    base = after.astimezone(zone)
    second_pass = _reads_second_pass(base, zone)
    produced = 0
    for wall in wall_times_after(cron, base.replace(tzinfo=None)):
        real = _occurrences(wall, zone)
        if not real:
            continue  # inside a spring-forward gap: systemd skips it
        instant = real[-1] if second_pass and len(real) == 2 else real[0]
        if instant <= after:
            continue
        yield instant
        second_pass = _reads_second_pass(instant, zone)  # the next one counts from this one
        produced += 1
        if produced == count:
            return


def _reads_second_pass(counted_from: datetime, zone: ZoneInfo) -> bool:
    """Whether systemd, counting from ``counted_from``, maps a wall time the clocks pass
    twice to its second pass: it reads the wall time with the tm_isdst of the time it
    counts from, so from standard time the second pass, from summer time the first.
    (Counting from inside the second pass is a case of it.)"""
    return not counted_from.astimezone(zone).dst()


def _timer_base(
    expr: str, timezone: str, *, start: datetime, summer_began: datetime, until: datetime
) -> datetime:
    """An instant of the same offset as the one a timer running ``expr`` since ``start``
    counts from at ``until`` (a fall-back's first pass): its last elapse before then, or
    ``start`` where it has none. ``summer_began``: the spring-forward before ``until``
    (or ``start``). Up to ``until`` the timer's elapses are the manager's runs."""
    ran = cron_runs(expr, timezone, summer_began, 1)
    if ran and ran[0] < until:
        return ran[0]  # it fired in summer time
    chained = cron_runs(expr, timezone, start, 1)
    if chained and chained[0] < until:
        return summer_began - _SECOND  # it last fired before summer time began
    return start


def _occurrences(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants whose wall clock in ``zone`` reads ``wall``: none, one or two."""
    candidates = {wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)}
    return sorted(c for c in candidates if c.astimezone(zone).replace(tzinfo=None) == wall)


def _first_or_none(runs: Sequence[datetime], until: datetime) -> datetime | None:
    return runs[0] if runs and runs[0] < until else None


def _transitions(
    zone: ZoneInfo, start: datetime, end: datetime
) -> list[tuple[datetime, timedelta, timedelta]]:
    """Offset changes in ``[start, end]``: (first instant of the new offset, old, new)."""
    found = []
    cursor = start
    offset = _offset(zone, cursor)
    while cursor < end:
        probe = min(cursor + _TRANSITION_PROBE, end)
        new_offset = _offset(zone, probe)
        if new_offset != offset:
            low, high = cursor, probe  # offset(low) is the old one, offset(high) the new
            while high - low > _SECOND:
                middle = low + (high - low) / 2
                middle -= timedelta(microseconds=middle.microsecond)
                if _offset(zone, middle) == offset:
                    low = middle
                else:
                    high = middle
            found.append((high, offset, new_offset))
            offset = new_offset
        cursor = probe
    return found


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    return instant.astimezone(zone).utcoffset() or timedelta(0)


def _aware_utc(instant: datetime, name: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {instant.isoformat()}")
    return instant.astimezone(UTC)
