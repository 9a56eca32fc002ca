"""Tests for supervisor.core.durations: the duration grammar and its canonical form."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core.durations import MAX_DURATION, format_duration, parse_duration
from supervisor.core.errors import DefinitionError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("  2h  ", timedelta(hours=2)),
        ("1d2h", timedelta(days=1, hours=2)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5s", timedelta(seconds=1.5)),
        ("0.5h", timedelta(minutes=30)),
        (".25s", timedelta(milliseconds=250)),
        ("1.1s", timedelta(milliseconds=1100)),  # exact, no float rounding
        ("1s500ms", timedelta(milliseconds=1500)),
        ("10us", timedelta(microseconds=10)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("30", timedelta(seconds=30)),
        ("1.5", timedelta(seconds=1.5)),
        ("366d", timedelta(days=366)),
        ("1d 2h 3m 4s 5ms 6us", timedelta(1, 2 * 3600 + 3 * 60 + 4, 5006)),
    ],
)
def test_parse_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-5s", "negative"),
        ("-0", "negative"),
        ("5x", "unknown unit 'x'"),
        ("5M", "unknown unit 'M'"),
        ("5 hours", "unknown unit 'hours'"),
        ("1h30", "a number needs a unit"),
        ("30m1h", "largest first"),
        ("1m1m", "largest first"),
        ("abc", "unexpected 'abc'"),
        ("1h-30m", "unknown unit 'h-'"),
        ("1.2.3s", "malformed number '1.2.3'"),
        ("1..5s", "malformed number"),
        (".s", "malformed number"),
        ("s", "unexpected 's'"),
        ("1e3s", "unknown unit 'e'"),
        ("0.0000001s", "finer than a microsecond"),
        ("\u0663s", "unexpected"),  # an Arabic-Indic digit
        ("367d", "longer than 366 days"),
        ("366d1us", "longer than 366 days"),
        ("99999999999999999999d", "longer than 366 days"),
    ],
)
def test_parse_rejects_with_a_message_quoting_the_text(text: str, problem: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_duration(text, field="pause_time")
    assert caught.value.field == "pause_time"
    assert repr(text) in str(caught.value)
    assert problem in caught.value.problem


def test_parse_names_duration_by_default() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_duration("soon")
    assert caught.value.field == "duration"


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1, hours=2), "1d2h"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(milliseconds=1250), "1s250ms"),
        (timedelta(microseconds=7), "7us"),
        (timedelta(days=366), "366d"),
        (timedelta(hours=25), "1d1h"),
    ],
)
def test_format_is_canonical(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text
    assert parse_duration(text) == duration


def test_format_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


@settings(max_examples=200)
@given(st.integers(0, MAX_DURATION // timedelta(milliseconds=1)))
def test_round_trip_whole_milliseconds(milliseconds: int) -> None:
    duration = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(duration)) == duration


@settings(max_examples=200)
@given(st.timedeltas(min_value=timedelta(0), max_value=MAX_DURATION))
def test_round_trip_any_duration(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration)) == duration


@settings(max_examples=100)
@given(
    st.lists(st.integers(0, 99), min_size=6, max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
    st.sampled_from(["", " ", "  "]),
)
def test_parts_add_up(counts: list[int], present: list[bool], gap: str) -> None:
    units = ["d", "h", "m", "s", "ms", "us"]
    sizes = [timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)]
    sizes += [timedelta(seconds=1), timedelta(milliseconds=1), timedelta(microseconds=1)]
    chosen = [i for i in range(6) if present[i]] or [3]
    text = gap.join(f"{counts[i]}{units[i]}" for i in chosen)
    assert parse_duration(text) == sum((counts[i] * sizes[i] for i in chosen), timedelta(0))
