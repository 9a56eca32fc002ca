"""An action audited after it is done (Execute Now) whose own entry the store cannot take,
with nothing kept ahead of it: the entry is kept in memory like a stop's, and written in
order once the store takes writes again. On a real ``state.db``: on a small file system
that is filled and freed again, and on a store whose audit write fails once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from supervisor.core.access import Subject, with_role
from supervisor.core.clock import FakeClock
from supervisor.core.errors import StoreError
from supervisor.core.records import AuditEntry
from supervisor.store.sqlite import SqliteStore, state_db_path
from supervisor.usecases.health import StoreHealth
from tests.fullfs import SmallFilesystem, small_filesystem
from tests.test_pending_audit import managed_use_cases, outage
from tests.test_usecases import RecordingBackend
from tests.waiting import wait_for

__all__ = ["small_filesystem"]

NOW = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)


class CountingBackend(RecordingBackend):
    """Each Execute Now starts a run of its own: run1, run2, …"""

    def execute(self, scheduler_id: str, *, actor: str) -> str:
        super().execute(scheduler_id, actor=actor)
        return f"run{len(self.calls)}"


def details(store: SqliteStore) -> list[tuple[str, str | None]]:
    """The stored audit trail, oldest first: (action, detail)."""
    return [(entry.action, entry.detail) for _, entry in reversed(store.audit())]


def test_an_execute_whose_entry_meets_a_full_disk_is_kept_and_written_once_space_returns(
    small_filesystem: SmallFilesystem, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: the run was started, its entry failed to write and, nothing being kept
    # ahead of it, was only logged as not written: the trail never had it.
    olga: Subject = with_role("olga", "operator")
    with outage(small_filesystem, CountingBackend) as down:
        raw, use_cases, backend = down.raw, down.use_cases, down.backend
        down.fill()
        assert use_cases.pending_audit == 0  # nothing kept ahead of it
        with caplog.at_level(logging.WARNING, logger="supervisor.audit"):
            assert use_cases.execute(olga, "job") == "run1"  # the run is started
        assert backend.calls == [("execute", "olga")]
        assert use_cases.pending_audit == 1 and use_cases.audit_failures == 0
        assert raw.audit() == []
        said = [r.getMessage() for r in caplog.records if r.name == "supervisor.audit"]
        assert any("kept in memory" in line and "execute by olga" in line for line in said), said
        assert not [line for line in said if "not written (the action was done)" in line], said
        down.end()  # the writes held: the outage ends, the entry is written
        wait_for(lambda: raw.audit(), timeout=10, what="the kept entry stored")
        wait_for(lambda: use_cases.pending_audit == 0, timeout=10, what="nothing kept")
        use_cases.start(olga, "job")
        assert details(raw) == [("execute", "run run1"), ("start", None)]
        [(_, stored), _] = reversed(raw.audit())
        assert stored.actor == "olga" and stored.time == NOW  # when it was done


def test_an_execute_whose_entry_fails_once_is_written_before_the_next_entry(
    tmp_path: Path,
) -> None:
    # The store fails one audit write and takes the next (a blip no outage was recorded
    # for): the first Execute Now's entry is kept, then written ahead of the second's.
    clock = FakeClock(start=NOW)
    olga: Subject = with_role("olga", "operator")
    with SqliteStore.open(state_db_path(tmp_path / "state")) as store:
        write = store.add_audit
        failures = ["database or disk is full"]

        def add_audit(entry: AuditEntry) -> None:
            if failures:
                raise StoreError(failures.pop())
            write(entry)

        store.add_audit = add_audit  # type: ignore[method-assign]
        health = StoreHealth(monotonic=clock.monotonic)
        use_cases, _ = managed_use_cases(store, clock, health, CountingBackend)
        assert use_cases.execute(olga, "job") == "run1"
        assert use_cases.pending_audit == 1 and use_cases.audit_failures == 0
        assert store.audit() == []
        clock.advance(1)
        assert use_cases.execute(olga, "job") == "run2"
        assert details(store) == [("execute", "run run1"), ("execute", "run run2")]
        assert use_cases.pending_audit == 0 and use_cases.audit_failures == 0
