"""How many cores this process may use: its CPU affinity, and the CPU quota of its cgroup
and every cgroup above it, rounded up (a container given 1.5 CPUs of a 64-core host can
keep 2 cores busy, not 64). cgroup v2's ``cpu.max`` and v1's ``cpu.cfs_quota_us`` are
read; what cannot be read limits nothing.

May import only the stdlib.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
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
            limits += _limits(Path(root), path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in V1_CPU_MOUNTS:
                limits += _limits(Path(root) / mount, path, _v1_quota)
    return min(limits) if limits else None


def _limits(base: Path, path: str, quota: Callable[[Path], int | None]) -> list[int]:
    """The quotas (whole cores) set on the cgroup at ``path`` under ``base`` and on every
    one above it, the root included."""
    parts = [part for part in path.split("/") if part]
    levels = (base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1))
    return [cores for level in levels if (cores := quota(level)) is not None]


def _v2_quota(level: Path) -> int | None:
    try:
        quota, period = (level / "cpu.max").read_text().split()
        return None if quota == "max" else _cores(int(quota), int(period))
    except (OSError, ValueError):
        return None


def _v1_quota(level: Path) -> int | None:
    try:
        quota = int((level / "cpu.cfs_quota_us").read_text())
        period = int((level / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return _cores(quota, period)  # quota -1: none


def _cores(quota: int, period: int) -> int | None:
    return math.ceil(quota / period) if quota > 0 and period > 0 else None
