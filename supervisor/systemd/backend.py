"""The systemd backend: the use cases over ``systemctl`` and ``journalctl``.

systemd runs the schedulers (one ``.service`` each, a ``.timer`` for the timed kinds,
and for SCHEDULE a second one, the start timer: see ``units``); this backend reads and
steers them:

- **status** from one ``systemctl show --timestamp=unix`` of the service and the timers:
  running while the service is ``activating``/``active``/``deactivating`` (its
  ``InvocationID`` is the run ID); else disabled (settings), paused (a timer waiting:
  for SCHEDULE the repeat timer or the start timer), or stopped (timers inactive or
  elapsed; a MANUAL scheduler stopped by an operator, remembered in the store).
  Last started/completed from ``ExecMainStartTimestamp``/``ExecMainExitTimestamp``,
  next planned from ``NextElapseUSecRealtime`` (calendar timers) or
  ``NextElapseUSecMonotonic`` (the others, converted to wall time) of whichever timer
  is armed, last outcome from ``Result`` and ``ExecMainCode``/``ExecMainStatus`` (see
  ``outcome_of_exit``);
- **start** = start the timer (restart it if it has elapsed: a ONE_SHOT runs again);
  for SCHEDULE, unless a timer is armed already: start the repeat timer, then (re)start
  the start timer, so the first run comes ``start_delay`` later and the pauses follow;
  **stop** = stop the timers, then the service, waiting for the run to end (it gets
  SIGTERM, ``exec`` cancels it; systemd SIGKILLs it after ``TimeoutStopSec=``);
  **execute** = ``systemctl start --no-block`` of the service, refused with
  ``AlreadyRunning`` naming the invocation while a run is active; the run ID is the new
  ``InvocationID``;
- **settings** = a drop-in ``<timer>.d/`` per timer that restates every trigger (and
  one under ``<service>.d/`` for the timeout), next to the unit file in use, then
  ``daemon-reload`` and a restart of a waiting timer; ``disabled`` also disables and
  stops the timers. SCHEDULE: the reload alone re-plans the waiting repeat timer (next
  run = end of the last one + the new pause, at once if that has passed; measured on
  252), and only a start timer that still waits is restarted: restarting an elapsed one
  would run the scheduler once more. Overrides are stored too, so ``find_settings``
  shows them. Reset removes the drop-ins. The store comes first: if it cannot be
  written nothing is touched; if applying then fails, the earlier files come back, the
  timers are followed back to the earlier settings, and the earlier overrides are
  stored again;
- **logs** and **runs** from ``journalctl -o json --all`` (without ``--all``, fields over
  4 KiB come back null): our records carry ``SCHEDULER_ID``; systemd's messages about
  the service carry ``UNIT``. One run per invocation ID. Who pressed Execute Now is
  read from the audit trail (the use cases record ``run <id>``).
- **decisions**: who stopped or disabled a scheduler and why is kept in the store and
  shown while it holds. A time-boxed **pause** disables and stops the timers and writes
  ``<stem>:resume.timer`` and its service next to the units, enabled
  (``units.render_resume_units``, ``resume``), which start them at its end, as Start
  would; the pause is stored and shown (state stopped, its end) while that timer is
  there, so it outlives restarts of the Admin Center and reboots (and resumes at boot if
  its end passed meanwhile). Start (resume) and Stop remove its units and enable the
  timers again, Disable removes them. A MANUAL scheduler's pause is the stored decision
  alone, until its end;
- **retries**: the retries drop-in (``units.render_retry_dropin``) runs
  ``systemd.retry`` after each run, which plans the next try with the transient
  ``<stem>:retry.timer`` (described ``Retry k of N of scheduler ID``: ``status`` shows
  ``retry k of N`` and its time from it) and logs the ``run_retry`` event that makes a
  run's trigger ``retry``. Stop, Disable, a pause and setting ``retries`` to 0 drop a
  planned retry; so does a reboot (transient), as a restart of the manager does.

Every command goes through one ``CommandRunner`` (a callable), so tests can feed it
canned ``systemctl``/``journalctl`` output. Times from systemd are read in UTC
(``TZ=UTC`` for every command).

Unit names and the settings drop-ins come from ``units`` (``TemplateLayout``).

Needs ``systemd-run``; as root, systemd 252's also works without a D-Bus daemon (seen in
the tests' namespaced systemd, where ``dbus.socket`` is masked).

May import ``definitions``, ``records``, ``registry``, ``store``, ``journal``, ``units``,
``execone`` (exit codes), ``exits`` (a command's failure), ``launcher`` (custom actions),
``clock``, ``errors``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from supervisor.core.clock import Clock, SystemClock
from supervisor.core.definitions import Command, Kind, Options, Settings
from supervisor.core.errors import (
    ActionFailed,
    AlreadyRunning,
    BackendError,
    StoreError,
    UnknownAction,
    UnknownRun,
)
from supervisor.core.records import (
    Decision,
    DecisionKind,
    LogQuery,
    LogRecord,
    LogsFound,
    Outcome,
    RunRecord,
    SchedulerStatus,
    State,
    Trigger,
    default_trigger,
)
from supervisor.core.registry import Registry
from supervisor.core.settings import EffectiveSettings, from_store
from supervisor.runs.exits import command_failure
from supervisor.store.sqlite import SqliteStore
from supervisor.systemd import journal, units
from supervisor.systemd.resume import remove_pause_units
from supervisor.systemd.systemctl import (
    _CLD_DUMPED,
    _CLD_EXITED,
    _CLD_KILLED,
    COMMAND_TIMEOUT,
    RESUME_ROLE,
    RETRY_ROLE,
    CommandRunner,
    Completed,
    Systemd,
    describe_exit,
    outcome_of_exit,
    parse_retry_description,
    parse_show,
    parse_timespan_usec,
    parse_timestamp,
    retry_description,
    run_command,
    transient_unit,
)

__all__ = [  # the command seam lives in ``systemctl``; these are its names here too
    "COMMAND_TIMEOUT",
    "RESUME_ROLE",
    "RETRY_ROLE",
    "CommandRunner",
    "Completed",
    "DropIn",
    "Systemd",
    "SystemdBackend",
    "TemplateLayout",
    "UnitLayout",
    "describe_exit",
    "outcome_of_exit",
    "parse_retry_description",
    "parse_show",
    "parse_timespan_usec",
    "parse_timestamp",
    "retry_description",
    "run_command",
    "transient_unit",
    "write_atomic",
]

EXECUTE_WAIT_SECONDS: Final = 15.0
ACTION_TIMEOUT: Final = timedelta(seconds=60)
STOPPED_META: Final = "systemd.stopped:"
# The runs (invocation IDs, newest last) a Stop asked to end: they ended CANCELLED, as
# under the manager, whatever their exit (a command that traps SIGTERM exits 143).
STOP_ASKED_META: Final = "systemd.stop-asked:"
STOP_ASKED_KEPT: Final = 50
STOPPED_RUN_ERROR: Final = "cancelled: the run was stopped"
RUNNING_STATES: Final = frozenset({"activating", "active", "deactivating", "reloading"})
# MESSAGE_IDs of systemd's messages about a unit (sd-messages.h).
MESSAGE_JOB_START: Final = "7d4958e842da4a758f6c1cdc7b36dcc5"
MESSAGE_PROCESS_EXIT: Final = "98e322203f7a4ed290d09fe03c09fe15"
MESSAGE_UNIT_FAILURE: Final = "d9b373ed55a64feb8242e02dbe79a49c"
MESSAGE_UNIT_SUCCESS: Final = "7ad2d189f7e94e70a38c781354912448"
RUN_MESSAGES: Final = (
    MESSAGE_JOB_START,
    MESSAGE_PROCESS_EXIT,
    MESSAGE_UNIT_FAILURE,
    MESSAGE_UNIT_SUCCESS,
)
# systemd's messages about the service shown among the logs: notice and worse
# ("Main process exited, code=killed", "Failed with result 'timeout'").
SYSTEMD_LOG_PRIORITY: Final = 5
SERVICE_PROPERTIES: Final = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "InvocationID",
    "ExecMainStartTimestamp",
    "ExecMainExitTimestamp",
    "ExecMainCode",
    "ExecMainStatus",
    "FragmentPath",
    "DropInPaths",
    "MainPID",
)
TIMER_PROPERTIES: Final = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "NextElapseUSecRealtime",
    "NextElapseUSecMonotonic",
    "LastTriggerUSec",
    "UnitFileState",
    "FragmentPath",
    "DropInPaths",
    "Description",
)
_ENABLED_STATES: Final = frozenset({"enabled", "enabled-runtime"})
_RUN_ID = re.compile(r"[A-Za-z0-9._:-]+")
_EXECUTE_RUN = re.compile(r"run ([A-Za-z0-9._:-]+)")


# -- which units a scheduler has ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DropIn:
    """A drop-in file: ``unit`` is the unit it changes, ``name`` the file in ``<unit>.d/``."""

    unit: str
    name: str
    text: str


class UnitLayout(Protocol):
    """How the units of an app are named, and the drop-ins that carry settings."""

    def service_name(self, options: Options) -> str: ...

    def timer_name(self, options: Options) -> str | None:
        """None for kinds without a timer (MANUAL). For SCHEDULE: the repeat timer."""
        ...

    def start_timer_name(self, options: Options) -> str | None:
        """SCHEDULE's start timer (fires once, ``start_delay`` after it starts); None
        for the other kinds."""
        ...

    def settings_dropins(self, options: Options, settings: Settings) -> list[DropIn]:
        """The drop-ins that make ``options``' units follow ``settings``."""
        ...

    def resume_units(
        self, options: Options, *, until: datetime, runtime: bool
    ) -> list[units.UnitFile]:
        """The timer and service that end a timed pause of ``options`` at ``until``
        (``units.render_resume_units``); ``runtime``: its timers live in ``/run``."""
        ...


