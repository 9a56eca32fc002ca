"""Store problems read from real SQLite errors, the watched store telling the health cell,
the cell keeping a write outage while the log writer still owes what it kept, and the
log writer's memory bound (oldest dropped, counted and marked) against a real state.db."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from supervisor.core.clock import FakeClock
from supervisor.core.errors import StoreError, UnknownRun
from supervisor.core.records import Level, LogQuery, LogRecord, Outcome, RunRecord, Source, Trigger
from supervisor.core.storeproblems import Backlog, StoreProblem, classify
from supervisor.manager.logwriter import LogWriter
from supervisor.service.storewatch import StoreProbe, WatchedStore, as_store, not_writable
from supervisor.store.sqlite import SqliteStore, state_db_path
from supervisor.usecases.health import StoreHealth, StoreTrouble
from tests.waiting import wait_for

NOW = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)


def sqlite_error(
    path: Path, statement: str, *, uri: str | None = None, timeout: float = 5.0
) -> sqlite3.Error:
    conn = sqlite3.connect(
        uri or str(path), uri=uri is not None, isolation_level=None, timeout=timeout
    )
    try:
        conn.execute(statement)
    except sqlite3.Error as error:
        return error
    finally:
        conn.close()
    raise AssertionError(f"{statement!r} did not fail")


def as_store_error(error: sqlite3.Error) -> StoreError:
    try:
        raise StoreError(f"state database x: {error}") from error
    except StoreError as wrapped:
        return wrapped


def test_problems_are_read_from_real_sqlite_errors(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (x PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
        read_only = sqlite_error(db, "INSERT INTO t VALUES (2)", uri=f"file:{db}?mode=ro")
        conn.execute("BEGIN EXCLUSIVE")
        busy = sqlite_error(db, "INSERT INTO t VALUES (3)", timeout=0)
        conn.execute("COMMIT")
        duplicate = sqlite_error(db, "INSERT INTO t VALUES (1)")
    assert classify(as_store_error(read_only)) is StoreProblem.READ_ONLY
    assert classify(as_store_error(busy)) is StoreProblem.LOCKED
    assert classify(as_store_error(duplicate)) is None  # the input's fault, not the store's
    corrupt_db = tmp_path / "c.db"
    with contextlib.closing(sqlite3.connect(corrupt_db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [("y" * 500,)] * 200)
    data = bytearray(corrupt_db.read_bytes())
    data[4096:] = b"\x55" * (len(data) - 4096)
    corrupt_db.write_bytes(bytes(data))
    corrupt = sqlite_error(corrupt_db, "INSERT INTO t VALUES (2)")
    assert classify(as_store_error(corrupt)) is StoreProblem.CORRUPT
    assert classify(OSError(28, "No space left on device")) is StoreProblem.DISK_FULL
    assert classify(UnknownRun("no run r")) is None
    assert classify(StoreError("state database x is closed")) is None


def test_a_write_outage_lasts_until_what_was_kept_is_stored() -> None:
    clock = FakeClock(start=NOW)
    health = StoreHealth(monotonic=clock.monotonic)
    health.write_failed(at=NOW, problem=StoreProblem.DISK_FULL, reason="disk\n full")
    health.note_backlog(Backlog(kept_records=7, dropped_records=2))
    health.write_failed(at=NOW + timedelta(seconds=9), problem=StoreProblem.DISK_FULL, reason="x")
    outage = health.outage()
    assert outage is not None and outage.since == NOW  # the streak's start stays
    trouble = StoreTrouble.of(outage, NOW + timedelta(seconds=42))
    assert trouble.text == (
        "disk full since 03:00:00 UTC (42 s): x; 7 log record(s) kept to store, 2 dropped"
        " (counted in their runs' logs)"
    )
    health.write_succeeded()  # small writes went through; the kept records did not yet
    clock.advance(health.settle_seconds)
    health.write_succeeded()
    assert health.outage() is not None
    health.note_backlog(Backlog())
    assert health.outage() is None and not health.writes_failing
    # The PostgreSQL lock's finding wins while both are there.
    health.write_failed(at=NOW, problem=StoreProblem.LOCKED, reason="locked")
    health.unreachable(since=NOW, reason="refused")
    assert health.outage().problem is StoreProblem.UNREACHABLE  # type: ignore[union-attr]
    health.reachable()
    assert health.outage().problem is StoreProblem.LOCKED  # type: ignore[union-attr]


def run(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        scheduler_id="demo.job",
        trigger=Trigger.MANUAL,
        triggered_by="ada",
        started_at=NOW,
    )


def records(first: int, count: int) -> list[LogRecord]:
    return [
        LogRecord(
            time=NOW + timedelta(microseconds=i),
            level=Level.INFO,
            message=f"m{i}",
            run_id="r",
            source=Source.STDOUT,
        )
        for i in range(first, first + count)
    ]


def messages(store: SqliteStore) -> list[str]:
    found = store.logs(LogQuery(scheduler_id="demo.job", limit=10_000))
    return [r.message for _, r in found]


def test_a_locked_state_db_is_told_and_the_writer_keeps_within_its_bound(
    tmp_path: Path,
) -> None:
    """A real state.db held by another connection's BEGIN EXCLUSIVE: the watched store
    tells "locked", the log writer keeps the newest 300 records, drops (counts and marks)
    the oldest, and stores the kept ones in order once the lock is let go; the outage ends
    with whichever write succeeds first (the writer's retry or the probe)."""
    path = state_db_path(tmp_path / "state")
    health = StoreHealth()
    clock = FakeClock(start=NOW)
    reports: list[str] = []
    with SqliteStore.open(path) as raw:
        raw.insert_run(run("r"))
        watched = WatchedStore(raw, health, clock, path=path)
        store = as_store(watched)
        writer = LogWriter(store, retry_seconds=0.05, report=reports.append, max_kept_records=300)
        writer.start()
        holder = sqlite3.connect(path, isolation_level=None, timeout=0)
        probe = StoreProbe(store, health, clock, seconds=0.05)
        try:
            holder.execute("PRAGMA busy_timeout = 0")
            holder.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreError, match="locked"):
                store.set_meta("k", "v")  # waits the 10 s busy timeout, then fails
            outage = health.outage()
            assert outage is not None and outage.problem is StoreProblem.LOCKED
            for batch in range(5):
                writer.submit(records(batch * 100, 100))
            assert writer.flush(60)
            assert writer.kept_records == 300 and writer.lost_records == 200
            outage = health.outage()
            assert outage is not None and outage.backlog == Backlog(
                kept_records=300, dropped_records=200
            )
            probe.start()
            holder.execute("COMMIT")
            wait_for(lambda: health.outage() is None, timeout=60, what="the outage's end")
            assert writer.healthy and writer.kept_records == 0
        finally:
            probe.close()
            writer.close()
            if holder.in_transaction:
                holder.execute("ROLLBACK")
            holder.close()
        stored = messages(raw)
        assert stored[0].startswith("log incomplete: 200 records")
        assert stored[1:] == [f"m{i}" for i in range(200, 500)]
        assert raw.log_stats("r").dropped_records == 200
        raw.finish_run(
            "r", ended_at=NOW, outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None
        )
    assert any("keeping log records in memory (at most 300" in m for m in reports), reports


