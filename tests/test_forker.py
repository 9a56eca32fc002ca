"""The fork server's forker (spares forked with ``clone3(CLONE_PARENT)``), on the real
kernel: in fresh single-threaded interpreters, and behind a real fork server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.core.records import Outcome
from supervisor.runs.cgroups import CgroupRoot
from supervisor.runs.launcher import ForkServerLauncher
from tests.launching import Collector
from tests.test_clone import root as root  # the cgroup v2 fixture
from tests.test_run_isolation import APP, alive, job, to_end
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent

# A forker whose spares write "<their parent> <cgroup> <placed>" to their socket and exit 5.
PRELUDE = """
import os, signal, socket, sys
from supervisor.runs import clone
from supervisor.runs.forker import Forker, ForkerUnavailable

def become_spare(cgroup, sock_fd, placed):
    mine = open("/proc/self/cgroup").read().strip().splitlines()[-1]
    os.write(sock_fd, f"{os.getppid()} {cgroup} {placed} {mine}".encode())
    os._exit(5)

forker = Forker.start(become_spare, blocked=(signal.SIGTERM,), max_fd=1024)

def spare(cgroup, into):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid, placed = forker.fork_spare(cgroup, theirs.fileno(), into=into)
    theirs.close()
    said = ours.recv(4096).decode()
    _, status = os.waitpid(pid, 0)  # the spare is this process's child
    return said, placed, os.waitstatus_to_exitcode(status)
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_spare_of_the_forker_is_the_callers_child() -> None:
    result = run_python(
        """
        said, placed, code = spare(None, into=False)
        parent, cgroup, spare_placed, _ = said.split(" ", 3)
        assert int(parent) == os.getpid(), (parent, os.getpid())
        assert forker.pid != os.getpid()
        print("ok", cgroup, spare_placed, placed, code)
        """
    )
    if "clone3 cannot be called" in result.stderr or "cannot fork" in result.stderr:
        pytest.skip(f"clone3 unavailable: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "None", "False", "False", "5"]


def test_a_spare_of_the_forker_is_forked_into_its_cgroup(root: CgroupRoot) -> None:
    cgroup = root.create("forker")
    result = run_python(
        f"""
        if clone.probe({str(cgroup.path)!r}) is not None:
            print("unavailable")
            sys.exit(0)
        said, placed, code = spare({str(cgroup.path)!r}, into=True)
        parent, _, spare_placed, mine = said.split(" ", 3)
        assert int(parent) == os.getpid()
        print("ok", spare_placed, placed, code, mine.endswith("/" + {cgroup.path.name!r}))
        """
    )
    assert result.returncode == 0, result.stderr
    if result.stdout.strip() == "unavailable":
        pytest.skip("clone3 into a cgroup is refused here")
    assert result.stdout.split() == ["ok", "True", "True", "5", "True"]


def test_a_forker_that_died_is_unavailable() -> None:
    result = run_python(
        """
        os.kill(forker.pid, signal.SIGKILL)
        os.waitpid(forker.pid, 0)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            forker.fork_spare(None, theirs.fileno(), into=False)
        except ForkerUnavailable as error:
            print("unavailable", error.errno is not None)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["unavailable", "True"]


def test_the_forker_ends_with_its_caller() -> None:
    result = run_python(
        """
        print(forker.pid, flush=True)
        os._exit(0)  # without closing it
        """
    )
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout)
    wait_for(lambda: not alive(pid), what="the forker to end with its caller")


def forker_of(server: int) -> int | None:
    """The fork server's forker: its child that did not start a session of its own."""
    children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    for child in map(int, children):
        try:
            stat = Path(f"/proc/{child}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[3]) != child:  # runs and spares lead their own session
            return child
    return None


def assert_default_dispositions(launcher: ForkServerLauncher) -> None:
    """A run catches neither SIGTERM nor SIGCHLD (the fork server does) and blocks nothing."""
    sink = Collector()
    assert to_end(launcher.spawn(job("dispositions")), sink).outcome is Outcome.SUCCEEDED
    fields = sink.find("dispositions").fields
    caught = int(str(fields["sigcgt"]), 16)
    assert not caught & (1 << (signal.SIGTERM - 1) | 1 << (signal.SIGCHLD - 1)), fields
    assert fields["sigblk"] == "0000000000000000"


def test_runs_start_after_the_fork_servers_forker_is_killed() -> None:
    # One server: every run below must come from the server whose forker was killed.
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), servers=1)
    launcher.start()
    try:
        server = launcher.server_pid
        assert server is not None
        forker = wait_for(lambda: forker_of(server), what="the fork server's forker")
        assert forker is not None
        # The forker set the runs' signal dispositions for itself, the server sets them
        # in each spare it forks: the server's own handlers are never a run's.
        assert_default_dispositions(launcher)
        os.kill(forker, signal.SIGKILL)
        wait_for(lambda: not alive(forker), what="the forker to be reaped")
        for _ in range(5):  # spares are forked by the server itself now
            assert_default_dispositions(launcher)
        assert launcher.server_pid == server and alive(server)
    finally:
        launcher.close()
