"""What the CLI's client hands back, and the ``--json`` shapes it prints them in.

The socket speaks the JSON of ``usecases.serialize``; the client turns each answer into
frozen values here (``*_from_json``), the commands print them (``*_json`` for ``--json``,
the same shapes and key order as ``serialize``, so the output is what it always was).
Runs and log records are the records of ``core.records``; a scheduler's status is a
``StatusView`` (the wire carries no code defaults, so it is not a ``SchedulerStatus``),
settings are a ``usecases.schedulers.SettingsView`` (``core.settings.EffectiveSettings``).
Malformed answers raise ``ManagerUnavailable`` (the other side is not a manager we
understand).
May import ``core`` (values), ``usecases.schedulers`` (its ``SettingsView`` name),
``usecases.serialize``, ``usecases.health`` (values) and the stdlib.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from supervisor.core.definitions import Kind, Settings
from supervisor.core.errors import ManagerUnavailable, SupervisorError
from supervisor.core.records import (
    Level,
    LogRecord,
    Outcome,
    RunRecord,
    SchedulerStatus,
    Source,
    State,
    Trigger,
)
from supervisor.core.settings import EffectiveSettings
from supervisor.core.settings import as_json as settings_as_json

# The JSON shapes of runs and records are the manager's own: one definition for both.
from supervisor.usecases.health import Backlog, StoreProblem, StoreTrouble, trouble_json
from supervisor.usecases.serialize import decision_json, iso
from supervisor.usecases.serialize import log_json as log_json
from supervisor.usecases.serialize import run_json as run_json

if TYPE_CHECKING:
    from supervisor.usecases.schedulers import SettingsView

DURATIONS = ("start_delay", "pause_time", "timeout", "retry_delay")


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitFiles:
    """Where a scheduler's unit files are (systemd mode): /etc wins over /run.

    ``kind``: ``persistent``, ``runtime`` (gone after a reboot), ``mixed``, ``other`` or
    ``missing``.
    """

    kind: str
    service: str | None
    timer: str | None
    start_timer: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusView:
    """One scheduler's state as an operator sees it (``supervisor status``)."""

    id: str
    name: str
    description: str
    kind: Kind
    state: State
    settings: Settings
    last_started_at: datetime | None = None
    last_completed_at: datetime | None = None
    next_planned_at: datetime | None = None
    last_outcome: Outcome | None = None
    last_error: str | None = None
    current_run_id: str | None = None
    last_actor: str | None = None
    actions: tuple[tuple[str, str], ...] = ()
    units: UnitFiles | None = None
    failed_starts: int = 0
    run_phase: str | None = None
    containment: str | None = None
    current_pid: int | None = None
    state_since: datetime | None = None
    # The operator's decision in force, as the manager sends it (``decision_json``), and
    # the retry planned: (its number, how many are allowed), or None.
    decision: Mapping[str, Any] | None = None
    retry: tuple[int, int] | None = None
    host: str | None = None  # the owning host (--cluster)
    store: StoreTrouble | None = None  # the store's outage, as of the answer

    @classmethod
    def of(cls, status: SchedulerStatus, *, units: UnitFiles | None = None) -> StatusView:
        return cls(
            id=status.id,
            name=status.name,
            description=status.description,
            kind=status.kind,
            state=status.state,
            settings=status.settings,
            last_started_at=status.last_started_at,
            last_completed_at=status.last_completed_at,
            next_planned_at=status.next_planned_at,
            last_outcome=status.last_outcome,
            last_error=status.last_error,
            current_run_id=status.current_run_id,
            last_actor=status.last_actor,
            actions=status.actions,
            units=units,
            failed_starts=status.failed_starts,
            run_phase=status.run_phase,
            containment=status.containment,
            current_pid=status.current_pid,
            state_since=status.state_since,
            decision=decision_json(status.decision),
            retry=(status.retry_attempt, status.retries) if status.retry_attempt else None,
            host=status.host,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerInfo:
    """Who answers: the manager's pid, its app and backend (``ping``)."""

    pid: int
    app: str
    backend: str


# -- printing (--json) ---------------------------------------------------------------------


def status_json(view: StatusView) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": view.id,
        "name": view.name,
        "description": view.description,
        "kind": view.kind.value,
        "state": view.state.value,
        "last_started_at": iso(view.last_started_at),
        "last_completed_at": iso(view.last_completed_at),
        "next_planned_at": iso(view.next_planned_at),
        "last_outcome": None if view.last_outcome is None else view.last_outcome.value,
        "last_error": view.last_error,
        "settings": settings_as_json(view.settings),
        "current_run_id": view.current_run_id,
        "last_actor": view.last_actor,
        "actions": [{"id": a, "title": t} for a, t in view.actions],
        "failed_starts": view.failed_starts,
        "run_phase": view.run_phase,
        "containment": view.containment,
        "current_pid": view.current_pid,
        "state_since": iso(view.state_since),
        "decision": None if view.decision is None else dict(view.decision),
        "retry": None if view.retry is None else {"attempt": view.retry[0], "of": view.retry[1]},
    }
    if view.host is not None:
        out["host"] = view.host
    if view.store is not None:
        out["store"] = trouble_json(view.store)
    if view.units is not None:
        out["units"] = {
            "kind": view.units.kind,
            "service": view.units.service,
            "timer": view.units.timer,
            "start_timer": view.units.start_timer,
        }
    return out


