"""One conformance suite for every ``store.protocols.Store``: SQLite on a real file, the
in-memory store, and PostgreSQL on a throwaway cluster made with ``initdb`` (skipped, with
the reason, only where no PostgreSQL server binaries or psycopg exist). A new store joins
by adding a factory to ``FACTORIES``.

Every Protocol method, ordering, retention, the log cap and its marker, lost-record
markers, cursors, and errors.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core.errors import DefinitionError, StoreError, UnknownRun
from supervisor.core.records import (
    AuditEntry,
    Decision,
    DecisionKind,
    Level,
    LogQuery,
    LogRecord,
    LogsFound,
    Outcome,
    RunRecord,
    Source,
    Trigger,
)
from supervisor.store.memory import MemoryStore
from supervisor.store.protocols import (
    Changed,
    KeepOne,
    LogStats,
    LostLogs,
    Store,
    StoredUser,
    UnfinishedRun,
    UserChange,
    new_stamp,
)
from supervisor.store.sqlite import SqliteStore, state_db_path
from tests.postgres import PostgresCluster, pg_cluster
from tests.store_values import (
    T0,
    delete_the_newest_record,
    finish,
    make_run,
    record,
    run_six_and_one_other,
)

__all__ = ["pg_cluster"]

# A factory opens a new, empty store with the given limits in a place of its own: a
# directory (``Path``) or, for PostgreSQL, the throwaway cluster (a new database each).
Factory = Callable[..., Store]


def _sqlite(place: Path, **limits: int) -> Store:
    return SqliteStore.open(state_db_path(place), **limits)


def _memory(place: Path, **limits: int) -> Store:
    return MemoryStore(**limits)


def _postgresql(cluster: PostgresCluster, **limits: int) -> Store:
    from supervisor.store.postgres import PostgresStore

    return PostgresStore.open(cluster.create_database(f"c{secrets.token_hex(6)}"), **limits)


FACTORIES: dict[str, Callable[..., Store]] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "postgresql": _postgresql,
}


@pytest.fixture(params=sorted(FACTORIES))
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Opens stores of one implementation; every one is closed after the test."""
    opened: list[Store] = []
    counter = iter(range(1_000_000))
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None

    def make(**limits: int) -> Store:
        place = cluster if cluster is not None else tmp_path / f"s{next(counter)}"
        store = FACTORIES[request.param](place, **limits)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(new_store: Factory) -> Store:
    return new_store()


def logs(store: Store, scheduler_id: str = "demo.job", **query: Any) -> list[tuple[int, LogRecord]]:
    return store.logs(LogQuery(scheduler_id=scheduler_id, **query))


def messages(store: Store, scheduler_id: str = "demo.job", **query: Any) -> list[str]:
    return [r.message for _, r in logs(store, scheduler_id, **query)]


def lost(run_id: str, records: int, size: int, *, at: datetime = T0) -> LostLogs:
    return LostLogs(
        run_id=run_id,
        records=records,
        bytes=size,
        first_time=at,
        last_time=at + timedelta(seconds=1),
        reason="database or disk is full",
    )


# -- lifecycle and errors -----------------------------------------------------------------


def test_calls_after_close_raise_store_error(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: store.get_meta("k"),
        lambda: store.set_meta("k", "v"),
        lambda: store.overrides("a"),
        lambda: store.decision("a"),
        lambda: store.all_decisions(),
        lambda: store.set_decision("a", None),
        lambda: store.insert_run(make_run("r1")),
        lambda: store.runs("demo.job"),
        lambda: store.append_logs([record("r1")]),
        lambda: logs(store),
        lambda: store.audit(),
        lambda: store.list_users(),
    ]
    for call in calls:
        with pytest.raises(StoreError, match="closed"):
            call()


def test_limits_must_be_positive(new_store: Factory) -> None:
    with pytest.raises(ValueError):
        new_store(max_runs_per_scheduler=0)
    with pytest.raises(ValueError):
        new_store(max_log_bytes_per_run=0)


def test_log_query_refuses_negative_numbers() -> None:
    with pytest.raises(ValueError, match="limit"):
        LogQuery(scheduler_id="a", limit=-1)
    with pytest.raises(ValueError, match="after"):
        LogQuery(scheduler_id="a", after=-5)
    with pytest.raises(ValueError, match="before"):
        LogQuery(scheduler_id="a", before=-5)


# -- settings overrides -------------------------------------------------------------------


def test_overrides_round_trip_every_value_type(store: Store) -> None:
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


def test_overrides_are_replaced_as_a_whole_and_copied(store: Store) -> None:
    given: dict[str, Any] = {"disabled": True, "cron": "0 * * * *"}
    store.set_overrides("a.job", given)
    given["disabled"] = False  # the caller's mapping is not the stored one
    assert store.overrides("a.job") == {"disabled": True, "cron": "0 * * * *"}
    store.set_overrides("a.job", {"pause_time": timedelta(minutes=5)})
    assert store.overrides("a.job") == {"pause_time": timedelta(minutes=5)}
    store.set_overrides("a.job", {})
    assert store.all_overrides() == {}


def test_delete_overrides(store: Store) -> None:
    store.set_overrides("a.job", {"disabled": True})
    assert store.delete_overrides("a.job") is True
    assert store.delete_overrides("a.job") is False
    assert store.overrides("a.job") == {}


def test_override_of_an_unstorable_type_is_refused_and_nothing_stored(store: Store) -> None:
    with pytest.raises(DefinitionError) as caught:
        store.set_overrides("a.job", {"disabled": True, "pause_time": 5.0})
    assert caught.value.field == "pause_time"
    with pytest.raises(DefinitionError):
        store.set_overrides("a.job", {7: True})  # type: ignore[dict-item]
    assert store.overrides("a.job") == {}


def test_retries_round_trip_as_a_whole_number(store: Store) -> None:
    store.set_overrides("a.job", {"retries": 3, "retry_delay": timedelta(seconds=45)})
    assert store.overrides("a.job") == {"retries": 3, "retry_delay": timedelta(seconds=45)}
    assert type(store.overrides("a.job")["retries"]) is int


# -- operators' decisions -------------------------------------------------------------------


