"""How many cores this process may use: its CPU affinity, and the CPU quota of its cgroup
and every cgroup above it, rounded up (a container given 1.5 CPUs of a 64-core host can
keep 2 cores busy, not 64). cgroup v2's ``cpu.max`` and v1's ``cpu.cfs_quota_us`` are
read; what cannot be read limits nothing.

May import only the stdlib.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

PROC_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"
# Where cgroup v1 mounts its CPU controller, under the root, on the distributions we know.
V1_CPU_MOUNTS = ("cpu,cpuacct", "cpuacct,cpu", "cpu")


def usable_cores(*, proc_cgroup: str = PROC_CGROUP, root: str = CGROUP_ROOT) -> int:
    """The cores this process may keep busy: the fewer of its affinity's and its cgroups'
    CPU quota, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit(proc_cgroup=proc_cgroup, root=root)
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def cgroup_cpu_limit(*, proc_cgroup: str = PROC_CGROUP, root: str = CGROUP_ROOT) -> int | None:
    """The tightest CPU quota over this process's cgroup and its ancestors, in whole
    cores rounded up; None if there is none (or none can be read)."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    limits: list[int] = []
    for line in lines:
        fields = line.split(":", 2)  # hierarchy id, controllers, path
        if len(fields) != 3 or not fields[2].startswith("/"):
            continue
        _, controllers, path = fields
        if controllers == "":  # the v2 unified hierarchy
            limits += _v2_limits(Path(root), path)
        elif "cpu" in controllers.split(","):
            for mount in V1_CPU_MOUNTS:
                limits += _v1_limits(Path(root) / mount, path)
    return min(limits) if limits else None


def _levels(base: Path, path: str) -> list[Path]:
    """The cgroup at ``path`` under ``base`` and every one above it, the root included."""
    parts = [part for part in path.split("/") if part]
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_limits(base: Path, path: str) -> list[int]:
    limits = []
    for level in _levels(base, path):
        try:
            quota, period = (level / "cpu.max").read_text().split()
            if quota != "max":
                limits.append(math.ceil(int(quota) / int(period)))
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return limits


def _v1_limits(base: Path, path: str) -> list[int]:
    limits = []
    for level in _levels(base, path):
        try:
            quota = int((level / "cpu.cfs_quota_us").read_text())
            period = int((level / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:  # -1: no quota
            limits.append(math.ceil(quota / period))
    return limits
