"""The cores a process may use: its affinity, capped by the CPU quota of its cgroup and
every cgroup above it (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), rounded up. The cgroup
trees here are files under a temporary root, as the kernel lays them out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.runs import cpus
from supervisor.runs.cpus import cgroup_cpu_limit, usable_cores


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def limit(tmp_path: Path, proc_cgroup: str, files: dict[str, str]) -> int | None:
    root = tmp_path / "sys-fs-cgroup"
    root.mkdir()
    write(root, files)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_cgroup)
    return cgroup_cpu_limit(proc_cgroup=str(proc), root=str(root))


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({"app.slice/run.service/cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: 2 cores
        ({"app.slice/run.service/cpu.max": "max 100000\n"}, None),
        # The tightest level counts, wherever it is above the process.
        (
            {
                "app.slice/cpu.max": "100000 100000\n",
                "app.slice/run.service/cpu.max": "400000 100000\n",
            },
            1,
        ),
        ({}, None),  # no CPU controller: no quota
        ({"app.slice/run.service/cpu.max": "garbled\n"}, None),
        ({"app.slice/run.service/cpu.max": "100000 0\n"}, None),  # no period: unreadable
    ],
)
def test_a_v2_cgroup_quota_is_read_up_to_the_root(
    tmp_path: Path, files: dict[str, str], cores: int | None
) -> None:
    assert limit(tmp_path, "0::/app.slice/run.service\n", files) == cores


def test_a_v1_cpu_quota_is_read_where_the_cpu_controller_is_mounted(tmp_path: Path) -> None:
    proc = "12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
    files = {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/docker/cpu.cfs_quota_us": "-1\n",  # no quota above it
        "cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n",
    }
    assert limit(tmp_path, proc, files) == 3


def test_a_v1_cgroup_without_a_quota_limits_nothing(tmp_path: Path) -> None:
    files = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
    assert limit(tmp_path, "3:cpu:/\n", files) is None


def test_an_unreadable_proc_file_limits_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    assert cgroup_cpu_limit(proc_cgroup=str(missing), root=str(tmp_path)) is None


@pytest.mark.parametrize(("affinity", "quota", "cores"), [(8, 2, 2), (2, 8, 2), (4, None, 4)])
def test_usable_cores_are_the_fewer_of_the_affinity_and_the_quota(
    monkeypatch: pytest.MonkeyPatch, affinity: int, quota: int | None, cores: int
) -> None:
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(affinity)))
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda **where: quota)
    assert usable_cores() == cores


def test_without_affinity_the_machine_s_cores_count(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(pid: int) -> set[int]:
        raise OSError("no affinity here")

    monkeypatch.setattr(cpus.os, "sched_getaffinity", unsupported)
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda **where: None)
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 3)
    assert usable_cores() == 3
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: None)
    assert usable_cores() == 1


def test_this_process_may_use_at_least_one_core_and_no_more_than_its_affinity() -> None:
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))
