"""Cron expressions and time-zone names: validate, parse, and list matching wall-clock times.

The only module that imports croniter, so it can be swapped. croniter is used for one
thing only, listing NAIVE wall-clock times (its DST bugs are all in aware datetimes);
what those times mean across DST is decided by ``supervisor.core.timing``.

Accepted syntax (we parse it ourselves, so messages name the field and croniter's
extensions ``H L W # ? R`` and its year field are refused):

- 5 fields ``minute hour day-of-month month day-of-week``, or 6 fields with SECONDS
  FIRST: ``second minute hour day-of-month month day-of-week`` (as in Quartz and Spring;
  NOT croniter's default of seconds last). 5 fields mean second 0.
- Each field is a comma list of ``*``, ``N``, ``A-B`` (``A <= B``; no wrap-around), each
  with an optional ``/STEP``; ``N/STEP`` means ``N-max/STEP`` (Quartz). Month names
  ``jan``-``dec`` and day names ``sun``-``sat`` (any case); day-of-week 0 and 7 are Sunday.
- Macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly``; ``@reboot``
  is refused (it is not a schedule; use a ONE_SHOT scheduler).
- Days follow ISC cron: when both day fields are restricted (neither starts with ``*``)
  a day matches if EITHER matches; otherwise both must match.
- An expression that can never match (``0 0 30 2 *``) is refused.

``validate_cron`` returns the expression with whitespace collapsed and lower-cased;
macros are kept as written (lower-cased), not expanded.

Imports croniter, the standard library and ``supervisor.core.errors``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from supervisor.core.errors import DefinitionError

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MAX_DAY_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb 29 exists
_Complaint = Callable[[str], DefinitionError]
_ZONE_KEY = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")


@dataclass(frozen=True, slots=True)
class _Spec:
    """One field's name and range; ``top`` is the largest value one may write."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name_value: int = 0
    top: int = -1

    @property
    def largest(self) -> int:
        return self.top if self.top >= 0 else self.high


_SECOND = _Spec("second", 0, 59)
_MINUTE = _Spec("minute", 0, 59)
_HOUR = _Spec("hour", 0, 23)
_DAY_OF_MONTH = _Spec("day-of-month", 1, 31)
_MONTH = _Spec("month", 1, 12, _MONTHS, 1)
_DAY_OF_WEEK = _Spec("day-of-week", 0, 6, _DAYS, 0, top=7)  # 7 is Sunday too


@dataclass(frozen=True, slots=True, kw_only=True)
class CronExpr:
    """A parsed cron expression; build it with ``parse_cron``.

    ``fixed_time`` is ISC cron's notion of a job that is not a "wildcard" job: none of
    its time-of-day fields (second if given, minute, hour) starts with ``*``. It decides
    what happens across DST (see ``supervisor.core.timing``).
    """

    text: str
    has_seconds: bool
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday
    days_either: bool  # both day fields restricted: a day matches if either matches
    fixed_time: bool

    def matches(self, wall: datetime) -> bool:
        """Whether the wall-clock time ``wall`` (naive, whole seconds) is a match."""
        if wall.microsecond or wall.second not in self.seconds:
            return False
        if wall.minute not in self.minutes or wall.hour not in self.hours:
            return False
        if wall.month not in self.months:
            return False
        by_month_day = wall.day in self.days_of_month
        by_week_day = (wall.weekday() + 1) % 7 in self.days_of_week
        if self.days_either:
            return by_month_day or by_week_day
        return by_month_day and by_week_day


def validate_cron(expr: str) -> str:
    """``expr`` normalized (whitespace collapsed, lower case), or ``DefinitionError("cron")``."""
    return parse_cron(expr).text


