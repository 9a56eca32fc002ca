"""The manager's pure core: one scheduler's state and how each event changes it.

``step(slot, event, now) -> (slot, effects)`` is the only way a scheduler's state
changes. It does no I/O, reads no clock and takes no lock: the threaded shell
(``shell``) feeds it events (a plan fell due, a run started or ended, a launch failed,
an operator pressed Start/Stop/Execute Now, the settings changed, the manager closes) and
carries out the effects it returns (launch a run, cancel one, plan, store an end row
again, report a problem to the operator, refuse a command). Histories of events can so
be replayed in microseconds (tests/test_manager_machine.py).

Rules (DESIGN.md, "Meaning of states and controls"):

- Never two runs of one scheduler at once: a slot has at most one ``run``; a plan that
  falls due while one is in progress is dropped, Execute Now is refused naming it.
- Stop cancels the current run and plans nothing more; Start (of a stopped scheduler)
  plans from the start again, so ``start_delay`` applies once per start.
- A settings change re-plans a waiting scheduler at once.
- After a manager restart a ``SCHEDULE`` scheduler waits for
  ``max(start + start_delay, last end + pause_time)``: a crash-looping manager does not
  run it on every start.
- A start that fails (the store or the launcher raised) is a state of its own
  (``FAILING``), retried with a bounded back-off and reported once per failure streak.
- Stop and Disable are decisions: who, when and why (``Decision``) are kept with the
  slot and shown in its status; Stop's note goes into the cancelled run's log.
- A time-boxed pause (``Pause``) plans nothing until ``until`` (a run in progress
  finishes), then resumes by itself as Start would; Start resumes it early. A pause is
  refused for a disabled scheduler and for a time not in the future.
- With ``retries`` set, a run that failed, crashed or timed out is tried again
  (trigger ``retry``) as ``core.retries`` says (shared with systemd mode): ``retry_delay``
  after its end, each further time after twice the wait before, capped; a cancelled run
  (Stop, shutdown) is never retried, and a regular plan that comes earlier wins.
- The decisions that outlive the manager (a disable's, a pause's) are stored
  (``StoreDecision``) whenever they change; ``open_slot`` takes them back.

May import ``definitions``, ``records``, ``planning``, ``retries``, ``replacing`` and the stdlib
only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.planning import Anchor, Plan, catch_up_plan, next_plan
from supervisor.core.records import (
    Decision,
    DecisionKind,
    Outcome,
    RunRecord,
    SchedulerStatus,
    State,
    Trigger,
)
from supervisor.core.retries import next_try
from supervisor.manager.replacing import replace

# After a failed start, the first retry comes this much later; each further failure in a
# row doubles the wait, up to MAX_RETRY_SECONDS.
RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 300.0

CANCELLED_BEFORE_START = {
    "stop": "cancelled before it started: the run was stopped while it was being launched",
    "shutdown": "cancelled before it started: the supervisor shut down while it was being launched",
}


class SchedulerState(enum.Enum):
    """What a scheduler does apart from its current run; the public ``State`` derives
    from it and the run's phase."""

    WAITING = "waiting"  # active: a run is planned, or (MANUAL) none until triggered
    FAILING = "failing"  # active, but its last start failed; a retry is planned
    STOPPED = "stopped"  # stopped by an operator, or a finished ONE_SHOT: nothing planned
    HELD = "held"  # paused by an operator until a time; ``plan`` is the resume


class RunPhase(enum.Enum):
    """Where the current run is."""

    STARTING = "starting"  # its row is being stored and its process launched
    RUNNING = "running"  # its process runs
    STOPPING = "stopping"  # it was asked to end (Stop or shutdown) and has not yet


