"""The planning use case: the next planned starts of a scheduler (``supervisor next-runs``).

Needs no running backend: the definitions and the stored overrides are enough. Like every
use case it checks the subject's permission (``FIND_SETTINGS``: the plan follows from the
settings). A cron expression alone is checked with ``core.nextruns.upcoming_for_cron``.
May import ``core``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from supervisor.core.access import Permission, Subject
from supervisor.core.nextruns import upcoming, upcoming_for_cron
from supervisor.core.registry import Registry
from supervisor.core.settings import from_store


class StoredOverrides(Protocol):
    """Where a scheduler's settings overrides are kept (the store, or a backend)."""

    def overrides(self, scheduler_id: str) -> Mapping[str, Any]:
        """The stored overrides of one scheduler (empty if none)."""
        ...


class NoOverrides:
    """A state directory nothing has run in yet: every scheduler has its code defaults."""

    def overrides(self, scheduler_id: str) -> Mapping[str, Any]:
        return {}


class Planning:
    """When a scheduler will run, under the manager's timing rules or systemd's (DST)."""

    def __init__(self, registry: Registry, overrides: StoredOverrides, *, systemd: bool) -> None:
        self._registry = registry
        self._overrides = overrides
        self._systemd = systemd

    def next_runs(
        self, subject: Subject, scheduler_id: str, *, start: datetime, count: int
    ) -> list[datetime]:
        """The planned starts from ``start`` (as if the scheduler started then), in the
        scheduler's time zone. Raises ``UnknownScheduler``, ``PermissionDenied``."""
        subject.require(Permission.FIND_SETTINGS)
        options = self._registry.get(scheduler_id)
        settings = from_store(options, self._overrides.overrides(scheduler_id)).effective
        zone = ZoneInfo(settings.timezone)
        times = upcoming(options, settings, start=start, count=count, systemd=self._systemd)
        return [t.astimezone(zone) for t in times]


def cron_runs(expr: str, timezone: str, *, start: datetime, count: int) -> list[datetime]:
    """The planned starts of a cron expression alone (no scheduler), in ``timezone``.
    Raises ``DefinitionError`` naming ``cron`` or ``timezone``."""
    times = upcoming_for_cron(expr, timezone, start=start, count=count)
    zone = ZoneInfo(timezone)
    return [t.astimezone(zone) for t in times]
