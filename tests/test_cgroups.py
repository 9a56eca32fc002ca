"""A cgroup per run: real processes that leave their session and clear their environment
are still found and killed, leftovers of a killed manager are found, OOM kills are told.

Each test uses its own subtree name, so it never sees a real manager's runs, and removes
every cgroup it made. The kinds tried are whatever this machine offers (cgroup v2, and
the v1 ``freezer`` and ``pids`` hierarchies); a kind that is not there is skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from supervisor.core.records import LogRecord, Outcome
from supervisor.runs import cgroups
from supervisor.runs.cgroups import CgroupRoot, RunCgroup
from supervisor.runs.child import Job
from supervisor.runs.launcher import Launcher
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.misbehave:cfg"
KINDS = ("v2", "v1-freezer", "v1-pids")


def find(kind: str, subtree: str) -> CgroupRoot | None:
    if kind == "v2":
        return cgroups.detect_v2(subtree=subtree)
    return cgroups.detect_v1(subtree=subtree, controllers=[kind.removeprefix("v1-")])


class Made:
    """The cgroups a test made, all removed at the end."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.subtree = f"sched-supervisor-test-{uuid.uuid4().hex[:12]}"
        self.roots: list[CgroupRoot] = []
        self.runs: list[RunCgroup] = []

    def root(self) -> CgroupRoot:
        found = find(self.kind, self.subtree)
        if found is None:
            pytest.skip(f"no writable {self.kind} cgroup hierarchy for this process here")
        self.roots.append(found)
        return found

    def create(self, root: CgroupRoot, run_id: str | None = None) -> RunCgroup:
        made = root.create(run_id or uuid.uuid4().hex[:12])
        self.runs.append(made)
        return made

    def clean(self) -> None:
        for run in self.runs:
            run.kill()
            run.remove()
        for root in self.roots:
            for leftover in root.leftovers():
                leftover.kill()
                leftover.remove()
            root.close()
            for owner in (p for p in root.subtree.glob("*") if p.is_dir()):
                RunCgroup(owner, root.version).remove()
            with contextlib.suppress(FileNotFoundError):
                root.subtree.rmdir()


@pytest.fixture(params=KINDS)
def made(request: pytest.FixtureRequest) -> Iterator[Made]:
    it = Made(request.param)
    try:
        yield it
    finally:
        it.clean()
    for root in it.roots:
        assert not root.subtree.exists(), f"{root.subtree} was left behind"


def gone(pid: int) -> Callable[[], bool]:
    def check() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # a grandchild may have been reparented to us
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return check


# Joins the cgroup, leaves the session, re-execs itself with an empty environment, then
# forks a grandchild that leaves that session too; prints both pids and sleeps.
ESCAPE = textwrap.dedent(
    """
    import os, sys, time
    if len(sys.argv) > 1:
        from supervisor.runs.cgroups import join_self
        join_self(sys.argv[1])
        os.setsid()
        os.execve(sys.executable, [sys.executable, "-c", sys.argv[2]], {})
    pid = os.fork()
    if pid == 0:
        os.setsid()
        time.sleep(300)
        os._exit(0)
    print(os.getpid(), pid, flush=True)
    time.sleep(300)
    """
)


def test_regression_a_process_that_leaves_its_session_and_clears_its_environment_is_killed(
    made: Made,
) -> None:
    run = made.create(made.root())
    with subprocess.Popen(
        [sys.executable, "-c", ESCAPE, str(run.path), ESCAPE],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    ) as process:
        assert process.stdout is not None
        try:
            child, grandchild = (int(pid) for pid in process.stdout.readline().split())
            assert child == process.pid
            for pid in (child, grandchild):
                assert Path(f"/proc/{pid}/environ").read_bytes() == b""  # no marker left
                assert os.getsid(pid) != os.getsid(0)
            assert run.pids() == sorted([child, grandchild])
            run.kill()
            assert run.pids() == []
            assert process.wait(timeout=10) == -signal.SIGKILL
            wait_for(gone(grandchild), what="the grandchild to end")
            run.remove()
            assert not run.path.exists()
        finally:
            process.kill()


# Joins the cgroup, says so, then forks as fast as it can (each child sleeps), up to 300.
FORKER = textwrap.dedent(
    """
    import os, sys, time
    from supervisor.runs.cgroups import join_self
    join_self(sys.argv[1])
    print("in", flush=True)
    for _ in range(300):
        if os.fork() == 0:
            time.sleep(300)
            os._exit(0)
    time.sleep(300)
    """
)


