"""Forking straight into a cgroup (``clone3(CLONE_INTO_CGROUP)``) and the fork server's
choice between that and fork + join, on the real kernel.

The forks happen in a fresh interpreter (single-threaded, as the fork server is), in a
cgroup v2 subtree made for the test; skipped where there is no writable cgroup v2.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.core.records import Outcome
from supervisor.runs import cgroups
from supervisor.runs.cgroups import CgroupRoot, RunCgroup
from supervisor.runs.containment import Containment
from supervisor.runs.forklauncher import FORKED_INTO, JOINED, ForkServerLauncher
from tests.test_run_isolation import APP, Collector, alive, escaped_of, job
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root() -> Iterator[CgroupRoot]:
    subtree = f"sched-supervisor-test-{uuid.uuid4().hex[:12]}"
    found = cgroups.detect_v2(subtree=subtree)
    if found is None:
        pytest.skip("no writable cgroup v2 hierarchy for this process here")
    try:
        yield found
    finally:
        for owner in (p for p in found.subtree.glob("*") if p.is_dir()):
            for run in (p for p in owner.glob("*") if p.is_dir()):
                RunCgroup(run, 2).kill()
            RunCgroup(owner, 2).remove()
        with contextlib.suppress(FileNotFoundError):
            found.subtree.rmdir()


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_child_forked_into_a_cgroup_is_in_it_from_its_start(root: CgroupRoot) -> None:
    cgroup = root.create("into")
    result = run_python(
        f"""
        import os, sys
        from supervisor.runs import clone
        reason = clone.probe({str(cgroup.path)!r})
        if reason is not None:
            print("unavailable:", reason)
            sys.exit(0)
        hooks = []
        os.register_at_fork(after_in_child=lambda: hooks.append("child"),
                            after_in_parent=lambda: hooks.append("parent"))
        fd = os.open({str(cgroup.path)!r}, os.O_RDONLY | os.O_DIRECTORY)
        pid = clone.fork_into(fd)
        if pid == 0:
            mine = open("/proc/self/cgroup").read()
            ok = hooks == ["child"] and os.getppid() != os.getpid()
            os._exit(0 if ok and {cgroup.path.name!r} in mine else 3)
        _, status = os.waitpid(pid, 0)
        print("status", status, hooks)
        """
    )
    assert result.returncode == 0, result.stderr
    if result.stdout.startswith("unavailable:"):
        pytest.skip(f"this kernel does not fork into cgroups: {result.stdout}")
    assert result.stdout.strip() == "status 0 ['parent']"


def test_a_directory_that_is_not_a_cgroup_is_refused_and_nothing_is_forked(
    tmp_path: Path,
) -> None:
    result = run_python(
        f"""
        import os
        from supervisor.runs import clone
        print(clone.probe({str(tmp_path)!r}))
        print(clone.probe({str(tmp_path / "missing")!r}))
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            print("no child")
        """
    )
    assert result.returncode == 0, result.stderr
    first, second, children = result.stdout.splitlines()
    assert first.startswith("clone3 into a cgroup: E"), first  # EBADF, EINVAL, ...
    assert second.startswith("cannot open"), second
    assert children == "no child"


def test_the_fork_server_forks_runs_into_their_cgroups_and_says_so() -> None:
    launcher = ForkServerLauncher(APP, cwd=str(ROOT))
    launcher.start()
    try:
        containment = launcher.containment
        if not containment.startswith("cgroup v2"):
            pytest.skip(f"no cgroup v2 for runs here: {containment}")
        if JOINED in containment:
            pytest.skip(f"clone3 is not available here: {containment}")
        assert containment.endswith(FORKED_INTO)
        sink = Collector()
        process = launcher.spawn(job("escape"))
        assert process.cgroup is not None
        exit_ = process.supervise(sink=sink, timeout=60, cancel=threading.Event())
        assert exit_.outcome is Outcome.SUCCEEDED
        # No warning that the run could not join: it never had to.
        assert sink.find("the run's process could not join its cgroup") is None
        pid, start = escaped_of(sink)
        wait_for(lambda: not alive(pid, start), what="the escaped process to be killed")
    finally:
        launcher.close()


def test_without_clone3_runs_join_their_cgroups_after_fork_and_status_says_so() -> None:
    containment = Containment.detect()
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), containment=containment, into_cgroup=False)
    launcher.start()
    try:
        if containment.root is None:
            pytest.skip("no writable cgroup hierarchy here")
        assert JOINED in launcher.containment
        assert FORKED_INTO not in launcher.containment
        sink = Collector()
        exit_ = launcher.spawn(job("escape")).supervise(
            sink=sink, timeout=60, cancel=threading.Event()
        )
        assert exit_.outcome is Outcome.SUCCEEDED
        pid, start = escaped_of(sink)
        wait_for(lambda: not alive(pid, start), what="the escaped process to be killed")
    finally:
        launcher.close()