@dataclass(frozen=True, slots=True, kw_only=True)
class Now:
    """The two clocks at the moment of an event."""

    mono: float
    wall: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """Everything the manager knows about one scheduler, as one frozen value.

    ``anchor``: what the next plan is measured from (a start, or the last run's end).
    ``previous_end``: the last run's end before this manager started, mapped onto the
    monotonic clock; a SCHEDULE's first plan after a restart honours its pause.
    ``run`` and ``phase``: the run in progress and where it is (both None, or neither).
    ``restart_on_end``: Start came while a run of the stopped scheduler was in progress.
    ``start_failures``: failed starts in a row; ``start_error``: the last one's message.
    ``held``: the Stop or Pause in force (state STOPPED or HELD); ``disabled_by``: who
    disabled it and why (while ``settings.disabled``). ``retry_attempt``: the number of
    the retry planned or running (0: none).
    """

    options: Options
    settings: Settings
    state: SchedulerState = SchedulerState.WAITING
    anchor: Anchor | None = None
    previous_end: Anchor | None = None
    plan: Plan | None = None
    run: RunRecord | None = None
    phase: RunPhase | None = None
    last_run: RunRecord | None = None
    last_finished: RunRecord | None = None
    last_actor: str | None = None
    restart_on_end: bool = False
    start_failures: int = 0
    start_error: str | None = None
    closing: bool = False
    run_pid: int | None = None
    state_since: datetime | None = None
    held: Decision | None = None
    disabled_by: Decision | None = None
    retry_attempt: int = 0

    @property
    def decision(self) -> Decision | None:
        """The decision the status shows: a disable's while disabled, else a Stop's or a
        Pause's while it holds."""
        if self.settings.disabled and self.disabled_by is not None:
            return self.disabled_by
        if self.state in (SchedulerState.STOPPED, SchedulerState.HELD):
            return self.held
        return None

    @property
    def stored_decision(self) -> Decision | None:
        """The decision that must outlive the manager: a disable's, else a pause's."""
        if self.settings.disabled and self.disabled_by is not None:
            return self.disabled_by
        if self.state is SchedulerState.HELD:
            return self.held
        return None

    @property
    def public_state(self) -> State:
        """The state the CLI, the Admin Center and the use cases show."""
        if self.phase is not None:
            return State.RUNNING
        if self.settings.disabled:
            return State.DISABLED
        if self.state in (SchedulerState.STOPPED, SchedulerState.HELD):
            return State.STOPPED
        if self.state is SchedulerState.FAILING:
            return State.FAILING
        return State.PAUSED


# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Due:
    """``plan`` fell due; ``run_id`` names the run it would start."""

    plan: Plan
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Execute:
    actor: str
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    actor: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    actor: str
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause:
    """Plan nothing until ``until`` (aware), then resume by itself."""

    actor: str
    until: datetime
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Acted:
    """Someone acted on the scheduler without changing its state (a custom action)."""

    actor: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsChanged:
    """The settings are now ``settings``; ``disabled_by``: who disabled it and why (given
    when this change disables it, or sets a new reason)."""

    settings: Settings
    disabled_by: Decision | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    """The run's process exists (``pid``, ``create_time`` identify it for the sweep)."""

    run_id: str
    pid: int
    create_time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchFailed:
    """The run could not be started. ``stored``: its row is in the store (it must be
    finished there); ``cancelled``: it was cancelled before it started."""

    run_id: str
    error: str
    stored: bool
    cancelled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnded:
    """The run ended as ``finished`` says; ``stored``: its end row is in the store."""

    finished: RunRecord
    stored: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    """The manager shuts down: cancel the run, plan nothing, start nothing."""


Event = (
    Due
    | Execute
    | Start
    | Stop
    | Pause
    | Acted
    | SettingsChanged
    | RunStarted
    | LaunchFailed
    | RunEnded
    | Close
)


# -- effects ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """Store ``run``'s row, then start its process (timeout: ``timeout``)."""

    run: RunRecord
    timeout: timedelta | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """Cancel the run. ``note``: a WARNING for the run's log (who stopped it and why)."""

    run_id: str
    reason: str  # "stop" or "shutdown"
    note: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Replan:
    """The slot's plan is now ``plan`` (None: nothing planned); the planner looks at it."""

    plan: Plan | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordProcess:
    run_id: str
    pid: int
    create_time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordEnd:
    """Store ``run``'s end row (it is not stored yet): retry until it is."""

    run: RunRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """A problem of the manager (not of a run) for the operator's log."""

    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """The command is refused. ``run_id``: the run in progress that refuses it."""

    message: str
    run_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreDecision:
    """Store ``decision`` as the scheduler's decision that outlives the manager (None:
    delete it)."""

    scheduler_id: str
    decision: Decision | None