class TemplateLayout:
    """The ``UnitLayout`` of the units ``supervisor.systemd.units`` renders with ``prefix``."""

    def __init__(self, prefix: str, *, retry_handler: units.RetryHandler | None = None) -> None:
        """``retry_handler``: how the retries drop-in runs ``systemd.retry`` (default:
        this interpreter and this package)."""
        self.prefix = units.check_prefix(prefix)
        self.retry_handler = retry_handler or units.RetryHandler(
            python=sys.executable, package_dir=str(Path(__file__).resolve().parents[2])
        )

    def service_name(self, options: Options) -> str:
        return units.unit_names(self.prefix, options.id)[0]

    def timer_name(self, options: Options) -> str | None:
        if options.kind is Kind.MANUAL:
            return None
        return units.unit_names(self.prefix, options.id)[1]

    def start_timer_name(self, options: Options) -> str | None:
        if options.kind is not Kind.SCHEDULE:
            return None
        return units.start_timer_name(self.prefix, options.id)

    def resume_units(
        self, options: Options, *, until: datetime, runtime: bool
    ) -> list[units.UnitFile]:
        timers = [
            name
            for name in (self.timer_name(options), self.start_timer_name(options))
            if name is not None
        ]
        return units.render_resume_units(
            options,
            service=self.service_name(options),
            timers=timers,
            until=until,
            handler=self.retry_handler,
            runtime=runtime,
        )

    def settings_dropins(self, options: Options, settings: Settings) -> list[DropIn]:
        service, timer = units.unit_names(self.prefix, options.id)
        out = [
            DropIn(
                unit=service,
                name=units.SETTINGS_DROPIN_NAME,
                text=units.render_service_dropin(options, settings),
            )
        ]
        if options.kind is not Kind.MANUAL:
            out.append(
                DropIn(
                    unit=timer,
                    name=units.SETTINGS_DROPIN_NAME,
                    text=units.render_timer_dropin(options, settings),
                )
            )
        if options.kind is Kind.SCHEDULE:
            out.append(
                DropIn(
                    unit=units.start_timer_name(self.prefix, options.id),
                    name=units.SETTINGS_DROPIN_NAME,
                    text=units.render_start_timer_dropin(options, settings),
                )
            )
        retry = units.render_retry_dropin(
            options, settings, service=service, handler=self.retry_handler
        )
        if retry is not None:
            out.append(DropIn(unit=service, name=units.RETRY_DROPIN_NAME, text=retry))
        return out


# -- the backend --------------------------------------------------------------------------


@dataclass(slots=True)
class _Units:
    options: Options
    service: str
    timer: str | None
    start_timer: str | None = None

    @property
    def timers(self) -> list[str]:
        """The timers, the repeat timer first."""
        return [name for name in (self.timer, self.start_timer) if name is not None]

    @property
    def resume_timer(self) -> str:
        """The timer that ends a timed pause (``units.render_resume_units``)."""
        return transient_unit(self.service, RESUME_ROLE) + ".timer"

    @property
    def retry_timer(self) -> str:
        """The transient timer that starts a planned retry (``systemd-run``)."""
        return transient_unit(self.service, RETRY_ROLE) + ".timer"

    @property
    def retry_service(self) -> str:
        """The retry timer's service, ``active (exited)`` once the timer has fired."""
        return transient_unit(self.service, RETRY_ROLE) + ".service"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Shown:
    """``systemctl show`` of one scheduler's units (None: it has no such unit); ``resume``
    and ``retry``: its transient timers (``LoadState=not-found`` while there are none)."""

    service: dict[str, str]
    timer: dict[str, str] | None
    start_timer: dict[str, str] | None
    resume: dict[str, str] = dataclasses.field(default_factory=dict)
    retry: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def timers(self) -> list[dict[str, str]]:
        return [props for props in (self.timer, self.start_timer) if props is not None]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitLocation:
    """Where a scheduler's unit files are: ``persistent`` (/etc) or ``runtime`` (/run)."""

    scheduler_id: str
    service_path: str | None
    timer_path: str | None
    kind: str  # "persistent", "runtime", "other" or "missing"
    start_timer_path: str | None = None


