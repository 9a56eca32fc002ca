"""A real manager's shutdown keeps to its grace: SIGTERM to exit within the grace plus a
fixed margin, whatever the runs do (ignore SIGTERM, leave children that ignore it), with
a stopped fork server or a locked store; the runs' ends and logs are stored first."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from supervisor.core.records import LogQuery, LogRecord, Outcome, RunRecord
from supervisor.store.sqlite import SqliteStore
from tests.commands import supervisor
from tests.manager_process import ROOT, cli, fork_servers_of
from tests.waiting import wait_for

APP = "tests.apps.shutdown_jobs:cfg"
GRACE_SECONDS = 2.0
# The bound the tests hold the manager to: generous beside its own margin (1.5 s), so a
# loaded machine does not fail them; before the shared deadline a stopped fork server
# or a locked store took the grace plus 3 to 8 s.
EXIT_BOUND_SECONDS = GRACE_SECONDS + 3.0


@dataclass
class Manager:
    process: subprocess.Popen[bytes]
    state: Path
    marks: Path
    log: Path

    def execute(self, scheduler_id: str, name: str) -> tuple[str, list[int]]:
        """Start a run; its ID and pids once it is under way."""
        run_id: str = json.loads(cli(self.state, "execute", scheduler_id, "--json"))["run_id"]
        mark = self.marks / f"{name}.{run_id}"
        wait_for(mark.exists, timeout=30, what=f"run {run_id} to be under way")
        return run_id, [int(line) for line in mark.read_text().split()]

    def fork_servers(self) -> list[psutil.Process]:
        return fork_servers_of(self.process.pid)

    def shut_down(self) -> float:
        """SIGTERM; the seconds until the process exited (with status 0)."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        took = time.monotonic() - began
        assert code == 0, self.log.read_text(errors="replace")
        return took

    def stored(self, run_id: str) -> tuple[RunRecord, list[LogRecord]]:
        """The run as stored, and its stored log records in order."""
        with SqliteStore.open(self.state / "state.db") as store:
            run = store.get_run(run_id)
            logs = store.logs(LogQuery(scheduler_id=None, run_id=run_id, limit=100_000))
        return run, [record for _, record in sorted(logs, key=lambda pair: pair[0])]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    yield from started_manager(tmp_path)


def started_manager(tmp_path: Path, *extra: str) -> Iterator[Manager]:
    state, marks, log = tmp_path / "state", tmp_path / "marks", tmp_path / "manager.log"
    marks.mkdir(exist_ok=True)
    with log.open("w") as sink:
        process = subprocess.Popen(
            supervisor(
                "run",
                "--app",
                APP,
                "--state-dir",
                str(state),
                "--no-admin",
                "--grace",
                f"{GRACE_SECONDS:g}s",
                *extra,
            ),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "SHUTDOWN_MARKS": str(marks)},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    running = Manager(process, state, marks, log)
    try:
        wait_for(
            lambda: (state / "control.sock").exists() or process.poll() is not None,
            timeout=30,
            what="the manager",
        )
        assert process.poll() is None, log.read_text(errors="replace")
        yield running
    finally:
        leftovers = fork_servers_of(process.pid) if process.poll() is None else []
        if process.poll() is None:
            process.kill()
            process.wait()
        for server in leftovers:  # stopped by a test, and not killed by the manager
            with contextlib.suppress(psutil.Error):
                server.kill()


