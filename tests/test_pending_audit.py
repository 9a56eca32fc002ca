"""A stop while the store cannot be written, on a real ``state.db`` on a small file system
that is filled and freed again: the stop is done, its audit entry kept in memory, and
written to the store once the store's writes hold again (the store's health tells the
use cases; no other write of the audit is needed)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from supervisor.core.access import Subject, su, with_role
from supervisor.core.clock import FakeClock
from supervisor.core.definitions import Kind, Options
from supervisor.core.errors import StoreError
from supervisor.core.records import AuditEntry
from supervisor.core.registry import Registry
from supervisor.service.storewatch import StoreProbe, WatchedStore, as_store
from supervisor.store.protocols import Store
from supervisor.store.sqlite import SqliteStore, state_db_path
from supervisor.usecases.accounts import Accounts
from supervisor.usecases.health import StoreHealth
from supervisor.usecases.pendingaudit import PendingAudit
from supervisor.usecases.schedulers import Definitions, UseCases
from tests.fullfs import SmallFilesystem, small_filesystem
from tests.test_usecases import RecordingBackend
from tests.test_web_fakes import TEST_COST
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


@dataclass
class Outage:
    """Use cases over a real ``state.db`` on a small file system, its writes watched (a
    failed one begins an outage), with the probe that ends it."""

    raw: SqliteStore  # the store itself, read unwatched
    store: Store  # as the use cases see it
    use_cases: UseCases
    backend: RecordingBackend
    probe: StoreProbe
    clock: FakeClock
    health: StoreHealth
    small_filesystem: SmallFilesystem

    def fill(self) -> None:
        """Fill the file system, and see a write fail: the outage begins."""
        self.small_filesystem.fill()
        with pytest.raises(StoreError, match="full"):
            self.store.set_meta("big", "x" * 50_000)

    def end(self) -> None:
        """Free the file system and probe until the writes have held: the outage ends."""
        self.small_filesystem.free()
        assert self.probe.probe()
        self.clock.advance(self.health.settle_seconds)
        assert self.probe.probe()


def managed_use_cases(
    audit: Store,
    clock: FakeClock,
    health: StoreHealth,
    backend: type[RecordingBackend] = RecordingBackend,
) -> tuple[UseCases, RecordingBackend]:
    """Use cases over ``one_job`` as a manager serves them (with the store's health, so
    an entry the store cannot take is kept), and their backend."""
    registry = one_job()
    made = backend(registry)
    use_cases = UseCases(
        registry,
        backend=made,  # type: ignore[arg-type]
        audit=audit,
        clock=clock,
        store_health=health,
    )
    return use_cases, made


@contextlib.contextmanager
def outage(
    small_filesystem: SmallFilesystem, backend: type[RecordingBackend] = RecordingBackend
) -> Iterator[Outage]:
    clock = FakeClock(start=NOW)
    health = StoreHealth(monotonic=clock.monotonic)
    path = state_db_path(small_filesystem.root / "state")
    with SqliteStore.open(path) as raw:
        store = as_store(WatchedStore(raw, health, clock, path=path))
        use_cases, made = managed_use_cases(store, clock, health, backend)
        probe = StoreProbe(store, health, clock)
        yield Outage(raw, store, use_cases, made, probe, clock, health, small_filesystem)


def test_a_stop_during_a_full_disk_is_done_and_audited_once_space_returns(
    small_filesystem: SmallFilesystem,
) -> None:
    alice: Subject = with_role("alice", "operator")
    with outage(small_filesystem) as down:
        raw, use_cases = down.raw, down.use_cases
        down.fill()
        note = use_cases.stop(alice, "job", reason="runaway job")
        assert down.backend.calls == [("stop", "alice")]  # done
        assert note is not None and "disk is full" in note and "kept in memory" in note
        assert raw.audit() == [] and use_cases.pending_audit == 1
        small_filesystem.free()
        assert down.probe.probe() and raw.audit() == []  # one write ends no outage
        down.clock.advance(down.health.settle_seconds)
        assert down.probe.probe()  # the writes held: the outage ends, the entry is written
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


def test_a_user_change_after_a_kept_stop_is_written_behind_it(
    small_filesystem: SmallFilesystem,
) -> None:
    # Regression: the account use cases wrote their entries straight to the store, ahead
    # of the stop entry kept in memory.
    admin: Subject = with_role("ada", "admin")
    with outage(small_filesystem) as down:
        raw, use_cases = down.raw, down.use_cases
        accounts = Accounts(down.store, clock=down.clock, cost=TEST_COST)
        down.fill()
        assert use_cases.stop(admin, "job", reason="runaway job") is not None
        small_filesystem.free()
        accounts.add(admin, "bob", role="viewer", password="a long new password 1")
        actions = [entry.action for _, entry in reversed(raw.audit())]
        assert actions == ["stop", "add user"], actions
        assert use_cases.pending_audit == 0


class BlockingTrail:
    """A trail whose first write waits until ``release`` is set."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []
        self.writing = threading.Event()
        self.release = threading.Event()

    def add_audit(self, entry: AuditEntry) -> None:
        if not self.entries and not self.release.is_set():
            self.writing.set()
            assert self.release.wait(10)
        self.entries.append(entry)


def entry(action: str) -> AuditEntry:
    return AuditEntry(time=NOW, actor="alice", action=action, scheduler_id="job")


def test_the_entry_being_written_is_not_dropped_when_another_is_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regression: at the limit, ``keep`` dropped (and logged as lost) the head entry that
    # ``write`` was writing at that moment.
    trail = BlockingTrail()
    log = logging.getLogger("tests.pending")
    pending = PendingAudit(trail, log, max_kept=1)
    pending.keep(entry("first"), StoreError("full"))
    writer = threading.Thread(target=pending.write)
    with caplog.at_level(logging.WARNING, logger="tests.pending"):
        writer.start()
        assert trail.writing.wait(10)
        pending.keep(entry("second"), StoreError("full"))
        trail.release.set()
        writer.join(10)
    assert not writer.is_alive()
    assert [e.action for e in trail.entries] == ["first", "second"]
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]
    pending.keep(entry("third"), StoreError("full"))
    pending.keep(entry("fourth"), StoreError("full"))  # nothing being written: dropped
    assert [e.action for e in pending.kept()] == ["fourth"]
