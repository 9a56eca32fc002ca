"""CLI start cost: wall time of socket-only commands against a live manager.

Each sample is a fresh ``python -m supervisor CMD`` process (what an operator pays per
command; wall time, and the child's CPU time, which a loaded machine disturbs less),
beside ``python -c pass`` (the interpreter's floor) and ``python -c 'import click'`` (the
CLI library, unavoidable), measured in the same run, round-robin. It also lists which of
croniter, dateutil, jinja2 and bottle each command imported (``-X importtime``): the
socket-only commands should import none of them.

With the manager stopped, it then measures ``list`` reading ``state.db`` instead (it
imports the app for its definitions: heavier, and only when no manager runs).

``--before DIR`` measures another checkout's ``supervisor`` package the same way against
the same manager (e.g. ``git archive OLD supervisor | tar -x -C DIR``), for a
before/after in one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, start_service, summary, temp_dir, write_app

APP = """
add(id="bench.cron", name="cron", kind=scheduler.Kind.CRON,
    defaults=scheduler.Settings(cron="0 3 * * *"), runner=lambda ctx: None)
add(id="bench.manual", name="manual", kind=scheduler.Kind.MANUAL, runner=lambda ctx: None)
"""
HEAVY = ("croniter", "dateutil", "jinja2", "bottle")


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path


def measure(variants: list[Variant], samples: int) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU (user+sys) milliseconds per variant. Round-robin, so the load of a
    shared machine falls on every variant alike."""
    out: dict[str, tuple[list[float], list[float]]] = {v.name: ([], []) for v in variants}
    for _ in range(samples):
        for variant in variants:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            began = time.perf_counter()
            subprocess.run(
                variant.argv,
                env=variant.env,
                cwd=variant.cwd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wall = (time.perf_counter() - began) * 1000
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
            out[variant.name][0].append(wall)
            out[variant.name][1].append(cpu)
    return out


def heavy_imports(argv: list[str], *, env: dict[str, str], cwd: Path) -> list[str]:
    """The heavy top-level packages ``argv`` imported, read from ``-X importtime``."""
    result = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip().split(".")[0]
            if name in HEAVY:
                found.add(name)
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--before", type=Path, default=None, help="an older checkout's root")
    args = parser.parse_args()

    work = temp_dir("bench-cli-")
    try:
        spec = write_app(work / "app", "cli_app", APP)
        state = work / "state"
        service = start_service(spec, state)
        try:
            python = sys.executable
            # As users run it: with bytecode caches (one unmeasured round writes them).
            dropped = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
            base_env = {k: v for k, v in os.environ.items() if k not in dropped}
            checkouts = [("after", ROOT)]
            if args.before is not None:
                checkouts.insert(0, ("before", args.before.resolve()))
            print(f"{args.samples} fresh processes each, round-robin; manager with 2 schedulers")
            variants = [
                Variant(
                    name="python -c pass (floor)",
                    argv=[python, "-c", "pass"],
                    env=base_env,
                    cwd=work,
                ),
                Variant(
                    name="python -c 'import click'",
                    argv=[python, "-c", "import click"],
                    env=base_env,
                    cwd=work,
                ),
            ]
            for command in (["list"], ["status", "bench.cron"], ["stop", "bench.manual"]):
                for label, checkout in checkouts:
                    variants.append(
                        Variant(
                            name=f"{label}: supervisor {command[0]}",
                            argv=[python, "-m", "supervisor", *command, "--state-dir", str(state)],
                            env={**base_env, "PYTHONPATH": str(checkout)},
                            cwd=checkout,  # ``-m`` puts the working directory first on sys.path
                        )
                    )
            report(variants, args.samples)
        finally:
            service.close()
        # No manager now: the read commands read state.db (and import the app for its
        # definitions), beside the same floor.
        offline = Variant(
            name="after: list, no manager (state.db)",
            argv=[python, "-m", "supervisor", "list", "--state-dir", str(state), "--app", spec],
            env={**base_env, "PYTHONPATH": f"{ROOT}:{work / 'app'}"},
            cwd=ROOT,
        )
        print("no manager running:")
        report([variants[0], offline], args.samples)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(variants: list[Variant], samples: int) -> None:
    """Measure ``variants`` (the first is the floor) and print each beside it."""
    for variant in variants:  # warm-up (bytecode caches, page cache), and a check
        done = subprocess.run(
            variant.argv, env=variant.env, cwd=variant.cwd, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"{variant.name} failed ({done.returncode}): {done.stderr.strip()}")
    results = measure(variants, samples)
    floor_wall = statistics.median(results[variants[0].name][0])
    floor_cpu = statistics.median(results[variants[0].name][1])
    for variant in variants:
        wall, cpu = results[variant.name]
        heavy = ""
        if "supervisor" in variant.argv:
            found = heavy_imports(variant.argv, env=variant.env, cwd=variant.cwd)
            heavy = f"  heavy imports: {', '.join(found) or 'none'}"
        print(
            f"{summary(variant.name, wall)}  cpu p50={statistics.median(cpu):7.2f} ms"
            f"  ({statistics.median(wall) / floor_wall:4.2f}x / "
            f"{statistics.median(cpu) / floor_cpu:4.2f}x the floor){heavy}"
        )


if __name__ == "__main__":
    main()
