"""Log search in SQLite at size: how long each kind of search takes over a million records.

A store holds ``--records`` records (default 1,000,000) of 50 schedulers, 10 runs each,
spread over 24 hours: 1 in 100 a warning, 1 in 1,000 an error, every tenth with fields
(``order_id``, ``host``). Each search is timed (best of ``--repeat``, CPU milliseconds
of this process: SQLite works in-process, and on a shared machine wall time says more
about the neighbours) beside two floors measured on the same file in the same run: the
newest 200 rows by primary key (the least a page can cost) and one full pass over the
table testing every message (the most an unindexed search can cost).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from common import temp_dir

from supervisor.core.records import Level, LogQuery, LogRecord, RunRecord, Source, Trigger
from supervisor.store.sqlite import SqliteStore

SCHEDULERS = 50
RUNS_PER_SCHEDULER = 10
START = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(hours=24)


def fill(store: SqliteStore, records: int) -> datetime:
    """``records`` records in time order; returns the time of the last one."""
    runs = SCHEDULERS * RUNS_PER_SCHEDULER
    per_run = records // runs
    step = DAY / records
    written = 0
    moment = START
    for run_index in range(RUNS_PER_SCHEDULER):
        batch: list[LogRecord] = []
        for scheduler_index in range(SCHEDULERS):
            run_id = f"run-{scheduler_index:02d}-{run_index:02d}"
            store.insert_run(
                RunRecord(
                    run_id=run_id,
                    scheduler_id=f"bench.s{scheduler_index:02d}",
                    trigger=Trigger.SCHEDULE,
                    triggered_by=None,
                    started_at=moment,
                )
            )
        for i in range(per_run * SCHEDULERS):
            n = written + i
            level = Level.ERROR if n % 1000 == 7 else Level.WARNING if n % 100 == 3 else Level.INFO
            fields = {"order_id": n % 5000, "host": f"erp-{n % 7}"} if n % 10 == 0 else {}
            batch.append(
                LogRecord(
                    time=moment,
                    level=level,
                    message=f"processed item {n} of the nightly import",
                    fields=fields,
                    run_id=f"run-{i % SCHEDULERS:02d}-{run_index:02d}",
                    source=Source.LOGGER,
                )
            )
            moment += step
            if len(batch) == 5000:
                store.append_logs(batch)
                batch = []
        store.append_logs(batch)
        written += per_run * SCHEDULERS
    return moment


def best_ms(repeat: int, action: Callable[[], object]) -> tuple[float, object]:
    best, answer = float("inf"), None
    for _ in range(repeat):
        started = time.process_time()
        answer = action()
        best = min(best, time.process_time() - started)
    return best * 1000, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = temp_dir("bench-log-search-")
    try:
        path = work / "state.db"
        with SqliteStore.open(path, max_log_bytes_per_run=1 << 40) as store:
            last = fill(store, args.records)
            hour_ago = last - timedelta(hours=1)
            plain = sqlite3.connect(path)

            def newest_rows() -> object:
                return plain.execute("SELECT * FROM logs ORDER BY id DESC LIMIT 200").fetchall()

            def full_pass() -> object:
                return plain.execute(
                    "SELECT count(*) FROM logs WHERE instr(lower(message), 'zzz') > 0"
                ).fetchall()

            searches: list[tuple[str, LogQuery]] = [
                ("newest 200 of one scheduler", LogQuery(scheduler_id="bench.s07")),
                ("newest 200 of every scheduler", LogQuery(scheduler_id=None)),
                (
                    "errors of every scheduler, last hour",
                    LogQuery(scheduler_id=None, min_level=Level.ERROR, since=hour_ago),
                ),
                (
                    "errors of one scheduler",
                    LogQuery(scheduler_id="bench.s07", min_level=Level.ERROR),
                ),
                ("text, common, every scheduler", LogQuery(scheduler_id=None, text="NIGHTLY")),
                ("text, in a field, every sched.", LogQuery(scheduler_id=None, text="erp-3")),
                ("text, nowhere, every scheduler", LogQuery(scheduler_id=None, text="zzz")),
                ("text, nowhere, one scheduler", LogQuery(scheduler_id="bench.s07", text="zzz")),
                (
                    "field=value, every scheduler",
                    LogQuery(scheduler_id=None, fields=(("order_id", "4210"),)),
                ),
                (
                    "text, nowhere, last hour",
                    LogQuery(scheduler_id=None, text="zzz", since=hour_ago),
                ),
            ]
            print(f"{args.records:,} records, {SCHEDULERS} schedulers; best of {args.repeat}")
            floor_ms, _ = best_ms(args.repeat, newest_rows)
            scan_ms, _ = best_ms(args.repeat, full_pass)
            print(f"{'floor: newest 200 rows by id':<38} {floor_ms:9.1f} CPU-ms")
            print(f"{'floor: one pass testing messages':<38} {scan_ms:9.1f} CPU-ms")
            for title, query in searches:
                elapsed, found = best_ms(args.repeat, lambda q=query: store.logs(q))
                assert isinstance(found, list)
                print(
                    f"{title:<38} {elapsed:9.1f} CPU-ms  {elapsed / scan_ms:5.2f}x of one pass"
                    f"  found={len(found)}"
                )
            plain.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
