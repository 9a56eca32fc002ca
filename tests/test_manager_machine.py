"""The manager's pure core: event histories replayed through ``machine.step``.

No threads, no processes, no store: each test is a table of events and what the slot
and its effects must be after them. Properties (never two runs, Stop plans nothing,
start_delay once per start, Execute Now refused naming the run) are checked over
random histories with hypothesis.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.planning import Plan
from supervisor.core.records import Outcome, RunRecord, State, Trigger
from supervisor.manager import machine
from supervisor.manager.machine import (
    CANCELLED_BEFORE_START,
    MAX_RETRY_SECONDS,
    RETRY_SECONDS,
    Effect,
    Event,
    Now,
    RunPhase,
    SchedulerState,
    Slot,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MONO0 = 1000.0


def noop(ctx: object) -> None:
    return None


def options(kind: Kind = Kind.SCHEDULE, **settings_: object) -> Options:
    defaults: dict[str, object] = {
        "start_delay": timedelta(seconds=10),
        "pause_time": timedelta(minutes=5),
    }
    if kind is Kind.CRON:
        defaults["cron"] = "0 * * * *"
    defaults.update(settings_)
    return Options(
        id="s",
        name="S",
        kind=kind,
        runner=noop,
        defaults=Settings(**defaults),  # type: ignore[arg-type]
    )


def at(seconds: float) -> Now:
    return Now(mono=MONO0 + seconds, wall=T0 + timedelta(seconds=seconds))


@dataclass
class Replay:
    """A slot with the history fed to it so far; ``effects`` are those of the last step."""

    slot: Slot
    effects: list[Effect] = field(default_factory=list)
    seconds: float = 0.0
    ids: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def open(cls, opts: Options, *, seconds: float = 0.0, **history: object) -> Replay:
        slot, effects = machine.open_slot(opts, opts.defaults, at(seconds), **history)  # type: ignore[arg-type]
        return cls(slot=slot, effects=effects, seconds=seconds)

    def feed(self, event: Event, *, after: float = 0.0) -> list[Effect]:
        self.seconds += after
        self.slot, self.effects = machine.step(self.slot, event, at(self.seconds))
        return self.effects

    def run_id(self) -> str:
        return f"r{next(self.ids)}"

    def due(self) -> list[Effect]:
        """Move the clocks to the planned time and let the plan fall due."""
        plan = self.slot.plan
        assert plan is not None, "nothing is planned"
        return self.feed(
            machine.Due(plan=plan, run_id=self.run_id()), after=plan.due - MONO0 - self.seconds
        )

    def started(self) -> list[Effect]:
        run = self.current()
        return self.feed(machine.RunStarted(run_id=run.run_id, pid=42, create_time=1.0))

    def ended(
        self, outcome: Outcome = Outcome.SUCCEEDED, *, after: float = 1.0, stored: bool = True
    ) -> list[Effect]:
        run = self.current()
        finished = replace(
            run,
            ended_at=T0 + timedelta(seconds=self.seconds + after),
            outcome=outcome,
            exit_code=0,
        )
        return self.feed(machine.RunEnded(finished=finished, stored=stored), after=after)

    def current(self) -> RunRecord:
        assert self.slot.run is not None, "no run in progress"
        return self.slot.run

    def planned_in(self) -> float | None:
        """Seconds from now to the planned run, or None."""
        plan = self.slot.plan
        return None if plan is None else round(plan.due - MONO0 - self.seconds, 6)


def kinds(effects: list[Effect]) -> list[str]:
    return [type(e).__name__ for e in effects]


def launches(effects: list[Effect]) -> list[machine.Launch]:
    return [e for e in effects if isinstance(e, machine.Launch)]


# -- tables -----------------------------------------------------------------------------


def test_a_schedule_runs_after_the_start_delay_then_after_each_pause() -> None:
    replay = Replay.open(options())
    assert replay.planned_in() == 10
    assert replay.slot.public_state is State.PAUSED
    (launch,) = launches(replay.due())
    assert launch.run.trigger is Trigger.SCHEDULE
    # Last started shows the run in progress at once, not only once it ended.
    assert machine.status_of(replay.slot).last_started_at == launch.run.started_at
    assert machine.status_of(replay.slot).run_phase == "starting"
    assert replay.slot.phase is RunPhase.STARTING
    assert replay.slot.public_state is State.RUNNING
    assert kinds(replay.started()) == ["RecordProcess"]
    assert replay.slot.phase is RunPhase.RUNNING
    replay.ended(after=30)
    assert replay.slot.state is SchedulerState.WAITING and replay.slot.phase is None
    assert replay.planned_in() == 300  # the pause, from the end of the run
    assert replay.slot.last_finished is not None
    assert replay.slot.last_finished.outcome is Outcome.SUCCEEDED


def test_the_state_is_dated_when_it_changes_and_the_pid_goes_with_its_run() -> None:
    replay = Replay.open(options())
    assert replay.slot.state_since == at(0).wall
    replay.due()  # 10 s: the start delay
    assert replay.slot.public_state is State.RUNNING
    assert replay.slot.state_since == at(10).wall and replay.slot.run_pid is None
    replay.feed(machine.RunStarted(run_id=replay.current().run_id, pid=42, create_time=1.0))
    assert replay.slot.state_since == at(10).wall and replay.slot.run_pid == 42
    replay.ended(after=30)
    assert replay.slot.public_state is State.PAUSED
    assert replay.slot.state_since == at(40).wall and replay.slot.run_pid is None
    replay.feed(machine.Acted(actor="ada"), after=5)  # no change of state: no new date
    assert replay.slot.state_since == at(40).wall


@pytest.mark.parametrize(
    ("kind", "planned_in"),
    [(Kind.ONE_SHOT, 10.0), (Kind.SCHEDULE, 10.0), (Kind.MANUAL, None)],
)
def test_what_each_kind_plans_at_start(kind: Kind, planned_in: float | None) -> None:
    assert Replay.open(options(kind)).planned_in() == planned_in


def test_a_one_shot_runs_once_then_is_stopped_until_started() -> None:
    replay = Replay.open(options(Kind.ONE_SHOT))
    replay.due()
    replay.started()
    replay.ended()
    assert replay.slot.public_state is State.STOPPED and replay.slot.plan is None
    replay.feed(machine.Start(actor="ada"), after=100)
    assert replay.planned_in() == 10  # the start delay, again
    assert replay.slot.last_actor == "ada"


def test_a_plan_that_falls_due_during_a_run_starts_nothing() -> None:
    replay = Replay.open(options())
    plan = replay.slot.plan
    assert plan is not None
    replay.feed(machine.Execute(actor="ada", run_id="manual"))
    assert replay.feed(machine.Due(plan=plan, run_id="second"), after=10) == []
    assert replay.current().run_id == "manual"


def test_execute_now_is_refused_while_running_naming_the_run() -> None:
    replay = Replay.open(options(Kind.MANUAL))
    replay.feed(machine.Execute(actor="ada", run_id="first"))
    (refused,) = replay.feed(machine.Execute(actor="bob", run_id="second"))
    assert isinstance(refused, machine.Refuse)
    assert refused.run_id == "first" and "first" in refused.message
    assert replay.slot.last_actor == "ada"  # a refused command changes nothing


def test_stop_while_waiting_plans_nothing_and_a_stale_due_is_ignored() -> None:
    replay = Replay.open(options())
    plan = replay.slot.plan
    assert plan is not None
    assert kinds(replay.feed(machine.Stop(actor="ada"))) == ["Replan"]
    assert replay.slot.public_state is State.STOPPED and replay.slot.plan is None
    assert replay.feed(machine.Due(plan=plan, run_id="late"), after=10) == []
    replay.feed(machine.SettingsChanged(settings=Settings(start_delay=timedelta(0))))
    assert replay.slot.plan is None


def test_stop_cancels_the_run_and_it_ends_stopped() -> None:
    replay = Replay.open(options())
    replay.due()
    replay.started()
    effects = replay.feed(machine.Stop(actor="ada"))
    note = "stopped by ada 12:00 UTC"
    assert machine.Cancel(run_id=replay.current().run_id, reason="stop", note=note) in effects
    assert replay.slot.phase is RunPhase.STOPPING
    assert replay.slot.public_state is State.RUNNING  # a run is still in progress
    replay.ended(Outcome.CANCELLED)
    assert replay.slot.public_state is State.STOPPED and replay.slot.plan is None


def test_start_while_a_stopped_run_is_ending_plans_from_the_start_after_it() -> None:
    replay = Replay.open(options())
    replay.due()
    replay.started()
    replay.feed(machine.Stop(actor="ada"))
    assert replay.feed(machine.Start(actor="ada")) == []
    assert replay.slot.public_state is State.RUNNING
    replay.ended(Outcome.CANCELLED, after=3)
    assert replay.slot.public_state is State.PAUSED
    assert replay.planned_in() == 10  # the start delay, not the pause


def test_execute_now_on_a_stopped_scheduler_leaves_it_stopped() -> None:
    replay = Replay.open(options())
    replay.feed(machine.Stop(actor="ada"))
    replay.feed(machine.Execute(actor="ada", run_id="manual"))
    replay.started()
    replay.ended()
    assert replay.slot.public_state is State.STOPPED and replay.slot.plan is None


def test_a_settings_change_replans_a_waiting_scheduler_at_once() -> None:
    replay = Replay.open(options())
    replay.feed(
        machine.SettingsChanged(settings=Settings(start_delay=timedelta(seconds=3))), after=1
    )
    assert replay.planned_in() == 2  # measured from the start, not from the change
    replay.feed(machine.SettingsChanged(settings=Settings(disabled=True)))
    assert replay.slot.public_state is State.DISABLED and replay.slot.plan is None


def test_a_settings_change_during_a_run_applies_when_it_ends() -> None:
    replay = Replay.open(options())
    replay.due()
    effects = replay.feed(machine.SettingsChanged(settings=Settings(pause_time=timedelta(1))))
    assert effects == [] and replay.slot.plan is None
    replay.ended()
    assert replay.planned_in() == 86400


@pytest.mark.parametrize(
    ("ended_ago", "start_delay", "planned_in"),
    [
        (60, 10, 240),  # the pause (5 min) since the last end is not over: wait for it
        (600, 10, 10),  # the pause is over: the start delay applies
        (60, 400, 400),  # the start delay is longer than what is left of the pause
        (-3600, 10, 300),  # the last end is "in the future" (clock stepped back): one pause
    ],
)
def test_after_a_restart_a_schedule_honours_its_pause_since_the_last_end(
    ended_ago: float, start_delay: float, planned_in: float
) -> None:
    last = RunRecord(
        run_id="old",
        scheduler_id="s",
        trigger=Trigger.SCHEDULE,
        triggered_by=None,
        started_at=T0 - timedelta(seconds=ended_ago + 1),
        ended_at=T0 - timedelta(seconds=ended_ago),
        outcome=Outcome.SUCCEEDED,
    )
    opts = options(start_delay=timedelta(seconds=start_delay))
    replay = Replay.open(opts, last_run=last, last_finished=last)
    assert replay.planned_in() == planned_in
    # Once it has run, the pause alone counts again.
    replay.due()
    replay.ended(after=0)
    assert replay.planned_in() == 300


def test_after_a_restart_a_one_shot_runs_again_after_its_start_delay() -> None:
    last = RunRecord(
        run_id="old",
        scheduler_id="s",
        trigger=Trigger.START,
        triggered_by=None,
        started_at=T0,
        ended_at=T0,
        outcome=Outcome.SUCCEEDED,
    )
    assert Replay.open(options(Kind.ONE_SHOT), last_finished=last).planned_in() == 10


def test_failed_starts_are_a_state_retried_with_back_off_and_reported_once() -> None:
    replay = Replay.open(options())
    delays = []
    reports = []
    for _ in range(9):
        replay.due()
        run_id = replay.current().run_id
        effects = replay.feed(
            machine.LaunchFailed(run_id=run_id, error="database or disk is full", stored=False)
        )
        reports += [e for e in effects if isinstance(e, machine.Report)]
        delays.append(replay.planned_in())
        assert replay.slot.public_state is State.FAILING
        assert replay.slot.start_error == "could not start a run: database or disk is full"
    assert delays == [RETRY_SECONDS * 2**n for n in range(6)] + [MAX_RETRY_SECONDS] * 3
    assert len(reports) == 1 and "database or disk is full" in reports[0].message
    assert replay.slot.start_failures == 9
    # Space returns: the run starts, the streak ends (reported), the state is ordinary.
    replay.due()
    effects = replay.started()
    assert [e.message for e in effects if isinstance(e, machine.Report)] == [
        "runs of s start again after 9 failed start(s)"
    ]
    assert replay.slot.public_state is State.RUNNING
    replay.ended()
    assert replay.slot.public_state is State.PAUSED and replay.slot.start_failures == 0


def test_a_launch_that_fails_after_its_row_was_stored_ends_that_run_as_crashed() -> None:
    replay = Replay.open(options())
    replay.due()
    run_id = replay.current().run_id
    effects = replay.feed(machine.LaunchFailed(run_id=run_id, error="fork failed", stored=True))
    (record,) = [e for e in effects if isinstance(e, machine.RecordEnd)]
    assert record.run.run_id == run_id and record.run.outcome is Outcome.CRASHED
    assert record.run.error == "could not start a run: fork failed"
    assert replay.slot.last_finished == record.run
    assert replay.planned_in() == RETRY_SECONDS


def test_a_failed_execute_now_is_not_retried() -> None:
    replay = Replay.open(options(Kind.MANUAL))
    replay.feed(machine.Execute(actor="ada", run_id="m"))
    replay.feed(machine.LaunchFailed(run_id="m", error="disk full", stored=False))
    assert replay.slot.public_state is State.FAILING and replay.slot.plan is None


def test_stop_during_a_pending_launch_ends_the_run_as_cancelled_before_it_started() -> None:
    replay = Replay.open(options())
    replay.due()
    run_id = replay.current().run_id
    effects = replay.feed(machine.Stop(actor="ada"))
    note = "stopped by ada 12:00 UTC"
    assert machine.Cancel(run_id=run_id, reason="stop", note=note) in effects
    assert replay.slot.phase is RunPhase.STOPPING
    effects = replay.feed(
        machine.LaunchFailed(run_id=run_id, error="cancelled", stored=True, cancelled=True),
        after=2,
    )
    (record,) = [e for e in effects if isinstance(e, machine.RecordEnd)]
    assert record.run.outcome is Outcome.CANCELLED
    assert record.run.error == CANCELLED_BEFORE_START["stop"]
    assert replay.slot.public_state is State.STOPPED and replay.slot.start_failures == 0


def test_an_unstored_end_is_kept_in_memory_and_handed_back_for_retry() -> None:
    replay = Replay.open(options())
    replay.due()
    replay.started()
    run_id = replay.current().run_id
    effects = replay.ended(Outcome.FAILED, stored=False)
    (record,) = [e for e in effects if isinstance(e, machine.RecordEnd)]
    assert record.run.run_id == run_id
    assert replay.slot.last_finished is not None
    assert replay.slot.last_finished.outcome is Outcome.FAILED
    assert replay.slot.public_state is State.PAUSED


def test_close_cancels_the_run_and_then_nothing_starts() -> None:
    replay = Replay.open(options())
    plan = replay.slot.plan
    assert plan is not None
    replay.feed(machine.Execute(actor="ada", run_id="m"))
    assert machine.Cancel(run_id="m", reason="shutdown") in replay.feed(machine.Close())
    replay.ended(Outcome.CANCELLED)
    assert replay.slot.plan is None
    assert replay.feed(machine.Due(plan=plan, run_id="x"), after=100) == []
    (refused,) = replay.feed(machine.Execute(actor="ada", run_id="y"))
    assert isinstance(refused, machine.Refuse) and "shutting down" in refused.message


def test_a_cron_plan_that_is_due_by_monotonic_time_waits_for_the_wall_clock() -> None:
    replay = Replay.open(options(Kind.CRON))
    plan = replay.slot.plan
    assert plan is not None and plan.follows_wall_clock
    assert plan.planned_at == T0 + timedelta(hours=1)
    # The monotonic clock says due, the wall clock was stepped back 10 minutes.
    slot, effects = machine.step(
        replay.slot,
        machine.Due(plan=plan, run_id="c"),
        Now(mono=plan.due, wall=T0 + timedelta(minutes=50)),
    )
    assert slot.run is None and slot.plan is not None
    assert slot.plan.due == pytest.approx(plan.due + 600)
    assert kinds(effects) == ["Replan"]


# -- properties over random histories ---------------------------------------------------

COMMANDS = (
    *("due", "stale_due", "execute", "start", "stop"),
    *("started", "ended", "launch_failed", "set", "close", "pause", "restart"),
)
# Each step names a command; one that does not apply now gives way to the next that does,
# so every step of a history is an event. Hypothesis draws a seed and a length (and shrinks
# the length); the steps come from that seed, which keeps long histories cheap.
Step = tuple[int, float, int, bool]


def history_from(seed: int, length: int) -> list[Step]:
    rng = random.Random(seed)
    return [
        (rng.randrange(len(COMMANDS)), rng.uniform(0, 1000), rng.randrange(4), rng.random() < 0.5)
        for _ in range(length)
    ]


@dataclass
class World:
    """What the shell would see: runs launched and not yet over."""

    replay: Replay
    active: set[str] = field(default_factory=set)
    stale: list[Plan] = field(default_factory=list)
    stopped_by_operator: bool = False
    closed: bool = False
    last_run: RunRecord | None = None  # what the store holds for a restart


def play(world: World, index: int, after: float, number: int, flag: bool) -> None:
    for offset in range(len(COMMANDS)):
        command = COMMANDS[(index + offset) % len(COMMANDS)]
        if command == "restart" and world.replay.slot.run is None and not world.closed:
            restart(world, after)
            return
        event = event_for(world, command, after, number, flag)
        if event is not None:
            check(world, event, after)
            return


def restart(world: World, after: float) -> None:
    """The manager stops and starts again ``after`` seconds later, from what it stored."""
    replay = world.replay
    before = replay.slot
    decision = before.stored_decision
    replay.seconds += after
    now = at(replay.seconds)
    replay.slot, replay.effects = machine.open_slot(
        before.options,
        before.settings,
        now,
        last_run=world.last_run,
        last_finished=world.last_run,
        decision=decision,
    )
    world.stale = []
    world.stopped_by_operator = False  # a stop lasts until the next start
    slot = replay.slot
    until = None if decision is None else decision.until
    if until is not None and until > now.wall and not slot.settings.disabled:
        # A stored pause that has not ended holds on, to resume at its end.
        assert slot.state is SchedulerState.HELD and slot.held == decision
    check_held(slot)
    plan = slot.plan
    if plan is not None and plan.trigger is Trigger.MISSED:
        # Missed: an hour passed after the last run and after the end of a stored pause.
        assert world.last_run is not None
        since = world.last_run.started_at
        if until is not None:
            since = max(since, until)
        hour = since.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        assert hour <= now.wall, f"missed after {since} at {now.wall}"


def check_held(slot: Slot) -> None:
    """While paused and no run is in progress, the plan is the resume at the pause's end."""
    if slot.state is SchedulerState.HELD and slot.run is None and not slot.closing:
        assert slot.held is not None and slot.plan is not None
        assert slot.plan.planned_at == slot.held.until and slot.plan.trigger is Trigger.START


