"""``core.until``: the end of a pause as an operator writes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from supervisor.core.errors import DefinitionError
from supervisor.core.until import parse_until, zone_named

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 3, 14, 30, tzinfo=BERLIN)


def test_a_time_of_day_is_today_or_tomorrow_once_passed() -> None:
    assert parse_until("18:00", now=NOW) == datetime(2026, 12, 3, 18, 0, tzinfo=BERLIN)
    assert parse_until("9:15", now=NOW) == datetime(2026, 12, 4, 9, 15, tzinfo=BERLIN)
    assert parse_until("14:30", now=NOW) == datetime(2026, 12, 4, 14, 30, tzinfo=BERLIN)


def test_a_date_and_time_is_local_unless_it_carries_an_offset() -> None:
    assert parse_until("2026-12-03T18:00", now=NOW) == datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
    offset = timezone(timedelta(hours=-5))
    given = parse_until("2026-12-04T08:00-05:00", now=NOW)
    assert given == datetime(2026, 12, 4, 8, 0, tzinfo=offset)


def test_a_duration_counts_from_now() -> None:
    assert parse_until("2h", now=NOW) == NOW + timedelta(hours=2)
    assert parse_until(" 1h30m ", now=NOW) == NOW + timedelta(hours=1, minutes=30)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        ("soon", "is not a time or a duration"),
        ("25:00", "is not a time or a duration"),
        ("2026-13-01T10:00", "is not a date and time"),
        ("2026-12-01T10:00", "has passed already"),
        ("0s", "has passed already"),
    ],
)
def test_what_cannot_be_a_pause_end_is_refused_naming_until(text: str, problem: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_until(text, now=NOW)
    assert caught.value.field == "until" and problem in caught.value.problem


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_until("2h", now=datetime(2026, 12, 3, 14, 30))


def test_a_named_zone_reads_a_date_at_its_own_offset_and_a_duration_as_elapsed_time() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2027, 3, 28, 1, 30, tzinfo=berlin)  # summer time starts at 02:00
    summer = parse_until("2027-07-01T09:00", now=now)
    assert summer == datetime(2027, 7, 1, 7, 0, tzinfo=UTC)
    assert parse_until("2h", now=now).astimezone(UTC) - now.astimezone(UTC) == timedelta(hours=2)
    assert parse_until("2h", now=now) == datetime(2027, 3, 28, 2, 30, tzinfo=UTC)


def test_an_unknown_zone_name_is_refused_naming_it() -> None:
    assert zone_named("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    for name in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(DefinitionError, match="zone"):
            zone_named(name)
