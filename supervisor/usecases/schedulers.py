"""The use cases: the only way to change state, each checking its permission and writing audit.

Backends (the manager, systemd) do the work behind them. May import ``definitions``,
``records``, ``registry``, ``backend``, ``user``, ``clock`` and ``errors``.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, Protocol

from supervisor.core.access import Permission, Subject
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.definitions import Options, Settings, check_settings_for_kind
from supervisor.core.errors import BackendError, SupervisorError, UnknownRun
from supervisor.core.records import AuditEntry, LogQuery, LogRecord, RunRecord, SchedulerStatus
from supervisor.core.registry import Registry
from supervisor.usecases.backend import Backend


class AuditTrail(Protocol):
    def add_audit(self, entry: AuditEntry) -> None: ...

    def audit(
        self, *, scheduler_id: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[tuple[int, AuditEntry]]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsView:
    """What a settings form shows: the effective values, the code defaults, the overrides."""

    effective: Settings
    defaults: Settings
    overrides: Mapping[str, Any]


def settings_as_json(settings: Settings) -> dict[str, Any]:
    """Settings as plain values (durations in seconds) for audit and ``--json``."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = value.total_seconds() if isinstance(value, timedelta) else value
    return out


class UseCases:
    """Every operation on schedulers, taking the acting subject first."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._backend: Backend | None = None
        self._audit: AuditTrail | None = None
        self._clock: Clock = SystemClock()
        # Settings changes read, merge and write the overrides: one at a time, so two
        # operators' changes never overwrite each other.
        self._settings_lock = threading.Lock()

    # -- wiring -------------------------------------------------------------------------

    def bind(self, backend: Backend, audit: AuditTrail, *, clock: Clock | None = None) -> None:
        """Attach the backend that does the work and the trail that records who did what."""
        self._backend = backend
        self._audit = audit
        if clock is not None:
            self._clock = clock

    def unbind(self) -> None:
        """Detach the backend (it stopped); later calls say no backend is running."""
        self._backend = None
        self._audit = None

    @property
    def registry(self) -> Registry:
        return self._registry

    def _bound(self) -> tuple[Backend, AuditTrail]:
        if self._backend is None or self._audit is None:
            raise BackendError("no backend is running for these schedulers")
        return self._backend, self._audit

    def _record(
        self,
        subject: Subject,
        action: str,
        scheduler_id: str | None,
        *,
        detail: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
    ) -> None:
        _, audit = self._bound()
        audit.add_audit(
            AuditEntry(
                time=self._clock.now(),
                actor=subject.name,
                action=action,
                scheduler_id=scheduler_id,
                detail=detail,
                before=before,
                after=after,
            )
        )

    # -- definitions --------------------------------------------------------------------

    def configure(self, subject: Subject, options: Options) -> None:
        subject.require(Permission.CONFIGURE)
        self._registry.add(options)

    # -- reading ------------------------------------------------------------------------

    def list(self, subject: Subject) -> list[SchedulerStatus]:
        subject.require(Permission.LIST)
        return self._bound()[0].statuses()

    def status(self, subject: Subject, scheduler_id: str) -> SchedulerStatus:
        subject.require(Permission.STATUS)
        self._registry.get(scheduler_id)
        return self._bound()[0].status(scheduler_id)

    def runs(
        self, subject: Subject, scheduler_id: str, *, limit: int = 50
    ) -> builtins.list[RunRecord]:
        subject.require(Permission.STATUS)
        self._registry.get(scheduler_id)
        return self._bound()[0].runs(scheduler_id, limit=limit)

    def run(self, subject: Subject, run_id: str) -> RunRecord:
        subject.require(Permission.STATUS)
        return self._bound()[0].run(run_id)

    def logs(self, subject: Subject, query: LogQuery) -> builtins.list[tuple[int, LogRecord]]:
        subject.require(Permission.VIEW_LOGS)
        self._registry.get(query.scheduler_id)
        backend = self._bound()[0]
        if query.run_id is not None and backend.run(query.run_id).scheduler_id != (
            query.scheduler_id
        ):
            raise UnknownRun(f"run {query.run_id} is not a run of {query.scheduler_id}")
        return backend.logs(query)

    def audit(
        self,
        subject: Subject,
        *,
        scheduler_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> builtins.list[tuple[int, AuditEntry]]:
        subject.require(Permission.VIEW_AUDIT)
        return self._bound()[1].audit(scheduler_id=scheduler_id, limit=limit, before=before)

    # -- controls -----------------------------------------------------------------------

    def start(self, subject: Subject, scheduler_id: str) -> None:
        subject.require(Permission.START)
        self._registry.get(scheduler_id)
        self._bound()[0].start(scheduler_id, actor=subject.name)
        self._record(subject, "start", scheduler_id)

    def stop(self, subject: Subject, scheduler_id: str) -> None:
        subject.require(Permission.STOP)
        self._registry.get(scheduler_id)
        self._bound()[0].stop(scheduler_id, actor=subject.name)
        self._record(subject, "stop", scheduler_id)

    def execute(self, subject: Subject, scheduler_id: str) -> str:
        subject.require(Permission.EXECUTE)
        self._registry.get(scheduler_id)
        run_id = self._bound()[0].execute(scheduler_id, actor=subject.name)
        self._record(subject, "execute", scheduler_id, detail=f"run {run_id}")
        return run_id

    def run_action(self, subject: Subject, scheduler_id: str, action_id: str) -> str:
        subject.require(Permission.RUN_ACTION)
        self._registry.get(scheduler_id)
        backend, _ = self._bound()
        try:
            result = backend.run_action(scheduler_id, action_id, actor=subject.name)
        except SupervisorError as error:
            self._record(subject, f"action {action_id}", scheduler_id, detail=f"error: {error}")
            raise
        self._record(subject, f"action {action_id}", scheduler_id, detail=f"result: {result}")
        return result

    # -- settings -----------------------------------------------------------------------

    def find_settings(self, subject: Subject, scheduler_id: str) -> SettingsView:
        subject.require(Permission.FIND_SETTINGS)
        defaults = self._registry.get(scheduler_id).defaults
        overrides = self._bound()[0].overrides(scheduler_id)
        return SettingsView(
            effective=defaults.with_overrides(overrides), defaults=defaults, overrides=overrides
        )

    def update_settings(
        self, subject: Subject, scheduler_id: str, changes: Mapping[str, Any]
    ) -> SettingsView:
        """Apply ``changes`` on top of the current overrides; all of them or none."""
        subject.require(Permission.UPDATE_SETTINGS)
        options = self._registry.get(scheduler_id)
        backend, _ = self._bound()
        with self._settings_lock:
            current = options.defaults.with_overrides(backend.overrides(scheduler_id))
            wanted = current.with_overrides(changes)
            check_settings_for_kind(options.kind, wanted)
            overrides = options.defaults.differences(wanted)
            backend.update_settings(scheduler_id, overrides)
        self._record(
            subject,
            "update settings",
            scheduler_id,
            before=settings_as_json(current),
            after=settings_as_json(wanted),
        )
        return SettingsView(effective=wanted, defaults=options.defaults, overrides=overrides)

    def reset_settings(self, subject: Subject, scheduler_id: str) -> SettingsView:
        subject.require(Permission.RESET_SETTINGS)
        options = self._registry.get(scheduler_id)
        backend, _ = self._bound()
        with self._settings_lock:
            current = options.defaults.with_overrides(backend.overrides(scheduler_id))
            backend.reset_settings(scheduler_id)
        self._record(
            subject,
            "reset settings",
            scheduler_id,
            before=settings_as_json(current),
            after=settings_as_json(options.defaults),
        )
        return SettingsView(effective=options.defaults, defaults=options.defaults, overrides={})
