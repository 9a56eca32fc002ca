"""No run can harm another: real processes attacking their fork server, escaping their
session, and the app's own start-up, through real launchers.

The schedulers are in ``tests/apps/hostile.py``.
"""

from __future__ import annotations

import json
import os
import py_compile
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor.core.errors import AppLoadError, BackendError
from supervisor.core.records import LogRecord, Outcome
from supervisor.runs import forkclient, procs
from supervisor.runs.containment import PROCESS_GROUP, Containment
from supervisor.runs.forkclient import Spare
from supervisor.runs.launcher import (
    Exit,
    ForkServerLauncher,
    FreshInterpreterLauncher,
    Job,
    Launcher,
    RunHandle,
)
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.hostile:cfg"


class Collector:
    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.lock = threading.Lock()

    def __call__(self, batch: Sequence[LogRecord]) -> None:
        with self.lock:
            self.records.extend(batch)

    def find(self, message: str) -> LogRecord | None:
        with self.lock:
            return next((r for r in self.records if r.message == message), None)


def job(scheduler_id: str, trigger: str = "manual") -> Job:
    return Job(scheduler_id=scheduler_id, run_id=uuid.uuid4().hex[:16], trigger=trigger)


def supervise_in_thread(process: RunHandle, sink: Collector) -> tuple[threading.Thread, list[Exit]]:
    exits: list[Exit] = []

    def watch() -> None:
        exits.append(to_end(process, sink))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, exits


def to_end(process: RunHandle, sink: Collector | None = None) -> Exit:
    """Supervise ``process`` until it ends (a minute at most), its records into ``sink``."""
    return process.supervise(
        sink=Collector() if sink is None else sink, timeout=60, cancel=threading.Event()
    )


def alive(pid: int, start_ticks: int | None = None) -> bool:
    """Is ``pid`` running (not a zombie), and the process that started at ``start_ticks``?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


@contextmanager
def fork_server() -> Iterator[tuple[ForkServerLauncher, int]]:
    """A started fork-server launcher of the hostile app, and its server's pid; closed after.
    One server: these tests need a run's neighbours and successors on its own server."""
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), servers=1)
    launcher.start()
    try:
        server = launcher.server_pid
        assert server is not None
        yield launcher, server
    finally:
        launcher.close()


