"""Starting the manager: a bad address, a busy state directory or another app's state fails
before any run; a deleted control socket or lock file neither hides nor doubles a manager."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.core.errors import DefinitionError, StoreError, UntrustedPath
from supervisor.service.control import SOCKET_NAME
from supervisor.service.lock import StateDirLock, _flock_holders, holder
from supervisor.service.manager_mode import RunOptions, Service
from supervisor.service.paths import LOCK_NAME
from supervisor.store.sqlite import SqliteStore
from supervisor.web.server import start_admin
from tests.commands import ROOT, supervisor
from tests.waiting import wait_for

APP = "tests.apps.manager_jobs:cfg"


def test_an_admin_port_in_use_fails_the_start_before_any_run(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        service = Service(
            RunOptions(app_spec=APP, state_dir=tmp_path, admin=("127.0.0.1", port)),
            log=io.StringIO(),
            admin_factory=start_admin,
        )
        with pytest.raises(DefinitionError) as caught:
            service.start()
        service.close()
    assert caught.value.field == "--admin"
    assert f"127.0.0.1:{port}" in str(caught.value)
    with SqliteStore.open(tmp_path / "state.db") as store:
        assert store.runs("m.oneshot") == []
        assert store.runs("m.repeat") == []


def test_one_manager_per_state_directory(tmp_path: Path) -> None:
    first = Service(RunOptions(app_spec=APP, state_dir=tmp_path, admin=None), log=io.StringIO())
    first.start()
    try:
        second = Service(
            RunOptions(app_spec=APP, state_dir=tmp_path, admin=None), log=io.StringIO()
        )
        with pytest.raises(StoreError, match=r"another manager \(pid \d+\) is already running"):
            second.start()
        second.close()
    finally:
        first.close()


# -- the lost socket and lock (real manager processes) ---------------------------------------

OTHER_APP = """
from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("other-app")

def noop(ctx):
    pass

