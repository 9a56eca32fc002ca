"""The notification watcher over a real ``state.db`` that becomes corrupt: it says once
that it cannot look, backs off while the store stays unreadable (no line per look), says
once when it can look again, and then tells the run that ended meanwhile."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from supervisor.core.clock import FakeClock
from supervisor.core.errors import StoreError
from supervisor.core.records import Outcome, RunRecord, SchedulerStatus, Trigger
from supervisor.notify.dispatch import Dispatcher, RetryPolicy
from supervisor.notify.feed import RunFeed
from supervisor.notify.watcher import MAX_BACKOFF_SECONDS, Routing, Watcher
from supervisor.store.sqlite import SqliteStore, state_db_path
from tests.fake_sources import T0, FakeSource

CANNOT = "notification watcher: cannot look at the schedulers"
AGAIN = "notification watcher: looking at the schedulers works again after "


class StoreSource:
    """The statuses a test edits; the runs read from a real SQLite store."""

    def __init__(self, store: SqliteStore) -> None:
        self.statuses_of = FakeSource()
        self.store = store

    def statuses(self) -> list[SchedulerStatus]:
        return self.statuses_of.statuses()

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        return self.store.runs(scheduler_id, limit=limit)


def failed_run(run_id: str, scheduler_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        scheduler_id=scheduler_id,
        trigger=Trigger.SCHEDULE,
        triggered_by=None,
        started_at=T0,
    )


def corrupt(path: Path) -> None:
    """Checkpoint the WAL into the file, then overwrite every page after the first."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = b"\x55" * (len(data) - page)
    path.write_bytes(bytes(data))


def test_a_corrupt_store_is_said_once_by_the_watcher_which_backs_off(tmp_path: Path) -> None:
    clock, err = FakeClock(T0), io.StringIO()
    dispatcher = Dispatcher(retry=RetryPolicy(attempts=1), err=err)
    path = state_db_path(tmp_path / "state")
    with SqliteStore.open(path) as store:
        source = StoreSource(store)
        scheduler_id = source.statuses_of.status.id
        watcher = Watcher(
            source, Routing(), dispatcher, app="demo", clock=clock, err=err, journal=False
        )
        try:
            assert watcher.step() == 2.0  # the first look: history, nothing to say
            # A run ends and the file is damaged before the watcher reads it.
            store.insert_run(failed_run("r1", scheduler_id))
            store.finish_run(
                "r1", ended_at=T0, outcome=Outcome.FAILED, exit_code=1, signal=None, error="boom"
            )
            status = source.statuses_of.status
            source.statuses_of.status = replace(
                status, last_started_at=T0, last_completed_at=T0, last_outcome=Outcome.FAILED
            )
            corrupt(path)
            pauses = []
            for _ in range(12):
                pause = watcher.step()
                pauses.append(pause)
                clock.advance(pause)
            assert err.getvalue().count(CANNOT) == 1, err.getvalue()
            assert "malformed" in err.getvalue()
            assert pauses[:6] == [2.0, 4.0, 8.0, 16.0, 32.0, MAX_BACKOFF_SECONDS]
            assert max(pauses) == MAX_BACKOFF_SECONDS
            lasted = round(sum(pauses))
            # Restored from a backup (here: a fresh file holding the same run).
            with SqliteStore.open(state_db_path(tmp_path / "restored")) as restored:
                restored.insert_run(failed_run("r1", scheduler_id))
                restored.finish_run(
                    "r1",
                    ended_at=T0,
                    outcome=Outcome.FAILED,
                    exit_code=1,
                    signal=None,
                    error="boom",
                )
                source.store = restored
                assert watcher.step() == 2.0
                assert watcher.step() == 2.0
        finally:
            dispatcher.close()
    said = err.getvalue()
    assert said.count(CANNOT) == 1 and said.count(AGAIN) == 1, said
    assert f"{AGAIN}{lasted} s" in said
    # The run that ended while the store could not be read is told now, once.
    assert said.count(f"supervisor: {scheduler_id} run r1 failed (1 in a row): boom") == 1, said


class TwoStores:
    """Two schedulers, each one's runs read from a store of its own."""

    def __init__(self, stores: dict[str, SqliteStore]) -> None:
        base = FakeSource().status
        self.stores = stores
        self.status = {
            sid: replace(base, id=sid, last_started_at=T0, last_completed_at=T0) for sid in stores
        }

    def statuses(self) -> list[SchedulerStatus]:
        return list(self.status.values())

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        return self.stores[scheduler_id].runs(scheduler_id, limit=limit)


def ended(store: SqliteStore, run_id: str, scheduler_id: str, at_seconds: int) -> None:
    store.insert_run(failed_run(run_id, scheduler_id))
    store.finish_run(
        run_id,
        ended_at=T0 + timedelta(seconds=at_seconds),
        outcome=Outcome.FAILED,
        exit_code=1,
        signal=None,
        error="boom",
    )


def test_a_look_that_fails_half_way_loses_no_run_ended_meanwhile(tmp_path: Path) -> None:
    """The first scheduler's runs are read, the second's store is corrupt: the look fails,
    and the first one's new run is handed out by the next look that works."""
    with (
        SqliteStore.open(state_db_path(tmp_path / "a")) as first,
        SqliteStore.open(state_db_path(tmp_path / "b")) as second,
    ):
        source = TwoStores({"a.job": first, "b.job": second})
        feed = RunFeed(source)
        assert [look.ended for look in feed.look()] == [(), ()]
        ended(first, "a1", "a.job", 60)
        ended(second, "b1", "b.job", 60)
        for sid in ("a.job", "b.job"):
            later = T0 + timedelta(seconds=60)
            source.status[sid] = replace(
                source.status[sid], last_started_at=later, last_completed_at=later
            )
        corrupt(state_db_path(tmp_path / "b"))
        with pytest.raises(StoreError, match="malformed"):
            feed.look()
        with SqliteStore.open(state_db_path(tmp_path / "b2")) as restored:
            ended(restored, "b1", "b.job", 60)
            source.stores["b.job"] = restored
            looks = {look.status.id: look for look in feed.look()}
            assert [r.run_id for r in looks["a.job"].ended] == ["a1"]
            assert [r.run_id for r in looks["b.job"].ended] == ["b1"]
            assert all(not look.ended for look in feed.look())  # each handed out once


class SilentFailure:
    """A source whose runs cannot be read, failing with an error that has no message (a
    timeout, say)."""

    def __init__(self) -> None:
        self.statuses_of = FakeSource()

    def statuses(self) -> list[SchedulerStatus]:
        return self.statuses_of.statuses()

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        raise TimeoutError


def test_an_error_without_a_message_is_named_by_its_type() -> None:
    # Regression: the line said "cannot look at the schedulers ()": nothing about why.
    clock, err = FakeClock(T0), io.StringIO()
    dispatcher = Dispatcher(retry=RetryPolicy(attempts=1), err=err)
    source = SilentFailure()
    status = source.statuses_of.status
    source.statuses_of.status = replace(status, last_started_at=T0, last_completed_at=T0)
    watcher = Watcher(
        source, Routing(), dispatcher, app="demo", clock=clock, err=err, journal=False
    )
    try:
        watcher.step()
    finally:
        dispatcher.close()
    said = err.getvalue()
    assert f"{CANNOT} (TimeoutError); " in said, said
