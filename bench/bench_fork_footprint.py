"""The fork server's footprint: its memory, its modules, and what a fork from it costs.

Every run is forked out of the fork server (by its forker, itself a fork of it), and the
fork's page-table copy, the run's copy-on-write faults and the teardown at its exit all
grow with the server's private memory. For each checkout this prints:

- a real fork server, started by ``ForkServerLauncher`` as the manager does (one server,
  its app a no-op scheduler, or ``examples.jobs`` with ``--app examples``): Rss, Pss,
  Private_Dirty and Anonymous of the server and of its forker (``/proc/PID/smaps_rollup``,
  after serving the runs), the modules the server had imported when it exited (the app
  writes ``sys.modules`` from an ``atexit`` hook in the server), and per no-op run the CPU
  and minor page faults of the server plus forker and of the runs it reaped (``cutime``,
  ``cstime`` and ``cminflt`` of ``/proc/PID/stat``);
- a process that imports and prepares what the fork server does (its imports, the app,
  ``gc.collect`` and ``gc.freeze``) and then forks children that ``os._exit(0)`` at once:
  the CPU and faults of the fork itself (the parent's) and of the child (its faults and
  its exit), its memory and module count;
- the same for a bare interpreter, measured in the same run: the floor.

``--before DIR`` measures another checkout the same way (its ``.venv/bin/python`` if it
has one), rounds alternating between the checkouts; medians over the rounds, and the
spread (min-max) for the CPU figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MEMORY_FIELDS = ("Rss", "Pss", "Private_Dirty", "Anonymous")

# The app the real fork server loads: a no-op manual scheduler (on top of examples.jobs
# with --app examples), and a hook that writes the server's modules when it exits.
APP = """
import atexit, json, os, sys
from supervisor import Configurator, cfgscheduler, scheduler, user
{base}
def noop(ctx):
    pass
cfgscheduler.enable(cfg).use_cases.configure(
    user.su(),
    scheduler.Options(id="footprint.noop", name="noop", kind=scheduler.Kind.MANUAL, runner=noop),
)
_SERVER = os.getpid()
def _write_modules():
    if os.getpid() == _SERVER:
        with open(os.environ["FOOTPRINT_MODULES"], "w") as out:
            json.dump(sorted(sys.modules), out)
atexit.register(_write_modules)
"""
BASES = {
    "noop": 'cfg = Configurator("footprint")',
    "examples": "from examples.jobs import cfg",
}

# Run in a fresh interpreter: (with ``prepare``) import and set up what the fork server
# does, then fork children that exit at once; print the figures as JSON.
PROBE = r"""
import gc, json, os, resource, sys
prepare, app, forks = sys.argv[1] == "1", sys.argv[2], int(sys.argv[3])
if prepare:
    import supervisor.runs.forkserver as forkserver
    import supervisor.runs.context, supervisor.runs.wire
    from supervisor.core.app import load_app
    from supervisor.core.registry import registry_of
    registry = registry_of(load_app(app))
    getattr(forkserver, "_warm_up", lambda: None)()
    gc.collect()
    gc.freeze()
def rollup():
    fields = {}
    for line in open("/proc/self/smaps_rollup"):
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            fields[parts[0].rstrip(":")] = int(parts[1])
    return fields
memory = rollup()
modules = len(sys.modules)
self_before = resource.getrusage(resource.RUSAGE_SELF)
kids_before = resource.getrusage(resource.RUSAGE_CHILDREN)
for _ in range(forks):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
self_after = resource.getrusage(resource.RUSAGE_SELF)
kids_after = resource.getrusage(resource.RUSAGE_CHILDREN)
def cpu(a, b):
    return (b.ru_utime - a.ru_utime + b.ru_stime - a.ru_stime) * 1000 / forks
print(json.dumps({
    "memory": memory,
    "modules": modules,
    "parent_ms": cpu(self_before, self_after),
    "parent_faults": (self_after.ru_minflt - self_before.ru_minflt) / forks,
    "child_ms": cpu(kids_before, kids_after),
    "child_faults": (kids_after.ru_minflt - kids_before.ru_minflt) / forks,
}))
"""

# Run in a fresh interpreter of the checkout: a real fork server and no-op runs on it.
SERVER = r"""
import json, os, sys, threading, time, uuid
from pathlib import Path
tree, spec, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
from supervisor.runs.forklauncher import ForkServerLauncher
from supervisor.runs.job import Job

def stat(pid):
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return raw[raw.rindex(b")") + 2 :].split()

def leads_session(pid):
    try:
        return int(stat(pid)[3]) == pid
    except OSError:
        return True  # gone: a run that just ended, not the forker

def forker_of(server):
    # The child that does not lead a session (a spare does, a moment after its fork).
    for _ in range(500):
        children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
        found = [c for c in map(int, children) if not leads_session(c)]
        if len(found) == 1:
            return found[0]
        time.sleep(0.01)
    raise SystemExit(f"no one forker among the fork server's children: {found}")

def rollup(pid):
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            fields[parts[0].rstrip(":")] = int(parts[1])
    return fields

def counters(server, forker):
    s, f = stat(server), stat(forker)
    return {
        "own_ticks": sum(int(x[i]) for x in (s, f) for i in (11, 12)),
        "own_faults": int(s[7]) + int(f[7]),
        "runs_ticks": int(s[13]) + int(s[14]),
        "runs_faults": int(s[8]),
    }

def run_once(launcher):
    job = Job(scheduler_id="footprint.noop", run_id=uuid.uuid4().hex[:16], trigger="manual")
    process = launcher.spawn(job)
    end = process.supervise(sink=lambda batch: None, timeout=30, cancel=threading.Event())
    if end.outcome.value != "succeeded":
        raise SystemExit(f"a no-op run ended {end.outcome.value}")

