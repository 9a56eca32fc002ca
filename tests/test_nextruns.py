"""Upcoming starts: the manager's DST rules, or systemd's when systemd runs the timers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.nextruns import upcoming, upcoming_for_cron

NEW_YORK = ZoneInfo("America/New_York")
START = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


def local(times: list[datetime]) -> list[str]:
    return [t.astimezone(NEW_YORK).isoformat() for t in times]


def test_a_skipped_fixed_time_runs_after_the_jump_under_the_manager_but_not_systemd() -> None:
    manager = upcoming_for_cron("30 2 * * *", "America/New_York", start=START, count=2)
    systemd = upcoming_for_cron(
        "30 2 * * *", "America/New_York", start=START, count=2, systemd=True
    )
    assert local(manager) == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    assert local(systemd) == ["2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]


def test_delay_kinds_are_shown_as_if_runs_took_no_time() -> None:
    def noop(ctx: object) -> None:
        return None

    settings = Settings(start_delay=timedelta(seconds=5), pause_time=timedelta(minutes=1))
    schedule = Options(id="s", name="S", kind=Kind.SCHEDULE, runner=noop, defaults=settings)
    one_shot = Options(id="o", name="O", kind=Kind.ONE_SHOT, runner=noop, defaults=settings)
    manual = Options(id="m", name="M", kind=Kind.MANUAL, runner=noop, defaults=settings)
    first = START + timedelta(seconds=5)
    assert upcoming(schedule, settings, start=START, count=3) == [
        first,
        first + timedelta(minutes=1),
        first + timedelta(minutes=2),
    ]
    assert upcoming(one_shot, settings, start=START, count=3) == [first]
    assert upcoming(manual, settings, start=START, count=3) == []
    disabled = Settings(disabled=True)
    assert upcoming(schedule, disabled, start=START, count=3) == []
