"""A real manager's ``Service.close``: the audit entry kept through an outage is written
by the shutdown's attempt once the store takes writes again (on a real ``state.db`` on a
small file system filled and freed)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from supervisor.core.access import with_role
from supervisor.core.errors import StoreError
from supervisor.service.manager_mode import RunOptions, Service
from supervisor.store.sqlite import SqliteStore, state_db_path
from supervisor.usecases.health import StoreHealth
from tests.fullfs import SmallFilesystem, small_filesystem

__all__ = ["small_filesystem"]

APP = "tests.apps.cli_jobs:cfg"  # manual schedulers and a nightly cron: no runs
GRACE_SECONDS = 0.5


def options(state_dir: Path, *, admin: tuple[str, int] | None = None) -> RunOptions:
    return RunOptions(
        app_spec=APP,
        state_dir=state_dir,
        admin=admin,
        fork_server=False,
        grace_seconds=GRACE_SECONDS,
    )


def test_a_kept_entry_is_written_at_shutdown_once_the_store_takes_writes_again(
    small_filesystem: SmallFilesystem, caplog: pytest.LogCaptureFixture
) -> None:
    state = small_filesystem.root / "state"
    said = io.StringIO()
    service = Service(options(state), log=said)
    # The outage cannot end by itself during the test (its writes would have to hold for
    # an hour), so no recovery writes the entry: only the shutdown's attempt can.
    service.store_health = StoreHealth(settle_seconds=3600)
    service.start()
    try:
        assert service.store is not None and service.use_cases is not None
        small_filesystem.fill()
        with pytest.raises(StoreError, match="full"):
            service.store.set_meta("big", "x" * 50_000)
        note = service.use_cases.stop(with_role("alice", "operator"), "c.hang", reason="disk full")
        assert note is not None and "kept in memory" in note
        small_filesystem.free()
        assert service.use_cases.pending_audit == 1
        assert service.store_health.outage() is not None
    finally:
        with caplog.at_level(logging.WARNING, logger="supervisor.audit"):
            service.close()
    log = said.getvalue()
    assert "could not be written" not in log and "audit entry not written" not in log, log
    written = [r for r in caplog.records if "written to the store now" in r.getMessage()]
    assert [r.threadName for r in written] == ["audit-at-exit"], written
    with SqliteStore.open(state_db_path(state)) as store:
        stored = [(e.action, e.actor, e.scheduler_id, e.detail) for _, e in store.audit()]
    assert ("stop", "alice", "c.hang", "disk full") in stored, stored