@pytest.fixture
def release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file whose existence tells ``waiter`` runs to succeed (seen by new launchers)."""
    path = tmp_path / "release"
    monkeypatch.setenv("HOSTILE_RELEASE", str(path))
    return path


# -- a runner signals its parent (the fork server) --------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM])
def test_a_runner_signalling_its_fork_server_harms_no_other_run(
    signum: signal.Signals, release: Path
) -> None:
    with fork_server() as (launcher, server):
        other = launcher.spawn(job("waiter"))
        other_sink = Collector()
        thread, other_exit = supervise_in_thread(other, other_sink)
        wait_for(lambda: other_sink.find("waiting"), what="the other run to wait")

        killer = Collector()
        exit_ = to_end(launcher.spawn(job(f"kill-parent.{signum.name.lower()}")), killer)
        assert exit_.outcome is Outcome.SUCCEEDED, exit_  # its own outcome too
        told = killer.find("signalling my parent")
        assert told is not None and told.fields["parent"] == server
        if signum == signal.SIGKILL:
            wait_for(lambda: not alive(server), what="the fork server to die")
        else:
            assert alive(server)  # guarded: the signal did nothing

        assert alive(other.pid)  # the other run goes on ...
        release.touch()
        thread.join(30)
        # ... and ends as it would have: released, succeeded.
        assert other_exit == [
            Exit(outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None, result=None)
        ]
        assert other_sink.find("released") is not None
        assert not alive(other.pid)

        # Later runs start (on a new server if the old one died).
        exit_ = to_end(launcher.spawn(job("waiter")))
        assert exit_.outcome is Outcome.SUCCEEDED
        assert (launcher.server_pid != server) is (signum == signal.SIGKILL)


def test_a_runner_stopping_its_fork_server_delays_but_harms_no_other_run(release: Path) -> None:
    with fork_server() as (launcher, server):
        other = launcher.spawn(job("waiter"))
        other_sink = Collector()
        thread, other_exit = supervise_in_thread(other, other_sink)
        wait_for(lambda: other_sink.find("waiting"), what="the other run to wait")
        exit_ = to_end(launcher.spawn(job("kill-parent.sigstop")))
        # Its status waited for the stopped server, which was continued.
        assert exit_.outcome is Outcome.SUCCEEDED, exit_
        release.touch()
        thread.join(30)
        assert [e.outcome for e in other_exit] == [Outcome.SUCCEEDED]
        assert alive(server)


def test_a_spawn_on_a_stopped_fork_server_runs_once_on_a_new_one(
    release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forkclient, "SPAWN_TIMEOUT", 1.0)
    with fork_server() as (launcher, server):
        os.kill(server, signal.SIGSTOP)
        release.touch()
        the_job = job("waiter")
        process = launcher.spawn(the_job)
        assert launcher.server_pid != server
        wait_for(lambda: not alive(server), what="the stuck server to be killed")
        sink = Collector()
        exit_ = to_end(process, sink)
        assert exit_.outcome is Outcome.SUCCEEDED
        assert [r.message for r in sink.records] == ["waiting", "released"]
        assert procs.marked(the_job.run_id) == []  # no second copy anywhere


def test_a_run_whose_server_died_can_still_be_stopped_and_killed(release: Path) -> None:
    with fork_server() as (launcher, server):
        process = launcher.spawn(job("kill-parent.sigkill"))
        assert to_end(process).outcome is Outcome.SUCCEEDED
        # A run started on the next server, whose server is then killed from outside.
        stubborn = launcher.spawn(job("waiter"))
        second = launcher.server_pid
        assert second is not None and second != server
        sink = Collector()
        cancel = threading.Event()

        def kill_then_stop(batch: Sequence[LogRecord]) -> None:
            sink(batch)
            if any(r.message == "waiting" for r in batch):
                os.kill(second, signal.SIGKILL)
                wait_for(lambda: not alive(second), what="the server to die")
                cancel.set()

        exit_ = stubborn.supervise(sink=kill_then_stop, timeout=60, cancel=cancel)
        assert exit_.outcome is Outcome.CANCELLED
        assert exit_.error == "cancelled: the run was stopped"
        assert not alive(stubborn.pid)


def test_close_kills_runs_whose_server_died(release: Path) -> None:
    launcher = ForkServerLauncher(APP, cwd=str(ROOT))
    launcher.start()
    closed = False
    try:
        servers = launcher.server_pids
        process = launcher.spawn(job("waiter"))
        server = psutil.Process(process.pid).ppid()
        assert server in servers
        sink = Collector()
        thread, exits = supervise_in_thread(process, sink)
        wait_for(lambda: sink.find("waiting"), what="the run to wait")
        os.kill(server, signal.SIGKILL)
        wait_for(lambda: not alive(server), what="the server to die")
        assert alive(process.pid)
        launcher.close()
        closed = True
        thread.join(30)
        assert [e.outcome for e in exits] == [Outcome.CRASHED]
        assert exits[0].signal == signal.SIGKILL
        assert not alive(process.pid)
        assert not [pid for pid in servers if alive(pid)]  # the others closed too
    finally:
        if not closed:
            launcher.close()


# -- containment --------------------------------------------------------------------------


def escaped_of(sink: Collector) -> tuple[int, int]:
    record = sink.find("escaped")
    assert record is not None, [r.message for r in sink.records]
    return int(record.fields["pid"]), int(record.fields["start"])


@pytest.mark.parametrize("kind", ["fork", "fresh"])
def test_a_process_that_leaves_the_session_and_clears_its_environment_is_killed(
    kind: str,
) -> None:
    factory = ForkServerLauncher if kind == "fork" else FreshInterpreterLauncher
    launcher: Launcher = factory(APP, cwd=str(ROOT))
    launcher.start()
    try:
        if launcher.containment == PROCESS_GROUP:
            pytest.skip("no writable cgroup hierarchy here")
        assert launcher.containment.startswith(("cgroup v2", "cgroup v1"))
        sink = Collector()
        exit_ = to_end(launcher.spawn(job("escape")), sink)
        assert exit_.outcome is Outcome.SUCCEEDED
        pid, start = escaped_of(sink)
        wait_for(lambda: not alive(pid, start), what="the escaped process to be killed")
    finally:
        launcher.close()


def spares_in_place(launcher: ForkServerLauncher) -> list[list[Spare]]:
    """The ready spares of each current server (the next one to be taken first), once
    every server has some and each spare is the one process in its cgroup."""
    found = []
    for server in launcher._servers:
        ready = server.ready_spares()
        if not ready or not all(s.cgroup is not None and s.cgroup.pids() == [s.pid] for s in ready):
            return []
        found.append(ready)
    return found


@pytest.mark.parametrize("into_cgroup", [True, False], ids=["clone3", "join"])
def test_a_run_taking_over_a_spare_is_contained_and_a_dead_spare_is_replaced(
    into_cgroup: bool,
) -> None:
    # Spares forked into their cgroups (clone3), or joining them after fork.
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), into_cgroup=into_cgroup)
    launcher.start()
    try:
        if launcher.containment == PROCESS_GROUP:
            pytest.skip("no writable cgroup hierarchy here")
        spares = wait_for(lambda: spares_in_place(launcher), what="spares in their cgroups")
        sink = Collector()
        process = launcher.spawn(job("escape"))
        # The run is the spare that waited first on one of the servers.
        assert process.pid in {ready[0].pid for ready in spares}
        exit_ = to_end(process, sink)
        assert exit_.outcome is Outcome.SUCCEEDED
        pid, start = escaped_of(sink)
        wait_for(lambda: not alive(pid, start), what="the escaped process to be killed")

        # Spares killed from outside, the next of each server: the run that would have
        # taken one is started anew (on the server's next spare, or forked).
        spares = wait_for(lambda: spares_in_place(launcher), what="spares in their cgroups")
        victims = [ready[0].pid for ready in spares]
        for victim in victims:
            os.kill(victim, signal.SIGKILL)
        for victim in victims:
            wait_for(lambda victim=victim: not alive(victim), what="the spares to die")
        sink = Collector()
        process = launcher.spawn(job("escape"))
        assert process.pid not in victims
        exit_ = to_end(process, sink)
        assert exit_.outcome is Outcome.SUCCEEDED
        pid, start = escaped_of(sink)
        wait_for(lambda: not alive(pid, start), what="the escaped process to be killed")
    finally:
        launcher.close()


def test_without_a_cgroup_the_marker_sweep_cannot_find_such_a_process() -> None:
    """What the cgroup is for: the same escape outlives a run contained by group only."""
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), containment=Containment(None))
    launcher.start()
    pid = start = 0
    try:
        assert launcher.containment == PROCESS_GROUP
        sink = Collector()
        exit_ = to_end(launcher.spawn(job("escape")), sink)
        assert exit_.outcome is Outcome.SUCCEEDED
        pid, start = escaped_of(sink)
        assert alive(pid, start)
    finally:
        launcher.close()
        if pid and alive(pid, start):
            os.kill(pid, signal.SIGKILL)


HOST = textwrap.dedent(
    """
    import json, sys, threading
    from supervisor.runs.launcher import ForkServerLauncher, Job

    launcher = ForkServerLauncher("tests.apps.hostile:cfg")
    launcher.start()
    process = launcher.spawn(Job(scheduler_id="escape", run_id=sys.argv[1], trigger="hang"))
    print(json.dumps({"servers": launcher.server_pids, "containment": launcher.containment}))
    sys.stdout.flush()

    def sink(batch):
        for record in batch:
            print(json.dumps({"message": record.message, "fields": dict(record.fields)}))
        sys.stdout.flush()

    process.supervise(sink=sink, timeout=None, cancel=threading.Event())
    """
)


@pytest.fixture
def host() -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOST, "leftover" + uuid.uuid4().hex[:8]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield child
    child.kill()
    child.wait()
    for stream in (child.stdout, child.stderr):
        if stream is not None:
            stream.close()


def test_the_next_start_sweeps_run_cgroups_left_by_kill_9_of_manager_and_server(
    host: subprocess.Popen[str],
) -> None:
    assert host.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in host.stdout or ()], daemon=True).start()
    first = json.loads(lines.get(timeout=30))
    if first["containment"] == PROCESS_GROUP:
        pytest.skip("no writable cgroup hierarchy here")
    escaped: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while not escaped:
        record = json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        if record["message"] == "escaped":
            escaped = record["fields"]
    # All at once: nobody is left to clean up.
    for server in first["servers"]:
        os.kill(server, signal.SIGKILL)
    host.kill()
    host.wait()
    for server in first["servers"]:
        wait_for(lambda server=server: not alive(server), what="the servers to die")
    assert alive(escaped["pid"], escaped["start"])

    launcher = ForkServerLauncher(APP, cwd=str(ROOT))
    launcher.start()
    try:
        wait_for(
            lambda: not alive(escaped["pid"], escaped["start"]),
            what="the leftover run's processes to be killed",
        )
    finally:
        launcher.close()
        if alive(escaped["pid"], escaped["start"]):
            os.kill(escaped["pid"], signal.SIGKILL)


# -- signal dispositions ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fork", "fresh"])
def test_runs_start_with_default_signal_dispositions_under_an_ignored_sighup(kind: str) -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        factory = ForkServerLauncher if kind == "fork" else FreshInterpreterLauncher
        launcher: Launcher = factory(APP, cwd=str(ROOT))
        launcher.start()
    finally:
        signal.signal(signal.SIGHUP, previous)
    try:
        sink = Collector()
        exit_ = to_end(launcher.spawn(job("command-signals")), sink)
        assert exit_.outcome is Outcome.SUCCEEDED
        assert [r.message for r in sink.records] == [
            "SigBlk:\t0000000000000000",
            "SigIgn:\t0000000000000000",
        ]
        sink = Collector()
        exit_ = to_end(launcher.spawn(job("dispositions")), sink)
        assert exit_.outcome is Outcome.SUCCEEDED
        record = sink.find("dispositions")
        assert record is not None
        # What a fresh Python program has: only SIGPIPE and SIGXFSZ ignored.
        assert record.fields["sigign"] == f"{(1 << 12) | (1 << 24):016x}"
        assert record.fields["sigblk"] == "0" * 16
        assert record.fields["sighup"] == str(signal.SIG_DFL)
        assert record.fields["sigint"] == str(signal.default_int_handler)
    finally:
        launcher.close()


# -- the app's start-up -------------------------------------------------------------------

BLOCKING_APP = "import time\ntime.sleep(120)\n"


@pytest.mark.parametrize("kind", ["fork", "fresh"])
def test_an_app_whose_import_blocks_fails_the_start_within_the_timeout(
    tmp_path: Path, kind: str
) -> None:
    (tmp_path / "blocking_app.py").write_text(BLOCKING_APP)
    factory = ForkServerLauncher if kind == "fork" else FreshInterpreterLauncher
    launcher: Launcher = factory("blocking_app:cfg", sys_path=[str(tmp_path)], start_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(AppLoadError, match=r"'blocking_app:cfg'.*did not finish importing"):
        launcher.start()
    assert time.monotonic() - started < 10
    launcher.close()
    assert not [p for p in psutil.Process().children(recursive=True) if "blocking_app" in _cmd(p)]


def _cmd(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


@pytest.mark.parametrize("kind", ["fork", "fresh"])
def test_close_during_a_blocked_start_returns_promptly(tmp_path: Path, kind: str) -> None:
    (tmp_path / "blocking_app.py").write_text(BLOCKING_APP)
    factory = ForkServerLauncher if kind == "fork" else FreshInterpreterLauncher
    launcher: Launcher = factory("blocking_app:cfg", sys_path=[str(tmp_path)], start_timeout=120)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            launcher.start()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    wait_for(
        lambda: [p for p in psutil.Process().children(recursive=True) if "blocking_app" in _cmd(p)],
        what="the app's import to be under way",
    )
    launcher.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], BackendError)
    assert not [p for p in psutil.Process().children(recursive=True) if "blocking_app" in _cmd(p)]


def test_a_spawn_cancelled_while_the_changed_app_loads_gives_up(tmp_path: Path) -> None:
    module = tmp_path / "slow_reload_app.py"
    module.write_text(RELOAD_APP.format(version="one", extra=""))
    launcher = ForkServerLauncher("slow_reload_app:cfg", sys_path=[str(tmp_path)])
    launcher.start()
    try:
        module.write_text(RELOAD_APP.format(version="two", extra="import time; time.sleep(120)"))
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        with pytest.raises(BackendError, match="given up"):
            launcher.spawn(job("hello"), cancel=cancel)
    finally:
        launcher.close()


# -- reloading the app ----------------------------------------------------------------------

RELOAD_APP = """
from supervisor import Configurator, cfgscheduler, scheduler, user
{extra}
cfg = Configurator("reload")
VERSION = "{version}"


