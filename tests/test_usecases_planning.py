"""The planning use case: stored overrides win, the subject needs FIND_SETTINGS, and times
come in the scheduler's zone (systemd's DST rules under systemd)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from supervisor.core.access import Permission, Subject, su, with_role
from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.errors import DefinitionError, PermissionDenied, UnknownScheduler
from supervisor.core.registry import Registry
from supervisor.usecases.planning import NoOverrides, Planning, cron_runs

START = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


class Overrides:
    def __init__(self, stored: Mapping[str, Mapping[str, Any]]) -> None:
        self._stored = stored

    def overrides(self, scheduler_id: str) -> Mapping[str, Any]:
        return self._stored.get(scheduler_id, {})


def registry() -> Registry:
    made = Registry()
    made.add(
        Options(
            id="p.cron",
            name="cron",
            kind=Kind.CRON,
            runner=lambda ctx: None,
            defaults=Settings(cron="30 2 * * *", timezone="America/New_York"),
        )
    )
    return made


def test_stored_overrides_win_over_the_code_defaults() -> None:
    planning = Planning(registry(), Overrides({"p.cron": {"cron": "0 4 * * *"}}), systemd=False)
    times = planning.next_runs(su(), "p.cron", start=START, count=2)
    assert [t.isoformat() for t in times] == [
        "2026-03-08T04:00:00-04:00",
        "2026-03-09T04:00:00-04:00",
    ]


def test_a_spring_forward_gap_follows_the_backends_rules() -> None:
    manager = Planning(registry(), NoOverrides(), systemd=False)
    systemd = Planning(registry(), NoOverrides(), systemd=True)
    # The manager runs a skipped 02:30 once right after the jump; systemd skips the day.
    assert manager.next_runs(su(), "p.cron", start=START, count=1)[0].isoformat() == (
        "2026-03-08T03:00:00-04:00"
    )
    assert systemd.next_runs(su(), "p.cron", start=START, count=1)[0].isoformat() == (
        "2026-03-09T02:30:00-04:00"
    )


def test_the_subject_needs_find_settings() -> None:
    planning = Planning(registry(), NoOverrides(), systemd=False)
    assert planning.next_runs(with_role("v", "viewer"), "p.cron", start=START, count=1)
    nobody = Subject("nobody", frozenset(set(Permission) - {Permission.FIND_SETTINGS}))
    with pytest.raises(PermissionDenied):
        planning.next_runs(nobody, "p.cron", start=START, count=1)
    with pytest.raises(UnknownScheduler):
        planning.next_runs(su(), "p.none", start=START, count=1)


def test_a_cron_expression_alone_is_validated_and_zoned() -> None:
    times = cron_runs("0 12 * * *", "Europe/Berlin", start=START, count=1)
    assert times[0].isoformat() == "2026-03-08T12:00:00+01:00"
    with pytest.raises(DefinitionError, match="timezone"):
        cron_runs("0 12 * * *", "Mars/Olympus", start=START, count=1)
