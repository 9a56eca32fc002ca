"""Use cases: built bound to a backend, permissions are checked, audit is written, settings
apply all or nothing and reach the backend already checked. (Who may do what, pair by
pair: ``test_access``.)"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from supervisor.core.access import su, with_role
from supervisor.core.clock import FakeClock
from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.errors import (
    AlreadyRunning,
    DefinitionError,
    PermissionDenied,
    StoreError,
    UnknownScheduler,
)
from supervisor.core.records import AuditEntry, Decision, SchedulerStatus, State
from supervisor.core.registry import Registry
from supervisor.core.settings import EffectiveSettings, SettingsChange
from supervisor.core.storeproblems import StoreProblem
from supervisor.usecases.accounts import Accounts
from supervisor.usecases.health import StoreHealth
from supervisor.usecases.schedulers import Definitions, UseCases
from tests.test_web_fakes import TEST_COST, MemoryUsers
from tests.waiting import wait_for


class RecordingBackend:
    """Remembers what it was asked; enough of ``Backend`` for the use cases."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.calls: list[tuple[str, str]] = []
        self.stored: dict[str, dict[str, Any]] = {}
        self.applied: list[EffectiveSettings] = []
        self.reasons: list[str | None] = []
        self.disabled_by: list[Decision | None] = []

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

    def stop(self, scheduler_id: str, *, actor: str, reason: str | None = None) -> None:
        self.calls.append(("stop", actor))
        self.reasons.append(reason)

    def pause(
        self, scheduler_id: str, *, actor: str, until: datetime, reason: str | None = None
    ) -> None:
        self.calls.append(("pause", actor))
        self.reasons.append(reason)

    def execute(self, scheduler_id: str, *, actor: str) -> str:
        self.calls.append(("execute", actor))
        return "run1"

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        return dict(self.stored.get(scheduler_id, {}))

    def update_settings(
        self,
        scheduler_id: str,
        settings: EffectiveSettings,
        *,
        disabled_by: Decision | None = None,
    ) -> None:
        self.stored[scheduler_id] = dict(settings.overrides)
        self.applied.append(settings)
        self.disabled_by.append(disabled_by)

    def reset_settings(self, scheduler_id: str) -> None:
        self.stored.pop(scheduler_id, None)


class ListTrail:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []
        self.full = False  # True: every write fails as a full disk does
        self.takes: int | None = None  # a number: that many writes work, then it is full

    def add_audit(self, entry: AuditEntry) -> None:
        if self.takes is not None:
            self.full, self.takes = self.takes <= 0, self.takes - 1
        if self.full:
            raise StoreError("database or disk is full")
        self.entries.append(entry)

    def audit(
        self,
        *,
        scheduler_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
        **_filters: object,
    ) -> list[tuple[int, AuditEntry]]:
        return list(enumerate(self.entries))[::-1][:limit]


@pytest.fixture
def wired() -> tuple[UseCases, RecordingBackend, ListTrail]:
    registry = Registry()
    Definitions(registry).configure(
        su(),
        Options(
            id="job",
            name="Job",
            kind=Kind.SCHEDULE,
            runner=lambda ctx: None,
            defaults=Settings(pause_time=timedelta(seconds=10)),
        ),
    )
    backend = RecordingBackend(registry)
    trail = ListTrail()
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    use_cases = UseCases(registry, backend=backend, audit=trail, clock=clock)  # type: ignore[arg-type]
    return use_cases, backend, trail


def test_use_cases_cannot_be_built_without_their_backend() -> None:
    # Regression: use cases built unbound and bound later answered "no backend is
    # running" wherever a composition root forgot the bind step.
    with pytest.raises(TypeError, match="backend"):
        UseCases(Registry())  # type: ignore[call-arg]