Effect = Launch | Cancel | Replan | RecordProcess | RecordEnd | Report | Refuse | StoreDecision


# -- the machine ------------------------------------------------------------------------


def open_slot(
    options: Options,
    settings: Settings,
    now: Now,
    *,
    last_run: RunRecord | None = None,
    last_finished: RunRecord | None = None,
    last_actor: str | None = None,
    catch_up_missed_cron: bool = True,
    decision: Decision | None = None,
) -> tuple[Slot, list[Effect]]:
    """The slot of a scheduler when the manager starts, and its first plan.

    ``decision``: the one stored before (a disable's reason, or a pause, which holds on
    if its time has not come, and is over otherwise)."""
    previous_end = None
    ended_at = None if last_finished is None else last_finished.ended_at
    if options.kind is Kind.SCHEDULE and ended_at is not None:
        # The end on the monotonic clock; an end "in the future" (the wall clock stepped
        # back) counts as now, so the wait is never longer than one pause.
        elapsed = max(0.0, (now.wall - ended_at).total_seconds())
        previous_end = Anchor(
            mono=now.mono - elapsed, wall=now.wall - timedelta(seconds=elapsed), after_run=True
        )
    slot = Slot(
        options=options,
        settings=settings,
        anchor=Anchor(mono=now.mono, wall=now.wall, after_run=False),
        previous_end=previous_end,
        last_run=last_run,
        last_finished=last_finished,
        last_actor=last_actor,
        state_since=now.wall,
    )
    stored_before = None
    if decision is not None and decision.kind is DecisionKind.DISABLED:
        slot = replace(slot, disabled_by=decision)
        stored_before = decision
    elif decision is not None and decision.kind is DecisionKind.PAUSED:
        stored_before = decision
        until = decision.until
        if until is not None and until > now.wall and not settings.disabled:
            held = replace(slot, state=SchedulerState.HELD, held=decision)
            held, effects = _planned(held, _resume_plan(until, now))
            return held, effects + _store_changes(stored_before, held)
    plan = None
    if options.kind is Kind.CRON and catch_up_missed_cron:
        # Missed means: a planned time passed after the last run of any trigger (a
        # manual run after it did the work that time would have done) and after the end
        # of a stored pause (a time inside the pause was not to run).
        last_planned = None if last_run is None else last_run.started_at
        if stored_before is not None and stored_before.kind is DecisionKind.PAUSED:
            until = stored_before.until
            if until is not None and last_planned is not None and until > last_planned:
                last_planned = min(until, now.wall)
        plan = catch_up_plan(
            settings,
            last_planned=last_planned,
            now_mono=now.mono,
            now_wall=now.wall,
        )
    slot, effects = _planned(slot, plan or _next_plan(slot, now))
    return slot, effects + _store_changes(stored_before, slot)


def _store_changes(before: Decision | None, slot: Slot) -> list[Effect]:
    after = slot.stored_decision
    if after == before:
        return []
    return [StoreDecision(scheduler_id=slot.options.id, decision=after)]


def _resume_plan(until: datetime, now: Now) -> Plan:
    """The plan that ends a pause at ``until`` (a wall-clock time, like a cron time)."""
    return Plan(
        due=now.mono + max(0.0, (until - now.wall).total_seconds()),
        planned_at=until,
        trigger=Trigger.START,
        follows_wall_clock=True,
    )


def step(slot: Slot, event: Event, now: Now) -> tuple[Slot, list[Effect]]:
    """What ``event`` does to ``slot`` at ``now``: the new slot and the effects to carry out."""
    after, effects = _step(slot, event, now)
    # Two rules over every step, in one copy: a slot without a run has no pid, and a change
    # of the public state is dated.
    if after.public_state is not slot.public_state:
        run_pid = None if after.run is None else after.run_pid
        after = replace(after, state_since=now.wall, run_pid=run_pid)
    elif after.run is None and after.run_pid is not None:
        after = replace(after, run_pid=None)
    if after.stored_decision != slot.stored_decision:
        stored = StoreDecision(scheduler_id=slot.options.id, decision=after.stored_decision)
        effects = [*effects, stored]
    return after, effects


