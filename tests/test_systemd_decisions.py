"""Decisions in systemd mode, against the fake ``systemctl`` of ``test_systemd_backend``:
who stopped or disabled a scheduler and why is kept and shown while it holds; a timed
pause and retries are refused, naming why."""

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


def test_a_timed_pause_is_refused_naming_why(backend: SystemdBackend, fake: FakeSystemd) -> None:
    calls = len(fake.calls)
    with pytest.raises(BackendError) as caught:
        backend.pause("job.tick", actor="alice", until=NOW + timedelta(hours=2))
    assert "not available in systemd mode" in str(caught.value)
    assert "systemd-run" in str(caught.value) and "2026-03-01 14:00 UTC" in str(caught.value)
    assert len(fake.calls) == calls  # nothing touched


def test_retries_are_refused_in_systemd_mode(backend: SystemdBackend, fake: FakeSystemd) -> None:
    with pytest.raises(BackendError, match="retries are not available in systemd mode"):
        backend.update_settings("job.tick", changed("job.tick", {"retries": 2}))
    assert backend.overrides("job.tick") == {}