def event_for(world: World, command: str, after: float, number: int, flag: bool) -> Event | None:
    """The event ``command`` stands for now, or None if it does not apply."""
    replay = world.replay
    slot = replay.slot
    event: Event | None = None
    if command == "due" and slot.plan is not None:
        event = machine.Due(plan=slot.plan, run_id=replay.run_id())
    elif command == "stale_due" and world.stale:
        event = machine.Due(plan=world.stale[number % len(world.stale)], run_id=replay.run_id())
    elif command == "execute":
        event = machine.Execute(actor="ada", run_id=replay.run_id())
    elif command == "start":
        event = machine.Start(actor="ada")
    elif command == "stop":
        event = machine.Stop(actor="ada")
    elif command == "pause":
        until = T0 + timedelta(seconds=replay.seconds + after + 1 + number * 100)
        event = machine.Pause(actor="ada", until=until, reason="why" if flag else None)
    elif command == "started" and slot.run is not None:
        event = machine.RunStarted(run_id=slot.run.run_id, pid=1, create_time=0.0)
    elif command == "ended" and slot.phase in (RunPhase.RUNNING, RunPhase.STOPPING):
        assert slot.run is not None
        end = T0 + timedelta(seconds=replay.seconds + after)
        outcome = {1: Outcome.FAILED, 2: Outcome.CANCELLED}.get(number, Outcome.SUCCEEDED)
        finished = replace(slot.run, ended_at=end, outcome=outcome)
        event = machine.RunEnded(finished=finished, stored=flag)
    elif command == "launch_failed" and slot.phase in (RunPhase.STARTING, RunPhase.STOPPING):
        assert slot.run is not None
        event = machine.LaunchFailed(run_id=slot.run.run_id, error="boom", stored=flag)
    elif command == "close" and number == 0 and flag:  # rarely: the rest of a history after it
        event = machine.Close()
    elif command == "set":
        event = machine.SettingsChanged(
            settings=Settings(
                start_delay=timedelta(seconds=number * 7),
                pause_time=timedelta(seconds=number * 11 + 1),
                disabled=number == 3 and flag,
                cron=slot.settings.cron,
                retries=slot.settings.retries,
                retry_delay=slot.settings.retry_delay,
            )
        )
    return event


