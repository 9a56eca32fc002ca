"""Runs in real child processes, through both launchers: every way a run can end.

The same suite runs against the fork server and the fresh-interpreter launcher; the
schedulers are in ``tests/apps/misbehave.py``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor.core.errors import AppLoadError, BackendError
from supervisor.core.records import Level, LogRecord, Outcome, Source
from supervisor.runs.child import execute
from supervisor.runs.containment import Containment
from supervisor.runs.context import CancelPipe
from supervisor.runs.forkclient import Spare
from supervisor.runs.launcher import (
    MARKER_ENV,
    CancelRequest,
    Exit,
    ForkServerLauncher,
    FreshInterpreterLauncher,
    Job,
    Launcher,
    RunHandle,
    kill_leftovers,
)
from supervisor.runs.wire import RunResult
from tests.apps.misbehave import SPEW_LINES
from tests.launching import APP, ROOT, VERSIONED_APP, Collector
from tests.waiting import wait_for

OWN_CODE = f"{ROOT / 'supervisor'}{os.sep}"  # where the supervisor's modules are


def new_job(scheduler_id: str, action_id: str | None = None) -> Job:
    return Job(
        scheduler_id=scheduler_id,
        run_id=uuid.uuid4().hex[:16],
        trigger="manual",
        action_id=action_id,
    )


def run(
    launcher: Launcher,
    scheduler_id: str,
    *,
    action_id: str | None = None,
    timeout: float | None = 30.0,
    cancel: threading.Event | None = None,
    grace: float = 5.0,
    sink: Collector | None = None,
) -> tuple[Exit, Collector]:
    sink = sink or Collector()
    process = launcher.spawn(new_job(scheduler_id, action_id))
    exit_ = process.supervise(
        sink=sink, timeout=timeout, cancel=cancel or threading.Event(), grace=grace
    )
    return exit_, sink


def alive(pid: int, create_time: float) -> bool:
    """Is ``pid`` still the process that started at ``create_time``, and not a zombie?"""
    try:
        process = psutil.Process(pid)
        return (
            abs(process.create_time() - create_time) < 0.01
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.NoSuchProcess:
        return False


def server_of(process: RunHandle) -> int:
    """The fork server that forked ``process`` (spares too are its children)."""
    return psutil.Process(process.pid).ppid()


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- outcomes ---------------------------------------------------------------------------


def test_success_with_logger_stdlib_stdout_and_stderr_records(launcher: Launcher) -> None:
    exit_, sink = run(launcher, "ok")
    assert exit_ == Exit(
        outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None, result=None
    )
    hello = sink.find("hello")
    assert hello.source is Source.LOGGER and hello.level is Level.INFO
    assert hello.fields["n"] == 1 and hello.fields["who"] == "world"
    assert hello.fields["nested"] == {"a": [1, 2.5, None]}
    assert str(hello.fields["obj"]).startswith("<object object")
    stdlib = sink.find("from stdlib")
    assert stdlib.fields == {"colour": "green", "logger": "misbehave"}
    assert "debug is dropped at the default level" not in sink.messages()
    context = sink.find("context")
    assert context.level is Level.WARNING
    assert context.fields == {"scheduler_id": "ok", "trigger": "manual"}
    assert sink.messages(Source.STDOUT) == ["plain output", "no newline at the end"]
    assert sink.messages(Source.STDERR) == ["to stderr"]
    assert sink.find("to stderr").level is Level.WARNING
    assert sink.find("plain output").level is Level.INFO
    assert all(r.time.tzinfo is not None for r in sink.records)
    assert {r.run_id for r in sink.records} == {sink.records[0].run_id}


def test_a_raising_runner_fails_with_message_and_traceback(launcher: Launcher) -> None:
    exit_, sink = run(launcher, "raises")
    assert exit_.outcome is Outcome.FAILED
    assert exit_.exit_code == 1
    assert exit_.error is not None
    first, *rest = exit_.error.splitlines()
    assert first == "RuntimeError: ops - started to panic"
    assert "Traceback (most recent call last):" in rest
    assert any("misbehave.py" in line for line in rest)
    logged = sink.find("run failed: RuntimeError: ops - started to panic")
    assert logged.level is Level.ERROR and "Traceback" in logged.fields["traceback"]


def test_a_crash_traceback_shows_the_runners_frames_and_chain_not_ours(
    launcher: Launcher,
) -> None:
    # Before: the frame of supervisor/runs/context.py (ctx.sleep) stood in the traceback.
    exit_, sink = run(launcher, "raises-through-ours")
    assert exit_.outcome is Outcome.FAILED
    assert exit_.error is not None
    lines = exit_.error.splitlines()
    assert lines[0] == "ValueError: the pause is not a number"
    frames = [line.strip() for line in lines if line.startswith('  File "')]
    assert [frame.rsplit(" ", 1)[-1] for frame in frames] == [
        "raises_through_ours",
        "_pause",
        "raises_through_ours",
    ]
    assert all("misbehave.py" in frame for frame in frames)
    assert "  [1 frame of sched-supervisor hidden]" in lines  # ctx.sleep's
    assert "The above exception was the direct cause of the following exception:" in lines
    assert lines[-1] == "ValueError: the pause is not a number"
    assert OWN_CODE not in exit_.error
    logged = sink.find("run failed: ValueError: the pause is not a number")
    assert OWN_CODE not in logged.fields["traceback"]


def test_run_error_fails_with_just_its_message(launcher: Launcher) -> None:
    exit_, _ = run(launcher, "run-error")
    assert (exit_.outcome, exit_.error, exit_.exit_code) == (
        Outcome.FAILED,
        "failed randomly",
        1,
    )


def test_os_exit_is_a_crash_with_the_code_and_last_stderr_lines(launcher: Launcher) -> None:
    exit_, _ = run(launcher, "exit3")
    assert exit_.outcome is Outcome.CRASHED
    assert (exit_.exit_code, exit_.signal) == (3, None)
    assert exit_.error is not None
    assert exit_.error.startswith("exited with code 3\nlast stderr lines:\n")
    assert "about to exit" in exit_.error


@pytest.mark.parametrize(
    ("scheduler_id", "signum", "fault"),
    [("segfault", signal.SIGSEGV, "Segmentation fault"), ("abort", signal.SIGABRT, "Aborted")],
)
def test_signals_are_crashes(
    launcher: Launcher, scheduler_id: str, signum: int, fault: str
) -> None:
    exit_, sink = run(launcher, scheduler_id)
    assert exit_.outcome is Outcome.CRASHED
    assert (exit_.exit_code, exit_.signal) == (None, signum)
    assert exit_.error is not None
    assert exit_.error.startswith(f"killed by signal {signal.Signals(signum).name} ({signum})")
    assert fault in exit_.error  # faulthandler's report, from the stderr tail
    # Its stack shows the runner's frame; the supervisor's own frames are one line.
    assert re.search(rf'misbehave\.py", line \d+ in {scheduler_id}$', exit_.error, re.M)
    assert OWN_CODE not in exit_.error
    assert re.search(r"^  \[\d+ frames of sched-supervisor hidden\]$", exit_.error, re.M)
    assert any(fault in m for m in sink.messages(Source.STDERR))


def test_a_deep_faults_tail_keeps_its_header_and_innermost_frame(launcher: Launcher) -> None:
    # Before: the supervisor's 12 frames and the dump's footer filled the 20-line tail,
    # pushing out "Fatal Python error" and the frame that faulted.
    exit_, _ = run(launcher, "segfault-deep")
    assert exit_.outcome is Outcome.CRASHED and exit_.signal == signal.SIGSEGV
    assert exit_.error is not None
    lines = exit_.error.splitlines()
    assert "Fatal Python error: Segmentation fault" in lines
    faulted = next(i for i, line in enumerate(lines) if line.startswith('  File "'))
    assert lines[faulted].endswith(" in _descend")  # the innermost frame comes first
    assert OWN_CODE not in exit_.error


def test_a_cooperative_run_times_out_when_asked(launcher: Launcher) -> None:
    exit_, sink = run(launcher, "cooperative", timeout=0.3, grace=30)
    assert exit_.outcome is Outcome.TIMED_OUT
    assert exit_.cancel_reason == "timeout"
    assert exit_.error == "timed out after 0.3s"
    assert exit_.exit_code == 1  # it raised ctx.err(); no signal was needed
    assert sink.find("asked to end").fields["reason"] == "the run timed out"


def test_a_run_ignoring_cancel_and_sigterm_is_killed(launcher: Launcher) -> None:
    # The timeout counts from the start: a fresh interpreter on a loaded machine may not
    # yet ignore SIGTERM after 0.3 s, and would then end by it.
    timeout = 0.3 if isinstance(launcher, ForkServerLauncher) else 3.0
    exit_, sink = run(launcher, "stubborn", timeout=timeout, grace=0.2)
    assert exit_.outcome is Outcome.TIMED_OUT
    assert exit_.signal == signal.SIGKILL
    assert exit_.error is not None
    assert "did not end when asked and was killed by signal SIGKILL" in exit_.error
    assert "ignoring every request to end" in sink.messages()


def test_cancel_stops_the_run(launcher: Launcher) -> None:
    cancel = threading.Event()

    class CancelWhenWaiting(Collector):
        def __call__(self, batch: Sequence[LogRecord]) -> None:
            super().__call__(batch)
            if any(r.message == "waiting" for r in batch):
                cancel.set()

    exit_, sink = run(launcher, "cooperative", cancel=cancel, sink=CancelWhenWaiting())
    assert exit_.outcome is Outcome.CANCELLED
    assert exit_.cancel_reason == "stop"
    assert exit_.error == "cancelled: the run was stopped"
    assert sink.find("asked to end").fields["reason"] == "the run was stopped"


def test_shutdown_is_told_apart_from_stop(launcher: Launcher) -> None:
    cancel = CancelRequest()
    cancel.request("shutdown")
    exit_, _ = run(launcher, "cooperative", cancel=cancel)
    assert exit_.outcome is Outcome.CANCELLED
    assert exit_.cancel_reason == "shutdown"
    assert "shutting down" in (exit_.error or "")


def test_an_escaped_grandchild_dies_with_the_run(launcher: Launcher) -> None:
    exit_, sink = run(launcher, "grandchild")
    assert exit_.outcome is Outcome.SUCCEEDED
    fields = sink.find("grandchild").fields
    assert not alive(fields["pid"], fields["create_time"])


def test_a_million_lines_arrive_all_in_bounded_batches(launcher: Launcher) -> None:
    count = 0
    biggest = 0
    expected_next = 0
    in_order = True

    def sink(batch: Sequence[LogRecord]) -> None:
        nonlocal count, biggest, expected_next, in_order
        count += len(batch)
        biggest = max(biggest, len(batch))
        for record in batch:
            if record.message != str(expected_next):
                in_order = False
            expected_next += 1

    process = launcher.spawn(new_job("spew"))
    exit_ = process.supervise(sink=sink, timeout=120, cancel=threading.Event())
    assert exit_.outcome is Outcome.SUCCEEDED
    assert count == SPEW_LINES
    assert in_order
    assert biggest <= 1000


def test_an_over_long_line_is_split(launcher: Launcher) -> None:
    exit_, sink = run(launcher, "long-line")
    assert exit_.outcome is Outcome.SUCCEEDED
    records = [r for r in sink.records if r.source is Source.STDOUT]
    assert "".join(r.message for r in records[:-1]) == "x" * 100_000
    assert all(r.fields == {"partial": True} for r in records[:-2])
    assert records[-2].fields == {}
    assert records[-1].message == "end"
    assert max(len(r.message) for r in records) <= 32 * 1024


def test_a_command_exit_status_is_its_outcome(launcher: Launcher) -> None:
    # Before: crashed, "exited with code 4": a program failing is no crash.
    exit_, sink = run(launcher, "command")
    assert exit_.outcome is Outcome.FAILED
    assert (exit_.exit_code, exit_.signal) == (4, None)
    assert exit_.error == "exit code 4\nlast stderr lines:\noops"
    assert sink.messages(Source.STDOUT) == ["hi"]


def test_a_command_succeeds_and_carries_the_run_marker(launcher: Launcher) -> None:
    job = new_job("command-ok")
    sink = Collector()
    exit_ = launcher.spawn(job).supervise(sink=sink, timeout=30, cancel=threading.Event())
    assert exit_.outcome is Outcome.SUCCEEDED
    assert sink.messages(Source.STDOUT) == [f"marker={job.run_id}"]


def test_a_command_starts_with_default_signal_handling(launcher: Launcher) -> None:
    exit_, sink = run(launcher, "command-signals")
    assert exit_.outcome is Outcome.SUCCEEDED
    assert sink.messages(Source.STDOUT) == [
        "SigBlk:\t0000000000000000",
        "SigIgn:\t0000000000000000",
    ]


def test_a_missing_program_fails(launcher: Launcher) -> None:
    exit_, _ = run(launcher, "command-missing")
    assert exit_.outcome is Outcome.FAILED
    assert exit_.error == "cannot execute '/nonexistent/program': No such file or directory"


def test_a_command_that_hangs_is_terminated(launcher: Launcher) -> None:
    exit_, _ = run(launcher, "command-hang", timeout=0.3, grace=30)
    assert exit_.outcome is Outcome.TIMED_OUT
    assert exit_.signal == signal.SIGTERM  # a program gets SIGTERM at once
    assert exit_.error == "timed out after 0.3s"


def test_a_custom_action_returns_its_value(launcher: Launcher) -> None:
    exit_, sink = run(launcher, "actions", action_id="answer")
    assert exit_.outcome is Outcome.SUCCEEDED
    assert exit_.result == "42"
    assert sink.messages() == ["computing the answer"]


def test_a_raising_custom_action_fails(launcher: Launcher) -> None:
    exit_, _ = run(launcher, "actions", action_id="broken")
    assert exit_.outcome is Outcome.FAILED
    assert exit_.error is not None
    assert exit_.error.startswith("ValueError: no answer today\nTraceback")


def test_an_unknown_action_fails(launcher: Launcher) -> None:
    exit_, _ = run(launcher, "actions", action_id="nope")
    assert exit_.outcome is Outcome.FAILED
    assert exit_.error == "scheduler 'actions' has no action 'nope'"


def test_an_unknown_scheduler_fails(launcher: Launcher) -> None:
    exit_, _ = run(launcher, "no.such.scheduler")
    assert exit_.outcome is Outcome.FAILED
    assert exit_.error == "UnknownScheduler: no scheduler with id 'no.such.scheduler'"


# -- processes --------------------------------------------------------------------------


def test_pid_create_time_group_and_marker(launcher: Launcher) -> None:
    job = new_job("cooperative")
    process = launcher.spawn(job)
    cancel = threading.Event()
    facts: dict[str, Any] = {}

    def look(batch: Sequence[LogRecord]) -> None:
        if any(r.message == "waiting" for r in batch) and not facts:
            target = psutil.Process(process.pid)
            facts["create_time"] = target.create_time()
            facts["pgid"] = os.getpgid(process.pid)
            facts["sid"] = os.getsid(process.pid)
            facts["marker"] = target.environ().get(MARKER_ENV)
            cancel.set()

    exit_ = process.supervise(sink=look, timeout=30, cancel=cancel)
    assert exit_.outcome is Outcome.CANCELLED
    assert abs(facts["create_time"] - process.create_time) < 0.01
    assert facts["pgid"] == facts["sid"] == process.pid
    assert facts["marker"] == job.run_id
    assert not alive(process.pid, process.create_time)


def test_the_runner_sees_its_job(launcher: Launcher) -> None:
    deadline = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    job = Job(scheduler_id="cooperative", run_id="seen-1", trigger="cron", deadline=deadline)
    cancel = CancelRequest()
    cancel.request("stop")
    sink = Collector()
    exit_ = launcher.spawn(job).supervise(sink=sink, timeout=30, cancel=cancel)
    assert exit_.outcome is Outcome.CANCELLED
    assert sink.find("waiting").fields["deadline"] == deadline.isoformat()
    assert {r.run_id for r in sink.records} == {"seen-1"}


def test_the_fd_layout_of_a_run(launcher: Launcher) -> None:
    exit_, sink = run(launcher, "fds")
    assert exit_.outcome is Outcome.SUCCEEDED
    fds = sink.find("fds").fields["fds"]
    assert fds["0"] == ["/dev/null", True]
    for number in "1234":
        assert fds[number][0].startswith("pipe:")
    assert [fds[n][1] for n in "1234"] == [True, True, False, False]
    inherited = sorted(int(n) for n, (_, inheritable) in fds.items() if inheritable)
    assert inherited == [0, 1, 2]


def test_supervise_is_called_once(launcher: Launcher) -> None:
    process = launcher.spawn(new_job("first"))
    process.supervise(sink=lambda batch: None, timeout=30, cancel=threading.Event())
    with pytest.raises(RuntimeError):
        process.supervise(sink=lambda batch: None, timeout=30, cancel=threading.Event())


def test_a_failing_sink_kills_the_run_and_propagates(launcher: Launcher) -> None:
    process = launcher.spawn(new_job("stubborn"))

    def sink(batch: Sequence[LogRecord]) -> None:
        raise KeyError("store is gone")

    with pytest.raises(KeyError):
        process.supervise(sink=sink, timeout=30, cancel=threading.Event())
    wait_for(lambda: not alive(process.pid, process.create_time), what="the run to die")


def test_concurrent_spawns(launcher: Launcher) -> None:
    exits: list[Exit] = []
    lock = threading.Lock()

    def one() -> None:
        exit_, _ = run(launcher, "first")
        with lock:
            exits.append(exit_)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [e.outcome for e in exits] == [Outcome.SUCCEEDED] * 6


# -- starting and restarting ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fork", "fresh"])
def test_an_app_that_does_not_import_is_an_app_load_error(tmp_path: Path, kind: str) -> None:
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('bad config at import')\n")
    factory = ForkServerLauncher if kind == "fork" else FreshInterpreterLauncher
    for spec, message in [
        ("broken_app:cfg", "bad config at import"),
        ("no_such_module_xyz:cfg", "cannot import module"),
    ]:
        made = factory(spec, sys_path=[str(tmp_path)])
        with pytest.raises(AppLoadError, match=message):
            made.start()
        made.close()


def test_the_fork_server_restarts_when_the_app_changes(tmp_path: Path) -> None:
    module = tmp_path / "reload_app.py"
    module.write_text(VERSIONED_APP.format(version="one"))
    made = ForkServerLauncher("reload_app:cfg", sys_path=[str(tmp_path)])
    made.start()
    try:

        def version() -> Any:
            exit_, sink = run(made, "hello")
            assert exit_.outcome is Outcome.SUCCEEDED, exit_
            return sink.find("version").fields["version"]

        first_servers = made.server_pids
        assert first_servers
        assert version() == "one"
        assert made.check_reload() is False
        module.write_text(VERSIONED_APP.format(version="two"))
        assert version() == "two"
        # Every server replaced (a fresh load of the app), as many as before.
        assert len(made.server_pids) == len(first_servers)
        assert not set(first_servers) & set(made.server_pids)
        assert made.restarts == 1
        for old in first_servers:
            wait_for(lambda old=old: not psutil.pid_exists(old), what="the old servers to exit")

        module.write_text("this is not python (\n")
        with pytest.raises(BackendError, match="the app failed to load"):
            made.spawn(new_job("hello"))
        with pytest.raises(AppLoadError):
            made.check_reload()
        module.write_text(VERSIONED_APP.format(version="three"))
        assert version() == "three"
    finally:
        made.close()


def test_a_run_survives_a_restart_of_the_fork_server(tmp_path: Path) -> None:
    module = tmp_path / "survive_app.py"
    module.write_text(
        VERSIONED_APP.format(version="one").replace(
            'info("version", version=VERSION)',
            'info("version", version=VERSION)\n    while ctx.sleep(0.05):\n        pass',
        )
    )
    made = ForkServerLauncher("survive_app:cfg", sys_path=[str(tmp_path)])
    made.start()
    try:
        old_servers = made.server_pids
        long_run = made.spawn(new_job("hello"))
        old_server = server_of(long_run)
        assert old_server in old_servers
        module.write_text(VERSIONED_APP.format(version="two"))
        assert made.check_reload() is True
        assert psutil.pid_exists(old_server)  # still serving the run in progress
        assert alive(long_run.pid, long_run.create_time)
        for idle in set(old_servers) - {old_server}:  # no run: closed at once
            wait_for(lambda idle=idle: not psutil.pid_exists(idle), what="an idle old server")
        cancel = threading.Event()
        cancel.set()
        exit_ = long_run.supervise(sink=lambda batch: None, timeout=30, cancel=cancel)
        assert exit_.outcome is Outcome.CANCELLED
        wait_for(lambda: not psutil.pid_exists(old_server), what="the old server to exit")
    finally:
        made.close()


def test_a_run_outlives_its_killed_fork_server_which_is_replaced() -> None:
    made = ForkServerLauncher(APP, cwd=str(ROOT))
    made.start()
    try:
        servers = made.server_pids
        process = made.spawn(new_job("cooperative"))
        server = server_of(process)
        assert server in servers
        cancel = threading.Event()

        def kill_server(batch: Sequence[LogRecord]) -> None:
            if any(r.message == "waiting" for r in batch):
                os.kill(server, signal.SIGKILL)
                wait_for(lambda: not running(server), what="the fork server to die")
                assert alive(process.pid, process.create_time)
                cancel.set()

        exit_ = process.supervise(sink=kill_server, timeout=30, cancel=cancel)
        assert exit_.outcome is Outcome.CANCELLED, exit_
        assert exit_.error == "cancelled: the run was stopped"
        assert not alive(process.pid, process.create_time)
        exit_, _ = run(made, "first")
        assert exit_.outcome is Outcome.SUCCEEDED
        # The killed one replaced, the others kept.
        now = made.server_pids
        assert len(now) == len(servers) and server not in now
        assert [pid for pid in now if pid in servers] == [pid for pid in servers if pid != server]
    finally:
        made.close()


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroups", "no-cgroups"])
def test_a_run_starts_on_a_spare_while_the_fork_server_is_stopped(cgroups: bool) -> None:
    """A start on a spare asks the server nothing: it goes ahead with every server stopped
    (SIGSTOP), and the run's end is told once its server goes on."""
    made = ForkServerLauncher(
        APP, cwd=str(ROOT), containment=None if cgroups else Containment(None)
    )
    made.start()
    try:
        servers = made.server_pids

        def ready_on_every_server() -> list[list[Spare]] | None:
            ready = [server.ready_spares() for server in made._servers]
            return ready if all(ready) else None

        spares = wait_for(ready_on_every_server, what="a spare on every server")
        for server in servers:
            os.kill(server, signal.SIGSTOP)
        try:
            process = made.spawn(new_job("first"))
            # The first spare of one of them became the run.
            assert process.pid in {ready[0].pid for ready in spares}
            sink = Collector()
            ended: queue.Queue[Exit] = queue.Queue()
            watcher = threading.Thread(
                target=lambda: ended.put(
                    process.supervise(sink=sink, timeout=30, cancel=threading.Event())
                )
            )
            watcher.start()
            wait_for(lambda: "first" in sink.messages(), what="the run's record")
        finally:
            for server in servers:
                os.kill(server, signal.SIGCONT)
        watcher.join(30)
        exit_ = ended.get(timeout=1)
        assert exit_.outcome is Outcome.SUCCEEDED, exit_
        assert made.server_pids == servers  # its status came from the server, not a restart
    finally:
        made.close()


