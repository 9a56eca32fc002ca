"""The manager's side of scale-out: the seam between ``shell.Manager`` and a cluster.

A ``ClusterGate`` (``cluster.member.Member``, on PostgreSQL) says which schedulers this
host runs. The manager calls it at a few points, each a one-line hook in ``shell``:

- before a run's row is stored, ``admit_launch``: the lease must be held and the run's
  slot claimed (for a SCHEDULE, a pause after another host's last run too), else the run
  does not happen on this host (another host ran it, or owns the scheduler) and the
  machine settles as for a run cancelled before it began;
- when a run's end is recorded, ``fence_end``: the end is written under the lease's token;
  a refused (stale) token means another host has taken over: the run is reported as
  fenced and kept here as ``interrupted``, the outcome the new owner gave it;
- at each control (start, stop, pause, execute now, custom action), ``route``: a command for a
  scheduler another host owns is sent to it and its answer returned (or its error raised);
- at a settings change, ``share_settings``: every other host applies it too;
- in status and run reads, the host that owns the scheduler or ran the run, and for a
  scheduler another host owns, that host's state, current run and times.

The gate calls back through ``GateHooks`` (``ManagerHooks``): a lease lost while a run is
in flight cancels the run; a command that reached this host is carried out here; this
host's statuses are published; another host's settings change is applied; a cron slot
nobody ran while its owner died is run.

The run store: the gate keeps the fenced record of the runs (``FencedRuns``, in the
coordination database); the manager's store holds the runs and logs, either this host's
own (SQLite) or, with ``--store postgresql://``, one store every host shares. Runs are
stored with this host's name (``hosted_run``); on taking leases, the runs another host
left open there are marked interrupted (``ManagerHooks.leases_taken``; what the store
fails to mark is tried again at the later lease polls); a fenced end is not written
(``keep_fenced``: the run becomes interrupted only where nobody ended it).

It reaches into the manager's lock, cancels and machine (``ManagerHooks``,
``admit_launch``): it is the manager's own code, kept apart so ``shell`` stays small.
May import ``core`` and ``manager.machine`` (and, for type checking, ``manager.shell``).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.core.definitions import Kind
from supervisor.core.errors import (
    ActionFailed,
    AlreadyRunning,
    BackendError,
    SupervisorError,
    UnknownAction,
    UnknownRun,
)
from supervisor.core.records import Outcome, RunRecord, SchedulerStatus, Trigger
from supervisor.core.settings import from_store
from supervisor.manager import machine
from supervisor.manager.machine import SchedulerState

if TYPE_CHECKING:
    from supervisor.manager.shell import Manager

# Command kinds, as ``cluster.commands.CommandKind`` spells them.
START, STOP, PAUSE, EXECUTE, ACTION = "start", "stop", "pause", "execute", "action"

# Who a run of a cron slot missed at a takeover is shown as started by.
MISSED_ACTOR = "cluster (a cron slot missed while its owner died)"
# Why a run is cancelled when its lease is lost (the run's error: "cancelled: ...").
LEASE_LOST = "this host lost the lease of the scheduler; another host may run it now"
# The error of a run another host left unfinished in a shared store when this one took over.
TAKEN_OVER = (
    "interrupted: {host} lost the lease of the scheduler while this run was in progress"
    " (it stopped or died); another host took the scheduler over"
)
FENCED_ERROR = (
    "fenced: this host lost the lease of {scheduler} while the run was in progress; another "
    "host owns it now, and this host's record of the run's end was refused"
)


class GateHooks(Protocol):
    """What the gate may ask of the manager (from its own threads)."""

    def lease_lost(self, scheduler_id: str) -> None:
        """Cancel the run of ``scheduler_id`` in flight, if any (another host may own it)."""
        ...

    def obey(self, scheduler_id: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Carry out a command another host sent; the answer body (never raises)."""
        ...

    def statuses(self, scheduler_ids: list[str]) -> list[SchedulerStatus]:
        """This host's statuses of ``scheduler_ids`` (what it publishes to the others)."""
        ...

    def settings_changed(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        """Another host changed the settings: store ``overrides`` here and apply them."""
        ...

    def run_missed(self, scheduler_id: str, slot: datetime) -> None:
        """A cron ``slot`` nobody ran (its owner died just before it, this host now owns
        the scheduler): run it now, unless the scheduler is stopped or disabled, a run is
        in progress, or missed cron runs are not caught up. Its claim names ``slot``."""
        ...

    def leases_taken(self, scheduler_ids: list[str]) -> bool:
        """This host took the leases of ``scheduler_ids``: a run of theirs another host
        left unfinished in a shared store (it died, or its tenure ended) is marked
        interrupted there. False while some are still to be marked (the store failed):
        the gate calls again, with no new IDs, at its later lease polls, until True.
        Never raises (a store failure is reported)."""
        ...


class FencedRuns(Protocol):
    """Run writes that carry the lease's fencing token (the coordination database's
    ``cluster_runs``, beside whichever store holds the runs themselves)."""

    def claim(
        self,
        scheduler_id: str,
        run_id: str,
        *,
        slot: datetime,
        trigger: str,
        pause: timedelta | None = None,
    ) -> str | None:
        """Claim ``slot`` of ``scheduler_id`` and record the run's start under the lease.
        ``pause``: a run of another host must have ended at least this long before the
        slot (a SCHEDULE's pause holds across hosts).

        Returns None when the run may start, else why not (not the owner, slot taken,
        too soon, stale lease, database unreachable). Never raises."""
        ...

    def record_end(self, run_id: str, outcome: str) -> bool | None:
        """Record the run's end under the token it started with. False: the token is stale
        (the run was fenced; the new owner's ``interrupted`` stays). None: unknown (the
        database could not be reached; the write is retried later, and the end must not be
        taken as accepted meanwhile). A run not started through ``claim`` counts as
        written. Never raises."""
        ...


class ClusterGate(FencedRuns, Protocol):
    """One host's membership in a cluster of managers running one app."""

    @property
    def host(self) -> str:
        """This host's name, as runs and statuses show it."""
        ...

    def bind(self, hooks: GateHooks) -> None:
        """Give the gate the manager's hooks (before it starts taking leases)."""
        ...

    def owns(self, scheduler_id: str) -> bool:
        """Whether this host holds a valid lease of ``scheduler_id`` now."""
        ...

    def owner(self, scheduler_id: str) -> str | None:
        """The host that owns ``scheduler_id`` as last seen (None: no host)."""
        ...

    def shown(self, status: SchedulerStatus) -> SchedulerStatus:
        """``status`` as the cluster shows it: its owner named, and where another host owns
        it, that host's state, current run, times and outcome (as it last published them)."""
        ...

    def send(
        self, scheduler_id: str, kind: str, payload: dict[str, Any], *, actor: str
    ) -> dict[str, Any]:
        """Send a command to the owner of ``scheduler_id`` and return its answer body.

        Raises ``BackendError`` when no host owns it or none took it in time (it is
        withdrawn), ``CommandUnconfirmed`` when the owner took it but did not answer in
        time (it may still be carried out there)."""
        ...

    def share_settings(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        """Tell every other host the settings overrides of ``scheduler_id`` changed (they
        apply them within a renewal period). Raises ``BackendError`` when the database
        cannot be reached."""
        ...


# -- hooks the shell calls ---------------------------------------------------------------

_obeying = threading.local()


def route(
    gate: ClusterGate, scheduler_id: str, kind: str, *, actor: str, **payload: Any
) -> dict[str, Any] | None:
    """None: carry the control out here (this host owns the scheduler, or the command came
    from another host). Else the owner's answer. Raises the owner's refusal as the error
    it would raise here (``AlreadyRunning``, ``ActionFailed``...), ``BackendError`` when no
    host owns the scheduler."""
    if getattr(_obeying, "active", False) or gate.owns(scheduler_id):
        return None
    body = gate.send(scheduler_id, kind, {"actor": actor, **payload}, actor=actor)
    if body.get("ok"):
        return body
    error = str(body.get("error", "the owning host refused"))
    match body.get("error_type"):
        case "AlreadyRunning":
            raise AlreadyRunning(scheduler_id, str(body.get("run_id")))
        case "ActionFailed":
            raise ActionFailed(error)
        case "UnknownAction":
            raise UnknownAction(error)
    raise BackendError(f"{body.get('host', 'the owning host')}: {error}")


def admit_launch(manager: Manager, gate: ClusterGate, run: RunRecord, slot: datetime) -> bool:
    """Claim ``run``'s slot before its row is stored. False: the run does not happen here
    (the machine is told it was cancelled before it began, and plans the next one)."""
    with manager._lock:
        state = manager._slots.get(run.scheduler_id)
    pause = None
    if (
        state is not None
        and state.options.kind is Kind.SCHEDULE
        and run.trigger is Trigger.SCHEDULE
    ):
        pause = state.settings.pause_time
    refused = gate.claim(
        run.scheduler_id, run.run_id, slot=slot, trigger=run.trigger.value, pause=pause
    )
    if refused is None:
        return True
    with manager._lock:
        manager._cancels.pop(run.run_id, None)
    not_here = machine.LaunchFailed(run_id=run.run_id, error=refused, stored=False, cancelled=True)
    manager._carry_out(manager._feed(run.scheduler_id, not_here))
    return False


def fence_end(
    gate: ClusterGate, run: RunRecord, report: Callable[[str], None]
) -> tuple[RunRecord, bool]:
    """Write ``run``'s end under its lease token; a refused or unconfirmed write marks it
    fenced (True): its end is then not stored (``keep_fenced``)."""
    written = True if run.outcome is None else gate.record_end(run.run_id, run.outcome.value)
    if written:
        return run, False
    if written is None:  # the lease may be another host's by now: never overwrite its mark
        report(f"run {run.run_id} of {run.scheduler_id}: the cluster did not confirm its end")
    else:
        report(f"run {run.run_id} of {run.scheduler_id} was fenced: its end was refused")
    fenced = replace(
        run, outcome=Outcome.INTERRUPTED, error=FENCED_ERROR.format(scheduler=run.scheduler_id)
    )
    return fenced, True


class MarksInterrupted(Protocol):
    """What ``keep_fenced`` needs of the store (``store.protocols.RunHistory``)."""

    def mark_interrupted(self, run_id: str, *, ended_at: datetime, error: str | None) -> None:
        """End ``run_id`` as interrupted unless it ended already."""
        ...


def keep_fenced(store: MarksInterrupted, run: RunRecord, report: Callable[[str], None]) -> bool:
    """Store a fenced run as ``interrupted`` only where nobody ended it yet: in a shared
    store the new owner's mark stays, and the refused end is never written. False when
    the store failed (reported)."""
    try:
        store.mark_interrupted(
            run.run_id, ended_at=run.ended_at or datetime.now(UTC), error=run.error
        )
    except Exception as error:
        report(f"could not record the fenced end of run {run.run_id}: {error}")
        return False
    report(f"run {run.run_id} of {run.scheduler_id} kept as interrupted: its end was not stored")
    return True


def share_settings(
    gate: ClusterGate,
    scheduler_id: str,
    overrides: Mapping[str, Any],
    report: Callable[[str], None],
) -> None:
    """Share a settings change made here; a failure is reported (it holds on this host)."""
    try:
        gate.share_settings(scheduler_id, overrides)
    except BackendError as error:
        report(f"the settings of {scheduler_id} changed here but not on the other hosts: {error}")


def manager_gate(manager: Manager) -> str | None:
    """The host name of ``manager``'s gate (None without one)."""
    return None if manager._gate is None else manager._gate.host


def hosted_status(gate: ClusterGate | None, status: SchedulerStatus) -> SchedulerStatus:
    if gate is None:
        return status
    return gate.shown(status)


def hosted_run(gate: ClusterGate | None, run: RunRecord) -> RunRecord:
    """A run of the local store is this host's; a shared store names the host itself."""
    if gate is None or run.host is not None:
        return run
    return replace(run, host=gate.host)


class ManagerHooks:
    """``GateHooks`` on a ``Manager``."""

    def __init__(self, manager: Manager) -> None:
        self._manager = manager
        # Runs another host left open, found at a takeover and not marked yet (the store
        # failed), by run ID; and the schedulers taken whose runs could not be read yet.
        self._to_mark: dict[str, RunRecord] = {}
        self._to_read: set[str] = set()
        self._failing = False  # reported once a streak, not at every poll
        self._marking = threading.Lock()

    def leases_taken(self, scheduler_ids: list[str]) -> bool:
        with self._marking:
            self._read_left(scheduler_ids)
            self._mark_left()
            done = not self._to_mark and not self._to_read
            if done and self._failing:
                self._manager._report("the runs left by another host are marked now")
            self._failing = not done
            return done

    def _read_left(self, scheduler_ids: list[str]) -> None:
        """Under ``_marking``: find the runs of ``scheduler_ids`` (and of those still held
        whose runs could not be read before) another host left open."""
        manager, gate = self._manager, self._manager._gate
        # A lease lost since: its runs are its new owner's to mark.
        wanted = {sid for sid in self._to_read if gate is None or gate.owns(sid)}
        wanted.update(scheduler_ids)
        self._to_read = set()
        if not wanted:
            return
        here = manager_gate(manager)
        try:
            unfinished = manager._store.unfinished_runs()
        except Exception as error:  # kept: the next poll reads them again
            self._to_read = wanted
            self._failed(f"could not read the runs left by another host: {error}")
            return
        for left in unfinished:
            run = left.run
            if run.scheduler_id in wanted and run.host != here:
                self._to_mark.setdefault(run.run_id, run)

    def _mark_left(self) -> None:
        """Under ``_marking``: mark the runs found interrupted; those the store fails to
        mark are kept for the next poll. A run another host ended meanwhile keeps its end
        (``mark_interrupted`` never overwrites one)."""
        manager = self._manager
        for run in list(self._to_mark.values()):
            host = run.host or "another host"
            try:
                manager._store.mark_interrupted(
                    run.run_id, ended_at=manager._clock.now(), error=TAKEN_OVER.format(host=host)
                )
            except UnknownRun:  # gone from the store (retention): nothing left to mark
                del self._to_mark[run.run_id]
                continue
            except Exception as error:
                self._failed(f"could not mark the runs left by another host: {error}")
                continue
            del self._to_mark[run.run_id]
            manager._report(
                f"run {run.run_id} of {run.scheduler_id} left by {host}"
                " marked interrupted: this host took the scheduler over"
            )

    def _failed(self, line: str) -> None:
        if not self._failing:
            self._manager._report(f"{line} (tried again at each lease poll)")
            self._failing = True

    def lease_lost(self, scheduler_id: str) -> None:
        manager = self._manager
        with manager._lock:
            slot = manager._slots.get(scheduler_id)
            run = None if slot is None else slot.run
            cancel = None if run is None else manager._cancels.get(run.run_id)
        if cancel is not None:
            cancel.request(LEASE_LOST)

    def statuses(self, scheduler_ids: list[str]) -> list[SchedulerStatus]:
        manager = self._manager
        with manager._lock:
            slots = [manager._slots[sid] for sid in scheduler_ids if sid in manager._slots]
        return [machine.status_of(slot) for slot in slots]

    def settings_changed(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        manager = self._manager
        options = manager._registry.get(scheduler_id)
        settings = from_store(options, overrides)
        with manager._settings_lock:
            manager._store.set_overrides(scheduler_id, settings.overrides)
            if scheduler_id in manager._slots:  # else the manager reads them when it opens
                event = machine.SettingsChanged(settings=settings.effective)
                manager._carry_out(manager._feed(scheduler_id, event))

    def run_missed(self, scheduler_id: str, slot: datetime) -> None:
        manager = self._manager
        run_id = uuid.uuid4().hex[:16]
        with manager._lock:
            state = manager._slots.get(scheduler_id)
            if (
                state is None
                or not manager._config.catch_up_missed_cron
                or state.state is SchedulerState.STOPPED
                or state.settings.disabled
                or state.run is not None
            ):
                return
            manager._planned[run_id] = slot  # the slot its claim names
        execute = machine.Execute(actor=MISSED_ACTOR, run_id=run_id)
        with contextlib.suppress(SupervisorError):  # a run began meanwhile, or shutdown
            manager._carry_out(manager._command(scheduler_id, execute))

    def obey(self, scheduler_id: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        manager = self._manager
        actor = str(payload.get("actor", "cluster"))
        _obeying.active = True
        try:
            if kind == EXECUTE:
                return {"ok": True, "run_id": manager.execute(scheduler_id, actor=actor)}
            reason = payload.get("reason")
            reason = None if reason is None else str(reason)
            if kind == START:
                manager.start(scheduler_id, actor=actor)
            elif kind == STOP:
                manager.stop(scheduler_id, actor=actor, reason=reason)
            elif kind == PAUSE:
                until = datetime.fromisoformat(str(payload.get("until")))
                manager.pause(scheduler_id, actor=actor, until=until, reason=reason)
            elif kind == ACTION:
                action_id = str(payload.get("action_id"))
                result = manager.run_action(scheduler_id, action_id, actor=actor)
                return {"ok": True, "result": result}
            else:
                return {"ok": False, "error": f"unknown command {kind!r}"}
            return {"ok": True}
        except AlreadyRunning as error:
            return {
                "ok": False,
                "error": str(error),
                "error_type": "AlreadyRunning",
                "run_id": error.run_id,
            }
        except SupervisorError as error:
            return {"ok": False, "error": str(error), "error_type": type(error).__name__}
        except ValueError as error:  # a pause's time that is no time
            return {"ok": False, "error": str(error)}
        finally:
            _obeying.active = False


__all__ = [
    "ClusterGate",
    "FencedRuns",
    "GateHooks",
    "ManagerHooks",
    "admit_launch",
    "fence_end",
    "hosted_run",
    "hosted_status",
    "keep_fenced",
    "route",
]
