"""``supervisor exec``: one run in the foreground, its exit status, and where records go.

Each test runs the real command in a child process. Outside systemd the records are JSON
lines on stderr; with ``--log-to journal`` they go to a fake journald (a datagram socket
in tmp_path) and stdout/stderr to fake journal streams, so the bytes can be checked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.core.definitions import Kind
from supervisor.core.records import Outcome, Trigger
from supervisor.systemd.execone import (
    EXIT_CANCELLED,
    EXIT_CRASHED,
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    EXIT_TIMED_OUT,
    choose_trigger,
    outcome_of_exit_code,
)
from tests.test_journal import parse_native
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
APP = "tests.apps.systemd_jobs:cfg"


# The ``exec`` command on its own (``supervisor exec`` once registered in the main group).
EXEC = "from supervisor.cli.systemd import exec_command; exec_command(prog_name='supervisor exec')"


def exec_argv(*args: str) -> list[str]:
    return [PYTHON, "-c", EXEC, "--app", APP, *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("INVOCATION_ID", "TRIGGER_UNIT", "TRIGGER_TIMER_REALTIME_USEC")
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_exec(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        exec_argv(*args),
        capture_output=True,
        text=True,
        env=env or clean_env(),
        cwd=REPO,
        timeout=timeout,
    )


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# -- pure parts -----------------------------------------------------------------------------


def test_exit_codes_are_distinct_and_read_back() -> None:
    codes = [EXIT_SUCCEEDED, EXIT_FAILED, EXIT_CRASHED, EXIT_TIMED_OUT, EXIT_CANCELLED]
    assert len(set(codes)) == 5
    assert outcome_of_exit_code(0) is Outcome.SUCCEEDED
    assert outcome_of_exit_code(1) is Outcome.FAILED
    assert outcome_of_exit_code(124) is Outcome.TIMED_OUT
    assert outcome_of_exit_code(143) is Outcome.CANCELLED
    assert outcome_of_exit_code(70) is Outcome.CRASHED
    assert outcome_of_exit_code(3) is Outcome.CRASHED


def test_the_trigger_comes_from_the_kind_and_systemds_environment() -> None:
    timer = {"INVOCATION_ID": "x", "TRIGGER_UNIT": "a.timer"}
    assert choose_trigger(Kind.CRON, {}) is Trigger.CRON
    assert choose_trigger(Kind.ONE_SHOT, {}) is Trigger.START
    assert choose_trigger(Kind.SCHEDULE, timer) is Trigger.SCHEDULE
    assert choose_trigger(Kind.SCHEDULE, {"INVOCATION_ID": "x"}) is Trigger.MANUAL
    assert choose_trigger(Kind.MANUAL, timer) is Trigger.MANUAL


# -- outside systemd: JSON lines on stderr -----------------------------------------------


def test_a_successful_run_exits_0_and_prints_its_records() -> None:
    done = run_exec("sd.tick")
    assert done.returncode == EXIT_SUCCEEDED, done.stderr
    assert "plain stdout line" in done.stdout
    records = json_lines(done.stderr)
    tick = next(r for r in records if r["message"] == "tick")
    assert tick["fields"] == {
        "n": 42,
        "who": "world",
        "note": "first line\nsecond line",
        "nested": {"a": [1, 2]},
        "entered": tick["fields"]["entered"],  # type: ignore[index]
    }
    assert tick["scheduler_id"] == "sd.tick" and tick["source"] == "logger"
    stdlib = next(r for r in records if r["message"] == "from stdlib logging")
    assert stdlib["level"] == "warning"
    assert stdlib["fields"] == {"colour": "blue", "logger": "sd.stdlib"}
    assert len({r["run_id"] for r in records}) == 1


def test_a_failing_runner_exits_1_with_its_error() -> None:
    done = run_exec("sd.fail", "--run-id", "fixed-run-1")
    assert done.returncode == EXIT_FAILED
    (record,) = json_lines(done.stderr)
    assert record["message"] == "run failed: nothing to do today"
    assert record["level"] == "error" and record["run_id"] == "fixed-run-1"


def test_an_unknown_scheduler_fails_with_a_record_saying_so() -> None:
    done = run_exec("sd.nope")
    assert done.returncode == EXIT_FAILED
    (record,) = json_lines(done.stderr)
    assert "no scheduler with id 'sd.nope'" in str(record["message"])


def test_sigterm_cancels_the_run_and_exits_143(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    with subprocess.Popen(
        exec_argv("sd.manual"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(SD_TEST_HOLD_FILE=str(hold)),
        cwd=REPO,
    ) as process:
        assert process.stderr is not None
        first = process.stderr.readline()  # the runner's first record: it is running
        assert json.loads(first)["message"] == "manual run"
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        assert process.wait(30) == EXIT_CANCELLED
    messages = [r["message"] for r in json_lines(rest)]
    assert "stopping early" in messages
    assert "run ended on cancel: the run was stopped" in messages  # a WARNING, not an ERROR


def test_the_timeout_cancels_the_run_and_exits_124(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    started = time.monotonic()
    done = run_exec("sd.manual", "--timeout", "1s", env=clean_env(SD_TEST_HOLD_FILE=str(hold)))
    assert done.returncode == EXIT_TIMED_OUT
    assert time.monotonic() - started < 30
    warning = next(r for r in json_lines(done.stderr) if r["message"] == "stopping early")
    assert warning["fields"] == {"reason": "the run timed out"}


def test_a_bad_run_id_is_a_usage_error() -> None:
    done = run_exec("sd.tick", "--run-id", "no spaces")
    assert done.returncode == 2
    assert "--run-id" in done.stderr


def test_a_command_runner_becomes_the_program() -> None:
    done = run_exec("sd.command")
    assert done.returncode == 3
    assert done.stdout == "from-command\n"


# -- under systemd: the native protocol and journal streams ------------------------------


class FakeStreams:
    """A journal stdout socket: collects what each connection sends, header included."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.received: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        for _ in range(2):
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._read, args=(connection,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, connection: socket.socket) -> None:
        chunks = []
        with connection:
            while data := connection.recv(65536):
                chunks.append(data)
        self.received.append(b"".join(chunks))

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[tuple[socket.socket, FakeStreams]]:
    datagrams = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagrams.bind(str(tmp_path / "socket"))
    streams = FakeStreams(tmp_path / "stdout")
    yield datagrams, streams
    datagrams.close()
    streams.close()


