"""``classify_exit``: every way a run can end, as a table (no processes)."""

from __future__ import annotations

import signal

import pytest

from supervisor.core.records import Outcome
from supervisor.runs.exits import Exit, RunEnd, classify_exit, describe_status
from supervisor.runs.wire import RunResult


def exited(code: int) -> int:
    return code << 8


def killed(signum: int) -> int:
    return signum


OK = RunResult(outcome=Outcome.SUCCEEDED, value="42")
FAILED = RunResult(outcome=Outcome.FAILED, error="ValueError: no", traceback="Traceback...\n")
CANNOT_EXEC = RunResult(outcome=Outcome.FAILED, error="cannot execute 'x': No such file")
TAIL = ("one", "two")
SIGKILL = int(signal.SIGKILL)
SIGTERM = int(signal.SIGTERM)
SIGSEGV = int(signal.SIGSEGV)

CASES: list[tuple[str, RunEnd, Exit]] = [
    (
        "runner returned",
        RunEnd(status=exited(0), result=OK),
        Exit(outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None, result="42"),
    ),
    (
        "runner raised",
        RunEnd(status=exited(1), result=FAILED, stderr_tail=TAIL),
        Exit(
            outcome=Outcome.FAILED,
            exit_code=1,
            signal=None,
            error="ValueError: no\nTraceback...",
            result=None,
        ),
    ),
    (
        "command exited 0",
        RunEnd(status=exited(0), execd=True),
        Exit(outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None, result=None),
    ),
    (
        "command exited 4",
        RunEnd(status=exited(4), execd=True, stderr_tail=("oops",)),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=4,
            signal=None,
            error="exited with code 4\nlast stderr lines:\noops",
            result=None,
        ),
    ),
    (
        "command could not be exec'd",
        RunEnd(status=exited(1), execd=True, result=CANNOT_EXEC),
        Exit(
            outcome=Outcome.FAILED,
            exit_code=1,
            signal=None,
            error="cannot execute 'x': No such file",
            result=None,
        ),
    ),
    (
        "os._exit(3)",
        RunEnd(status=exited(3), stderr_tail=TAIL),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=3,
            signal=None,
            error="exited with code 3\nlast stderr lines:\none\ntwo",
            result=None,
        ),
    ),
    (
        "segfault",
        RunEnd(status=killed(SIGSEGV)),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=None,
            signal=SIGSEGV,
            error="killed by signal SIGSEGV (11)",
            result=None,
        ),
    ),
    (
        "SIGKILL from outside, no cgroup: the OOM killer is not named",
        RunEnd(status=killed(SIGKILL)),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=None,
            signal=SIGKILL,
            error="killed by signal SIGKILL (9)",
            result=None,
        ),
    ),
    (
        "SIGKILL by the OOM killer, as the cgroup says",
        RunEnd(status=killed(SIGKILL), oom_killed=True),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=None,
            signal=SIGKILL,
            error="killed by signal SIGKILL (9) by the out-of-memory killer",
            result=None,
        ),
    ),
    (
        "SIGTERM from outside is never the OOM killer",
        RunEnd(status=killed(SIGTERM)),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=None,
            signal=SIGTERM,
            error="killed by signal SIGTERM (15)",
            result=None,
        ),
    ),
    (
        "a child of the run was OOM-killed, the run exited 1 without a result",
        RunEnd(status=exited(1), oom_killed=True),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=1,
            signal=None,
            error="exited with code 1; the out-of-memory killer ended one of its processes",
            result=None,
        ),
    ),
    (
        "a command exited 0 although one of its processes was OOM-killed",
        RunEnd(status=exited(0), execd=True, oom_killed=True),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=0,
            signal=None,
            error="exited with code 0; the out-of-memory killer ended one of its processes",
            result=None,
        ),
    ),
    (
        "reported success, then exited 3",
        RunEnd(status=exited(3), result=OK),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=3,
            signal=None,
            error="exited with code 3 after its runner ended succeeded",
            result=None,
        ),
    ),
    (
        "status lost",
        RunEnd(status=None, status_problem="the run's exit status was lost: x", stderr_tail=TAIL),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=None,
            signal=None,
            error="the run's exit status was lost: x\nlast stderr lines:\none\ntwo",
            result=None,
        ),
    ),
    (
        "timed out, ended when asked",
        RunEnd(status=exited(1), result=FAILED, reason="timeout", timeout=0.3),
        Exit(
            outcome=Outcome.TIMED_OUT,
            exit_code=1,
            signal=None,
            error="timed out after 0.3s",
            result=None,
            cancel_reason="timeout",
        ),
    ),
    (
        "timed out, had to be killed",
        RunEnd(status=killed(SIGKILL), reason="timeout", timeout=5, escalated=True),
        Exit(
            outcome=Outcome.TIMED_OUT,
            exit_code=None,
            signal=SIGKILL,
            error="timed out after 5s; it did not end when asked and was killed by signal "
            "SIGKILL (9)",
            result=None,
            cancel_reason="timeout",
        ),
    ),
    (
        "stopped",
        RunEnd(status=exited(1), reason="stop"),
        Exit(
            outcome=Outcome.CANCELLED,
            exit_code=1,
            signal=None,
            error="cancelled: the run was stopped",
            result=None,
            cancel_reason="stop",
        ),
    ),
    (
        "shut down, then it exited by itself after SIGTERM",
        RunEnd(status=exited(0), reason="shutdown", escalated=True),
        Exit(
            outcome=Outcome.CANCELLED,
            exit_code=0,
            signal=None,
            error="cancelled: the supervisor is shutting down; it did not end when asked and "
            "was exited with code 0",
            result=None,
            cancel_reason="shutdown",
        ),
    ),
    (
        "stopped, and the cgroup saw an OOM kill",
        RunEnd(status=killed(SIGKILL), reason="stop", oom_killed=True),
        Exit(
            outcome=Outcome.CANCELLED,
            exit_code=None,
            signal=SIGKILL,
            error="cancelled: the run was stopped; the out-of-memory killer ended one of its "
            "processes",
            result=None,
            cancel_reason="stop",
        ),
    ),
]


@pytest.mark.parametrize(("end", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classify_exit(end: RunEnd, expected: Exit) -> None:
    assert classify_exit(end) == expected


def test_describe_status() -> None:
    assert describe_status(None) == (None, None)
    assert describe_status(exited(7)) == (7, None)
    assert describe_status(killed(SIGSEGV) | 0x80) == (None, SIGSEGV)  # with a core dump