cfgscheduler.enable(cfg).use_cases.configure(user.su(), scheduler.Options(
    id="o.manual", name="manual", description="", kind=scheduler.Kind.MANUAL, runner=noop,
))
"""


def _environment(*extra: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, extra)])}


def _quiet(argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``argv`` started from the checkout, its output dropped."""
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=_environment() if env is None else env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``supervisor run`` in its own process, with its state directory."""
    state = tmp_path / "state"
    process = _quiet(supervisor("run", "--app", APP, "--state-dir", str(state), "--no-admin"))
    try:
        wait_for(lambda: (state / SOCKET_NAME).exists(), timeout=30, what="the manager")
        yield process, state
    finally:
        process.terminate()
        try:
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        supervisor(*args),
        cwd=ROOT,
        env=env or _environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_deleted_control_socket_is_served_again(
    manager: tuple[subprocess.Popen[bytes], Path],
) -> None:
    _, state = manager
    (state / SOCKET_NAME).unlink()
    listed = _cli("list", "--json", "--state-dir", str(state))  # waits for the socket's return
    assert listed.returncode == 0, listed.stderr
    assert "m.oneshot" in [s["id"] for s in json.loads(listed.stdout)]
    assert stat.S_ISSOCK((state / SOCKET_NAME).lstat().st_mode)
    assert stat.S_IMODE((state / SOCKET_NAME).lstat().st_mode) == 0o600


def test_without_its_socket_a_live_manager_is_named_not_denied(tmp_path: Path) -> None:
    # An in-process manager that never repairs (no serve loop): the CLI must not say
    # "no manager is running" while one holds the state directory.
    service = Service(RunOptions(app_spec=APP, state_dir=tmp_path, admin=None), log=io.StringIO())
    service.start()
    try:
        (tmp_path / SOCKET_NAME).unlink()
        result = _cli("status", "m.cron", "--state-dir", str(tmp_path))
    finally:
        service.close()
    assert result.returncode == 8
    assert result.stderr.count("\n") == 1
    assert f"a manager (pid {os.getpid()}) holds state directory" in result.stderr
    assert "control socket" in result.stderr
    assert "no manager is running" not in result.stderr


def test_a_second_manager_is_refused_even_without_the_lock_file(
    manager: tuple[subprocess.Popen[bytes], Path],
) -> None:
    first, state = manager
    (state / SOCKET_NAME).unlink()
    (state / LOCK_NAME).unlink()
    second = _cli("run", "--app", APP, "--state-dir", str(state), "--no-admin")
    assert second.returncode == 7
    assert second.stderr.count("\n") == 1
    assert f"another manager (pid {first.pid}) is already running" in second.stderr
    lock = state / LOCK_NAME
    # The first one puts its lock file back (with its pid) and keeps answering.
    wait_for(
        lambda: lock.exists() and lock.read_text() == f"{first.pid}\n",
        timeout=10,
        what="the lock file to come back",
    )
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert _cli("list", "--state-dir", str(state)).returncode == 0
    assert first.poll() is None


def test_the_lock_file_is_never_followed_through_a_symlink(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    target = tmp_path / "somebody-elses-file"
    target.write_text("precious\n")
    (state / LOCK_NAME).symlink_to(target)
    result = _cli("run", "--app", APP, "--state-dir", str(state), "--no-admin")
    assert result.returncode == 11
    assert "manager.lock: it is a symlink" in result.stderr
    # Planted after the state directory was checked: O_NOFOLLOW still refuses it.
    with pytest.raises(UntrustedPath, match="it is a symlink"):
        StateDirLock(state).acquire()
    assert target.read_text() == "precious\n"


def test_another_app_is_refused_on_a_used_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Service(RunOptions(app_spec=APP, state_dir=state, admin=None), log=io.StringIO())
    first.start()
    first.close()
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "other_jobs.py").write_text(OTHER_APP)
    env = _environment(tmp_path / "apps")
    other = ("run", "--app", "other_jobs:cfg", "--state-dir", str(state), "--no-admin")
    refused = _cli(*other, env=env)
    assert refused.returncode == 7
    assert refused.stderr.count("\n") == 1
    assert f"'manager-tests' ({APP})" in refused.stderr
    assert "'other-app' (other_jobs:cfg)" in refused.stderr
    assert "--replace-app" in refused.stderr
    with SqliteStore.open(state / "state.db") as store:
        assert store.get_meta("app_spec") == APP  # nothing was taken over
    taken = _quiet(supervisor(*other, "--replace-app"), env=env)
    try:
        wait_for(
            lambda: _cli("status", "o.manual", "--state-dir", str(state)).returncode == 0,
            timeout=30,
            what="the other app's manager",
        )
    finally:
        taken.terminate()
        assert taken.wait(30) == 0
    # Now the state directory is the other app's: the first one is refused in turn.
    back = _cli("run", "--app", APP, "--state-dir", str(state), "--no-admin")
    assert back.returncode == 7
    assert "'other-app' (other_jobs:cfg)" in back.stderr


def test_the_holder_is_read_from_proc_locks() -> None:
    device, inode = os.makedev(0xFE, 0), 5481328
    locks = "\n".join(
        [
            "1: POSIX  ADVISORY  WRITE 111 fe:00:5481328 0 EOF",
            "2: FLOCK  ADVISORY  WRITE 222 fe:00:5481329 0 EOF",
            "3: FLOCK  ADVISORY  WRITE 333 fe:00:5481328 0 EOF",
            "3: -> FLOCK  ADVISORY  WRITE 444 fe:00:5481328 0 EOF",
        ]
    )
    assert _flock_holders(device, inode, locks) == [333]
    assert _flock_holders(device, inode + 5, locks) == []


def test_a_killed_manager_leaves_no_lock_behind_even_with_runs_alive(
    manager: tuple[subprocess.Popen[bytes], Path],
) -> None:
    # The locks live on the manager's own descriptors: neither the fork server nor a run
    # in flight may keep them (which would lock every later manager out).
    first, state = manager
    started = _cli("execute", "m.hang", "--state-dir", str(state))
    assert started.returncode == 0, started.stderr
    first.kill()
    first.wait(30)
    assert holder(state) is None
    second = _quiet(supervisor("run", "--app", APP, "--state-dir", str(state), "--no-admin"))
    try:
        wait_for(lambda: holder(state) == second.pid, timeout=30, what="the second manager")
        wait_for(
            lambda: _cli("status", "m.hang", "--state-dir", str(state)).returncode == 0,
            timeout=30,
            what="the second manager's socket",
        )
    finally:
        second.terminate()
        assert second.wait(30) == 0


def test_regression_a_leftover_run_without_a_recorded_pid_is_found_by_its_marker(
    tmp_path: Path,
) -> None:
    """A run whose pid never reached the store (the manager died, or the disk was full,
    between its run row and its process) once kept running beside the next manager's."""
    from datetime import UTC, datetime

    from supervisor.core.clock import SystemClock
    from supervisor.core.records import Outcome, RunRecord, Trigger
    from supervisor.service.manager_mode import recover_interrupted_runs

    store = SqliteStore.open(tmp_path / "state.db")
    run = RunRecord(
        run_id="r-orphan",
        scheduler_id="m.repeat",
        trigger=Trigger.SCHEDULE,
        triggered_by=None,
        started_at=datetime.now(UTC),
    )
    store.insert_run(run)
    leftover = subprocess.Popen(
        ["sleep", "300"],
        env={**os.environ, "SUPERVISOR_RUN_ID": run.run_id},
        start_new_session=True,
    )
    try:
        assert recover_interrupted_runs(store, SystemClock()) == 1
        assert leftover.wait(timeout=10) == -9
        (stored,) = store.runs("m.repeat")
        assert stored.outcome is Outcome.INTERRUPTED
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
        store.close()
