"""A run's own process never fails for the supervisor's reasons: odd exceptions, odd exit
codes and unloggable values, through the real child entry point (both launchers).

The schedulers are in ``tests/apps/misbehave.py``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from supervisor.core.records import Level, LogRecord, Outcome, Source
from supervisor.runs.child import ForkedLogging, Job, exit_status, failure, summary
from supervisor.runs.context import UNREPRESENTABLE
from supervisor.runs.launcher import Exit, Launcher
from supervisor.runs.wire import decode
from tests.launching import Collector


def run(
    launcher: Launcher, scheduler_id: str, *, cgroup: str | None = None
) -> tuple[Exit, Collector]:
    sink = Collector()
    job = Job(
        scheduler_id=scheduler_id,
        run_id=uuid.uuid4().hex[:16],
        trigger="manual",
        cgroup=cgroup,
    )
    process = launcher.spawn(job)
    exit_ = process.supervise(sink=sink, timeout=30.0, cancel=threading.Event(), grace=5.0)
    return exit_, sink


# -- stdlib logging ----------------------------------------------------------------------


def test_stdlib_logging_from_many_threads_arrives_whole(launcher: Launcher) -> None:
    # The forwarding handler has no lock of its own: the records pipe serializes lines.
    exit_, sink = run(launcher, "threads-logging")
    assert exit_.outcome is Outcome.SUCCEEDED
    lines = [r for r in sink.records if r.message.startswith("thread ")]
    assert sorted(r.message for r in lines) == sorted(
        f"thread {n} line {line}" for n in range(8) for line in range(200)
    )
    assert all(r.fields == {"pad": "x" * 300, "logger": "misbehave"} for r in lines)
    assert not [r for r in sink.records if r.level is Level.ERROR]


def test_forked_logging_built_before_the_fork_forwards_as_install_logging_does() -> None:
    # The fork server builds it once; each run's process only installs it. In a forked
    # process, as there: it changes the root logger for good.
    records_r, records_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            root = logging.getLogger()
            echo = logging.StreamHandler(sys.stderr)
            root.addHandler(echo)
            root.setLevel(logging.WARNING)
            forked = ForkedLogging(records_w)
            before = (root.level, echo in root.handlers)
            forked.install("run-7")
            logging.getLogger("t").info("hello", extra={"k": 1})
            logging.getLogger("t").debug("dropped")
            after = (root.level, echo in root.handlers)
            os.write(report_w, json.dumps([before, after]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(records_w)
    os.close(report_w)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    with os.fdopen(report_r, "rb") as report, os.fdopen(records_r, "rb") as records:
        # Lowered and set aside when built (the run sees both), not when installed.
        assert json.loads(report.read()) == [[logging.INFO, True], [logging.INFO, False]]
        lines = records.read().splitlines()
    assert len(lines) == 1
    record = decode(lines[0], run_id="run-7")
    assert isinstance(record, LogRecord)
    assert (record.message, record.level, record.run_id) == ("hello", Level.INFO, "run-7")
    assert record.fields == {"k": 1, "logger": "t"}


# -- exceptions whose message cannot be made ---------------------------------------------


def test_regression_an_error_whose_str_raises_fails_with_its_type_name(
    launcher: Launcher,
) -> None:
    # Before: crashed, "exited with code 121", and no record at all.
    exit_, sink = run(launcher, "str-raises")
    assert (exit_.outcome, exit_.exit_code, exit_.signal) == (Outcome.FAILED, 1, None)
    assert exit_.error is not None
    first = exit_.error.splitlines()[0]
    assert first == "_Unprintable (its message could not be formatted: str() raised)"
    assert "Traceback (most recent call last):" in exit_.error
    logged = sink.find(f"run failed: {first}")
    assert logged.level is Level.ERROR and "misbehave.py" in logged.fields["traceback"]


def test_a_run_error_whose_str_raises_fails_with_its_type_name(launcher: Launcher) -> None:
    exit_, _ = run(launcher, "run-error-str-raises")
    assert exit_.outcome is Outcome.FAILED
    assert exit_.error == "Unprintable (its message could not be formatted: str() raised)"


# -- sys.exit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheduler_id", "code", "error"),
    [
        ("sys-exit-3", 3, "sys.exit(3) was called"),
        ("sys-exit-text", 1, "the disk is full"),
        ("sys-exit-true", 1, "sys.exit(True) was called"),
        ("sys-exit-huge", 255, f"sys.exit(<an int of {(10**5000).bit_length()} bits>) was called"),
    ],
)
def test_regression_sys_exit_stores_the_code_python_would_exit_with(
    launcher: Launcher, scheduler_id: str, code: int, error: str
) -> None:
    # Before: sys.exit(3) was stored as exit_code 1.
    exit_, sink = run(launcher, scheduler_id)
    assert (exit_.outcome, exit_.exit_code, exit_.signal, exit_.error) == (
        Outcome.FAILED,
        code,
        None,
        error,
    )
    assert sink.find(f"run failed: {error}").level is Level.ERROR


@pytest.mark.parametrize("scheduler_id", ["sys-exit-none", "sys-exit-256"])
def test_sys_exit_with_a_zero_status_succeeds(launcher: Launcher, scheduler_id: str) -> None:
    exit_, sink = run(launcher, scheduler_id)
    assert exit_ == Exit(
        outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None, result=None
    )
    assert not [r for r in sink.records if r.level is Level.ERROR]


def test_exit_status_maps_codes_as_python_does() -> None:
    assert [exit_status(c) for c in (None, 0, 3, 256, -1, True, 2**32 + 3, 2**70)] == [
        0,
        0,
        3,
        0,
        255,
        1,
        3,
        255,
    ]
    assert exit_status("text") == exit_status(3.0) == 1


# -- logging never fails a run -------------------------------------------------------------


def test_regression_unloggable_values_never_fail_the_run(launcher: Launcher) -> None:
    # Before: the 4,301-digit int raised ValueError into the runner: failed, nothing after.
    exit_, sink = run(launcher, "bad-log-values")
    assert exit_.outcome is Outcome.SUCCEEDED, exit_.error
    big = sink.find("big int").fields["n"]
    assert big.startswith(f"{UNREPRESENTABLE} int: ")
    recursive = sink.find("recursive").fields
    assert recursive["value"][0] == 1
    assert recursive["value"][1].startswith(f"{UNREPRESENTABLE} list: it contains itself")
    assert recursive["mapping"]["self"][1].startswith(UNREPRESENTABLE)
    broken = sink.find("broken repr").fields["value"]
    assert broken == f"{UNREPRESENTABLE} _BrokenRepr: repr() raised RuntimeError>"
    assert "over 50000 values" in str(sink.find("shared").fields["value"])
    assert any(
        r.message == f"{UNREPRESENTABLE} message: str() of a _BrokenRepr raised>"
        for r in sink.logger()
    )
    apples = next(r for r in sink.logger() if r.message.startswith("%d apples"))
    assert UNREPRESENTABLE in apples.message and apples.fields["args"] == ["seven"]
    assert sink.find("big extra").fields["n"].startswith(UNREPRESENTABLE)
    assert sink.find("still logging").level is Level.INFO
    assert not [r for r in sink.records if r.source is Source.STDERR]


# -- the pieces ----------------------------------------------------------------------------


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no")


def test_summary_and_failure_never_raise() -> None:
    assert summary(ValueError("x")) == "ValueError: x"
    assert summary(ValueError()) == "ValueError"
    assert summary(_Unprintable()) == (
        "_Unprintable (its message could not be formatted: str() raised)"
    )
    try:
        raise _Unprintable()
    except _Unprintable as error:
        result = failure(error)
    assert result.outcome is Outcome.FAILED and result.status == 1
    assert result.traceback is not None and "_Unprintable" in result.traceback
    assert failure(SystemExit(0)).outcome is Outcome.SUCCEEDED
    assert failure(SystemExit(7)).status == 7


def test_a_run_that_cannot_join_its_cgroup_goes_on_and_says_so(
    launcher: Launcher, tmp_path: Path
) -> None:
    exit_, sink = run(launcher, "first", cgroup=str(tmp_path / "not-a-cgroup"))
    assert exit_.outcome is Outcome.SUCCEEDED
    warning = next(r for r in sink.records if "could not join its cgroup" in r.message)
    assert warning.level is Level.WARNING
    assert warning.fields["cgroup"] == str(tmp_path / "not-a-cgroup")
    assert sink.find("first").level is Level.INFO


def test_job_carries_its_cgroup_through_json() -> None:
    job = Job(
        scheduler_id="s",
        run_id="r1",
        trigger="manual",
        deadline=datetime(2030, 1, 1, tzinfo=UTC),
        cgroup="/sys/fs/cgroup/x/r1",
    )
    assert Job.from_json(job.to_json()) == job
    assert Job.from_json({"scheduler_id": "s", "run_id": "r1", "trigger": "m"}).cgroup is None
    with pytest.raises(ValueError, match="absolute"):
        Job(scheduler_id="s", run_id="r1", trigger="m", cgroup="relative/r1")