def location_kind(path: str | None) -> str:
    if not path:
        return "missing"
    if path.startswith("/etc/"):
        return "persistent"
    if path.startswith("/run/"):
        return "runtime"
    return "other"


@dataclass(slots=True)
class _Run:
    """What the journal tells about one invocation (a run)."""

    run_id: str
    started_at: datetime | None = None
    first_seen: datetime | None = None
    trigger: str | None = None
    ended_at: datetime | None = None
    outcome: Outcome | None = None
    error: str | None = None
    exit_code: int | None = None
    exit_status: int | None = None
    unit_result: str | None = None
    succeeded: bool = False
    attempt: int = 0  # a retry's number (``run_retry`` event), 0 for a first try


class SystemdBackend:
    """Implements ``backend.Backend`` over systemd; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        *,
        store: SqliteStore,
        layout: UnitLayout,
        systemd: Systemd | None = None,
        clock: Clock | None = None,
        app_spec: str | None = None,
        action_python: str | None = None,
        action_cwd: str | None = None,
        action_sys_path: Sequence[str] = (),
    ) -> None:
        self._registry = registry
        self._store = store
        self._layout = layout
        self._systemd = systemd or Systemd()
        self._clock = clock or SystemClock()
        self._app_spec = app_spec
        self._action_python = action_python
        self._action_cwd = action_cwd
        self._action_sys_path = tuple(action_sys_path)
        self._lock = threading.RLock()

    # -- helpers ----------------------------------------------------------------------------

    def _units(self, scheduler_id: str) -> _Units:
        options = self._registry.get(scheduler_id)
        return _Units(
            options=options,
            service=self._layout.service_name(options),
            timer=self._layout.timer_name(options),
            start_timer=self._layout.start_timer_name(options),
        )

    def _settings(self, options: Options) -> Settings:
        return from_store(options, self._store.overrides(options.id)).effective

    def _show(self, targets: Sequence[_Units]) -> list[_Shown]:
        names: list[str] = []
        for unit in targets:
            names += [unit.service, *unit.timers, unit.resume_timer, unit.retry_timer]
        properties = sorted(set(SERVICE_PROPERTIES) | set(TIMER_PROPERTIES))
        shown = iter(self._systemd.show(names, properties))
        return [
            _Shown(
                service=next(shown),
                timer=next(shown) if unit.timer is not None else None,
                start_timer=next(shown) if unit.start_timer is not None else None,
                resume=next(shown),
                retry=next(shown),
            )
            for unit in targets
        ]

    def _realtime_from_monotonic(self, usec: int) -> datetime:
        now_wall, now_mono = self._clock.now(), self._clock.monotonic()
        return now_wall - timedelta(seconds=now_mono - usec / 1_000_000)

    def _next_elapse(self, timers: Iterable[Mapping[str, str]]) -> datetime | None:
        """The earliest next elapse of the waiting ``timers``."""
        candidates: list[datetime] = []
        for timer in timers:
            if timer.get("ActiveState") != "active" or timer.get("SubState") != "waiting":
                continue
            realtime = parse_timestamp(timer.get("NextElapseUSecRealtime"))
            if realtime is not None:
                candidates.append(realtime)
            monotonic = parse_timespan_usec(timer.get("NextElapseUSecMonotonic"))
            if monotonic:
                candidates.append(self._realtime_from_monotonic(monotonic))
        return min(candidates, default=None)

    def _stopped_manual(self, scheduler_id: str) -> bool:
        return self._store.get_meta(STOPPED_META + scheduler_id) == "1"

    def _stop_asked(self, scheduler_id: str) -> list[str]:
        """The runs a Stop asked to end (invocation IDs, newest last)."""
        return (self._store.get_meta(STOP_ASKED_META + scheduler_id) or "").split()

    def _note_stop_asked(self, unit: _Units) -> None:
        """Before ``systemctl stop``: the run in progress (if any) ends cancelled."""
        (service,) = self._systemd.show([unit.service], ("InvocationID", "ActiveState"))
        run_id = service.get("InvocationID", "")
        if not run_id or service.get("ActiveState") not in RUNNING_STATES:
            return
        asked = [r for r in self._stop_asked(unit.options.id) if r != run_id]
        asked = [*asked, run_id][-STOP_ASKED_KEPT:]
        self._store.set_meta(STOP_ASKED_META + unit.options.id, " ".join(asked))

    def _status(self, unit: _Units, shown: _Shown) -> SchedulerStatus:
        options = unit.options
        settings = self._settings(options)
        service = shown.service
        running = service.get("ActiveState") in RUNNING_STATES
        paused = None if settings.disabled else self._pause_in_force(unit, shown)
        last_error: str | None = None
        if running:
            state = State.RUNNING
        elif settings.disabled:
            state = State.DISABLED
        elif unit.timer is None:
            stopped = self._stopped_manual(options.id) or paused is not None
            state = State.STOPPED if stopped else State.PAUSED
        elif shown.timer is None or shown.timer.get("LoadState") != "loaded":
            state = State.STOPPED
        elif any(_armed(timer) for timer in shown.timers) or _waiting(shown.retry):
            state = State.PAUSED
        else:
            state = State.STOPPED
        retry = None
        if not running and _waiting(shown.retry):
            # "retry 1 of 2": the retry timer's, when it comes before the timers' next run
            retry = parse_retry_description(shown.retry.get("Description"))
            others = self._next_elapse(shown.timers)
            mine = self._next_elapse([shown.retry])
            if others is not None and mine is not None and others < mine:
                retry = None
        if service.get("LoadState") != "loaded":
            last_error = f"unit {unit.service} is not installed ({service.get('LoadState')})"
        started = parse_timestamp(service.get("ExecMainStartTimestamp"))
        exited = parse_timestamp(service.get("ExecMainExitTimestamp"))
        outcome: Outcome | None = None
        completed: datetime | None = None
        if exited is not None and not running:
            completed = exited
            outcome, _, _ = outcome_of_exit(
                result=service.get("Result", ""),
                code=_int(service.get("ExecMainCode")),
                status=_int(service.get("ExecMainStatus")),
                command_runner=isinstance(options.runner, Command),
            )
            if service.get("InvocationID", "") in self._stop_asked(options.id):
                outcome = Outcome.CANCELLED
                last_error = last_error or STOPPED_RUN_ERROR
            if outcome is not Outcome.SUCCEEDED and last_error is None:
                last_error = self._run_error(options, service)
        elif running:
            previous = self._last_finished(unit, service)
            if previous is not None:
                completed, outcome = previous.ended_at, previous.outcome
                last_error = last_error or previous.error
        return SchedulerStatus(
            id=options.id,
            name=options.name,
            description=options.description,
            kind=options.kind,
            state=state,
            settings=settings,
            defaults=options.defaults,
            current_run_id=(service.get("InvocationID") or None) if running else None,
            last_started_at=started,
            last_completed_at=completed,
            next_planned_at=None if running else self._next_elapse([*shown.timers, shown.retry]),
            last_outcome=outcome,
            last_error=last_error,
            last_actor=self._store.last_actor(options.id),
            decision=self._decision(options.id, state, paused),
            retry_attempt=retry[0] if retry is not None else 0,
            retries=retry[1] if retry is not None else settings.retries,
            actions=tuple((a.id, a.title) for a in options.actions),
            # systemd keeps each unit in its own cgroup and stops all of it.
            containment="systemd unit",
            current_pid=(_int(service.get("MainPID")) or None) if running else None,
        )

    def _last_finished(self, unit: _Units, service: Mapping[str, str]) -> RunRecord | None:
        """The newest finished run, from the journal (systemd forgets it while one runs)."""
        fetch = 16
        entries = self._systemd.journal("-n", str(fetch), *self._run_matches(unit))
        runs = self._assemble(unit, entries, service, complete=len(entries) < fetch)
        return next((run for run in runs if run.outcome is not None), None)

    def _run_error(self, options: Options, service: Mapping[str, str]) -> str | None:
        """The error of the service's last run: our ``run_end`` event, else its exit."""
        invocation = service.get("InvocationID")
        if invocation:
            ends = self._systemd.journal(
                f"SCHEDULER_ID={options.id}",
                f"RUN_ID={invocation}",
                f"SUPERVISOR_EVENT={journal.EVENT_RUN_END}",
                "-n",
                "1",
            )
            for entry in ends:
                error = entry.get("SUPERVISOR_ERROR")
                if error:
                    return error
        code, status = _int(service.get("ExecMainCode")), _int(service.get("ExecMainStatus"))
        result = service.get("Result", "")
        if result == "timeout":
            return "timed out (systemd's TimeoutStartSec)"
        if code == _CLD_EXITED and status != 0 and isinstance(options.runner, Command):
            return command_failure(status)
        if code in (_CLD_EXITED, _CLD_KILLED, _CLD_DUMPED):
            text = describe_exit(code, status)
            return text[0].upper() + text[1:]
        return f"systemd result: {result}" if result else None

    # -- Backend: reading -------------------------------------------------------------------

    def status_version(self) -> None:
        return None  # systemd tells no version: statuses are read every time

    def statuses(self) -> list[SchedulerStatus]:
        units = [self._units(options.id) for options in self._registry]
        return [
            self._status(unit, shown) for unit, shown in zip(units, self._show(units), strict=True)
        ]

    def status(self, scheduler_id: str) -> SchedulerStatus:
        unit = self._units(scheduler_id)
        (shown,) = self._show([unit])
        return self._status(unit, shown)

    def location(self, scheduler_id: str) -> UnitLocation:
        """Where the unit files in use live (units in /etc win over /run)."""
        unit = self._units(scheduler_id)
        (shown,) = self._show([unit])
        service_path = shown.service.get("FragmentPath") or None
        timer_path = None if shown.timer is None else shown.timer.get("FragmentPath") or None
        start_path = (
            None if shown.start_timer is None else shown.start_timer.get("FragmentPath") or None
        )
        kinds = {location_kind(service_path)}
        if unit.timer is not None:
            kinds.add(location_kind(timer_path))
        if unit.start_timer is not None:
            kinds.add(location_kind(start_path))
        kind = kinds.pop() if len(kinds) == 1 else "mixed"
        return UnitLocation(
            scheduler_id=scheduler_id,
            service_path=service_path,
            timer_path=timer_path,
            kind=kind,
            start_timer_path=start_path,
        )

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        self._registry.get(scheduler_id)
        return self._store.overrides(scheduler_id)

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        if query.scheduler_id is not None:
            scheduler_ids = [query.scheduler_id]
        elif query.run_id is not None:
            try:
                scheduler_ids = [self.run(query.run_id).scheduler_id]
            except UnknownRun:
                return []
        else:
            scheduler_ids = [options.id for options in self._registry]
        units = [self._units(scheduler_id) for scheduler_id in scheduler_ids]
        after, before, limit = query.after, query.before, query.limit
        if limit <= 0 or not units:
            return []
        since = query.since
        if after is not None:  # one --since: journalctl keeps only the last one given
            resumed = datetime.fromtimestamp(after / 1_000_000, UTC)
            since = resumed if since is None else max(since, resumed)
        args = journal.journalctl_search(
            dataclasses.replace(query, since=since),
            units=[(unit.options.id, unit.service) for unit in units],
        )

        def wanted(found: list[tuple[int, LogRecord]]) -> list[tuple[int, LogRecord]]:
            if not query.searches:
                return found
            return [(cursor, record) for cursor, record in found if query.matches(record)]

        if after is not None:
            read = [
                (c, r)
                for c, r in self._records(self._systemd.journal(*args))
                if c > after and (before is None or c < before)
            ]
            found = wanted(read)[:limit]
            examined = found[-1][0] if len(found) == limit else max([after, *(c for c, _ in read)])
            return LogsFound(found, scanned_to=examined)
        if before is not None:
            args = [f"--until=@{before / 1_000_000:.6f}", *args]
        fetch = limit * 2 + 20
        while True:
            entries = self._systemd.journal("-n", str(fetch), *args)
            found = wanted(
                [(c, r) for c, r in self._records(entries) if before is None or c < before]
            )
            if len(found) >= limit or len(entries) < fetch:
                return found[-limit:]
            fetch *= 4

    def _records(self, entries: Iterable[journal.Entry]) -> list[tuple[int, LogRecord]]:
        out: list[tuple[int, LogRecord]] = []
        for entry in entries:
            if journal.is_systemd_message(entry):
                try:
                    if int(entry.get("PRIORITY", "6")) > SYSTEMD_LOG_PRIORITY:
                        continue
                except ValueError:
                    continue
            record = journal.to_log_record(entry)
            if record is not None:
                out.append((journal.cursor_of(entry), record))
        out.sort(key=lambda item: item[0])
        return out

    def recent_runs(
        self, scheduler_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RunRecord]]:
        # one journal read for all of them (not one per unit), one ``show`` of their units
        units = [self._units(sid) for sid in dict.fromkeys(scheduler_ids)]
        if not units or limit <= 0:
            return {}
        fetch = (limit * 6 + 10) * len(units)
        ours = [
            *(f"SCHEDULER_ID={unit.options.id}" for unit in units),
            f"SUPERVISOR_EVENT={journal.EVENT_RUN_START}",
            f"SUPERVISOR_EVENT={journal.EVENT_RUN_END}",
            f"SUPERVISOR_EVENT={journal.EVENT_RUN_RETRY}",
        ]
        systemd = [
            *(f"UNIT={unit.service}" for unit in units),
            "_PID=1",
            *(f"MESSAGE_ID={m}" for m in RUN_MESSAGES),
        ]
        entries = self._systemd.journal("-n", str(fetch), *ours, "+", *systemd)
        by_id = {unit.options.id: unit for unit in units}
        by_service = {unit.service: unit.options.id for unit in units}
        grouped: dict[str, list[journal.Entry]] = {sid: [] for sid in by_id}
        for entry in entries:
            sid = entry.get("SCHEDULER_ID")
            if sid not in grouped:
                sid = by_service.get(entry.get("UNIT", ""))
            if sid is not None:
                grouped[sid].append(entry)
        complete = len(entries) < fetch
        shown = self._show(units)
        out: dict[str, list[RunRecord]] = {}
        for unit, found in zip(units, shown, strict=True):
            mine = grouped[unit.options.id]
            if mine:
                runs = self._assemble(unit, mine, found.service, complete=complete)
                out[unit.options.id] = runs[:limit]
        return out

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        unit = self._units(scheduler_id)
        if limit <= 0:
            return []
        fetch = limit * 6 + 10
        entries = self._systemd.journal("-n", str(fetch), *self._run_matches(unit))
        service = self._show([unit])[0].service
        runs = self._assemble(unit, entries, service, complete=len(entries) < fetch)
        return runs[:limit]

    def run(self, run_id: str) -> RunRecord:
        if not _RUN_ID.fullmatch(run_id):
            raise UnknownRun(f"no run with id {run_id!r}")
        entries = self._systemd.journal(
            f"RUN_ID={run_id}", "+", f"INVOCATION_ID={run_id}", "_PID=1"
        )
        for entry in entries:
            scheduler_id = entry.get("SCHEDULER_ID")
            if scheduler_id is None:
                scheduler_id = self._scheduler_of_unit(entry.get("UNIT", ""))
            if scheduler_id is not None and scheduler_id in self._registry:
                unit = self._units(scheduler_id)
                service = self._show([unit])[0].service
                relevant = [e for e in entries if journal.run_id_of(e) == run_id]
                for found in self._assemble(unit, relevant, service, complete=True):
                    if found.run_id == run_id:
                        return found
        raise UnknownRun(f"no run with id {run_id!r}")

    def _scheduler_of_unit(self, unit_name: str) -> str | None:
        for options in self._registry:
            if self._layout.service_name(options) == unit_name:
                return options.id
        return None

    def _run_matches(self, unit: _Units) -> list[str]:
        ours = [
            f"SCHEDULER_ID={unit.options.id}",
            f"SUPERVISOR_EVENT={journal.EVENT_RUN_START}",
            f"SUPERVISOR_EVENT={journal.EVENT_RUN_END}",
            f"SUPERVISOR_EVENT={journal.EVENT_RUN_RETRY}",
        ]
        systemd = [f"UNIT={unit.service}", "_PID=1", *(f"MESSAGE_ID={m}" for m in RUN_MESSAGES)]
        return [*ours, "+", *systemd]

    def _manual_runs(self, scheduler_id: str) -> dict[str, str]:
        """Run ID → who pressed Execute Now, from the audit trail."""
        out: dict[str, str] = {}
        for _, entry in self._store.audit(scheduler_id=scheduler_id, limit=1000):
            if entry.action == "execute" and entry.detail:
                match = _EXECUTE_RUN.fullmatch(entry.detail)
                if match:
                    out.setdefault(match.group(1), entry.actor)
        return out

    def _assemble(
        self,
        unit: _Units,
        entries: Sequence[journal.Entry],
        service: Mapping[str, str],
        *,
        complete: bool,
    ) -> list[RunRecord]:
        runs: dict[str, _Run] = {}
        order: list[str] = []
        for entry in entries:
            run_id = journal.run_id_of(entry)
            if not run_id:
                continue
            run = runs.get(run_id)
            if run is None:
                run = runs[run_id] = _Run(run_id=run_id)
                order.append(run_id)
            _absorb(run, entry)
        if not complete and order:
            del runs[order.pop(0)]  # the oldest may be cut off by the line limit
        manual = self._manual_runs(unit.options.id)
        stopped = frozenset(self._stop_asked(unit.options.id))
        current = (
            service.get("InvocationID") if service.get("ActiveState") in RUNNING_STATES else None
        )
        command_runner = isinstance(unit.options.runner, Command)
        records = [
            self._run_record(unit, run, manual, current, command_runner, stopped)
            for run in runs.values()
            if run.started_at is not None or run.first_seen is not None
        ]
        records.sort(key=lambda r: r.started_at, reverse=True)
        return records

    def _run_record(
        self,
        unit: _Units,
        run: _Run,
        manual: Mapping[str, str],
        current: str | None,
        command_runner: bool,
        stopped: frozenset[str] = frozenset(),
    ) -> RunRecord:
        started = run.started_at or run.first_seen
        assert started is not None
        actor = manual.get(run.run_id)
        if actor is not None:
            trigger, triggered_by = Trigger.MANUAL, actor
        elif run.attempt > 0:
            trigger, triggered_by = Trigger.RETRY, None
        else:
            trigger, triggered_by = _trigger(run.trigger, unit.options.kind), None
        exit_code: int | None = None
        signum: int | None = None
        exit_outcome: Outcome | None = None
        if run.exit_code is not None and run.exit_status is not None:
            exit_outcome, exit_code, signum = outcome_of_exit(
                result=run.unit_result or "",
                code=run.exit_code,
                status=run.exit_status,
                command_runner=command_runner,
            )
        outcome: Outcome | None
        error = run.error
        ended = run.ended_at
        if run.run_id == current:
            outcome, ended, error = None, None, None
        elif run.unit_result == "timeout":
            outcome = Outcome.TIMED_OUT
            error = error if run.outcome is Outcome.TIMED_OUT else None
            error = error or "timed out (systemd's TimeoutStartSec)"
        elif run.outcome is not None:  # what ``supervisor exec`` reported
            outcome = run.outcome
        elif exit_outcome is not None:
            outcome = exit_outcome
            if outcome is not Outcome.SUCCEEDED:
                assert run.exit_code is not None and run.exit_status is not None
                if command_runner and run.exit_code == _CLD_EXITED:
                    error = error or command_failure(run.exit_status)
                error = error or _capitalized(describe_exit(run.exit_code, run.exit_status))
        elif run.succeeded:
            outcome = Outcome.SUCCEEDED
        elif run.unit_result:
            outcome, error = Outcome.CRASHED, error or f"systemd result: {run.unit_result}"
        else:
            outcome = Outcome.INTERRUPTED
            error = error or "no end of this run was recorded (systemd or the host went down?)"
        if run.run_id in stopped and outcome is not None:
            # A Stop asked it to end: cancelled, as the manager says, whatever its exit.
            if outcome is not Outcome.CANCELLED:
                error = STOPPED_RUN_ERROR
            outcome = Outcome.CANCELLED
        if outcome is Outcome.SUCCEEDED and exit_code is None:
            exit_code = 0
        return RunRecord(
            run_id=run.run_id,
            scheduler_id=unit.options.id,
            trigger=trigger,
            triggered_by=triggered_by,
            started_at=started,
            ended_at=ended,
            outcome=outcome,
            exit_code=exit_code,
            signal=signum,
            error=error,
        )

    # -- Backend: controls ------------------------------------------------------------------

    def _decision(
        self, scheduler_id: str, state: State, paused: Decision | None
    ) -> Decision | None:
        """The decision in force: a pause while its resume waits (the state is stopped,
        or a run that began before it goes on), a stop or disable while the state says so."""
        if paused is not None:
            return paused if state in (State.STOPPED, State.RUNNING) else None
        decision = self._store.decision(scheduler_id)
        if decision is None or decision.kind is DecisionKind.PAUSED:
            return None  # a pause that has ended (or whose resume is gone)
        if decision.kind.value != state.value:
            return None  # e.g. stopped by systemd itself since, or enabled by hand
        return decision

    def _pause_in_force(self, unit: _Units, shown: _Shown) -> Decision | None:
        """The stored pause while it holds: its resume timer waits (MANUAL, which plans
        nothing anyway: until its end)."""
        decision = self._store.decision(unit.options.id)
        if decision is None or decision.kind is not DecisionKind.PAUSED or decision.until is None:
            return None
        if unit.timer is None:
            return decision if decision.until > self._clock.now() else None
        return decision if _armed(shown.resume) else None

    def _end_pause(self, unit: _Units, *, enable: bool) -> None:
        """Remove the units of a pause, if there are any (``resume.remove_pause_units``);
        with ``enable``, enable the timers the pause disabled again (they start at boot
        again, as before the pause). A transient resume timer (``systemd-run``, from an
        older version) is stopped."""
        removed = remove_pause_units(self._systemd, unit.service)
        if not removed or not enable or unit.timer is None:
            return
        shown = self._systemd.show(
            unit.timers, ("Id", "LoadState", "UnitFileState", "FragmentPath")
        )
        disabled = [
            name
            for name, props in zip(unit.timers, shown, strict=True)
            if props.get("LoadState") == "loaded" and props.get("UnitFileState") == "disabled"
        ]
        if disabled:
            runtime = location_kind(shown[0].get("FragmentPath")) == "runtime"
            self._systemd.systemctl("enable", *(["--runtime"] if runtime else []), *disabled)

    def _cancel_transient(self, *timers: str) -> None:
        """Stop those of the transient ``timers`` that are loaded (a pause's resume, a
        planned retry); the stopped ones are gone (``--collect``)."""
        shown = self._systemd.show(list(timers), ("Id", "LoadState", "ActiveState"))
        loaded = [t for t, p in zip(timers, shown, strict=True) if p.get("LoadState") == "loaded"]
        if not loaded:
            return
        done = self._systemd.systemctl("stop", *loaded, check=False)
        if done.returncode != 0:
            # One may have gone in between (fired and collected): only one that is
            # still there is a failure.
            again = self._systemd.show(loaded, ("Id", "LoadState", "ActiveState"))
            left = [
                t
                for t, p in zip(loaded, again, strict=True)
                if p.get("LoadState") == "loaded" and p.get("ActiveState") != "inactive"
            ]
            if left:
                problem = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()
                raise BackendError(f"systemctl stop {' '.join(left)} failed: {problem[-1]}")

    def start(self, scheduler_id: str, *, actor: str) -> None:
        unit = self._units(scheduler_id)
        with self._lock:
            stored = self._store.decision(scheduler_id)
            if stored is not None and stored.kind in (DecisionKind.STOPPED, DecisionKind.PAUSED):
                self._store.set_decision(scheduler_id, None)
            if unit.timer is None:
                self._store.set_meta(STOPPED_META + scheduler_id, "")
                return
            disabled = self._settings(unit.options).disabled
            self._end_pause(unit, enable=not disabled)  # Start (resume) ends a pause now
            if disabled:
                return
            (shown,) = self._show([unit])
            for name, props in zip(unit.timers, shown.timers, strict=True):
                _require_loaded(name, props)
            if any(_armed(props) for props in shown.timers):
                return  # started already (a timer waits, or its run is on)
            self._start_timers(unit, shown)

    def _start_timers(self, unit: _Units, shown: _Shown) -> None:
        """Start a scheduler whose timers are not waiting: it runs ``start_delay`` later.

        The timer (SCHEDULE: the start timer) is restarted if it has elapsed. SCHEDULE's
        repeat timer is started first, so it is active when the first run ends (only then
        does it arm); restarting it would not matter, starting is enough.
        """
        assert unit.timer is not None and shown.timer is not None
        if unit.start_timer is None:
            first, props = unit.timer, shown.timer
        else:
            assert shown.start_timer is not None
            if shown.timer.get("ActiveState") != "active":
                self._systemd.systemctl("start", unit.timer)
            first, props = unit.start_timer, shown.start_timer
        verb = "restart" if props.get("ActiveState") == "active" else "start"
        self._systemd.systemctl(verb, first)

    def stop(self, scheduler_id: str, *, actor: str, reason: str | None = None) -> None:
        unit = self._units(scheduler_id)
        with self._lock:
            if not self._settings(unit.options).disabled:  # a disable's reason stays
                decision = Decision(
                    kind=DecisionKind.STOPPED, actor=actor, at=self._clock.now(), reason=reason
                )
                self._store.set_decision(scheduler_id, decision)
            self._note_stop_asked(unit)
            if unit.timer is None:
                self._store.set_meta(STOPPED_META + scheduler_id, "1")
                self._cancel_transient(unit.retry_timer, unit.retry_service)
                self._systemd.systemctl("stop", unit.service)
            else:
                # A stop replaces a pause (its resume goes, the timers are enabled
                # again: they start at boot, as after any Stop) and drops a planned retry.
                self._end_pause(unit, enable=not self._settings(unit.options).disabled)
                self._cancel_transient(unit.retry_timer, unit.retry_service)
                self._systemd.systemctl("stop", *unit.timers, unit.service)

    def execute(self, scheduler_id: str, *, actor: str) -> str:
        unit = self._units(scheduler_id)
        with self._lock:
            service = self._show([unit])[0].service
            _require_loaded(unit.service, service)
            before = service.get("InvocationID", "")
            if service.get("ActiveState") in RUNNING_STATES:
                raise AlreadyRunning(scheduler_id, before or "unknown")
            self._systemd.systemctl("start", "--no-block", unit.service)
            deadline = time.monotonic() + EXECUTE_WAIT_SECONDS
            while True:
                (shown,) = self._systemd.show([unit.service], ("InvocationID", "ActiveState"))
                invocation = shown.get("InvocationID", "")
                if invocation and invocation != before:
                    return invocation
                if time.monotonic() >= deadline:
                    raise BackendError(
                        f"{unit.service} did not start within {EXECUTE_WAIT_SECONDS:g}s"
                    )
                time.sleep(0.02)  # polling systemd for the new invocation

    # -- Backend: settings ------------------------------------------------------------------

    def pause(
        self, scheduler_id: str, *, actor: str, until: datetime, reason: str | None = None
    ) -> None:
        """Disable and stop the timers and write the units that start them again at
        ``until`` (``resume``: ``<stem>:resume.timer``, enabled, next to the scheduler's
        units), as Start would (the start delay applies); a run in progress finishes. The
        pause is stored and holds while that timer is there: across restarts of the Admin
        Center and reboots (the disabled timers do not start at boot; the resume timer
        does, and resumes at once if ``until`` passed while the machine was down)."""
        unit = self._units(scheduler_id)
        with self._lock:
            if self._settings(unit.options).disabled:
                raise BackendError(f"{scheduler_id} is disabled: enable it instead of pausing it")
            (shown,) = self._show([unit])
            for name, props in zip(unit.timers, shown.timers, strict=True):
                _require_loaded(name, props)
            earlier = self._store.decision(scheduler_id)
            in_force = self._pause_in_force(unit, shown)
            if unit.timer is None:
                stopped = self._stopped_manual(scheduler_id)
            else:
                stopped = not any(_armed(props) for props in shown.timers)
            if stopped and in_force is None:
                stop = (
                    earlier
                    if earlier is not None and earlier.kind is DecisionKind.STOPPED
                    else None
                )
                what = "stopped" if stop is None else stop.describe()
                raise BackendError(f"{scheduler_id} is {what} — start it first, or the stop stays")
            decision = Decision(
                kind=DecisionKind.PAUSED,
                actor=actor,
                at=self._clock.now(),
                reason=reason,
                until=until,
            )
            self._store.set_decision(scheduler_id, decision)  # first: nothing touched if it fails
            written: list[Path] = []
            disabled: list[str] = []
            scope: list[str] = []
            timers_stopped = False
            try:
                self._cancel_transient(unit.retry_timer, unit.retry_service)
                if unit.timer is None:
                    return  # MANUAL plans nothing: the stored pause holds until ``until``
                assert shown.timer is not None
                self._end_pause(unit, enable=False)  # a second pause replaces the first
                fragment = shown.timer.get("FragmentPath") or ""
                if not fragment.startswith("/"):
                    raise BackendError(f"systemd does not say where {unit.timer} lives")
                runtime = location_kind(fragment) == "runtime" or any(
                    props.get("UnitFileState") == "enabled-runtime" for props in shown.timers
                )
                directory = Path(fragment).parent
                for file in self._layout.resume_units(unit.options, until=until, runtime=runtime):
                    path = directory / file.name
                    if path.exists() and path not in written:
                        raise BackendError(f"refusing to overwrite {path}: it is in the way")
                    write_atomic(path, file.text)
                    written.append(path)
                self._systemd.daemon_reload()
                scope = ["--runtime"] if runtime else []
                disabled = [
                    name
                    for name, props in zip(unit.timers, shown.timers, strict=True)
                    if props.get("UnitFileState") in _ENABLED_STATES
                ]
                if disabled:
                    self._systemd.systemctl("disable", *scope, *disabled)
                timers_stopped = True
                self._systemd.systemctl("stop", *unit.timers)
                # Last: its step runs at once, and must find the timers stopped (an end
                # that has come already starts them again).
                self._systemd.systemctl("enable", *scope, "--now", unit.resume_timer)
            except BaseException:
                with contextlib.suppress(BackendError, OSError):
                    self._end_pause(unit, enable=False)
                with contextlib.suppress(BackendError, OSError):
                    for path in written:
                        _remove(path)
                    if written:
                        self._systemd.daemon_reload()
                if disabled:
                    with contextlib.suppress(BackendError):
                        self._systemd.systemctl("enable", *scope, *disabled)
                if timers_stopped:  # they were armed: the pause is refused for a stopped one
                    with contextlib.suppress(BackendError):
                        self._systemd.systemctl("start", *unit.timers)
                with contextlib.suppress(StoreError):
                    self._store.set_decision(scheduler_id, earlier)
                raise

    def update_settings(
        self,
        scheduler_id: str,
        settings: EffectiveSettings,
        *,
        disabled_by: Decision | None = None,
    ) -> None:
        unit = self._units(scheduler_id)
        dropins = self._layout.settings_dropins(unit.options, settings.effective)
        with self._lock:
            self._store_then_apply(unit, dict(settings.overrides), settings.effective, dropins)
            if settings.effective.disabled:  # a disable ends a pause and drops a retry
                self._end_pause(unit, enable=False)
                self._cancel_transient(unit.retry_timer, unit.retry_service)
            elif not settings.effective.retries:
                self._cancel_transient(unit.retry_timer, unit.retry_service)
            if disabled_by is not None:
                self._store.set_decision(scheduler_id, disabled_by)
            elif not settings.effective.disabled:
                stored = self._store.decision(scheduler_id)
                if stored is not None and stored.kind is DecisionKind.DISABLED:
                    self._store.set_decision(scheduler_id, None)

    def reset_settings(self, scheduler_id: str) -> None:
        unit = self._units(scheduler_id)
        with self._lock:
            self._store_then_apply(unit, None, unit.options.defaults, [])
            if unit.options.defaults.disabled:  # disabled in the code: no pause either
                self._end_pause(unit, enable=False)
            if not unit.options.defaults.retries or unit.options.defaults.disabled:
                self._cancel_transient(unit.retry_timer, unit.retry_service)
            stored = self._store.decision(scheduler_id)
            disabled = stored is not None and stored.kind is DecisionKind.DISABLED
            if disabled and not unit.options.defaults.disabled:
                self._store.set_decision(scheduler_id, None)

    def _store_then_apply(
        self,
        unit: _Units,
        overrides: dict[str, Any] | None,
        settings: Settings,
        dropins: Sequence[DropIn],
    ) -> None:
        """Store ``overrides`` (None: delete them), then apply ``settings``; if applying
        fails, store the earlier overrides again (lock held). A store that cannot be
        written fails before any unit is touched."""
        scheduler_id = unit.options.id
        earlier = self._store.overrides(scheduler_id)
        previous = from_store(unit.options, earlier).effective
        if overrides is None:
            self._store.delete_overrides(scheduler_id)
        else:
            self._store.set_overrides(scheduler_id, overrides)
        try:
            self._apply(unit, settings, dropins, previous=previous)
        except BaseException as error:
            try:
                if earlier:
                    self._store.set_overrides(scheduler_id, earlier)
                else:
                    self._store.delete_overrides(scheduler_id)
            except StoreError as undo:
                raise BackendError(
                    f"applying the settings of {scheduler_id} failed ({error}) and the "
                    f"earlier ones could not be stored again ({undo})"
                ) from error
            raise

    def _dropin_dirs(self, unit: _Units) -> dict[str, Path]:
        """Each unit's ``<unit>.d`` directory next to the unit file in use."""
        names = [unit.service, *unit.timers]
        shown = self._systemd.show(names, ("Id", "LoadState", "FragmentPath"))
        out: dict[str, Path] = {}
        for name, props in zip(names, shown, strict=True):
            _require_loaded(name, props)
            fragment = props.get("FragmentPath")
            if not fragment:
                raise BackendError(f"systemd does not say where {name} lives")
            out[name] = Path(fragment).parent / f"{name}.d"
        return out

    def _apply(
        self, unit: _Units, settings: Settings, dropins: Sequence[DropIn], *, previous: Settings
    ) -> None:
        """Replace the unit's settings drop-ins by ``dropins``; reload; apply to the timer."""
        directories = self._dropin_dirs(unit)
        ours = self._layout.settings_dropins(unit.options, unit.options.defaults)
        names = {(d.unit, d.name) for d in [*ours, *dropins]}
        names.add((unit.service, units.RETRY_DROPIN_NAME))  # there only while retries are set
        wanted = {(d.unit, d.name): d.text for d in dropins}
        saved: dict[Path, str | None] = {}
        try:
            for unit_name, file_name in sorted(names):
                if unit_name not in directories:
                    raise BackendError(f"a drop-in for {unit_name}, not one of {unit.service}'s")
                path = directories[unit_name] / file_name
                saved[path] = _read_or_none(path)
                text = wanted.get((unit_name, file_name))
                if text is None:
                    _remove(path)
                else:
                    write_atomic(path, text)
            self._systemd.daemon_reload()
            self._follow_settings(unit, settings, previous)
        except BaseException:
            for path, old in saved.items():
                with contextlib.suppress(OSError):
                    if old is None:
                        _remove(path)
                    else:
                        write_atomic(path, old)
            with contextlib.suppress(BackendError):
                self._systemd.daemon_reload()
                # Timers stopped, started or disabled for ``settings`` follow back.
                self._follow_settings(unit, previous, settings)
            raise

    def _follow_settings(self, unit: _Units, settings: Settings, previous: Settings) -> None:
        """After a reload: disabling disables and stops the timers, enabling enables and
        starts them again (a start: the first run ``start_delay`` later), and a waiting
        timer restarts so the new triggers apply at once, except SCHEDULE's repeat timer,
        which the reload has re-planned already (see the module docstring)."""
        if unit.timer is None:
            return
        (shown,) = self._show([unit])
        assert shown.timer is not None
        timer = shown.timer
        file_state = timer.get("UnitFileState", "")
        runtime = file_state == "enabled-runtime" or (
            location_kind(timer.get("FragmentPath")) == "runtime"
        )
        scope = ["--runtime"] if runtime else []
        pairs = list(zip(unit.timers, shown.timers, strict=True))
        if settings.disabled:
            enabled = [n for n, p in pairs if p.get("UnitFileState") in _ENABLED_STATES]
            if enabled:
                self._systemd.systemctl("disable", *scope, *enabled)
            active = [n for n, p in pairs if p.get("ActiveState") != "inactive"]
            if active:
                self._systemd.systemctl("stop", *active)
        elif previous.disabled:
            disabled = [n for n, p in pairs if p.get("UnitFileState") == "disabled"]
            if disabled:
                self._systemd.systemctl("enable", *scope, *disabled)
            if unit.start_timer is None:
                self._systemd.systemctl("restart", unit.timer)
            else:
                self._start_timers(unit, shown)
        elif unit.start_timer is None:
            if _waiting(timer):
                self._systemd.systemctl("restart", unit.timer)
        elif shown.start_timer is not None and _waiting(shown.start_timer):
            self._systemd.systemctl("restart", unit.start_timer)

    # -- custom actions ---------------------------------------------------------------------

    def run_action(self, scheduler_id: str, action_id: str, *, actor: str) -> str:
        options = self._registry.get(scheduler_id)
        if options.action(action_id) is None:
            raise UnknownAction(f"scheduler {scheduler_id!r} has no action {action_id!r}")
        if self._app_spec is None:
            raise BackendError("custom actions need the app's MODULE:ATTR")
        from supervisor.runs.launcher import FreshInterpreterLauncher, Job

        launcher = FreshInterpreterLauncher(
            self._app_spec,
            python=self._action_python,
            cwd=self._action_cwd,
            sys_path=self._action_sys_path,
        )
        launcher.start()
        try:
            job = Job(
                scheduler_id=scheduler_id,
                run_id=f"action-{uuid.uuid4().hex[:12]}",
                trigger=Trigger.MANUAL.value,
                deadline=self._clock.now() + ACTION_TIMEOUT,
                action_id=action_id,
            )
            exit_ = launcher.spawn(job).supervise(
                sink=lambda records: None,
                timeout=ACTION_TIMEOUT.total_seconds(),
                cancel=threading.Event(),
            )
        finally:
            launcher.close()
        if exit_.outcome is not Outcome.SUCCEEDED:
            raise ActionFailed(exit_.error or f"the action ended {exit_.outcome.value}")
        return exit_.result or ""


