"""How long ``supervisor run`` takes to exit after SIGTERM, in the hard cases, beside an
idle manager's shutdown measured in the same run (the baseline).

Each sample starts a real manager (``supervisor run`` with the Admin Center on a free
port), starts one run of the case's scheduler, sends SIGTERM and times the exit. Then it
reads the state database: the run's end and its log records must have been stored. Cases:

- ``idle``: nothing runs (the baseline).
- ``stubborn``: a run that ignores the cancel request and SIGTERM (only SIGKILL ends it).
- ``children``: a run whose children ignore SIGTERM too, one of them in a session of its
  own (out of the run's process group), holding the run's output pipe.
- ``stuck-server``: a stubborn run whose fork servers were stopped (SIGSTOP) before the
  SIGTERM.
- ``slow-store``: a stubborn run that logs, with the database locked by another process
  (a write transaction) for the grace after the SIGTERM (``--lock-seconds``).

Cases alternate round by round; figures are medians with the spread (min-max) in seconds,
and the median beside the idle one. ``--python``/``--root`` measure another checkout (for
example ``/work/main/.venv/bin/python`` and ``/work/main``) the same way;
``--no-fork-server`` the runs started in fresh interpreters (no ``stuck-server`` then).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from common import ROOT, temp_dir

APP = """
import os, signal, sys, time
from datetime import timedelta
from pathlib import Path
from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("bench-shutdown")
schedulers = cfgscheduler.enable(cfg)
MARKS = Path(os.environ["SHUTDOWN_BENCH_MARKS"])


def started(ctx, name):
    (MARKS / f"{name}.{ctx.run_id}").write_text(str(os.getpid()))