def test_a_process_that_keeps_forking_is_ended(made: Made) -> None:
    run = made.create(made.root())
    with subprocess.Popen(
        [sys.executable, "-c", FORKER, str(run.path)], stdout=subprocess.PIPE, cwd=ROOT, text=True
    ) as process:
        assert process.stdout is not None
        try:
            assert process.stdout.readline() == "in\n"
            wait_for(lambda: len(run.pids()) > 20, what="some children")
            run.kill()  # while it is still forking
            assert run.pids() == []
            assert process.wait(timeout=10) == -signal.SIGKILL
        finally:
            process.kill()


def test_create_makes_the_owner_level_again_once_it_was_removed(made: Made) -> None:
    # create does not look for the owner's level first: a missing one is made on the way.
    root = made.root()
    owner = root.subtree / root.owner
    first = made.create(root, "first")
    assert first.path == owner / "first" and first.path.is_dir()
    first.remove()
    root.close()  # the owner's level goes with its last run
    assert not owner.exists()
    again = made.create(root, "again")
    assert again.path == owner / "again" and again.path.is_dir()
    assert made.create(root, "again").path == again.path  # an existing one is taken
    if root.version == 2:
        wanted = set(cgroups.V2_CONTROLLERS)
        available = set((root.subtree / "cgroup.controllers").read_text().split()) & wanted
        assert set((owner / "cgroup.subtree_control").read_text().split()) == available


def test_remove_refuses_while_a_process_is_in_it_and_is_idempotent(made: Made) -> None:
    run = made.create(made.root())
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        run.join(sleeper.pid)
        assert run.pids() == [sleeper.pid]
        with pytest.raises(OSError):
            run.remove()
        assert run.path.is_dir()
        run.kill()
        sleeper.wait(timeout=10)
        run.remove()
        run.remove()
        assert not run.path.exists()
        assert run.pids() == [] and not run.oom_killed()
        run.kill()  # a no-op once it is gone
    finally:
        sleeper.kill()
        sleeper.wait()


def test_kill_leaves_other_cgroups_alone(made: Made) -> None:
    root = made.root()
    victim, bystander = made.create(root), made.create(root)
    sleepers = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    try:
        victim.join(sleepers[0].pid)
        bystander.join(sleepers[1].pid)
        victim.kill()
        assert sleepers[0].wait(timeout=10) == -signal.SIGKILL
        assert sleepers[1].poll() is None and bystander.pids() == [sleepers[1].pid]
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


# A manager stand-in: makes a run cgroup, puts a sleeper in it, says so, and waits.
MANAGER = textwrap.dedent(
    """
    import subprocess, sys, time
    from supervisor.runs import cgroups
    kind, subtree = sys.argv[1], sys.argv[2]
    if kind == "v2":
        root = cgroups.detect_v2(subtree=subtree)
    else:
        root = cgroups.detect_v1(subtree=subtree, controllers=[kind.removeprefix("v1-")])
    run = root.create("left-1")
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True, env={})
    run.join(sleeper.pid)
    print(sleeper.pid, flush=True)
    time.sleep(300)
    """
)


def test_leftovers_of_a_killed_manager_are_found_and_swept(made: Made) -> None:
    root = made.root()
    mine = made.create(root)
    with subprocess.Popen(
        [sys.executable, "-c", MANAGER, made.kind, made.subtree],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    ) as manager:
        assert manager.stdout is not None
        try:
            sleeper = int(manager.stdout.readline())
            assert root.leftovers() == []  # its manager is alive: not a leftover
            manager.kill()
            manager.wait()
            # The next start: the killed manager's run is found, with its process.
            again = find(made.kind, made.subtree)
            assert again is not None
            made.roots.append(again)
            (left,) = again.leftovers()
            assert left.path.name == "left-1" and left.pids() == [sleeper]
            assert mine.path not in [r.path for r in again.leftovers()]
            left.kill()
            wait_for(gone(sleeper), what="the leftover sleeper to end")
            left.remove()
            assert not left.path.parent.exists()  # the dead manager's level went with it
            assert mine.path.is_dir()
        finally:
            manager.kill()


