"""Tests for supervisor.core.timing: cron runs as UTC instants, with ISC cron's DST rules.

DST dates of 2026 (checked with zoneinfo):
- America/New_York: 03-08 02:00 EST -> 03:00 EDT at 07:00Z; 11-01 02:00 EDT -> 01:00 EST
  at 06:00Z.
- Europe/Berlin: 03-29 02:00 CET -> 03:00 CEST at 01:00Z; 10-25 03:00 CEST -> 02:00 CET
  at 01:00Z.
- Australia/Lord_Howe (30 minutes): 04-05 02:00 +11 -> 01:30 +10:30 at 04-04 15:00Z;
  10-04 02:00 +10:30 -> 02:30 +11 at 10-03 15:30Z.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from supervisor.core.cronexpr import parse_cron
from supervisor.core.errors import DefinitionError
from supervisor.core.timing import cron_runs, missed_cron_run, next_cron_run
from tests.test_cronexpr import valid_cron

NEW_YORK = "America/New_York"
BERLIN = "Europe/Berlin"
LORD_HOWE = "Australia/Lord_Howe"


def z(text: str) -> datetime:
    """An aware UTC instant from ``YYYY-MM-DD HH:MM[:SS]``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


DST_TABLE = [
    # New York, spring: 02:00-03:00 does not exist on 03-08.
    ("30 2 * * *", NEW_YORK, "2026-03-07 12:00", ["2026-03-08 07:00", "2026-03-09 06:30"]),
    ("0,15,30,45 2 * * *", NEW_YORK, "2026-03-08 00:00", ["2026-03-08 07:00", "2026-03-09 06:00"]),
    ("0 2,3 * * *", NEW_YORK, "2026-03-08 00:00", ["2026-03-08 07:00", "2026-03-09 06:00"]),
    ("30 1 * * *", NEW_YORK, "2026-03-08 00:00", ["2026-03-08 06:30", "2026-03-09 05:30"]),
    ("30 3 * * *", NEW_YORK, "2026-03-08 00:00", ["2026-03-08 07:30", "2026-03-09 07:30"]),
    (
        "*/15 * * * *",
        NEW_YORK,
        "2026-03-08 06:30",
        ["2026-03-08 06:45", "2026-03-08 07:00", "2026-03-08 07:15"],
    ),
    (
        "30 * * * *",
        NEW_YORK,
        "2026-03-08 05:00",
        ["2026-03-08 05:30", "2026-03-08 06:30", "2026-03-08 07:30", "2026-03-08 08:30"],
    ),
    (
        "0 */2 * * *",
        NEW_YORK,
        "2026-03-08 04:00",
        ["2026-03-08 05:00", "2026-03-08 08:00", "2026-03-08 10:00"],
    ),
    ("* 2 * * *", NEW_YORK, "2026-03-08 06:58", ["2026-03-09 06:00", "2026-03-09 06:01"]),
    # New York, fall: 01:00-02:00 happens twice on 11-01 (EDT, then EST).
    ("30 1 * * *", NEW_YORK, "2026-10-31 12:00", ["2026-11-01 05:30", "2026-11-02 06:30"]),
    ("0 1 * * *", NEW_YORK, "2026-10-31 12:00", ["2026-11-01 05:00", "2026-11-02 06:00"]),
    ("0 2 * * *", NEW_YORK, "2026-10-31 12:00", ["2026-11-01 07:00", "2026-11-02 07:00"]),
    (
        "30 * * * *",
        NEW_YORK,
        "2026-11-01 04:00",
        ["2026-11-01 04:30", "2026-11-01 05:30", "2026-11-01 06:30", "2026-11-01 07:30"],
    ),
    (
        "*/30 * * * *",
        NEW_YORK,
        "2026-11-01 05:45",
        ["2026-11-01 06:00", "2026-11-01 06:30", "2026-11-01 07:00"],
    ),
    (
        "0 */2 * * *",
        NEW_YORK,
        "2026-11-01 03:00",
        ["2026-11-01 04:00", "2026-11-01 07:00", "2026-11-01 09:00"],
    ),
    # Starting inside the repeated hour.
    ("45 1 * * *", NEW_YORK, "2026-11-01 05:50", ["2026-11-02 06:45"]),
    ("45 * * * *", NEW_YORK, "2026-11-01 05:50", ["2026-11-01 06:45", "2026-11-01 07:45"]),
    # Berlin, spring: 02:00-03:00 does not exist on 03-29.
    ("30 2 * * *", BERLIN, "2026-03-28 12:00", ["2026-03-29 01:00", "2026-03-30 00:30"]),
    (
        "*/20 * * * *",
        BERLIN,
        "2026-03-29 00:30",
        ["2026-03-29 00:40", "2026-03-29 01:00", "2026-03-29 01:20"],
    ),
    ("30 * * * *", BERLIN, "2026-03-29 00:00", ["2026-03-29 00:30", "2026-03-29 01:30"]),
    # Berlin, fall: 02:00-03:00 happens twice on 10-25 (CEST, then CET).
    ("30 2 * * *", BERLIN, "2026-10-24 12:00", ["2026-10-25 00:30", "2026-10-26 01:30"]),
    (
        "30 * * * *",
        BERLIN,
        "2026-10-24 23:00",
        ["2026-10-24 23:30", "2026-10-25 00:30", "2026-10-25 01:30", "2026-10-25 02:30"],
    ),
    (
        "0 */2 * * *",
        BERLIN,
        "2026-10-24 21:00",
        ["2026-10-24 22:00", "2026-10-25 00:00", "2026-10-25 01:00", "2026-10-25 03:00"],
    ),
    # Lord Howe, spring: 02:00-02:30 does not exist on 10-04.
    ("15 2 * * *", LORD_HOWE, "2026-10-03 00:00", ["2026-10-03 15:30", "2026-10-04 15:15"]),
    ("0 2 * * *", LORD_HOWE, "2026-10-03 00:00", ["2026-10-03 15:30", "2026-10-04 15:00"]),
    (
        "0,10,20 2 * * *",
        LORD_HOWE,
        "2026-10-03 00:00",
        ["2026-10-03 15:30", "2026-10-04 15:00", "2026-10-04 15:10"],
    ),
    ("45 2 * * *", LORD_HOWE, "2026-10-03 00:00", ["2026-10-03 15:45", "2026-10-04 15:45"]),
    (
        "*/15 * * * *",
        LORD_HOWE,
        "2026-10-03 15:00",
        ["2026-10-03 15:15", "2026-10-03 15:30", "2026-10-03 15:45"],
    ),
    # Lord Howe, fall: 01:30-02:00 happens twice on 04-05 (+11, then +10:30).
    ("45 1 * * *", LORD_HOWE, "2026-04-04 00:00", ["2026-04-04 14:45", "2026-04-05 15:15"]),
    ("15 1 * * *", LORD_HOWE, "2026-04-04 00:00", ["2026-04-04 14:15", "2026-04-05 14:45"]),
    (
        "*/15 * * * *",
        LORD_HOWE,
        "2026-04-04 14:20",
        [
            "2026-04-04 14:30",
            "2026-04-04 14:45",
            "2026-04-04 15:00",
            "2026-04-04 15:15",
            "2026-04-04 15:30",
        ],
    ),
    (
        "45 * * * *",
        LORD_HOWE,
        "2026-04-04 14:00",
        ["2026-04-04 14:45", "2026-04-04 15:15", "2026-04-04 16:15"],
    ),
    # Six fields, seconds first.
    ("10 30 2 * * *", NEW_YORK, "2026-03-08 00:00", ["2026-03-08 07:00", "2026-03-09 06:30:10"]),
    (
        "*/20 30 2 * * *",
        NEW_YORK,
        "2026-03-08 00:00",
        ["2026-03-09 06:30", "2026-03-09 06:30:20", "2026-03-09 06:30:40"],
    ),
    (
        "0-10/5 30 1 * * *",
        NEW_YORK,
        "2026-11-01 00:00",
        ["2026-11-01 05:30", "2026-11-01 05:30:05", "2026-11-01 05:30:10", "2026-11-02 06:30"],
    ),
    (
        "*/30 30 1 * * *",
        NEW_YORK,
        "2026-11-01 00:00",
        ["2026-11-01 05:30", "2026-11-01 05:30:30", "2026-11-01 06:30", "2026-11-01 06:30:30"],
    ),
    # Macros.
    ("@hourly", NEW_YORK, "2026-11-01 04:30", ["2026-11-01 05:00", "2026-11-01 06:00"]),
    ("@daily", BERLIN, "2026-03-28 12:00", ["2026-03-28 23:00", "2026-03-29 22:00"]),
    ("@weekly", NEW_YORK, "2026-03-02 00:00", ["2026-03-08 05:00", "2026-03-15 04:00"]),
    ("@yearly", BERLIN, "2026-06-01 00:00", ["2026-12-31 23:00", "2027-12-31 23:00"]),
    # Names.
    ("0 9 * * mon-fri", BERLIN, "2026-03-27 12:00", ["2026-03-30 07:00", "2026-03-31 07:00"]),
    ("0 0 1 jan,jul *", "UTC", "2026-03-01 00:00", ["2026-07-01 00:00", "2027-01-01 00:00"]),
]