def _step(slot: Slot, event: Event, now: Now) -> tuple[Slot, list[Effect]]:
    match event:
        case Due():
            return _due(slot, event, now)
        case Execute():
            return _execute(slot, event, now)
        case Start():
            return _start(slot, event, now)
        case Stop():
            return _stop(slot, event, now)
        case Pause():
            return _pause(slot, event, now)
        case Acted():
            return replace(slot, last_actor=event.actor), []
        case SettingsChanged():
            return _settings_changed(slot, event, now)
        case RunStarted():
            return _run_started(slot, event)
        case LaunchFailed():
            return _launch_failed(slot, event, now)
        case RunEnded():
            return _run_ended(slot, event, now)
        case Close():
            return _close(slot)


def _due(slot: Slot, event: Due, now: Now) -> tuple[Slot, list[Effect]]:
    plan = slot.plan
    if plan is None or plan != event.plan or slot.run is not None or slot.closing:
        return slot, []  # a stale plan, or a run is in progress: never two at once
    if plan.follows_wall_clock and now.wall < plan.planned_at:
        # Not yet by the wall clock (or it stepped back): look again later.
        remaining = (plan.planned_at - now.wall).total_seconds()
        return _planned(slot, replace(plan, due=now.mono + remaining))
    if slot.state is SchedulerState.HELD:  # the pause is over: resume as Start would
        return _resume(slot, now)
    return _launch(slot, plan.trigger, actor=None, run_id=event.run_id, now=now)


def _execute(slot: Slot, event: Execute, now: Now) -> tuple[Slot, list[Effect]]:
    if slot.run is not None:
        message = f"{slot.options.id} is already running (run {slot.run.run_id})"
        return slot, [Refuse(message=message, run_id=slot.run.run_id)]
    if slot.closing:
        return slot, [Refuse(message="the manager is shutting down")]
    return _launch(slot, Trigger.MANUAL, actor=event.actor, run_id=event.run_id, now=now)


def _launch(
    slot: Slot, trigger: Trigger, *, actor: str | None, run_id: str, now: Now
) -> tuple[Slot, list[Effect]]:
    run = RunRecord(
        run_id=run_id,
        scheduler_id=slot.options.id,
        trigger=trigger,
        triggered_by=actor,
        started_at=now.wall,
    )
    last_actor = slot.last_actor if actor is None else actor
    slot = replace(
        slot, run=run, phase=RunPhase.STARTING, plan=None, previous_end=None, last_actor=last_actor
    )
    return slot, [Replan(plan=None), Launch(run=run, timeout=slot.settings.timeout)]


def _start(slot: Slot, event: Start, now: Now) -> tuple[Slot, list[Effect]]:
    slot = replace(slot, last_actor=event.actor)
    if slot.state not in (SchedulerState.STOPPED, SchedulerState.HELD) or slot.closing:
        return slot, []
    return _resume(slot, now)


def _resume(slot: Slot, now: Now) -> tuple[Slot, list[Effect]]:
    """Plan from the start again (Start, or the end of a pause)."""
    slot = replace(slot, held=None, retry_attempt=0)
    if slot.run is not None:  # a run is still in progress (or ending): plan after it
        # (Nothing is planned while a run is in progress.)
        return replace(slot, state=SchedulerState.WAITING, restart_on_end=True), []
    anchor = Anchor(mono=now.mono, wall=now.wall, after_run=False)
    slot = replace(
        slot, state=SchedulerState.WAITING, anchor=anchor, previous_end=None, start_failures=0
    )
    return _planned(slot, _next_plan(slot, now))


def stop_note(actor: str, at: datetime, reason: str | None) -> str:
    """What a stopped run's log and error say: ``stopped by alice 02:14 UTC: ERP maintenance``."""
    text = f"stopped by {actor} {at:%H:%M} UTC"
    return text if reason is None else f"{text}: {reason}"


