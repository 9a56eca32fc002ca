"""The use cases: the only way to change state, each checking its permission and writing audit.

Two objects, so that nothing can be used half-wired:

- ``Definitions`` (``schedulers.use_cases``, there from ``cfgscheduler.enable(cfg)`` on):
  configuring definitions, which code does at import, before any backend exists.
- ``UseCases``: every operation on running schedulers, built by a composition root
  (``service.manager_mode``, the systemd mode) with the backend that does the work and
  the trail that records who did what. There is no later bind step to forget.

Settings go through ``core.settings``: it merges, checks and diffs; the backend gets an
``EffectiveSettings`` it stores and applies as it is.

The audit never turns a done action into an error. Two rules, one per kind of entry:

- Audit first, where the entry is complete before acting (start, stop, update and reset
  settings, and the user changes in ``usecases.accounts``): the entry is written before
  the act; when the trail cannot be written (``StoreError``, e.g. "database or disk is
  full") the call is refused and nothing is done, so no such action goes unaudited. If
  the act then fails, a second entry ("<action> failed") says so. Stop is the exception
  where a long-lived manager serves the use cases (they have a ``store_health``): an
  operator must be able to stop a scheduler while the store is down, so a stop whose
  entry cannot be written is carried out, its entry kept in memory (and logged at once)
  and written once the store takes writes again (``usecases.pendingaudit``); the answer
  says so. Without a manager (the CLI's own process, in systemd mode) nothing would be
  left to write it, so such a stop is refused as any other action.
- Audit after, where the entry holds what only the act yields (Execute Now's run ID, which
  the systemd mode reads back as who triggered the run; a custom action's result, which
  the product promises to record): the call succeeds with its result, so an operator
  never retries into a second run. Behind kept entries that still cannot be written the
  entry is kept too; where a manager serves the use cases it is also kept when its own
  write fails (``StoreError``), and written in order once the store takes writes again.
  Any other failed write is reported on its own (logged on the ``supervisor.audit``
  logger, counted in ``UseCases.audit_failures``).

Every entry is written after the entries kept before it (``PendingAudit``), so the
trail keeps the order the actions were taken in.

Refusals that need no acting (permission, unknown ID, invalid settings) write nothing.

May import ``core`` and ``usecases.backend``.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.core import settings as settings_owner
from supervisor.core.access import Permission, Subject
from supervisor.core.app import Configurator
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.definitions import Options
from supervisor.core.errors import DefinitionError, StoreError, SupervisorError, UnknownRun
from supervisor.core.records import (
    AuditEntry,
    Decision,
    DecisionKind,
    LogQuery,
    LogRecord,
    RunRecord,
    SchedulerStatus,
    clean_reason,
)
from supervisor.core.registry import Registry, registry_of
from supervisor.core.settings import EffectiveSettings, SettingsChange
from supervisor.usecases.pendingaudit import PendingAudit, pending_for

if TYPE_CHECKING:  # (not loaded by an app's definitions, nor by the fork server)
    from supervisor.usecases.backend import Backend
    from supervisor.usecases.health import StoreHealthSource, StoreTrouble

AUDIT_LOG = logging.getLogger("supervisor.audit")

# What a settings form shows: the effective values, the code defaults, the overrides.
SettingsView = EffectiveSettings


class AuditTrail(Protocol):
    """Where the use cases record who did what. Both methods raise ``StoreError`` when the
    underlying store fails."""

    def add_audit(self, entry: AuditEntry) -> None: ...

    def audit(
        self,
        *,
        scheduler_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[tuple[int, AuditEntry]]: ...


class Definitions:
    """The use case of code: configuring scheduler definitions (``schedulers.use_cases``)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    @property
    def registry(self) -> Registry:
        return self._registry

    def configure(self, subject: Subject, options: Options) -> None:
        """Add a definition; ``DefinitionError`` naming the field if it cannot run."""
        subject.require(Permission.CONFIGURE)
        self._registry.add(options)


class Schedulers:
    """The scheduler extension of one application: its definitions and their use case."""

    def __init__(self, app: Configurator) -> None:
        self.app = app
        self.registry = registry_of(app)
        self.use_cases = Definitions(self.registry)


def enable(cfg: Configurator) -> Schedulers:
    """Enable schedulers on ``cfg``; a second call returns the same object."""
    if not isinstance(cfg, Configurator):
        raise TypeError(f"cfgscheduler.enable needs a Configurator, got {type(cfg).__name__}")
    return cfg.extension("supervisor.schedulers", lambda: Schedulers(cfg), Schedulers)