def settings_view_json(view: SettingsView) -> dict[str, Any]:
    return {
        "effective": settings_as_json(view.effective),
        "defaults": settings_as_json(view.defaults),
        "overridden": sorted(view.overrides),
    }


# -- reading answers -----------------------------------------------------------------------


class _Reader:
    """Fields of one answer object; anything unexpected is a ``ManagerUnavailable``."""

    def __init__(self, raw: object, what: str) -> None:
        if not isinstance(raw, Mapping):
            raise ManagerUnavailable(f"the manager's answer is not understood: {what}")
        self._raw = raw
        self._what = what

    def bad(self, name: str) -> ManagerUnavailable:
        return ManagerUnavailable(f"the manager's answer is not understood: {self._what}.{name}")

    def optional(self, name: str) -> Any:
        return self._raw.get(name)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._raw)

    def get(self, name: str) -> Any:
        if name not in self._raw:
            raise self.bad(name)
        return self._raw[name]

    def text(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            raise self.bad(name)
        return value

    def optional_text(self, name: str) -> str | None:
        value = self._raw.get(name)
        return None if value is None else self.text(name)

    def optional_int(self, name: str) -> int | None:
        value = self._raw.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise self.bad(name)
        return value

    def time(self, name: str) -> datetime:
        try:
            value = datetime.fromisoformat(self.text(name))
        except ValueError:
            raise self.bad(name) from None
        if value.tzinfo is None:
            raise self.bad(name)
        return value

    def optional_time(self, name: str) -> datetime | None:
        return None if self._raw.get(name) is None else self.time(name)

    def enum(self, name: str, kind: Any) -> Any:
        try:
            return kind(self.text(name))
        except ValueError:
            raise self.bad(name) from None

    def optional_enum(self, name: str, kind: Any) -> Any:
        return None if self._raw.get(name) is None else self.enum(name, kind)

    def mapping(self, name: str) -> Mapping[str, Any]:
        value = self.get(name)
        if not isinstance(value, Mapping):
            raise self.bad(name)
        return value

    def sequence(self, name: str) -> Sequence[Any]:
        value = self.get(name)
        if not isinstance(value, list):
            raise self.bad(name)
        return value


def items(raw: object, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise ManagerUnavailable(f"the manager's answer is not understood: {what}")
    return raw


def settings_from_json(raw: object) -> Settings:
    values = _Reader(raw, "settings").as_dict()
    for name in DURATIONS:
        value = values.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[name] = timedelta(seconds=value)
    try:
        return Settings(**values)
    except (SupervisorError, TypeError) as error:
        raise ManagerUnavailable(f"the manager's settings are not understood: {error}") from None


def _units_from_json(raw: object) -> UnitFiles | None:
    if raw is None:
        return None
    units = _Reader(raw, "units")
    return UnitFiles(
        kind=units.text("kind"),
        service=units.optional_text("service"),
        timer=units.optional_text("timer"),
        start_timer=units.optional_text("start_timer"),
    )


def status_from_json(raw: object) -> StatusView:
    status = _Reader(raw, "status")
    actions = []
    for action in status.sequence("actions"):
        entry = _Reader(action, "actions")
        actions.append((entry.text("id"), entry.text("title")))
    return StatusView(
        id=status.text("id"),
        name=status.text("name"),
        description=status.text("description"),
        kind=status.enum("kind", Kind),
        state=status.enum("state", State),
        settings=settings_from_json(status.get("settings")),
        last_started_at=status.optional_time("last_started_at"),
        last_completed_at=status.optional_time("last_completed_at"),
        next_planned_at=status.optional_time("next_planned_at"),
        last_outcome=status.optional_enum("last_outcome", Outcome),
        last_error=status.optional_text("last_error"),
        current_run_id=status.optional_text("current_run_id"),
        last_actor=status.optional_text("last_actor"),
        actions=tuple(actions),
        units=_units_from_json(status.optional("units")),
        failed_starts=_count(status.optional("failed_starts")),
        run_phase=status.optional_text("run_phase"),
        containment=status.optional_text("containment"),
        current_pid=status.optional_int("current_pid"),
        state_since=status.optional_time("state_since"),
        decision=_decision(status.optional("decision")),
        retry=_retry(status.optional("retry")),
        host=status.optional_text("host"),
        store=_store(status.optional("store")),
    )


def _store(raw: object) -> StoreTrouble | None:
    """The store's outage a manager tells while it lasts (absent otherwise, and from an
    older manager)."""
    if raw is None:
        return None
    store = _Reader(raw, "store")
    seconds = store.optional_int("seconds")
    if seconds is None or seconds < 0:
        raise store.bad("seconds")
    state = store.optional_text("state") or StoreProblem.UNREACHABLE.value
    try:
        problem = StoreProblem(state)
    except ValueError:  # a newer manager's problem: shown by its own words
        problem = StoreProblem.WRITE_FAILED
    kept = store.optional_int("kept_log_records") or 0
    dropped = store.optional_int("dropped_log_records") or 0
    if kept < 0 or dropped < 0:
        raise store.bad("kept_log_records" if kept < 0 else "dropped_log_records")
    return StoreTrouble(
        since=store.time("since"),
        seconds=seconds,
        reason=store.text("reason"),
        problem=problem,
        backlog=Backlog(kept_records=kept, dropped_records=dropped),
    )


def _decision(raw: object) -> Mapping[str, Any] | None:
    """A decision as the manager sent it (an older one sends none)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
        return None
    return dict(raw)


def _retry(raw: object) -> tuple[int, int] | None:
    if not isinstance(raw, dict):
        return None
    attempt, of = _count(raw.get("attempt")), _count(raw.get("of"))
    return (attempt, of) if attempt else None


def _count(value: object) -> int:
    """A count an older manager may not send (0 then)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def run_from_json(raw: object) -> RunRecord:
    run = _Reader(raw, "run")
    return RunRecord(
        run_id=run.text("run_id"),
        scheduler_id=run.text("scheduler_id"),
        trigger=run.enum("trigger", Trigger),
        triggered_by=run.optional_text("triggered_by"),
        started_at=run.time("started_at"),
        ended_at=run.optional_time("ended_at"),
        outcome=run.optional_enum("outcome", Outcome),
        exit_code=run.optional_int("exit_code"),
        signal=run.optional_int("signal"),
        error=run.optional_text("error"),
        host=run.optional_text("host"),
    )


def log_from_json(raw: object) -> tuple[int, LogRecord]:
    """A log record and its cursor (where a follow-up read continues)."""
    log = _Reader(raw, "log")
    cursor = log.optional_int("cursor")
    try:
        level = Level.parse(log.text("level"))
    except ValueError:
        raise log.bad("level") from None
    record = LogRecord(
        time=log.time("time"),
        level=level,
        message=log.text("message"),
        fields=dict(log.mapping("fields")),
        run_id=log.text("run_id"),
        source=log.enum("source", Source),
    )
    return (0 if cursor is None else cursor), record


def settings_view_from_json(raw: object) -> SettingsView:
    view = _Reader(raw, "settings")
    effective = settings_from_json(view.get("effective"))
    overridden = view.sequence("overridden")
    if not all(isinstance(name, str) and hasattr(effective, name) for name in overridden):
        raise view.bad("overridden")
    # Read back as the manager reported it (this value never goes to a backend); the
    # overrides are the effective values of the overridden fields.
    return EffectiveSettings(
        effective=effective,
        defaults=settings_from_json(view.get("defaults")),
        overrides=MappingProxyType({name: getattr(effective, name) for name in overridden}),
    )


def info_from_json(raw: object) -> ManagerInfo:
    info = _Reader(raw, "ping")
    pid = info.optional_int("pid")
    return ManagerInfo(pid=pid or 0, app=info.text("app"), backend=info.text("backend"))
