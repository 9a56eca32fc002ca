"""What the fork servers' spare pool costs at start-up, with 1,000 waiting schedulers.

The launcher keeps ``SPARES`` spare processes (each in its own cgroup where runs get
cgroups) more than it has runs in progress, shared between its fork servers. With every
scheduler waiting (start delay one hour) there are no runs, so the pool is ``SPARES``
processes. Rows: the service with its spare pool, and the same service with the pool
turned off (``_top_up`` does nothing), alternated ``--rounds`` times on a shared
machine. Figures: how long ``Service.start`` took, how long until every spare was
forked, and memory: the manager's RSS, the fork servers' and the spares' PSS (their
pages are shared copy-on-write; PSS divides each shared page between its sharers).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
from common import start_service, temp_dir, write_app

from supervisor.runs import forklauncher

APP = """
def noop(ctx):
    pass

for i in range({count}):
    add(id=f"bench.spare.{{i}}", name=f"spare {{i}}", kind=scheduler.Kind.SCHEDULE, runner=noop,
        defaults=scheduler.Settings(start_delay=timedelta(hours=1), pause_time=timedelta(hours=1)))
"""


@dataclass(frozen=True)
class Row:
    start: float  # seconds in Service.start
    ready: float  # seconds from the call until every spare was forked
    spares: int  # spare processes
    manager_rss: float  # MB
    servers_pss: float  # MB, all fork servers
    spares_pss: float  # MB, all spares


@contextlib.contextmanager
def _no_spares() -> Iterator[None]:
    top_up = forklauncher.ForkServerLauncher._top_up
    forklauncher.ForkServerLauncher._top_up = lambda self, server, *, ended=False: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        forklauncher.ForkServerLauncher._top_up = top_up  # type: ignore[method-assign]


def _servers(me: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in me.children():
        with contextlib.suppress(psutil.Error):
            if any("runs.forkserver" in part for part in child.cmdline()):
                found.append(child)
    return found


def _pss(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_full_info().pss
    return total / 2**20


def measure(count: int, *, spares: bool, round_: int) -> Row:
    work = temp_dir("bench-spares-")
    try:
        module = f"spares_app_{int(spares)}_{round_}"
        spec = write_app(work / "app", module, APP.format(count=count))
        expected = forklauncher.SPARES if spares else 0
        with contextlib.ExitStack() as stack:
            if not spares:
                stack.enter_context(_no_spares())
            began = time.monotonic()
            service = start_service(spec, work / "state")
            started = time.monotonic() - began
            me = psutil.Process()
            try:
                deadline = time.monotonic() + 30
                while True:
                    servers = _servers(me)
                    pool = [c for s in servers for c in s.children()]
                    if len(pool) >= expected or time.monotonic() > deadline:
                        break
                    time.sleep(0.002)
                ready = time.monotonic() - began
                time.sleep(0.5)  # let the spares settle (their first pages written)
                pool = [c for s in servers for c in s.children()]
                return Row(
                    start=started,
                    ready=ready,
                    spares=len(pool),
                    manager_rss=me.memory_info().rss / 2**20,
                    servers_pss=_pss(servers),
                    spares_pss=_pss(pool),
                )
            finally:
                service.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedulers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows: dict[bool, list[Row]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for spares in (True, False):
            rows[spares].append(measure(args.schedulers, spares=spares, round_=round_))
    print(f"{args.schedulers} waiting schedulers, medians of {args.rounds} alternated rounds")
    print(
        f"{'':<20} {'start s':>8} {'spares ready s':>15} {'spares':>7} {'manager rss MB':>15}"
        f" {'servers pss MB':>15} {'spares pss MB':>14} {'together MB':>12}"
    )
    for spares, name in ((True, "with the spare pool"), (False, "without")):
        got = rows[spares]

        def med(values: list[float]) -> float:
            return statistics.median(values)

        print(
            f"{name:<20} {med([r.start for r in got]):8.2f} {med([r.ready for r in got]):15.2f}"
            f" {med([r.spares for r in got]):7.0f} {med([r.manager_rss for r in got]):15.1f}"
            f" {med([r.servers_pss for r in got]):15.1f} {med([r.spares_pss for r in got]):14.1f}"
            f" {med([r.servers_pss + r.spares_pss for r in got]):12.1f}"
        )


if __name__ == "__main__":
    main()