def _wchan(pid: int) -> str:
    """Where in the kernel ``pid`` waits (``anon_pipe_write``: writing to a full pipe)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def assert_killed_and_logged(manager: Manager, run_id: str) -> None:
    """The run's end is stored as a shutdown's kill, and its logs to the last record."""
    run, records = manager.stored(run_id)
    assert run.outcome is Outcome.CANCELLED, run
    assert run.signal == signal.SIGKILL, run
    assert run.ended_at is not None
    assert records[0].message == "not listening"
    numbers = [int(r.fields["n"]) for r in records[1:]]
    assert len(numbers) > 10, records[:5]
    assert numbers == list(range(1, len(numbers) + 1))  # none lost on the way


def test_a_run_that_ignores_sigterm_is_killed_within_the_grace(manager: Manager) -> None:
    run_id, (pid,) = manager.execute("s.stubborn", "stubborn")
    took = manager.shut_down()
    assert took < EXIT_BOUND_SECONDS, manager.log.read_text()
    assert not psutil.pid_exists(pid)
    assert_killed_and_logged(manager, run_id)


def test_children_that_ignore_sigterm_are_killed_within_the_grace(manager: Manager) -> None:
    run_id, pids = manager.execute("s.children", "children")
    assert len(pids) == 3  # the run and its two children, one in a session of its own
    took = manager.shut_down()
    assert took < EXIT_BOUND_SECONDS, manager.log.read_text()
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    run, records = manager.stored(run_id)
    assert run.outcome is Outcome.CANCELLED and run.signal == signal.SIGKILL, run
    assert "children started" in [r.message for r in records]


def test_regression_a_stopped_fork_server_does_not_hold_the_shutdown_past_its_grace(
    manager: Manager,
) -> None:
    run_id, (pid,) = manager.execute("s.stubborn", "stubborn")
    servers = manager.fork_servers()
    assert servers
    for server in servers:
        server.suspend()
    took = manager.shut_down()
    assert took < EXIT_BOUND_SECONDS, manager.log.read_text()
    assert not psutil.pid_exists(pid)
    assert not [s for s in servers if s.is_running() and s.status() != psutil.STATUS_ZOMBIE]
    assert_killed_and_logged(manager, run_id)


def test_regression_a_store_locked_for_the_grace_does_not_hold_the_shutdown_past_it(
    manager: Manager,
) -> None:
    run_id, (pid,) = manager.execute("s.chatty", "chatty")
    # Another process's write transaction (a backup, a sqlite3 shell) until the grace
    # is over: the manager's writes wait for it; its logging run fills the log writer's
    # queue, and then its own records pipe (it waits to write: SIGTERM finds it so).
    holder = sqlite3.connect(
        manager.state / "state.db", isolation_level=None, timeout=10, check_same_thread=False
    )
    holder.execute("BEGIN IMMEDIATE")
    wait_for(lambda: "pipe_write" in _wchan(pid), timeout=30, what="the run's pipe to be full")
    release = threading.Timer(GRACE_SECONDS, lambda: holder.execute("ROLLBACK"))
    try:
        began = time.monotonic()
        manager.process.send_signal(signal.SIGTERM)
        release.start()
        code = manager.process.wait(timeout=60)
        took = time.monotonic() - began
    finally:
        release.cancel()
        release.join()
        holder.close()
    assert code == 0, manager.log.read_text()
    assert took < EXIT_BOUND_SECONDS, manager.log.read_text()
    assert not psutil.pid_exists(pid)
    assert_killed_and_logged(manager, run_id)


def test_regression_a_store_locked_past_the_deadline_does_not_hold_the_exit(
    tmp_path: Path,
) -> None:
    starts = started_manager(tmp_path)
    manager = next(starts)
    try:
        run_id, (pid,) = manager.execute("s.stubborn", "stubborn")
        wait_for(lambda: len(manager.stored(run_id)[1]) > 1, what="the run's first records stored")
        # Locked until the manager has exited: nothing more can be stored.
        holder = sqlite3.connect(manager.state / "state.db", isolation_level=None, timeout=10)
        try:
            holder.execute("BEGIN IMMEDIATE")
            took = manager.shut_down()
        finally:
            holder.close()
    finally:
        starts.close()
    assert took < EXIT_BOUND_SECONDS, manager.log.read_text()
    assert "did not end by the shutdown's deadline" in manager.log.read_text()
    assert not psutil.pid_exists(pid)
    run, records = manager.stored(run_id)
    assert run.outcome is None  # its end could not be stored ...
    assert records[0].message == "not listening"  # ... what was stored stays
    # ... and the next start marks it interrupted.
    again = started_manager(tmp_path)
    next(again).shut_down()
    again.close()
    run, _ = manager.stored(run_id)
    assert run.outcome is Outcome.INTERRUPTED, run
