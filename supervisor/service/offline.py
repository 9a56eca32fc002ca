"""The composition root of the commands that need no running backend: user accounts
(``supervisor users``) and planning (``supervisor next-runs``), over the state directory.

Each gives its use cases bound to what they read, and closes it after. May import
everything except ``cli``; the store and the app are imported where used.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from supervisor.core.errors import DefinitionError, StoreError
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


@contextlib.contextmanager
def open_accounts(state_dir: Path, *, create: bool) -> Iterator[Accounts]:
    """The account use cases over the state database.

    Without ``create``, a missing database is a ``StoreError`` rather than a new empty file.
    """
    from supervisor.store.sqlite import SqliteStore

    if not create and not (state_dir / DATABASE_NAME).exists():
        raise StoreError(f"no state database in {state_dir.absolute()} (wrong --state-dir?)")
    checked = ensure_state_dir(state_dir)
    with SqliteStore.open(checked / DATABASE_NAME) as store:
        yield Accounts(store, bootstrap_file=checked / BOOTSTRAP_PASSWORD_FILE)


@contextlib.contextmanager
def open_planning(state_dir: Path, *, app_spec: str | None) -> Iterator[Planning]:
    """Planning over the app ``app_spec`` (default: the one the state directory last ran or
    installed) and its stored overrides; under systemd, with systemd's DST rules.

    Raises ``DefinitionError("--app")`` when no app is given or known, ``AppLoadError``
    when it cannot be imported, ``UntrustedPath`` when the state directory names an app
    someone else could have chosen or changed.
    """
    from supervisor.core.app import load_app
    from supervisor.core.registry import registry_of
    from supervisor.store.sqlite import SqliteStore

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
            state = check_state_dir(state_dir)
            store = stack.enter_context(SqliteStore.open(database))
        if app_spec is None and store is not None:
            app_spec, cwd = store.get_meta(APP_SPEC_META), store.get_meta(APP_CWD_META)
            if app_spec is not None:
                # Named by the state directory, not typed by the caller: import it only if
                # nobody else could have chosen it or changed its code.
                check_app_from_state(
                    state,
                    app_spec=app_spec,
                    source=database,
                    search_path=[cwd, *sys.path] if cwd else list(sys.path),
                )
            if cwd and cwd not in sys.path:
                sys.path.insert(0, cwd)
        if app_spec is None:
            raise DefinitionError(
                "--app", f"needed: nothing has run with state directory {state_dir}"
            )
        registry = registry_of(load_app(app_spec))
        yield Planning(registry, store or NoOverrides(), systemd=False)