def stubborn(ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log = scheduler.logger_from(ctx)
    log.info("not listening")
    started(ctx, "stubborn")
    n = 0
    while True:
        n += 1
        log.info("still here", n=n)
        time.sleep(0.01)


def children(ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for own_session in (False, True):
        if os.fork() == 0:
            if own_session:
                os.setsid()
            while True:  # holds the run's stdout
                print("child", os.getpid(), flush=True)
                time.sleep(0.05)
    scheduler.logger_from(ctx).info("children started")
    started(ctx, "children")
    while True:
        time.sleep(0.05)


def add(id, runner):
    schedulers.use_cases.configure(user.su(), scheduler.Options(
        id=id, name=id, kind=scheduler.Kind.MANUAL, runner=runner))


add("shut.stubborn", stubborn)
add("shut.children", children)
"""

CASES = ("idle", "stubborn", "children", "stuck-server", "slow-store")
SCHEDULER = {
    "stubborn": "shut.stubborn",
    "children": "shut.children",
    "stuck-server": "shut.stubborn",
    "slow-store": "shut.stubborn",
}


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    outcome: str | None  # the run's stored outcome (None: no end stored; idle: "-")
    logs: int  # its stored log records


@dataclass(frozen=True, slots=True)
class Tree:
    python: str
    root: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def fork_servers(manager: int) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(manager).children()
        if any("forkserver" in part for part in child.cmdline())
    ]


@contextlib.contextmanager
def locked_database(path: Path, seconds: float) -> Iterator[None]:
    """Another process's write transaction on ``path`` for ``seconds`` (from now)."""
    code = (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); "
        "time.sleep(float(sys.argv[2])); c.execute('ROLLBACK')"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.wait(timeout=seconds + 30)


def measure(
    case: str, tree: Tree, *, grace: str, lock_seconds: float, extra: tuple[str, ...]
) -> Sample:
    work = temp_dir("bench-shutdown-")
    state, marks, app_dir = work / "state", work / "marks", work / "app"
    for directory in (marks, app_dir):
        directory.mkdir(parents=True)
    (app_dir / "shutdown_app.py").write_text(APP)
    env = {
        **os.environ,
        "PYTHONPATH": f"{app_dir}:{tree.root}",
        "SHUTDOWN_BENCH_MARKS": str(marks),
    }
    base = ["/usr/bin/env", "--default-signal", tree.python, "-m", "supervisor"]
    manager = subprocess.Popen(
        [
            *base,
            "run",
            "--app",
            "shutdown_app:cfg",
            "--state-dir",
            str(state),
            "--admin",
            f"127.0.0.1:{free_port()}",
            "--grace",
            grace,
            *extra,
        ],
        cwd=app_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_id: str | None = None
    try:
        wait_until(lambda: (state / "control.sock").exists(), 60, "the manager")
        if case != "idle":
            executed = subprocess.run(
                [*base, "execute", SCHEDULER[case], "--json", "--state-dir", str(state)],
                cwd=app_dir,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            run_id = json.loads(executed.stdout)["run_id"]
            wait_until(lambda: any(marks.glob(f"*.{run_id}")), 30, "the run")
        if case == "stuck-server":
            for server in fork_servers(manager.pid):
                server.suspend()
        with contextlib.ExitStack() as stack:
            if case == "slow-store":
                stack.enter_context(locked_database(state / "state.db", lock_seconds))
            began = time.monotonic()
            manager.send_signal(signal.SIGTERM)
            manager.wait(timeout=120)
            seconds = time.monotonic() - began
        return Sample(seconds, *stored_end(state / "state.db", run_id))
    finally:
        if manager.poll() is None:
            manager.kill()
            manager.wait()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def stored_end(database: Path, run_id: str | None) -> tuple[str | None, int]:
    if run_id is None:
        return "-", 0
    with contextlib.closing(sqlite3.connect(database)) as conn:
        row = conn.execute("SELECT outcome FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        logs = conn.execute(
            "SELECT count(*) FROM logs JOIN runs ON logs.run_seq = runs.seq WHERE run_id = ?",
            (run_id,),
        ).fetchone()
    return (row[0] if row else None), int(logs[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grace", default="5s")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument(
        "--lock-seconds",
        type=float,
        default=None,
        help="how long slow-store keeps the database locked after the SIGTERM (the grace)",
    )
    parser.add_argument(
        "--no-fork-server", action="store_true", help="runs in fresh interpreters (no stuck-server)"
    )
    parser.add_argument("--python", default=sys.executable, help="the other tree's python")
    parser.add_argument("--root", type=Path, default=ROOT, help="the other tree's root")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))
    from supervisor.core.durations import parse_duration

    grace_seconds = parse_duration(args.grace, field="--grace").total_seconds()
    lock_seconds = grace_seconds if args.lock_seconds is None else args.lock_seconds
    tree = Tree(python=args.python, root=args.root)
    cases = [c for c in args.cases.split(",") if c]
    extra: tuple[str, ...] = ()
    if args.no_fork_server:
        extra = ("--no-fork-server",)
        cases = [c for c in cases if c != "stuck-server"]
    if "idle" not in cases:
        cases.insert(0, "idle")
    samples: dict[str, list[Sample]] = {case: [] for case in cases}
    for round_ in range(args.rounds):
        for case in cases:
            sample = measure(case, tree, grace=args.grace, lock_seconds=lock_seconds, extra=extra)
            samples[case].append(sample)
            print(
                f"round {round_ + 1} {case:<13} {sample.seconds:6.2f} s  "
                f"outcome={sample.outcome} logs={sample.logs}",
                flush=True,
            )
    idle = statistics.median(s.seconds for s in samples["idle"])
    print(f"\n{args.root}: grace {grace_seconds:g} s, {args.rounds} round(s)")
    print(f"{'case':<13} {'median':>8} {'min-max':>14} {'- idle':>8}  outcomes, logs")
    for case, taken in samples.items():
        times = [s.seconds for s in taken]
        median = statistics.median(times)
        outcomes = ",".join(sorted({str(s.outcome) for s in taken}))
        logs = min(s.logs for s in taken)
        print(
            f"{case:<13} {median:7.2f}s {min(times):6.2f}-{max(times):5.2f}s "
            f"{median - idle:+7.2f}s  {outcomes}, >= {logs} records"
        )


if __name__ == "__main__":
    main()
