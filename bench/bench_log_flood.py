"""One run printing 1,000,000 lines: records per second into SQLite, none lost, memory bounded.

The run prints N numbered lines to stdout; the figure is N / (time from run start until
every record is stored), and the stored count must equal N. The manager's peak RSS is
sampled during the run. Baselines in the same run: the same child writing its lines into
a pipe read by ``cat > /dev/null`` (the cost of producing the lines alone), and a plain
``executemany`` of the same rows into the same ``logs`` table (same schema, index, pragmas
and batch size: the cost of SQLite alone). Beside them, ``append_logs`` of ready-made
records into the store (the store's own cost, without the pipes), and the manager's CPU
per record end to end. SQLite figures are per CPU second: on a shared machine wall time
says more about the neighbours than about the code.
Targets: >= 100,000 records/s end to end; the store >= 0.8x of plain ``executemany``.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import psutil
from common import start_service, temp_dir, write_app

from supervisor.core.access import su
from supervisor.core.records import Level, LogRecord, RunRecord, Source, Trigger
from supervisor.manager.logwriter import MAX_RECORDS_PER_WRITE
from supervisor.store import sqlite as sqlite_store
from supervisor.store.sqlite import SqliteStore
from supervisor.store.sqlite import logs as sqlite_logs

APP = """
def flood(ctx):
    out = sys.stdout
    for i in range({lines}):
        out.write(f"line {{i}} of the flood\\n")
    out.flush()