@pytest.mark.parametrize(("expr", "zone", "after", "expected"), DST_TABLE)
def test_dst_table(expr: str, zone: str, after: str, expected: list[str]) -> None:
    assert cron_runs(expr, zone, z(after), len(expected)) == [z(e) for e in expected]


def test_regression_croniter_runs_fixed_time_twice_in_repeated_hour() -> None:
    # croniter 7.0 gives 01:30 EDT and 01:30 EST; ISC cron runs it once.
    runs = cron_runs("30 1 * * *", NEW_YORK, z("2026-11-01 00:00"), 2)
    assert runs == [z("2026-11-01 05:30"), z("2026-11-02 06:30")]


def test_next_run_is_strictly_after() -> None:
    assert next_cron_run("30 2 * * *", NEW_YORK, z("2026-03-08 07:00")) == z("2026-03-09 06:30")
    assert next_cron_run("30 2 * * *", NEW_YORK, z("2026-03-08 06:59:59")) == z("2026-03-08 07:00")


def test_after_may_be_in_any_zone_and_results_are_utc() -> None:
    after = datetime(2026, 3, 7, 7, 0, tzinfo=ZoneInfo(NEW_YORK))
    run = next_cron_run("30 2 * * *", NEW_YORK, after)
    assert run == z("2026-03-08 07:00")
    assert run.tzinfo is UTC


