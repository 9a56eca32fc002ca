"""The machine's rules for decisions and retries, by replayed event histories.

Stop and Disable keep who, when and why; a time-boxed pause resumes by itself at its
time (also after a restart, from the stored decision); retries of failed runs back off
(first delay, doubling, capped) and never follow a run that was stopped.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from supervisor.core.definitions import Kind, Settings
from supervisor.core.records import Decision, DecisionKind, Outcome, RunRecord, State, Trigger
from supervisor.core.retries import RETRY_DELAY_CAP, retry_wait
from supervisor.manager import machine
from supervisor.manager.machine import SchedulerState
from tests.test_manager_machine import T0, Replay, kinds, launches, options


def stored(effects: list[machine.Effect]) -> list[Decision | None]:
    return [e.decision for e in effects if isinstance(e, machine.StoreDecision)]


# -- stop and disable -----------------------------------------------------------------------


def test_stop_keeps_who_when_and_why_and_its_note_goes_to_the_cancelled_run() -> None:
    replay = Replay.open(options())
    replay.due()
    replay.started()
    effects = replay.feed(machine.Stop(actor="alice", reason="ERP maintenance"), after=5)
    (cancel,) = [e for e in effects if isinstance(e, machine.Cancel)]
    assert cancel.note == "stopped by alice 12:00 UTC: ERP maintenance"
    replay.ended(Outcome.CANCELLED)
    status = machine.status_of(replay.slot)
    assert status.state is State.STOPPED
    assert status.decision is not None and status.decision.reason == "ERP maintenance"
    assert status.decision.describe() == "stopped by alice 2026-03-01 12:00 UTC: ERP maintenance"
    assert stored(effects) == []  # a stop lasts until Start or the next start: not stored
    replay.feed(machine.Start(actor="bob"))
    assert machine.status_of(replay.slot).decision is None


def test_a_disable_reason_is_stored_while_disabled_and_deleted_when_enabled() -> None:
    opts = options()
    replay = Replay.open(opts)
    disabled = replace(opts.defaults, disabled=True)
    why = Decision(kind=DecisionKind.DISABLED, actor="alice", at=T0, reason="broken upstream")
    effects = replay.feed(machine.SettingsChanged(settings=disabled, disabled_by=why))
    assert stored(effects) == [why]
    assert machine.status_of(replay.slot).decision == why
    # Another change while disabled keeps the reason (nothing stored again).
    longer = replace(disabled, pause_time=timedelta(minutes=9))
    assert stored(replay.feed(machine.SettingsChanged(settings=longer))) == []
    assert machine.status_of(replay.slot).decision == why
    assert stored(replay.feed(machine.SettingsChanged(settings=opts.defaults))) == [None]
    assert machine.status_of(replay.slot).decision is None


# -- pause ----------------------------------------------------------------------------------


def test_a_pause_plans_nothing_until_its_time_then_resumes_by_itself() -> None:
    replay = Replay.open(options(start_delay=timedelta(0)))
    until = T0 + timedelta(hours=2)
    effects = replay.feed(machine.Pause(actor="alice", until=until, reason="ERP maintenance"))
    (pause,) = stored(effects)
    assert pause is not None and pause.until == until and pause.kind is DecisionKind.PAUSED
    status = machine.status_of(replay.slot)
    assert status.state is State.STOPPED and status.next_planned_at is None
    assert status.decision == pause
    assert replay.planned_in() == 7200  # the resume
    effects = replay.due()  # two hours later: resumed, not a run yet
    assert launches(effects) == [] and stored(effects) == [None]
    assert replay.slot.state is SchedulerState.WAITING
    assert machine.status_of(replay.slot).decision is None
    (launch,) = launches(replay.due())  # then runs as after a Start (start delay 0)
    assert launch.run.trigger is Trigger.SCHEDULE


def test_a_resume_that_falls_due_early_by_the_wall_clock_waits() -> None:
    replay = Replay.open(options())
    replay.feed(machine.Pause(actor="alice", until=T0 + timedelta(minutes=10)))
    plan = replay.slot.plan
    assert plan is not None and plan.follows_wall_clock
    # The monotonic clock says due, the wall clock stepped back a minute: not yet.
    now = machine.Now(mono=plan.due, wall=T0 + timedelta(minutes=9))
    slot, effects = machine.step(replay.slot, machine.Due(plan=plan, run_id="x"), now)
    assert slot.state is SchedulerState.HELD and launches(effects) == []


def test_a_run_in_progress_finishes_during_a_pause_and_nothing_follows_it() -> None:
    replay = Replay.open(options())
    replay.due()
    replay.started()
    effects = replay.feed(machine.Pause(actor="alice", until=T0 + timedelta(hours=1)))
    assert not [e for e in effects if isinstance(e, machine.Cancel)]
    replay.ended(Outcome.FAILED)  # even a failure: no retry while paused
    assert replay.slot.state is SchedulerState.HELD
    plan = replay.slot.plan
    assert plan is not None and plan.planned_at == T0 + timedelta(hours=1)


def test_a_launch_that_fails_during_a_pause_keeps_the_pause() -> None:
    replay = Replay.open(options())
    replay.due()  # starting
    run_id = replay.current().run_id
    replay.feed(machine.Pause(actor="alice", until=T0 + timedelta(hours=1)))
    replay.feed(machine.LaunchFailed(run_id=run_id, error="fork failed", stored=True))
    assert replay.slot.state is SchedulerState.HELD and replay.slot.run is None
    plan = replay.slot.plan
    assert plan is not None and plan.planned_at == T0 + timedelta(hours=1)


def test_start_ends_a_pause_early() -> None:
    replay = Replay.open(options())
    replay.feed(machine.Pause(actor="alice", until=T0 + timedelta(hours=1)))
    effects = replay.feed(machine.Start(actor="bob"), after=60)
    assert stored(effects) == [None]
    assert replay.slot.state is SchedulerState.WAITING and replay.planned_in() == 10


def test_a_pause_is_refused_when_disabled_or_not_in_the_future() -> None:
    opts = options(disabled=True)
    replay = Replay.open(opts)
    (refusal,) = replay.feed(machine.Pause(actor="a", until=T0 + timedelta(hours=1)))
    assert isinstance(refusal, machine.Refuse) and "disabled" in refusal.message
    replay = Replay.open(options())
    (refusal,) = replay.feed(machine.Pause(actor="a", until=T0))
    assert isinstance(refusal, machine.Refuse) and "future" in refusal.message
    assert replay.slot.state is SchedulerState.WAITING


def test_a_pause_is_refused_while_stopped_and_the_stop_stays() -> None:
    replay = Replay.open(options())
    replay.feed(machine.Stop(actor="alice", reason="ERP"))
    until = T0 + timedelta(hours=1)
    (refusal,) = replay.feed(machine.Pause(actor="bob", until=until), after=60)
    assert refusal == machine.Refuse(
        message="s is stopped by alice 2026-03-01 12:00 UTC: ERP — start it first,"
        " or the stop stays"
    )
    assert replay.slot.state is SchedulerState.STOPPED and replay.slot.plan is None
    status = machine.status_of(replay.slot)
    assert status.decision is not None and status.decision.describe().endswith(": ERP")
    # A one-shot that stopped after its run: refused too (it would run again at the end).
    replay = Replay.open(options(Kind.ONE_SHOT))
    replay.due()
    replay.started()
    replay.ended()
    (refusal,) = replay.feed(machine.Pause(actor="bob", until=until))
    assert refusal == machine.Refuse(message="s is stopped — start it first, or the stop stays")


def test_a_stored_pause_holds_across_a_restart_and_an_expired_one_is_over() -> None:
    opts = options()
    pause = Decision(
        kind=DecisionKind.PAUSED,
        actor="alice",
        at=T0 - timedelta(hours=1),
        reason="ERP maintenance",
        until=T0 + timedelta(minutes=30),
    )
    replay = Replay.open(opts, decision=pause)
    assert replay.slot.state is SchedulerState.HELD
    assert machine.status_of(replay.slot).decision == pause
    assert replay.planned_in() == 1800 and stored(replay.effects) == []
    expired = replace(pause, until=T0 - timedelta(minutes=1))
    replay = Replay.open(opts, decision=expired)
    assert replay.slot.state is SchedulerState.WAITING and replay.planned_in() == 10
    assert stored(replay.effects) == [None]  # the store forgets it


def test_a_settings_change_during_a_pause_keeps_the_resume_plan() -> None:
    opts = options(kind=Kind.CRON)  # hourly
    replay = Replay.open(opts)
    until = T0 + timedelta(hours=6)
    replay.feed(machine.Pause(actor="alice", until=until, reason="ERP"))
    longer = replace(opts.defaults, timeout=timedelta(minutes=9))
    effects = replay.feed(machine.SettingsChanged(settings=longer), after=60)
    assert stored(effects) == [] and replay.slot.settings == longer
    assert replay.slot.state is SchedulerState.HELD
    plan = replay.slot.plan
    assert plan is not None and plan.planned_at == until and plan.trigger is Trigger.START
    assert replay.planned_in() == 6 * 3600 - 60
    effects = replay.due()  # the resume, at the pause's end, not the next hour
    assert replay.seconds == 6 * 3600 and stored(effects) == [None]
    assert replay.slot.state is SchedulerState.WAITING


def test_a_cron_time_inside_a_stored_pause_that_ended_while_down_is_not_missed() -> None:
    # Last run 11:00, paused 11:10-12:30, the manager down 11:15-12:31: 12:00 was paused.
    opts = options(kind=Kind.CRON, start_delay=timedelta(0))
    last = RunRecord(
        run_id="r0",
        scheduler_id="s",
        trigger=Trigger.SCHEDULE,
        triggered_by=None,
        started_at=T0 - timedelta(hours=1),
        ended_at=T0 - timedelta(minutes=59),
        outcome=Outcome.SUCCEEDED,
    )
    pause = Decision(
        kind=DecisionKind.PAUSED,
        actor="alice",
        at=T0 - timedelta(minutes=50),
        reason="ERP",
        until=T0 + timedelta(minutes=30),
    )
    history = {"last_run": last, "last_finished": last, "decision": pause}
    replay = Replay.open(opts, seconds=31 * 60, **history)
    plan = replay.slot.plan
    assert plan is not None and plan.trigger is Trigger.CRON
    assert plan.planned_at == T0 + timedelta(hours=1)
    assert stored(replay.effects) == [None]
    # A time after the pause's end (13:00) passed while down: that one is missed.
    replay = Replay.open(opts, seconds=61 * 60, **history)
    plan = replay.slot.plan
    assert plan is not None and plan.trigger is Trigger.MISSED


def test_a_stored_disable_reason_is_kept_only_while_disabled() -> None:
    why = Decision(kind=DecisionKind.DISABLED, actor="alice", at=T0, reason="broken")
    opts = options(disabled=True)
    replay = Replay.open(opts, decision=why)
    assert machine.status_of(replay.slot).decision == why and stored(replay.effects) == []
    replay = Replay.open(options(), decision=why)  # enabled since (code defaults changed)
    assert machine.status_of(replay.slot).decision is None
    assert stored(replay.effects) == [None]


# -- retries ----------------------------------------------------------------------------------


def retrying(kind: Kind = Kind.SCHEDULE, **more: object) -> Replay:
    settings: dict[str, object] = {"retries": 3, "retry_delay": timedelta(seconds=20)}
    settings.update(more)
    return Replay.open(options(kind, **settings))


def test_retry_wait_doubles_and_is_capped() -> None:
    settings = Settings(retries=10, retry_delay=timedelta(seconds=20))
    waits = [retry_wait(settings, n).total_seconds() for n in range(1, 11)]
    assert waits == [20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    long = Settings(retries=2, retry_delay=timedelta(hours=2))
    assert retry_wait(long, 2) == timedelta(hours=2) > RETRY_DELAY_CAP
    assert retry_wait(settings, 100) == RETRY_DELAY_CAP


def test_a_failed_run_is_retried_with_back_off_then_the_schedule_goes_on() -> None:
    replay = retrying(pause_time=timedelta(hours=1))
    replay.due()
    replay.started()
    replay.ended(Outcome.FAILED)
    assert replay.planned_in() == 20
    status = machine.status_of(replay.slot)
    assert (status.retry_attempt, status.retries) == (1, 3)
    assert status.next_planned_at == T0 + timedelta(seconds=10 + 1 + 20)
    for attempt, wait in ((1, 40), (2, 80)):
        (launch,) = launches(replay.due())
        assert launch.run.trigger is Trigger.RETRY
        replay.started()
        replay.ended(Outcome.CRASHED if attempt == 1 else Outcome.TIMED_OUT)
        assert replay.planned_in() == wait
        assert machine.status_of(replay.slot).retry_attempt == attempt + 1
    (launch,) = launches(replay.due())
    replay.started()
    replay.ended(Outcome.FAILED)  # the third retry failed too: back to the schedule
    assert replay.planned_in() == 3600
    assert machine.status_of(replay.slot).retry_attempt == 0


def test_a_retry_that_succeeds_ends_the_retries() -> None:
    replay = retrying()
    replay.due()
    replay.started()
    replay.ended(Outcome.FAILED)
    replay.due()
    replay.started()
    replay.ended(Outcome.SUCCEEDED)
    assert replay.planned_in() == 300 and replay.slot.retry_attempt == 0


def test_a_stopped_or_shut_down_run_is_never_retried() -> None:
    replay = retrying()
    replay.due()
    replay.started()
    replay.feed(machine.Stop(actor="alice"))
    replay.ended(Outcome.CANCELLED)
    assert replay.slot.plan is None and replay.slot.retry_attempt == 0
    replay = retrying()
    replay.due()
    replay.started()
    replay.ended(Outcome.CANCELLED)  # cancelled otherwise (e.g. the run's own cancel)
    assert replay.planned_in() == 300
    replay = retrying()
    replay.due()
    replay.started()
    replay.feed(machine.Close())
    replay.ended(Outcome.FAILED)
    assert replay.slot.plan is None


def test_stop_drops_a_planned_retry() -> None:
    replay = retrying()
    replay.due()
    replay.started()
    replay.ended(Outcome.FAILED)
    assert replay.slot.plan is not None and replay.slot.plan.trigger is Trigger.RETRY
    replay.feed(machine.Stop(actor="alice"))
    assert replay.slot.plan is None and machine.status_of(replay.slot).retry_attempt == 0


def test_a_regular_plan_that_comes_first_wins_over_a_retry() -> None:
    replay = retrying(pause_time=timedelta(seconds=5))
    replay.due()
    replay.started()
    replay.ended(Outcome.FAILED)
    plan = replay.slot.plan
    assert plan is not None and plan.trigger is Trigger.SCHEDULE and replay.planned_in() == 5


def test_a_one_shot_and_a_manual_run_are_retried_too() -> None:
    replay = retrying(Kind.ONE_SHOT)
    replay.due()
    replay.started()
    replay.ended(Outcome.FAILED)
    assert replay.slot.state is SchedulerState.WAITING and replay.planned_in() == 20
    replay.due()
    replay.started()
    replay.ended(Outcome.SUCCEEDED)
    assert replay.slot.state is SchedulerState.STOPPED and replay.slot.plan is None
    replay = Replay.open(options(Kind.MANUAL, retries=1, retry_delay=timedelta(seconds=20)))
    replay.feed(machine.Execute(actor="alice", run_id="m1"))
    replay.started()
    replay.ended(Outcome.FAILED)
    assert replay.planned_in() == 20
    replay.due()
    replay.started()
    replay.ended(Outcome.FAILED)  # its one retry is spent
    assert replay.slot.plan is None


def test_no_retry_without_the_setting() -> None:
    replay = Replay.open(options())
    replay.due()
    replay.started()
    replay.ended(Outcome.FAILED)
    assert replay.planned_in() == 300 and replay.slot.retry_attempt == 0
    assert kinds(replay.feed(machine.Start(actor="a"))) == []
