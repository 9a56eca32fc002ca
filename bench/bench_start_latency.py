"""Run start latency: from the moment a run is due to the runner's first line.

Each sample asks for a run (Execute Now, so the due time is known exactly) and reads the
wall time the runner noted on entry from its first log record. Compared in the same run
with a fresh interpreter per run, and with APScheduler's BackgroundScheduler (a thread in
the same process, no isolation) as the floor. Targets: fork server p50 <= 5 ms, p99 <= 25 ms.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta

from common import start_service, summary, temp_dir, write_app

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
    fork = measure_supervisor(args.samples, fork_server=True)
    fresh = measure_supervisor(max(20, args.samples // 5), fork_server=False)
    floor = measure_apscheduler(max(20, args.samples // 5))
    print("run start latency (due -> runner's first line)")
    print(summary("supervisor, fork server", fork))
    print(summary("supervisor, fresh interpreter", fresh))
    print(summary("APScheduler thread (no isolation)", floor))
    print("targets: fork server p50 <= 5 ms, p99 <= 25 ms")


if __name__ == "__main__":
    main()