def test_decisions_round_trip_and_are_replaced_and_deleted(store: Store) -> None:
    paused = Decision(
        kind=DecisionKind.PAUSED,
        actor="alice",
        at=T0,
        reason="ERP maintenance: löschen, 18 Uhr",
        until=T0 + timedelta(hours=6),
    )
    disabled = Decision(kind=DecisionKind.DISABLED, actor="bob", at=T0 + timedelta(minutes=1))
    assert store.decision("a.job") is None and store.all_decisions() == {}
    store.set_decision("a.job", paused)
    store.set_decision("b.job", disabled)
    assert store.decision("a.job") == paused
    assert store.all_decisions() == {"a.job": paused, "b.job": disabled}
    assert store.decision("a.job").at.tzinfo is UTC  # type: ignore[union-attr]
    store.set_decision("a.job", disabled)
    assert store.decision("a.job") == disabled
    store.set_decision("a.job", None)
    store.set_decision("a.job", None)  # deleting nothing is fine
    assert store.all_decisions() == {"b.job": disabled}


def test_a_decision_outlives_a_settings_reset(store: Store) -> None:
    disabled = Decision(kind=DecisionKind.DISABLED, actor="bob", at=T0, reason="broken")
    store.set_overrides("a.job", {"disabled": True})
    store.set_decision("a.job", disabled)
    store.delete_overrides("a.job")
    assert store.decision("a.job") == disabled  # the backend decides what a reset means


def test_only_a_decision_is_stored_as_one(store: Store) -> None:
    with pytest.raises(ValueError, match="Decision"):
        store.set_decision("a.job", {"kind": "paused"})  # type: ignore[arg-type]
    assert store.decision("a.job") is None


def test_decisions_survive_reopening_the_file(tmp_path: Path) -> None:
    path = state_db_path(tmp_path / "state")
    paused = Decision(kind=DecisionKind.PAUSED, actor="alice", at=T0, until=T0 + timedelta(hours=1))
    with SqliteStore.open(path) as first:
        first.set_decision("a.job", paused)
    with SqliteStore.open(path) as second:
        assert second.all_decisions() == {"a.job": paused}


# -- runs ---------------------------------------------------------------------------------


def test_run_round_trip(store: Store) -> None:
    run = make_run("r1", trigger=Trigger.MANUAL, triggered_by="alice")
    store.insert_run(run)
    assert store.get_run("r1") == run
    end: dict[str, Any] = {
        "ended_at": T0 + timedelta(seconds=3),
        "outcome": Outcome.CRASHED,
        "exit_code": None,
        "signal": 9,
        "error": "killed by SIGKILL",
    }
    finished = store.finish_run("r1", **end)
    assert finished == RunRecord(
        run_id="r1",
        scheduler_id="demo.job",
        trigger=Trigger.MANUAL,
        triggered_by="alice",
        started_at=T0,
        log_truncated=False,
        **end,
    )
    assert store.get_run("r1") == finished
    # Storing the same end again (a retry) stores the same row.
    assert store.finish_run("r1", **end) == finished
    with pytest.raises(ValueError):
        store.finish_run(
            "r1",
            ended_at=T0,
            outcome="succeeded",
            exit_code=0,
            signal=None,
            error=None,  # type: ignore[arg-type]
        )


def test_times_are_returned_in_utc_and_naive_times_refused(store: Store) -> None:
    berlin = timezone(timedelta(hours=1))
    store.insert_run(make_run("r1", started_at=datetime(2026, 3, 1, 13, 0, tzinfo=berlin)))
    got = store.get_run("r1").started_at
    assert got == T0 and got.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="naive"):
        store.insert_run(make_run("r2", started_at=datetime(2026, 3, 1, 12, 0)))
    with pytest.raises(ValueError, match="naive"):
        store.append_logs([record("r1", at=datetime(2026, 3, 1, 12, 0))])
    with pytest.raises(ValueError, match="naive"):
        store.finish_run(
            "r1",
            ended_at=datetime(2026, 3, 1, 12, 0),
            outcome=Outcome.SUCCEEDED,
            exit_code=0,
            signal=None,
            error=None,
        )
    with pytest.raises(ValueError, match="naive"):
        store.add_audit(
            AuditEntry(time=datetime(2026, 3, 1), actor="a", action="x", scheduler_id=None)
        )
    assert store.count_logs("r1") == 0
    assert store.get_run("r1").outcome is None
    assert store.audit() == []


def test_duplicate_run_id_is_a_store_error(store: Store) -> None:
    store.insert_run(make_run("r1"))
    with pytest.raises(StoreError, match="r1"):
        store.insert_run(make_run("r1", "other.job"))
    assert store.runs("other.job") == []


def test_unknown_runs(store: Store) -> None:
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
    with pytest.raises(UnknownRun):
        store.add_lost_logs(lost("nope", 1, 10))
    assert store.count_logs("nope") == 0
    assert store.last_run("demo.job") is None
    assert store.last_finished_run("demo.job") is None
    assert store.runs("demo.job") == []
    assert store.unfinished_runs() == []


def test_runs_newest_first_and_last_runs(store: Store) -> None:
    for i in range(5):
        store.insert_run(make_run(f"r{i}", started_at=T0 + timedelta(minutes=i)))
    store.insert_run(make_run("other", "other.job", started_at=T0 + timedelta(hours=1)))
    assert [r.run_id for r in store.runs("demo.job")] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r.run_id for r in store.runs("demo.job", limit=2)] == ["r4", "r3"]
    assert store.runs("demo.job", limit=0) == []
    assert store.runs("demo.job", limit=-1) == []
    last = store.last_run("demo.job")
    assert last is not None and last.run_id == "r4"
    assert store.last_finished_run("demo.job") is None
    finish(store, "r1", at=T0 + timedelta(minutes=30))
    finish(store, "r3", at=T0 + timedelta(minutes=20))
    last_finished = store.last_finished_run("demo.job")
    assert last_finished is not None and last_finished.run_id == "r1"


