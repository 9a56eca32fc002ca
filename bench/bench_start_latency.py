"""Run start latency: from the moment a run is due to the runner's first line.

Each sample asks for a run (Execute Now, so the due time is known exactly) and reads the
wall time the runner noted on entry from its first log record. Compared in the same run
with the bare-fork floor (from ``os.fork()`` in a process that imported the same packages
to the child's first line), with a fresh interpreter per run, and with APScheduler's
BackgroundScheduler (a thread in the same process, no isolation). The fork server and
the floor are measured at idle and again with a second process loading a core (a busy
loop). Targets: fork server p50 <= 2x the bare-fork floor (idle and loaded), p50 <= 5 ms,
p99 <= 25 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from common import (
    joining_after_fork,
    percentile,
    start_service,
    summary,
    temp_dir,
    write_app,
)

from supervisor.core.access import su
from supervisor.core.records import LogQuery

APP = """
def first_line(ctx):
    entered = time.time()
    scheduler.logger_from(ctx).info("entered", at=entered)

add(id="bench.latency", name="latency", kind=scheduler.Kind.MANUAL, runner=first_line)
"""


def measure_supervisor(samples: int, *, fork_server: bool) -> list[float]:
    work = temp_dir("bench-latency-")
    try:
        spec = write_app(work / "app", "latency_app", APP)
        service = start_service(spec, work / "state", fork_server=fork_server)
        use_cases = service.use_cases
        assert service.manager is not None
        out: list[float] = []
        try:
            for _ in range(samples):
                due = time.time()
                run_id = use_cases.execute(su(), "bench.latency")
                service.manager.wait_idle("bench.latency", 30)
                records = use_cases.logs(
                    su(), LogQuery(scheduler_id="bench.latency", run_id=run_id)
                )
                entered = next(r.fields["at"] for _, r in records if r.message == "entered")
                out.append((entered - due) * 1000)
        finally:
            service.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_bare_fork(samples: int) -> list[float]:
    """From ``os.fork()`` to the child's first line, in this process (which imported the
    supervisor's packages): what starting a run costs the OS at the least."""
    import supervisor.runs.child
    import supervisor.store.sqlite  # noqa: F401

    out: list[float] = []
    for _ in range(samples):
        read_end, write_end = os.pipe()
        due = time.time()
        pid = os.fork()
        if pid == 0:
            entered = time.time()
            os.write(write_end, repr(entered).encode())
            os._exit(0)
        os.close(write_end)
        entered = float(os.read(read_end, 64))
        os.close(read_end)
        os.waitpid(pid, 0)
        out.append((entered - due) * 1000)
        time.sleep(0.002)  # as between the supervisor's samples: not back to back
    return out


@contextlib.contextmanager
def loading_a_core() -> Iterator[None]:
    """A second process spinning on a core for as long as the block runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def measure_apscheduler(samples: int) -> list[float]:
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start()
    out: list[float] = []
    try:
        for _ in range(samples):
            done = threading.Event()
            due = datetime.now(UTC) + timedelta(milliseconds=20)

            def job(due: datetime = due, done: threading.Event = done) -> None:
                out.append((datetime.now(UTC) - due).total_seconds() * 1000)
                done.set()

            scheduler.add_job(job, "date", run_date=due)
            done.wait(10)
    finally:
        scheduler.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    few = max(20, args.samples // 5)
    print("run start latency (due -> runner's first line)")
    verdicts = []
    for loaded in (False, True):
        with loading_a_core() if loaded else contextlib.nullcontext():
            floor_before = measure_bare_fork(args.samples // 2)
            fork = measure_supervisor(args.samples, fork_server=True)
            with joining_after_fork():
                joined = measure_supervisor(args.samples // 2, fork_server=True)
            floor = floor_before + measure_bare_fork(args.samples // 2)
        how = "a second process loading a core" if loaded else "idle"
        print(f"-- {how}")
        print(summary("bare fork, to the child's first line", floor))
        print(summary("supervisor, fork server", fork))
        print(summary("  joining its cgroup after fork", joined))
        factor = percentile(fork, 50) / percentile(floor, 50)
        verdicts.append(f"{how}: fork server p50 = {factor:.1f}x the bare-fork floor")
    fresh = measure_supervisor(few, fork_server=False)
    aps = measure_apscheduler(few)
    print("-- idle")
    print(summary("supervisor, fresh interpreter", fresh))
    print(summary("APScheduler thread (no isolation)", aps))
    for verdict in verdicts:
        print(verdict)
    print(
        "targets: fork server p50 <= 2x the bare-fork floor (idle and loaded), "
        "p50 <= 5 ms, p99 <= 25 ms"
    )


if __name__ == "__main__":
    main()
