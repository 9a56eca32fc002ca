"""Several fork servers behind one launcher: runs spread over them, a dead one is replaced
alone, a changed app replaces them all, and the spare margin is shared between them."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import uuid
from pathlib import Path

import psutil
import pytest

from supervisor.core.records import Outcome
from supervisor.runs.exits import Exit
from supervisor.runs.forklauncher import SPARES, ForkServerLauncher
from supervisor.runs.job import Job
from supervisor.runs.supervision import RunProcess
from tests.launching import APP, ROOT, VERSIONED_APP, Collector
from tests.waiting import wait_for


def new_job(scheduler_id: str) -> Job:
    return Job(scheduler_id=scheduler_id, run_id=uuid.uuid4().hex[:16], trigger="manual")


def parent_of(process: RunProcess) -> int:
    return psutil.Process(process.pid).ppid()


def stop(process: RunProcess) -> Outcome:
    cancel = threading.Event()
    cancel.set()
    return process.supervise(sink=lambda batch: None, timeout=30, cancel=cancel).outcome


def test_runs_in_progress_spread_over_every_server() -> None:
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), servers=2)
    launcher.start()
    try:
        servers = launcher.server_pids
        assert len(set(servers)) == 2
        wait_for(
            lambda: all(len(s.ready_spares()) == SPARES // 2 for s in launcher._servers),
            what="the spares",
        )
        runs = [launcher.spawn(new_job("cooperative")) for _ in range(4)]
        try:
            parents = [parent_of(run) for run in runs]
        finally:
            outcomes = [stop(run) for run in runs]
        assert sorted(parents) == sorted(servers * 2)  # two runs on each
        assert outcomes == [Outcome.CANCELLED] * 4
    finally:
        launcher.close()


def test_a_dead_server_is_replaced_and_the_others_go_on() -> None:
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), servers=2)
    launcher.start()
    try:
        first, second = launcher.server_pids
        os.kill(second, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(second) or _zombie(second), what="its death")
        sink = Collector()
        exit_ = launcher.spawn(new_job("first")).supervise(
            sink=sink, timeout=30, cancel=threading.Event()
        )
        assert exit_.outcome is Outcome.SUCCEEDED, exit_
        now = launcher.server_pids
        assert now[0] == first
        assert now[1] not in (first, second)
        assert launcher.restarts == 1
    finally:
        launcher.close()


def test_a_changed_app_replaces_every_server_before_the_next_run(tmp_path: Path) -> None:
    module = tmp_path / "servers_app.py"
    module.write_text(VERSIONED_APP.format(version="one"))
    launcher = ForkServerLauncher("servers_app:cfg", sys_path=[str(tmp_path)], servers=2)
    launcher.start()
    try:
        old = set(launcher.server_pids)

        def version() -> object:
            sink = Collector()
            exit_ = launcher.spawn(new_job("hello")).supervise(
                sink=sink, timeout=30, cancel=threading.Event()
            )
            assert exit_.outcome is Outcome.SUCCEEDED, exit_
            record = sink.find("version")
            assert record is not None
            return record.fields["version"]

        assert [version() for _ in range(3)] == ["one"] * 3  # no change: no restart
        assert launcher.restarts == 0
        module.write_text(VERSIONED_APP.format(version="two"))
        assert version() == "two"
        assert launcher.restarts == 1
        assert not old & set(launcher.server_pids)
        for pid in old:
            wait_for(lambda pid=pid: not psutil.pid_exists(pid), what="an old server to exit")
    finally:
        launcher.close()


def test_runs_go_to_a_server_with_a_spare_ready_rather_than_wait_for_a_stopped_one() -> None:
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), servers=2)
    launcher.start()
    try:
        stopped, other = launcher._servers
        wait_for(
            lambda: all(len(s.ready_spares()) == SPARES // 2 for s in (stopped, other)),
            what="the spares",
        )
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            while (spare := stopped.take_spare(timeout=0)) is not None:
                spare.close()  # used up, and no new ones while it is stopped
            runs = [launcher.spawn(new_job("cooperative")) for _ in range(3)]
            try:
                parents = [parent_of(run) for run in runs]
            finally:
                os.kill(stopped.pid, signal.SIGCONT)
                outcomes = [stop(run) for run in runs]
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
        assert parents == [other.pid] * 3
        assert outcomes == [Outcome.CANCELLED] * 3
    finally:
        launcher.close()


def test_a_start_that_finds_no_spare_anywhere_is_not_handed_to_a_stopped_server() -> None:
    """Regression: with no spare ready on any server, the pick fell back to the server
    with the fewest runs, stopped or not; the start then waited for the stopped one's
    answer until the timeout, and for its replacement."""
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), servers=2)
    launcher.start()
    try:
        stopped, other = launcher._servers  # the first: what a tie picked
        wait_for(
            lambda: all(len(s.ready_spares()) == SPARES // 2 for s in (stopped, other)),
            what="the spares",
        )
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            wait_for(stopped.stopped, what="the server to stop")
            for server in (stopped, other):
                # Used up, none asked for: none comes until a start asks for more.
                while (spare := server.take_spare(timeout=0)) is not None:
                    spare.close()
            run = launcher.spawn(new_job("cooperative"))
            try:
                parent = parent_of(run)
            finally:
                _continue(stopped.pid)
                outcome = stop(run)
        finally:
            _continue(stopped.pid)
        assert parent == other.pid
        assert outcome is Outcome.CANCELLED
        assert launcher.server_pids == (stopped.pid, other.pid)  # nothing was replaced
        assert launcher.restarts == 0
    finally:
        launcher.close()


def test_a_finished_runs_empty_cgroup_is_gone_when_supervise_returns() -> None:
    """The run's watcher removes its emptied cgroup itself (no hand-off to the remover
    thread: the cgroup is gone before the next run of the scheduler is started)."""
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), servers=1)
    launcher.start()
    try:
        run = launcher.spawn(new_job("first"))
        if run.cgroup is None:
            stop(run)
            pytest.skip("runs get no cgroups here")
        path = run.cgroup.path
        assert path.is_dir()
        exit_ = run.supervise(sink=Collector(), timeout=30, cancel=threading.Event())
        assert exit_.outcome is Outcome.SUCCEEDED, exit_
        assert not path.exists()
    finally:
        launcher.close()


def test_the_spare_margin_is_shared_between_the_servers() -> None:
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), servers=2)
    launcher.start()
    try:
        servers = launcher._servers
        wait_for(
            lambda: all(len(s.ready_spares()) == SPARES // 2 for s in servers),
            what="each server's share of the spares",
        )
    finally:
        launcher.close()


def forker_of(server: int) -> int | None:
    """The fork server's forker: its child that does not lead a session (runs and spares
    do)."""
    for child in psutil.Process(server).children():
        try:
            if os.getsid(child.pid) != child.pid:
                return child.pid
        except OSError:
            continue
    return None


def test_each_server_has_its_own_forker_and_forks_spares_itself_once_it_is_killed() -> None:
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), servers=2)
    launcher.start()
    try:
        servers = launcher.server_pids
        forkers = [
            wait_for(lambda server=server: forker_of(server), what="a server's forker")
            for server in servers
        ]
        assert len(set(forkers)) == 2
        assert [psutil.Process(forker).ppid() for forker in forkers] == list(servers)
        for forker in forkers:
            os.kill(forker, signal.SIGKILL)
        for forker in forkers:
            wait_for(lambda forker=forker: not psutil.pid_exists(forker), what="its reaping")
        # Spares used up and made anew on both servers, by the servers themselves now.
        for _ in range(2):
            runs = [launcher.spawn(new_job("cooperative")) for _ in range(SPARES)]
            try:
                parents = [parent_of(run) for run in runs]
            finally:
                outcomes = [stop(run) for run in runs]
            assert set(parents) == set(servers)
            assert outcomes == [Outcome.CANCELLED] * SPARES
        assert launcher.server_pids == servers
        assert launcher.restarts == 0
    finally:
        launcher.close()


def test_close_kills_the_runs_of_a_stopped_server_it_had_to_kill() -> None:
    """A server that does not exit in time (stopped) is killed, and cannot kill its runs
    itself then: the launcher kills them."""
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), servers=2)
    launcher.start()
    closed = False
    try:
        wait_for(
            lambda: all(len(s.ready_spares()) == SPARES // 2 for s in launcher._servers),
            what="the spares",
        )
        runs = [launcher.spawn(new_job("cooperative")) for _ in range(2)]
        parents = [parent_of(run) for run in runs]
        assert sorted(parents) == sorted(launcher.server_pids)  # one on each
        sinks = [Collector() for _ in runs]
        exits: list[list[Exit]] = [[], []]
        threads = [
            threading.Thread(
                target=lambda i=i: exits[i].append(
                    runs[i].supervise(sink=sinks[i], timeout=60, cancel=threading.Event())
                ),
                daemon=True,
            )
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for sink in sinks:
            wait_for(lambda sink=sink: "waiting" in sink.messages(), what="the runs to wait")
        stopped = parents[0]
        os.kill(stopped, signal.SIGSTOP)
        launcher.close(timeout=1.0)
        closed = True
        assert not psutil.pid_exists(stopped) or _zombie(stopped)
        for thread in threads:
            thread.join(30)
        assert [len(e) for e in exits] == [1, 1]
        assert [(e[0].outcome, e[0].signal) for e in exits] == [
            (Outcome.CRASHED, signal.SIGKILL)
        ] * 2
        assert not [run.pid for run in runs if psutil.pid_exists(run.pid) and not _zombie(run.pid)]
    finally:
        if not closed:
            for server in launcher.server_pids:
                with contextlib.suppress(OSError):
                    os.kill(server, signal.SIGCONT)
            launcher.close()


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _continue(pid: int) -> None:
    """SIGCONT ``pid`` unless it is gone (a stopped server is killed once it times out)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
