"""Planning: the next run is a pure function of kind, settings, anchor and now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from supervisor.core.definitions import Kind, Settings
from supervisor.core.planning import Anchor, catch_up_plan, next_plan
from supervisor.core.records import Trigger

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
STARTED = Anchor(mono=100.0, wall=NOW, after_run=False)
RAN = Anchor(mono=250.0, wall=NOW + timedelta(seconds=150), after_run=True)
SETTINGS = Settings(start_delay=timedelta(seconds=5), pause_time=timedelta(seconds=30))


def test_one_shot_runs_once_after_the_start_delay() -> None:
    plan = next_plan(Kind.ONE_SHOT, SETTINGS, STARTED, now_mono=100.0, now_wall=NOW)
    assert plan is not None
    assert plan.due == 105.0
    assert plan.planned_at == NOW + timedelta(seconds=5)
    assert plan.trigger is Trigger.START
    assert next_plan(Kind.ONE_SHOT, SETTINGS, RAN, now_mono=250.0, now_wall=NOW) is None


def test_schedule_pauses_from_the_end_of_the_run() -> None:
    first = next_plan(Kind.SCHEDULE, SETTINGS, STARTED, now_mono=100.0, now_wall=NOW)
    after = next_plan(Kind.SCHEDULE, SETTINGS, RAN, now_mono=250.0, now_wall=RAN.wall)
    assert first is not None and first.due == 105.0
    # The start delay applies once per start; later runs wait only the pause.
    assert after is not None and after.due == 280.0
    assert after.planned_at == RAN.wall + timedelta(seconds=30)


def test_manual_and_disabled_plan_nothing() -> None:
    assert next_plan(Kind.MANUAL, SETTINGS, STARTED, now_mono=100.0, now_wall=NOW) is None
    disabled = Settings(disabled=True)
    assert next_plan(Kind.SCHEDULE, disabled, STARTED, now_mono=100.0, now_wall=NOW) is None


def test_cron_follows_the_wall_clock() -> None:
    settings = Settings(cron="*/15 * * * *", timezone="Europe/Berlin")
    plan = next_plan(
        Kind.CRON, settings, STARTED, now_mono=100.0, now_wall=NOW + timedelta(minutes=1)
    )
    assert plan is not None
    assert plan.follows_wall_clock
    assert plan.planned_at == NOW + timedelta(minutes=15)
    assert plan.due == 100.0 + 14 * 60


def test_missed_cron_run_is_caught_up_once_after_the_start_delay() -> None:
    settings = Settings(cron="0 3 * * *", start_delay=timedelta(seconds=2))
    last = datetime(2026, 5, 29, 3, 0, tzinfo=UTC)
    plan = catch_up_plan(settings, last_planned=last, now_mono=10.0, now_wall=NOW)
    assert plan is not None
    assert plan.trigger is Trigger.MISSED
    assert plan.due == 12.0
    # Nothing missed since the last run, or no run ever: nothing to catch up.
    recent = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    assert catch_up_plan(settings, last_planned=recent, now_mono=10.0, now_wall=NOW) is None
    assert catch_up_plan(settings, last_planned=None, now_mono=10.0, now_wall=NOW) is None