def test_run_ids_that_are_not_plain_names_are_refused(made: Made) -> None:
    root = made.root()
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ValueError, match="cannot name a cgroup"):
            root.create(bad)


def test_without_write_access_there_is_no_cgroup_to_use() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            found = cgroups.detect(subtree=f"never-{uuid.uuid4().hex[:8]}")
            os.write(write_fd, repr(found).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as answer:
        text = answer.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert text == "None"


# -- OOM -----------------------------------------------------------------------------------


HOG = textwrap.dedent(
    """
    import sys
    from supervisor.runs.cgroups import join_self
    join_self(sys.argv[1])
    chunks = []
    while True:
        chunks.append(bytearray(8 * 1024 * 1024))
    """
)


def test_an_oom_kill_in_the_cgroup_is_told(made: Made) -> None:
    if made.kind != "v2":
        pytest.skip("OOM kills are told under cgroup v2 only")
    run = made.create(made.root())
    limit = run.path / "memory.max"
    if not limit.exists():
        controllers = (run.path.parent / "cgroup.controllers").read_text().split()
        pytest.skip(
            "the memory controller is not available to this process's cgroup v2 subtree "
            f"(controllers there: {controllers or 'none'}; on a hybrid host it is bound to v1)"
        )
    limit.write_text(str(64 * 1024 * 1024))
    swap = run.path / "memory.swap.max"
    if swap.exists():
        swap.write_text("0")
    assert not run.oom_killed()
    hog = subprocess.run([sys.executable, "-c", HOG, str(run.path)], cwd=ROOT, check=False)
    assert hog.returncode == -signal.SIGKILL
    assert run.oom_killed()


def test_a_fresh_cgroup_was_not_oom_killed(made: Made) -> None:
    # Under cgroup v1 oom_killed() cannot know and always answers False, so only a v2
    # cgroup with the memory controller (the kernel's own memory.events) says anything.
    if made.kind != "v2":
        pytest.skip("OOM kills are told under cgroup v2 only")
    run = made.create(made.root())
    events = run.path / "memory.events"
    if not events.exists():
        pytest.skip("the memory controller is not on for this cgroup v2 subtree")
    assert "oom_kill 0" in events.read_text().splitlines()
    assert not run.oom_killed()


@pytest.mark.parametrize(
    ("version", "events", "killed"),
    [
        (2, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", True),
        (2, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n", False),
        (2, "oom_kill 12\noom_group_kill 0\n", True),
        (2, "oom_kill_extra 4\noom_kill nonsense\n", False),
        (2, None, False),  # no memory controller: cannot be known
        (1, "oom_kill 1\n", False),  # v1 has no memory.events: never read
    ],
)
def test_oom_killed_reads_the_oom_kill_count_of_memory_events(
    tmp_path: Path, version: int, events: str | None, killed: bool
) -> None:
    # The kernel writes memory.events; a plain directory stands in for the cgroup so the
    # reading is checked on every host (this one's memory controller is bound to v1).
    if events is not None:
        (tmp_path / "memory.events").write_text(events)
    assert RunCgroup(tmp_path, version).oom_killed() is killed


# -- through the launchers ------------------------------------------------------------------


def test_regression_a_run_whose_process_escapes_the_marker_is_contained(
    launcher: Launcher,
) -> None:
    made = Made("v2")
    root = cgroups.detect(subtree=made.subtree)
    if root is None:
        pytest.skip("no writable cgroup hierarchy for this process here")
    made.roots.append(root)
    try:
        run = made.create(root)
        records: list[LogRecord] = []
        job = Job(
            scheduler_id="escape-clean",
            run_id=run.path.name,
            trigger="manual",
            cgroup=str(run.path),
        )
        process = launcher.spawn(job)
        exit_ = process.supervise(
            sink=records.extend, timeout=30.0, cancel=threading.Event(), grace=5.0
        )
        assert exit_.outcome is Outcome.SUCCEEDED, exit_.error
        (escaped,) = [r for r in records if r.message == "escaped"]
        sleeper = int(escaped.fields["pid"])
        inside = "/" + str(run.path.relative_to(root.subtree.parent))
        assert any(path.endswith(inside) for path in escaped.fields["cgroups"])
        assert not [r for r in records if "could not join" in r.message]
        run.kill()
        wait_for(gone(sleeper), what="the escaped process to end")
        assert run.pids() == []
    finally:
        made.clean()