def test_zero_count_and_bad_arguments() -> None:
    assert cron_runs("* * * * *", "UTC", z("2026-01-01 00:00"), 0) == []
    with pytest.raises(ValueError, match="negative"):
        cron_runs("* * * * *", "UTC", z("2026-01-01 00:00"), -1)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_cron_run("* * * * *", "UTC", datetime(2026, 1, 1))
    with pytest.raises(DefinitionError) as caught:
        next_cron_run("* * * *", "UTC", z("2026-01-01 00:00"))
    assert caught.value.field == "cron"
    with pytest.raises(DefinitionError) as caught:
        next_cron_run("* * * * *", "Mars/Olympus", z("2026-01-01 00:00"))
    assert caught.value.field == "timezone"


# --- missed runs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "zone", "last_planned", "now", "expected"),
    [
        ("30 2 * * *", NEW_YORK, "2026-03-07 07:30", "2026-03-08 07:00", "2026-03-08 07:00"),
        ("30 2 * * *", NEW_YORK, "2026-03-07 07:30", "2026-03-08 06:59:59", None),
        ("30 1 * * *", NEW_YORK, "2026-10-31 05:30", "2026-11-01 07:00", "2026-11-01 05:30"),
        ("30 * * * *", NEW_YORK, "2026-11-01 05:00", "2026-11-01 06:45", "2026-11-01 06:30"),
        ("30 * * * *", NEW_YORK, "2026-11-01 06:30", "2026-11-01 06:45", None),
        ("@yearly", "UTC", "2020-01-01 00:00", "2026-03-08 07:00", "2026-01-01 00:00"),
        ("@yearly", "UTC", "2026-01-01 00:00", "2026-03-08 07:00", None),
        ("* * * * 1 *", "UTC", "2026-01-01 00:00", "2026-12-08 07:00", "2026-01-31 23:59:59"),
        ("*/15 * * * *", LORD_HOWE, "2026-04-04 00:00", "2026-04-04 15:10", "2026-04-04 15:00"),
        ("45 1 * * *", LORD_HOWE, "2026-04-03 00:00", "2026-04-04 15:20", "2026-04-04 14:45"),
        ("* * * * *", "UTC", "2026-01-01 00:01", "2026-01-01 00:00", None),
    ],
)
def test_missed_run(
    expr: str, zone: str, last_planned: str, now: str, expected: str | None
) -> None:
    found = missed_cron_run(expr, zone, last_planned=z(last_planned), now=z(now))
    assert found == (None if expected is None else z(expected))