def _stop(slot: Slot, event: Stop, now: Now) -> tuple[Slot, list[Effect]]:
    held = Decision(kind=DecisionKind.STOPPED, actor=event.actor, at=now.wall, reason=event.reason)
    slot = replace(
        slot,
        state=SchedulerState.STOPPED,
        last_actor=event.actor,
        restart_on_end=False,
        plan=None,
        held=held,
        retry_attempt=0,
    )
    effects: list[Effect] = [Replan(plan=None)]
    if slot.run is None:
        return replace(slot, start_failures=0, start_error=None), effects
    note = stop_note(event.actor, now.wall, event.reason)
    effects.append(Cancel(run_id=slot.run.run_id, reason="stop", note=note))
    return replace(slot, phase=RunPhase.STOPPING), effects


def _pause(slot: Slot, event: Pause, now: Now) -> tuple[Slot, list[Effect]]:
    if slot.closing:
        return slot, [Refuse(message="the manager is shutting down")]
    if slot.settings.disabled:
        message = f"{slot.options.id} is disabled: enable it instead of pausing it"
        return slot, [Refuse(message=message)]
    if slot.state is SchedulerState.STOPPED:
        # A pause would replace the stop (and its reason) and then start by itself.
        return slot, [Refuse(message=stopped_refusal(slot.options.id, slot.held))]
    if event.until <= now.wall:
        return slot, [Refuse(message=f"the pause must end in the future, not {event.until}")]
    held = Decision(
        kind=DecisionKind.PAUSED,
        actor=event.actor,
        at=now.wall,
        reason=event.reason,
        until=event.until,
    )
    slot = replace(
        slot,
        state=SchedulerState.HELD,
        held=held,
        last_actor=event.actor,
        restart_on_end=False,
        retry_attempt=0,
    )
    if slot.run is not None:  # the run finishes; the resume is planned when it ends
        return replace(slot, plan=None), [Replan(plan=None)]
    return _planned(slot, _resume_plan(event.until, now))


def stopped_refusal(scheduler_id: str, stop: Decision | None) -> str:
    """Why a stopped scheduler is not paused, naming the stop."""
    what = "stopped" if stop is None else stop.describe()
    return f"{scheduler_id} is {what} — start it first, or the stop stays"


def _settings_changed(slot: Slot, event: SettingsChanged, now: Now) -> tuple[Slot, list[Effect]]:
    disabled_by = None
    if event.settings.disabled:
        disabled_by = event.disabled_by or slot.disabled_by
    slot = replace(slot, settings=event.settings, disabled_by=disabled_by)
    if event.settings.disabled and slot.state is SchedulerState.HELD:
        # A disable ends a pause: it plans nothing until enabled.
        slot = replace(slot, state=SchedulerState.WAITING, held=None, plan=None)
        return slot, [] if slot.run is not None else [Replan(plan=None)]
    if slot.run is not None or slot.state is SchedulerState.STOPPED:
        return slot, []  # planned when the run ends (or at the next Start)
    if slot.state is SchedulerState.HELD:
        return slot, []  # the pause keeps its resume plan; new settings apply after it
    return _planned(slot, _next_plan(slot, now))


def _run_started(slot: Slot, event: RunStarted) -> tuple[Slot, list[Effect]]:
    if slot.run is None or slot.run.run_id != event.run_id:
        return slot, []
    effects: list[Effect] = [
        RecordProcess(run_id=event.run_id, pid=event.pid, create_time=event.create_time)
    ]
    if slot.start_failures:
        effects.append(
            Report(
                message=f"runs of {slot.options.id} start again"
                f" after {slot.start_failures} failed start(s)"
            )
        )
    slot = replace(
        slot,
        run_pid=event.pid,
        start_failures=0,
        start_error=None,
        phase=RunPhase.RUNNING if slot.phase is RunPhase.STARTING else slot.phase,
        state=SchedulerState.WAITING if slot.state is SchedulerState.FAILING else slot.state,
    )
    return slot, effects


