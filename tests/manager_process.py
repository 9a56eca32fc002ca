"""A real manager (``supervisor run --no-admin``) in its own process for CLI tests, one
whose stderr is kept in a file for fault tests, and the CLI invoked against it through
click's runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from click.testing import CliRunner

from supervisor.cli.main import main
from tests.commands import supervisor
from tests.waiting import end_process, wait_for

ROOT = Path(__file__).resolve().parent.parent


def fork_servers_of(pid: int) -> list[psutil.Process]:
    """The manager's fork servers: its children running ``supervisor.runs.forkserver``."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if any("forkserver" in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


class LoggedManager:
    """``command`` (a ``supervisor run`` on ``state``) whose stderr goes to ``log``, read
    while it runs; started once its control socket is there."""

    def __init__(self, command: list[str], state: Path, log: Path) -> None:
        self.log_path = log
        with log.open("w") as sink:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        wait_for(
            lambda: (state / "control.sock").exists() or self.process.poll() is not None,
            timeout=30,
            what="the manager",
        )
        assert self.process.poll() is None, self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """A graceful shutdown, which must end with exit code 0."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0, self.log()

    def close(self) -> None:
        """Killed, also when stopped (SIGSTOP) by the test."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=30)


@contextmanager
def running_manager(state: Path, app: str, *, check_exit: bool = True) -> Iterator[Path]:
    """Run a manager of ``app`` on ``state`` until the block ends, then SIGTERM it and
    wait; with ``check_exit`` its exit status must be 0 (its stderr is in the message)."""
    process = subprocess.Popen(
        supervisor(
            "run", "--app", app, "--state-dir", str(state), "--no-admin", "--grace", "500ms"
        ),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: (state / "control.sock").exists(), timeout=30, what="the manager")
        yield state
    finally:
        stderr = end_process(process)
        if check_exit:
            assert process.returncode == 0, stderr.decode(errors="replace")


def cli(state: Path, *args: str, code: int = 0) -> str:
    """``supervisor ARGS --state-dir STATE``'s output; its exit status must be ``code``."""
    result = CliRunner().invoke(main, [*args, "--state-dir", str(state)])
    assert result.exit_code == code, result.output
    return result.output


def run_to_its_end(state: Path, scheduler_id: str, *, timeout: float = 30) -> str:
    """Execute ``scheduler_id`` on the manager of ``state`` and wait until its run has an
    outcome; the run's ID."""
    run_id: str = json.loads(cli(state, "execute", scheduler_id, "--json"))["run_id"]
    wait_for(
        lambda: any(
            r["run_id"] == run_id and r["outcome"]
            for r in json.loads(cli(state, "runs", scheduler_id, "--json"))
        ),
        timeout=timeout,
        what=f"the end of run {run_id} of {scheduler_id}",
    )
    return run_id
