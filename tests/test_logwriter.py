"""The log writer: batches from many runs become few store calls; flush is a barrier; what
the store cannot take is counted and marked once it can. With a real full file system
under a real SQLite file, and with a store that fails on demand."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from supervisor.core.errors import StoreError
from supervisor.core.records import Level, LogQuery, LogRecord, Outcome, RunRecord, Source, Trigger
from supervisor.manager.logwriter import LogWriter
from supervisor.store.memory import MemoryStore
from supervisor.store.protocols import LostLogs
from supervisor.store.sqlite import SqliteStore, state_db_path
from tests.fullfs import SmallFilesystem, small_filesystem
from tests.waiting import wait_for

__all__ = ["small_filesystem"]

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(i: int, run_id: str = "r") -> LogRecord:
    return LogRecord(
        time=NOW + timedelta(microseconds=i),
        level=Level.INFO,
        message=f"m{i}",
        run_id=run_id,
        source=Source.STDOUT,
    )


def run(run_id: str = "r", scheduler_id: str = "demo.job") -> RunRecord:
    return RunRecord(
        run_id=run_id,
        scheduler_id=scheduler_id,
        trigger=Trigger.MANUAL,
        triggered_by=None,
        started_at=NOW,
    )


class FlakyStore(MemoryStore):
    """A complete in-memory store that fails every write while ``broken`` is set, and can
    hold its first append until ``release`` is set (so later batches pile up)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.release = threading.Event()
        self.release.set()
        self.append_calls: list[int] = []

    def _check(self) -> None:
        if self.broken:
            raise StoreError("state database /x/state.db: database or disk is full")

    def append_logs(self, records: Sequence[LogRecord]) -> None:
        self.release.wait(10)
        self._check()
        self.append_calls.append(len(records))
        super().append_logs(records)

    def add_lost_logs(self, lost: LostLogs) -> None:
        self._check()
        super().add_lost_logs(lost)

    def finish_run(self, run_id: str, **end: object) -> RunRecord:  # type: ignore[override]
        self._check()
        return super().finish_run(run_id, **end)  # type: ignore[arg-type]


@pytest.fixture
def flaky() -> FlakyStore:
    store = FlakyStore()
    store.insert_run(run("r"))
    store.insert_run(run("q", "other.job"))
    return store


def messages(store: MemoryStore | SqliteStore, scheduler_id: str = "demo.job") -> list[str]:
    found = store.logs(LogQuery(scheduler_id=scheduler_id, limit=1_000_000))
    return [r.message for _, r in found]


def test_batches_are_merged_and_flush_waits_for_all(flaky: FlakyStore) -> None:
    flaky.release.clear()
    writer = LogWriter(flaky)
    writer.start()
    try:
        for start in range(0, 100, 10):
            writer.submit([record(i) for i in range(start, start + 10)])
        flaky.release.set()
        assert writer.flush(10)
        assert messages(flaky) == [f"m{i}" for i in range(100)]
        # Ten submissions, far fewer store transactions.
        assert len(flaky.append_calls) < 10
        assert writer.healthy
    finally:
        writer.close()


def test_flush_through_waits_for_its_own_batch_only(flaky: FlakyStore) -> None:
    writer = LogWriter(flaky)
    writer.start()
    try:
        assert writer.submit([]) == 0
        assert writer.flush_through(0, timeout=0)  # nothing to wait for: at once
        first = writer.submit([record(0)])
        assert writer.flush_through(first, 10)
        assert messages(flaky) == ["m0"]
        flaky.release.clear()  # the next write is held
        second = writer.submit([record(1)])
        assert second > first
        assert writer.flush_through(first, timeout=0)  # stored already: no wait
        assert not writer.flush_through(second, timeout=0.2)
        flaky.release.set()
        assert writer.flush_through(second, 10)
        assert messages(flaky) == ["m0", "m1"]
    finally:
        flaky.release.set()
        writer.close()
    assert not writer.flush_through(second + 1, timeout=1)  # the writer is gone


def test_flush_through_counts_a_lost_batch_as_done(flaky: FlakyStore) -> None:
    writer = LogWriter(flaky, retry_seconds=3600, report=lambda message: None)
    writer.start()
    try:
        flaky.broken = True
        ticket = writer.submit([record(0)])
        assert writer.flush_through(ticket, 10)
        assert writer.lost_records == 1
    finally:
        writer.close()


