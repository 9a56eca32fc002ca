"""The composition root of the commands that need no running backend: user accounts
(``supervisor users``, also on a ``--store`` PostgreSQL store), planning (``supervisor
next-runs``), and the read commands (``list``, ``status``, ``runs``, ``logs``) while no
manager runs (``open_reads``), over the state directory.

Each gives its use cases bound to what they read, and closes it after. The reads open
``state.db`` read-only (``store.sqlite.readonly``): they never write, create or migrate
anything, even as root in the service's directory. May import everything except ``cli``;
the store and the app are imported where used.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.core.definitions import Options
from supervisor.core.errors import DefinitionError, ManagerUnavailable, StoreError
from supervisor.core.records import (
    Decision,
    LogQuery,
    LogRecord,
    RunRecord,
    SchedulerStatus,
    State,
)
from supervisor.core.registry import Registry
from supervisor.service.mode import backend_choice
from supervisor.service.paths import (
    APP_CWD_META,
    APP_SPEC_META,
    DATABASE_NAME,
    check_app_from_state,
    check_state_dir,
    ensure_state_dir,
)
from supervisor.service.systemd_mode import open_systemd_mode
from supervisor.usecases.accounts import BOOTSTRAP_PASSWORD_FILE, Accounts
from supervisor.usecases.planning import NoOverrides, Planning
from supervisor.usecases.schedulers import UseCases

if TYPE_CHECKING:
    from supervisor.core.settings import EffectiveSettings
    from supervisor.store.protocols import Store


@contextlib.contextmanager
def open_accounts(state_dir: Path, *, create: bool, store: str | None = None) -> Iterator[Accounts]:
    """The account use cases over the state database, or over the PostgreSQL store at
    ``store`` (a ``--store`` URL; the state directory is not touched).

    Without ``create``, a missing state database (or an empty PostgreSQL database) is a
    ``StoreError`` rather than a new empty store. ``DefinitionError("--store")`` and
    ``StoreError`` for a store that cannot be used, as ``service.stores`` says.
    """
    from supervisor.store.sqlite import SqliteStore

    if store is not None:
        from supervisor.service.stores import open_postgres_users

        with open_postgres_users(store, create=create) as shared:
            yield Accounts(shared, bootstrap_file=_own_bootstrap_file(state_dir))
        return
    if not create and not (state_dir / DATABASE_NAME).exists():
        raise StoreError(f"no state database in {state_dir.absolute()} (wrong --state-dir?)")
    checked = ensure_state_dir(state_dir)
    with SqliteStore.open(checked / DATABASE_NAME) as local:
        yield Accounts(local, bootstrap_file=checked / BOOTSTRAP_PASSWORD_FILE)


def _own_bootstrap_file(state_dir: Path) -> Path | None:
    """The bootstrap admin's password file in this host's state directory, if the caller
    owns it; None otherwise. Setting ``admin``'s password deletes it only if it holds the
    password this store had for ``admin`` (a manager on the shared store left it, not one
    on the directory's own SQLite store: ``usecases.accounts``)."""
    path = state_dir / BOOTSTRAP_PASSWORD_FILE
    try:
        owner = os.lstat(path).st_uid
    except OSError:
        return None
    return path if owner == os.getuid() else None


def _registry_of_state(
    state_dir: Path, store: Store | None, *, app_spec: str | None, database: Path
) -> Registry:
    """The app ``app_spec``, or (None) the one the state directory last ran or installed,
    imported only if nobody else could have chosen it or changed its code."""
    from supervisor.core.app import load_app
    from supervisor.core.registry import registry_of

    if app_spec is None and store is not None:
        app_spec, cwd = store.get_meta(APP_SPEC_META), store.get_meta(APP_CWD_META)
        if app_spec is not None:
            # Named by the state directory, not typed by the caller: import it only if
            # nobody else could have chosen it or changed its code.
            check_app_from_state(
                check_state_dir(state_dir),
                app_spec=app_spec,
                source=database,
                search_path=[cwd, *sys.path] if cwd else list(sys.path),
            )
        if cwd and cwd not in sys.path:
            sys.path.insert(0, cwd)
    if app_spec is None:
        raise DefinitionError("--app", f"needed: nothing has run with state directory {state_dir}")
    return registry_of(load_app(app_spec))


@contextlib.contextmanager
def open_planning(state_dir: Path, *, app_spec: str | None) -> Iterator[Planning]:
    """Planning over the app ``app_spec`` (default: the one the state directory last ran or
    installed) and its stored overrides; under systemd, with systemd's DST rules.

    Raises ``DefinitionError("--app")`` when no app is given or known, ``AppLoadError``
    when it cannot be imported, ``UntrustedPath`` when the state directory names an app
    someone else could have chosen or changed.
    """
    from supervisor.store.sqlite.readonly import open_read_only

    if backend_choice(state_dir) == "systemd":
        mode = open_systemd_mode(state_dir, app_spec=app_spec)
        try:
            yield Planning(mode.schedulers.registry, mode.backend, systemd=True)
        finally:
            mode.close()
        return
    database = state_dir / DATABASE_NAME
    with contextlib.ExitStack() as stack:
        store = None
        if database.exists():
            check_state_dir(state_dir)
            opened = open_read_only(database)
            store = opened.store
            stack.callback(store.close)
        registry = _registry_of_state(state_dir, store, app_spec=app_spec, database=database)
        yield Planning(registry, store or NoOverrides(), systemd=False)


# -- reading while no manager runs ---------------------------------------------------------

NO_MANAGER = "no manager is running: this reads the state database and changes nothing"


class StoredBackend:
    """A ``usecases.backend.Backend`` answering reads from the state database alone (no
    manager runs): statuses are what the last runs left, nothing is planned or running;
    every control raises ``ManagerUnavailable``."""

    def __init__(self, registry: Registry, store: Store) -> None:
        self._registry = registry
        self._store = store

    def status_version(self) -> None:
        return None  # read from the file, which others may change at any time

    def statuses(self) -> list[SchedulerStatus]:
        return [self._status(options) for options in self._registry]

    def status(self, scheduler_id: str) -> SchedulerStatus:
        return self._status(self._registry.get(scheduler_id))

    def _status(self, options: Options) -> SchedulerStatus:
        from supervisor.core.settings import from_store

        settings = from_store(options, self._store.overrides(options.id)).effective
        last = self._store.last_run(options.id)
        finished = self._store.last_finished_run(options.id)
        return SchedulerStatus(
            id=options.id,
            name=options.name,
            description=options.description,
            kind=options.kind,
            state=State.DISABLED if settings.disabled else State.STOPPED,
            settings=settings,
            defaults=options.defaults,
            last_started_at=None if last is None else last.started_at,
            last_completed_at=None if finished is None else finished.ended_at,
            last_outcome=None if finished is None else finished.outcome,
            last_error=None if finished is None else finished.error,
            last_actor=self._store.last_actor(options.id),
            actions=tuple((a.id, a.title) for a in options.actions),
            decision=self._store.decision(options.id),  # a disable's or a pause's
        )

    def _refuse(self) -> ManagerUnavailable:
        return ManagerUnavailable(f"{NO_MANAGER} (start one with `supervisor run`)")

    def start(self, scheduler_id: str, *, actor: str) -> None:
        raise self._refuse()

    def stop(self, scheduler_id: str, *, actor: str, reason: str | None = None) -> None:
        raise self._refuse()

    def pause(
        self, scheduler_id: str, *, actor: str, until: datetime, reason: str | None = None
    ) -> None:
        raise self._refuse()

    def execute(self, scheduler_id: str, *, actor: str) -> str:
        raise self._refuse()

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        self._registry.get(scheduler_id)
        return self._store.overrides(scheduler_id)

    def update_settings(
        self,
        scheduler_id: str,
        settings: EffectiveSettings,
        *,
        disabled_by: Decision | None = None,
    ) -> None:
        raise self._refuse()

    def reset_settings(self, scheduler_id: str) -> None:
        raise self._refuse()

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        self._registry.get(scheduler_id)
        return self._store.runs(scheduler_id, limit=limit)

    def recent_runs(
        self, scheduler_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RunRecord]]:
        return self._store.recent_runs(scheduler_ids, limit=limit)

    def run(self, run_id: str) -> RunRecord:
        return self._store.get_run(run_id)

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        if query.scheduler_id is not None:
            self._registry.get(query.scheduler_id)
        return self._store.logs(query)

    def run_action(self, scheduler_id: str, action_id: str, *, actor: str) -> str:
        raise self._refuse()


