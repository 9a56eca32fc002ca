"""Tests of supervisor.store.sqlite against real SQLite files in tmp_path."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import supervisor
from supervisor.core.errors import DefinitionError, StoreError, SupervisorError, UnknownRun
from supervisor.core.records import (
    AuditEntry,
    Level,
    LogRecord,
    Outcome,
    RunRecord,
    Source,
    Trigger,
)
from supervisor.store.sqlite import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    LogStats,
    SqliteStore,
    StoredUser,
    UnfinishedRun,
    _log_query,
    _RunRange,
    state_db_path,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPO = Path(supervisor.__file__).resolve().parent.parent


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return state_db_path(tmp_path / "state")


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(db_path) as opened:
        yield opened


def make_run(
    run_id: str,
    scheduler_id: str = "demo.job",
    *,
    started_at: datetime = T0,
    trigger: Trigger = Trigger.SCHEDULE,
    triggered_by: str | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        scheduler_id=scheduler_id,
        trigger=trigger,
        triggered_by=triggered_by,
        started_at=started_at,
    )


def record(
    run_id: str,
    message: str = "hello",
    *,
    level: Level = Level.INFO,
    fields: Mapping[Any, Any] | None = None,
    source: Source = Source.LOGGER,
    at: datetime = T0,
) -> LogRecord:
    return LogRecord(
        time=at,
        level=level,
        message=message,
        fields=dict(fields or {}),
        run_id=run_id,
        source=source,
    )


def finish(store: SqliteStore, run_id: str, *, at: datetime = T0) -> RunRecord:
    return store.finish_run(
        run_id, ended_at=at, outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None
    )


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection for looking at (or forging) a database from outside the store."""
    return sqlite3.connect(path, isolation_level=None)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


# -- opening, creating, refusing ----------------------------------------------------------


