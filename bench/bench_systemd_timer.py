"""Start-time accuracy of a 1 s SCHEDULE: systemd timers vs the manager, side by side.

A SCHEDULE with a 1 s pause plans each run 1 s after the previous one ended. For every
run but the first, this measures actual minus planned start, where planned = the end of
the previous run + 1 s:

- under systemd (a real systemd booted in a private namespace, units installed with
  ``supervisor install-units``): the end of a run is when systemd deactivated the service
  (its "Deactivated successfully" message); the start is when systemd started the job
  (its "Starting" message), and when the runner ran its first line (a field of its first
  record, read back from journald). The gap between the two is ``supervisor exec``
  starting a Python interpreter and importing the app;
- under the manager (``supervisor.service.manager_mode.Service`` in this process, fork server): the
  end is the run's ``ended_at``, the start the runner's first line.

Needs root and ``unshare`` (like the systemd tests). Run: ``python bench/bench_systemd_timer.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

from common import ROOT, percentile, start_service, temp_dir, write_app

from supervisor.core.access import su
from supervisor.core.records import LogQuery
from tests.systemd_ns import NamespacedSystemd

PYTHON = sys.executable
SCHEDULER_ID = "bench.timer"
PAUSE = timedelta(seconds=1)
APP = """
def first_line(ctx):
    entered = time.time()
    scheduler.logger_from(ctx).info("entered", at=entered)

add(
    id="bench.timer",
    name="timer accuracy",
    kind=scheduler.Kind.SCHEDULE,
    runner=first_line,
    defaults=scheduler.Settings(
        start_delay=timedelta(seconds=1), pause_time=timedelta(seconds=1)
    ),
)
"""
MESSAGE_JOB_START = "7d4958e842da4a758f6c1cdc7b36dcc5"
MESSAGE_UNIT_SUCCESS = "7ad2d189f7e94e70a38c781354912448"


@dataclass
class Run:
    started: float | None = None  # systemd started the job / the manager launched it
    entered: float | None = None  # the runner's first line
    ended: float | None = None


def lateness(runs: list[Run]) -> tuple[list[float], list[float]]:
    """(job start, runner entry) minus planned start, in ms, for runs 2..n."""
    ordered = sorted((r for r in runs if r.entered is not None), key=lambda r: r.entered or 0)
    started: list[float] = []
    entered: list[float] = []
    for previous, run in itertools.pairwise(ordered):
        if previous.ended is None or run.entered is None:
            continue
        planned = previous.ended + PAUSE.total_seconds()
        entered.append((run.entered - planned) * 1000)
        if run.started is not None:
            started.append((run.started - planned) * 1000)
    return started, entered


# -- systemd ------------------------------------------------------------------------------


def measure_systemd(samples: int) -> list[Run]:
    ns = NamespacedSystemd.boot()
    try:
        app_dir = ns.shared_dir / "app"
        spec = write_app(app_dir, "bench_timer_app", APP)
        python_path = [str(ROOT), str(app_dir)]
        if os.environ.get("PYTHONPATH"):
            python_path.append(os.environ["PYTHONPATH"])
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": ":".join(python_path),
            "SUPERVISOR_STATE_DIR": str(ns.shared_dir / "state"),
        }
        command = [PYTHON, "-m", "supervisor", "install-units", "--app", spec]
        done = ns.run(command, env=env, cwd=app_dir, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"install-units failed:\n{done.stderr}")

        def entries(*matches: str) -> list[dict[str, str]]:
            out = ns.journalctl("-o", "json", "--all", *matches).stdout
            return [json.loads(line) for line in out.splitlines() if line.strip()]

        def enough() -> list[dict[str, str]] | None:
            found = entries(f"SCHEDULER_ID={SCHEDULER_ID}", "MESSAGE=entered")
            return found if len(found) >= samples + 1 else None

        found = ns.wait_until(enough, timeout=samples * 5 + 60, interval=0.5, message="enough runs")
        runs: dict[str, Run] = {}
        for entry in found:
            runs.setdefault(entry["RUN_ID"], Run()).entered = float(entry["F_AT"])
        service = next(e["_SYSTEMD_UNIT"] for e in found if "_SYSTEMD_UNIT" in e)
        for entry in entries(f"UNIT={service}", "_PID=1"):
            run = runs.get(entry.get("INVOCATION_ID", ""))
            if run is None:
                continue
            moment = int(entry["_SOURCE_REALTIME_TIMESTAMP"]) / 1e6
            if entry.get("MESSAGE_ID") == MESSAGE_JOB_START:
                run.started = moment
            elif entry.get("MESSAGE_ID") == MESSAGE_UNIT_SUCCESS:
                run.ended = moment
        ns.run([PYTHON, "-m", "supervisor", "uninstall-units"], env=env, cwd=app_dir)
        return list(runs.values())
    finally:
        ns.stop()


# -- the manager ----------------------------------------------------------------------------


def measure_manager(samples: int) -> list[Run]:
    work = temp_dir("bench-timer-")
    try:
        spec = write_app(work / "app", "bench_timer_manager_app", APP)
        service = start_service(spec, work / "state")
        use_cases = service.use_cases
        try:
            deadline = time.monotonic() + samples * 5 + 60
            while len(use_cases.runs(su(), SCHEDULER_ID, limit=samples + 5)) < samples + 2:
                if time.monotonic() > deadline:
                    raise SystemExit("the manager did not run enough times")
                time.sleep(0.5)  # waiting for the schedule to produce samples
            records = use_cases.logs(su(), LogQuery(scheduler_id=SCHEDULER_ID, limit=10 * samples))
            entered = {r.run_id: float(r.fields["at"]) for _, r in records if "at" in r.fields}
            runs = []
            for record in use_cases.runs(su(), SCHEDULER_ID, limit=samples + 5):
                if record.ended_at is None:
                    continue
                runs.append(
                    Run(
                        started=record.started_at.timestamp(),
                        entered=entered.get(record.run_id),
                        ended=record.ended_at.timestamp(),
                    )
                )
            return runs
        finally:
            service.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def row(name: str, millis: list[float]) -> str:
    if not millis:
        return f"{name:<44} (no samples)"
    return (
        f"{name:<44} {percentile(millis, 50):9.1f} ms {percentile(millis, 99):9.1f} ms "
        f"{len(millis):>5}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    systemd_started, systemd_entered = lateness(measure_systemd(args.samples))
    _, manager_entered = lateness(measure_manager(args.samples))
    print("start-time accuracy of a 1 s SCHEDULE: actual minus planned start")
    print("(planned = end of the previous run + 1 s)")
    print(f"{'':<44} {'p50':>12} {'p99':>12} {'n':>5}")
    print(row("systemd timer: service job started", systemd_started))
    print(row("systemd timer: runner's first line", systemd_entered))
    print(row("manager (fork server): runner's first line", manager_entered))


if __name__ == "__main__":
    main()
