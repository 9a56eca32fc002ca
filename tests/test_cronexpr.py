"""Tests for supervisor.core.cronexpr: grammar, messages, and naive wall-clock enumeration."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core.cronexpr import (
    CronExpr,
    parse_cron,
    validate_cron,
    validate_timezone,
    wall_times_after,
    wall_times_before,
)
from supervisor.core.errors import DefinitionError


def take(iterator: Iterator[datetime], count: int) -> list[datetime]:
    return list(itertools.islice(iterator, count))


# --- normalization and accepted syntax ---------------------------------------------


@pytest.mark.parametrize(
    ("expr", "normalized"),
    [
        ("*/15 * * * *", "*/15 * * * *"),
        ("  30\t2  *  * *  ", "30 2 * * *"),
        ("0 9 * * MON-FRI", "0 9 * * mon-fri"),
        ("0 0 1 Jan,JUL *", "0 0 1 jan,jul *"),
        ("@DAILY", "@daily"),
        ("@annually", "@annually"),
        ("0 30 2 * * *", "0 30 2 * * *"),
    ],
)
def test_validate_normalizes(expr: str, normalized: str) -> None:
    assert validate_cron(expr) == normalized


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_macros_mean_their_expansion(macro: str, expanded: str) -> None:
    start = datetime(2026, 2, 27, 13, 17)
    assert take(wall_times_after(parse_cron(macro), start), 5) == take(
        wall_times_after(parse_cron(expanded), start), 5
    )
    assert parse_cron(macro).fixed_time == parse_cron(expanded).fixed_time


def test_six_fields_put_seconds_first() -> None:
    cron = parse_cron("15 30 2 * * *")
    assert cron.has_seconds
    assert cron.seconds == {15}
    assert cron.minutes == {30}
    assert cron.hours == {2}
    assert take(wall_times_after(cron, datetime(2026, 1, 1)), 2) == [
        datetime(2026, 1, 1, 2, 30, 15),
        datetime(2026, 1, 2, 2, 30, 15),
    ]


def test_five_fields_mean_second_zero() -> None:
    cron = parse_cron("30 2 * * *")
    assert not cron.has_seconds
    assert cron.seconds == {0}


def test_seconds_steps() -> None:
    cron = parse_cron("*/20 * * * * *")
    assert take(wall_times_after(cron, datetime(2026, 1, 1, 0, 0, 5)), 4) == [
        datetime(2026, 1, 1, 0, 0, 20),
        datetime(2026, 1, 1, 0, 0, 40),
        datetime(2026, 1, 1, 0, 1, 0),
        datetime(2026, 1, 1, 0, 1, 20),
    ]


@pytest.mark.parametrize(
    ("field", "token", "values"),
    [
        ("minutes", "*/15", {0, 15, 30, 45}),
        ("minutes", "5/15", {5, 20, 35, 50}),  # Quartz: N/STEP is N-max/STEP
        ("minutes", "10-20/5", {10, 15, 20}),
        ("minutes", "1,2,40-42", {1, 2, 40, 41, 42}),
        ("minutes", "7-7", {7}),  # an equal range is one value (croniter: a whole cycle)
        ("minutes", "59/15", {59}),
        ("hours", "*/8", {0, 8, 16}),
        ("days_of_month", "*/10", {1, 11, 21, 31}),
        ("months", "jan-mar", {1, 2, 3}),
        ("months", "*/4", {1, 5, 9}),
        ("months", "Dec", {12}),
        ("days_of_week", "mon-fri", {1, 2, 3, 4, 5}),
        ("days_of_week", "7", {0}),
        ("days_of_week", "5-7", {5, 6, 0}),
        ("days_of_week", "sat,sun", {6, 0}),
        ("days_of_week", "*/2", {0, 2, 4, 6}),
    ],
)
def test_field_values(field: str, token: str, values: set[int]) -> None:
    position = ["minutes", "hours", "days_of_month", "months", "days_of_week"].index(field)
    tokens = ["0", "0", "*", "*", "*"]
    tokens[position] = token
    assert getattr(parse_cron(" ".join(tokens)), field) == values


@pytest.mark.parametrize(
    ("expr", "fixed"),
    [
        ("30 2 * * *", True),
        ("0,30 1-3 * * *", True),
        ("0-59/5 2 * * *", True),  # ISC: only a leading * makes a wildcard job
        ("@daily", True),
        ("0 30 2 * * *", True),
        ("*/15 * * * *", False),
        ("30 * * * *", False),
        ("0 */2 * * *", False),
        ("* 2 * * *", False),
        ("@hourly", False),
        ("*/10 30 2 * * *", False),  # the seconds field counts when given
    ],
)
def test_fixed_time_follows_isc_cron(expr: str, fixed: bool) -> None:
    assert parse_cron(expr).fixed_time is fixed


# --- day-of-month and day-of-week ------------------------------------------------------


def test_both_day_fields_restricted_means_either() -> None:
    cron = parse_cron("0 0 13 * fri")
    assert cron.days_either
    days = take(wall_times_after(cron, datetime(2026, 2, 1)), 5)
    # Fridays and every 13th (2026-02-13 is both).
    assert days == [
        datetime(2026, 2, 6),
        datetime(2026, 2, 13),
        datetime(2026, 2, 20),
        datetime(2026, 2, 27),
        datetime(2026, 3, 6),
    ]


def test_a_starred_day_field_means_both() -> None:
    # ISC cron: "*/2" starts with "*", so both fields must match (odd days that are Mondays).
    cron = parse_cron("0 0 */2 * mon")
    assert not cron.days_either
    assert take(wall_times_after(cron, datetime(2026, 2, 1)), 3) == [
        datetime(2026, 2, 9),
        datetime(2026, 2, 23),
        datetime(2026, 3, 9),
    ]


def test_feb_29_on_a_weekday_is_found_decades_apart() -> None:
    cron = parse_cron("0 0 29 2 *")
    assert take(wall_times_after(cron, datetime(2026, 1, 1)), 2) == [
        datetime(2028, 2, 29),
        datetime(2032, 2, 29),
    ]


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("* * * *", "has 4 fields"),
        ("0 0 1 1 * 2026 1", "has 7 fields"),
        ("@reboot", "@reboot is not a schedule"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
        ("60 * * * *", "minute field '60'"),
        ("* 24 * * *", "hour field '24'"),
        ("0 0 0 * *", "day-of-month field '0'"),
        ("0 0 32 * *", "value 32 is out of range 1-31"),
        ("0 0 * 13 *", "month field '13'"),
        ("0 0 * * 8", "day-of-week field '8'"),
        ("60 0 0 * * *", "second field '60'"),
        ("0 0 * * funday", "'funday' is not a name (sun-sat)"),
        ("0 0 * smarch *", "'smarch' is not a name (jan-dec)"),
        ("*/0 * * * *", "step 0 must be between 1 and 60"),
        ("*/x * * * *", "step 'x' is not a number"),
        ("5-1 * * * *", "range '5-1' runs backwards"),
        ("1,,2 * * * *", "a value is missing"),
        ("1- * * * *", "a value is missing"),
        ("-1 * * * *", "a value is missing"),
        ("H * * * *", "minute field 'H'"),
        ("0 0 L * *", "day-of-month field 'L'"),
        ("0 0 ? * *", "value '?' is not a number"),
        ("0 0 * * 1#2", "day-of-week field '1#2'"),
        ("0 0 30 2 *", "never matches"),
        ("0 0 31 apr,jun,sep,nov *", "never matches"),
        ("0 0 \uff13 * *", "is not a number"),  # a full-width digit
    ],
)
def test_errors_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        validate_cron(expr)
    assert caught.value.field == "cron"
    assert message in caught.value.problem


def test_impossible_day_is_fine_when_weekdays_also_count() -> None:
    # Both day fields restricted: Mondays in April still match.
    assert validate_cron("0 0 31 4 mon") == "0 0 31 4 mon"


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "Etc/GMT+5"])
def test_timezone_accepts_iana_names(name: str) -> None:
    assert validate_timezone(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Mars/Olympus",
        "europe/berlin",
        "localtime",
        "Factory",
        "right/UTC",
        "/etc/localtime",
        "../UTC",
        "America",
    ],
)
def test_timezone_rejects_others(name: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        validate_timezone(name)
    assert caught.value.field == "timezone"
    assert repr(name) in caught.value.problem


# --- enumeration ---------------------------------------------------------------------


def test_after_and_before_are_strict() -> None:
    cron = parse_cron("30 1 * * *")
    at = datetime(2026, 3, 8, 1, 30)
    assert next(wall_times_after(cron, at)) == datetime(2026, 3, 9, 1, 30)
    assert next(wall_times_before(cron, at)) == datetime(2026, 3, 7, 1, 30)


def test_enumeration_wants_naive_times() -> None:
    from datetime import UTC

    with pytest.raises(ValueError, match="naive"):
        next(wall_times_after(parse_cron("* * * * *"), datetime(2026, 1, 1, tzinfo=UTC)))


def _item(low: int, high: int, names: tuple[str, ...], first: int) -> st.SearchStrategy[str]:
    def value(v: int) -> st.SearchStrategy[str]:
        plain = st.just(str(v))
        return st.one_of(plain, st.just(names[v - first])) if names else plain

    number = st.integers(low, high)
    pair = st.tuples(number, number).filter(lambda p: p[0] < p[1])
    step = st.integers(1, high - low)
    return st.one_of(
        number.flatmap(value),
        st.builds(lambda s: f"*/{s}", step),
        st.builds(lambda p: f"{p[0]}-{p[1]}", pair),
        st.builds(lambda p, s: f"{p[0]}-{p[1]}/{s}", pair, step),
        st.builds(lambda v, s: f"{v}/{s}", number, step),
    )


def _field(
    low: int, high: int, names: tuple[str, ...] = (), first: int = 0
) -> st.SearchStrategy[str]:
    items = st.lists(_item(low, high, names, first), min_size=1, max_size=3).map(",".join)
    return st.one_of(st.just("*"), items)


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def valid_cron(expr: str) -> bool:
    """Whether ``parse_cron`` takes ``expr`` (a filter for generated expressions)."""
    try:
        parse_cron(expr)
    except DefinitionError:
        return False
    return True


cron_exprs = st.builds(
    lambda seconds, rest: " ".join([*seconds, *rest]),
    st.one_of(st.just([]), st.lists(_field(0, 59), min_size=1, max_size=1)),
    st.tuples(
        _field(0, 59),
        _field(0, 23),
        _field(1, 31),
        _field(1, 12, _MONTHS, 1),
        _field(0, 6, _DAYS, 0),
    ),
).filter(valid_cron)
starts = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1))


def brute_force_after(cron: CronExpr, start: datetime) -> Iterator[datetime]:
    """Matches after ``start`` found day by day, independent of croniter."""
    day = datetime(start.year, start.month, start.day)
    earliest = (min(cron.hours), min(cron.minutes), min(cron.seconds))
    for _ in range(366 * 60):
        if cron.matches(day.replace(hour=earliest[0], minute=earliest[1], second=earliest[2])):
            for hour, minute, second in itertools.product(
                sorted(cron.hours), sorted(cron.minutes), sorted(cron.seconds)
            ):
                wall = day.replace(hour=hour, minute=minute, second=second)
                if wall > start:
                    yield wall
        day += timedelta(days=1)


@settings(max_examples=150, deadline=None)
@given(cron_exprs, starts)
def test_enumeration_agrees_with_brute_force(expr: str, start: datetime) -> None:
    cron = parse_cron(expr)
    found = take(wall_times_after(cron, start), 5)
    assert found == take(brute_force_after(cron, start), 5)
    assert all(cron.matches(wall) for wall in found)


@settings(max_examples=100, deadline=None)
@given(cron_exprs, starts)
def test_before_mirrors_after(expr: str, start: datetime) -> None:
    cron = parse_cron(expr)
    found = take(wall_times_after(cron, start), 3)
    assert take(wall_times_before(cron, found[-1]), 2) == found[-2::-1]


@settings(max_examples=100, deadline=None)
@given(cron_exprs)
def test_normalized_text_parses_to_the_same_schedule(expr: str) -> None:
    cron = parse_cron(expr)
    again = parse_cron(cron.text)
    assert again == cron
