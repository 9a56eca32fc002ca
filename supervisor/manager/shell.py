"""The manager: a state machine that plans runs, launches them crash-isolated, and records them.

One planner thread waits for the earliest due run (a heap, so thousands of waiting
schedulers cost nothing); each run is watched by its own thread; log records reach the
store through the batching ``LogWriter``. Commands (start, stop, execute, settings) come
from any thread and take the one lock. Clock, store and launcher are injected.
May import everything below the use cases: definitions, records, planning, store,
launcher, logwriter, clock, errors.
"""

from __future__ import annotations

import heapq
import itertools
import sys
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from supervisor.core.clock import Clock
from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.errors import ActionFailed, AlreadyRunning, BackendError, UnknownAction
from supervisor.core.planning import Anchor, Plan, catch_up_plan, next_plan
from supervisor.core.records import (
    LogQuery,
    LogRecord,
    Outcome,
    RunRecord,
    SchedulerStatus,
    State,
    Trigger,
)
from supervisor.core.registry import Registry
from supervisor.core.settings import EffectiveSettings, from_store
from supervisor.manager.logwriter import LogWriter
from supervisor.runs.launcher import CancelRequest, Exit, Job, Launcher
from supervisor.store.sqlite import SqliteStore

# Cron plans follow the wall clock: the planner looks at them at least this often, so a
# wall-clock step is noticed without a burst of runs.
WALL_CLOCK_CHECK_SECONDS = 30.0
# After the store or the launcher failed to start a planned run, try again this much later.
RETRY_SECONDS = 5.0
# A custom action is a short request from a person waiting for its answer.
ACTION_TIMEOUT = timedelta(seconds=60)


@dataclass(slots=True)
class _Slot:
    """The mutable state of one scheduler; guarded by the manager's lock."""

    options: Options
    settings: Settings
    stopped: bool = False
    anchor: Anchor | None = None
    plan: Plan | None = None
    generation: int = 0  # bumped on every re-plan; stale heap entries are skipped
    run: RunRecord | None = None
    cancel: CancelRequest | None = None
    last_run: RunRecord | None = None
    last_finished: RunRecord | None = None
    last_actor: str | None = None
    finished_one_shot: bool = False
    started_while_running: bool = False  # Start came while a stopped run was still ending
    run_done: threading.Condition | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerConfig:
    grace_seconds: float = 5.0
    catch_up_missed_cron: bool = True


