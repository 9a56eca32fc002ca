"""The next planned starts of a scheduler or a cron expression (``supervisor next-runs``,
the settings preview of the Admin Center).

Pure: no clock reads, no I/O. Delay-based kinds are shown as if each run took no time.
Under systemd, cron times follow systemd's DST rules, which differ from the manager's.
May import ``definitions``, ``timing`` and ``oncalendar``.
"""

from __future__ import annotations

from datetime import datetime

from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.settings import check_cron
from supervisor.core.timing import cron_runs
from supervisor.systemd.oncalendar import systemd_runs


def upcoming_for_cron(
    expr: str, timezone: str, *, start: datetime, count: int, systemd: bool = False
) -> list[datetime]:
    expr = check_cron(expr, timezone)  # checks both, naming the field
    if systemd:
        return systemd_runs(expr, timezone, after=start, count=count)
    return cron_runs(expr, timezone, start, count)


def upcoming(
    options: Options, settings: Settings, *, start: datetime, count: int, systemd: bool = False
) -> list[datetime]:
    """Planned starts from ``start`` (as if the scheduler started then)."""
    if settings.disabled or options.kind is Kind.MANUAL:
        return []
    if options.kind is Kind.CRON:
        assert settings.cron is not None
        return upcoming_for_cron(
            settings.cron, settings.timezone, start=start, count=count, systemd=systemd
        )
    first = start + settings.start_delay
    if options.kind is Kind.ONE_SHOT:
        return [first]
    return [first + settings.pause_time * i for i in range(count)]
