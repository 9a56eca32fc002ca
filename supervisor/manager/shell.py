"""The manager's threaded shell around the pure state machine (``machine``).

Each scheduler's state is one frozen ``machine.Slot``; every change goes through
``machine.step`` under the one lock, which is held only for that (and for the planner's
heap): the effects ``step`` returns that touch the store or the launcher are carried out
after the lock is released, by the thread that fed the event. One planner thread waits
for the earliest due plan (a heap, so thousands of waiting schedulers cost nothing) and
is woken only by a plan due earlier than the one it waits for; each run is watched by a
thread of its own while it lasts (reused from run to run: ``workers``), which launches
it, supervises it and stores its end (retrying with a bounded back-off while the store
fails, e.g. on a full disk); log records reach the store through the batching
``LogWriter``, and an end waits only for its own run's records. ``close`` keeps a
deadline. Clock, store and launcher are injected.

May import everything below the use cases: definitions, records, planning, store,
launcher, logwriter, workers, machine, clock, errors.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from supervisor.core.clock import Clock
from supervisor.core.errors import ActionFailed, AlreadyRunning, BackendError, UnknownAction
from supervisor.core.planning import Plan
from supervisor.core.records import (
    Decision,
    Level,
    LogQuery,
    LogRecord,
    Outcome,
    RunRecord,
    SchedulerStatus,
    Source,
    Trigger,
)
from supervisor.core.registry import Registry
from supervisor.core.settings import EffectiveSettings, from_store
from supervisor.manager import cluster_gate, machine
from supervisor.manager.cluster_gate import ClusterGate
from supervisor.manager.endrows import EndRows
from supervisor.manager.logwriter import LogWriter
from supervisor.manager.machine import (
    RETRY_SECONDS,
    Effect,
    Event,
    Now,
    Slot,
)
from supervisor.manager.replacing import replace
from supervisor.manager.workers import Workers
from supervisor.runs.launcher import CancelRequest, Exit, Job, Launcher, RunHandle
from supervisor.store.protocols import Store

__all__ = ["RETRY_SECONDS", "WALL_CLOCK_CHECK_SECONDS", "Manager", "ManagerConfig"]

# Cron plans follow the wall clock: the planner looks at them at least this often, so a
# wall-clock step is noticed without a burst of runs.
WALL_CLOCK_CHECK_SECONDS = 30.0
# A custom action is a short request from a person waiting for its answer.
ACTION_TIMEOUT = timedelta(seconds=60)
# ``close`` waits this much longer than the grace for runs to end and be recorded.
CLOSE_MARGIN_SECONDS = 3.0
# Of ``close``'s wait, kept at its end for marking the runs that did not end and storing
# the last log records (at most a quarter of the wait).
END_RESERVE_SECONDS = 0.3
# How long a run's end waits for its log records to be stored before it is stored anyway.
LOG_FLUSH_SECONDS = 30.0
# A run's pid is stored once it has run this long (see ``Manager._spawn``).
PROCESS_ROW_SECONDS = 0.1
# A scheduler's next run due this soon after the end of its last one is started by the
# thread that watched that one (see ``Manager._start_kept``).
SOON_SECONDS = 0.005


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerConfig:
    """``grace_seconds``: how long a cancelled run may take before it is killed.
    ``store_retry_seconds``/``store_retry_max_seconds``: the back-off while a run's end
    cannot be stored. ``close_seconds``: how long ``close`` waits (default: the grace
    plus a margin)."""

    grace_seconds: float = 5.0
    catch_up_missed_cron: bool = True
    store_retry_seconds: float = 0.1
    store_retry_max_seconds: float = 10.0
    close_seconds: float | None = None


class Manager:
    """Runs every scheduler of a registry; implements ``backend.Backend``."""

    def __init__(
        self,
        registry: Registry,
        *,
        store: Store,
        launcher: Launcher,
        clock: Clock,
        config: ManagerConfig | None = None,
        report: Callable[[str], None] | None = None,
        gate: ClusterGate | None = None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._launcher = launcher
        self._clock = clock
        self._config = config or ManagerConfig()
        self._report = report or _report
        self._gate = gate  # several hosts run the app: see cluster_gate
        self._planned: dict[str, datetime] = {}  # run ID -> its plan's slot (with a gate)
        if gate is not None:
            gate.bind(cluster_gate.ManagerHooks(self))
        self._lock = threading.Lock()
        # The planner sleeps on this event, without the lock: set once the lock is
        # released, so the planner it wakes does not wait for the lock in turn.
        self._wake = threading.Event()
        # Until when (monotonic) the planner sleeps; -inf while it is awake (it looks at
        # the heap before it sleeps again): only an earlier plan needs to wake it.
        self._planner_sleeps_until = -math.inf
        self._nudge = False  # an earlier plan was pushed: set ``_wake`` after the lock
        self._idle = threading.Condition(self._lock)  # a run ended: wait_idle looks again
        self._settings_lock = threading.Lock()  # one settings change at a time, store first
        self._slots: dict[str, Slot] = {}
        self._status_version = 0  # moves whenever a slot (so a status) changes
        self._heap: list[tuple[float, int, str, Plan]] = []
        self._sequence = itertools.count()
        self._cancels: dict[str, CancelRequest] = {}
        self._stop_notes: dict[str, str] = {}  # run ID -> who stopped it and why
        self._watchers = Workers("run-watcher")
        self._closing = False
        self._close_began: float | None = None  # monotonic: when begin_close cancelled the runs
        self._close_deadline = math.inf  # monotonic: when close returns (from its ``wait``)
        self._stopping = threading.Event()  # close began: end-row retries make a last try
        self._closed = threading.Event()  # past close's deadline: late threads touch nothing
        self._planner: threading.Thread | None = None
        self._logs = LogWriter(store)
        self._ends = EndRows(
            store,
            report=self._report,
            retry_seconds=self._config.store_retry_seconds,
            retry_max_seconds=self._config.store_retry_max_seconds,
        )

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Load settings and history, plan every scheduler, and begin running."""
        overrides = self._store.all_overrides()
        decisions = self._store.all_decisions()
        loaded = [
            (
                options,
                self._store.last_run(options.id),
                self._store.last_finished_run(options.id),
                self._store.last_actor(options.id),
            )
            for options in self._registry
        ]
        now = self._now()
        later: list[Effect] = []  # e.g. forgetting a pause that ended while we were down
        with self._lock:
            for options, last_run, last_finished, last_actor in loaded:
                settings = from_store(options, overrides.get(options.id, {})).effective
                slot, effects = machine.open_slot(
                    options,
                    settings,
                    now,
                    last_run=last_run,
                    last_finished=last_finished,
                    last_actor=last_actor,
                    catch_up_missed_cron=self._config.catch_up_missed_cron,
                    decision=decisions.get(options.id),
                )
                self._slots[options.id] = slot
                self._status_version += 1
                later += self._apply_in_memory(options.id, effects)
        self._carry_out(later)
        self._logs.start()
        self._planner = threading.Thread(target=self._plan_loop, name="planner", daemon=True)
        self._planner.start()

    def begin_close(self) -> None:
        """Stop planning and cancel every run (reason: shutdown), at once: their grace
        starts now. ``close`` waits for them; idempotent."""
        effects: list[Effect] = []
        self._stopping.set()
        with self._lock:
            if self._close_began is not None:
                return
            self._close_began = time.monotonic()
            self._closing = True
            for scheduler_id in self._slots:
                effects += self._feed_locked(scheduler_id, machine.Close())
        self._wake.set()
        self._carry_out(effects)

    def close(
        self, *, wait: float | None = None, grace_over: Callable[[], None] | None = None
    ) -> None:
        """Stop planning, cancel every run (reason: shutdown), wait for them and record them.

        Returns within ``wait`` seconds (default: ``ManagerConfig.close_seconds``, else the
        grace plus a margin). ``grace_over`` is called once the grace (from
        ``begin_close``) has passed with runs still in progress: it is to kill them (the
        service closes the launcher), so that their ends are recorded in what is left of
        ``wait``. A run that has not ended by then (its launch hangs) is recorded as
        interrupted, and its thread touches nothing any more.
        """
        if wait is None:
            wait = self._config.close_seconds
        if wait is None:
            wait = self._config.grace_seconds + CLOSE_MARGIN_SECONDS
        deadline = time.monotonic() + wait
        self._close_deadline = deadline
        self.begin_close()
        assert self._close_began is not None
        grace_ends = min(deadline, self._close_began + self._config.grace_seconds)
        idle = self._watchers.wait_idle(max(0.0, grace_ends - time.monotonic()))
        if not idle and grace_over is not None:
            try:
                grace_over()
            except Exception as error:  # the ends are still recorded below
                self._report(f"could not kill the runs left after the grace: {error}")
        # What is left after the runs' own ends: marking the others and the last logs.
        runs_until = deadline - min(END_RESERVE_SECONDS, wait / 4)
        self._watchers.wait_idle(max(0.0, runs_until - time.monotonic()))
        if self._planner is not None:
            self._planner.join(max(0.0, runs_until - time.monotonic()))
        self._wake.set()
        with self._lock:
            self._closed.set()
            self._idle.notify_all()
            left = [slot.run for slot in self._slots.values() if slot.run is not None]
        for run in left:
            self._report(f"run {run.run_id} of {run.scheduler_id} did not end in time at shutdown")
            try:
                # Only if its own end is not stored yet: a watcher may have just stored it.
                self._store.mark_interrupted(
                    run.run_id,
                    ended_at=self._clock.now(),
                    error="the supervisor shut down before this run ended"
                    f" (it did not end within {wait:g}s)",
                )
            except Exception as error:
                self._report(f"could not record the end of run {run.run_id}: {error}")
        self._logs.flush(max(0.05, deadline - time.monotonic()))
        if not self._logs.close(max(0.05, deadline - time.monotonic())):
            self._report(
                "the log writer did not finish in time at shutdown; its last records are lost"
            )

    def wake(self) -> None:
        """Make the planner look at the clock now (it would on its own at its next timeout)."""
        self._wake.set()

    # -- feeding the machine ------------------------------------------------------------

    def _now(self) -> Now:
        return Now(mono=self._clock.monotonic(), wall=self._clock.now())

    def _feed_locked(
        self, scheduler_id: str, event: Event, *, keep_soon: bool = False
    ) -> list[Effect]:
        """Step ``scheduler_id``'s slot (lock held); return the effects left to carry out.
        ``keep_soon``: a plan due within ``SOON_SECONDS`` is not pushed to the planner's
        heap but returned (as its ``Replan``): the caller starts it, or pushes it."""
        before = self._slots[scheduler_id]
        slot, effects = machine.step(before, event, self._now())
        self._slots[scheduler_id] = slot
        if slot is not before:
            self._status_version += 1
            if slot.run is None and before.run is not None:
                self._idle.notify_all()
        return self._apply_in_memory(scheduler_id, effects, keep_soon=keep_soon)

    def _feed(self, scheduler_id: str, event: Event, *, keep_soon: bool = False) -> list[Effect]:
        with self._lock:
            if self._closed.is_set():
                return []
            effects = self._feed_locked(scheduler_id, event, keep_soon=keep_soon)
        self._nudge_planner()
        return effects

    def _push_locked(self, scheduler_id: str, plan: Plan) -> None:
        """Put ``plan`` on the planner's heap (lock held); wake the planner if it is due
        before the planner would wake (``_nudge_planner`` once the lock is released)."""
        due = plan.due
        if plan.follows_wall_clock:
            due = min(due, self._clock.monotonic() + WALL_CLOCK_CHECK_SECONDS)
        heapq.heappush(self._heap, (due, next(self._sequence), scheduler_id, plan))
        if due < self._planner_sleeps_until:
            self._nudge = True

    def _nudge_planner(self) -> None:
        """Wake the planner if a plan earlier than its sleep was pushed (lock released)."""
        if self._nudge:
            self._nudge = False  # before the set: a push after it sets it again
            self._wake.set()

    def _apply_in_memory(
        self, scheduler_id: str, effects: list[Effect], *, keep_soon: bool = False
    ) -> list[Effect]:
        """Carry out the effects that need no I/O (lock held); return the others (and,
        with ``keep_soon``, the ``Replan`` of a plan due within ``SOON_SECONDS``)."""
        rest: list[Effect] = []
        for effect in effects:
            match effect:
                case machine.Replan(plan=plan):
                    if plan is None:
                        pass
                    elif (
                        keep_soon
                        and not plan.follows_wall_clock
                        and plan.due - self._clock.monotonic() <= SOON_SECONDS
                    ):
                        rest.append(effect)
                    else:
                        self._push_locked(scheduler_id, plan)
                case machine.Cancel(run_id=run_id, reason=reason, note=note):
                    cancel = self._cancels.get(run_id)
                    if cancel is not None:
                        cancel.request(reason)
                    if note is not None:  # its log record is written outside the lock
                        self._stop_notes[run_id] = note
                        rest.append(effect)
                case machine.Launch(run=run):
                    self._cancels[run.run_id] = CancelRequest()
                    rest.append(effect)
                case _:
                    rest.append(effect)
        return rest

    def _carry_out(self, effects: list[Effect]) -> None:
        """Carry out store, launcher and report effects (lock not held)."""
        for effect in effects:
            match effect:
                case machine.Launch():
                    self._launch(effect)
                case machine.RecordProcess(run_id=run_id, pid=pid, create_time=create_time):
                    try:
                        self._store.set_run_process(
                            run_id, pid=pid, pgid=pid, create_time=create_time
                        )
                    except Exception as error:  # only the sweep after a crash needs it
                        self._report(f"could not record the process of run {run_id}: {error}")
                case machine.RecordEnd(run=run):
                    fenced = False
                    if self._gate is not None:
                        run, fenced = cluster_gate.fence_end(self._gate, run, self._report)
                    if fenced:
                        cluster_gate.keep_fenced(self._store, run, self._report)
                    else:
                        self._ends.store_until_stored(run, stopping=self._stopping)
                case machine.Report(message=message):
                    self._report(message)
                case machine.StoreDecision(scheduler_id=scheduler_id, decision=decision):
                    try:
                        self._store.set_decision(scheduler_id, decision)
                    except Exception as error:  # memory holds it; a restart would lose it
                        self._report(f"could not store the decision on {scheduler_id}: {error}")
                case machine.Cancel(run_id=run_id, note=note) if note is not None:
                    # The queue is bounded: never wait on it under the lock.
                    self._logs.submit([_note_record(run_id, note, self._clock.now())])
                case machine.Refuse() | machine.Replan() | machine.Cancel():
                    pass  # refusals are raised by the caller; the rest was done in memory

    # -- planning -----------------------------------------------------------------------

    def _plan_loop(self) -> None:
        while True:
            with self._lock:
                effects = self._next_due_locked()
                if effects is None:
                    return
            # A failed start raises; the machine knows (FAILING, a retry is planned).
            with contextlib.suppress(BackendError):
                self._carry_out(effects)

    def _next_due_locked(self) -> list[Effect] | None:
        """Wait for the next due plan and step it; None once closing (lock held)."""
        while not self._closing:
            now = self._clock.monotonic()
            if not self._heap:
                self._sleep_locked(now + WALL_CLOCK_CHECK_SECONDS, WALL_CLOCK_CHECK_SECONDS)
                continue
            due, _, scheduler_id, plan = self._heap[0]
            if due > now:
                self._sleep_locked(due, due - now)
                continue
            heapq.heappop(self._heap)
            event = machine.Due(plan=plan, run_id=_new_run_id())
            effects = self._feed_locked(scheduler_id, event)
            if self._gate is not None and any(isinstance(e, machine.Launch) for e in effects):
                self._planned[event.run_id] = plan.planned_at  # the slot it claims
            if effects:
                return effects
        return None

    def _sleep_locked(self, until: float, seconds: float) -> None:
        """The planner sleeps ``seconds`` (called with the lock held, released meanwhile),
        or until woken by an earlier plan, ``wake`` or ``close``."""
        self._planner_sleeps_until = until
        self._wake.clear()  # under the lock, after the heap was looked at
        self._lock.release()
        try:
            self._wake.wait(seconds)
        finally:
            self._lock.acquire()
            self._planner_sleeps_until = -math.inf

    # -- runs ---------------------------------------------------------------------------

    def _launch(self, launch: machine.Launch, *, here: bool = False) -> _Watch | None:
        """Store the run's row, then hand it to its watcher thread (with ``here``: return
        what to watch, for the calling thread). Raises ``BackendError`` (after feeding
        the failure to the machine) if the row cannot be stored."""
        run = launch.run
        if self._gate is not None:
            slot = self._planned.pop(run.run_id, run.started_at)
            if not cluster_gate.admit_launch(self, self._gate, run, slot):
                return None
        try:
            self._store.insert_run(cluster_gate.hosted_run(self._gate, run))
        except Exception as error:
            with self._lock:
                self._cancels.pop(run.run_id, None)
            if self._gate is not None:  # its slot was claimed: the run crashed before it began
                self._gate.record_end(run.run_id, Outcome.CRASHED.value)
            self._carry_out(
                self._feed(
                    run.scheduler_id,
                    machine.LaunchFailed(run_id=run.run_id, error=str(error), stored=False),
                )
            )
            raise BackendError(f"could not start a run of {run.scheduler_id}: {error}") from error
        with self._lock:
            # Made when the machine asked for the launch (``_apply_in_memory``): a new one
            # only if that one is gone, not one per launch to throw away (an Event and its
            # Condition).
            cancel = self._cancels.get(run.run_id)
            if cancel is None:
                cancel = self._cancels[run.run_id] = CancelRequest()
            if here:
                return _Watch(run, cancel, launch.timeout)
            # Under the lock: close never sees a run whose watcher was not handed out.
            self._watchers.run(lambda: self._watch(_Watch(run, cancel, launch.timeout)))
        return None

    def _watch(self, watch: _Watch | None) -> None:
        """Watch runs of one scheduler, one after another while the next is due soon."""
        while watch is not None:
            try:
                kept = self._watch_run(watch.run, watch.cancel, watch.timeout)
            finally:
                with self._lock:
                    self._cancels.pop(watch.run.run_id, None)
            watch = None if kept is None else self._start_kept(watch.run.scheduler_id, kept)

    def _start_kept(self, scheduler_id: str, plan: Plan) -> _Watch | None:
        """``plan`` is due within ``SOON_SECONDS`` of its run's end: wait for it in this
        thread and launch it here (without a hand-off to the planner and another thread
        and back). None if it was not launched: stale (Stop, new settings: the machine
        says), closing, or not due yet by the injected clock (then the planner has it)."""
        wait = plan.due - self._clock.monotonic()
        if (wait > 0 and self._stopping.wait(wait)) or plan.due > self._clock.monotonic():
            with self._lock:
                self._push_locked(scheduler_id, plan)
            self._nudge_planner()
            return None
        with self._lock:
            if self._closing or self._stopping.is_set():  # close began: nothing new starts
                return None
            effects = self._feed_locked(scheduler_id, machine.Due(plan=plan, run_id=_new_run_id()))
        self._nudge_planner()
        launch: machine.Launch | None = None
        for effect in effects:
            if isinstance(effect, machine.Launch):
                launch = effect
        self._carry_out([e for e in effects if e is not launch])
        if launch is None:
            return None
        try:
            return self._launch(launch, here=True)
        except BackendError:  # the machine knows (FAILING, a retry is planned)
            return None

    def _watch_run(
        self, run: RunRecord, cancel: CancelRequest, timeout: timedelta | None
    ) -> Plan | None:
        """Launch ``run``, supervise it to its end and record the end (watcher thread);
        the scheduler's next plan if it is due soon and this thread is to start it."""
        spawned = self._spawn(run, cancel, timeout)
        if spawned is None:
            return None
        process, later = spawned
        sink = _TicketSink(self._logs)
        recorded: list[Plan | None] = []  # the end is stored before the run's cleanup

        def ended(exit_: Exit) -> None:
            recorded.append(self._record_end(run, exit_, logged=sink.ticket))

        try:
            exit_ = process.supervise(
                sink=sink,
                timeout=None if timeout is None else timeout.total_seconds(),
                cancel=cancel,
                grace=self._config.grace_seconds,
                still_running=(PROCESS_ROW_SECONDS, lambda: self._carry_out(later)),
                ended=ended,
            )
        except Exception as error:  # the launcher failed: a crash of this run, not of us
            if recorded:  # its end is stored: only giving back what it held failed
                self._report(f"could not clean up after run {run.run_id}: {error}")
                return recorded[0]
            exit_ = Exit(
                outcome=Outcome.CRASHED,
                exit_code=None,
                signal=None,
                error=f"could not supervise the run: {error}",
                result=None,
            )
        if recorded:
            return recorded[0]
        return self._record_end(run, exit_, logged=sink.ticket)

    def _spawn(
        self, run: RunRecord, cancel: CancelRequest, timeout: timedelta | None
    ) -> tuple[RunHandle, list[Effect]] | None:
        """Start ``run``'s process; None (the machine told) if it was cancelled or failed.
        With the process, the effects left for once it has run ``PROCESS_ROW_SECONDS``:
        storing its pid, which only crash recovery reads (a run that ends sooner needs
        none, and recovery finds a run without one by its marker and cgroup)."""
        job = Job(
            scheduler_id=run.scheduler_id,
            run_id=run.run_id,
            trigger=run.trigger.value,
            deadline=None if timeout is None else run.started_at + timeout,
        )
        if cancel.is_set():  # stopped (or shut down) before its process was asked for
            failed = machine.LaunchFailed(
                run_id=run.run_id, error="cancelled", stored=True, cancelled=True
            )
            self._carry_out(self._feed(run.scheduler_id, failed))
            return None
        try:
            # Stop or shutdown during a launch that waits for the app to (re)load cancel it.
            process = self._launcher.spawn(job, cancel=cancel)
        except Exception as error:  # a failed start, not a crash of the manager
            failed = machine.LaunchFailed(
                run_id=run.run_id, error=str(error), stored=True, cancelled=cancel.is_set()
            )
            self._carry_out(self._feed(run.scheduler_id, failed))
            return None
        started = machine.RunStarted(
            run_id=run.run_id, pid=process.pid, create_time=process.create_time
        )
        effects = self._feed(run.scheduler_id, started)
        later: list[Effect] = [e for e in effects if isinstance(e, machine.RecordProcess)]
        self._carry_out([e for e in effects if not isinstance(e, machine.RecordProcess)])
        return process, later

    def _record_end(self, run: RunRecord, exit_: Exit, *, logged: int) -> Plan | None:
        """Store how ``run`` ended (behind its log records: ``logged`` is the ticket of its
        last batch; a stopped run's note came from elsewhere) and tell the machine; the
        next plan if it is due within ``SOON_SECONDS`` (kept off the heap: the caller's).
        Nothing past close's deadline: the run was recorded as interrupted already."""
        if self._closed.is_set():
            return None
        with self._lock:
            note = self._stop_notes.pop(run.run_id, None)
        # At shutdown no longer than close waits (it marks the run interrupted then).
        timeout = min(LOG_FLUSH_SECONDS, max(0.0, self._close_deadline - time.monotonic()))
        if note is None:
            self._logs.flush_through(logged, timeout)
        else:
            self._logs.flush(timeout)
        error = exit_.error
        if note is not None and exit_.outcome is Outcome.CANCELLED:
            error = note  # "stopped by alice 02:14 UTC: ERP maintenance"
        finished = replace(
            run,
            ended_at=self._clock.now(),
            outcome=exit_.outcome,
            exit_code=exit_.exit_code,
            signal=exit_.signal,
            error=error,
        )
        fenced = False
        if self._gate is not None:
            finished, fenced = cluster_gate.fence_end(self._gate, finished, self._report)
        if fenced:
            kept = cluster_gate.keep_fenced(self._store, finished, self._report)
            stored = finished if kept else None
        else:
            stored = self._ends.try_store(finished)
        ended = machine.RunEnded(finished=stored or finished, stored=stored is not None)
        effects = self._feed(run.scheduler_id, ended, keep_soon=self._gate is None)
        self._carry_out(effects)
        for effect in effects:
            if isinstance(effect, machine.Replan) and effect.plan is not None:
                return effect.plan
        return None

    def wait_idle(self, scheduler_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` real seconds until ``scheduler_id`` has no run in progress."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._registry.get(scheduler_id)  # raises UnknownScheduler
            while self._slots[scheduler_id].run is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.5))
            return True

    # -- Backend: reading ---------------------------------------------------------------

    def _slot(self, scheduler_id: str) -> Slot:
        self._registry.get(scheduler_id)  # raises UnknownScheduler
        return self._slots[scheduler_id]

    def status_version(self) -> int:
        """A number that moves whenever any status changes: a reader that saw this number
        with its statuses may keep them while it stays the same."""
        with self._lock:
            return self._status_version

    def statuses(self) -> list[SchedulerStatus]:
        with self._lock:
            slots = list(self._slots.values())
        return [self._shown(slot) for slot in slots]

    def status(self, scheduler_id: str) -> SchedulerStatus:
        with self._lock:
            slot = self._slot(scheduler_id)
        return self._shown(slot)

    def _shown(self, slot: Slot) -> SchedulerStatus:
        shown = replace(machine.status_of(slot), containment=self._launcher.containment)
        return cluster_gate.hosted_status(self._gate, shown)

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        self._registry.get(scheduler_id)
        runs = self._store.runs(scheduler_id, limit=limit)
        return [cluster_gate.hosted_run(self._gate, run) for run in runs]

    def recent_runs(
        self, scheduler_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RunRecord]]:
        recent = self._store.recent_runs(scheduler_ids, limit=limit)
        return {
            sid: [cluster_gate.hosted_run(self._gate, r) for r in runs]
            for sid, runs in recent.items()
        }

    def run(self, run_id: str) -> RunRecord:
        return cluster_gate.hosted_run(self._gate, self._store.get_run(run_id))

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        if query.scheduler_id is not None:
            self._registry.get(query.scheduler_id)
        return self._store.logs(query)

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        self._registry.get(scheduler_id)
        return self._store.overrides(scheduler_id)

    # -- Backend: controls --------------------------------------------------------------

    def _command(self, scheduler_id: str, event: Event) -> list[Effect]:
        self._registry.get(scheduler_id)  # raises UnknownScheduler
        if self._closed.is_set():
            raise BackendError("the manager is shut down")
        effects = self._feed(scheduler_id, event)
        for effect in effects:
            if isinstance(effect, machine.Refuse):
                if effect.run_id is not None:
                    raise AlreadyRunning(scheduler_id, effect.run_id)
                raise BackendError(effect.message)
        return effects

    def _route(self, scheduler_id: str, kind: str, **payload: Any) -> dict[str, Any] | None:
        """None: carry the control out here; else the owning host's answer (cluster_gate)."""
        if self._gate is None:
            return None
        self._registry.get(scheduler_id)  # raises UnknownScheduler
        return cluster_gate.route(self._gate, scheduler_id, kind, **payload)

    def start(self, scheduler_id: str, *, actor: str) -> None:
        if self._route(scheduler_id, cluster_gate.START, actor=actor) is not None:
            return
        self._carry_out(self._command(scheduler_id, machine.Start(actor=actor)))

    def stop(self, scheduler_id: str, *, actor: str, reason: str | None = None) -> None:
        if self._route(scheduler_id, cluster_gate.STOP, actor=actor, reason=reason) is not None:
            return
        self._carry_out(self._command(scheduler_id, machine.Stop(actor=actor, reason=reason)))

    def pause(
        self, scheduler_id: str, *, actor: str, until: datetime, reason: str | None = None
    ) -> None:
        sent = self._route(
            scheduler_id, cluster_gate.PAUSE, actor=actor, until=until.isoformat(), reason=reason
        )
        if sent is not None:
            return
        event = machine.Pause(actor=actor, until=until, reason=reason)
        self._carry_out(self._command(scheduler_id, event))

    def execute(self, scheduler_id: str, *, actor: str) -> str:
        if (sent := self._route(scheduler_id, cluster_gate.EXECUTE, actor=actor)) is not None:
            return str(sent["run_id"])
        run_id = _new_run_id()
        self._carry_out(self._command(scheduler_id, machine.Execute(actor=actor, run_id=run_id)))
        return run_id

    def update_settings(
        self,
        scheduler_id: str,
        settings: EffectiveSettings,
        *,
        disabled_by: Decision | None = None,
    ) -> None:
        self._registry.get(scheduler_id)  # raises UnknownScheduler
        with self._settings_lock:  # store first, outside the lock; one change at a time
            self._store.set_overrides(scheduler_id, settings.overrides)
            event = machine.SettingsChanged(settings=settings.effective, disabled_by=disabled_by)
            self._carry_out(self._feed(scheduler_id, event))
            if self._gate is not None:  # every other host applies it too
                cluster_gate.share_settings(
                    self._gate, scheduler_id, settings.overrides, self._report
                )

    def reset_settings(self, scheduler_id: str) -> None:
        options = self._registry.get(scheduler_id)
        with self._settings_lock:
            self._store.delete_overrides(scheduler_id)
            event = machine.SettingsChanged(settings=options.defaults)
            self._carry_out(self._feed(scheduler_id, event))
            if self._gate is not None:
                cluster_gate.share_settings(self._gate, scheduler_id, {}, self._report)

    def run_action(self, scheduler_id: str, action_id: str, *, actor: str) -> str:
        options = self._registry.get(scheduler_id)
        if options.action(action_id) is None:
            raise UnknownAction(f"scheduler {scheduler_id!r} has no action {action_id!r}")
        sent = self._route(scheduler_id, cluster_gate.ACTION, actor=actor, action_id=action_id)
        if sent is not None:
            return str(sent.get("result") or "")
        self._feed(scheduler_id, machine.Acted(actor=actor))
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


@dataclass(frozen=True, slots=True)
class _Watch:
    """A launched run for a watcher thread: its record, cancel request and timeout."""

    run: RunRecord
    cancel: CancelRequest
    timeout: timedelta | None


class _TicketSink:
    """A run's sink into the log writer that keeps the ticket of its last batch."""

    __slots__ = ("_logs", "ticket")

    def __init__(self, logs: LogWriter) -> None:
        self._logs = logs
        self.ticket = 0

    def __call__(self, records: Sequence[LogRecord]) -> None:
        ticket = self._logs.submit(records)
        if ticket:
            self.ticket = ticket


def _note_record(run_id: str, note: str, now: datetime) -> LogRecord:
    """The WARNING a stopped run's log gets from the manager: who stopped it and why."""
    return LogRecord(
        time=now,
        level=Level.WARNING,
        message=note,
        fields={},
        run_id=run_id,
        source=Source.LOGGER,
    )


def _new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def _report(message: str) -> None:
    """A problem of the manager itself (not of a run), for the operator's log."""
    print(f"supervisor: {message}", file=sys.stderr, flush=True)