class Manager:
    """Runs every scheduler of a registry; implements ``backend.Backend``."""

    def __init__(
        self,
        registry: Registry,
        *,
        store: SqliteStore,
        launcher: Launcher,
        clock: Clock,
        config: ManagerConfig | None = None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._launcher = launcher
        self._clock = clock
        self._config = config or ManagerConfig()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._slots: dict[str, _Slot] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._sequence = itertools.count()
        self._watchers: set[threading.Thread] = set()
        self._closing = False
        self._planner: threading.Thread | None = None
        self._logs = LogWriter(store)

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Load settings and history, plan every scheduler, and begin running."""
        overrides = self._store.all_overrides()
        now_mono, now_wall = self._clock.monotonic(), self._clock.now()
        anchor = Anchor(mono=now_mono, wall=now_wall, after_run=False)
        with self._lock:
            for options in self._registry:
                settings = from_store(options, overrides.get(options.id, {})).effective
                slot = _Slot(options=options, settings=settings)
                slot.last_run = self._store.last_run(options.id)
                slot.last_finished = self._store.last_finished_run(options.id)
                slot.last_actor = self._store.last_actor(options.id)
                slot.anchor = anchor
                self._slots[options.id] = slot
                plan = None
                if options.kind is Kind.CRON and self._config.catch_up_missed_cron:
                    # Missed means: a planned time passed after the last run of any trigger
                    # (a manual run after it did the work that time would have done).
                    plan = catch_up_plan(
                        settings,
                        last_planned=None if slot.last_run is None else slot.last_run.started_at,
                        now_mono=now_mono,
                        now_wall=now_wall,
                    )
                self._set_plan(slot, plan or self._plan(slot, now_mono, now_wall))
        self._logs.start()
        self._planner = threading.Thread(target=self._plan_loop, name="planner", daemon=True)
        self._planner.start()

    def close(self, *, wait: float | None = None) -> None:
        """Stop planning, cancel every run (reason: shutdown), wait for them and record them."""
        with self._lock:
            self._closing = True
            for slot in self._slots.values():
                if slot.cancel is not None:
                    slot.cancel.request("shutdown")
            self._wake.notify_all()
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.join(wait)
        if self._planner is not None:
            self._planner.join(wait)
        self._logs.close()

    # -- planning -----------------------------------------------------------------------

    def _plan(self, slot: _Slot, now_mono: float, now_wall: datetime) -> Plan | None:
        if slot.stopped or slot.finished_one_shot or slot.anchor is None:
            return None
        return next_plan(
            slot.options.kind, slot.settings, slot.anchor, now_mono=now_mono, now_wall=now_wall
        )

    def _set_plan(self, slot: _Slot, plan: Plan | None) -> None:
        """Replace the slot's plan (lock held); the planner wakes to look at it."""
        slot.generation += 1
        slot.plan = plan
        if plan is not None:
            due = (
                plan.due
                if not plan.follows_wall_clock
                else min(plan.due, self._clock.monotonic() + WALL_CLOCK_CHECK_SECONDS)
            )
            heapq.heappush(
                self._heap, (due, next(self._sequence), slot.options.id, slot.generation)
            )
        self._wake.notify_all()

    def _replan(self, slot: _Slot) -> None:
        self._set_plan(slot, self._plan(slot, self._clock.monotonic(), self._clock.now()))

    def _plan_loop(self) -> None:
        with self._lock:
            while not self._closing:
                now = self._clock.monotonic()
                if not self._heap:
                    self._wake.wait(WALL_CLOCK_CHECK_SECONDS)
                    continue
                due, _, scheduler_id, generation = self._heap[0]
                if due > now:
                    self._wake.wait(due - now)
                    continue
                heapq.heappop(self._heap)
                slot = self._slots[scheduler_id]
                if generation != slot.generation or slot.plan is None or slot.run is not None:
                    continue
                plan = slot.plan
                if plan.follows_wall_clock and self._clock.now() < plan.planned_at:
                    # Not yet by the wall clock (or it stepped back): look again later.
                    remaining = (plan.planned_at - self._clock.now()).total_seconds()
                    slot.plan = replace(plan, due=now + remaining)
                    self._set_plan(slot, slot.plan)
                    continue
                slot.plan = None
                try:
                    self._launch(slot, plan.trigger, actor=None)
                except Exception as error:  # the store failed: keep planning, try again
                    _report(f"could not start a run of {scheduler_id}: {error}")
                    retry = replace(
                        plan,
                        due=now + RETRY_SECONDS,
                        planned_at=self._clock.now() + timedelta(seconds=RETRY_SECONDS),
                    )
                    self._set_plan(slot, retry)

    # -- runs ---------------------------------------------------------------------------

    def _launch(self, slot: _Slot, trigger: Trigger, *, actor: str | None) -> RunRecord:
        """Start a run of ``slot`` (lock held). The watcher thread does the waiting."""
        now = self._clock.now()
        timeout = slot.settings.timeout
        run = RunRecord(
            run_id=uuid.uuid4().hex[:16],
            scheduler_id=slot.options.id,
            trigger=trigger,
            triggered_by=actor,
            started_at=now,
        )
        self._store.insert_run(run)  # first: if it fails, nothing has changed
        slot.run = run
        slot.last_run = run
        slot.cancel = CancelRequest()
        if self._closing:
            slot.cancel.request("shutdown")
        job = Job(
            scheduler_id=slot.options.id,
            run_id=run.run_id,
            trigger=trigger.value,
            deadline=None if timeout is None else now + timeout,
        )
        watcher = threading.Thread(
            target=self._watch,
            args=(slot, run, job, slot.cancel, timeout),
            name=f"run-{run.run_id}",
            daemon=True,
        )
        self._watchers.add(watcher)
        watcher.start()
        return run

    def _watch(
        self,
        slot: _Slot,
        run: RunRecord,
        job: Job,
        cancel: CancelRequest,
        timeout: timedelta | None,
    ) -> None:
        try:
            exit_ = self._supervise(run, job, cancel, timeout)
        except Exception as error:  # the launcher failed: a crash of this run, not of us
            exit_ = Exit(
                outcome=Outcome.CRASHED,
                exit_code=None,
                signal=None,
                error=f"could not start the run: {error}",
                result=None,
            )
        self._logs.flush()
        ended_at = self._clock.now()
        try:
            finished = self._store.finish_run(
                run.run_id,
                ended_at=ended_at,
                outcome=exit_.outcome,
                exit_code=exit_.exit_code,
                signal=exit_.signal,
                error=exit_.error,
            )
        except Exception as error:  # keep the scheduler going; the next start marks it
            _report(f"could not record the end of run {run.run_id}: {error}")
            finished = replace(
                run,
                ended_at=ended_at,
                outcome=exit_.outcome,
                exit_code=exit_.exit_code,
                signal=exit_.signal,
                error=exit_.error,
            )
        with self._lock:
            slot.run = None
            slot.cancel = None
            slot.last_run = finished
            slot.last_finished = finished
            restarted, slot.started_while_running = slot.started_while_running, False
            if slot.options.kind is Kind.ONE_SHOT and not restarted:
                slot.finished_one_shot = True
            # After a Start that came during the run, the start delay applies again.
            slot.anchor = Anchor(
                mono=self._clock.monotonic(),
                wall=finished.ended_at or self._clock.now(),
                after_run=not restarted,
            )
            if not self._closing:
                self._replan(slot)
            self._watchers.discard(threading.current_thread())
            self._wake.notify_all()

    def _supervise(
        self, run: RunRecord, job: Job, cancel: CancelRequest, timeout: timedelta | None
    ) -> Exit:
        process = self._launcher.spawn(job)
        self._store.set_run_process(
            run.run_id, pid=process.pid, pgid=process.pid, create_time=process.create_time
        )
        return process.supervise(
            sink=self._logs.submit,
            timeout=None if timeout is None else timeout.total_seconds(),
            cancel=cancel,
            grace=self._config.grace_seconds,
        )

    def wait_idle(self, scheduler_id: str, timeout: float) -> bool:
        """Wait until ``scheduler_id`` has no run in progress (for tests and shutdown)."""
        deadline = self._clock.monotonic() + timeout
        with self._lock:
            slot = self._slot(scheduler_id)
            while slot.run is not None:
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(min(remaining, 0.5))
            return True

    # -- Backend: reading ---------------------------------------------------------------

    def _slot(self, scheduler_id: str) -> _Slot:
        self._registry.get(scheduler_id)  # raises UnknownScheduler
        return self._slots[scheduler_id]

    def _status(self, slot: _Slot) -> SchedulerStatus:
        if slot.run is not None:
            state = State.RUNNING
        elif slot.settings.disabled:
            state = State.DISABLED
        elif slot.stopped or slot.finished_one_shot:
            state = State.STOPPED
        else:
            state = State.PAUSED
        last = slot.last_finished
        options = slot.options
        return SchedulerStatus(
            id=options.id,
            name=options.name,
            description=options.description,
            kind=options.kind,
            state=state,
            settings=slot.settings,
            defaults=options.defaults,
            current_run_id=None if slot.run is None else slot.run.run_id,
            last_started_at=None if slot.last_run is None else slot.last_run.started_at,
            last_completed_at=None if last is None else last.ended_at,
            next_planned_at=None if slot.plan is None else slot.plan.planned_at,
            last_outcome=None if last is None else last.outcome,
            last_error=None if last is None else last.error,
            last_actor=slot.last_actor,
            actions=tuple((a.id, a.title) for a in options.actions),
        )

    def statuses(self) -> list[SchedulerStatus]:
        with self._lock:
            return [self._status(slot) for slot in self._slots.values()]

    def status(self, scheduler_id: str) -> SchedulerStatus:
        with self._lock:
            return self._status(self._slot(scheduler_id))

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        self._registry.get(scheduler_id)
        return self._store.runs(scheduler_id, limit=limit)

    def run(self, run_id: str) -> RunRecord:
        return self._store.get_run(run_id)

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        self._registry.get(query.scheduler_id)
        return self._store.logs(query)

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        self._registry.get(scheduler_id)
        return self._store.overrides(scheduler_id)

    # -- Backend: controls --------------------------------------------------------------

    def start(self, scheduler_id: str, *, actor: str) -> None:
        with self._lock:
            slot = self._slot(scheduler_id)
            slot.last_actor = actor
            if not (slot.stopped or slot.finished_one_shot):
                return
            if slot.run is not None:  # a stopped run is still ending: start after it
                slot.stopped = False
                slot.started_while_running = True
                return
            slot.stopped = False
            slot.finished_one_shot = False
            slot.anchor = Anchor(
                mono=self._clock.monotonic(), wall=self._clock.now(), after_run=False
            )
            self._replan(slot)

    def stop(self, scheduler_id: str, *, actor: str) -> None:
        with self._lock:
            slot = self._slot(scheduler_id)
            slot.last_actor = actor
            slot.stopped = True
            slot.started_while_running = False
            if slot.cancel is not None:
                slot.cancel.request("stop")
            self._set_plan(slot, None)

    def execute(self, scheduler_id: str, *, actor: str) -> str:
        with self._lock:
            slot = self._slot(scheduler_id)
            if slot.run is not None:
                raise AlreadyRunning(scheduler_id, slot.run.run_id)
            if self._closing:
                raise BackendError("the manager is shutting down")
            slot.last_actor = actor
            try:
                run = self._launch(slot, Trigger.MANUAL, actor=actor)
            except Exception as error:
                raise BackendError(f"could not start a run of {scheduler_id}: {error}") from error
            self._set_plan(slot, None)
            return run.run_id

    def update_settings(self, scheduler_id: str, settings: EffectiveSettings) -> None:
        with self._lock:
            slot = self._slot(scheduler_id)
            self._store.set_overrides(scheduler_id, settings.overrides)
            self._apply(slot, settings.effective)

    def reset_settings(self, scheduler_id: str) -> None:
        with self._lock:
            slot = self._slot(scheduler_id)
            self._store.delete_overrides(scheduler_id)
            self._apply(slot, slot.options.defaults)

    def _apply(self, slot: _Slot, settings: Settings) -> None:
        """New settings take effect at once: a waiting scheduler re-plans (lock held)."""
        slot.settings = settings
        if slot.run is None:
            self._replan(slot)

    def run_action(self, scheduler_id: str, action_id: str, *, actor: str) -> str:
        slot = self._slot(scheduler_id)
        if slot.options.action(action_id) is None:
            raise UnknownAction(f"scheduler {scheduler_id!r} has no action {action_id!r}")
        with self._lock:
            slot.last_actor = actor
        now = self._clock.now()
        job = Job(
            scheduler_id=scheduler_id,
            run_id=f"action-{uuid.uuid4().hex[:12]}",
            trigger=Trigger.MANUAL.value,
            deadline=now + ACTION_TIMEOUT,
            action_id=action_id,
        )
        exit_ = self._launcher.spawn(job).supervise(
            sink=lambda records: None,
            timeout=ACTION_TIMEOUT.total_seconds(),
            cancel=CancelRequest(),
            grace=self._config.grace_seconds,
        )
        if exit_.outcome is not Outcome.SUCCEEDED:
            raise ActionFailed(exit_.error or f"the action ended {exit_.outcome.value}")
        return exit_.result or ""


def _report(message: str) -> None:
    """A problem of the manager itself (not of a run), for the operator's log."""
    print(f"supervisor: {message}", file=sys.stderr, flush=True)
