"""Start cost of the step systemd runs after every run of a scheduler with retries.

``supervisor.systemd.retry`` runs as ``ExecStopPost=`` after each run (and
``supervisor.systemd.resume`` at the end of a timed pause and at boot): its start delays
each retry and each SCHEDULE's pause. Each sample is a fresh
``python -c 'import MODULE'`` (wall time), beside ``python -c pass`` (the interpreter's
floor), measured in the same run, round-robin. It also lists the heavy modules each
imported (``-X importtime``): none of croniter, jinja2, sqlite3, the store or the manager.

``--before DIR`` measures another checkout's ``supervisor`` package the same way (e.g.
``git archive OLD supervisor | tar -x -C DIR``), for a before/after in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "croniter",
    "jinja2",
    "sqlite3",
    "supervisor.store",
    "supervisor.manager",
    "supervisor.core.planning",
)


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _heavy(module: str, tree: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=_env(tree),
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    return sorted(name for name in imported if name.startswith(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--before", type=Path, help="a tree holding an older supervisor/")
    args = parser.parse_args()
    variants: list[tuple[str, list[str], Path]] = [("python -c pass", ["-c", "pass"], ROOT)]
    trees = [("after", ROOT)]
    if args.before is not None:
        trees.insert(0, ("before", args.before.resolve()))
    for label, tree in trees:
        for module in ("supervisor.systemd.retry", "supervisor.systemd.resume"):
            if (tree / (module.replace(".", "/") + ".py")).exists():
                variants.append((f"{label}: import {module}", ["-c", f"import {module}"], tree))
    for _, argv, tree in variants:  # compile the bytecode first
        subprocess.run([sys.executable, *argv], env=_env(tree), cwd=tree, check=True)
    samples: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _ in range(args.samples):
        for name, argv, tree in variants:
            began = time.perf_counter()
            subprocess.run([sys.executable, *argv], env=_env(tree), cwd=tree, check=True)
            samples[name].append((time.perf_counter() - began) * 1000)
    print(f"{args.samples} samples each, wall ms (median, p90)")
    for name, values in samples.items():
        ordered = sorted(values)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(f"  {name:<52} {statistics.median(values):7.1f} {p90:7.1f}")
    for label, tree in trees:
        for module in ("supervisor.systemd.retry", "supervisor.systemd.resume"):
            if (tree / (module.replace(".", "/") + ".py")).exists():
                heavy = _heavy(module, tree)
                print(f"  {label}: {module} imports {', '.join(heavy) or 'none of them'}")


if __name__ == "__main__":
    main()