def test_recent_runs_of_many_schedulers_in_one_read(store: Store) -> None:
    ids = ["demo.job", "other.job", "tie.job", "idle.job"]
    assert store.recent_runs(ids, limit=3) == {}
    for i in range(5):
        store.insert_run(make_run(f"r{i}", started_at=T0 + timedelta(minutes=i)))
    store.insert_run(make_run("o0", "other.job", started_at=T0))
    store.insert_run(make_run("tie-a", "tie.job", started_at=T0))
    store.insert_run(make_run("tie-b", "tie.job", started_at=T0))
    store.insert_run(make_run("n0", "not.asked", started_at=T0))
    finish(store, "r4", at=T0 + timedelta(minutes=30))
    recent = store.recent_runs(ids, limit=3)
    assert {sid: [r.run_id for r in runs] for sid, runs in recent.items()} == {
        "demo.job": ["r4", "r3", "r2"],
        "other.job": ["o0"],
        "tie.job": ["tie-b", "tie-a"],
    }
    assert recent["demo.job"][0] == store.get_run("r4")
    assert recent["demo.job"][0].outcome is Outcome.SUCCEEDED
    only = store.recent_runs(["other.job", "other.job"], limit=20)
    assert {sid: [r.run_id for r in runs] for sid, runs in only.items()} == {"other.job": ["o0"]}
    assert store.recent_runs(ids, limit=0) == {}
    assert store.recent_runs(ids, limit=-1) == {}
    assert store.recent_runs([], limit=3) == {}


def test_runs_started_at_the_same_time_come_newest_inserted_first(store: Store) -> None:
    for run_id in ("a", "b", "c"):
        store.insert_run(make_run(run_id))
    assert [r.run_id for r in store.runs("demo.job")] == ["c", "b", "a"]
    for run_id in ("a", "b"):
        finish(store, run_id)
    last = store.last_finished_run("demo.job")
    assert last is not None and last.run_id == "b"


def test_last_trigger_time(store: Store) -> None:
    store.insert_run(make_run("a", started_at=T0, trigger=Trigger.CRON))
    store.insert_run(make_run("b", started_at=T0 + timedelta(hours=1), trigger=Trigger.MANUAL))
    store.insert_run(make_run("c", started_at=T0 + timedelta(hours=2), trigger=Trigger.CRON))
    store.insert_run(make_run("d", "other.job", started_at=T0 + timedelta(hours=3)))
    assert store.last_trigger_time("demo.job", Trigger.CRON) == T0 + timedelta(hours=2)
    assert store.last_trigger_time("demo.job", Trigger.MANUAL) == T0 + timedelta(hours=1)
    assert store.last_trigger_time("demo.job", Trigger.MISSED) is None


def test_unfinished_runs_carry_their_process(store: Store) -> None:
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
    # Regression: shutdown's "interrupted" once overwrote an end a watcher had just stored.
    store.finish_run(
        "b",
        ended_at=T0 + timedelta(minutes=2),
        outcome=Outcome.SUCCEEDED,
        exit_code=0,
        signal=None,
        error=None,
    )
    store.mark_interrupted("b", ended_at=T0 + timedelta(minutes=3), error="shut down")
    ended = store.get_run("b")
    assert (ended.outcome, ended.ended_at, ended.error) == (
        Outcome.SUCCEEDED,
        T0 + timedelta(minutes=2),
        None,
    )


def test_retention_keeps_the_newest_runs_and_deletes_the_logs_of_the_rest(
    new_store: Factory,
) -> None:
    store = new_store(max_runs_per_scheduler=3)
    run_six_and_one_other(store)
    assert [r.run_id for r in store.runs("demo.job")] == ["r5", "r4", "r3"]
    for gone in ("r0", "r1", "r2"):
        with pytest.raises(UnknownRun):
            store.get_run(gone)
        assert store.count_logs(gone) == 0
    assert messages(store, limit=1000) == [f"r{i} line {n}" for i in (3, 4, 5) for n in range(3)]
    assert messages(store, "other.job") == ["other scheduler"]
    # Records arriving late for a run that retention removed are dropped.
    store.append_logs([record("r0", "too late")])
    assert "too late" not in messages(store, limit=1000)


def test_retention_never_deletes_an_unfinished_run(new_store: Factory) -> None:
    store = new_store(max_runs_per_scheduler=1)
    store.insert_run(make_run("old-running", started_at=T0))
    store.insert_run(make_run("new", started_at=T0 + timedelta(minutes=1)))
    finish(store, "new")
    assert store.get_run("old-running").outcome is None
    store.mark_interrupted("old-running", ended_at=T0 + timedelta(minutes=2), error=None)
    assert [r.run_id for r in store.runs("demo.job")] == ["new"]


def test_cursors_are_not_reused_after_retention_deletes_the_newest_records(
    new_store: Factory,
) -> None:
    store = new_store(max_runs_per_scheduler=1)
    cursor_a = delete_the_newest_record(store)
    assert logs(store) == []
    store.insert_run(make_run("c", started_at=T0 + timedelta(minutes=2)))
    store.append_logs([record("c", "from c")])
    ((cursor_c, _),) = logs(store)
    assert cursor_c > cursor_a > 0


# -- logs ---------------------------------------------------------------------------------


def test_log_records_round_trip(store: Store) -> None:
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
    got = logs(store)
    assert [r for _, r in got] == originals
    cursors = [c for c, _ in got]
    assert cursors == sorted(cursors) and len(set(cursors)) == 3
    assert store.log_stats("r1").stored_records == 3


def test_odd_field_values_and_broken_text_never_fail_a_batch(store: Store) -> None:
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
    (_, first), (_, second) = logs(store)
    assert first.message == "bad \ufffd surrogate"
    assert first.fields == {"when": str(T0), "delay": "0:00:01", "level": 20, "7": "x"}
    assert second.fields["pair"] == [1, 2]
    assert second.fields["obj"] == str(object)


def test_nul_characters_in_messages_and_fields_round_trip(store: Store) -> None:
    # Output of a child may hold NUL; PostgreSQL text cannot, so that store keeps bytes.
    store.insert_run(make_run("r1"))
    store.append_logs([record("r1", "a\x00b", fields={"k": "\x00"}), record("r1", "plain")])
    assert [(r.message, r.fields) for _, r in logs(store)] == [
        ("a\x00b", {"k": "\x00"}),
        ("plain", {}),
    ]
    assert store.log_stats("r1").stored_bytes == len("a\x00b") + len('{"k":"\\u0000"}') + 5


def test_records_of_unknown_runs_are_dropped_and_the_rest_kept(store: Store) -> None:
    store.insert_run(make_run("r1"))
    store.append_logs([record("ghost", "lost"), record("r1", "kept")])
    assert messages(store) == ["kept"]
    store.append_logs([])
    assert store.count_logs("r1") == 1


def test_a_batch_is_stored_whole_or_not_at_all(store: Store) -> None:
    store.insert_run(make_run("r1"))
    with pytest.raises(ValueError):
        store.append_logs([record("r1", "first"), record("r1", at=datetime(2026, 1, 1))])
    assert logs(store) == []
    assert store.log_stats("r1") == LogStats(stored_records=0, dropped_records=0, stored_bytes=0)


