"""``supervisor run --fork-servers N`` (``RunOptions.fork_servers``): a real manager runs
that many fork servers; a bad count is refused naming the option, before anything starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from supervisor.cli.main import main
from supervisor.core.errors import DefinitionError
from supervisor.runs import forklauncher
from supervisor.runs.forklauncher import MAX_SERVERS, default_server_count
from supervisor.service.manager_mode import RunOptions
from tests.commands import supervisor
from tests.manager_process import ROOT, fork_servers_of, run_to_its_end
from tests.waiting import end_process, wait_for

APP = "tests.apps.manager_jobs:cfg"


# None: the default; 2 (as asked for); and one more than the default can ever be.
@pytest.mark.parametrize("count", [None, 2, MAX_SERVERS + 1])
def test_a_manager_runs_as_many_fork_servers_as_it_is_told(
    tmp_path: Path, count: int | None
) -> None:
    state = tmp_path / "state"
    asked = [] if count is None else ["--fork-servers", str(count)]
    process = subprocess.Popen(
        supervisor(
            "run",
            "--app",
            APP,
            "--state-dir",
            str(state),
            "--no-admin",
            "--grace",
            "500ms",
            *asked,
        ),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TEST_PID_DIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: (state / "control.sock").exists() or process.poll() is not None,
            timeout=30,
            what="the manager",
        )
        assert process.poll() is None
        # The servers are all started (together) before the control socket is served.
        expected = default_server_count() if count is None else count
        assert len(fork_servers_of(process.pid)) == expected
        run_to_its_end(state, "m.fail")  # and runs start on them
    finally:
        stderr = end_process(process)
    assert process.returncode == 0, stderr.decode(errors="replace")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--fork-servers", "0"], "expected a whole number from 1 to 64, got '0'"),
        (["--fork-servers", "-1"], "expected a whole number from 1 to 64, got '-1'"),
        (["--fork-servers", "two"], "expected a whole number from 1 to 64, got 'two'"),
        (["--fork-servers", "65"], "expected a whole number from 1 to 64, got '65'"),
        (["--fork-servers", "2", "--no-fork-server"], "cannot be used with --no-fork-server"),
    ],
)
def test_run_refuses_a_bad_fork_server_count_before_starting_anything(
    tmp_path: Path, argv: list[str], says: str
) -> None:
    state = tmp_path / "state"
    result = CliRunner().invoke(main, ["run", "--app", APP, "--state-dir", str(state), *argv])
    assert result.exit_code == 2, result.output
    assert f"error: --fork-servers: {says}" in result.output
    assert not state.exists()


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"fork_servers": 0}, "fork_servers: must be 1 to 64, got 0"),
        ({"fork_servers": 2.0}, "fork_servers: expected a whole number, got 2.0"),
        ({"fork_servers": True}, "fork_servers: expected a whole number, got True"),
        ({"fork_servers": 2, "fork_server": False}, "fork_servers: has no fork server to count"),
    ],
)
def test_run_options_refuse_a_bad_fork_server_count(
    tmp_path: Path, given: dict[str, object], says: str
) -> None:
    with pytest.raises(DefinitionError) as raised:
        RunOptions(app_spec=APP, state_dir=tmp_path, **given)  # type: ignore[arg-type]
    assert str(raised.value).startswith(says)
    assert raised.value.field == "fork_servers"


def test_run_options_leave_the_default_count_to_the_launcher(tmp_path: Path) -> None:
    assert RunOptions(app_spec=APP, state_dir=tmp_path).fork_servers is None


@pytest.mark.parametrize(("cores", "servers"), [(1, 1), (2, 2), (3, 3), (5, 4), (64, MAX_SERVERS)])
def test_the_default_is_one_server_per_usable_core_at_most_four(
    monkeypatch: pytest.MonkeyPatch, cores: int, servers: int
) -> None:
    # The cores this process may use (its affinity and cgroup quota: tests/test_cpus.py).
    monkeypatch.setattr(forklauncher.cpus, "usable_cores", lambda: cores)
    assert default_server_count() == servers