def drain(datagrams: socket.socket) -> list[dict[str, bytes]]:
    datagrams.setblocking(False)
    out = []
    while True:
        try:
            out.append(parse_native(datagrams.recv(1 << 22)))
        except BlockingIOError:
            return out


def test_under_systemd_records_go_to_journald_with_the_invocation_as_run_id(
    tmp_path: Path, journald: tuple[socket.socket, FakeStreams]
) -> None:
    datagrams, streams = journald
    env = clean_env(
        INVOCATION_ID="0123456789abcdef0123456789abcdef",
        TRIGGER_UNIT="sd-tick.timer",
        TRIGGER_TIMER_REALTIME_USEC=str(round(time.time() * 1e6)),
    )
    done = run_exec(
        "sd.tick",
        "--journal-socket",
        str(tmp_path / "socket"),
        "--journal-stream-socket",
        str(tmp_path / "stdout"),
        env=env,
    )
    assert done.returncode == EXIT_SUCCEEDED, done.stderr
    assert done.stdout == "" and done.stderr == ""
    entries = drain(datagrams)
    assert all(e["SCHEDULER_ID"] == b"sd.tick" for e in entries)
    assert all(e["RUN_ID"] == b"0123456789abcdef0123456789abcdef" for e in entries)
    start, tick, stdlib, end = entries
    assert start["SUPERVISOR_EVENT"] == b"run_start"
    assert start["SUPERVISOR_TRIGGER"] == b"schedule"
    assert tick["MESSAGE"] == b"tick" and tick["PRIORITY"] == b"6"
    assert tick["F_NOTE"] == b"first line\nsecond line"
    assert tick["F_N"] == b"42"
    assert stdlib["PRIORITY"] == b"4" and stdlib["F_COLOUR"] == b"blue"
    assert end["SUPERVISOR_EVENT"] == b"run_end"
    assert end["SUPERVISOR_OUTCOME"] == b"succeeded"
    wait_for(lambda: len(streams.received) == 2, what="both journal streams closed")
    assert sorted(streams.received) == sorted(
        [
            b"sd.tick\n\n6\n0\n0\n0\n0\nplain stdout line\n",
            b"sd.tick\n\n4\n0\n0\n0\n0\nplain stderr line\n",
        ]
    )


def test_a_failed_run_ends_with_a_run_end_event_naming_the_error(
    tmp_path: Path, journald: tuple[socket.socket, FakeStreams]
) -> None:
    datagrams, _ = journald
    done = run_exec(
        "sd.fail",
        "--log-to",
        "journal",
        "--journal-socket",
        str(tmp_path / "socket"),
        "--journal-stream-socket",
        str(tmp_path / "stdout"),
        env=clean_env(INVOCATION_ID="feedfeedfeedfeedfeedfeedfeedfeed"),
    )
    assert done.returncode == EXIT_FAILED
    start, error, end = drain(datagrams)
    assert start["SUPERVISOR_TRIGGER"] == b"manual"
    assert error["PRIORITY"] == b"3"
    assert end["SUPERVISOR_OUTCOME"] == b"failed"
    assert end["SUPERVISOR_ERROR"] == b"nothing to do today"