@pytest.fixture
def paged(store: Store) -> Store:
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


def test_logs_newest_page_then_before_then_after(paged: Store) -> None:
    newest = logs(paged, limit=10)
    assert indexes(newest) == list(range(90, 100))
    older = logs(paged, before=newest[0][0], limit=10)
    assert indexes(older) == list(range(80, 90))
    newer = logs(paged, after=older[-1][0], limit=5)
    assert indexes(newer) == list(range(90, 95))
    assert indexes(logs(paged, after=0, limit=3)) == [0, 1, 2]
    assert logs(paged, after=newest[-1][0]) == []
    between = logs(paged, after=older[0][0], before=newest[0][0], limit=100)
    assert indexes(between) == list(range(81, 90))
    assert indexes(logs(paged, limit=1000)) == list(range(100))
    assert logs(paged, limit=0) == []
    assert logs(paged, "unknown.job") == []
    assert indexes(logs(paged)) == list(range(100))  # the default limit is 200


def test_logs_min_level(paged: Store) -> None:
    assert indexes(logs(paged, min_level=Level.ERROR)) == list(range(0, 100, 10))
    warnings = logs(paged, min_level=Level.WARNING, limit=4)
    assert indexes(warnings) == [80, 85, 90, 95]
    back = logs(paged, min_level=Level.WARNING, before=warnings[0][0], limit=4)
    assert indexes(back) == [60, 65, 70, 75]
    forward = logs(paged, min_level=Level.WARNING, after=back[-1][0], limit=2)
    assert indexes(forward) == [80, 85]
    assert len(logs(paged, min_level=Level.DEBUG, limit=1000)) == 100
    assert logs(paged, min_level=Level.CRITICAL) == []


def test_logs_of_one_run(paged: Store) -> None:
    assert indexes(logs(paged, run_id="a", limit=1000)) == list(range(50))
    assert indexes(logs(paged, run_id="b", limit=5)) == list(range(95, 100))
    errors_a = logs(paged, run_id="a", min_level=Level.ERROR)
    assert indexes(errors_a) == [0, 10, 20, 30, 40]
    after = logs(paged, run_id="b", after=errors_a[-1][0], limit=3)
    assert indexes(after) == [50, 51, 52]
    assert all(r.run_id == "b" for _, r in after)
    assert logs(paged, "other.job", run_id="a") == []  # a run of another scheduler
    assert logs(paged, run_id="nope") == []
    assert paged.count_logs("a") == 50
    assert paged.count_logs("x") == 100


def test_log_cap_stores_one_marker_and_counts_what_it_drops(new_store: Factory) -> None:
    store = new_store(max_log_bytes_per_run=1000)
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
    marker = logs(store, run_id="r1", limit=100)[-1][1]
    assert marker.level is Level.WARNING
    assert marker.source is Source.LOGGER
    assert marker.message == (
        "log truncated: this run exceeded 1000 bytes of log; later records were dropped"
    )
    assert marker.fields == {"limit_bytes": 1000}
    assert marker.time == T0 + timedelta(seconds=2)  # when the first dropped record came
    assert store.get_run("r1").log_truncated is True
    assert store.get_run("r2").log_truncated is False
    assert messages(store, "other.job") == ["unaffected"]
    assert finish(store, "r1").log_truncated is True
    assert store.get_run("r1").dropped_log_records == 3
    assert store.get_run("r2").dropped_log_records == 0
    # Even a record that would fit is dropped after the marker: the log stays one piece.
    store.append_logs([record("r1", "x")])
    assert store.log_stats("r1").dropped_records == 4
    assert store.count_logs("r1") == 11


def test_log_cap_marker_speaks_in_mebibytes(store: Store) -> None:
    store.insert_run(make_run("r1"))
    line = "x" * 1000
    store.append_logs([record("r1", line) for _ in range(1100)])
    ((_, marker),) = logs(store, min_level=Level.WARNING)
    assert marker.message == (
        "log truncated: this run exceeded 1.0 MiB of log; later records were dropped"
    )
    assert marker.fields == {"limit_bytes": 1 << 20}
    stats = store.log_stats("r1")
    assert stats.stored_records == 1048 + 1
    assert stats.dropped_records == 1100 - 1048


def test_lost_records_are_counted_and_marked(store: Store) -> None:
    store.insert_run(make_run("r1"))
    store.append_logs([record("r1", "before")])
    store.add_lost_logs(lost("r1", 1500, 48_000))
    store.append_logs([record("r1", "after", at=T0 + timedelta(seconds=5))])
    assert store.log_stats("r1") == LogStats(
        stored_records=3,
        dropped_records=1500,
        stored_bytes=store.log_stats("r1").stored_bytes,
        dropped_bytes=48_000,
    )
    (_, first), (_, marker), (_, last) = logs(store, run_id="r1")
    assert (first.message, last.message) == ("before", "after")
    assert marker.level is Level.WARNING and marker.source is Source.LOGGER
    assert marker.message == (
        "log incomplete: 1500 records (46.9 KiB) of this run could not be stored"
        " (database or disk is full)"
    )
    assert marker.fields == {"lost_records": 1500, "lost_bytes": 48_000}
    assert marker.time == T0 + timedelta(seconds=1)  # the last lost record's time
    assert marker.run_id == "r1"
    assert store.get_run("r1").log_truncated is True
    assert store.runs("demo.job")[0].dropped_log_records == 1500
    # Losing records is not reaching the cap: records that fit are still stored.
    store.append_logs([record("r1", "still kept")])
    assert messages(store, run_id="r1")[-1] == "still kept"


def test_lost_records_are_marked_even_past_the_cap(new_store: Factory) -> None:
    store = new_store(max_log_bytes_per_run=100)
    store.insert_run(make_run("r1"))
    store.append_logs([record("r1", "m" * 60), record("r1", "m" * 60)])  # the second: marker
    store.add_lost_logs(lost("r1", 1, 20))
    assert [m.split(":")[0] for m in messages(store)] == [
        "m" * 60,
        "log truncated",
        "log incomplete",
    ]
    assert store.log_stats("r1").dropped_records == 2
    with pytest.raises(ValueError):
        lost("r1", 0, 0)


# -- audit, users, meta -------------------------------------------------------------------