def test_close_stops_every_fork_server() -> None:
    made = ForkServerLauncher(APP, cwd=str(ROOT))
    made.start()
    servers = made.server_pids
    assert servers
    made.close()
    assert not [pid for pid in servers if psutil.pid_exists(pid)]
    with pytest.raises(BackendError):
        made.spawn(new_job("first"))


# -- a killed manager -------------------------------------------------------------------


def host(kind: str, scheduler_id: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start a process that owns a launcher and one run; wait for the run's grandchild."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.apps.launcher_host", kind, scheduler_id, "hostrun1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in child.stdout or ()], daemon=True
    ).start()
    seen: list[str] = []
    deadline = time.monotonic() + 30
    facts: dict[str, Any] = {}
    found = False
    while not found:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            child.kill()
            raise AssertionError(
                f"no grandchild record within 30 s; saw {seen}; stderr: {child.stderr.read()}"
            ) from None
        seen.append(line.strip())
        record = json.loads(line)
        if not facts:
            facts = record  # the first line: the host's own facts
        elif record.get("message") == "grandchild":
            facts.update(record["fields"])
            found = True
    return child, facts


def stop(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()
    for stream in (child.stdout, child.stderr):
        if stream is not None:
            stream.close()


def test_kill_9_of_the_fork_server_owner_leaves_no_run_process() -> None:
    child, facts = host("fork", "grandchild-hang")
    try:
        assert alive(facts["me"], facts["me_create_time"])
        assert alive(facts["pid"], facts["create_time"])
        child.kill()
        child.wait()
        # Another test may have made this process a subreaper: the dead server can stay a
        # zombie here, which counts as gone.
        wait_for(lambda: not running(facts["server"]), what="the fork server to exit")
        wait_for(lambda: not alive(facts["me"], facts["me_create_time"]), what="the run to die")
        wait_for(
            lambda: not alive(facts["pid"], facts["create_time"]), what="the grandchild to die"
        )
    finally:
        stop(child)


def test_kill_leftovers_finishes_what_a_killed_owner_left(tmp_path: Path) -> None:
    child, facts = host("fresh", "grandchild-hang")
    try:
        child.kill()
        child.wait()
        # The run's main process follows its parent (PDEATHSIG); the escaped grandchild
        # has nobody to kill it until the next manager start cleans up.
        wait_for(lambda: not alive(facts["me"], facts["me_create_time"]), what="the run to die")
        assert alive(facts["pid"], facts["create_time"])
        killed = kill_leftovers(
            facts["me"], facts["me"], facts["me_create_time"], run_id="hostrun1"
        )
        assert killed >= 1
        wait_for(
            lambda: not alive(facts["pid"], facts["create_time"]), what="the grandchild to die"
        )
    finally:
        stop(child)
        if alive(facts.get("pid", 0), facts.get("create_time", 0.0)):
            os.kill(facts["pid"], signal.SIGKILL)


REAP_SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, time
    from supervisor.runs.launcher import become_subreaper, reap_orphans

    become_subreaper()
    ours = subprocess.Popen(["sh", "-c", "exit 7"])
    # An orphan: the outer shell exits at once, the inner one (in its own session)
    # reparents to us and exits a moment later.
    subprocess.run(["sh", "-c", "setsid sh -c 'sleep 0.2; exit 3' &"], check=True)
    reaped = []
    deadline = time.monotonic() + 10
    while not reaped and time.monotonic() < deadline:
        reaped = reap_orphans()
        time.sleep(0.02)
    print(json.dumps({"reaped": reaped, "ours": ours.wait()}))
    """
)


def test_reap_orphans_reaps_orphans_but_not_our_own_children() -> None:
    out = subprocess.run(
        [sys.executable, "-c", REAP_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(out.stdout)
    assert result["ours"] == 7
    assert len(result["reaped"]) == 1
    _, status = result["reaped"][0]
    assert os.waitstatus_to_exitcode(status) == 3


# -- in-process execution (``supervisor exec``) -----------------------------------------


class ListSink:
    def __init__(self) -> None:
        self.records: list[LogRecord] = []

    def write(self, record: LogRecord) -> None:
        self.records.append(record)


def options_of(scheduler_id: str) -> Any:
    from tests.apps.misbehave import schedulers

    return schedulers.registry.get(scheduler_id)


def test_execute_in_process_with_a_pluggable_sink(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sink = ListSink()
    result = execute(options_of("ok"), new_job("ok"), sink=sink)
    assert result == RunResult(outcome=Outcome.SUCCEEDED)
    messages = [r.message for r in sink.records]
    assert messages == ["hello", "from stdlib", "context"]
    assert sink.records[1].fields == {"colour": "green", "logger": "misbehave"}
    assert (root.handlers, root.level) == (handlers, level)  # logging is put back
    assert "plain output" in capsys.readouterr().out


def test_execute_in_process_failures_and_actions() -> None:
    sink = ListSink()
    failed = execute(options_of("raises"), new_job("raises"), sink=sink)
    assert failed.outcome is Outcome.FAILED
    assert failed.error == "RuntimeError: ops - started to panic"
    assert failed.traceback is not None and "misbehave.py" in failed.traceback
    assert sink.records[-1].level is Level.ERROR
    answer = execute(options_of("actions"), new_job("actions", "answer"), sink=sink)
    assert answer == RunResult(outcome=Outcome.SUCCEEDED, value="42")
    with pytest.raises(TypeError):
        execute(options_of("command"), new_job("command"), sink=sink)


def test_execute_in_process_is_cancelled_through_a_cancel_pipe() -> None:
    channel = CancelPipe()
    try:
        channel.cancel("stop")
        result = execute(
            options_of("cooperative"),
            new_job("cooperative"),
            sink=ListSink(),
            cancel_fd=channel.read_fd,
        )
    finally:
        channel.close()
    assert result == RunResult(outcome=Outcome.FAILED, error="the run was stopped")
