"""Decisions in systemd mode, against the fake ``systemctl`` of ``test_systemd_backend``:
who stopped or disabled a scheduler and why is kept and shown while it holds; a timed
pause disables the timers and writes an enabled resume timer that starts them at its end
(and survives a reboot); a planned retry shows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from supervisor.core.errors import BackendError
from supervisor.core.records import Decision, DecisionKind, State
from supervisor.store.sqlite import SqliteStore
from supervisor.systemd.backend import SystemdBackend
from tests.test_systemd_backend import (  # the fixtures
    NOW,
    FakeSystemd,
    backend,
    changed,
    fake,
    registry,
    store,
)

__all__ = ["backend", "fake", "registry", "store"]


def test_a_stop_reason_is_kept_and_shown_until_started(
    backend: SystemdBackend, store: SqliteStore
) -> None:
    backend.stop("job.tick", actor="alice", reason="ERP maintenance")
    status = backend.status("job.tick")
    assert status.state is State.STOPPED
    assert status.decision is not None
    assert (status.decision.actor, status.decision.reason) == ("alice", "ERP maintenance")
    assert status.decision.describe() == "stopped by alice 2026-03-01 12:00 UTC: ERP maintenance"
    backend.start("job.tick", actor="bob")
    assert backend.status("job.tick").decision is None
    assert store.decision("job.tick") is None


def test_a_stop_reason_is_not_shown_once_systemd_runs_it_again(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    backend.stop("job.tick", actor="alice", reason="ERP maintenance")
    fake.units["t-job.tick.timer"].update(ActiveState="active", SubState="waiting")  # by hand
    status = backend.status("job.tick")
    assert status.state is State.PAUSED and status.decision is None


def test_a_disable_reason_is_kept_while_disabled(backend: SystemdBackend) -> None:
    why = Decision(kind=DecisionKind.DISABLED, actor="alice", at=NOW, reason="broken upstream")
    backend.update_settings("job.tick", changed("job.tick", {"disabled": True}), disabled_by=why)
    assert backend.status("job.tick").decision == why
    backend.stop("job.tick", actor="bob", reason="also stopped")  # the disable's reason stays
    assert backend.status("job.tick").decision == why
    backend.reset_settings("job.tick")
    assert backend.status("job.tick").decision is None


UNTIL = NOW + timedelta(hours=2)
RESUME = "t-job.tick:resume"


@pytest.fixture
def enabled(fake: FakeSystemd) -> FakeSystemd:
    """The tick scheduler's timers enabled, as ``install-units`` leaves them."""
    for name in ("t-job.tick.timer", "t-job.tick-start.timer"):
        fake.units[name]["UnitFileState"] = "enabled"
    return fake


def test_a_pause_disables_the_timers_and_writes_an_enabled_resume_timer(
    backend: SystemdBackend, enabled: FakeSystemd
) -> None:
    fake = enabled
    backend.pause("job.tick", actor="alice", until=UNTIL, reason="backup window")
    timer = (fake.unit_dir / f"{RESUME}.timer").read_text()
    assert "OnCalendar=2026-03-01 14:00:00 UTC\n" in timer and "OnActiveSec=0\n" in timer
    assert "WantedBy=timers.target" in timer
    service = (fake.unit_dir / f"{RESUME}.service").read_text()
    assert "supervisor.systemd.resume" in service and "--until-us" in service
    assert service.rstrip().endswith("t-job.tick.timer t-job.tick-start.timer")
    assert not [call for call in fake.calls if call[0] == "systemd-run"]  # nothing transient
    verbs = fake.verbs()
    assert ("disable", "t-job.tick.timer", "t-job.tick-start.timer") in verbs
    assert ("enable", "--now", f"{RESUME}.timer") in verbs
    assert ("stop", "t-job.tick.timer", "t-job.tick-start.timer") in verbs
    # the resume step runs at once: the timers are stopped by then
    assert verbs.index(("stop", "t-job.tick.timer", "t-job.tick-start.timer")) < verbs.index(
        ("enable", "--now", f"{RESUME}.timer")
    )
    assert fake.units[f"{RESUME}.timer"]["UnitFileState"] == "enabled"
    status = backend.status("job.tick")
    assert status.state is State.STOPPED and status.next_planned_at is None
    assert status.decision is not None and status.decision.until == UNTIL
    assert status.decision.describe() == (
        "paused until 2026-03-01 14:00 UTC by alice: backup window"
    )


