"""The systemd backend feeds the overview's strips: ``recent_runs`` reads the newest runs of
many schedulers in one ``journalctl`` call and gives the same runs ``runs`` gives one by one
(fake ``systemctl``/``journalctl``, a real SQLite store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.core.clock import FakeClock
from supervisor.core.records import Outcome
from supervisor.store.sqlite import SqliteStore
from supervisor.systemd.backend import (
    MESSAGE_JOB_START,
    MESSAGE_UNIT_SUCCESS,
    Systemd,
    SystemdBackend,
)
from supervisor.systemd.journal import EVENT_RUN_END, EVENT_RUN_START
from tests.test_systemd_backend import (
    MONOTONIC_NOW,
    NOW,
    FakeLayout,
    FakeSystemd,
    _run,
    _systemd_message,
    make_registry,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "state" / "state.db") as opened:
        yield opened


@pytest.fixture
def fake(tmp_path: Path) -> FakeSystemd:
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    found = FakeSystemd(unit_dir)
    for name in ("t-job.tick.service", "t-job.manual.service", "t-job.cron.service"):
        found.add_unit(name)
    found.add_unit("t-job.cmd.service")
    for name in ("t-job.tick.timer", "t-job.cron.timer"):
        found.add_unit(name, ActiveState="active", SubState="waiting")
    found.add_unit("t-job.tick-start.timer", ActiveState="active", SubState="elapsed")
    return found


@pytest.fixture
def backend(store: SqliteStore, fake: FakeSystemd) -> SystemdBackend:
    clock = FakeClock(NOW)
    clock.advance(MONOTONIC_NOW - clock.monotonic())
    return SystemdBackend(
        make_registry(), store=store, layout=FakeLayout(), systemd=Systemd(fake), clock=clock
    )


def cron_run(fake: FakeSystemd, start: float, run_id: str, outcome: str) -> None:
    fake.log(
        start,
        UNIT="t-job.cron.service",
        _PID="1",
        INVOCATION_ID=run_id,
        MESSAGE_ID=MESSAGE_JOB_START,
        MESSAGE="started",
    )
    fake.log(
        start + 0.1,
        SCHEDULER_ID="job.cron",
        RUN_ID=run_id,
        SUPERVISOR_EVENT=EVENT_RUN_START,
        SUPERVISOR_TRIGGER="schedule",
    )
    fake.log(
        start + 0.3,
        SCHEDULER_ID="job.cron",
        RUN_ID=run_id,
        SUPERVISOR_EVENT=EVENT_RUN_END,
        SUPERVISOR_OUTCOME=outcome,
        **({"SUPERVISOR_ERROR": "exit code 3"} if outcome != "succeeded" else {}),
    )


def test_recent_runs_of_many_units_come_from_one_journal_read(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    _run(fake, 0, "r1", outcome="succeeded")
    _systemd_message(fake, 0.4, "r1", MESSAGE_UNIT_SUCCESS, "6")
    _run(fake, 10, "r2", outcome="failed")
    _run(fake, 20, "r3", outcome="failed")
    cron_run(fake, 5, "c1", "succeeded")
    cron_run(fake, 15, "c2", "failed")
    fake.calls.clear()
    found = backend.recent_runs(["job.tick", "job.cron", "job.manual"], limit=20)
    journal_calls = [c for c in fake.calls if c[0] == "journalctl"]
    assert len(journal_calls) == 1
    assert [r.run_id for r in found["job.tick"]] == ["r3", "r2", "r1"]
    assert [r.outcome for r in found["job.tick"]] == [
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.SUCCEEDED,
    ]
    assert [r.run_id for r in found["job.cron"]] == ["c2", "c1"]
    assert "job.manual" not in found  # no runs: absent, as the protocol allows
    # the same runs as reading each scheduler on its own
    assert found["job.tick"] == backend.runs("job.tick")
    assert found["job.cron"] == backend.runs("job.cron")
    assert [r.run_id for r in backend.recent_runs(["job.tick"], limit=2)["job.tick"]] == [
        "r3",
        "r2",
    ]
    assert backend.recent_runs([], limit=20) == {}