def validate_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone, else ``DefinitionError("timezone", ...)``."""
    # ZoneInfo would also load these files of the zoneinfo tree, which are not IANA zones
    # ("right/" ones count leap seconds, which zoneinfo cannot honour).
    if (
        not _ZONE_KEY.fullmatch(name)
        or name in ("localtime", "Factory", "posixrules")
        or name.startswith(("posix/", "right/"))
    ):
        raise DefinitionError("timezone", f"{name!r} is not an IANA time zone name")
    # Loaded here, not at import: only a definition's time zone needs it. "UTC" is
    # checked too, so a machine without a time-zone database is told at definition.
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise DefinitionError(
            "timezone", f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)"
        ) from error
    return name


def parse_cron(expr: str) -> CronExpr:
    """Parse ``expr``; raise ``DefinitionError("cron", ...)`` naming what is wrong."""
    text = " ".join(expr.split())
    if not text:
        raise DefinitionError("cron", "the expression is empty")
    tokens = _expand_macro(text.lower()).split() if text.startswith("@") else text.split()
    if len(tokens) == 5:
        tokens.insert(0, "0")
        has_seconds = False
    elif len(tokens) == 6:
        has_seconds = True
    else:
        raise DefinitionError(
            "cron",
            f"{expr!r} has {len(tokens)} fields; expected 5 (minute hour day-of-month month "
            "day-of-week) or 6 with seconds first (second minute hour ...)",
        )
    specs = (_SECOND, _MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK)
    sets = [_parse_field(token, spec, expr) for token, spec in zip(tokens, specs, strict=True)]
    second, minute, hour, day, _, weekday = tokens
    cron = CronExpr(
        text=text.lower(),
        has_seconds=has_seconds,
        seconds=sets[0],
        minutes=sets[1],
        hours=sets[2],
        days_of_month=sets[3],
        months=sets[4],
        days_of_week=frozenset(v % 7 for v in sets[5]),
        days_either=not (day.startswith("*") or weekday.startswith("*")),
        fixed_time=not any(t.startswith("*") for t in (second, minute, hour)),
    )
    # Under "either" a day-of-week always supplies days; under "both", any real date
    # falls on every weekday over the years, so only the month and day can clash.
    if not cron.days_either and not any(
        day <= _MAX_DAY_IN_MONTH[month] for month in cron.months for day in cron.days_of_month
    ):
        raise DefinitionError(
            "cron",
            f"{expr!r} never matches: day-of-month {_listed(cron.days_of_month)} "
            f"does not occur in month {_listed(cron.months)}",
        )
    return cron


def wall_times_after(cron: CronExpr, start: datetime) -> Iterator[datetime]:
    """Matching naive wall-clock times strictly after naive ``start``, ascending."""
    return _walk(cron, start, backwards=False)


def wall_times_before(cron: CronExpr, end: datetime) -> Iterator[datetime]:
    """Matching naive wall-clock times strictly before naive ``end``, descending."""
    return _walk(cron, end, backwards=True)


def _walk(cron: CronExpr, start: datetime, *, backwards: bool) -> Iterator[datetime]:
    # Imported here: croniter (and dateutil under it) cost ~40 ms, which the CLI's
    # socket-only commands (list, status, ...) must not pay just for importing definitions.
    from croniter import CroniterBadDateError, croniter

    if start.tzinfo is not None:
        raise ValueError(f"expected a naive wall-clock time, got {start.isoformat()}")
    # Explicit value lists keep croniter's own parsing quirks ("5-5" is a whole cycle
    # there) out of the way; day_or carries ISC's rule for the two day fields.
    fields = [cron.minutes, cron.hours, cron.days_of_month, cron.months, cron.days_of_week]
    if cron.has_seconds:
        fields.insert(0, cron.seconds)
    iterator = croniter(
        " ".join(_listed(values) for values in fields),
        start,
        ret_type=datetime,
        day_or=cron.days_either,
        second_at_beginning=True,
    )
    step = iterator.get_prev if backwards else iterator.get_next
    while True:
        try:
            wall: datetime = step()
        except (CroniterBadDateError, OverflowError, ValueError):
            return  # ran off the calendar (year 1 or 9999)
        yield wall


def _listed(values: frozenset[int]) -> str:
    return ",".join(map(str, sorted(values)))


def _expand_macro(text: str) -> str:
    if text == "@reboot":
        raise DefinitionError("cron", "@reboot is not a schedule (use a ONE_SHOT scheduler)")
    if text not in _MACROS:
        raise DefinitionError(
            "cron", f"unknown macro {text!r} (known: {', '.join(sorted(_MACROS))})"
        )
    return _MACROS[text]


def _parse_field(token: str, spec: _Spec, expr: str) -> frozenset[int]:
    def bad(problem: str) -> DefinitionError:
        return DefinitionError("cron", f"{spec.name} field {token!r} in {expr!r}: {problem}")

    values: set[int] = set()
    for item in token.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            step = _number(step_text, bad, what="step")
            if not 1 <= step <= spec.high - spec.low + 1:
                raise bad(f"step {step} must be between 1 and {spec.high - spec.low + 1}")
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(first, spec, bad), _value(last, spec, bad)
            if low > high:
                raise bad(f"range {base!r} runs backwards (write it as two ranges)")
        else:
            low = _value(base, spec, bad)
            high = spec.high if slash else low  # "N/STEP" means "N-max/STEP"
        values.update(range(low, high + 1, step))
    return frozenset(values)


def _value(text: str, spec: _Spec, bad: _Complaint) -> int:
    if text.lower() in spec.names:
        return spec.names.index(text.lower()) + spec.first_name_value
    if spec.names and text.isalpha():
        raise bad(f"{text!r} is not a name ({spec.names[0]}-{spec.names[-1]})")
    value = _number(text, bad, what="value")
    if not spec.low <= value <= spec.largest:
        raise bad(f"value {value} is out of range {spec.low}-{spec.largest}")
    return value


def _number(text: str, bad: _Complaint, *, what: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise bad(f"{what} {text!r} is not a number" if text else f"a {what} is missing")
    return int(text)
