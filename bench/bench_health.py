"""Reading the overview's outcome strips for 1,000 schedulers: one ``recent_runs`` query
against the baseline of one ``runs`` query per scheduler, on a real SQLite file.

    .venv/bin/python -m bench.bench_health [--schedulers 1000] [--runs 50] [--repeat 5]

Each scheduler gets ``--runs`` finished runs (retention keeps that many); both ways read the
newest 20 of each. Prints the median of ``--repeat`` readings of each, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from supervisor.core.records import Outcome, RunRecord, Trigger
from supervisor.store.sqlite import SqliteStore
from supervisor.web.health import STRIP_RUNS


def fill(store: SqliteStore, schedulers: int, runs: int) -> list[str]:
    ids = [f"bench.s{i:04d}" for i in range(schedulers)]
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for n in range(runs):
        for sid in ids:
            run_id = f"{sid}-{n}"
            at = base + timedelta(minutes=n)
            store.insert_run(
                RunRecord(
                    run_id=run_id,
                    scheduler_id=sid,
                    trigger=Trigger.SCHEDULE,
                    triggered_by=None,
                    started_at=at,
                )
            )
            outcome = Outcome.FAILED if n % 7 == 3 else Outcome.SUCCEEDED
            store.finish_run(
                run_id, ended_at=at, outcome=outcome, exit_code=0, signal=None, error=None
            )
    return ids


def median_ms(action: object, repeat: int) -> float:
    assert callable(action)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedulers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-health-", dir=Path.cwd()) as temp:
        store = SqliteStore.open(Path(temp) / "state.db", max_runs_per_scheduler=args.runs)
        try:
            print(f"writing {args.schedulers:,} x {args.runs} runs ...", flush=True)
            ids = fill(store, args.schedulers, args.runs)

            def per_scheduler() -> None:
                for sid in ids:
                    store.runs(sid, limit=STRIP_RUNS)

            def at_once() -> None:
                found = store.recent_runs(ids, limit=STRIP_RUNS)
                assert len(found) == len(ids)

            baseline = median_ms(per_scheduler, args.repeat)
            one = median_ms(at_once, args.repeat)
        finally:
            store.close()
    print(f"newest {STRIP_RUNS} runs of {args.schedulers:,} schedulers, median ms")
    print(f"  baseline: one runs() query per scheduler  {baseline:8.1f}")
    print(f"  recent_runs(): one query                  {one:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