def hello(ctx):
    scheduler.logger_from(ctx).info("version", version=VERSION)


cfgscheduler.enable(cfg).use_cases.configure(
    user.su(),
    scheduler.Options(id="hello", name="Hello", kind=scheduler.Kind.MANUAL, runner=hello),
)
"""


def test_a_change_within_the_same_second_keeping_the_size_is_seen(tmp_path: Path) -> None:
    module = tmp_path / "same_second_app.py"
    helper = tmp_path / "same_second_helper.py"
    module.write_text(
        RELOAD_APP.format(version="-", extra="from same_second_helper import WORD").replace(
            'VERSION = "-"', "VERSION = WORD"
        )
    )
    second = int(time.time()) - 10
    helper.write_text('WORD = "aaa"\n')
    os.utime(helper, ns=(second * 10**9, second * 10**9))
    # A bytecode cache for this content, as an earlier import leaves it: it records the
    # source's mtime in whole seconds and its size.
    py_compile.compile(str(helper), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    launcher = ForkServerLauncher("same_second_app:cfg", sys_path=[str(tmp_path)])
    launcher.start()
    try:

        def word() -> Any:
            sink = Collector()
            exit_ = to_end(launcher.spawn(job("hello")), sink)
            assert exit_.outcome is Outcome.SUCCEEDED, exit_
            record = sink.find("version")
            assert record is not None
            return record.fields["version"]

        assert word() == "aaa"
        helper.write_text('WORD = "bbb"\n')  # the same size, within the same second
        os.utime(helper, ns=(second * 10**9 + 1, second * 10**9 + 1))
        assert word() == "bbb"
        assert launcher.restarts == 1
    finally:
        launcher.close()
