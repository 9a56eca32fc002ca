"""End-to-end throughput of no-op runs, history written.

Several SCHEDULE schedulers with a 1 ms pause keep the manager busy for a fixed window;
the figure is the runs that ended within the window per second, as recorded in SQLite.
Baseline in the same run: the same load with a fresh interpreter per run, and the floor:
a bare ``fork`` + ``waitpid`` loop in a process that imported the same packages (what a
run costs the OS, with no pipes, records or history), measured just before and after
each row. The machine is shared and its load moves, so the rows take turns round by
round (``--rounds``) and each prints its median factor over the rounds with their
spread. Rows: with cgroups (forked into them with clone3), without cgroups, and with
cgroups joined after fork (the fallback); 1 and 8 schedulers; and with one fork server
only (two where the launcher's default is one), to compare with. CPU ms per run counts only the
window (not the service's start or close): the manager, the fork servers with their
forkers, and the runs, then split between them.
Targets: >= 200 runs/s; with the fork server >= 0.8x
of the floor with one scheduler, >= 0.9x with eight.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common import (
    NOOP_APP,
    fork_server_pids,
    joining_after_fork,
    start_service,
    temp_dir,
    write_app,
)

from supervisor.store.sqlite import SqliteStore


@dataclass(frozen=True)
class Row:
    rate: float  # runs ended within the window, per second
    failed: int  # of those, how many did not succeed (cancelled at close excluded)
    cancelled_at_close: int  # runs in flight when the service closed (expected)
    cpu: float  # CPU ms per run within the window: the manager, fork servers and runs
    manager: float  # of which the manager process's own
    server: float  # the fork servers' and their forkers' own (0 without one)
    runs: float  # the runs the fork servers reaped


@dataclass(frozen=True)
class Case:
    name: str
    schedulers: int
    fork_server: bool = True
    cgroups: bool = True
    into_cgroup: bool = True
    servers: int | None = None  # fork servers; None: the launcher's default


def measure(case: Case, seconds: float) -> Row:
    """One sitting of ``case`` for a window of ``seconds``."""
    if not case.cgroups:
        with _without_cgroups():
            return _measure(case, seconds)
    if not case.into_cgroup:
        with joining_after_fork():
            return _measure(case, seconds)
    return _measure(case, seconds)


def _measure(case: Case, seconds: float) -> Row:
    work = temp_dir("bench-throughput-")
    try:
        spec = write_app(
            work / "app",
            f"noop_app_{int(case.fork_server)}_{case.schedulers}",
            NOOP_APP.format(count=case.schedulers),
        )
        # Keep every run: the figure counts them (the default keeps 100 per scheduler).
        service = start_service(
            spec,
            work / "state",
            fork_server=case.fork_server,
            fork_servers=case.servers if case.fork_server else None,
            max_runs_per_scheduler=10**9,
        )
        server_pids = fork_server_pids()
        # The window opens once the service runs: its start is not counted.
        server_before = _server_seconds(server_pids)
        own_before = _own_seconds()
        fresh_before = _children_seconds()
        opened = datetime.now(UTC)
        time.sleep(seconds)
        closed = datetime.now(UTC)
        own = _own_seconds() - own_before
        server_after = _server_seconds(server_pids)
        # Without a fork server the runs are this process's children, reaped as they end.
        fresh = 0.0 if case.fork_server else _children_seconds() - fresh_before
        service.close()
        with SqliteStore.open(work / "state" / "state.db", max_runs_per_scheduler=10**9) as store:
            ended = [
                (r.ended_at, r.outcome.value)
                for i in range(case.schedulers)
                for r in store.runs(f"bench.noop.{i}", limit=10**9)
                if r.ended_at is not None and r.outcome is not None
            ]
        within = [outcome for at, outcome in ended if opened <= at <= closed]
        at_close = sum(1 for at, outcome in ended if at > closed and outcome == "cancelled")
        failed = sum(1 for outcome in within if outcome != "succeeded")
        per_run = 1000 / max(1, len(within))
        server = server_after[0] - server_before[0]
        runs = server_after[1] - server_before[1] + fresh
        return Row(
            rate=len(within) / (closed - opened).total_seconds(),
            failed=failed,
            cancelled_at_close=at_close,
            cpu=(own + server + runs) * per_run,
            manager=own * per_run,
            server=server * per_run,
            runs=runs * per_run,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _server_seconds(pids: list[int]) -> tuple[float, float]:
    """(the fork servers' own CPU seconds and their forkers', the servers' reaped
    children's: the runs). A forker lives until its server closes, so its time is not
    among the reaped children's until then."""
    own = runs = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = _stat(pid)
        if fields is None:
            continue
        own += (int(fields[11]) + int(fields[12])) / ticks
        runs += (int(fields[13]) + int(fields[14])) / ticks
        for forker in _forkers_of(pid):
            forker_fields = _stat(forker)
            if forker_fields is not None:
                own += (int(forker_fields[11]) + int(forker_fields[12])) / ticks
    return own, runs


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()


def _forkers_of(server: int) -> list[int]:
    """The server's forker: its child that does not lead a session (runs and spares do)."""
    try:
        children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    except OSError:
        return []
    found = []
    for child in map(int, children):
        fields = _stat(child)
        if fields is not None and int(fields[3]) != child:
            found.append(child)
    return found


def _children_seconds() -> float:
    times = os.times()
    return times.children_user + times.children_system


@contextlib.contextmanager
def _without_cgroups() -> Iterator[None]:
    """Runs contained by process group and marker only (what a cgroup per run costs)."""
    try:
        from supervisor.runs.containment import Containment
    except ImportError:  # a tree without cgroup containment
        yield
        return
    detect = Containment.detect
    Containment.detect = classmethod(lambda cls: cls(None))  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        Containment.detect = detect  # type: ignore[method-assign]


# The floor's loop, in a fresh interpreter each time: measured in this process it would
# slow down round by round as this process grows (fork copies its page tables), and make
# the later rows look better than the first.
_FLOOR_LOOP = """
import os, sys, time
import supervisor.cfgscheduler, supervisor.runs.child
import supervisor.runs.forkserver, supervisor.store.sqlite
def cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
count, before, started = 0, cpu(), time.monotonic()
deadline, pause = started + float(sys.argv[1]), float(sys.argv[2])
while time.monotonic() < deadline:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    count += 1
    if pause:
        time.sleep(pause)
print(count / (time.monotonic() - started), (cpu() - before) * 1000 / max(1, count))
"""


PAUSE_SECONDS = 0.001  # NOOP_APP's pause between one scheduler's runs


def bare_fork_rate(seconds: float, pause: float = 0.0) -> tuple[float, float]:
    """Forks per second of a loop that forks a child which exits at once, and reaps it
    (then sleeps ``pause`` seconds), in a process that imported what a fork server does;
    and the CPU ms each costs."""
    done = subprocess.run(
        [sys.executable, "-c", _FLOOR_LOOP, str(seconds), str(pause)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    rate, cpu = done.stdout.split()
    return float(rate), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="each row's window")
    parser.add_argument("--rounds", type=int, default=3, help="sittings of each row, in turn")
    parser.add_argument("--schedulers", type=int, default=8)
    parser.add_argument("--floor-seconds", type=float, default=1.5)
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh interpreter")
    parser.add_argument(
        "--quick", action="store_true", help="only the rows with cgroups forked into (clone3)"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    from supervisor.runs.forklauncher import default_server_count

    many = args.schedulers
    # To compare with the default: one server, or two where the default is one.
    other = 1 if default_server_count() > 1 else 2
    cases = [
        Case("fork server, 1 scheduler", 1),
        Case(f"fork server, {many} schedulers", many),
        Case(f"{other} fork server(s) only, 1 scheduler", 1, servers=other),
        Case(f"{other} fork server(s) only, {many} schedulers", many, servers=other),
        Case("fork server, 1 scheduler, no cgroups", 1, cgroups=False),
        Case(f"fork server, {many} schedulers, no cgroups", many, cgroups=False),
        Case("fork server, 1 scheduler, join after fork", 1, into_cgroup=False),
        Case(f"fork server, {many} schedulers, join after fork", many, into_cgroup=False),
    ]
    if args.quick:
        cases = cases[:4]
    if not args.no_fresh and not args.quick:
        cases.append(Case(f"fresh interpreter, {many} schedulers", many, fork_server=False))
    print(
        f"no-op runs end to end, {args.rounds} round(s) of a {args.seconds:g} s window per row"
        f" ({default_server_count()} fork server(s) by default on this machine); the floor"
    )
    print("(bare fork + waitpid) is measured just before and after each row, and the factor")
    print("uses their mean; each figure is the median over the rounds, the factor's spread")
    print("beside it; CPU ms/run: the manager, fork servers and runs within the window")
    print("(the floor: one fork), then split: the manager / the fork servers / the runs")
    sittings: dict[str, list[tuple[Row, float]]] = {case.name: [] for case in cases}
    floors = [bare_fork_rate(args.floor_seconds)]
    paced: list[float] = []
    for number in range(1, args.rounds + 1):
        # One scheduler's runs follow each other with its 1 ms pause between: no more
        # than this loop, which waits as long between its forks, can make.
        paced.append(bare_fork_rate(args.floor_seconds, PAUSE_SECONDS)[0])
        for case in cases:
            row = measure(case, args.seconds)
            floors.append(bare_fork_rate(args.floor_seconds))
            floor = (floors[-2][0] + floors[-1][0]) / 2
            sittings[case.name].append((row, floor))
            print(
                f"  round {number}: {case.name:<44} {row.rate:7.1f} runs/s, floor {floor:7.1f},"
                f" {row.rate / floor:5.2f}x, {row.cpu:6.2f} CPU ms/run",
                flush=True,
            )
    print(
        f"{'':<46} {'runs/s':>7} {'floor':>7} {'factor':>7} {'spread':>11} {'CPU ms/run':>11}"
        f" {'mgr/server/runs':>16}"
    )
    for case in cases:
        rows = sittings[case.name]
        factors = [row.rate / floor for row, floor in rows]
        split = "/".join(
            f"{statistics.median(getattr(row, part) for row, _ in rows):.2f}"
            for part in ("manager", "server", "runs")
        )
        spread = f"{min(factors):.2f}-{max(factors):.2f}"
        print(
            f"{case.name:<46} {statistics.median(row.rate for row, _ in rows):7.1f}"
            f" {statistics.median(floor for _, floor in rows):7.1f}"
            f" {statistics.median(factors):6.2f}x {spread:>11}"
            f" {statistics.median(row.cpu for row, _ in rows):11.2f} {split:>16}"
            f"  (failed: {sum(row.failed for row, _ in rows)},"
            f" cancelled at close: {sum(row.cancelled_at_close for row, _ in rows)})"
        )
    floor_cpu = statistics.median(cpu for _, cpu in floors)
    print(
        f"{'bare fork + waitpid (floor), median':<46} {'':7} "
        f"{statistics.median(r for r, _ in floors):7.1f} {'1.00x':>7} {'':>11} {floor_cpu:11.2f}"
    )
    # Each round's first row (1 scheduler) beside the paced floor measured just before.
    single = statistics.median(
        row.rate / pace for (row, _), pace in zip(sittings[cases[0].name], paced, strict=True)
    )
    print(
        f"{'bare fork + waitpid + the 1 ms pause, median':<46} {'':7}"
        f" {statistics.median(paced):7.1f}   (fork server, 1 scheduler: {single:.2f}x of it)"
    )
    print("targets: >= 200 runs/s; fork server >= 0.8x the floor (1 scheduler), >= 0.9x (8)")


if __name__ == "__main__":
    main()
