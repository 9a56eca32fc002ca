"""``classify_exit``: every way a run can end, as a table (no processes)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

import supervisor
from supervisor.core.records import Outcome
from supervisor.runs.exits import (
    Exit,
    RunEnd,
    StderrTail,
    classify_exit,
    command_failure,
    describe_status,
    without_own_frames,
)
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
SIGABRT = int(signal.SIGABRT)
CORE_DUMPED = 0x80  # the wait status bit

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
        # Before: crashed, "exited with code 4". A program saying it failed is no crash.
        "regression: a command exiting non-zero failed",
        RunEnd(status=exited(4), execd=True, stderr_tail=("oops",)),
        Exit(
            outcome=Outcome.FAILED,
            exit_code=4,
            signal=None,
            error="exit code 4\nlast stderr lines:\noops",
            result=None,
        ),
    ),
    (
        "a command exiting 3 without stderr",
        RunEnd(status=exited(3), execd=True),
        Exit(outcome=Outcome.FAILED, exit_code=3, signal=None, error="exit code 3", result=None),
    ),
    (
        "a command exiting 1 (as a program that could not be exec'd would) without saying so",
        RunEnd(status=exited(1), execd=True),
        Exit(outcome=Outcome.FAILED, exit_code=1, signal=None, error="exit code 1", result=None),
    ),
    (
        "a command killed by a signal crashed",
        RunEnd(status=killed(SIGSEGV), execd=True, stderr_tail=("oops",)),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=None,
            signal=SIGSEGV,
            error="killed by signal SIGSEGV (11)\nlast stderr lines:\noops",
            result=None,
        ),
    ),
    (
        "a command that dumped core crashed",
        RunEnd(status=killed(SIGABRT) | CORE_DUMPED, execd=True),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=None,
            signal=SIGABRT,
            error="killed by signal SIGABRT (6) (core dumped)",
            result=None,
        ),
    ),
    (
        "a command exiting 1 after the OOM killer ended one of its processes crashed",
        RunEnd(status=exited(1), execd=True, oom_killed=True),
        Exit(
            outcome=Outcome.CRASHED,
            exit_code=1,
            signal=None,
            error="exited with code 1; the out-of-memory killer ended one of its processes",
            result=None,
        ),
    ),
    (
        "a command exiting 3 when stopped was cancelled",
        RunEnd(status=exited(3), execd=True, reason="stop"),
        Exit(
            outcome=Outcome.CANCELLED,
            exit_code=3,
            signal=None,
            error="cancelled: the run was stopped",
            result=None,
            cancel_reason="stop",
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


# -- the supervisor's own frames in a fault's stack dump ---------------------------------

OWN = str(Path(supervisor.__file__).parent)
FAULT = (
    "Fatal Python error: Segmentation fault",
    "",
    "Current thread 0x00007f0e21247b80 (most recent call first):",
    '  File "/srv/app/jobs.py", line 55 in parse',
    '  File "/srv/app/jobs.py", line 12 in nightly',
    f'  File "{OWN}/runs/child.py", line 228 in _call',
    f'  File "{OWN}/runs/child.py", line 210 in execute',
    f'  File "{OWN}/runs/forkserver.py", line 579 in main',
    '  File "<string>", line 1 in <module>',
    "",
    "Extension modules: psutil._psutil_linux (total: 1)",
)


def test_a_fault_dump_keeps_the_runners_frames_and_names_ours_in_one_line() -> None:
    # Before: eleven frames of child.py and forkserver.py filled the crash's error.
    assert without_own_frames(FAULT) == [
        *FAULT[:5],
        "  [4 frames of sched-supervisor hidden]",
        "",
        "Extension modules: psutil._psutil_linux (total: 1)",
    ]


def test_a_crash_error_hides_our_frames_of_the_stderr_tail() -> None:
    exit_ = classify_exit(RunEnd(status=killed(SIGSEGV), stderr_tail=FAULT))
    assert exit_.error is not None
    assert OWN not in exit_.error
    assert '  File "/srv/app/jobs.py", line 12 in nightly' in exit_.error.splitlines()


def test_traceback_frames_of_ours_go_with_their_source_lines_and_others_stay() -> None:
    lines = [
        "Traceback (most recent call last):",
        '  File "/srv/app/jobs.py", line 3, in nightly',
        "    ctx.sleep(pause)",
        f'  File "{OWN}/runs/context.py", line 155, in sleep',
        "    time.sleep(max(0.0, seconds))",
        "               ^^^^^^^^^^^^^^^^^",
        "TypeError: '>' not supported",
        '  File "<string>", line 1 in <module>',  # not beside our frames: kept
        f'  File "{OWN}-fork/x.py", line 1 in f',  # a directory that only starts alike
    ]
    assert without_own_frames(lines) == [
        *lines[:3],
        "  [1 frame of sched-supervisor hidden]",
        *lines[6:],
    ]


def test_the_tail_leaves_our_frames_out_as_they_come_so_they_push_nothing_out() -> None:
    tail = StderrTail(5)
    tail.extend(list(FAULT[:5]))
    for line in FAULT[5:9]:  # our frames and the entry frame, one by one
        tail.append(line)
    tail.extend(list(FAULT[9:]))
    assert tail.lines() == (
        '  File "/srv/app/jobs.py", line 55 in parse',
        '  File "/srv/app/jobs.py", line 12 in nightly',
        "  [4 frames of sched-supervisor hidden]",
        "",
        "Extension modules: psutil._psutil_linux (total: 1)",
    )
    plain = StderrTail(2)
    plain.extend(["a", "b", "c"])
    assert plain.lines() == ("b", "c") and len(plain) == 2


def test_a_command_failure_reads_exit_code() -> None:
    assert command_failure(3) == "exit code 3"