def idle(pids):
    # Wait until the server and forker are asleep (spares made, runs reaped).
    for _ in range(200):
        if all(stat(p)[0] == b"S" for p in pids):
            return
        time.sleep(0.01)

launcher = ForkServerLauncher(spec, cwd=tree, servers=1)
launcher.start()
try:
    (server,) = launcher.server_pids
    for _ in range(3):  # the warm-up: spares made, lazy set-up done
        run_once(launcher)
    forker = forker_of(server)
    idle([server, forker])
    before = counters(server, forker)
    for _ in range(runs):
        run_once(launcher)
    idle([server, forker])
    after = counters(server, forker)
    memory = {"server": rollup(server), "forker": rollup(forker)}
finally:
    launcher.close()
ticks = os.sysconf("SC_CLK_TCK")
print(json.dumps({
    "memory": memory,
    "modules": len(json.loads(Path(os.environ["FOOTPRINT_MODULES"]).read_text())),
    "server_ms": (after["own_ticks"] - before["own_ticks"]) * 1000 / ticks / runs,
    "server_faults": (after["own_faults"] - before["own_faults"]) / runs,
    "run_ms": (after["runs_ticks"] - before["runs_ticks"]) * 1000 / ticks / runs,
    "run_faults": (after["runs_faults"] - before["runs_faults"]) / runs,
}))
"""


def python_of(tree: Path) -> str:
    venv = tree / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def run_json(argv: list[str], *, tree: Path, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{argv[:2]} in {tree} failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def measure(tree: Path, *, app: str, work: Path, forks: int, runs: int) -> dict[str, Any]:
    """One round for one checkout: the real server, the prepared probe, the bare one."""
    module = f"footprint_{app}"
    (work / f"{module}.py").write_text(APP.format(base=BASES[app]))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(work)])
    env["FOOTPRINT_MODULES"] = str(work / "modules.json")
    python = python_of(tree)
    spec = f"{module}:cfg"
    return {
        "server": run_json([python, "-c", SERVER, str(tree), spec, str(runs)], tree=tree, env=env),
        "prepared": run_json([python, "-c", PROBE, "1", spec, str(forks)], tree=tree, env=env),
        "bare": run_json([python, "-c", PROBE, "0", spec, str(forks)], tree=tree, env=env),
    }


def values(rounds: list[dict[str, Any]], *path: str) -> list[float]:
    """The figure at ``path`` in each round."""
    found = []
    for sample in rounds:
        value: Any = sample
        for key in path:
            value = value[key]
        found.append(float(value))
    return found


def median(rounds: list[dict[str, Any]], *path: str) -> float:
    return statistics.median(values(rounds, *path))


def spread(rounds: list[dict[str, Any]], *path: str) -> str:
    found = values(rounds, *path)
    return f"{min(found):.2f}-{max(found):.2f}"


def report(label: str, rounds: list[dict[str, Any]]) -> None:
    print(f"\n== {label} ({len(rounds)} rounds, medians)")
    header = "".join(f"{name + ' kB':>17}" for name in MEMORY_FIELDS)
    print(f"{'memory':<34}{header}{'modules':>9}")
    rows = (
        ("fork server", ("server", "memory", "server"), ("server", "modules")),
        ("its forker", ("server", "memory", "forker"), None),
        ("fork server's imports (probe)", ("prepared", "memory"), ("prepared", "modules")),
        ("bare interpreter (probe)", ("bare", "memory"), ("bare", "modules")),
    )
    for name, memory, modules in rows:
        cells = "".join(f"{median(rounds, *memory, field):17.0f}" for field in MEMORY_FIELDS)
        count = f"{median(rounds, *modules):9.0f}" if modules else ""
        print(f"{name:<34}{cells}{count}")
    print(f"{'per fork or run':<34}{'CPU ms':>10}{'(spread)':>14}{'minor faults':>14}")
    costs = (
        ("no-op run: server + forker", "server", "server_ms", "server_faults"),
        ("no-op run: the run", "server", "run_ms", "run_faults"),
        ("fork+exit, imports: parent", "prepared", "parent_ms", "parent_faults"),
        ("fork+exit, imports: child", "prepared", "child_ms", "child_faults"),
        ("fork+exit, bare: parent", "bare", "parent_ms", "parent_faults"),
        ("fork+exit, bare: child", "bare", "child_ms", "child_faults"),
    )
    for name, part, ms, faults in costs:
        print(
            f"{name:<34}{median(rounds, part, ms):10.3f}{spread(rounds, part, ms):>14}"
            f"{median(rounds, part, faults):14.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--forks", type=int, default=300, help="fork+exit per probe")
    parser.add_argument("--runs", type=int, default=100, help="no-op runs per server")
    parser.add_argument("--app", choices=sorted(BASES), default="noop")
    parser.add_argument("--before", type=Path, default=None, help="another checkout's root")
    args = parser.parse_args()

    trees = [("this checkout", ROOT)]
    if args.before is not None:
        trees.insert(0, ("before", args.before.resolve()))
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as work:
        for _ in range(args.rounds):
            for label, tree in trees:
                results[label].append(
                    measure(tree, app=args.app, work=Path(work), forks=args.forks, runs=args.runs)
                )
    print(f"app: {args.app}; {args.forks} fork+exit per probe, {args.runs} no-op runs per server")
    for label, tree in trees:
        report(f"{label}: {tree} ({python_of(tree)})", results[label])


if __name__ == "__main__":
    main()
