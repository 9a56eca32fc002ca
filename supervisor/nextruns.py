"""``supervisor next-runs``: the next planned starts of a scheduler or a cron expression.

Needs no running manager: it loads the app (for a scheduler ID) and reads stored setting
overrides from the state directory when there is one. Delay-based kinds are shown as if
each run took no time. May import ``app``, ``cfgscheduler``, ``definitions``, ``store``
and ``timing``.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from supervisor.app import load_app
from supervisor.cfgscheduler import enable
from supervisor.definitions import Kind, Options, Settings
from supervisor.errors import DefinitionError
from supervisor.paths import APP_CWD_META, APP_SPEC_META, DATABASE_NAME
from supervisor.store import SqliteStore
from supervisor.timing import cron_runs
from supervisor.unitinstall import read_manifest


def upcoming_for_cron(expr: str, timezone: str, *, start: datetime, count: int) -> list[datetime]:
    settings = Settings(cron=expr, timezone=timezone)  # validates both, naming the field
    assert settings.cron is not None
    return cron_runs(settings.cron, settings.timezone, start, count)


def upcoming(
    options: Options, settings: Settings, *, start: datetime, count: int
) -> list[datetime]:
    """Planned starts from ``start`` (as if the scheduler started then)."""
    if settings.disabled or options.kind is Kind.MANUAL:
        return []
    if options.kind is Kind.CRON:
        assert settings.cron is not None
        return cron_runs(settings.cron, settings.timezone, start, count)
    first = start + settings.start_delay
    if options.kind is Kind.ONE_SHOT:
        return [first]
    return [first + settings.pause_time * i for i in range(count)]


def upcoming_for_scheduler(
    app_spec: str | None, scheduler_id: str, *, state_dir: Path, start: datetime, count: int
) -> tuple[list[datetime], str]:
    """The upcoming starts and the time zone to show them in.

    Without ``app_spec``, the app the state directory was last run (or installed) with.
    """
    database = state_dir / DATABASE_NAME
    overrides: dict[str, object] = {}
    if database.exists():
        with SqliteStore.open(database) as store:
            overrides = store.overrides(scheduler_id)
            if app_spec is None:
                app_spec, cwd = store.get_meta(APP_SPEC_META), store.get_meta(APP_CWD_META)
                if cwd and cwd not in sys.path:
                    sys.path.insert(0, cwd)
    if app_spec is None:
        manifest = read_manifest(state_dir)
        app_spec = None if manifest is None else manifest.app_spec
    if app_spec is None:
        raise DefinitionError(
            "--app", f"needed: nothing has run with state directory {state_dir} yet"
        )
    options = enable(load_app(app_spec)).registry.get(scheduler_id)
    settings = options.defaults.with_overrides(overrides)
    return upcoming(options, settings, start=start, count=count), settings.timezone
