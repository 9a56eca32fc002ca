"""The log writer: batches from many runs become few store calls; flush is a barrier."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from supervisor.core.records import Level, LogRecord, Source
from supervisor.manager.logwriter import LogWriter

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(i: int) -> LogRecord:
    return LogRecord(time=NOW, level=Level.INFO, message=f"m{i}", run_id="r", source=Source.STDOUT)


class SlowStore:
    """Counts calls; the first call waits so later batches pile up behind it."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.stored: list[str] = []
        self.release = threading.Event()
        self.fail = fail

    def append_logs(self, records: Sequence[LogRecord]) -> None:
        self.release.wait(10)
        if self.fail:
            raise OSError("disk full")
        self.calls.append(len(records))
        self.stored.extend(r.message for r in records)


def test_batches_are_merged_and_flush_waits_for_all() -> None:
    store = SlowStore()
    writer = LogWriter(store)  # type: ignore[arg-type]
    writer.start()
    try:
        for start in range(0, 100, 10):
            writer.submit([record(i) for i in range(start, start + 10)])
        store.release.set()
        assert writer.flush(10)
        assert store.stored == [f"m{i}" for i in range(100)]
        # Ten submissions, far fewer store transactions.
        assert len(store.calls) < 10
    finally:
        writer.close()


def test_a_failing_store_loses_the_batch_loudly_and_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = SlowStore(fail=True)
    store.release.set()
    writer = LogWriter(store)  # type: ignore[arg-type]
    writer.start()
    try:
        writer.submit([record(1)])
        assert writer.flush(10)
        assert writer.failures == 1
        store.fail = False
        writer.submit([record(2)])
        assert writer.flush(10)
        assert store.stored == ["m2"]
    finally:
        writer.close()
    assert "could not store 1 log record(s): disk full" in capsys.readouterr().err