def test_new_database_has_our_header_wal_and_private_mode(db_path: Path) -> None:
    with SqliteStore.open(db_path) as store:
        assert store.path == db_path
        conn = raw(db_path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()
    assert db_path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["state.db"]


def test_connections_use_synchronous_normal_and_a_busy_timeout(store: SqliteStore) -> None:
    with store._read() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    with store._write() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_data_written_before_close_is_there_after_reopen(db_path: Path) -> None:
    with SqliteStore.open(db_path) as store:
        store.insert_run(make_run("r1"))
        store.append_logs([record("r1", "kept")])
        store.set_meta("k", "v")
    with SqliteStore.open(db_path) as store:
        assert store.get_run("r1").run_id == "r1"
        assert [r.message for _, r in store.logs("demo.job")] == ["kept"]
        assert store.get_meta("k") == "v"


def test_empty_file_is_initialised(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.touch()
    with SqliteStore.open(db_path) as store:
        store.set_meta("k", "v")
    with SqliteStore.open(db_path) as store:
        assert store.get_meta("k") == "v"


def test_version_zero_database_of_ours_is_migrated(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.close()
    with SqliteStore.open(db_path) as store:
        store.set_meta("k", "v")
        assert store.get_meta("k") == "v"
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def _refuses(path: Path, *expected: str) -> str:
    """Opening ``path`` raises StoreError naming it, and leaves its bytes as they were."""
    before = path.read_bytes()
    siblings = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(StoreError) as caught:
        SqliteStore.open(path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message
    for text in expected:
        assert text in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == siblings
    return message


def test_random_bytes_are_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(os.urandom(8192))
    _refuses(db_path, "not a SQLite database")


def test_text_file_is_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_text("[settings]\nthis is not a database\n")
    _refuses(db_path, "not a SQLite database")


def test_truncated_database_is_refused_untouched(db_path: Path) -> None:
    with SqliteStore.open(db_path) as store:
        store.insert_run(make_run("r1"))
        store.append_logs([record("r1", "x" * 500) for _ in range(200)])
    data = db_path.read_bytes()
    assert len(data) > 8 * 4096
    db_path.write_bytes(data[: len(data) // 2])
    _refuses(db_path, "truncated")


def test_database_cut_inside_its_header_is_refused(db_path: Path) -> None:
    with SqliteStore.open(db_path):
        pass
    db_path.write_bytes(db_path.read_bytes()[:60])
    _refuses(db_path, "not a SQLite database")


def test_foreign_database_is_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    conn.close()
    _refuses(db_path, "not a sched-supervisor database")


def test_foreign_application_id_is_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE runs (x)")
    conn.close()
    _refuses(db_path, "not a sched-supervisor database", "0x4d2")


def test_newer_schema_is_refused_untouched(db_path: Path) -> None:
    with SqliteStore.open(db_path):
        pass
    conn = raw(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    _refuses(db_path, "newer", f"schema version {SCHEMA_VERSION + 1}")


def test_newer_schema_only_in_the_wal_is_refused(db_path: Path) -> None:
    """The header in the main file may lag the WAL: what SQLite sees counts too."""
    with SqliteStore.open(db_path):
        pass
    holder = raw(db_path)  # keeps the WAL from being checkpointed away
    holder.execute("PRAGMA wal_autocheckpoint = 0")
    holder.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    try:
        with pytest.raises(StoreError, match="newer"):
            SqliteStore.open(db_path)
    finally:
        holder.close()


def test_directory_in_place_of_the_file_is_refused(db_path: Path) -> None:
    db_path.mkdir(parents=True)
    with pytest.raises(StoreError, match="not a regular file"):
        SqliteStore.open(db_path)


def test_directory_that_cannot_be_created_gives_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError) as caught:
        SqliteStore.open(blocker / "state" / "state.db")
    assert str(blocker) in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_unwritable_directory_gives_store_error(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="not writable"):
            SqliteStore.open(directory / "state.db")
    finally:
        directory.chmod(0o700)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_read_only_database_gives_store_error(db_path: Path) -> None:
    with SqliteStore.open(db_path):
        pass
    db_path.chmod(0o400)
    with pytest.raises(StoreError, match="not readable and writable"):
        SqliteStore.open(db_path)


def test_store_errors_are_supervisor_errors() -> None:
    assert issubclass(StoreError, SupervisorError)


def test_calls_after_close_raise_store_error(db_path: Path) -> None:
    store = SqliteStore.open(db_path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.get_meta("k")
    with pytest.raises(StoreError, match="closed"):
        store.set_meta("k", "v")


def test_limits_must_be_positive(db_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteStore.open(db_path, max_runs_per_scheduler=0)
    with pytest.raises(ValueError):
        SqliteStore.open(db_path, max_log_bytes_per_run=0)


# -- settings overrides -------------------------------------------------------------------


def test_overrides_round_trip_every_value_type(store: SqliteStore) -> None:
    overrides = {
        "start_delay": timedelta(seconds=90),
        "pause_time": timedelta(days=2, seconds=5, microseconds=7),
        "timeout": None,
        "cron": "*/5 * * * *",
        "timezone": "Europe/Berlin",
        "disabled": True,
    }
    store.set_overrides("a.job", overrides)
    assert store.overrides("a.job") == overrides
    assert store.overrides("other.job") == {}
    store.set_overrides("b.job", {"disabled": False})
    assert store.all_overrides() == {"a.job": overrides, "b.job": {"disabled": False}}


def test_overrides_are_replaced_as_a_whole(store: SqliteStore) -> None:
    store.set_overrides("a.job", {"disabled": True, "cron": "0 * * * *"})
    store.set_overrides("a.job", {"pause_time": timedelta(minutes=5)})
    assert store.overrides("a.job") == {"pause_time": timedelta(minutes=5)}
    store.set_overrides("a.job", {})
    assert store.all_overrides() == {}


def test_overrides_are_stored_as_readable_json(store: SqliteStore, db_path: Path) -> None:
    store.set_overrides("a.job", {"start_delay": timedelta(seconds=90), "disabled": True})
    conn = raw(db_path)
    text = conn.execute("SELECT settings FROM overrides").fetchone()[0]
    conn.close()
    assert json.loads(text) == {
        "start_delay": {"$type": "duration", "seconds": 90},
        "disabled": True,
    }


def test_delete_overrides(store: SqliteStore) -> None:
    store.set_overrides("a.job", {"disabled": True})
    assert store.delete_overrides("a.job") is True
    assert store.delete_overrides("a.job") is False
    assert store.overrides("a.job") == {}


def test_override_of_an_unstorable_type_is_refused(store: SqliteStore) -> None:
    with pytest.raises(DefinitionError) as caught:
        store.set_overrides("a.job", {"disabled": True, "pause_time": 5.0})
    assert caught.value.field == "pause_time"
    assert store.overrides("a.job") == {}


# -- runs ---------------------------------------------------------------------------------


def test_run_round_trip(store: SqliteStore) -> None:
    run = make_run("r1", trigger=Trigger.MANUAL, triggered_by="alice")
    store.insert_run(run)
    assert store.get_run("r1") == run
    finished = store.finish_run(
        "r1",
        ended_at=T0 + timedelta(seconds=3),
        outcome=Outcome.CRASHED,
        exit_code=None,
        signal=9,
        error="killed by SIGKILL",
    )
    assert finished == RunRecord(
        run_id="r1",
        scheduler_id="demo.job",
        trigger=Trigger.MANUAL,
        triggered_by="alice",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=3),
        outcome=Outcome.CRASHED,
        exit_code=None,
        signal=9,
        error="killed by SIGKILL",
        log_truncated=False,
    )
    assert store.get_run("r1") == finished
    assert finished.started_at.tzinfo is not None
    assert finished.started_at.utcoffset() == timedelta(0)


def test_times_are_returned_in_utc_and_naive_times_refused(store: SqliteStore) -> None:
    berlin = timezone(timedelta(hours=1))
    store.insert_run(make_run("r1", started_at=datetime(2026, 3, 1, 13, 0, tzinfo=berlin)))
    assert store.get_run("r1").started_at == T0
    assert store.get_run("r1").started_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="naive"):
        store.insert_run(make_run("r2", started_at=datetime(2026, 3, 1, 12, 0)))
    with pytest.raises(ValueError, match="naive"):
        store.append_logs([record("r1", at=datetime(2026, 3, 1, 12, 0))])
    assert store.count_logs("r1") == 0


def test_duplicate_run_id_is_a_store_error(store: SqliteStore) -> None:
    store.insert_run(make_run("r1"))
    with pytest.raises(StoreError, match="r1"):
        store.insert_run(make_run("r1"))


def test_unknown_runs(store: SqliteStore) -> None:
    with pytest.raises(UnknownRun):
        store.get_run("nope")
    with pytest.raises(UnknownRun):
        finish(store, "nope")
    with pytest.raises(UnknownRun):
        store.mark_interrupted("nope", ended_at=T0, error=None)
    with pytest.raises(UnknownRun):
        store.set_run_process("nope", pid=1, pgid=1, create_time=1.0)
    with pytest.raises(UnknownRun):
        store.log_stats("nope")
    assert store.count_logs("nope") == 0
    assert store.last_run("demo.job") is None
    assert store.last_finished_run("demo.job") is None
    assert store.runs("demo.job") == []


def test_runs_newest_first_and_last_runs(store: SqliteStore) -> None:
    for i in range(5):
        store.insert_run(make_run(f"r{i}", started_at=T0 + timedelta(minutes=i)))
    store.insert_run(make_run("other", "other.job", started_at=T0 + timedelta(hours=1)))
    assert [r.run_id for r in store.runs("demo.job")] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r.run_id for r in store.runs("demo.job", limit=2)] == ["r4", "r3"]
    assert store.runs("demo.job", limit=0) == []
    last = store.last_run("demo.job")
    assert last is not None and last.run_id == "r4"
    assert store.last_finished_run("demo.job") is None
    finish(store, "r1", at=T0 + timedelta(minutes=30))
    finish(store, "r3", at=T0 + timedelta(minutes=20))
    last_finished = store.last_finished_run("demo.job")
    assert last_finished is not None and last_finished.run_id == "r1"


def test_last_trigger_time(store: SqliteStore) -> None:
    store.insert_run(make_run("a", started_at=T0, trigger=Trigger.CRON))
    store.insert_run(make_run("b", started_at=T0 + timedelta(hours=1), trigger=Trigger.MANUAL))
    store.insert_run(make_run("c", started_at=T0 + timedelta(hours=2), trigger=Trigger.CRON))
    assert store.last_trigger_time("demo.job", Trigger.CRON) == T0 + timedelta(hours=2)
    assert store.last_trigger_time("demo.job", Trigger.MANUAL) == T0 + timedelta(hours=1)
    assert store.last_trigger_time("demo.job", Trigger.MISSED) is None


def test_unfinished_runs_carry_their_process(store: SqliteStore) -> None:
    store.insert_run(make_run("a"))
    store.insert_run(make_run("b", "other.job", started_at=T0 + timedelta(seconds=1)))
    store.insert_run(make_run("done", started_at=T0 - timedelta(hours=1)))
    finish(store, "done")
    store.set_run_process("a", pid=4242, pgid=4242, create_time=1767225600.25)
    assert store.unfinished_runs() == [
        UnfinishedRun(run=make_run("a"), pid=4242, pgid=4242, create_time=1767225600.25),
        UnfinishedRun(
            run=make_run("b", "other.job", started_at=T0 + timedelta(seconds=1)),
            pid=None,
            pgid=None,
            create_time=None,
        ),
    ]
    store.mark_interrupted("a", ended_at=T0 + timedelta(minutes=1), error="manager died")
    interrupted = store.get_run("a")
    assert interrupted.outcome is Outcome.INTERRUPTED
    assert interrupted.ended_at == T0 + timedelta(minutes=1)
    assert interrupted.error == "manager died"
    assert [u.run.run_id for u in store.unfinished_runs()] == ["b"]


def test_retention_keeps_the_newest_runs_and_deletes_the_logs_of_the_rest(
    db_path: Path,
) -> None:
    with SqliteStore.open(db_path, max_runs_per_scheduler=3) as store:
        store.insert_run(make_run("keep-me", "other.job"))
        store.append_logs([record("keep-me", "other scheduler")])
        finish(store, "keep-me")
        for i in range(6):
            run_id = f"r{i}"
            store.insert_run(make_run(run_id, started_at=T0 + timedelta(minutes=i)))
            store.append_logs([record(run_id, f"{run_id} line {n}") for n in range(3)])
            finish(store, run_id, at=T0 + timedelta(minutes=i, seconds=30))
        assert [r.run_id for r in store.runs("demo.job")] == ["r5", "r4", "r3"]
        for gone in ("r0", "r1", "r2"):
            with pytest.raises(UnknownRun):
                store.get_run(gone)
        messages = [r.message for _, r in store.logs("demo.job", limit=1000)]
        assert messages == [f"r{i} line {n}" for i in (3, 4, 5) for n in range(3)]
        assert [r.message for _, r in store.logs("other.job")] == ["other scheduler"]
    conn = raw(db_path)
    assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 10
    conn.close()


def test_retention_never_deletes_an_unfinished_run(db_path: Path) -> None:
    with SqliteStore.open(db_path, max_runs_per_scheduler=1) as store:
        store.insert_run(make_run("old-running", started_at=T0))
        store.insert_run(make_run("new", started_at=T0 + timedelta(minutes=1)))
        finish(store, "new")
        assert store.get_run("old-running").outcome is None
        store.mark_interrupted("old-running", ended_at=T0 + timedelta(minutes=2), error=None)
        assert [r.run_id for r in store.runs("demo.job")] == ["new"]


def test_cursors_are_not_reused_after_retention_deletes_the_newest_records(
    db_path: Path,
) -> None:
    with SqliteStore.open(db_path, max_runs_per_scheduler=1) as store:
        store.insert_run(make_run("a", started_at=T0))
        store.append_logs([record("a", "from a")])
        finish(store, "a")
        ((cursor_a, _),) = store.logs("demo.job")
        store.insert_run(make_run("b", started_at=T0 + timedelta(minutes=1)))
        finish(store, "b")  # deletes a's record: the newest in the table
        assert store.logs("demo.job") == []
    with SqliteStore.open(db_path) as store:
        store.insert_run(make_run("c", started_at=T0 + timedelta(minutes=2)))
        store.append_logs([record("c", "from c")])
        ((cursor_c, _),) = store.logs("demo.job")
        assert cursor_c > cursor_a


# -- logs ---------------------------------------------------------------------------------


def test_log_records_round_trip(store: SqliteStore) -> None:
    store.insert_run(make_run("r1"))
    originals = [
        record("r1", "plain", source=Source.STDOUT, at=T0 + timedelta(microseconds=1)),
        record(
            "r1",
            "with fields: ünïcode ✓",
            level=Level.ERROR,
            fields={"value": 42, "nested": {"list": [1, 2.5, None, True]}, "text": "é"},
            at=T0 + timedelta(seconds=1),
        ),
        record("r1", "", level=Level.CRITICAL, source=Source.STDERR, at=T0 + timedelta(days=1)),
    ]
    store.append_logs(originals)
    got = store.logs("demo.job")
    assert [r for _, r in got] == originals
    cursors = [c for c, _ in got]
    assert cursors == sorted(cursors) and len(set(cursors)) == 3


def test_odd_field_values_and_broken_text_never_fail_a_batch(store: SqliteStore) -> None:
    store.insert_run(make_run("r1"))
    store.append_logs(
        [
            record(
                "r1",
                "bad \udcff surrogate",
                fields={"when": T0, "delay": timedelta(seconds=1), "level": Level.INFO, 7: "x"},
            ),
            record("r1", "tuple", fields={"pair": (1, 2), "obj": object}),
        ]
    )
    (_, first), (_, second) = store.logs("demo.job")
    assert first.message == "bad \ufffd surrogate"
    assert first.fields == {
        "when": str(T0),
        "delay": "0:00:01",
        "level": 20,
        "7": "x",
    }
    assert second.fields["pair"] == [1, 2]
    assert second.fields["obj"] == str(object)


def test_records_of_unknown_runs_are_dropped_and_the_rest_kept(store: SqliteStore) -> None:
    store.insert_run(make_run("r1"))
    store.append_logs([record("ghost", "lost"), record("r1", "kept")])
    assert [r.message for _, r in store.logs("demo.job")] == ["kept"]
    store.append_logs([])


@pytest.fixture
def paged(store: SqliteStore) -> SqliteStore:
    """Two schedulers; demo.job has runs a (i = 0..49) and b (i = 50..99) with mixed levels."""
    store.insert_run(make_run("a", started_at=T0))
    store.insert_run(make_run("x", "other.job", started_at=T0))
    batch: list[LogRecord] = []
    for i in range(100):
        if i == 50:
            store.append_logs(batch)
            finish(store, "a")
            store.insert_run(make_run("b", started_at=T0 + timedelta(minutes=1)))
            batch = []
        level = Level.ERROR if i % 10 == 0 else Level.WARNING if i % 5 == 0 else Level.INFO
        batch.append(record("a" if i < 50 else "b", f"m{i}", level=level, fields={"i": i}))
        batch.append(record("x", f"other {i}", level=Level.ERROR))
    store.append_logs(batch)
    return store


def indexes(rows: list[tuple[int, LogRecord]]) -> list[int]:
    return [int(r.fields["i"]) for _, r in rows]


def test_logs_newest_page_then_before_then_after(paged: SqliteStore) -> None:
    newest = paged.logs("demo.job", limit=10)
    assert indexes(newest) == list(range(90, 100))
    older = paged.logs("demo.job", before=newest[0][0], limit=10)
    assert indexes(older) == list(range(80, 90))
    newer = paged.logs("demo.job", after=older[-1][0], limit=5)
    assert indexes(newer) == list(range(90, 95))
    first = paged.logs("demo.job", after=0, limit=3)
    assert indexes(first) == [0, 1, 2]
    assert paged.logs("demo.job", after=newest[-1][0]) == []
    between = paged.logs("demo.job", after=older[0][0], before=newest[0][0], limit=100)
    assert indexes(between) == list(range(81, 90))
    assert indexes(paged.logs("demo.job", limit=1000)) == list(range(100))
    assert paged.logs("demo.job", limit=0) == []
    assert paged.logs("unknown.job") == []


def test_logs_min_level(paged: SqliteStore) -> None:
    errors = paged.logs("demo.job", min_level=Level.ERROR)
    assert indexes(errors) == list(range(0, 100, 10))
    warnings = paged.logs("demo.job", min_level=Level.WARNING, limit=4)
    assert indexes(warnings) == [80, 85, 90, 95]
    back = paged.logs("demo.job", min_level=Level.WARNING, before=warnings[0][0], limit=4)
    assert indexes(back) == [60, 65, 70, 75]
    forward = paged.logs("demo.job", min_level=Level.WARNING, after=back[-1][0], limit=2)
    assert indexes(forward) == [80, 85]
    assert len(paged.logs("demo.job", min_level=Level.DEBUG, limit=1000)) == 100
    assert paged.logs("demo.job", min_level=Level.CRITICAL) == []


def test_logs_of_one_run(paged: SqliteStore) -> None:
    assert indexes(paged.logs("demo.job", run_id="a", limit=1000)) == list(range(50))
    assert indexes(paged.logs("demo.job", run_id="b", limit=5)) == list(range(95, 100))
    errors_a = paged.logs("demo.job", run_id="a", min_level=Level.ERROR)
    assert indexes(errors_a) == [0, 10, 20, 30, 40]
    after = paged.logs("demo.job", run_id="b", after=errors_a[-1][0], limit=3)
    assert indexes(after) == [50, 51, 52]
    assert all(r.run_id == "b" for _, r in after)
    assert paged.logs("other.job", run_id="a") == []  # a run of another scheduler
    assert paged.logs("demo.job", run_id="nope") == []
    assert paged.count_logs("a") == 50
    assert paged.count_logs("x") == 100


def test_log_queries_read_ranges_of_the_index() -> None:
    """Every shape of log query is an index search: no table scan, at any size."""
    conn = sqlite3.connect(":memory:")
    for step in MIGRATIONS:
        for statement in step:
            conn.execute(statement)
    shapes: list[dict[str, Any]] = [
        {},
        {"before": 10},
        {"after": 10},
        {"levels": [Level.ERROR, Level.CRITICAL]},
        {"run_range": _RunRange(1, 5, 500)},
        {"run_range": _RunRange(1, 5, 500), "levels": [Level.CRITICAL], "after": 7},
    ]
    for shape in shapes:
        arguments: dict[str, Any] = {
            "levels": list(Level),
            "run_range": None,
            "after": None,
            "before": None,
            "limit": 200,
            **shape,
        }
        sql, params = _log_query("demo.job", **arguments)
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        assert not [step for step in plan if re.match(r"SCAN (logs|l)\b", step)], (shape, plan)
        assert any("USING COVERING INDEX logs_by_level" in step for step in plan), plan
    conn.close()


# -- the per-run log cap ------------------------------------------------------------------


def test_log_cap_stores_one_marker_and_counts_what_it_drops(db_path: Path) -> None:
    with SqliteStore.open(db_path, max_log_bytes_per_run=1000) as store:
        store.insert_run(make_run("r1"))
        store.insert_run(make_run("r2", "other.job"))
        # Each record: 90 bytes of message + 10 bytes of fields JSON ({"n":1234}).
        store.append_logs([record("r1", "m" * 90, fields={"n": 1000 + i}) for i in range(8)])
        assert store.log_stats("r1") == LogStats(
            stored_records=8, dropped_records=0, stored_bytes=800, dropped_bytes=0
        )
        store.append_logs(
            [
                record("r1", "m" * 90, fields={"n": 2000 + i}, at=T0 + timedelta(seconds=i))
                for i in range(5)
            ]
            + [record("r2", "unaffected")]
        )
        stats = store.log_stats("r1")
        assert stats.stored_records == 11  # 10 records + the marker
        assert stats.dropped_records == 3
        assert stats.dropped_bytes == 300
        assert store.count_logs("r1") == 11
        rows = store.logs("demo.job", run_id="r1", limit=100)
        marker = rows[-1][1]
        assert marker.level is Level.WARNING
        assert marker.source is Source.LOGGER
        assert marker.message == (
            "log truncated: this run exceeded 1000 bytes of log; later records were dropped"
        )
        assert marker.fields == {"limit_bytes": 1000}
        assert marker.time == T0 + timedelta(seconds=2)  # when the first dropped record came
        assert store.get_run("r1").log_truncated is True
        assert store.get_run("r2").log_truncated is False
        assert [r.message for _, r in store.logs("other.job")] == ["unaffected"]
        finished = finish(store, "r1")
        assert finished.log_truncated is True

    with SqliteStore.open(db_path, max_log_bytes_per_run=1000) as store:
        store.append_logs([record("r1", "late", fields={})])
        after = store.log_stats("r1")
        assert after.dropped_records == 4
        assert after.stored_records == 11
        assert store.count_logs("r1") == 11


def test_log_cap_marker_speaks_in_mebibytes(db_path: Path) -> None:
    with SqliteStore.open(db_path) as store:
        store.insert_run(make_run("r1"))
        line = "x" * 1000
        store.append_logs([record("r1", line) for _ in range(1100)])
        ((_, marker),) = store.logs("demo.job", min_level=Level.WARNING)
        assert marker.message == (
            "log truncated: this run exceeded 1.0 MiB of log; later records were dropped"
        )
        assert marker.fields == {"limit_bytes": 1 << 20}
        stats = store.log_stats("r1")
        assert stats.stored_records == 1048 + 1
        assert stats.dropped_records == 1100 - 1048


def test_log_byte_count_survives_a_restart(db_path: Path) -> None:
    with SqliteStore.open(db_path, max_log_bytes_per_run=1000) as store:
        store.insert_run(make_run("r1"))
        store.append_logs([record("r1", "a" * 600)])
    with SqliteStore.open(db_path, max_log_bytes_per_run=1000) as store:
        assert store.log_stats("r1").stored_bytes == 600
        store.append_logs([record("r1", "b" * 600)])
        assert store.log_stats("r1").dropped_records == 1
        assert [r.message[:1] for _, r in store.logs("demo.job")] == ["a", "l"]


# -- audit, users, meta -------------------------------------------------------------------


def test_audit_round_trip_paging_and_last_actor(store: SqliteStore) -> None:
    entries = [
        AuditEntry(
            time=T0 + timedelta(minutes=i),
            actor=f"user{i}",
            action="update_settings" if i % 2 else "stop",
            scheduler_id="a.job" if i < 4 else "b.job",
            detail=None if i % 2 else f"detail {i}",
            before={"pause_time": timedelta(seconds=i), "disabled": False} if i % 2 else None,
            after={"pause_time": timedelta(seconds=i + 1), "cron": None} if i % 2 else None,
        )
        for i in range(6)
    ]
    for entry in entries:
        store.add_audit(entry)
    store.add_audit(AuditEntry(time=T0, actor="root", action="login", scheduler_id=None))
    got = store.audit(limit=100)
    assert [e for _, e in got][1:] == entries[::-1]
    assert got[0][1].scheduler_id is None
    only_a = store.audit(scheduler_id="a.job", limit=2)
    assert [e.actor for _, e in only_a] == ["user3", "user2"]
    page_two = store.audit(scheduler_id="a.job", limit=2, before=only_a[-1][0])
    assert [e.actor for _, e in page_two] == ["user1", "user0"]
    assert store.last_actor("a.job") == "user3"
    assert store.last_actor("b.job") == "user5"
    assert store.last_actor("c.job") is None
    assert store.audit(limit=0) == []


def test_users(store: SqliteStore) -> None:
    created = T0 + timedelta(days=1)
    store.add_user("bob", role="viewer", password_hash="h1", created_at=created)
    store.add_user("alice", role="admin", password_hash="h2")
    assert store.get_user("bob") == StoredUser(
        name="bob", role="viewer", password_hash="h1", created_at=created
    )
    alice = store.get_user("alice")
    assert alice is not None and alice.created_at.utcoffset() == timedelta(0)
    assert [u.name for u in store.list_users()] == ["alice", "bob"]
    with pytest.raises(DefinitionError, match="already exists") as caught:
        store.add_user("bob", role="admin", password_hash="other")
    assert caught.value.field == "name"
    with pytest.raises(DefinitionError) as bad_role:
        store.add_user("carol", role="wizard", password_hash="h")
    assert bad_role.value.field == "role"
    with pytest.raises(DefinitionError):
        store.add_user(" ", role="viewer", password_hash="h")
    store.set_password("bob", "h3")
    bob = store.get_user("bob")
    assert bob is not None and bob.password_hash == "h3"
    with pytest.raises(DefinitionError):
        store.set_password("nobody", "h")
    assert store.remove_user("bob") is True
    assert store.remove_user("bob") is False
    assert store.get_user("bob") is None
    assert [u.name for u in store.list_users()] == ["alice"]


def test_meta(store: SqliteStore) -> None:
    assert store.get_meta("secret") is None
    store.set_meta("secret", "one")
    store.set_meta("secret", "two")
    assert store.get_meta("secret") == "two"


# -- concurrency and crashes --------------------------------------------------------------


def test_concurrent_writer_and_readers(store: SqliteStore) -> None:
    store.insert_run(make_run("r1"))
    batches, per_batch = 60, 200
    failures: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for b in range(batches):
                store.append_logs(
                    [record("r1", f"b{b} n{n}", fields={"b": b}) for n in range(per_batch)]
                )
                store.set_meta("progress", str(b))
        except BaseException as error:
            failures.append(error)
        finally:
            done.set()

    def read() -> None:
        try:
            seen = 0
            deadline = time.monotonic() + 60
            while not failures and time.monotonic() < deadline:
                finished = done.is_set()
                count = store.count_logs("r1")
                assert count >= seen and count % per_batch == 0  # whole batches only
                seen = count
                rows = store.logs("demo.job", limit=50)
                cursors = [c for c, _ in rows]
                assert cursors == sorted(cursors)
                assert len(rows) == min(50, count) or store.count_logs("r1") > count
                store.runs("demo.job")
                if finished:
                    break
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)
    assert store.count_logs("r1") == batches * per_batch
    assert store.log_stats("r1").stored_records == batches * per_batch


def test_a_killed_process_loses_nothing_it_committed(db_path: Path) -> None:
    """A writer is SIGKILLed mid-stream; every batch it reported committed is there."""
    script = textwrap.dedent(
        """
        import sys
        from datetime import UTC, datetime
        from pathlib import Path
        from supervisor.core.records import Level, LogRecord, RunRecord, Source, Trigger
        from supervisor.store.sqlite import SqliteStore

        store = SqliteStore.open(Path(sys.argv[1]))
        now = datetime.now(UTC)
        store.insert_run(RunRecord(run_id="r1", scheduler_id="demo.job",
                                   trigger=Trigger.MANUAL, triggered_by=None, started_at=now))
        batch = 0
        while True:
            store.append_logs([LogRecord(time=now, level=Level.INFO, message=f"{batch}:{n}",
                                         fields={}, run_id="r1", source=Source.STDOUT)
                               for n in range(100)])
            batch += 1
            print(batch, flush=True)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(db_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdout is not None
    committed = 0
    deadline = time.monotonic() + 30
    while committed < 20 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        committed = int(line)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert committed >= 20
    assert (db_path.parent / "state.db-wal").exists()  # it died without closing
    with SqliteStore.open(db_path) as store:
        assert store.count_logs("r1") >= committed * 100
        assert store.log_stats("r1").stored_records == store.count_logs("r1")
        assert len(store.logs("demo.job", run_id="r1", limit=1_000_000)) == store.count_logs("r1")
    conn = raw(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_process_exiting_without_close_loses_nothing(db_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from datetime import UTC, datetime
        from pathlib import Path
        from supervisor.store.sqlite import SqliteStore

        store = SqliteStore.open(Path(sys.argv[1]))
        store.set_overrides("a.job", {"disabled": True})
        store.set_meta("k", "v")
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", script, str(db_path)], check=True, env=child_env())
    with SqliteStore.open(db_path) as store:
        assert store.overrides("a.job") == {"disabled": True}
        assert store.get_meta("k") == "v"


def test_two_stores_on_one_file_see_each_others_commits(db_path: Path) -> None:
    with SqliteStore.open(db_path) as first, SqliteStore.open(db_path) as second:
        first.add_user("alice", role="admin", password_hash="h")
        assert second.get_user("alice") is not None
        second.set_meta("k", "v")
        assert first.get_meta("k") == "v"
