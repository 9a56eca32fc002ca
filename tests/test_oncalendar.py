"""Tests for supervisor.systemd.oncalendar: cron -> OnCalendar=, proven against systemd-analyze.

The proof: for each expression, the next elapses that ``systemd-analyze calendar`` (the
same code systemd's timers use) computes for the ``to_oncalendar`` lines equal
``timing.cron_runs`` except inside the DST intervals ``dst_differences`` reports, where
the documented difference is asserted instead; and they equal ``systemd_runs`` (our
model of systemd's rules) everywhere, DST included.

DST dates of 2026 used below: New York 03-08 02:00 EST -> 03:00 EDT (07:00Z), 11-01
02:00 EDT -> 01:00 EST (06:00Z); Havana 03-08 00:00 -> 01:00 (05:00Z), 11-01 01:00 ->
00:00 (05:00Z); Lord Howe 04-05 02:00 -> 01:30 (04-04 15:00Z), 10-04 02:00 -> 02:30
(10-03 15:30Z).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from supervisor.core.cronexpr import parse_cron
from supervisor.core.errors import DefinitionError
from supervisor.core.timing import cron_runs
from supervisor.systemd.oncalendar import dst_differences, systemd_runs, to_oncalendar

NEW_YORK = "America/New_York"
BERLIN = "Europe/Berlin"
HAVANA = "America/Havana"
LORD_HOWE = "Australia/Lord_Howe"
ITERATIONS = 200

needs_analyze = pytest.mark.usefixtures("systemd_analyze")  # tests/conftest.py


def z(text: str) -> datetime:
    """An aware UTC instant from ``YYYY-MM-DD HH:MM[:SS]``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- the text of the translation -------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "timezone", "lines"),
    [
        ("30 2 * * *", BERLIN, ["*-*-* 02:30:00 Europe/Berlin"]),
        ("*/15 * * * *", "UTC", ["*-*-* *:00..45/15:00 UTC"]),
        # Never an open repetition: systemd 252 fails on "*-01/5-*" in a zone.
        ("0 0 * */5 *", NEW_YORK, ["*-01..11/5-* 00:00:00 America/New_York"]),
        ("5-40/5 * * * *", "UTC", ["*-*-* *:05..40/5:00 UTC"]),
        ("0 9 * * mon-fri", NEW_YORK, ["Mon..Fri *-*-* 09:00:00 America/New_York"]),
        ("0 0 1,15 jan,JUL *", "UTC", ["*-01,07-01,15 00:00:00 UTC"]),
        ("0 0 * * 7", "UTC", ["Sun *-*-* 00:00:00 UTC"]),
        ("0 0 * * 0-2", "UTC", ["Mon,Tue,Sun *-*-* 00:00:00 UTC"]),
        ("*/10 0 12 * * sat,sun", "UTC", ["Sat,Sun *-*-* 12:00:00..50/10 UTC"]),
        ("1,2,5,6,7,9 * * * *", "UTC", ["*-*-* *:01,02,05..07,09:00 UTC"]),
        ("0 0 */2 * mon", "UTC", ["Mon *-*-01..31/2 00:00:00 UTC"]),  # "*/2": AND, as in cron
        # Both day fields restricted: cron ORs them, so one line per field.
        ("0 0 1 * mon", "UTC", ["*-*-01 00:00:00 UTC", "Mon *-*-* 00:00:00 UTC"]),
        ("0 0 13 * fri", "UTC", ["*-*-13 00:00:00 UTC", "Fri *-*-* 00:00:00 UTC"]),
        # Macros, spelled out (systemd's own "weekly" would be Monday).
        ("@yearly", "UTC", ["*-01-01 00:00:00 UTC"]),
        ("@annually", "UTC", ["*-01-01 00:00:00 UTC"]),
        ("@monthly", "UTC", ["*-*-01 00:00:00 UTC"]),
        ("@weekly", "UTC", ["Sun *-*-* 00:00:00 UTC"]),
        ("@daily", "UTC", ["*-*-* 00:00:00 UTC"]),
        ("@midnight", "UTC", ["*-*-* 00:00:00 UTC"]),
        ("@hourly", "UTC", ["*-*-* *:00:00 UTC"]),
        ("* * * * * *", "UTC", ["*-*-* *:*:* UTC"]),
    ],
)
def test_translation_text(expr: str, timezone: str, lines: list[str]) -> None:
    assert to_oncalendar(expr, timezone) == lines


