"""``status``, ``list`` and the operator's comforts against a real manager process: the
full error and the log tail, "running for … (pid …)", zones on every time, ``--failed``,
did-you-mean, shell completion of IDs, and colours only on a terminal (a real pty)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from supervisor.cli.main import main
from supervisor.core.definitions import Kind, Options
from supervisor.core.records import Outcome, State
from supervisor.manager import machine
from tests.commands import supervisor
from tests.manager_process import ROOT, cli, run_to_its_end, running_manager
from tests.waiting import wait_for

APP = "tests.apps.cli_jobs:cfg"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("cli-status") / "state"
    with running_manager(state, APP):
        run_to_its_end(state, "c.report")  # (it fails)
        yield state


def status_json(state: Path, scheduler_id: str) -> Any:
    return json.loads(cli(state, "status", scheduler_id, "--json"))


def run_cli(
    state: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        supervisor(*args, "--state-dir", str(state)),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_status_shows_the_whole_error_and_the_last_ten_log_lines(state_dir: Path) -> None:
    shown = cli(state_dir, "status", "c.report")
    # Every line of the error, each indented under the value (before: its first line only).
    assert (
        "last error:     RuntimeError: the report server is down\n"
        "                second line of the reason\n"
        "                Traceback (most recent call last):\n"
    ) in shown
    assert "schedule:       manual: only when triggered" in shown
    assert re.search(r"^since: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(\d+ \w+ ago\)$", shown, re.M)
    tail = shown.split("\n\n", 1)[1]
    records = [line for line in tail.splitlines() if not line.startswith("    ")]
    assert len(records) == 10
    assert [r.split("] ", 1)[1] for r in records[:9]] == [f"line {n}" for n in range(6, 15)]
    assert "ERROR    [logger] run failed: RuntimeError" in records[9]
    # A record logged without fields shows none (it used to show a field "fields").
    assert all('fields="' not in r for r in records)


def test_a_running_scheduler_says_for_how_long_and_its_pid(state_dir: Path) -> None:
    run_id = json.loads(cli(state_dir, "execute", "c.hang", "--json"))["run_id"]
    try:
        status = wait_for(
            lambda: (s := status_json(state_dir, "c.hang"))["current_pid"] and s,
            timeout=30,
            what="the run's process",
        )
        assert status["state"] == "running"
        assert status["current_run_id"] == run_id
        pid = status["current_pid"]
        os.kill(pid, 0)  # a live process
        assert status["state_since"] is not None
        shown = cli(state_dir, "status", "c.hang")
        assert re.search(rf"^state: +running for \d+ s \(pid {pid}, run {run_id}\)$", shown, re.M)
        assert "hanging" in shown.split("\n\n", 1)[1]  # its log so far
    finally:
        cli(state_dir, "stop", "c.hang")
        wait_for(
            lambda: status_json(state_dir, "c.hang")["state"] == "stopped",
            timeout=30,
            what="the stop",
        )
    assert status_json(state_dir, "c.hang")["current_pid"] is None
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what="the run's process to end")


def test_every_time_carries_its_zone_and_cron_shows_its_own(state_dir: Path) -> None:
    berlin = run_cli(state_dir, "status", "c.nightly", env={"TZ": "Europe/Berlin"})
    assert berlin.returncode == 0, berlin.stderr
    assert "schedule:       cron 30 2 * * * (America/New_York)" in berlin.stdout
    next_line = next(x for x in berlin.stdout.splitlines() if x.startswith("next planned:"))
    assert re.fullmatch(
        r"next planned: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T \(in .+, "
        r"\d{4}-\d\d-\d\d 02:30:00 E[SD]T in America/New_York\)",
        next_line,
    ), next_line
    utc = run_cli(state_dir, "--utc", "status", "c.nightly", env={"TZ": "Europe/Berlin"})
    assert "CET" not in utc.stdout.replace("in America/New_York", "")
    assert re.search(r"^next planned: +\S+ \d\d:30:00 UTC ", utc.stdout, re.M)
    # The option also works after the command, on runs and list too.
    runs = run_cli(state_dir, "runs", "c.report", "--utc", env={"TZ": "Asia/Kolkata"})
    assert re.search(r"\d\d:\d\d:\d\d UTC  \d{4}", runs.stdout), runs.stdout
    local = run_cli(state_dir, "runs", "c.report", env={"TZ": "Asia/Kolkata"})
    assert " IST " in local.stdout and " UTC " not in local.stdout


def test_list_has_an_error_column_and_a_failed_filter(state_dir: Path) -> None:
    listed = cli(state_dir, "list").splitlines()
    assert listed[0].split()[-1] == "ERROR"
    report = next(line for line in listed if line.startswith("c.report "))
    assert report.endswith("RuntimeError: the report server is down")  # its first line
    quiet = next(line for line in listed if line.startswith("c.quiet "))
    assert quiet.endswith(" -")
    failed = cli(state_dir, "list", "--failed").splitlines()
    assert [line.split()[0] for line in failed[1:]] == ["c.report"]
    as_json = json.loads(cli(state_dir, "list", "--failed", "--json"))
    assert [s["id"] for s in as_json] == ["c.report"]


@pytest.mark.parametrize(
    "args",
    [
        ["status", "c.reprt"],
        ["runs", "c.reprt"],
        ["logs", "c.reprt"],
        ["execute", "c.reprt"],
        ["start", "c.reprt"],
        ["settings", "c.reprt"],
        ["action", "c.reprt", "x"],
    ],
)
def test_unknown_ids_get_a_did_you_mean(state_dir: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, [*args, "--state-dir", str(state_dir)])
    assert result.exit_code == 3
    assert result.output == "error: no scheduler with id 'c.reprt' (did you mean c.report?)\n"


def test_an_id_like_none_gets_no_suggestion(state_dir: Path) -> None:
    result = CliRunner().invoke(main, ["status", "zzz", "--state-dir", str(state_dir)])
    assert result.exit_code == 3
    assert result.output == "error: no scheduler with id 'zzz'\n"


def complete(state: Path, words: str, env_extra: dict[str, str] | None = None) -> list[str]:
    script = "from supervisor.cli.main import main; main(prog_name='supervisor')"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "_SUPERVISOR_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
            **(env_extra or {}),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_shell_completion_offers_the_managers_ids(state_dir: Path) -> None:
    found = complete(state_dir, f"supervisor status --state-dir {state_dir} c.")
    assert found == ["plain,c.report", "plain,c.hang", "plain,c.quiet", "plain,c.nightly"]
    assert complete(state_dir, f"supervisor runs --state-dir {state_dir} c.n") == [
        "plain,c.nightly"
    ]
    # Every command taking an ID, also those defined elsewhere (stop).
    assert complete(state_dir, f"supervisor stop --state-dir {state_dir} c.h") == ["plain,c.hang"]
    source = subprocess.run(
        [
            sys.executable,
            "-c",
            "from supervisor.cli.main import main; main(prog_name='supervisor')",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "_SUPERVISOR_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "complete -o nosort -F _supervisor_completion supervisor" in source.stdout


def on_a_pty(state: Path, *args: str, env: dict[str, str], columns: int = 200) -> str:
    """``supervisor ARGS`` with a real terminal (of ``columns``) as its standard output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    process = subprocess.Popen(
        supervisor(*args, "--state-dir", str(state)),
        cwd=ROOT,
        env={**environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", **env},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 30)
            if not ready:
                raise AssertionError("no output from the command on the pty")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        assert process.wait(30) == 0
        assert process.stderr is not None
        process.stderr.close()
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_colours_only_on_a_terminal_and_never_with_no_color(state_dir: Path) -> None:
    coloured = on_a_pty(state_dir, "list", env={})
    assert "\x1b[1;31mfailed\x1b[0m" in coloured
    assert ANSI.sub("", coloured).splitlines()[0].startswith("ID ")
    assert "\x1b[" not in on_a_pty(state_dir, "list", env={"NO_COLOR": "1"})
    assert "\x1b[" not in on_a_pty(state_dir, "list", "--no-color", env={})
    assert "\x1b[" not in on_a_pty(state_dir, "--no-color", "status", "c.report", env={})
    assert "\x1b[" in on_a_pty(state_dir, "list", env={"NO_COLOR": ""})  # empty: not set
    status = on_a_pty(state_dir, "status", "c.report", env={})
    assert "last outcome:   \x1b[1;31mfailed\x1b[0m" in status
    error_line = next(x for x in status.splitlines() if "ERROR    [logger] run failed" in x)
    assert error_line.startswith("\x1b[1;31m")
    piped = run_cli(state_dir, "list")
    assert piped.returncode == 0 and "\x1b[" not in piped.stdout


def test_a_terminal_gets_lines_that_fit_its_width(state_dir: Path) -> None:
    narrow = ANSI.sub("", on_a_pty(state_dir, "list", env={}, columns=80))
    lines = narrow.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("c.report ") and line.endswith("…") for line in lines)
    piped = run_cli(state_dir, "list").stdout  # a pipe is not cut
    assert max(len(line) for line in piped.splitlines()) > 80


def test_status_and_list_import_no_heavy_library(state_dir: Path) -> None:
    # croniter and dateutil alone were ~45 ms of a 150 ms `supervisor list`.
    for args in (["list"], ["status", "c.nightly"], ["list", "--failed"]):
        result = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "supervisor",
                *args,
                "--state-dir",
                str(state_dir),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        modules = {
            line.rsplit("|", 1)[1].strip()
            for line in result.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2
        }
        imported = {name.split(".")[0] for name in modules}
        assert "supervisor" in imported and "click" in imported  # the import list is real
        assert not imported & {"croniter", "dateutil", "jinja2", "bottle", "sqlite3"}, args
        # Nor the definition API (the package imports it when first used), nor archives.
        unwanted = {"supervisor.cfgscheduler", "supervisor.runs.context", "logging", "shutil"}
        assert not modules & unwanted, args


def test_the_status_knows_since_when_and_the_runs_pid() -> None:
    # What `status` reads from the manager's pure core: set when the state changes only.
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def at(seconds: float) -> machine.Now:
        return machine.Now(mono=1000.0 + seconds, wall=t0 + timedelta(seconds=seconds))

    manual = Options(id="s", name="S", kind=Kind.MANUAL, runner=lambda ctx: None)
    slot, _ = machine.open_slot(manual, manual.defaults, at(0))
    assert machine.status_of(slot).state_since == t0
    slot, _ = machine.step(slot, machine.Acted(actor="olga"), at(5))
    assert machine.status_of(slot).state_since == t0  # no change of state
    slot, _ = machine.step(slot, machine.Execute(actor="olga", run_id="r1"), at(10))
    slot, _ = machine.step(slot, machine.RunStarted(run_id="r1", pid=4711, create_time=1.0), at(11))
    status = machine.status_of(slot)
    assert (status.state, status.current_pid) == (State.RUNNING, 4711)
    assert status.state_since == t0 + timedelta(seconds=10)
    assert slot.run is not None
    ended = machine.RunEnded(
        finished=replace(slot.run, ended_at=at(20).wall, outcome=Outcome.SUCCEEDED)
    )
    slot, _ = machine.step(slot, ended, at(20))
    status = machine.status_of(slot)
    assert (status.state, status.current_pid) == (State.PAUSED, None)
    assert status.state_since == t0 + timedelta(seconds=20)


def test_next_runs_of_an_unknown_id_suggests_too(state_dir: Path) -> None:
    result = CliRunner().invoke(
        main, ["next-runs", "c.nighty", "--app", APP, "--state-dir", str(state_dir)]
    )
    assert result.exit_code == 3
    assert result.output == "error: no scheduler with id 'c.nighty' (did you mean c.nightly?)\n"