def _launch_failed(slot: Slot, event: LaunchFailed, now: Now) -> tuple[Slot, list[Effect]]:
    run = slot.run
    if run is None or run.run_id != event.run_id:
        return slot, []
    if event.cancelled or slot.phase is RunPhase.STOPPING or slot.closing:
        if not event.stored:  # nothing was stored: the run never was
            return _settle(slot, now, finished=None)
        reason = "shutdown" if slot.closing else "stop"
        cancelled = replace(
            run, ended_at=now.wall, outcome=Outcome.CANCELLED, error=CANCELLED_BEFORE_START[reason]
        )
        return _run_ended(slot, RunEnded(finished=cancelled, stored=False), now)
    failures = slot.start_failures + 1
    error = f"could not start a run: {event.error}"
    effects: list[Effect] = []
    if failures == 1:  # once per streak, not per attempt
        effects.append(Report(message=f"could not start a run of {slot.options.id}: {event.error}"))
    finished: RunRecord | None = None
    if event.stored:  # the row exists: finish it as the crash of a run that never began
        finished = replace(run, ended_at=now.wall, outcome=Outcome.CRASHED, error=error)
        effects.append(RecordEnd(run=finished))
    slot = replace(
        slot,
        run=None,
        phase=None,
        last_run=finished or slot.last_run,
        last_finished=finished or slot.last_finished,
        start_failures=failures,
        start_error=error,
    )
    held = slot.state in (SchedulerState.STOPPED, SchedulerState.HELD)
    if held or slot.restart_on_end:  # no retry of the start: it settles (a pause holds on)
        settled, more = _settle(slot, now, finished=None)
        return settled, effects + more
    slot = replace(slot, state=SchedulerState.FAILING)
    if run.trigger is Trigger.MANUAL or slot.settings.disabled:
        # Nobody planned Execute Now: no retry, plan what would come next anyway.
        next_slot, more = _planned(slot, _next_plan(slot, now))
        return next_slot, effects + more
    delay = min(RETRY_SECONDS * 2 ** (failures - 1), MAX_RETRY_SECONDS)
    retry = Plan(
        due=now.mono + delay,
        planned_at=now.wall + timedelta(seconds=delay),
        trigger=run.trigger,
    )
    next_slot, more = _planned(slot, retry)
    return next_slot, effects + more


def _run_ended(slot: Slot, event: RunEnded, now: Now) -> tuple[Slot, list[Effect]]:
    finished = event.finished
    if slot.run is None or slot.run.run_id != finished.run_id:
        return slot, []
    effects: list[Effect] = [] if event.stored else [RecordEnd(run=finished)]
    settled, more = _settle(slot, now, finished=finished, last_run=finished, last_finished=finished)
    return settled, effects + more


def _settle(
    slot: Slot, now: Now, *, finished: RunRecord | None, **changes: Any
) -> tuple[Slot, list[Effect]]:
    """Where a scheduler goes once its run is over (or never began); ``changes`` are
    applied with it (one ``replace``: this is the hot path of every run)."""
    restarted = slot.restart_on_end
    retry = None if restarted else _retry_plan(slot, now, finished)
    one_shot_done = (
        slot.options.kind is Kind.ONE_SHOT
        and finished is not None
        and not restarted
        and retry is None
    )
    if slot.state is SchedulerState.HELD and not slot.closing:
        held_until = None if slot.held is None else slot.held.until
        if held_until is not None and held_until > now.wall:
            resume = _resume_plan(held_until, now)
            slot = replace(slot, run=None, phase=None, restart_on_end=False, plan=resume, **changes)
            return slot, [Replan(plan=resume)]
        # The pause ended while the run was in progress: resume now.
        slot = replace(slot, run=None, phase=None, **changes)
        return _resume(slot, now)
    if slot.closing or slot.state is SchedulerState.STOPPED or one_shot_done:
        slot = replace(
            slot,
            run=None,
            phase=None,
            restart_on_end=False,
            state=SchedulerState.STOPPED,
            plan=None,
            **changes,
        )
        return slot, [Replan(plan=None)]
    ended_wall = now.wall if finished is None or finished.ended_at is None else finished.ended_at
    # After a Start that came during the run, the start delay applies again.
    anchor = Anchor(mono=now.mono, wall=ended_wall, after_run=not restarted)
    state = SchedulerState.FAILING if slot.start_failures else SchedulerState.WAITING
    plan = _next_plan(slot, now, anchor=anchor)
    attempt = 0
    if retry is not None and (plan is None or retry[1].due < plan.due):
        attempt, plan = retry
    slot = replace(
        slot,
        run=None,
        phase=None,
        restart_on_end=False,
        state=state,
        anchor=anchor,
        plan=plan,
        retry_attempt=attempt,
        **changes,
    )
    return slot, [Replan(plan=plan)]


