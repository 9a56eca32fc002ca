"""Tests for tests/commands.py: what tests start begins with default signal dispositions,
also when the test run itself was started with SIGHUP ignored (``nohup``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.commands import ROOT, command, supervisor

# Prints the SigIgn mask of a program started the plain way and of one started through
# command(): run under nohup, the plain one inherits the ignored SIGHUP.
PROBE = """\
import subprocess, sys
from tests.commands import command
status = ["grep", "^SigIgn:", "/proc/self/status"]
for argv in (status, command(status)):
    print(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[1])
"""
HUP_BIT = 1 << (signal.SIGHUP - 1)


def nohup(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """``argv`` under ``nohup`` (SIGHUP ignored), output captured."""
    return subprocess.run(
        ["nohup", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def test_commands_start_with_sighup_at_its_default_under_nohup() -> None:
    result = nohup([sys.executable, "-c", PROBE], timeout=60)
    assert result.returncode == 0, result.stderr
    inherited, reset = (int(mask, 16) for mask in result.stdout.split())
    assert inherited & HUP_BIT, "nohup should have ignored SIGHUP (the control)"
    assert not reset & HUP_BIT
    assert reset == 0


def test_the_supervisor_command_keeps_its_pid_and_arguments() -> None:
    assert supervisor("list") == command([sys.executable, "-m", "supervisor", "list"])
    probe = command([sys.executable, "-c", "import os; print(os.getpid())"])
    with subprocess.Popen(probe, stdout=subprocess.PIPE, text=True, cwd=ROOT) as process:
        printed, _ = process.communicate(timeout=60)
    assert int(printed) == process.pid  # env execs: same process
    done = subprocess.run(
        supervisor("--version"), capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("supervisor, version")


def test_a_test_that_runs_the_manager_passes_under_nohup() -> None:
    # The CLI tests start a manager and run schedulers through it: under an ignored
    # SIGHUP they must behave as in a terminal.
    test = "tests/test_cli.py::test_execute_runs_and_logs_round_trip"
    result = nohup(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], timeout=240
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