def test_lost_records_are_counted_marked_and_reported_once_per_streak(flaky: FlakyStore) -> None:
    reports: list[str] = []
    writer = LogWriter(flaky, retry_seconds=3600, report=reports.append)
    writer.start()
    try:
        writer.submit([record(0)])
        assert writer.flush(10)
        flaky.broken = True
        for batch in range(20):  # a flood while the disk is full
            writer.submit([record(i) for i in range(batch * 50, batch * 50 + 50)])
            writer.submit([record(i, "q") for i in range(3)])
            assert writer.flush(10)
        assert writer.lost_records == 20 * 53
        assert not writer.healthy
        assert len(reports) == 1, reports  # once, not per batch or line
        assert "database or disk is full" in reports[0]
        assert flaky.log_stats("r").dropped_records == 0  # nothing could be written yet
        flaky.broken = False
        writer.submit([record(5000)])  # the next write finds the store working again
        assert writer.flush(10)
        assert writer.healthy
    finally:
        writer.close()
    stats = flaky.log_stats("r")
    assert stats.dropped_records == 1000
    assert stats.dropped_bytes == sum(len(f"m{i}") for i in range(1000))
    assert flaky.log_stats("q").dropped_records == 60
    stored = messages(flaky)
    assert stored[0] == "m0" and stored[-1] == "m5000"
    assert stored[1] == (
        "log incomplete: 1000 records (3.8 KiB) of this run could not be stored"
        " (state database /x/state.db: database or disk is full)"
    )
    assert messages(flaky, "other.job")[0].startswith("log incomplete: 60 records")
    assert len(reports) == 2
    assert "works again" in reports[1] and "1060 log record(s)" in reports[1]


def test_close_reports_what_is_still_owed(flaky: FlakyStore) -> None:
    reports: list[str] = []
    writer = LogWriter(flaky, retry_seconds=3600, report=reports.append)
    writer.start()
    flaky.broken = True
    writer.submit([record(1)])
    writer.close()
    assert len(reports) == 2
    assert "at shutdown" in reports[1] and "1 lost log record(s) of runs ['r']" in reports[1]


def test_disk_full_loses_no_record_silently_and_stores_the_end_row_once_space_returns(
    small_filesystem: SmallFilesystem,
) -> None:
    """Regression: with the state dir on a full file system a flooding run's lines vanished
    with dropped_records=0 and no marker, and its end row was never stored."""
    reports: list[str] = []
    path = state_db_path(small_filesystem.root / "state")
    with SqliteStore.open(path, max_log_bytes_per_run=1 << 40) as store:
        store.insert_run(run("r"))
        # What it keeps in memory must fit the 2 MiB once space returns.
        writer = LogWriter(store, retry_seconds=0.05, report=reports.append, max_kept_records=5000)
        writer.start()
        try:
            writer.submit([record(i) for i in range(100)])
            assert writer.flush(10)
            assert small_filesystem.fill() > 0
            total = 100
            for batch in range(40):  # ~200,000 records of ~50 bytes: far beyond the space
                first = total
                writer.submit(
                    [
                        LogRecord(
                            time=NOW,
                            level=Level.INFO,
                            message=f"flood line {i} of batch {batch}, padded to fill the disk",
                            run_id="r",
                            source=Source.STDOUT,
                        )
                        for i in range(first, first + 5000)
                    ]
                )
                total += 5000
            assert writer.flush(60)
            assert writer.lost_records > 0
            with pytest.raises(StoreError, match="full"):  # what the manager's retry meets
                store.finish_run(
                    "r",
                    ended_at=NOW,
                    outcome=Outcome.SUCCEEDED,
                    exit_code=0,
                    signal=None,
                    error=None,
                )
            assert store.get_run("r").outcome is None
            failing = [m for m in reports if "cannot store" in m]
            assert len(failing) == 1, reports  # once per streak, not per batch
            assert "database or disk is full" in failing[0]

            small_filesystem.free()
            wait_for(lambda: writer.healthy, timeout=30, what="the markers once space returned")
            store.finish_run(  # the manager's retry, once space returned
                "r", ended_at=NOW, outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None
            )
        finally:
            writer.close()
        stats = store.log_stats("r")
        assert stats.dropped_records == writer.lost_records
        assert stats.stored_records + stats.dropped_records == total + 1  # + 1 marker
        finished = store.get_run("r")
        assert finished.outcome is Outcome.SUCCEEDED
        assert finished.log_truncated is True
        marker = [
            r
            for _, r in store.logs(LogQuery(scheduler_id="demo.job", min_level=Level.WARNING))
            if r.message.startswith("log incomplete")
        ]
        assert len(marker) == 1
        assert marker[0].fields["lost_records"] == writer.lost_records
        assert "database or disk is full" in marker[0].message
        assert "works again" in reports[-1]
    # The file is intact and opens again.
    with SqliteStore.open(path) as again:
        assert again.get_run("r").outcome is Outcome.SUCCEEDED


def test_failures_go_to_stderr_by_default(
    flaky: FlakyStore, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = LogWriter(flaky, retry_seconds=3600)
    writer.start()
    try:
        flaky.broken = True
        for i in range(5):
            writer.submit([record(i)])
            assert writer.flush(10)
    finally:
        writer.close()
    err = capsys.readouterr().err
    assert err.count("supervisor: cannot store 1 log record(s): state database /x/state.db") == 1


def test_regression_close_keeps_its_deadline_when_the_store_hangs(flaky: FlakyStore) -> None:
    """A store stuck in a write once held shutdown for as long as it hung."""
    flaky.release.clear()  # the first append hangs (up to 10 s)
    writer = LogWriter(flaky, retry_seconds=3600, report=lambda _message: None)
    writer.start()
    writer.submit([record(1)])
    started = time.monotonic()
    finished = writer.close(timeout=0.3)
    took = time.monotonic() - started
    flaky.release.set()
    assert finished is False
    assert took < 2.0
    assert writer.close(timeout=15) is True  # once the store answers, it ends