# -- small helpers --------------------------------------------------------------------------


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _trigger(value: str | None, kind: Kind) -> Trigger:
    if value is not None:
        with contextlib.suppress(ValueError):
            return Trigger(value)
    return default_trigger(kind)


def _waiting(timer: Mapping[str, str]) -> bool:
    """A timer armed for its next elapse."""
    return timer.get("ActiveState") == "active" and timer.get("SubState") == "waiting"


def _armed(timer: Mapping[str, str]) -> bool:
    """Waiting, or running: its service just started or ended, and it re-arms."""
    return timer.get("ActiveState") == "active" and timer.get("SubState") in (
        "waiting",
        "running",
    )


def _require_loaded(name: str, props: Mapping[str, str]) -> None:
    state = props.get("LoadState")
    if state != "loaded":
        raise BackendError(
            f"unit {name} is {state or 'unknown'} (install the units with "
            "`supervisor install-units`)"
        )


def _absorb(run: _Run, entry: journal.Entry) -> None:
    """Fold one journal entry into what is known about its run."""
    moment = journal.time_of(entry)
    if run.first_seen is None or moment < run.first_seen:
        run.first_seen = moment
    event = entry.get("SUPERVISOR_EVENT")
    if event == journal.EVENT_RUN_START:
        run.started_at = moment if run.started_at is None else min(run.started_at, moment)
        run.trigger = entry.get("SUPERVISOR_TRIGGER") or run.trigger
        return
    if event == journal.EVENT_RUN_RETRY:
        run.attempt = _int(entry.get("SUPERVISOR_ATTEMPT"))
        return
    if event == journal.EVENT_RUN_END:
        with contextlib.suppress(ValueError):
            run.outcome = Outcome(entry.get("SUPERVISOR_OUTCOME", ""))
        run.error = entry.get("SUPERVISOR_ERROR") or run.error
        run.ended_at = moment if run.ended_at is None else max(run.ended_at, moment)
        return
    message_id = entry.get("MESSAGE_ID")
    if message_id == MESSAGE_JOB_START and run.started_at is None:
        run.started_at = moment
    elif message_id == MESSAGE_PROCESS_EXIT:
        how = entry.get("EXIT_CODE")
        codes = {"exited": _CLD_EXITED, "killed": _CLD_KILLED, "dumped": _CLD_DUMPED}
        if how in codes:
            run.exit_code = codes[how]
            run.exit_status = _int(entry.get("EXIT_STATUS"))
    elif message_id == MESSAGE_UNIT_FAILURE:
        run.unit_result = entry.get("UNIT_RESULT") or "failed"
        run.ended_at = moment if run.ended_at is None else max(run.ended_at, moment)
    elif message_id == MESSAGE_UNIT_SUCCESS:
        run.succeeded = True
        run.ended_at = moment if run.ended_at is None else max(run.ended_at, moment)


def _read_or_none(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when empty


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so that readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)
