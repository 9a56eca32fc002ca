"""A stop while the store cannot be written, on a real ``state.db`` on a small file system
that is filled and freed again: the stop is done, its audit entry kept in memory, and
written to the store once the store's writes hold again (the store's health tells the
use cases; no other write of the audit is needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from supervisor.core.access import Subject, su, with_role
from supervisor.core.clock import FakeClock
from supervisor.core.definitions import Kind, Options
from supervisor.core.errors import StoreError
from supervisor.core.registry import Registry
from supervisor.service.storewatch import StoreProbe, WatchedStore, as_store
from supervisor.store.sqlite import SqliteStore, state_db_path
from supervisor.usecases.health import StoreHealth
from supervisor.usecases.schedulers import Definitions, UseCases
from tests.fullfs import SmallFilesystem, small_filesystem
from tests.test_usecases import RecordingBackend
from tests.waiting import wait_for

__all__ = ["small_filesystem"]

NOW = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)


def one_job() -> Registry:
    registry = Registry()
    Definitions(registry).configure(
        su(),
        Options(id="job", name="Job", kind=Kind.MANUAL, runner=lambda ctx: None),
    )
    return registry


def test_a_stop_during_a_full_disk_is_done_and_audited_once_space_returns(
    small_filesystem: SmallFilesystem, tmp_path: Path
) -> None:
    clock = FakeClock(start=NOW)
    health = StoreHealth(monotonic=clock.monotonic)
    path = state_db_path(small_filesystem.root / "state")
    alice: Subject = with_role("alice", "operator")
    with SqliteStore.open(path) as raw:
        store = as_store(WatchedStore(raw, health, clock, path=path))
        registry = one_job()
        backend = RecordingBackend(registry)
        use_cases = UseCases(
            registry,
            backend=backend,  # type: ignore[arg-type]
            audit=store,
            clock=clock,
            store_health=health,
        )
        probe = StoreProbe(store, health, clock)
        small_filesystem.fill()
        with pytest.raises(StoreError, match="full"):
            store.set_meta("big", "x" * 50_000)
        note = use_cases.stop(alice, "job", reason="runaway job")
        assert backend.calls == [("stop", "alice")]  # done
        assert note is not None and "disk is full" in note and "kept in memory" in note
        assert raw.audit() == [] and use_cases.pending_audit == 1
        small_filesystem.free()
        assert probe.probe() and raw.audit() == []  # one write ends no outage
        clock.advance(health.settle_seconds)
        assert probe.probe()  # the writes held: the outage ends, the entry is written
        wait_for(lambda: raw.audit(), timeout=10, what="the kept entry stored")
        [(_, entry)] = raw.audit()
        assert (entry.action, entry.actor, entry.scheduler_id, entry.detail) == (
            "stop",
            "alice",
            "job",
            "runaway job",
        )
        assert entry.time == NOW  # when the stop was done, not when it was stored
        wait_for(lambda: use_cases.pending_audit == 0, timeout=10, what="nothing kept")