# --- properties ----------------------------------------------------------------------


def _item(low: int, high: int, min_step: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    pair = st.tuples(number, number).filter(lambda p: p[0] < p[1])
    step = st.integers(min_step, high - low)
    return st.one_of(
        number.map(str),
        st.builds(lambda s: f"*/{s}", step),
        st.builds(lambda p: f"{p[0]}-{p[1]}", pair),
        st.builds(lambda p, s: f"{p[0]}-{p[1]}/{s}", pair, step),
        st.builds(lambda v, s: f"{v}/{s}", number, step),
    )


def _field(low: int, high: int, *, min_step: int = 1, star: bool = True) -> st.SearchStrategy[str]:
    items = st.lists(_item(low, high, min_step), min_size=1, max_size=3).map(",".join)
    return st.one_of(st.just("*"), items) if star else items


# Seconds are sparse (at most a few a minute) so a window of hours stays cheap.
cron_exprs = st.builds(
    lambda seconds, rest: " ".join([*seconds, *rest]),
    st.one_of(
        st.just([]), st.lists(_field(0, 59, min_step=15, star=False), min_size=1, max_size=1)
    ),
    st.tuples(_field(0, 59), _field(0, 23), _field(1, 31), _field(1, 12), _field(0, 6)),
).filter(valid_cron)
# Hours chosen to hit the jumps often.
dst_exprs = st.builds(
    lambda minute, hour: f"{minute} {hour} * * *",
    _field(0, 59),
    st.one_of(st.just("*"), st.sampled_from(["1", "2", "3", "1-3", "2,3", "*/2", "1/2"])),
)
ZONES = [NEW_YORK, BERLIN, LORD_HOWE, "UTC", "Asia/Kolkata", "Pacific/Chatham"]
TRANSITIONS = [
    z("2026-03-08 07:00"),
    z("2026-11-01 06:00"),
    z("2026-03-29 01:00"),
    z("2026-10-25 01:00"),
    z("2026-04-04 15:00"),
    z("2026-10-03 15:30"),
]
near_transitions = st.builds(
    lambda base, seconds: base + timedelta(seconds=seconds),
    st.sampled_from(TRANSITIONS),
    st.integers(-4 * 3600, 2 * 3600),
)
anywhere = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
)