@pytest.mark.parametrize(
    ("expr", "timezone", "field"),
    [
        ("0 0 30 2 *", "UTC", "cron"),
        ("@reboot", "UTC", "cron"),
        ("0 0 * *", "UTC", "cron"),
        ("0 0 L * *", "UTC", "cron"),
        ("0 0 * * *", "Mars/Olympus", "timezone"),
    ],
)
def test_untranslatable_input_is_a_definition_error(expr: str, timezone: str, field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        to_oncalendar(expr, timezone)
    assert caught.value.field == field


# --- systemd-analyze ---------------------------------------------------------------------

_ELAPSE = re.compile(
    r"^\s*(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC$"
)


def analyze(lines: list[str], base: datetime, iterations: int = ITERATIONS) -> list[datetime]:
    """The first ``iterations`` elapses after ``base`` of a timer with these OnCalendar lines.

    systemd-analyze prints times in $TZ (UTC here), whole seconds. It stops at the end of
    2199, so fewer elapses may come back. A timer fires on the union of its lines.
    """
    result = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            f"--iterations={iterations}",
            f"--base-time=@{int(base.timestamp())}",
            *lines,
        ],
        env={"TZ": "UTC", "LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    blocks = result.stdout.split("Normalized form:")[1:]
    assert len(blocks) == len(lines), result.stdout
    per_line = [
        [
            datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            for text in block.splitlines()
            if (m := _ELAPSE.match(text))
        ]
        for block in blocks
    ]
    # Elapses of one line beyond the last elapse another line listed in full are unknown.
    complete_until = min((runs[-1] for runs in per_line if len(runs) == iterations), default=None)
    merged = sorted(set().union(*per_line))
    if complete_until is not None:
        merged = [run for run in merged if run <= complete_until]
    return merged[:iterations]


@dataclass
class Compared:
    elapses: int
    dst_differences: int
    last: datetime


def compare_with_systemd(expr: str, timezone: str, base: datetime) -> Compared:
    """Assert systemd's elapses == the manager's runs outside the reported DST intervals,
    the documented difference inside them, and == ``systemd_runs`` everywhere."""
    elapses = analyze(to_oncalendar(expr, timezone), base)
    assert elapses, f"systemd finds no elapse for {expr!r}"
    assert elapses == systemd_runs(expr, timezone, after=base, count=len(elapses))

    runs = cron_runs(expr, timezone, base, len(elapses))
    horizon = min(elapses[-1], runs[-1])
    differences = dst_differences(
        expr, timezone, start=base, horizon_days=(horizon - base).days + 1
    )
    differences = [d for d in differences if d.affected_from <= horizon]

    def unaffected(times: list[datetime]) -> list[datetime]:
        return [t for t in times if t <= horizon and not any(d.affects(t) for d in differences)]

    assert unaffected(elapses) == unaffected(runs)
    for difference in differences:
        assert difference.manager_first in runs
        assert not any(difference.affects(t) for t in elapses)
        if difference.kind == "repeated":  # systemd ran the other pass
            width = difference.affected_until - difference.affected_from
            if difference.systemd_runs_in == "first":
                other = (difference.affected_from - width, difference.affected_from)
            else:
                other = (difference.affected_until, difference.affected_until + width)
            assert any(other[0] <= t < other[1] for t in elapses)
    return Compared(
        elapses=len([t for t in elapses if t <= horizon]),
        dst_differences=len(differences),
        last=horizon,
    )


CORPUS = [
    # (expression, time zone, base, DST differences expected within the elapses)
    ("*/15 * * * *", NEW_YORK, "2026-10-31 12:00", 1),  # fall back: wildcard runs twice
    ("*/15 * * * *", NEW_YORK, "2026-03-07 12:00", 0),  # spring: both skip the gap
    ("5-40/5 * * * *", BERLIN, "2026-10-24 12:00", 1),
    ("30 * * * *", NEW_YORK, "2026-10-31 12:00", 1),
    ("0 */2 * * *", NEW_YORK, "2026-03-07 12:00", 0),
    ("30 2 * * *", NEW_YORK, "2026-01-01 00:00", 1),  # spring: systemd skips 03-08
    ("30 1 * * *", NEW_YORK, "2026-01-01 00:00", 0),  # fall back: both run once
    ("0,15,30,45 2 * * *", NEW_YORK, "2026-03-01 00:00", 1),
    ("0 2,3 * * *", NEW_YORK, "2026-03-01 00:00", 0),  # the jump run is the 03:00 run
    ("0 2 * * *", BERLIN, "2026-03-01 00:00", 1),
    ("@daily", HAVANA, "2026-03-01 00:00", 1),  # the gap is at midnight
    ("*/20 0 * * *", HAVANA, "2026-10-25 00:00", 1),
    ("*/10 * * * *", LORD_HOWE, "2026-04-04 10:00", 1),  # 30-minute DST
    ("0 2 * * *", LORD_HOWE, "2026-09-20 00:00", 1),
    ("0 9 * * mon-fri", BERLIN, "2026-01-01 00:00", 0),
    ("0 0 1 * mon", "UTC", "2026-01-01 00:00", 0),
    ("0 0 13 * fri", NEW_YORK, "2026-01-01 00:00", 0),
    ("0 0 1-7 * 1", BERLIN, "2026-01-01 00:00", 0),
    ("0 0 */2 * mon", "UTC", "2026-01-01 00:00", 0),
    ("0 0 1,15 jan,jul *", BERLIN, "2026-01-01 00:00", 0),
    ("0 0,12 1 */2 *", "UTC", "2026-01-01 00:00", 0),
    ("0 12 * * sun,sat", "Asia/Kolkata", "2026-01-01 00:00", 0),
    ("23 0-20/2 * * *", BERLIN, "2026-03-27 00:00", 1),  # 02:23 is a fixed time
    ("0 0 29 2 *", "UTC", "2026-01-01 00:00", 0),
    ("0 0 31 * *", NEW_YORK, "2026-01-01 00:00", 0),
    ("0 0 29 feb mon", "UTC", "2026-01-01 00:00", 0),
    ("*/10 0 12 * * sat,sun", BERLIN, "2026-01-01 00:00", 0),
    ("30 */7 2-4 * * *", NEW_YORK, "2026-03-07 12:00", 0),
    ("0 30 2 * * *", NEW_YORK, "2026-03-01 00:00", 1),
    ("* * * * * *", NEW_YORK, "2026-11-01 05:58", 1),
    ("0 0 * */5 *", NEW_YORK, "2026-01-01 00:00", 0),
    ("*/7 * * * * *", "UTC", "2026-01-01 00:00", 0),
    ("@yearly", BERLIN, "2026-01-01 00:00", 0),
    ("@annually", "UTC", "2026-01-01 00:00", 0),
    ("@monthly", NEW_YORK, "2026-01-01 00:00", 0),
    ("@weekly", NEW_YORK, "2026-01-01 00:00", 0),
    ("@midnight", BERLIN, "2026-01-01 00:00", 0),
    ("@hourly", NEW_YORK, "2026-10-31 12:00", 1),
]


@needs_analyze
@pytest.mark.parametrize(("expr", "timezone", "base", "expected_differences"), CORPUS)
def test_corpus_matches_systemd(
    expr: str, timezone: str, base: str, expected_differences: int
) -> None:
    compared = compare_with_systemd(expr, timezone, z(base))
    assert compared.dst_differences == expected_differences
    assert compared.elapses >= 100 or compared.last.year >= 2150  # systemd stops at 2199


@needs_analyze
@pytest.mark.parametrize(
    ("expr", "timezone", "base"),
    [
        # A timer started during the second pass of a repeated hour maps repeated wall
        # times to that second pass (a difference dst_differences does not report: it
        # assumes a timer running from before the change).
        ("30 1 * * *", NEW_YORK, "2026-11-01 06:00"),
        ("*/15 * * * *", NEW_YORK, "2026-11-01 06:10"),
        ("*/15 * * * *", NEW_YORK, "2026-11-01 05:50"),
        ("30 1 * * *", NEW_YORK, "2026-11-01 05:40"),
        ("*/10 * * * *", LORD_HOWE, "2026-04-04 15:05"),
    ],
)
def test_systemd_model_from_inside_a_repeated_hour(expr: str, timezone: str, base: str) -> None:
    elapses = analyze(to_oncalendar(expr, timezone), z(base), 30)
    assert elapses == systemd_runs(expr, timezone, after=z(base), count=30)


# Hypothesis: random expressions in the accepted grammar.


def _field(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    number = value.map(str)
    if names:
        number = number | value.filter(lambda v: v - low < len(names)).map(lambda v: names[v - low])
    span = st.tuples(value, value).map(sorted).map(lambda ab: f"{ab[0]}-{ab[1]}")
    step = st.integers(1, high - low + 1).map(str)
    atom = st.one_of(
        st.just("*"),
        number,
        span,
        st.tuples(st.just("*"), step).map("/".join),
        st.tuples(span, step).map("/".join),
        st.tuples(value.map(str), step).map("/".join),
    )
    return st.lists(atom, min_size=1, max_size=3).map(",".join)


MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
cron_expressions = st.tuples(
    st.none() | _field(0, 59),
    _field(0, 59),
    _field(0, 23),
    _field(1, 31),
    _field(1, 12, MONTHS),
    _field(0, 7, DAYS),
).map(lambda fields: " ".join(f for f in fields if f is not None))


TRANSITIONS = {  # 2026, UTC
    NEW_YORK: ["2026-03-08 07:00", "2026-11-01 06:00"],
    BERLIN: ["2026-03-29 01:00", "2026-10-25 01:00"],
    LORD_HOWE: ["2026-04-04 15:00", "2026-10-03 15:30"],
    HAVANA: ["2026-03-08 05:00", "2026-11-01 05:00"],
    "UTC": ["2026-01-01 00:00"],
    "Asia/Kolkata": ["2026-01-01 00:00"],
}


@st.composite
def zones_and_bases(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and a base time up to two days before one of its DST changes."""
    timezone = draw(st.sampled_from(sorted(TRANSITIONS)))
    transition = z(draw(st.sampled_from(TRANSITIONS[timezone])))
    return timezone, transition - timedelta(minutes=draw(st.integers(61, 2 * 24 * 60)))


@needs_analyze
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(expr=cron_expressions, zone_and_base=zones_and_bases())
def test_generated_expressions_match_systemd(
    expr: str, zone_and_base: tuple[str, datetime]
) -> None:
    try:
        cron = parse_cron(expr)
    except DefinitionError:
        assume(False)
    # cronexpr accepts "7/1" in day-of-week as an empty set; to_oncalendar refuses it.
    assume(cron.days_of_week)
    compare_with_systemd(expr, *zone_and_base)


@needs_analyze
def test_a_twice_passed_wall_time_counted_from_standard_time_is_its_second_pass() -> None:
    # Havana falls back at 01:00 CDT on 2026-11-01, so November's first minute comes
    # twice; counted from March's standard time systemd takes the second (00:00 CST).
    compared = compare_with_systemd("* * * 11 *", HAVANA, z("2026-03-08 03:59"))
    assert compared.dst_differences == 1
    (difference,) = dst_differences("* * * 11 *", HAVANA, start=z("2026-03-08 03:59"))
    assert difference.systemd_runs_in == "second"
    assert difference.manager_first == z("2026-11-01 04:00")  # 00:00 CDT, the first pass
    assert "systemd only in the second" in difference.describe()


# --- dst_differences, named cases ------------------------------------------------------


def test_spring_forward_fixed_time_is_skipped_by_systemd() -> None:
    (difference,) = dst_differences("30 2 * * *", NEW_YORK, start=z("2026-01-01 00:00"))
    assert difference.kind == "skipped"
    assert difference.local_date.isoformat() == "2026-03-08"
    assert difference.manager_first == z("2026-03-08 07:00")  # 03:00 EDT
    assert "2026-03-08" in difference.describe()
    assert "03:00:00 EDT" in difference.describe()


def test_fall_back_wildcard_runs_twice_only_under_the_manager() -> None:
    (difference,) = dst_differences("*/15 * * * *", NEW_YORK, start=z("2026-06-01 00:00"))
    assert difference.kind == "repeated"
    assert difference.local_date.isoformat() == "2026-11-01"
    assert difference.manager_first == z("2026-11-01 06:00")  # 01:00 EST, second pass
    assert (difference.affected_from, difference.affected_until) == (
        z("2026-11-01 06:00"),
        z("2026-11-01 07:00"),
    )
    assert "01:00-02:00" in difference.describe()


@pytest.mark.parametrize(
    ("expr", "timezone"),
    [
        ("30 1 * * *", NEW_YORK),  # fall back: fixed time runs once under both
        ("0 2,3 * * *", NEW_YORK),  # the jump run coincides with the 03:00 run
        ("30 3 * * *", NEW_YORK),
        ("*/15 * * * *", "UTC"),
        ("0 2 * * *", "Asia/Kolkata"),
    ],
)
def test_no_difference(expr: str, timezone: str) -> None:
    assert dst_differences(expr, timezone, start=z("2026-01-01 00:00")) == []


def test_differences_are_listed_oldest_first_over_the_horizon() -> None:
    differences = dst_differences(
        "0 * * * *", BERLIN, start=z("2026-01-01 00:00"), horizon_days=3 * 365
    )
    assert [d.local_date.isoformat() for d in differences] == [
        "2026-10-25",
        "2027-10-31",
        "2028-10-29",
    ]
    assert all(d.kind == "repeated" for d in differences)


def test_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        dst_differences("0 0 * * *", "UTC", start=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        systemd_runs("0 0 * * *", "UTC", after=datetime(2026, 1, 1), count=1)


def test_systemd_runs_count() -> None:
    assert systemd_runs("0 0 * * *", "UTC", after=z("2026-01-01 00:00"), count=0) == []
    assert systemd_runs("0 0 * * *", "UTC", after=z("2026-01-01 00:00"), count=2) == [
        z("2026-01-02 00:00"),
        z("2026-01-03 00:00"),
    ]