def test_audit_round_trip_paging_and_last_actor(store: Store) -> None:
    entries = [
        AuditEntry(
            time=T0 + timedelta(minutes=i),
            actor=f"user{i}",
            action="update_settings" if i % 2 else "stop",
            scheduler_id="a.job" if i < 4 else "b.job",
            detail=None if i % 2 else f"detail {i}",
            before={"pause_time": timedelta(seconds=i), "disabled": False} if i % 2 else None,
            after={"pause_time": timedelta(seconds=i + 1), "at": T0} if i % 2 else None,
        )
        for i in range(6)
    ]
    for entry in entries:
        store.add_audit(entry)
    store.add_audit(AuditEntry(time=T0, actor="root", action="login", scheduler_id=None))
    got = store.audit(limit=100)
    assert [e for _, e in got][1:] == entries[::-1]
    assert got[0][1].scheduler_id is None
    cursors = [c for c, _ in got]
    assert cursors == sorted(cursors, reverse=True)
    only_a = store.audit(scheduler_id="a.job", limit=2)
    assert [e.actor for _, e in only_a] == ["user3", "user2"]
    page_two = store.audit(scheduler_id="a.job", limit=2, before=only_a[-1][0])
    assert [e.actor for _, e in page_two] == ["user1", "user0"]
    assert store.audit(scheduler_id="a.job", before=page_two[-1][0]) == []
    assert store.last_actor("a.job") == "user3"
    assert store.last_actor("b.job") == "user5"
    assert store.last_actor("c.job") is None
    assert store.audit(limit=0) == []
    assert len(store.audit()) == 7  # the default limit is 100


def test_audit_filters_by_actor_action_and_time(store: Store) -> None:
    for i in range(8):
        store.add_audit(
            AuditEntry(
                time=T0 + timedelta(hours=i),
                actor="ada" if i % 2 else "otto",
                action="login" if i < 4 else "stop",
                scheduler_id=None if i < 4 else "a.job",
                detail=f"entry {i}",
            )
        )

    def details(**filters: Any) -> list[str]:
        return [e.detail or "" for _, e in store.audit(**filters)]

    assert details(actor="ada") == ["entry 7", "entry 5", "entry 3", "entry 1"]
    assert details(action="login") == ["entry 3", "entry 2", "entry 1", "entry 0"]
    assert details(actor="otto", action="stop") == ["entry 6", "entry 4"]
    # since is inclusive, until exclusive
    window = {"since": T0 + timedelta(hours=2), "until": T0 + timedelta(hours=5)}
    assert details(**window) == ["entry 4", "entry 3", "entry 2"]
    assert details(actor="ada", scheduler_id="a.job", **window) == []
    assert details(actor="ada", scheduler_id="a.job") == ["entry 7", "entry 5"]
    # an aware time in another zone means the same instant
    berlin = timezone(timedelta(hours=1))
    assert details(since=(T0 + timedelta(hours=6)).astimezone(berlin)) == ["entry 7", "entry 6"]
    paged = store.audit(action="stop", limit=1)
    assert details(action="stop", before=paged[0][0]) == ["entry 6", "entry 5", "entry 4"]
    assert details(actor="nobody") == []
    with pytest.raises(ValueError):
        store.audit(since=datetime(2026, 1, 1))  # naive: refused, never guessed