def expected_runs(expr: str, zone_name: str, after: datetime, until: datetime) -> list[datetime]:
    """Runs in (after, until] by scanning every second that can match, and applying the rules."""
    cron, zone = parse_cron(expr), ZoneInfo(zone_name)
    runs: set[datetime] = set()
    minute = after.replace(second=0, microsecond=0)
    while minute <= until:
        for second in cron.seconds | {0}:  # a jump happens at second 0
            instant = minute + timedelta(seconds=second)
            local = instant.astimezone(zone)
            wall = local.replace(tzinfo=None)
            if cron.matches(wall) and not (cron.fixed_time and local.fold):
                runs.add(instant)  # fixed-time jobs run at a repeated time only once
            before = (instant - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
            if cron.fixed_time and wall - before > timedelta(seconds=1):
                # The instant of a forward jump: runs if any skipped time matches.
                gap = int((wall - before).total_seconds())
                if any(cron.matches(before + timedelta(seconds=s)) for s in range(1, gap)):
                    runs.add(instant)
        minute += timedelta(minutes=1)
    return sorted(r for r in runs if after < r <= until)


@settings(max_examples=60, deadline=None)
@given(st.one_of(cron_exprs, dst_exprs), st.sampled_from(ZONES), near_transitions)
def test_runs_match_a_second_by_second_scan(expr: str, zone: str, after: datetime) -> None:
    until = after + timedelta(hours=2)
    expected = expected_runs(expr, zone, after, until)
    runs = cron_runs(expr, zone, after, len(expected) + 1)
    assert [r for r in runs if r <= until] == expected


@settings(max_examples=80, deadline=None)
@given(cron_exprs, st.sampled_from(ZONES), st.one_of(anywhere, near_transitions))
def test_runs_increase_and_show_matching_wall_times(
    expr: str, zone_name: str, after: datetime
) -> None:
    cron, zone = parse_cron(expr), ZoneInfo(zone_name)
    runs = cron_runs(expr, zone_name, after, 6)
    assert len(runs) == 6
    assert all(r.tzinfo is UTC for r in runs)
    assert after < runs[0]
    assert all(a < b for a, b in itertools.pairwise(runs))
    for run in runs:
        local = run.astimezone(zone)
        wall = local.replace(tzinfo=None)
        if cron.fixed_time:
            assert local.fold == 0  # never the second pass of a repeated hour
        if not cron.matches(wall):
            # Only allowed for a fixed-time job, at the instant of a forward jump.
            before = (run - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
            assert cron.fixed_time
            assert wall - before > timedelta(seconds=1)
    # Chaining next_cron_run gives the same list.
    chained = [next_cron_run(expr, zone_name, after)]
    for _ in range(5):
        chained.append(next_cron_run(expr, zone_name, chained[-1]))
    assert chained == runs


@settings(max_examples=100, deadline=None)
@given(cron_exprs, anywhere)
def test_utc_is_croniter_on_naive_utc(expr: str, after: datetime) -> None:
    # ISC cron decides "restricted day field" by its first character only; croniter looks
    # for a star anywhere, so the two disagree on fields like "1,*/2": leave those out.
    fields = expr.split()
    assume(not any("*" in field[1:] for field in fields[-3::2]))
    reference = croniter(
        expr,
        after.replace(tzinfo=None),
        ret_type=datetime,
        implement_cron_bug=True,  # ISC cron's day-of-month/day-of-week rule
        second_at_beginning=True,
    )
    expected = [reference.get_next().replace(tzinfo=UTC) for _ in range(5)]
    assert cron_runs(expr, "UTC", after, 5) == expected


@settings(max_examples=60, deadline=None)
@given(cron_exprs, st.sampled_from(ZONES), st.one_of(anywhere, near_transitions))
def test_missed_run_is_the_latest_planned_run(expr: str, zone: str, after: datetime) -> None:
    runs = cron_runs(expr, zone, after, 4)
    assert missed_cron_run(expr, zone, last_planned=after, now=runs[0] - timedelta(0, 0, 1)) is None
    for previous, run in itertools.pairwise(runs):
        assert missed_cron_run(expr, zone, last_planned=after, now=run) == run
        just_before = run - timedelta(microseconds=1)
        assert missed_cron_run(expr, zone, last_planned=after, now=just_before) == previous
        assert missed_cron_run(expr, zone, last_planned=previous, now=just_before) is None


def test_restricted_day_fields_with_a_star_inside_a_list_are_ored_like_isc_cron() -> None:
    # "1,*/2" does not start with "*", so ISC cron ORs it with the day of week (every day).
    after = datetime(2000, 1, 2, 0, 0, tzinfo=UTC)
    assert cron_runs("* * 1,*/2 * 0/1", "UTC", after, 1) == [after + timedelta(minutes=1)]
