"""The stores side by side: run start/end and log-append rates, SQLite vs PostgreSQL.

In one run, on one machine: the SQLite store on a file in /var/tmp, and the PostgreSQL store
on a throwaway cluster made with initdb (tests/postgres.py: fsync off and
synchronous_commit off, the durability of SQLite's WAL with synchronous=NORMAL: a commit
survives the process, not a power loss). Each figure is beside its floor on the same
engine, measured in the same run: the same rows written with the bare driver (one
INSERT + one UPDATE per run; ``executemany`` for SQLite and ``COPY`` for PostgreSQL per
log batch), no store around them.

- run start/end: ``insert_run`` then ``finish_run`` (retention included), one at a time;
  on PostgreSQL also ``insert_run_fenced``/``finish_run_fenced`` under a cluster lease;
- log append: ``append_logs`` of batches of records (~90 bytes each) to one run.

    .venv/bin/python bench/bench_store.py [--runs N] [--batches N] [--batch N]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from common import temp_dir

from supervisor.core.records import Level, LogRecord, Outcome, RunRecord, Source, Trigger
from supervisor.store.protocols import Store
from supervisor.store.sqlite import SqliteStore, state_db_path
from tests.postgres import skip_reason, throwaway_postgres

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def run_record(i: int, scheduler_id: str = "bench.job") -> RunRecord:
    return RunRecord(
        run_id=f"run-{i}",
        scheduler_id=scheduler_id,
        trigger=Trigger.SCHEDULE,
        triggered_by=None,
        started_at=T0 + timedelta(seconds=i),
    )


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:10.0f}/s"


def timed(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def store_runs(store: Store, runs: int) -> float:
    def work() -> None:
        for i in range(runs):
            store.insert_run(run_record(i))
            store.finish_run(
                f"run-{i}",
                ended_at=T0 + timedelta(seconds=i, milliseconds=500),
                outcome=Outcome.SUCCEEDED,
                exit_code=0,
                signal=None,
                error=None,
            )

    return timed(work)


def batches_of(batches: int, size: int, run_id: str) -> list[list[LogRecord]]:
    return [
        [
            LogRecord(
                time=T0 + timedelta(milliseconds=b),
                level=Level.INFO,
                message=f"batch {b} record {n} " + "x" * 70,
                fields={"n": n},
                run_id=run_id,
                source=Source.LOGGER,
            )
            for n in range(size)
        ]
        for b in range(batches)
    ]


def store_logs(store: Store, batches: list[list[LogRecord]]) -> float:
    store.insert_run(
        RunRecord(
            run_id="logs",
            scheduler_id="bench.logs",
            trigger=Trigger.SCHEDULE,
            triggered_by=None,
            started_at=T0,
        )
    )

    def work() -> None:
        for batch in batches:
            store.append_logs(batch)

    return timed(work)


# -- floors: the same rows through the bare driver -----------------------------------------

_SQLITE_TABLES = """
CREATE TABLE runs (seq INTEGER PRIMARY KEY, run_id TEXT UNIQUE, scheduler_id TEXT,
    started_at TEXT, ended_at TEXT, outcome TEXT);
CREATE TABLE logs (id INTEGER PRIMARY KEY, scheduler_id TEXT, run_seq INTEGER, time INTEGER,
    level INTEGER, source TEXT, message TEXT, fields TEXT);
