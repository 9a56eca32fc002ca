"""Several fork servers behind one launcher: runs spread over them, a dead one is replaced
alone, a changed app replaces them all, and the spare margin is shared between them."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path

import psutil

from supervisor.core.records import Outcome
from supervisor.runs.forklauncher import SPARES, ForkServerLauncher
from supervisor.runs.job import Job
from supervisor.runs.supervision import RunProcess
from tests.launching import APP, ROOT, Collector
from tests.waiting import wait_for

RELOAD_APP = """
from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("servers")
VERSION = "{version}"


def hello(ctx):
    scheduler.logger_from(ctx).info("version", version=VERSION)


cfgscheduler.enable(cfg).use_cases.configure(
    user.su(),
    scheduler.Options(id="hello", name="Hello", kind=scheduler.Kind.MANUAL, runner=hello),
)
"""


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
    module.write_text(RELOAD_APP.format(version="one"))
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
        module.write_text(RELOAD_APP.format(version="two"))
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


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