def test_users(store: Store) -> None:
    created = T0 + timedelta(days=1)
    store.add_user("bob", role="viewer", password_hash="h1", created_at=created)
    store.add_user("alice", role="admin", password_hash="h2")
    stored_bob = store.get_user("bob")
    assert stored_bob == StoredUser(
        name="bob",
        role="viewer",
        password_hash="h1",
        created_at=created,
        stamp=getattr(stored_bob, "stamp", ""),
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
    bob = store.get_user("bob")
    assert bob is not None
    assert store.change_user("bob", UserChange(expected_hash=bob.password_hash, remove=True)) is (
        Changed.DONE
    )
    assert store.get_user("bob") is None
    assert [u.name for u in store.list_users()] == ["alice"]


KEEP_ADMIN = KeepOne(role="admin", locked_prefix="!")


def test_each_login_has_a_stamp_that_only_a_change_with_a_stamp_replaces(store: Store) -> None:
    store.add_user("ada", role="admin", password_hash="a1")
    store.add_user("bob", role="viewer", password_hash="b1")
    ada, bob = store.get_user("ada"), store.get_user("bob")
    assert ada is not None and bob is not None
    assert ada.stamp and bob.stamp and ada.stamp != bob.stamp
    # A role change and a rehash keep it: their sessions go on.
    assert store.change_user("bob", UserChange(expected_hash="b1", role="operator")) is (
        Changed.DONE
    )
    assert store.change_user("bob", UserChange(expected_hash="b1", password_hash="b2")) is (
        Changed.DONE
    )
    assert getattr(store.get_user("bob"), "stamp", None) == bob.stamp
    # A change with a stamp writes it with the change, and only if the change is made.
    fresh = new_stamp()
    change = UserChange(expected_hash="b2", password_hash="b3", stamp=fresh)
    assert store.change_user("bob", change) is Changed.DONE
    assert [(u.name, u.password_hash, u.stamp) for u in store.list_users()] == [
        ("ada", "a1", ada.stamp),
        ("bob", "b3", fresh),
    ]
    refused = UserChange(expected_hash="a1", password_hash="!a1", stamp=new_stamp())
    assert store.change_user("ada", refused, keep=KEEP_ADMIN) is Changed.REFUSED
    stale = UserChange(expected_hash="b2", password_hash="b4", stamp=new_stamp())
    assert store.change_user("bob", stale) is Changed.STALE
    assert [u.stamp for u in store.list_users()] == [ada.stamp, fresh]
    # Removed and added again: a stamp of its own, so no old session of the name holds.
    assert store.change_user("bob", UserChange(expected_hash="b3", remove=True)) is Changed.DONE
    store.add_user("bob", role="viewer", password_hash="b1")
    assert getattr(store.get_user("bob"), "stamp", fresh) not in (fresh, bob.stamp)
    with pytest.raises(ValueError, match="stamp"):
        UserChange(expected_hash="b1", stamp="")


def test_change_user_is_compared_and_keeps_an_enabled_admin(store: Store) -> None:
    store.add_user("ada", role="admin", password_hash="a1")
    store.add_user("bea", role="admin", password_hash="b1")
    store.add_user("olga", role="operator", password_hash="o1")
    stale = UserChange(expected_hash="o0", password_hash="o2")
    assert store.change_user("olga", stale) is Changed.STALE  # read before a change
    assert store.change_user("nobody", UserChange(expected_hash="x", remove=True)) is Changed.STALE
    changed = UserChange(expected_hash="o1", password_hash="o2", role="viewer")
    assert store.change_user("olga", changed, keep=KEEP_ADMIN) is Changed.DONE
    olga = store.get_user("olga")
    assert olga is not None and (olga.role, olga.password_hash) == ("viewer", "o2")
    lock_ada = UserChange(expected_hash="a1", password_hash="!a1")
    assert store.change_user("ada", lock_ada, keep=KEEP_ADMIN) is Changed.DONE
    for last in (
        UserChange(expected_hash="b1", password_hash="!b1"),
        UserChange(expected_hash="b1", role="viewer"),
        UserChange(expected_hash="b1", remove=True),
    ):
        assert store.change_user("bea", last, keep=KEEP_ADMIN) is Changed.REFUSED
    bea = store.get_user("bea")
    assert bea is not None and (bea.role, bea.password_hash) == ("admin", "b1")
    assert store.change_user("bea", UserChange(expected_hash="b1", password_hash="b2"),
                             keep=KEEP_ADMIN) is Changed.DONE  # fmt: skip
    assert store.change_user("bea", UserChange(expected_hash="b2", remove=True)) is Changed.DONE
    assert store.get_user("bea") is None
    with pytest.raises(DefinitionError):
        store.change_user("olga", UserChange(expected_hash="o2", role="wizard"))


def test_two_admins_disabled_at_once_leave_one(store: Store) -> None:
    """Regression: each change read two enabled admins, then both wrote."""
    for round_ in range(10):
        names = (f"a{round_}", f"b{round_}")
        for name in names:
            store.add_user(name, role="admin", password_hash="h")
        start = threading.Barrier(2)
        outcomes: list[Changed] = []
        threads = [
            threading.Thread(target=_disable_at_once, args=(store, name, start, outcomes))
            for name in names
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(o.value for o in outcomes) == ["done", "refused"]
        enabled = [n for n in names if getattr(store.get_user(n), "password_hash", "") == "h"]
        assert len(enabled) == 1
        # The next round's two are then the only enabled admins.
        store.change_user(enabled[0], UserChange(expected_hash="h", role="viewer"))


def _disable_at_once(
    store: Store, name: str, start: threading.Barrier, outcomes: list[Changed]
) -> None:
    start.wait(timeout=10)
    change = UserChange(expected_hash="h", password_hash="!h")
    outcomes.append(store.change_user(name, change, keep=KEEP_ADMIN))


def test_meta(store: Store) -> None:
    assert store.get_meta("secret") is None
    store.set_meta("secret", "one")
    store.set_meta("secret", "two")
    assert store.get_meta("secret") == "two"


# -- threads ------------------------------------------------------------------------------


def test_readers_see_whole_batches_while_a_writer_appends(store: Store) -> None:
    store.insert_run(make_run("r1"))
    batches, per_batch = 40, 100
    failures: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for b in range(batches):
                store.append_logs([record("r1", f"b{b} n{n}") for n in range(per_batch)])
        except BaseException as error:
            failures.append(error)
        finally:
            done.set()

    def read() -> None:
        try:
            seen = 0
            while not failures:
                finished = done.is_set()
                count = store.count_logs("r1")
                assert count >= seen and count % per_batch == 0  # whole batches only
                seen = count
                cursors = [c for c, _ in logs(store, limit=50)]
                assert cursors == sorted(cursors)
                if finished:
                    break
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)
    assert store.count_logs("r1") == batches * per_batch


# -- the implementations agree, operation by operation ---------------------------------------

_RUN_IDS = ("r0", "r1", "r2", "r3")
_SCHEDULERS = ("demo.job", "other.job")

_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("insert"),
            st.sampled_from(_RUN_IDS),
            st.sampled_from(_SCHEDULERS),
            st.integers(0, 5),
        ),
        st.tuples(
            st.just("append"),
            st.lists(
                st.tuples(
                    st.sampled_from(_RUN_IDS),
                    st.sampled_from(list(Level)),
                    st.text(max_size=40),
                    st.booleans(),
                ),
                max_size=12,
            ),
        ),
        st.tuples(st.just("finish"), st.sampled_from(_RUN_IDS), st.integers(0, 5)),
        st.tuples(st.just("lost"), st.sampled_from(_RUN_IDS), st.integers(1, 50)),
        st.tuples(
            st.just("query"),
            st.sampled_from(_SCHEDULERS),
            st.one_of(st.none(), st.sampled_from(_RUN_IDS)),
            st.one_of(st.none(), st.sampled_from(list(Level))),
            st.one_of(st.none(), st.integers(0, 60)),
            st.one_of(st.none(), st.integers(0, 60)),
            st.integers(0, 30),
        ),
    ),
    max_size=30,
)


def _apply(store: Store, operation: tuple[Any, ...]) -> object:
    """Run one operation; its answer, or the type of error it raised."""
    kind, *args = operation
    try:
        if kind == "insert":
            run_id, scheduler_id, minute = args
            store.insert_run(
                make_run(run_id, scheduler_id, started_at=T0 + timedelta(minutes=minute))
            )
            return None
        if kind == "append":
            store.append_logs(
                [
                    record(
                        run_id, message, level=level, fields={"f": message} if with_fields else None
                    )
                    for run_id, level, message, with_fields in args[0]
                ]
            )
            return None
        if kind == "finish":
            run_id, minute = args
            return finish(store, run_id, at=T0 + timedelta(minutes=minute, seconds=30))
        if kind == "lost":
            run_id, count = args
            store.add_lost_logs(lost(run_id, count, count * 10))
            return None
        scheduler_id, run_id, min_level, after, before, limit = args
        return (
            logs(
                store,
                scheduler_id,
                run_id=run_id,
                min_level=min_level,
                after=after,
                before=before,
                limit=limit,
            ),
            [store.runs(s) for s in _SCHEDULERS],
            [store.count_logs(r) for r in _RUN_IDS],
            [store.log_stats(r) if store.count_logs(r) else None for r in _RUN_IDS],
        )
    except (StoreError, UnknownRun) as error:
        return type(error)