def test_a_pause_holds_while_its_resume_step_runs(
    backend: SystemdBackend, enabled: FakeSystemd
) -> None:
    backend.pause("job.tick", actor="alice", until=UNTIL)
    # OnActiveSec=0: the step runs at once (and finds the end still ahead)
    enabled.units[f"{RESUME}.timer"]["SubState"] = "running"
    assert backend.status("job.tick").decision is not None


def test_a_pause_ends_when_its_resume_units_have_gone(
    backend: SystemdBackend, enabled: FakeSystemd
) -> None:
    fake = enabled
    backend.pause("job.tick", actor="alice", until=UNTIL)
    # what the resume step does at the end: enable and start the timers, remove its units
    for suffix in ("timer", "service"):
        (fake.unit_dir / f"{RESUME}.{suffix}").unlink()
        del fake.units[f"{RESUME}.{suffix}"]
    fake.units["t-job.tick.timer"].update(ActiveState="active", SubState="waiting")
    status = backend.status("job.tick")
    assert status.state is State.PAUSED and status.decision is None


def test_resume_removes_the_pause_enables_the_timers_and_starts_as_start_does(
    backend: SystemdBackend, enabled: FakeSystemd, store: SqliteStore
) -> None:
    fake = enabled
    backend.pause("job.tick", actor="alice", until=UNTIL)
    backend.start("job.tick", actor="bob")
    assert f"{RESUME}.timer" not in fake.units
    assert not list(fake.unit_dir.glob("*:resume.*"))
    assert ("disable", f"{RESUME}.timer") in fake.verbs()
    for name in ("t-job.tick.timer", "t-job.tick-start.timer"):
        assert fake.units[name]["UnitFileState"] == "enabled"
    assert fake.units["t-job.tick-start.timer"]["SubState"] == "waiting"  # start delay
    assert backend.status("job.tick").decision is None and store.decision("job.tick") is None


def test_stop_replaces_a_pause_and_enables_the_timers_for_the_next_boot(
    backend: SystemdBackend, enabled: FakeSystemd
) -> None:
    fake = enabled
    backend.pause("job.tick", actor="alice", until=UNTIL)
    backend.stop("job.tick", actor="bob", reason="for good")
    assert f"{RESUME}.timer" not in fake.units
    assert not list(fake.unit_dir.glob("*:resume.*"))
    assert fake.units["t-job.tick.timer"]["UnitFileState"] == "enabled"
    assert fake.units["t-job.tick.timer"]["ActiveState"] == "inactive"
    decision = backend.status("job.tick").decision
    assert decision is not None and decision.kind is DecisionKind.STOPPED


def test_a_disable_ends_a_pause(backend: SystemdBackend, enabled: FakeSystemd) -> None:
    fake = enabled
    backend.pause("job.tick", actor="alice", until=UNTIL)
    backend.update_settings("job.tick", changed("job.tick", {"disabled": True}))
    assert f"{RESUME}.timer" not in fake.units
    assert not list(fake.unit_dir.glob("*:resume.*"))
    assert fake.units["t-job.tick.timer"]["UnitFileState"] == "disabled"  # stays so
    assert backend.status("job.tick").state is State.DISABLED


def test_a_second_pause_replaces_the_first(backend: SystemdBackend, enabled: FakeSystemd) -> None:
    fake = enabled
    backend.pause("job.tick", actor="alice", until=UNTIL)
    later = UNTIL + timedelta(hours=1)
    backend.pause("job.tick", actor="bob", until=later)
    decision = backend.status("job.tick").decision
    assert decision is not None and decision.until == later and decision.actor == "bob"
    timer = (fake.unit_dir / f"{RESUME}.timer").read_text()
    assert "OnCalendar=2026-03-01 15:00:00 UTC\n" in timer
    assert fake.units[f"{RESUME}.timer"]["ActiveState"] == "active"