def check(world: World, event: Event, after: float) -> None:
    """Feed ``event`` and check the rules on what it did."""
    replay = world.replay
    before = slot = replay.slot
    if isinstance(event, machine.Due) and event.plan == slot.plan:
        after = max(after, event.plan.due - MONO0 - replay.seconds)  # the plan's time came
    if slot.plan is not None:
        world.stale.append(slot.plan)
    effects = replay.feed(event, after=after)
    slot = replay.slot
    # Never two runs of one scheduler at once.
    for launch in launches(effects):
        assert not world.active, f"{launch.run.run_id} launched while {world.active} runs"
        world.active.add(launch.run.run_id)
    if isinstance(event, machine.RunEnded | machine.LaunchFailed) and before.run is not None:
        world.active.discard(before.run.run_id)
    if isinstance(event, machine.RunEnded) and before.run is not None:
        world.last_run = event.finished
    check_held(slot)
    assert (slot.run is None) == (slot.phase is None)
    # A slot without a run has no pid; a step that changes the public state dates it.
    assert slot.run is not None or slot.run_pid is None
    moved = slot.public_state is not before.public_state
    assert slot.state_since == (at(replay.seconds).wall if moved else before.state_since)
    assert world.active == ({slot.run.run_id} if slot.run else set())
    # Once the manager closes, nothing is planned or launched any more.
    if isinstance(event, machine.Close):
        world.closed = True
    if world.closed:
        assert slot.plan is None and launches(effects) == []
    # Only the plan in force can fall due; a replaced one starts nothing.
    if isinstance(event, machine.Due) and event.plan != before.plan:
        assert effects == []
    # Execute Now while a run is in progress is refused, naming that run.
    if isinstance(event, machine.Execute) and before.run is not None:
        assert effects == [machine.Refuse(message=effects[0].message, run_id=before.run.run_id)]  # type: ignore[union-attr]
    # Stop plans nothing, and nothing but Execute Now runs until Start.
    if isinstance(event, machine.Stop):
        world.stopped_by_operator = True
    if isinstance(event, machine.Start):
        world.stopped_by_operator = False
    # A pause never replaces a stop: refused, naming the stop, changing nothing.
    if isinstance(event, machine.Pause) and before.state is SchedulerState.STOPPED:
        assert slot == before and kinds(effects) == ["Refuse"]
        assert isinstance(effects[0], machine.Refuse)
        if not before.closing and not before.settings.disabled:
            assert "start it first" in effects[0].message
    # A retry follows only a run that failed, crashed or timed out, never a cancelled one.
    retried = slot.plan is not None and slot.plan.trigger is Trigger.RETRY
    if isinstance(event, machine.RunEnded) and retried:
        assert event.finished.outcome is Outcome.FAILED
        assert 1 <= slot.retry_attempt <= slot.settings.retries
    # While paused nothing but Execute Now runs.
    if slot.state is SchedulerState.HELD:
        assert all(launch.run.trigger is Trigger.MANUAL for launch in launches(effects))
        assert not slot.settings.disabled
    if world.stopped_by_operator:
        assert slot.plan is None
        assert all(launch.run.trigger is Trigger.MANUAL for launch in launches(effects))
    # start_delay applies once per start: a plan made by Start waits exactly that long.
    # (A CRON plan is the next cron time instead.)
    by_cron = slot.options.kind is Kind.CRON
    started = isinstance(event, machine.Start) and before.state is SchedulerState.STOPPED
    if not by_cron and started and slot.plan is not None and before.run is None:
        assert slot.plan.due == pytest.approx(
            MONO0 + replay.seconds + slot.settings.start_delay.total_seconds()
        )
    # After a run ends on its own, a SCHEDULE waits for the pause, not the start delay.
    if (
        not by_cron
        and isinstance(event, machine.RunEnded)
        and slot.plan is not None
        and not before.restart_on_end
        and before.state is not SchedulerState.HELD  # a pause that ended: as after Start
        and slot.state is SchedulerState.WAITING
        and slot.plan.trigger is not Trigger.RETRY
    ):
        assert slot.plan.due == pytest.approx(
            MONO0 + replay.seconds + slot.settings.pause_time.total_seconds()
        )


@pytest.mark.parametrize("kind", [Kind.SCHEDULE, Kind.ONE_SHOT, Kind.MANUAL, Kind.CRON])
@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(1, 400))
def test_random_histories_keep_the_rules(kind: Kind, seed: int, length: int) -> None:
    retrying = {"retries": 2, "retry_delay": timedelta(seconds=20)}
    world = World(replay=Replay.open(options(kind, **retrying)))
    for index, after, number, flag in history_from(seed, length):
        play(world, index, after, number, flag)