CREATE INDEX logs_by_level ON logs (scheduler_id, level, id, run_seq);
"""


def sqlite_floor(path: str, runs: int, batches: list[list[LogRecord]]) -> tuple[float, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(_SQLITE_TABLES)

    def run_rows() -> None:
        for i in range(runs):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO runs (run_id, scheduler_id, started_at) VALUES (?, ?, ?)",
                (f"run-{i}", "bench.job", (T0 + timedelta(seconds=i)).isoformat()),
            )
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE runs SET ended_at = ?, outcome = 'succeeded' WHERE run_id = ?",
                (T0.isoformat(), f"run-{i}"),
            )
            conn.execute("COMMIT")

    next_id = iter(range(1, 1 << 40))

    def log_rows() -> None:
        for batch in batches:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO logs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (next(next_id), "bench.logs", 1, 0, 20, "logger", r.message, '{"n":1}')
                    for r in batch
                ],
            )
            conn.execute("COMMIT")

    try:
        return timed(run_rows), timed(log_rows)
    finally:
        conn.close()


def postgres_floor(dsn: str, runs: int, batches: list[list[LogRecord]]) -> tuple[float, float]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE runs (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " run_id text UNIQUE, scheduler_id text, started_at timestamptz,"
            " ended_at timestamptz, outcome text)"
        )
        conn.execute(
            "CREATE TABLE logs (id bigint PRIMARY KEY, scheduler_id text, run_seq bigint,"
            " time bigint, level smallint, source text, message text, fields text)"
        )
        conn.execute("CREATE INDEX logs_by_level ON logs (scheduler_id, level, id)")

        def run_rows() -> None:
            for i in range(runs):
                conn.execute(
                    "INSERT INTO runs (run_id, scheduler_id, started_at) VALUES (%s, %s, %s)",
                    (f"run-{i}", "bench.job", T0 + timedelta(seconds=i)),
                )
                conn.execute(
                    "UPDATE runs SET ended_at = %s, outcome = 'succeeded' WHERE run_id = %s",
                    (T0, f"run-{i}"),
                )

        next_id = iter(range(1, 1 << 40))

        def log_rows() -> None:
            for batch in batches:
                with conn.transaction(), conn.cursor().copy("COPY logs FROM STDIN") as copy:
                    for r in batch:
                        copy.write_row(
                            (next(next_id), "bench.logs", 1, 0, 20, "logger", r.message, '{"n":1}')
                        )

        return timed(run_rows), timed(log_rows)


def fenced_runs(dsn: str, runs: int) -> float:
    from supervisor.cluster import schema
    from supervisor.cluster.db import connect
    from supervisor.cluster.lease import Leases, LeaseTiming
    from supervisor.store.postgres import PostgresStore

    with connect(dsn) as conn, PostgresStore.open(dsn) as store:
        schema.install(conn)
        schema.register(conn, ["bench.job"])
        timing = LeaseTiming(ttl=timedelta(minutes=10), renew_every=timedelta(minutes=1))
        [lease], _ = Leases(conn, holder="bench", timing=timing).acquire(["bench.job"])

        def work() -> None:
            for i in range(runs):
                store.insert_run_fenced(run_record(i), token=lease.token)
                store.finish_run_fenced(
                    f"run-{i}",
                    token=lease.token,
                    ended_at=T0 + timedelta(seconds=i, milliseconds=500),
                    outcome=Outcome.SUCCEEDED,
                    exit_code=0,
                    signal=None,
                    error=None,
                )

        return timed(work)


def line(engine: str, what: str, count: int, store: float, label: str, floor: float) -> str:
    return (
        f"{engine:<11} {what:<16} store {rate(count, store)}   {label:<11} {rate(count, floor)}"
        f"   ratio {floor / store:5.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--rounds", type=int, default=3, help="best of N, floor and store alternating"
    )
    args = parser.parse_args()
    runs, batches = args.runs, batches_of(args.batches, args.batch, "logs")
    records = args.batches * args.batch
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, seconds), seconds)

    work = temp_dir("bench-store-")
    try:
        for n in range(args.rounds):
            floor_runs, floor_logs = sqlite_floor(str(work / f"floor{n}.db"), runs, batches)
            keep("sqlite floor runs", floor_runs)
            keep("sqlite floor logs", floor_logs)
            with SqliteStore.open(state_db_path(work / f"runs{n}")) as store:
                keep("sqlite runs", store_runs(store, runs))
            with SqliteStore.open(state_db_path(work / f"logs{n}")) as store:
                keep("sqlite logs", store_logs(store, batches))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        line("sqlite", "run start+end", runs, best["sqlite runs"], "bare driver",
             best["sqlite floor runs"]),
        line("sqlite", "log append", records, best["sqlite logs"], "bare driver",
             best["sqlite floor logs"]),
    ]  # fmt: skip

    reason = skip_reason()
    if reason:
        lines.append(f"postgresql  skipped: {reason}")
    else:
        from supervisor.store.postgres import PostgresStore

        with throwaway_postgres() as cluster:
            for n in range(args.rounds):
                floor_runs, floor_logs = postgres_floor(
                    cluster.create_database(f"floor{n}"), runs, batches
                )
                keep("pg floor runs", floor_runs)
                keep("pg floor logs", floor_logs)
                with PostgresStore.open(cluster.create_database(f"runs{n}")) as store:
                    keep("pg runs", store_runs(store, runs))
                keep("pg fenced", fenced_runs(cluster.create_database(f"fenced{n}"), runs))
                with PostgresStore.open(cluster.create_database(f"logs{n}")) as store:
                    keep("pg logs", store_logs(store, batches))
        lines += [
            line("postgresql", "run start+end", runs, best["pg runs"], "bare driver",
                 best["pg floor runs"]),
            line("postgresql", "fenced start+end", runs, best["pg fenced"], "unfenced",
                 best["pg runs"]),
            line("postgresql", "log append", records, best["pg logs"], "bare driver",
                 best["pg floor logs"]),
        ]  # fmt: skip
    print(
        f"{runs} runs, {args.batches} log batches of {args.batch} records, best of"
        f" {args.rounds} (ratio: baseline time / store time; 1.00x = as fast as the baseline)"
    )
    for text in lines:
        print(text)


if __name__ == "__main__":
    main()