def _differential(store: Store, operations: list[tuple[Any, ...]]) -> None:
    """Apply ``operations`` to ``store`` and to a memory store; every answer must agree."""
    memory_store = MemoryStore(**_DIFFERENTIAL_LIMITS)
    prelude = [("insert", "r0", "demo.job", 0), ("insert", "r1", "other.job", 1)]
    for operation in [*prelude, *operations]:
        assert _apply(store, operation) == _apply(memory_store, operation), operation
    for level in (None, *Level):
        final = ("query", "demo.job", None, level, None, None, 1000)
        assert _apply(store, final) == _apply(memory_store, final)


_DIFFERENTIAL_LIMITS = {"max_runs_per_scheduler": 2, "max_log_bytes_per_run": 300}


@settings(max_examples=80, deadline=None)
@given(operations=_operations)
def test_sqlite_and_memory_answer_alike(
    tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[Any, ...]]
) -> None:
    directory = tmp_path_factory.mktemp("differential")
    with SqliteStore.open(state_db_path(directory), **_DIFFERENTIAL_LIMITS) as sqlite_store:
        _differential(sqlite_store, operations)


@settings(max_examples=40, deadline=None)
@given(operations=_operations)
def test_postgresql_and_memory_answer_alike(
    pg_cluster: PostgresCluster, operations: list[tuple[Any, ...]]
) -> None:
    from supervisor.store.postgres import PostgresStore

    dsn = pg_cluster.create_database(f"d{secrets.token_hex(6)}")
    with PostgresStore.open(dsn, **_DIFFERENTIAL_LIMITS) as postgres_store:
        _differential(postgres_store, operations)


# -- log search -----------------------------------------------------------------------------


def test_log_query_refuses_naive_times_and_odd_field_filters() -> None:
    with pytest.raises(ValueError, match="since"):
        LogQuery(scheduler_id=None, since=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="until"):
        LogQuery(scheduler_id=None, until=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="field name"):
        LogQuery(scheduler_id=None, fields=(("", "x"),))
    with pytest.raises(ValueError, match="pairs"):
        LogQuery(scheduler_id=None, fields=(("a", 1),))  # type: ignore[arg-type]
    assert LogQuery(scheduler_id=None, text="").text is None


@pytest.fixture
def searched(store: Store) -> Store:
    """demo.job runs a (ended) and b; other.job run x; one record a minute from T0 on."""
    store.insert_run(make_run("a", started_at=T0))
    store.insert_run(make_run("x", "other.job", started_at=T0))
    store.insert_run(make_run("b", started_at=T0 + timedelta(minutes=5)))
    rows = [
        ("a", "Connecting to ERP", Level.INFO, {"order_id": 42, "host": "erp-1"}),
        ("x", "disk almost full", Level.WARNING, {"mount": "/var", "free": 0.5}),
        ("a", "ERP refused the login", Level.ERROR, {"order_id": 42, "retry": True}),
        ("x", "cleanup done", Level.INFO, {"note": None}),
        ("b", "Connecting to erp", Level.INFO, {"order_id": "42", "tags": ["a", "b"]}),
        ("b", "order failed", Level.ERROR, {"order_id": 43, "retry": False}),
        ("x", "Zürich office offline", Level.CRITICAL, {"city": "Zürich"}),
        ("b", "finished", Level.INFO, {}),
    ]
    store.append_logs(
        [
            record(
                run, message, level=level, fields={"i": i, **fields}, at=T0 + timedelta(minutes=i)
            )
            for i, (run, message, level, fields) in enumerate(rows)
        ]
    )
    return store


def found(store: Store, **query: Any) -> list[int]:
    return [int(r.fields["i"]) for _, r in store.logs(LogQuery(**query))]


def test_search_text_is_case_insensitive_over_message_field_names_and_values(
    searched: Store,
) -> None:
    assert found(searched, scheduler_id="demo.job", text="erp") == [0, 2, 4]
    assert found(searched, scheduler_id=None, text="ERP") == [0, 2, 4]
    assert found(searched, scheduler_id=None, text="mount") == [1]  # a field's name
    assert found(searched, scheduler_id=None, text="/VAR") == [1]  # a field's value
    assert found(searched, scheduler_id=None, text="zürich") == [6]
    assert found(searched, scheduler_id=None, text="ZÜRICH") == []  # only ASCII folds
    assert found(searched, scheduler_id=None, text="nothing like it") == []


def test_search_field_equals_value_as_text(searched: Store) -> None:
    every = {"scheduler_id": None}
    assert found(searched, **every, fields=(("order_id", "42"),)) == [0, 2, 4]
    assert found(searched, **every, fields=(("order_id", "42"), ("retry", "true"))) == [2]
    assert found(searched, **every, fields=(("retry", "false"),)) == [5]
    assert found(searched, **every, fields=(("note", "null"),)) == [3]
    assert found(searched, **every, fields=(("free", "0.5"),)) == [1]
    assert found(searched, **every, fields=(("tags", '["a","b"]'),)) == [4]
    assert found(searched, **every, fields=(("order_id", "4"),)) == []  # whole values only
    assert found(searched, **every, fields=(("nope", "42"),)) == []
    assert found(searched, scheduler_id="other.job", fields=(("order_id", "42"),)) == []


def test_search_time_range_takes_since_and_leaves_until(searched: Store) -> None:
    since, until = T0 + timedelta(minutes=2), T0 + timedelta(minutes=5)
    assert found(searched, scheduler_id=None, since=since, until=until) == [2, 3, 4]
    assert found(searched, scheduler_id="demo.job", since=since) == [2, 4, 5, 7]
    assert found(searched, scheduler_id=None, until=T0 + timedelta(minutes=1)) == [0]
    zoned = (T0 + timedelta(minutes=6)).astimezone(timezone(timedelta(hours=-5)))
    assert found(searched, scheduler_id=None, since=zoned) == [6, 7]


def test_search_across_schedulers_by_level_run_and_cursor(searched: Store) -> None:
    assert found(searched, scheduler_id=None) == list(range(8))
    assert found(searched, scheduler_id=None, min_level=Level.ERROR) == [2, 5, 6]
    assert found(searched, scheduler_id=None, min_level=Level.WARNING, limit=2) == [5, 6]
    assert found(searched, scheduler_id=None, run_id="x") == [1, 3, 6]
    assert found(searched, scheduler_id="demo.job", run_id="x") == []
    # "all errors in the last hour", paged across schedulers with cursors
    errors = LogQuery(scheduler_id=None, min_level=Level.ERROR, since=T0, limit=1)
    newest = searched.logs(errors)
    assert [int(r.fields["i"]) for _, r in newest] == [6]
    older = searched.logs(dataclasses.replace(errors, before=newest[0][0], limit=5))
    assert [int(r.fields["i"]) for _, r in older] == [2, 5]
    newer = searched.logs(dataclasses.replace(errors, after=older[0][0], limit=5))
    assert [int(r.fields["i"]) for _, r in newer] == [5, 6]
    assert {r.run_id for _, r in newer} == {"b", "x"}
    info = LogQuery(scheduler_id=None, text="erp", after=older[0][0], limit=2)
    assert [int(r.fields["i"]) for _, r in searched.logs(info)] == [4]


