"""CPU and page faults of one no-op run, split by process: the run, the fork server, the
forker and the manager, counted by the kernel while the service runs.

Several SCHEDULE schedulers with a 1 ms pause keep the manager busy; over each window
``perf stat -a -G`` counts ``task-clock`` and ``page-faults`` of every process in the
manager's run cgroups (a run's process from the fork that made its spare to its exit:
the spare's wait, the run, its teardown), ``/proc/PID/schedstat`` gives the fork
server's and the forker's CPU time, ``os.times`` the manager's (all its threads), and
the store the runs that ended. Needs root, ``perf`` and cgroup v2 run cgroups.

Windows alternate, so that two trees can be compared in one session: run this script of
each tree in turn (``--windows`` small), or give ``--other TREE`` to alternate with
another checkout (one window each, ``--rounds`` times), measured by this same script with
the other tree's ``supervisor`` package first on the path. The machine is
shared: compare medians of alternated windows, not single figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import NOOP_APP, fork_server_pids, start_service, temp_dir, write_app


@dataclass(frozen=True)
class Window:
    runs: int  # runs that ended in the window
    rate: float  # of them per second
    run_ms: float  # task-clock ms per run of the run processes (spare included)
    run_faults: float  # page faults per run in them
    server_ms: float  # the fork server's own CPU ms per run
    forker_ms: float  # the forker's
    manager_ms: float  # the manager's (every thread)


def _finished(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        row = conn.execute("SELECT COUNT(*) FROM runs WHERE outcome IS NOT NULL").fetchone()
    return int(row[0])


def _sched_ns(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    return total


def _servers_and_forkers() -> tuple[list[int], list[int]]:
    """The fork servers (the launcher may run several) and their forkers."""
    from supervisor.runs import procs

    servers = fork_server_pids()
    # A forker: a server's child that is not in a run cgroup (spares and runs are).
    forkers = []
    for server in servers:
        for pid in procs.children(server):
            with contextlib.suppress(OSError):
                if "sched-supervisor-runs" not in Path(f"/proc/{pid}/cgroup").read_text():
                    forkers.append(pid)
    return servers, forkers


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _owner_cgroup() -> tuple[Path, str]:
    """This process's run cgroups' level, and its path as ``perf -G`` names it."""
    from supervisor.runs import cgroups

    root = cgroups.detect()
    if root is None or root.version != 2:
        raise SystemExit("needs cgroup v2 run cgroups")
    owner = root.subtree / root.owner
    mount = Path("/sys/fs/cgroup/unified")
    if not (mount / "cgroup.procs").exists() or not owner.is_relative_to(mount):
        mount = Path("/sys/fs/cgroup")
    return owner, str(owner.relative_to(mount))


def _perf(cgroup: str, seconds: float) -> tuple[float, float]:
    """(task-clock ms, page faults) of the processes in ``cgroup`` (and below)."""
    with tempfile.NamedTemporaryFile("r", suffix=".perf") as out:
        events = ["-e", "task-clock,page-faults", "-G", f"{cgroup},{cgroup}"]
        command = ["perf", "stat", "-a", "-x", ",", "-o", out.name, *events]
        subprocess.run([*command, "--", "sleep", str(seconds)], check=True)
        values: dict[str, float] = {}
        for line in out.read().splitlines():
            parts = line.split(",")
            if len(parts) > 3 and parts[0] and not line.startswith("#"):
                with contextlib.suppress(ValueError):
                    values[parts[2].split(":")[0]] = float(parts[0])
    return values.get("task-clock", 0.0), values.get("page-faults", 0.0)


def measure(schedulers: int, seconds: float, windows: int, warm: float) -> list[Window]:
    work = temp_dir("bench-run-cost-")
    try:
        spec = write_app(work / "app", f"cost_app_{schedulers}", NOOP_APP.format(count=schedulers))
        service = start_service(
            spec, work / "state", fork_server=True, max_runs_per_scheduler=10**9
        )
        try:
            owner, cgroup = _owner_cgroup()
            deadline = time.monotonic() + 30
            while not owner.is_dir() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(warm)
            db = work / "state" / "state.db"
            found: list[Window] = []
            for _ in range(windows):
                servers, forkers = _servers_and_forkers()
                before = (_finished(db), _sched_ns(servers), _sched_ns(forkers), _own_cpu())
                started = time.monotonic()
                clock, faults = _perf(cgroup, seconds)
                elapsed = time.monotonic() - started
                after = (_finished(db), _sched_ns(servers), _sched_ns(forkers), _own_cpu())
                runs = after[0] - before[0]
                per = 1 / max(1, runs)
                found.append(
                    Window(
                        runs=runs,
                        rate=runs / elapsed,
                        run_ms=clock * per,
                        run_faults=faults * per,
                        server_ms=(after[1] - before[1]) / 1e6 * per,
                        forker_ms=(after[2] - before[2]) / 1e6 * per,
                        manager_ms=(after[3] - before[3]) * 1000 * per,
                    )
                )
            return found
        finally:
            service.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def show(label: str, window: Window) -> str:
    return (
        f"{label:<18} {window.runs:6d} {window.rate:7.1f} {window.run_ms:7.3f} "
        f"{window.run_faults:7.0f} {window.server_ms:7.3f} {window.forker_ms:7.3f} "
        f"{window.manager_ms:7.3f}"
    )


HEADER = (
    f"{'':<18} {'runs':>6} {'runs/s':>7} {'run ms':>7} {'faults':>7} {'server':>7} "
    f"{'forker':>7} {'manager':>7}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedulers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0, help="one window")
    parser.add_argument("--windows", type=int, default=1, help="windows per service start")
    parser.add_argument("--warm", type=float, default=1.0, help="seconds before the first")
    parser.add_argument("--other", type=Path, help="another tree to alternate with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the windows as JSON")
    args = parser.parse_args()
    if args.json:
        import supervisor

        print(f"supervisor from {Path(supervisor.__file__).parent}", file=sys.stderr)
        windows = measure(args.schedulers, args.seconds, args.windows, args.warm)
        print(json.dumps([asdict(w) for w in windows]))
        return
    if args.other is None:
        print(HEADER)
        for window in measure(args.schedulers, args.seconds, args.windows, args.warm):
            print(show("this tree", window))
        return
    here = Path(__file__).resolve().parent.parent
    trees = {"this tree": here, "other tree": args.other.resolve()}
    seen: dict[str, list[Window]] = {name: [] for name in trees}
    print(f"{args.schedulers} scheduler(s), {args.seconds:g} s windows, per run:")
    print(HEADER)
    for _ in range(args.rounds):
        for name, tree in trees.items():
            # Both trees on the path (so ``common`` adds neither), the measured one first.
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(tree), str(here)])),
            }
            command = [sys.executable, str(Path(__file__).resolve()), "--json"]
            command += ["--schedulers", str(args.schedulers), "--seconds", str(args.seconds)]
            command += ["--windows", str(args.windows), "--warm", str(args.warm)]
            output = subprocess.run(
                command, check=True, capture_output=True, text=True, env=env
            ).stdout
            for item in json.loads(output.splitlines()[-1]):
                seen[name].append(Window(**item))
                print(show(name, seen[name][-1]), flush=True)
    for name, windows in seen.items():
        middle = {
            field: statistics.median(getattr(w, field) for w in windows)
            for field in Window.__dataclass_fields__
        }
        median = Window(**{**middle, "runs": int(middle["runs"])})
        print(show(f"{name} median", median))


if __name__ == "__main__":
    main()
