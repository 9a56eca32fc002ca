"""Decisions in systemd mode, against the fake ``systemctl`` of ``test_systemd_backend``:
who stopped or disabled a scheduler and why is kept and shown while it holds; a timed
pause is a transient timer that starts the timers at its end; a planned retry shows."""

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


def test_a_pause_stops_the_timers_and_plans_their_start_with_a_transient_timer(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    backend.pause("job.tick", actor="alice", until=UNTIL, reason="backup window")
    assert fake.transient["t-job.tick:resume"] == [
        "systemctl",
        "start",
        "t-job.tick.timer",
        "t-job.tick-start.timer",
    ]
    (run,) = [call for call in fake.calls if call[0] == "systemd-run"]
    assert "--on-calendar=2026-03-01 14:00:00 UTC" in run
    assert ("stop", "t-job.tick.timer", "t-job.tick-start.timer") in fake.verbs()
    status = backend.status("job.tick")
    assert status.state is State.STOPPED and status.next_planned_at is None
    assert status.decision is not None and status.decision.until == UNTIL
    assert status.decision.describe() == (
        "paused until 2026-03-01 14:00 UTC by alice: backup window"
    )


def test_a_pause_ends_when_its_transient_timer_has_fired(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    backend.pause("job.tick", actor="alice", until=UNTIL)
    # what the resume timer does at its end: start the timers; then it is gone
    del fake.units["t-job.tick:resume.timer"]
    fake.units["t-job.tick.timer"].update(ActiveState="active", SubState="waiting")
    status = backend.status("job.tick")
    assert status.state is State.PAUSED and status.decision is None


def test_resume_cancels_the_transient_timer_and_starts_as_start_does(
    backend: SystemdBackend, fake: FakeSystemd, store: SqliteStore
) -> None:
    backend.pause("job.tick", actor="alice", until=UNTIL)
    backend.start("job.tick", actor="bob")
    assert "t-job.tick:resume.timer" not in fake.units
    assert ("stop", "t-job.tick:resume.timer") in fake.verbs()
    assert fake.units["t-job.tick-start.timer"]["SubState"] == "waiting"  # start delay
    assert backend.status("job.tick").decision is None and store.decision("job.tick") is None


def test_stop_replaces_a_pause_and_cancels_its_resume(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    backend.pause("job.tick", actor="alice", until=UNTIL)
    backend.stop("job.tick", actor="bob", reason="for good")
    assert "t-job.tick:resume.timer" not in fake.units
    decision = backend.status("job.tick").decision
    assert decision is not None and decision.kind is DecisionKind.STOPPED


def test_a_disable_ends_a_pause(backend: SystemdBackend, fake: FakeSystemd) -> None:
    backend.pause("job.tick", actor="alice", until=UNTIL)
    backend.update_settings("job.tick", changed("job.tick", {"disabled": True}))
    assert "t-job.tick:resume.timer" not in fake.units
    assert backend.status("job.tick").state is State.DISABLED


def test_a_second_pause_replaces_the_first(backend: SystemdBackend, fake: FakeSystemd) -> None:
    backend.pause("job.tick", actor="alice", until=UNTIL)
    later = UNTIL + timedelta(hours=1)
    backend.pause("job.tick", actor="bob", until=later)
    decision = backend.status("job.tick").decision
    assert decision is not None and decision.until == later and decision.actor == "bob"
    runs = [call for call in fake.calls if call[0] == "systemd-run"]
    assert len(runs) == 2 and "--on-calendar=2026-03-01 15:00:00 UTC" in runs[-1]


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
    assert not fake.transient


def test_a_failed_systemd_run_leaves_the_timers_and_the_decision_as_they_were(
    backend: SystemdBackend, fake: FakeSystemd, store: SqliteStore
) -> None:
    fake.add_unit("t-job.tick:resume.timer", FragmentPath="/etc/elsewhere")  # in the way
    fake.units["t-job.tick:resume.timer"]["LoadState"] = "masked"
    with pytest.raises(BackendError, match="already loaded"):
        backend.pause("job.tick", actor="alice", until=UNTIL)
    assert store.decision("job.tick") is None
    assert fake.units["t-job.tick.timer"]["SubState"] == "waiting"


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