@dataclass(frozen=True, slots=True, kw_only=True)
class OfflineReads:
    """The use cases over a state database opened read-only; ``close`` releases it.

    ``database``: the file read; ``partial``: its write-ahead log could not be read (the
    newest changes of a manager that was killed may be missing)."""

    use_cases: UseCases
    app_spec: str
    database: Path
    partial: bool
    close: Callable[[], None]


def open_reads(state_dir: Path, *, app_spec: str | None = None) -> OfflineReads:
    """The read use cases of ``state_dir`` from its database alone (for when no manager
    runs), over the app it last ran (or ``app_spec``).

    Raises ``ManagerUnavailable`` when there is no database either, ``StoreError`` for
    one that cannot be read (corrupt, foreign, newer), ``UntrustedPath``,
    ``AppLoadError`` or ``DefinitionError("--app")`` as ``open_planning`` does.
    """
    from supervisor.store.sqlite.readonly import open_read_only

    database = state_dir.absolute() / DATABASE_NAME
    if not database.exists():
        raise ManagerUnavailable(
            f"no manager is running for state directory {state_dir}, and it holds no state "
            f"database to read (start one with `supervisor run --app MODULE:ATTR`)"
        )
    check_state_dir(state_dir)
    opened = open_read_only(database)
    try:
        registry = _registry_of_state(state_dir, opened.store, app_spec=app_spec, database=database)
        spec = app_spec or opened.store.get_meta(APP_SPEC_META) or ""
        use_cases = UseCases(
            registry, backend=StoredBackend(registry, opened.store), audit=opened.store
        )
    except BaseException:
        opened.store.close()
        raise
    return OfflineReads(
        use_cases=use_cases,
        app_spec=spec,
        database=database,
        partial=opened.partial,
        close=opened.store.close,
    )