def _retry_plan(slot: Slot, now: Now, finished: RunRecord | None) -> tuple[int, Plan] | None:
    """The retry after ``finished``, as (its number, its plan), if one is due."""
    if finished is None or slot.closing or slot.state is not SchedulerState.WAITING:
        return None
    done = slot.retry_attempt if finished.trigger is Trigger.RETRY else 0
    retry = next_try(slot.settings, outcome=finished.outcome, attempt=done)
    if retry is None:
        return None
    attempt, wait = retry.attempt, retry.wait
    ended = finished.ended_at or now.wall
    # Measured from the run's end on the wall clock, mapped onto the monotonic one.
    late = max(0.0, (now.wall - ended).total_seconds())
    seconds = max(0.0, wait.total_seconds() - late)
    plan = Plan(
        due=now.mono + seconds,
        planned_at=ended + wait,
        trigger=Trigger.RETRY,
    )
    return attempt, plan


def _close(slot: Slot) -> tuple[Slot, list[Effect]]:
    phase = slot.phase if slot.run is None else RunPhase.STOPPING
    slot = replace(slot, closing=True, plan=None, restart_on_end=False, phase=phase)
    effects: list[Effect] = [Replan(plan=None)]
    if slot.run is not None:
        effects.append(Cancel(run_id=slot.run.run_id, reason="shutdown"))
    return slot, effects


def _next_plan(slot: Slot, now: Now, *, anchor: Anchor | None = None) -> Plan | None:
    """The plan ``slot`` should have (measured from ``anchor``, default its own)."""
    anchor = anchor or slot.anchor
    if slot.closing or slot.state is SchedulerState.STOPPED or anchor is None:
        return None
    plan = next_plan(slot.options.kind, slot.settings, anchor, now_mono=now.mono, now_wall=now.wall)
    if plan is None or slot.previous_end is None or anchor.after_run:
        return plan
    # The first run after a restart: the pause since the last run's end holds too.
    paused = next_plan(
        slot.options.kind, slot.settings, slot.previous_end, now_mono=now.mono, now_wall=now.wall
    )
    return plan if paused is None or paused.due <= plan.due else paused


def _planned(slot: Slot, plan: Plan | None) -> tuple[Slot, list[Effect]]:
    return replace(slot, plan=plan), [Replan(plan=plan)]


def _last_error(slot: Slot, last: RunRecord | None) -> str | None:
    """The last run's error; none for a run cancelled by the Stop the status shows (its
    note is the decision line, not an error)."""
    if last is None or (last.outcome is Outcome.CANCELLED and slot.decision is not None):
        return None
    return last.error


def status_of(slot: Slot) -> SchedulerStatus:
    """What a slot shows: the truth from memory, also while the store fails."""
    last = slot.last_finished
    options = slot.options
    failing = slot.start_failures > 0
    return SchedulerStatus(
        id=options.id,
        name=options.name,
        description=options.description,
        kind=options.kind,
        state=slot.public_state,
        settings=slot.settings,
        defaults=options.defaults,
        current_run_id=None if slot.run is None else slot.run.run_id,
        last_started_at=started.started_at if (started := slot.run or slot.last_run) else None,
        last_completed_at=None if last is None else last.ended_at,
        next_planned_at=None
        if slot.plan is None or slot.state is SchedulerState.HELD
        else slot.plan.planned_at,
        last_outcome=Outcome.CRASHED if failing else (None if last is None else last.outcome),
        last_error=slot.start_error if failing else _last_error(slot, last),
        last_actor=slot.last_actor,
        actions=tuple((a.id, a.title) for a in options.actions),
        failed_starts=slot.start_failures,
        start_error=slot.start_error,
        run_phase=None if slot.phase is None else slot.phase.value,
        current_pid=slot.run_pid,
        state_since=slot.state_since,
        decision=slot.decision,
        retry_attempt=slot.retry_attempt
        if slot.plan is not None and slot.plan.trigger is Trigger.RETRY
        else 0,
        retries=slot.settings.retries,
    )
