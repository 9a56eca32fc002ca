"""The overview's kept runs (``web.overview``): a status read while a run's row is not
stored yet is not taken as what the runs are once the run is running (real manager,
real SQLite)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from supervisor.core.access import su
from supervisor.core.records import RunRecord
from supervisor.store.sqlite import SqliteStore
from supervisor.web.overview import _runs_key
from tests.test_manager import make_service
from tests.waiting import wait_for


def test_the_runs_are_read_again_once_a_run_whose_row_was_late_is_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_PID_DIR", str(tmp_path))
    release, entered = threading.Event(), threading.Event()
    real = SqliteStore.insert_run

    def late(self: SqliteStore, run: RunRecord) -> None:
        if run.scheduler_id == "m.hang":  # the status shows the run before its row is in
            entered.set()
            release.wait(10)
        real(self, run)

    monkeypatch.setattr(SqliteStore, "insert_run", late)
    service = make_service(tmp_path / "state")
    uc = service.use_cases
    starting = threading.Thread(target=lambda: uc.execute(su(), "m.hang"))
    try:
        starting.start()
        wait_for(entered.is_set, what="the run's row being stored")
        before = uc.status(su(), "m.hang")
        run_id = before.current_run_id
        assert run_id is not None
        rows = uc.recent_runs(su(), ["m.hang"], limit=20).get("m.hang", [])
        assert all(row.run_id != run_id for row in rows)  # what an overview read now keeps
        release.set()
        after = wait_for(
            lambda: (s := uc.status(su(), "m.hang")).run_phase == "running" and s,
            what="the run running",
        )
        assert after.current_run_id == run_id
        assert _runs_key(after) != _runs_key(before)  # so the runs are read again
        rows = uc.recent_runs(su(), ["m.hang"], limit=20).get("m.hang", [])
        assert any(row.run_id == run_id for row in rows)
    finally:
        release.set()
        starting.join(10)
        service.close()