def test_an_immutable_journal_is_named_as_what_cannot_be_written(tmp_path: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    wal = tmp_path / "state.db-wal"
    wal.write_bytes(b"")
    assert not_writable(tmp_path / "state.db") is None
    result = subprocess.run(["chattr", "+i", str(wal)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {result.stderr.strip()}")
    try:
        assert not_writable(tmp_path / "state.db") == f"{wal} is not writable"
    finally:
        subprocess.run(["chattr", "-i", str(wal)], check=True)


def test_records_of_a_failure_that_is_not_the_stores_are_counted_lost_at_once() -> None:
    class Refusing:
        def __init__(self) -> None:
            self.lost: list[int] = []

        def append_logs(self, batch: Sequence[LogRecord]) -> None:
            raise UnknownRun("no run r")

        def add_lost_logs(self, lost: object) -> None:
            raise UnknownRun("no run r")

    writer = LogWriter(Refusing(), retry_seconds=0.05, report=lambda _: None)  # type: ignore[arg-type]
    writer.start()
    try:
        writer.submit(records(0, 10))
        assert writer.flush(10)
        assert writer.kept_records == 0 and writer.lost_records == 10
    finally:
        writer.close()


def test_a_write_is_wrapped_once_and_a_write_patched_later_is_the_one_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watched store keeps one wrapper per write (not one per call); the wrapper looks
    the write up on the store at each call, so a test's patch made afterwards still
    counts, and its failure is still told."""
    path = state_db_path(tmp_path / "state")
    health = StoreHealth(settle_seconds=0)
    with SqliteStore.open(path) as raw:
        watched = WatchedStore(raw, health, FakeClock(start=NOW), path=path)
        first = watched.set_meta
        first("k", "v1")
        assert watched.set_meta is first
        assert raw.get_meta("k") == "v1"

        def full(key: str, value: str) -> None:
            raise StoreError(f"state database {path}: full") from sqlite3_full()

        monkeypatch.setattr(raw, "set_meta", full)
        with pytest.raises(StoreError, match="full"):
            watched.set_meta("k", "v2")
        outage = health.outage()
        assert outage is not None and outage.problem is StoreProblem.DISK_FULL
        monkeypatch.undo()
        watched.set_meta("k", "v3")
        watched.set_meta("k", "v4")  # the writes held (settling takes no time here)
        assert raw.get_meta("k") == "v4" and health.outage() is None


def sqlite3_full() -> sqlite3.Error:
    """A real SQLITE_FULL: a write past a database's page limit."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        conn.execute("PRAGMA max_page_count = 2")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.Error as error:
        return error
    finally:
        conn.close()
    raise AssertionError("the write past max_page_count did not fail")
