"""Use cases: permissions are checked, audit is written, settings apply all or nothing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from supervisor.core.access import su, with_role
from supervisor.core.clock import FakeClock
from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.errors import BackendError, DefinitionError, PermissionDenied, UnknownScheduler
from supervisor.core.records import AuditEntry, SchedulerStatus, State
from supervisor.core.registry import Registry
from supervisor.usecases.schedulers import UseCases


class RecordingBackend:
    """Remembers what it was asked; enough of ``Backend`` for the use cases."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.calls: list[tuple[str, str]] = []
        self.stored: dict[str, dict[str, Any]] = {}

    def status(self, scheduler_id: str) -> SchedulerStatus:
        options = self.registry.get(scheduler_id)
        return SchedulerStatus(
            id=options.id,
            name=options.name,
            description=options.description,
            kind=options.kind,
            state=State.PAUSED,
            settings=options.defaults,
            defaults=options.defaults,
        )

    def statuses(self) -> list[SchedulerStatus]:
        return [self.status(i) for i in self.registry.ids()]

    def start(self, scheduler_id: str, *, actor: str) -> None:
        self.calls.append(("start", actor))

    def stop(self, scheduler_id: str, *, actor: str) -> None:
        self.calls.append(("stop", actor))

    def execute(self, scheduler_id: str, *, actor: str) -> str:
        self.calls.append(("execute", actor))
        return "run1"

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        return dict(self.stored.get(scheduler_id, {}))

    def update_settings(self, scheduler_id: str, overrides: Mapping[str, Any]) -> Settings:
        self.stored[scheduler_id] = dict(overrides)
        return self.registry.get(scheduler_id).defaults.with_overrides(overrides)

    def reset_settings(self, scheduler_id: str) -> Settings:
        self.stored.pop(scheduler_id, None)
        return self.registry.get(scheduler_id).defaults


class ListTrail:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def add_audit(self, entry: AuditEntry) -> None:
        self.entries.append(entry)

    def audit(
        self, *, scheduler_id: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[tuple[int, AuditEntry]]:
        return list(enumerate(self.entries))[::-1][:limit]


@pytest.fixture
def wired() -> tuple[UseCases, RecordingBackend, ListTrail]:
    use_cases = UseCases(Registry())
    use_cases.configure(
        su(),
        Options(
            id="job",
            name="Job",
            kind=Kind.SCHEDULE,
            runner=lambda ctx: None,
            defaults=Settings(pause_time=timedelta(seconds=10)),
        ),
    )
    backend = RecordingBackend(use_cases.registry)
    trail = ListTrail()
    use_cases.bind(backend, trail, clock=FakeClock(datetime(2026, 1, 1, tzinfo=UTC)))  # type: ignore[arg-type]
    return use_cases, backend, trail


def test_unbound_use_cases_say_no_backend_runs() -> None:
    with pytest.raises(BackendError, match="no backend"):
        UseCases(Registry()).list(su())


def test_only_su_may_configure() -> None:
    use_cases = UseCases(Registry())
    options = Options(id="x", name="X", kind=Kind.MANUAL, runner=lambda ctx: None)
    with pytest.raises(PermissionDenied):
        use_cases.configure(with_role("alice", "admin"), options)
    use_cases.configure(su(), options)
    assert use_cases.registry.ids() == ["x"]


def test_viewer_reads_but_cannot_control(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    use_cases, backend, trail = wired
    viewer = with_role("vera", "viewer")
    assert [s.id for s in use_cases.list(viewer)] == ["job"]
    for control in (use_cases.start, use_cases.stop, use_cases.execute):
        with pytest.raises(PermissionDenied) as caught:
            control(viewer, "job")
        assert caught.value.subject == "vera"
    with pytest.raises(PermissionDenied):
        use_cases.update_settings(viewer, "job", {"disabled": True})
    assert backend.calls == []
    assert trail.entries == []


def test_controls_are_audited_with_the_actor(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    use_cases, backend, trail = wired
    operator = with_role("olga", "operator")
    use_cases.stop(operator, "job")
    assert use_cases.execute(operator, "job") == "run1"
    use_cases.start(operator, "job")
    assert backend.calls == [("stop", "olga"), ("execute", "olga"), ("start", "olga")]
    assert [(e.actor, e.action, e.scheduler_id) for e in trail.entries] == [
        ("olga", "stop", "job"),
        ("olga", "execute", "job"),
        ("olga", "start", "job"),
    ]
    assert trail.entries[1].detail == "run run1"


def test_settings_update_records_before_and_after(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    use_cases, backend, trail = wired
    admin = with_role("ada", "admin")
    view = use_cases.update_settings(admin, "job", {"pause_time": timedelta(seconds=3)})
    assert view.effective.pause_time == timedelta(seconds=3)
    assert dict(view.overrides) == {"pause_time": timedelta(seconds=3)}
    # A later change keeps the earlier override; setting a value back to its default drops it.
    use_cases.update_settings(admin, "job", {"disabled": True})
    assert backend.stored["job"] == {"pause_time": timedelta(seconds=3), "disabled": True}
    use_cases.update_settings(admin, "job", {"pause_time": timedelta(seconds=10)})
    assert backend.stored["job"] == {"disabled": True}
    entry = trail.entries[0]
    assert entry.before is not None and entry.after is not None
    assert entry.before["pause_time"] == 10.0
    assert entry.after["pause_time"] == 3.0


def test_invalid_settings_change_nothing(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    use_cases, backend, trail = wired
    admin = with_role("ada", "admin")
    with pytest.raises(DefinitionError) as caught:
        use_cases.update_settings(
            admin, "job", {"pause_time": timedelta(seconds=1), "timezone": "Not/AZone"}
        )
    assert caught.value.field == "timezone"
    with pytest.raises(DefinitionError) as zero:
        use_cases.update_settings(admin, "job", {"pause_time": timedelta(0)})
    assert zero.value.field == "pause_time"
    assert backend.stored == {}
    assert trail.entries == []


def test_reset_deletes_overrides(wired: tuple[UseCases, RecordingBackend, ListTrail]) -> None:
    use_cases, backend, trail = wired
    admin = with_role("ada", "admin")
    use_cases.update_settings(admin, "job", {"disabled": True})
    view = use_cases.reset_settings(admin, "job")
    assert view.overrides == {}
    assert backend.stored == {}
    assert trail.entries[-1].action == "reset settings"
    assert trail.entries[-1].before is not None and trail.entries[-1].before["disabled"] is True


def test_unknown_scheduler_is_named(wired: tuple[UseCases, RecordingBackend, ListTrail]) -> None:
    use_cases, _, _ = wired
    with pytest.raises(UnknownScheduler, match="'nope'"):
        use_cases.status(su(), "nope")