add(id="bench.flood", name="flood", kind=scheduler.Kind.MANUAL, runner=flood)
"""


def baseline(lines: int) -> float:
    code = (
        "import sys\nout=sys.stdout\n"
        f"for i in range({lines}):\n    out.write(f'line {{i}} of the flood\\n')\nout.flush()"
    )
    started = time.monotonic()
    producer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    subprocess.run(["cat"], stdin=producer.stdout, stdout=subprocess.DEVNULL, check=True)
    producer.wait()
    return lines / (time.monotonic() - started)


INSERT_ONE = (
    "INSERT INTO logs (id, scheduler_id, run_seq, time, level, source, message, fields)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _messages(lines: int) -> list[str]:
    return [f"line {i} of the flood" for i in range(lines)]


def executemany_floor(lines: int, *, rows_per_statement: int = 1) -> float:
    """Plain ``executemany`` into the store's own table, in the writer's batch size: rows
    per CPU second of this process (SQLite works in-process; CPU time hardly depends on
    what else the machine runs, wall time does). ``rows_per_statement`` > 1: INSERTs of
    that many rows each, as the store writes them."""
    work = temp_dir("bench-flood-floor-")
    try:
        conn = sqlite3.connect(work / "plain.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = -{sqlite_store.WRITER_CACHE_KIB}")
        for steps in sqlite_store.MIGRATIONS:
            for statement in steps:
                conn.execute(statement)
        stamp = int(time.time() * 1_000_000)
        messages = _messages(lines)
        started = time.process_time()
        for start in range(0, lines, MAX_RECORDS_PER_WRITE):
            rows = [
                (start + i + 1, "bench.flood", 1, stamp, 20, "stdout", message, None)
                for i, message in enumerate(messages[start : start + MAX_RECORDS_PER_WRITE])
            ]
            conn.execute("BEGIN IMMEDIATE")
            if rows_per_statement == 1:
                conn.executemany(INSERT_ONE, rows)
            else:
                whole = len(rows) - len(rows) % rows_per_statement
                conn.executemany(
                    INSERT_ONE + ", (?, ?, ?, ?, ?, ?, ?, ?)" * (rows_per_statement - 1),
                    [
                        tuple(itertools.chain.from_iterable(rows[i : i + rows_per_statement]))
                        for i in range(0, whole, rows_per_statement)
                    ],
                )
                conn.executemany(INSERT_ONE, rows[whole:])
            conn.execute("COMMIT")
        elapsed = time.process_time() - started
        conn.close()
        return lines / elapsed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def append_logs_rate(lines: int) -> tuple[float, int]:
    """The store's ``append_logs`` with ready-made records, in the writer's batch size:
    records per CPU second, like ``executemany_floor``."""
    work = temp_dir("bench-flood-store-")
    try:
        now = datetime.now(UTC)
        with SqliteStore.open(work / "state.db", max_log_bytes_per_run=1 << 40) as store:
            store.insert_run(
                RunRecord(
                    run_id="r1",
                    scheduler_id="bench.flood",
                    trigger=Trigger.MANUAL,
                    triggered_by=None,
                    started_at=now,
                )
            )
            records = [
                LogRecord(time=now, level=Level.INFO, message=m, run_id="r1", source=Source.STDOUT)
                for m in _messages(lines)
            ]
            started = time.process_time()
            for start in range(0, lines, MAX_RECORDS_PER_WRITE):
                store.append_logs(records[start : start + MAX_RECORDS_PER_WRITE])
            elapsed = time.process_time() - started
            return lines / elapsed, store.count_logs("r1")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(lines: int) -> tuple[float, float, int, float]:
    """Records/s end to end (wall), records per CPU second of the manager's process (its
    pipe reading, parsing, batching and SQLite), stored count, peak RSS in MB."""
    work = temp_dir("bench-flood-")
    try:
        spec = write_app(work / "app", "flood_app", APP.format(lines=lines))
        service = start_service(spec, work / "state", max_log_bytes_per_run=1 << 40)
        me = psutil.Process()
        peak = me.memory_info().rss
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.05):
                peak = max(peak, me.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert service.manager is not None and service.store is not None
        try:
            started, cpu_started = time.monotonic(), time.process_time()
            run_id = service.use_cases.execute(su(), "bench.flood")
            service.manager.wait_idle("bench.flood", 600)
            elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_started
            stored = service.store.count_logs(run_id)
        finally:
            done.set()
            sampler.join()
            service.close()
        stdout_records = stored  # the run writes nothing else
        return stdout_records / elapsed, stdout_records / cpu, stored, peak / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds; each figure is its best round"
    )
    args = parser.parse_args()
    # Rounds interleave the four measurements so a busy machine slows each alike; the
    # best round of each is the figure (the least disturbed one).
    floor = plain = multi = store_rate = rate = ingest = 0.0
    store_stored = stored = 0
    peak = 0.0
    for round_ in range(args.repeat):
        # End to end first: the in-process phases below leave this process's heap grown,
        # so the manager's peak RSS is taken from the first round only.
        this_rate, this_ingest, stored, this_peak = measure(args.lines)
        rate, ingest = max(rate, this_rate), max(ingest, this_ingest)
        peak = this_peak if round_ == 0 else peak
        floor = max(floor, baseline(args.lines))
        plain = max(plain, executemany_floor(args.lines))
        multi = max(
            multi,
            executemany_floor(args.lines, rows_per_statement=sqlite_logs.ROWS_PER_INSERT),
        )
        this_store, store_stored = append_logs_rate(args.lines)
        store_rate = max(store_rate, this_store)
    print(f"one run printing {args.lines:,} lines, best of {args.repeat} rounds")
    print(f"{'baseline: pipe into cat':<34} {floor:12,.0f} lines/s")
    print(f"{'baseline: plain executemany':<34} {plain:12,.0f} rows/CPU-s")
    print(
        f"{f'floor: {sqlite_logs.ROWS_PER_INSERT}-row INSERT statements':<34}"
        f" {multi:12,.0f} rows/CPU-s  "
        f"{multi / plain:.2f}x of executemany (how the store inserts)"
    )
    print(
        f"{'store: append_logs':<34} {store_rate:12,.0f} records/CPU-s  "
        f"{store_rate / plain:.2f}x of executemany  stored={store_stored:,}"
    )
    print(
        f"{'supervisor: into SQLite':<34} {rate:12,.0f} records/s  "
        f"stored={stored:,}  "
        f"lost={args.lines - stored:,}  manager peak rss={peak:.1f} MB"
    )
    print(
        f"{'supervisor: manager CPU':<34} {ingest:12,.0f} records/CPU-s  "
        f"{ingest / plain:.2f}x of executemany"
    )
    print(
        "targets: >= 100,000 records/s end to end, none lost;"
        " the store >= 0.8x of executemany (CPU)"
    )


if __name__ == "__main__":
    main()