def test_an_older_transient_resume_timer_is_still_cancelled(
    backend: SystemdBackend, fake: FakeSystemd, store: SqliteStore
) -> None:
    store.set_decision(
        "job.tick", Decision(kind=DecisionKind.PAUSED, actor="alice", at=NOW, until=UNTIL)
    )
    fake.add_unit(
        f"{RESUME}.timer",
        ActiveState="active",
        SubState="waiting",
        FragmentPath=f"/run/systemd/transient/{RESUME}.timer",
    )
    for name in ("t-job.tick.timer", "t-job.tick-start.timer"):
        fake.units[name].update(ActiveState="inactive", SubState="dead")
    assert backend.status("job.tick").decision is not None
    backend.start("job.tick", actor="bob")
    assert f"{RESUME}.timer" not in fake.units


def test_a_pause_is_refused_for_a_disabled_or_stopped_scheduler(
    backend: SystemdBackend, fake: FakeSystemd, store: SqliteStore
) -> None:
    backend.stop("job.tick", actor="bob", reason="ERP maintenance")
    with pytest.raises(BackendError, match=r"stopped by bob .*: ERP maintenance — start it first"):
        backend.pause("job.tick", actor="alice", until=UNTIL)
    assert store.decision("job.tick") is not None
    assert store.decision("job.tick").kind is DecisionKind.STOPPED  # type: ignore[union-attr]
    backend.update_settings("job.cron", changed("job.cron", {"disabled": True}))
    with pytest.raises(BackendError, match=r"job\.cron is disabled: enable it"):
        backend.pause("job.cron", actor="alice", until=UNTIL)
    assert not list(fake.unit_dir.glob("*:resume.*"))


def test_a_failed_pause_leaves_the_timers_and_the_decision_as_they_were(
    backend: SystemdBackend, enabled: FakeSystemd, store: SqliteStore
) -> None:
    fake = enabled
    fake.fail_on.add("enable")
    with pytest.raises(BackendError, match="boom"):
        backend.pause("job.tick", actor="alice", until=UNTIL)
    assert store.decision("job.tick") is None
    assert fake.units["t-job.tick.timer"]["SubState"] == "waiting"
    assert not list(fake.unit_dir.glob("*:resume.*"))


def test_a_file_in_the_way_is_never_overwritten(
    backend: SystemdBackend, enabled: FakeSystemd, store: SqliteStore
) -> None:
    fake = enabled
    (fake.unit_dir / f"{RESUME}.service").write_text("# someone else's\n")
    with pytest.raises(BackendError, match="refusing to overwrite"):
        backend.pause("job.tick", actor="alice", until=UNTIL)
    assert (fake.unit_dir / f"{RESUME}.service").read_text() == "# someone else's\n"
    assert store.decision("job.tick") is None
    assert fake.units["t-job.tick.timer"]["UnitFileState"] == "enabled"


def test_a_manual_scheduler_pauses_without_a_timer(backend: SystemdBackend) -> None:
    backend.pause("job.manual", actor="alice", until=UNTIL)
    status = backend.status("job.manual")
    assert status.state is State.STOPPED and status.decision is not None
    backend._clock.advance(7201)  # type: ignore[attr-defined]  # past its end
    status = backend.status("job.manual")
    assert status.state is State.PAUSED and status.decision is None


def test_a_planned_retry_shows_its_number_and_time(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    fake.add_unit(
        "t-job.cron:retry.timer",
        ActiveState="active",
        SubState="waiting",
        Description="Retry 1 of 2 of scheduler job.cron",
        NextElapseUSecRealtime=f"@{(NOW + timedelta(seconds=30)).timestamp():.0f}",
        FragmentPath="/run/systemd/transient/t-job.cron:retry.timer",
    )
    fake.units["t-job.cron.timer"]["NextElapseUSecRealtime"] = f"@{NOW.timestamp() + 300:.0f}"
    status = backend.status("job.cron")
    assert (status.retry_attempt, status.retries) == (1, 2)
    assert status.next_planned_at == NOW + timedelta(seconds=30)
    backend.stop("job.cron", actor="bob")  # Stop drops a planned retry
    assert "t-job.cron:retry.timer" not in fake.units
