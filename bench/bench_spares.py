"""What the fork servers' spare pool costs at start-up, with 1,000 waiting schedulers.

The launcher keeps ``SPARES`` spare processes (each in its own cgroup where runs get
cgroups) more than it has runs in progress, shared between its fork servers. With every
scheduler waiting (start delay one hour) there are no runs, so the pool is ``SPARES``
processes. Rows: the service with its spare pool (the default fork servers, one per
core, and one server only), and the same service with the pool turned off (``_top_up``
does nothing), alternated ``--rounds`` times on a shared machine. Figures: how long
``Service.start`` took, how long until every spare was forked, and memory: the
manager's RSS, the fork servers' PSS (with their forkers') and the spares' (their pages
are shared copy-on-write; PSS divides each shared page between its sharers).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
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
    servers: int  # fork servers
    start: float  # seconds in Service.start
    ready: float  # seconds from the call until every spare was forked
    spares: int  # spare processes
    manager_rss: float  # MB
    servers_pss: float  # MB, all fork servers and their forkers
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


def _spares_and_forkers(
    servers: list[psutil.Process],
) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The servers' children: spares (each leads its session), and forkers (the rest)."""
    spares, forkers = [], []
    for server in servers:
        with contextlib.suppress(psutil.Error):
            for child in server.children():
                try:
                    leads = os.getsid(child.pid) == child.pid
                except OSError:
                    continue
                (spares if leads else forkers).append(child)
    return spares, forkers


def _pss(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_full_info().pss
    return total / 2**20


def measure(count: int, *, spares: bool, servers: int | None, round_: int) -> Row:
    work = temp_dir("bench-spares-")
    try:
        module = f"spares_app_{int(spares)}_{servers or 0}_{round_}"
        spec = write_app(work / "app", module, APP.format(count=count))
        with contextlib.ExitStack() as stack:
            if not spares:
                stack.enter_context(_no_spares())
            began = time.monotonic()
            service = start_service(spec, work / "state", fork_servers=servers)
            started = time.monotonic() - began
            me = psutil.Process()
            try:
                deadline = time.monotonic() + 30
                while True:
                    found = _servers(me)
                    pool, forkers = _spares_and_forkers(found)
                    # Each server keeps its share of the margin, rounded up.
                    share = math.ceil(forklauncher.SPARES / max(1, len(found)))
                    expected = len(found) * share if spares else 0
                    if len(pool) >= expected or time.monotonic() > deadline:
                        break
                    time.sleep(0.002)
                ready = time.monotonic() - began
                time.sleep(0.5)  # let the spares settle (their first pages written)
                pool, forkers = _spares_and_forkers(found)
                return Row(
                    servers=len(found),
                    start=started,
                    ready=ready,
                    spares=len(pool),
                    manager_rss=me.memory_info().rss / 2**20,
                    servers_pss=_pss(found + forkers),
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
    kinds: list[tuple[str, bool, int | None]] = [
        ("spare pool", True, None),
        ("pool, one server", True, 1),
        ("without the pool", False, None),
    ]
    rows: dict[str, list[Row]] = {name: [] for name, _, _ in kinds}
    for round_ in range(args.rounds):
        for name, spares, servers in kinds:
            rows[name].append(
                measure(args.schedulers, spares=spares, servers=servers, round_=round_)
            )
    print(f"{args.schedulers} waiting schedulers, medians of {args.rounds} alternated rounds")
    print(
        f"{'':<18} {'servers':>7} {'start s':>8} {'spares ready s':>15} {'spares':>7}"
        f" {'manager rss MB':>15} {'servers pss MB':>15} {'spares pss MB':>14}"
        f" {'together MB':>12}"
    )

    def med(values: list[float]) -> float:
        return statistics.median(values)

    for name, _, _ in kinds:
        got = rows[name]
        print(
            f"{name:<18} {med([r.servers for r in got]):7.0f} {med([r.start for r in got]):8.2f}"
            f" {med([r.ready for r in got]):15.2f} {med([r.spares for r in got]):7.0f}"
            f" {med([r.manager_rss for r in got]):15.1f} {med([r.servers_pss for r in got]):15.1f}"
            f" {med([r.spares_pss for r in got]):14.1f}"
            f" {med([r.servers_pss + r.spares_pss for r in got]):12.1f}"
        )


if __name__ == "__main__":
    main()