def test_only_su_may_configure() -> None:
    definitions = Definitions(Registry())
    options = Options(id="x", name="X", kind=Kind.MANUAL, runner=lambda ctx: None)
    with pytest.raises(PermissionDenied):
        definitions.configure(with_role("alice", "admin"), options)
    definitions.configure(su(), options)
    assert definitions.registry.ids() == ["x"]


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
    # The audit names what changed, before and after.
    assert [(e.before, e.after) for e in trail.entries] == [
        ({"pause_time": 10.0}, {"pause_time": 3.0}),
        ({"disabled": False}, {"disabled": True}),
        ({"pause_time": 3.0}, {"pause_time": 10.0}),
    ]
    # The backend was handed the checked result, never the raw change.
    assert backend.applied[-1].effective == Settings(
        pause_time=timedelta(seconds=10), disabled=True
    )


def test_a_typed_change_and_a_mapping_are_the_same_change(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    use_cases, backend, _ = wired
    admin = with_role("ada", "admin")
    typed = use_cases.update_settings(admin, "job", SettingsChange(timeout=timedelta(minutes=1)))
    mapped = use_cases.update_settings(admin, "job", {"timeout": timedelta(minutes=1)})
    assert typed == mapped
    with pytest.raises(DefinitionError) as caught:
        use_cases.update_settings(admin, "job", {"colour": "red"})
    assert caught.value.field == "colour"
    assert backend.stored["job"] == {"timeout": timedelta(minutes=1)}


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
    assert (trail.entries[-1].before, trail.entries[-1].after) == (
        {"disabled": True},
        {"disabled": False},
    )


def test_unknown_scheduler_is_named(wired: tuple[UseCases, RecordingBackend, ListTrail]) -> None:
    use_cases, _, _ = wired
    with pytest.raises(UnknownScheduler, match="'nope'"):
        use_cases.status(su(), "nope")


# -- the audit never turns a done action into an error -----------------------------------


def test_a_full_audit_refuses_controls_and_settings_before_acting(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    # Regression: update_settings stored the override, then raised "database or disk is
    # full" from the audit: the caller was told "error" for a change that happened.
    use_cases, backend, trail = wired
    admin = with_role("ada", "admin")
    trail.full = True
    for call in (
        lambda: use_cases.start(admin, "job"),
        lambda: use_cases.update_settings(admin, "job", {"disabled": True}),
        lambda: use_cases.reset_settings(admin, "job"),
    ):
        with pytest.raises(StoreError, match=r"not done: .*database or disk is full"):
            call()
    assert backend.calls == []
    assert backend.stored == {} and backend.applied == []


def test_a_stop_is_done_while_the_audit_cannot_be_written_and_audited_once_it_can(
    wired: tuple[UseCases, RecordingBackend, ListTrail], caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: stop was refused while the store was down (corrupt, full), so an
    # operator could not stop a scheduler during an outage.
    _, backend, trail = wired
    use_cases = with_health(backend, trail)
    alice = with_role("alice", "operator")
    trail.full = True
    with caplog.at_level(logging.WARNING, logger="supervisor.audit"):
        note = use_cases.stop(alice, "job", reason="runaway")
    assert backend.calls == [("stop", "alice")]
    assert note is not None and "database or disk is full" in note
    assert "kept in memory" in note and use_cases.pending_audit == 1
    [kept] = [r.getMessage() for r in caplog.records if r.name == "supervisor.audit"]
    assert "kept in memory" in kept and "stop by alice on job" in kept and "runaway" in kept
    with pytest.raises(StoreError, match="not done"):  # the other controls: refused
        use_cases.start(alice, "job")
    trail.full = False
    assert use_cases.stop(alice, "job") is None  # the kept entry goes first
    assert [(e.action, e.detail) for e in trail.entries] == [("stop", "runaway"), ("stop", None)]
    assert use_cases.pending_audit == 0


def with_health(backend: RecordingBackend, trail: ListTrail) -> UseCases:
    """Use cases as a manager builds them: with a store-health source."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    return UseCases(
        backend.registry,
        backend=backend,  # type: ignore[arg-type]
        audit=trail,
        clock=clock,
        store_health=StoreHealth(monotonic=clock.monotonic),
    )


def test_without_a_manager_a_stop_whose_entry_cannot_be_written_is_refused(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    # Regression: the CLI's own short-lived process (systemd mode, no store health) did
    # the stop and kept its entry in memory, lost when the command exited.
    use_cases, backend, trail = wired
    trail.full = True
    with pytest.raises(StoreError, match=r"stop not done: .*database or disk is full"):
        use_cases.stop(with_role("alice", "operator"), "job", reason="runaway")
    assert backend.calls == [] and use_cases.pending_audit == 0


def test_entries_after_a_kept_one_are_written_behind_it_in_order(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    # Regression: an Execute Now's entry (audited after) was written ahead of the kept
    # stop, and a refused flush still let the next audit-first entry be written.
    _, backend, trail = wired
    use_cases = with_health(backend, trail)
    alice = with_role("alice", "admin")
    trail.full = True
    assert use_cases.stop(alice, "job", reason="runaway") is not None
    use_cases.execute(alice, "job")  # done; its entry kept behind the stop's
    assert use_cases.pending_audit == 2 and use_cases.audit_failures == 0

    trail.takes = 1  # a flapping store: the stop's entry goes in, then it is full again
    with pytest.raises(StoreError, match="start not done"):
        use_cases.start(alice, "job")  # the execute's entry is still kept: refused
    assert ("start", "alice") not in backend.calls
    assert [e.action for e in trail.entries] == ["stop"]
    trail.takes, trail.full = None, False
    use_cases.start(alice, "job")
    assert [e.action for e in trail.entries] == ["stop", "execute", "start"]
    assert use_cases.pending_audit == 0


def test_a_kept_stop_entry_is_written_when_the_store_recovers(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    _, backend, trail = wired
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    health = StoreHealth(monotonic=clock.monotonic)
    use_cases = UseCases(
        backend.registry,
        backend=backend,  # type: ignore[arg-type]
        audit=trail,
        clock=clock,
        store_health=health,
    )
    health.write_failed(at=clock.now(), problem=StoreProblem.DISK_FULL, reason="full")
    trail.full = True
    assert use_cases.stop(with_role("alice", "operator"), "job") is not None
    trail.full = False
    health.write_succeeded()
    clock.advance(health.settle_seconds)
    health.write_succeeded()  # the writes held: the outage ends, the entry is written
    wait_for(lambda: trail.entries, what="the kept entry written")
    assert [(e.action, e.actor) for e in trail.entries] == [("stop", "alice")]
    wait_for(lambda: use_cases.pending_audit == 0, what="nothing kept")


def test_a_full_audit_does_not_fail_an_execute_that_started_a_run(
    wired: tuple[UseCases, RecordingBackend, ListTrail], caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: execute started a run and then raised the audit's StoreError, so an
    # operator retrying got a second run.
    use_cases, backend, trail = wired
    operator = with_role("olga", "operator")
    trail.full = True
    with caplog.at_level(logging.ERROR, logger="supervisor.audit"):
        assert use_cases.execute(operator, "job") == "run1"
    assert backend.calls == [("execute", "olga")]
    assert use_cases.audit_failures == 1
    [message] = [r.getMessage() for r in caplog.records if r.name == "supervisor.audit"]
    assert "execute by olga on job (run run1)" in message and "disk is full" in message


def test_a_control_that_fails_after_its_audit_is_recorded_as_failed(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    use_cases, backend, trail = wired

    def busy(scheduler_id: str, *, actor: str, reason: str | None = None) -> None:
        raise AlreadyRunning(scheduler_id, "r9")

    backend.stop = busy  # type: ignore[method-assign]
    with pytest.raises(AlreadyRunning):
        use_cases.stop(with_role("olga", "operator"), "job")
    assert [(e.action, e.detail) for e in trail.entries] == [
        ("stop", None),
        ("stop failed", "scheduler 'job' is already running (run r9)"),
    ]


def test_configuring_after_the_use_cases_are_built_is_refused_by_name(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    # Regression: a scheduler configured after the backend was built was unknown to it,
    # and its status raised KeyError.
    use_cases, _, _ = wired
    late = Options(id="late.job", name="Late", kind=Kind.MANUAL, runner=lambda ctx: None)
    with pytest.raises(DefinitionError, match=r"'late\.job' is configured after") as caught:
        Definitions(use_cases.registry).configure(su(), late)
    assert caught.value.field == "id"
    assert "late.job" not in use_cases.registry


class FullDirectory(MemoryUsers):
    """Users whose audit trail cannot be written."""

    def add_audit(self, entry: AuditEntry) -> None:
        raise StoreError("database or disk is full")


def test_a_full_audit_refuses_user_changes_before_acting() -> None:
    directory = FullDirectory()
    directory.add_user("leaving", role="viewer", password_hash="x")
    accounts = Accounts(directory, cost=TEST_COST)
    with pytest.raises(StoreError, match="add user not done"):
        accounts.add(su(), "newcomer", role="viewer", password="a long password")
    with pytest.raises(StoreError, match="remove user not done"):
        accounts.remove(su(), "leaving")
    with pytest.raises(StoreError, match="set password not done"):
        accounts.set_password(su(), "leaving", "a new long password")
    assert sorted(directory.users) == ["leaving"]
    assert directory.users["leaving"].password_hash == "x"


# -- decisions ------------------------------------------------------------------------------


def test_a_stop_reason_is_cleaned_audited_and_handed_to_the_backend(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    use_cases, backend, trail = wired
    alice = with_role("alice", "operator")
    use_cases.stop(alice, "job", reason="  ERP\tmaintenance  ")
    assert backend.reasons == ["ERP maintenance"]
    (entry,) = trail.entries
    assert (entry.action, entry.actor, entry.detail) == ("stop", "alice", "ERP maintenance")
    use_cases.stop(alice, "job", reason="   ")
    assert backend.reasons[-1] is None and trail.entries[-1].detail is None
    with pytest.raises(DefinitionError) as caught:
        use_cases.stop(alice, "job", reason="x" * 501)
    assert caught.value.field == "reason" and len(trail.entries) == 2  # nothing written


def test_a_pause_is_audited_with_its_end_and_refused_in_the_past(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    use_cases, backend, trail = wired
    alice = with_role("alice", "operator")
    until = datetime(2026, 1, 1, 18, 0, tzinfo=UTC)
    use_cases.pause(alice, "job", until=until, reason="backup window")
    assert backend.calls[-1] == ("pause", "alice")
    assert trail.entries[-1].detail == "until 2026-01-01T18:00:00+00:00: backup window"
    for bad in (datetime(2025, 12, 31, tzinfo=UTC), datetime(2026, 1, 2)):
        with pytest.raises(DefinitionError) as caught:
            use_cases.pause(alice, "job", until=bad)
        assert caught.value.field == "until"
    assert len(trail.entries) == 1
    viewer = with_role("vera", "viewer")
    with pytest.raises(PermissionDenied):
        use_cases.pause(viewer, "job", until=until)


def test_who_disabled_it_goes_to_the_backend_only_when_it_becomes_disabled(
    wired: tuple[UseCases, RecordingBackend, ListTrail],
) -> None:
    use_cases, backend, trail = wired
    admin = with_role("ada", "admin")
    use_cases.disable(admin, "job", reason="broken upstream")
    (first,) = backend.disabled_by
    assert first is not None and (first.actor, first.reason) == ("ada", "broken upstream")
    assert trail.entries[-1].detail == "disabled: broken upstream"
    use_cases.update_settings(admin, "job", {"pause_time": timedelta(minutes=3)})
    assert backend.disabled_by[-1] is None  # still disabled: the reason stays as it was
    use_cases.enable(admin, "job")
    assert backend.disabled_by[-1] is None and backend.applied[-1].effective.disabled is False
    use_cases.update_settings(admin, "job", {"disabled": True})  # settings --disable
    last = backend.disabled_by[-1]
    assert last is not None and last.reason is None and last.actor == "ada"