class UseCases:
    """Every operation on running schedulers, taking the acting subject first.

    Built with the backend that does the work and the trail that records it; each call
    raises ``PermissionDenied`` first when the subject may not, ``UnknownScheduler`` for
    an unknown ID, then what the backend raises.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        backend: Backend,
        audit: AuditTrail,
        clock: Clock | None = None,
        store_health: StoreHealthSource | None = None,
    ) -> None:
        """``store_health``: where the store's outages are told (none: the store has no
        outages to tell, as in systemd mode)."""
        self._registry = registry
        self._backend = backend
        self._audit = audit
        self._clock: Clock = clock or SystemClock()
        self._store_health = store_health
        # Settings changes read, merge and write the overrides: one at a time, so two
        # operators' changes never overwrite each other.
        self._settings_lock = threading.Lock()
        self._audit_failures = 0
        self._failures_lock = threading.Lock()
        # Entries the store could not take (stops, entries written after acting), written
        # once it can.
        self._pending = pending_for(audit, AUDIT_LOG)
        if store_health is not None:
            store_health.when_recovered(self._pending.write_in_background)
        # Definitions configured from now on would be unknown to the backend.
        registry.freeze()

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def audit_failures(self) -> int:
        """How many follow-up audit entries (written after an action) could not be written
        nor kept."""
        return self._audit_failures

    @property
    def pending_audit(self) -> int:
        """How many audit entries are kept in memory until the store takes them."""
        return self._pending.count

    @property
    def kept_audit(self) -> PendingAudit:
        """The audit entries kept in memory while the store could not take them (for the
        manager's catch-up; not a use case: no subject acts through it)."""
        return self._pending

    def _entry(
        self,
        subject: Subject,
        action: str,
        scheduler_id: str | None,
        *,
        detail: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            time=self._clock.now(),
            actor=subject.name,
            action=action,
            scheduler_id=scheduler_id,
            detail=detail,
            before=before,
            after=after,
        )

    def _record_first(self, entry: AuditEntry) -> None:
        """Write ``entry`` (after the kept ones) before acting; when it cannot be written,
        refuse (nothing done)."""
        try:
            self._pending.write_first(entry)
        except StoreError as error:
            raise StoreError(
                f"{entry.action} not done: the audit trail cannot be written ({error})"
            ) from error

    def _record_after(self, entry: AuditEntry) -> None:
        """Write what is known only after acting; the action happened, so a failure here is
        never raised to the caller: with a manager to write it later, an entry the store
        cannot take is kept (in order); else the failure is reported on its own."""
        note_after(self._pending, entry, self._count_failure, keep=self._store_health is not None)

    def _count_failure(self) -> None:
        with self._failures_lock:
            self._audit_failures += 1

    @contextmanager
    def _audited(self, entry: AuditEntry) -> Iterator[None]:
        """Audit ``entry`` first, then run the body (the act); if the act fails, a second
        entry says so and the act's error propagates."""
        self._record_first(entry)
        try:
            yield
        except Exception as error:
            self._record_after(self._failed(entry, error))
            raise

    def _failed(self, entry: AuditEntry, error: BaseException) -> AuditEntry:
        """The second entry of an act that failed after its first was written."""
        return dataclasses.replace(
            entry,
            time=self._clock.now(),
            action=f"{entry.action} failed",
            detail=str(error) or type(error).__name__,
            before=None,
            after=None,
        )

    # -- reading ------------------------------------------------------------------------

    def list(self, subject: Subject) -> list[SchedulerStatus]:
        subject.require(Permission.LIST)
        return self._backend.statuses()

    def status_version(self, subject: Subject) -> int | None:
        """A number that moves whenever any status changes (statuses read after it may be
        kept while it stays), or None: a backend that cannot tell (read them every time)."""
        subject.require(Permission.LIST)
        return self._backend.status_version()

    def store_health(self, subject: Subject) -> StoreTrouble | None:
        """The store's outage going on, as of now (None while it answers, and always
        without a store that can have one). Whoever may list the schedulers may see it:
        it says why what they read may be stale."""
        from supervisor.usecases.health import StoreTrouble

        subject.require(Permission.LIST)
        outage = None if self._store_health is None else self._store_health.outage()
        return None if outage is None else StoreTrouble.of(outage, self._clock.now())

    def status(self, subject: Subject, scheduler_id: str) -> SchedulerStatus:
        subject.require(Permission.STATUS)
        self._registry.get(scheduler_id)
        return self._backend.status(scheduler_id)

    def runs(
        self, subject: Subject, scheduler_id: str, *, limit: int = 50
    ) -> builtins.list[RunRecord]:
        subject.require(Permission.STATUS)
        self._registry.get(scheduler_id)
        return self._backend.runs(scheduler_id, limit=limit)

    def recent_runs(
        self, subject: Subject, scheduler_ids: Sequence[str], *, limit: int
    ) -> dict[str, builtins.list[RunRecord]]:
        """The newest ``limit`` runs of each of ``scheduler_ids`` in one read (may be
        empty: a backend without a cheap read of them)."""
        subject.require(Permission.STATUS)
        return self._backend.recent_runs(scheduler_ids, limit=limit)

    def run(self, subject: Subject, run_id: str) -> RunRecord:
        subject.require(Permission.STATUS)
        return self._backend.run(run_id)

    def logs(self, subject: Subject, query: LogQuery) -> builtins.list[tuple[int, LogRecord]]:
        """``query.scheduler_id`` None: every scheduler's records."""
        subject.require(Permission.VIEW_LOGS)
        if query.scheduler_id is not None:
            self._registry.get(query.scheduler_id)
        backend = self._backend
        if query.run_id is not None:
            owner = backend.run(query.run_id).scheduler_id
            if query.scheduler_id is not None and owner != query.scheduler_id:
                raise UnknownRun(f"run {query.run_id} is not a run of {query.scheduler_id}")
        return backend.logs(query)

    def audit(
        self,
        subject: Subject,
        *,
        scheduler_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> builtins.list[tuple[int, AuditEntry]]:
        """The audit trail, newest first, narrowed by each filter given (as the store's
        ``AuditTrail.audit`` says)."""
        subject.require(Permission.VIEW_AUDIT)
        return self._audit.audit(
            scheduler_id=scheduler_id,
            actor=actor,
            action=action,
            since=since,
            until=until,
            limit=limit,
            before=before,
        )

    # -- controls -----------------------------------------------------------------------

    def start(self, subject: Subject, scheduler_id: str) -> None:
        subject.require(Permission.START)
        self._registry.get(scheduler_id)
        with self._audited(self._entry(subject, "start", scheduler_id)):
            self._backend.start(scheduler_id, actor=subject.name)

    def stop(self, subject: Subject, scheduler_id: str, *, reason: str | None = None) -> str | None:
        """Cancel the current run and plan nothing more; ``reason`` (optional, one line)
        is shown with the status, written to the audit and to the stopped run's log.

        Done even when the audit trail cannot be written (the store is down): then the
        entry is kept in memory and written once the store recovers, and the answer is
        a note saying so; else None."""
        subject.require(Permission.STOP)
        self._registry.get(scheduler_id)
        why = _reason(reason)
        entry = self._entry(subject, "stop", scheduler_id, detail=why)
        try:
            self._record_first(entry)
        except StoreError as refused:
            if self._store_health is None:  # no manager here to write it later
                raise
            error = refused.__cause__ if refused.__cause__ is not None else refused
            self._pending.keep(entry, error)
            try:
                self._backend.stop(scheduler_id, actor=subject.name, reason=why)
            except Exception as failed:
                self._pending.keep(self._failed(entry, failed), error)
                raise
            return (
                f"the audit entry could not be written ({error}); it is kept in memory and"
                " written once the store takes writes again"
            )
        try:
            self._backend.stop(scheduler_id, actor=subject.name, reason=why)
        except Exception as failed:
            self._record_after(self._failed(entry, failed))
            raise
        return None

    def pause(
        self,
        subject: Subject,
        scheduler_id: str,
        *,
        until: datetime,
        reason: str | None = None,
    ) -> None:
        """Plan nothing until ``until`` (aware, in the future), then resume by itself; a
        run in progress finishes. Needs the Stop permission; ``BackendError`` if the
        backend cannot (a disabled scheduler, a time not in the future, systemd mode)."""
        subject.require(Permission.STOP)
        self._registry.get(scheduler_id)
        if until.tzinfo is None:
            raise DefinitionError("until", "must carry a time zone")
        if until <= self._clock.now():
            raise DefinitionError("until", f"must be in the future, not {until.isoformat()}")
        why = _reason(reason)
        detail = f"until {until.isoformat()}" + ("" if why is None else f": {why}")
        with self._audited(self._entry(subject, "pause", scheduler_id, detail=detail)):
            self._backend.pause(scheduler_id, actor=subject.name, until=until, reason=why)

    def resume(self, subject: Subject, scheduler_id: str) -> None:
        """End a pause or a stop now (Start: the start delay applies again)."""
        subject.require(Permission.START)
        self._registry.get(scheduler_id)
        with self._audited(self._entry(subject, "resume", scheduler_id)):
            self._backend.start(scheduler_id, actor=subject.name)

    def disable(self, subject: Subject, scheduler_id: str, *, reason: str | None = None) -> None:
        """Set ``disabled`` (it plans nothing until enabled, across restarts), keeping who
        did it and why for its status."""
        why = _reason(reason)
        self._change_settings(
            subject, scheduler_id, SettingsChange(disabled=True), reason=why, decided=True
        )

    def enable(self, subject: Subject, scheduler_id: str) -> None:
        self._change_settings(subject, scheduler_id, SettingsChange(disabled=False))

    def execute(self, subject: Subject, scheduler_id: str) -> str:
        """Start a run now. Audited after acting (the entry names the run, which the
        systemd mode reads back as who triggered it): a failed write is kept (with a
        manager) or reported, never raised, because the run has started."""
        subject.require(Permission.EXECUTE)
        self._registry.get(scheduler_id)
        run_id = self._backend.execute(scheduler_id, actor=subject.name)
        self._record_after(self._entry(subject, "execute", scheduler_id, detail=f"run {run_id}"))
        return run_id

    def run_action(self, subject: Subject, scheduler_id: str, action_id: str) -> str:
        """Run a custom action; audited after acting, with its result or error (as
        ``execute``: a failed write is reported, not raised)."""
        subject.require(Permission.RUN_ACTION)
        self._registry.get(scheduler_id)
        action = f"action {action_id}"
        try:
            result = self._backend.run_action(scheduler_id, action_id, actor=subject.name)
        except SupervisorError as error:
            self._record_after(self._entry(subject, action, scheduler_id, detail=f"error: {error}"))
            raise
        self._record_after(self._entry(subject, action, scheduler_id, detail=f"result: {result}"))
        return result

    # -- settings -----------------------------------------------------------------------

    def _current(self, options: Options) -> EffectiveSettings:
        return settings_owner.from_store(options, self._backend.overrides(options.id))

    def find_settings(self, subject: Subject, scheduler_id: str) -> SettingsView:
        subject.require(Permission.FIND_SETTINGS)
        return self._current(self._registry.get(scheduler_id))

    def update_settings(
        self,
        subject: Subject,
        scheduler_id: str,
        change: SettingsChange | Mapping[str, Any],
    ) -> SettingsView:
        """Apply ``change`` on top of the current settings: all of it or none, else
        ``DefinitionError`` naming the field by its setting name."""
        if not isinstance(change, SettingsChange):
            change = SettingsChange.of(change)
        return self._change_settings(subject, scheduler_id, change)

    def _change_settings(
        self,
        subject: Subject,
        scheduler_id: str,
        change: SettingsChange,
        *,
        reason: str | None = None,
        decided: bool = False,
    ) -> SettingsView:
        """Apply ``change``; a change that disables (or ``decided``: a Disable with its
        reason) hands the backend who disabled it and why."""
        subject.require(Permission.UPDATE_SETTINGS)
        options = self._registry.get(scheduler_id)
        with self._settings_lock:
            current = self._current(options)
            wanted = settings_owner.apply(options, current, change)
            before, after = settings_owner.audit_diff(current.effective, wanted.effective)
            disabled_by = None
            if wanted.effective.disabled and (decided or not current.effective.disabled):
                disabled_by = Decision(
                    kind=DecisionKind.DISABLED,
                    actor=subject.name,
                    at=self._clock.now(),
                    reason=reason,
                )
            entry = self._entry(
                subject,
                "update settings",
                scheduler_id,
                before=before,
                after=after,
                detail=None if reason is None else f"disabled: {reason}",
            )
            with self._audited(entry):
                self._backend.update_settings(scheduler_id, wanted, disabled_by=disabled_by)
        return wanted

    def reset_settings(self, subject: Subject, scheduler_id: str) -> SettingsView:
        subject.require(Permission.RESET_SETTINGS)
        options = self._registry.get(scheduler_id)
        reset = settings_owner.defaults_of(options)
        with self._settings_lock:
            current = self._current(options)
            before, after = settings_owner.audit_diff(current.effective, reset.effective)
            entry = self._entry(subject, "reset settings", scheduler_id, before=before, after=after)
            with self._audited(entry):
                self._backend.reset_settings(scheduler_id)
        return reset


def _reason(text: str | None) -> str | None:
    """An operator's reason, cleaned; ``DefinitionError`` naming ``reason`` if unusable."""
    try:
        return clean_reason(text)
    except ValueError as error:
        raise DefinitionError("reason", str(error).removeprefix("reason ")) from None


def note_after(
    pending: PendingAudit,
    entry: AuditEntry,
    on_failure: Callable[[], None],
    *,
    keep: bool = False,
) -> None:
    """Write an entry about something already done (after the kept ones, or kept behind
    them; with ``keep``, kept too when the store cannot take it itself): any other
    failure is logged on ``supervisor.audit`` (and ``on_failure`` called), never raised."""
    try:
        pending.write_after(entry, keep_own=keep)
    except Exception as error:
        on_failure()
        AUDIT_LOG.error(
            "audit entry not written (the action was done): %s by %s on %s (%s): %s",
            entry.action,
            entry.actor,
            entry.scheduler_id or "-",
            entry.detail or "",
            error,
        )
