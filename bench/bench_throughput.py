"""End-to-end throughput of no-op runs, history written.

Several SCHEDULE schedulers with a 1 ms pause keep the manager busy for a fixed window;
the figure is finished runs per second as recorded in SQLite. Baseline in the same run:
the same load with a fresh interpreter per run, and the floor: a bare ``fork`` +
``waitpid`` loop in a process that imported the same packages (what a run costs the OS,
with no pipes, records or history), measured just before and after each row (the
machine is shared: its load moves). Rows: with cgroups (forked into them with clone3),
without cgroups, and with cgroups joined after fork (the fallback); 1 and 8 schedulers;
and with one fork server only (the launcher runs one per core), to compare with.
CPU ms per run is the sum over the manager, the fork servers and the runs (what the load
of the machine moves least), then split between them while the service ran (the fork
servers' column counts their forkers too).
Targets: >= 200 runs/s; with the fork server >= 0.8x
of the floor with one scheduler, >= 0.9x with eight.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
    rate: float  # finished runs per second
    failed: int  # how many did not succeed
    cpu: float  # CPU ms per run (user + system): the manager, fork server and runs
    manager: float  # of which the manager process's own
    server: float  # the fork server's own (0 without one)
    runs: float  # the runs the fork server reaped


def measure(
    schedulers: int,
    seconds: float,
    *,
    fork_server: bool,
    cgroups: bool = True,
    into_cgroup: bool = True,
    servers: int | None = None,
) -> Row:
    """One row: ``schedulers`` no-op schedulers for ``seconds`` (``servers``: fork
    servers, default the launcher's)."""
    if not cgroups:
        with _without_cgroups():
            return measure(schedulers, seconds, fork_server=fork_server, servers=servers)
    if not into_cgroup:
        with joining_after_fork():
            return measure(schedulers, seconds, fork_server=fork_server, servers=servers)
    work = temp_dir("bench-throughput-")
    try:
        spec = write_app(
            work / "app", f"noop_app_{int(fork_server)}", NOOP_APP.format(count=schedulers)
        )
        # Keep every run: the figure counts them (the default keeps 100 per scheduler).
        cpu_before = _cpu_seconds()
        own_before = _own_seconds()
        service = start_service(
            spec,
            work / "state",
            fork_server=fork_server,
            fork_servers=servers if fork_server else None,
            max_runs_per_scheduler=10**9,
        )
        server_pids = fork_server_pids()
        server_before = _server_seconds(server_pids)
        started = time.monotonic()
        time.sleep(seconds)
        server_after = _server_seconds(server_pids)
        own = _own_seconds() - own_before
        service.close()
        elapsed = time.monotonic() - started
        cpu = _cpu_seconds() - cpu_before
        with SqliteStore.open(work / "state" / "state.db", max_runs_per_scheduler=10**9) as store:
            finished = [
                r
                for i in range(schedulers)
                for r in store.runs(f"bench.noop.{i}", limit=10**9)
                if r.outcome is not None
            ]
        failed = sum(
            1 for r in finished if r.outcome is not None and r.outcome.value != "succeeded"
        )
        per_run = 1000 / max(1, len(finished))
        return Row(
            rate=len(finished) / elapsed,
            failed=failed,
            cpu=cpu * per_run,
            manager=own * per_run,
            server=(server_after[0] - server_before[0]) * per_run,
            runs=(server_after[1] - server_before[1]) * per_run,
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


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped descendants (the fork server's runs
    count once the server is reaped, at ``close``)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


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


def bare_fork_rate(seconds: float) -> tuple[float, float]:
    """Forks per second of a loop that forks a child which exits at once, and reaps it;
    and the CPU ms each costs."""
    import supervisor.runs.child
    import supervisor.store.sqlite  # noqa: F401

    count = 0
    cpu_before = _cpu_seconds()
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        count += 1
    elapsed = time.monotonic() - started
    return count / elapsed, (_cpu_seconds() - cpu_before) * 1000 / max(1, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--schedulers", type=int, default=8)
    parser.add_argument("--floor-seconds", type=float, default=1.5)
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh interpreter")
    parser.add_argument(
        "--quick", action="store_true", help="only the rows with cgroups forked into (clone3)"
    )
    args = parser.parse_args()
    many = args.schedulers
    print(f"no-op runs end to end over {args.seconds:g} s; the floor (bare fork + waitpid)")
    print("is measured just before and just after each row, and the factor uses their mean;")
    print("CPU ms/run: the manager, fork server and runs together (the floor: one fork),")
    print("then split: the manager / the fork server / the runs (while the service ran)")
    print(
        f"{'':<46} {'runs/s':>7} {'floor':>7} {'factor':>7} {'CPU ms/run':>11}"
        f" {'mgr/server/runs':>16}"
    )
    rows: list[tuple[str, int, bool, bool, bool]] = [
        ("fork server, 1 scheduler", 1, True, True, True),
        (f"fork server, {many} schedulers", many, True, True, True),
        ("one fork server only, 1 scheduler", 1, True, True, True),
        (f"one fork server only, {many} schedulers", many, True, True, True),
        ("fork server, 1 scheduler, no cgroups", 1, True, False, True),
        (f"fork server, {many} schedulers, no cgroups", many, True, False, True),
        ("fork server, 1 scheduler, join after fork", 1, True, True, False),
        (f"fork server, {many} schedulers, join after fork", many, True, True, False),
    ]
    if args.quick:
        rows = rows[:4]
    if not args.no_fresh and not args.quick:
        rows.append((f"fresh interpreter, {many} schedulers", many, False, True, True))
    floors = [bare_fork_rate(args.floor_seconds)]
    for name, count, fork_server, cgroups, into in rows:
        row = measure(
            count,
            args.seconds,
            fork_server=fork_server,
            cgroups=cgroups,
            into_cgroup=into,
            servers=1 if name.startswith("one fork server") else None,
        )
        floors.append(bare_fork_rate(args.floor_seconds))
        floor = (floors[-2][0] + floors[-1][0]) / 2
        split = f"{row.manager:.1f}/{row.server:.1f}/{row.runs:.1f}"
        print(
            f"{name:<46} {row.rate:7.1f} {floor:7.1f} {row.rate / floor:6.2f}x {row.cpu:11.2f}"
            f" {split:>16}  (not succeeded: {row.failed})"
        )
    floor_cpu = statistics.median(cpu for _, cpu in floors)
    print(
        f"{'bare fork + waitpid (floor), median':<46} {'':7} "
        f"{statistics.median(r for r, _ in floors):7.1f} {'1.00x':>7} {floor_cpu:11.2f}"
    )
    print("targets: >= 200 runs/s; fork server >= 0.8x the floor (1 scheduler), >= 0.9x (8)")


if __name__ == "__main__":
    main()
