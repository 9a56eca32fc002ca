"""1,000 registered SCHEDULE schedulers waiting: the manager's CPU and memory.

The manager runs in this process; the window measures this process's CPU time while
every scheduler waits (start delay one hour). Baseline in the same run: the same manager
with a single scheduler. Targets: <= 1 % of a core and RSS <= 150 MB with 1,000.
"""

from __future__ import annotations

import argparse
import shutil
import time

import psutil
from common import start_service, temp_dir, write_app

APP = """
def noop(ctx):
    pass

for i in range({count}):
    add(id=f"bench.idle.{{i}}", name=f"idle {{i}}", kind=scheduler.Kind.SCHEDULE, runner=noop,
        defaults=scheduler.Settings(start_delay=timedelta(hours=1), pause_time=timedelta(hours=1)))
"""


def measure(count: int, seconds: float) -> tuple[float, float, float]:
    work = temp_dir("bench-idle-")
    try:
        spec = write_app(work / "app", f"idle_app_{count}", APP.format(count=count))
        service = start_service(spec, work / "state")
        try:
            me = psutil.Process()
            time.sleep(1.0)  # let start-up settle before the window
            before = me.cpu_times()
            started = time.monotonic()
            time.sleep(seconds)
            after = me.cpu_times()
            elapsed = time.monotonic() - started
            cpu = (after.user - before.user + after.system - before.system) / elapsed * 100
            rss = me.memory_info().rss / 2**20
            helpers = sum(c.memory_info().rss for c in me.children(recursive=True)) / 2**20
        finally:
            service.close()
        return cpu, rss, helpers
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"waiting schedulers over {args.seconds:g} s (manager process; fork server apart)")
    for name, count in (("baseline, 1 scheduler", 1), ("1,000 schedulers", 1000)):
        cpu, rss, helpers = measure(count, args.seconds)
        print(
            f"{name:<24} cpu={cpu:6.2f} % of a core  rss={rss:7.1f} MB  "
            f"fork server rss={helpers:6.1f} MB"
        )
    print("targets: cpu <= 1 %, rss <= 150 MB")


if __name__ == "__main__":
    main()