_SEARCH_RUNS = {"a": "demo.job", "b": "demo.job", "x": "other.job"}
_words = st.sampled_from(["alpha", "Beta", "GAMMA", "delta x", "ü"])
_field_values = st.one_of(
    st.sampled_from(["alpha", "b", "42", "é", "Zürich", "100%", "a_b"]),
    st.integers(-2, 2),
    st.sampled_from([2**64, -(2**70)]),
    st.sampled_from([1e16, 1e-7, -0.0, 1.5, 42.0]),
    st.booleans(),
    st.none(),
    st.sampled_from([{"ü": "é"}, {"n": {"k": 1.5}}, [1, "é"], [], {}]),
)
_FIELD_TEXTS = [
    "alpha", "1", "true", "null", "42", "é", "1e+16", "1e-07", "-0.0", "42.0",
    str(2**64), '{"ü":"é"}', '[1,"é"]', '{"n":{"k":1.5}}', "[]", "{}", "Zürich", "%",
]  # fmt: skip
_search_records = st.lists(
    st.tuples(
        st.sampled_from(sorted(_SEARCH_RUNS)),
        st.sampled_from(list(Level)),
        st.lists(_words, min_size=1, max_size=3).map(" ".join),
        st.dictionaries(st.sampled_from(["k", "Key", "n", "ü"]), _field_values, max_size=2),
        st.integers(0, 20),
    ),
    max_size=30,
)
_search_queries = st.builds(
    LogQuery,
    scheduler_id=st.sampled_from([None, "demo.job", "other.job"]),
    run_id=st.sampled_from([None, "a", "x"]),
    min_level=st.sampled_from([None, *Level]),
    limit=st.integers(1, 8),
    text=st.sampled_from(
        [None, "a", "BETA", "x", "ü", "key", "42", "true", "é", "1e+16", "e-07", "zü", "_", "%"]
    ),
    fields=st.lists(
        st.tuples(st.sampled_from(["k", "Key", "n", "ü"]), st.sampled_from(_FIELD_TEXTS)),
        max_size=1,
    ).map(tuple),
    since=st.sampled_from([None, T0 + timedelta(minutes=5)]),
    until=st.sampled_from([None, T0 + timedelta(minutes=15)]),
)


@settings(max_examples=150, deadline=None)
@given(rows=_search_records, queries=st.lists(_search_queries, min_size=1, max_size=6))
def test_search_answers_as_the_filters_say_in_both_stores(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, Level, str, dict[str, Any], int]],
    queries: list[LogQuery],
) -> None:
    """Each store's answer is the newest ``limit`` of the records ``LogQuery.matches``."""
    directory = tmp_path_factory.mktemp("search")
    with SqliteStore.open(state_db_path(directory)) as sqlite_store:
        for store in (sqlite_store, MemoryStore()):
            for run_id, scheduler_id in _SEARCH_RUNS.items():
                store.insert_run(make_run(run_id, scheduler_id))
            store.append_logs(
                [
                    record(run, text, level=level, fields=fields, at=T0 + timedelta(minutes=m))
                    for run, level, text, fields, m in rows
                ]
            )
            stored = store.logs(LogQuery(scheduler_id=None, limit=1000))
            assert len(stored) == len(rows)
            for query in queries:
                expected = [
                    item
                    for item in stored
                    if query.matches(item[1], scheduler_id=_SEARCH_RUNS[item[1].run_id])
                ][-query.limit :]
                assert store.logs(query) == expected, query
                if expected:
                    after = dataclasses.replace(query, after=expected[0][0] - 1)
                    assert store.logs(after)[0] == expected[0], query


def test_search_finds_text_and_names_json_spells_with_escapes(store: Store) -> None:
    store.insert_run(make_run("a"))
    store.append_logs(
        [
            record("a", "one", fields={"quote": 'say "hi" \\ there'}),
            record("a", "two", fields={"ключ": "значение", "tab\there": 1}),
            record("a", "three", fields={"plain": "x"}),
        ]
    )
    assert messages(store, text='"hi" \\') == ["one"]
    assert messages(store, text="значение") == ["two"]
    assert messages(store, text="ключ") == ["two"]
    assert messages(store, fields=(("ключ", "значение"),)) == ["two"]
    assert messages(store, fields=(("tab\there", "1"),)) == ["two"]
    assert messages(store, fields=(("quote", 'say "hi" \\ there'),)) == ["one"]
    assert messages(store, text='"plain"') == []  # the JSON's quotes are not text
    assert messages(store, text="plain") == ["three"]


def test_a_search_tells_how_far_it_looked_so_a_follow_need_not_look_again(
    store: Store,
) -> None:
    store.insert_run(make_run("r1"))
    store.append_logs([record("r1", f"plain {i}", fields={"i": i}) for i in range(30)])
    everything = store.logs(LogQuery(scheduler_id=None, limit=1000))
    highest = everything[-1][0]
    for query in (
        LogQuery(scheduler_id=None, text="rare"),
        LogQuery(scheduler_id=None, text="rare", after=0),
        LogQuery(scheduler_id=None, fields=(("i", "99"),), after=3),
        LogQuery(scheduler_id="demo.job", text="rare", after=0),
    ):
        found = store.logs(query)
        assert found == []
        assert isinstance(found, LogsFound)
        assert found.scanned_to == highest, query
    store.append_logs([record("r1", "the rare one"), record("r1", "rare again")])
    page = store.logs(LogQuery(scheduler_id=None, text="rare", after=highest, limit=1))
    assert [r.message for _, r in page] == ["the rare one"]
    assert isinstance(page, LogsFound)
    assert page.scanned_to == page[0][0]  # a full page: the rest is not examined yet
    rest = store.logs(LogQuery(scheduler_id=None, text="rare", after=page.scanned_to))
    assert [r.message for _, r in rest] == ["rare again"]
