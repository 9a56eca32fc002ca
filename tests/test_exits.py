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
RAISED = RunResult(outcome=Outcome.FAILED, error="ValueError: no", traceback="Traceback...\n")
CANNOT_EXEC = RunResult(outcome=Outcome.FAILED, error="cannot execute 'x': No such file")
TAIL = ("one", "two")
SIGKILL = int(signal.SIGKILL)
SIGTERM = int(signal.SIGTERM)
SIGSEGV = int(signal.SIGSEGV)
SIGABRT = int(signal.SIGABRT)
CORE_DUMPED = 0x80  # the wait status bit

SUCCEEDED, FAILED, CRASHED = Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CRASHED
TIMED_OUT, CANCELLED = Outcome.TIMED_OUT, Outcome.CANCELLED
OOM_ENDED = "the out-of-memory killer ended one of its processes"


def ended(
    outcome: Outcome,
    error: str | None = None,
    *,
    code: int | None = None,
    signal: int | None = None,
    result: str | None = None,
    cancel: str | None = None,
) -> Exit:
    """The ``Exit`` a case expects: every field it does not name is None."""
    return Exit(
        outcome=outcome,
        exit_code=code,
        signal=signal,
        error=error,
        result=result,
        cancel_reason=cancel,
    )


CASES: list[tuple[str, RunEnd, Exit]] = [
    ("runner returned", RunEnd(status=exited(0), result=OK), ended(SUCCEEDED, code=0, result="42")),
    (
        "runner raised",
        RunEnd(status=exited(1), result=RAISED, stderr_tail=TAIL),
        ended(FAILED, "ValueError: no\nTraceback...", code=1),
    ),
    ("command exited 0", RunEnd(status=exited(0), execd=True), ended(SUCCEEDED, code=0)),
    (
        # Before: crashed, "exited with code 4". A program saying it failed is no crash.
        "regression: a command exiting non-zero failed",
        RunEnd(status=exited(4), execd=True, stderr_tail=("oops",)),
        ended(FAILED, "exit code 4\nlast stderr lines:\noops", code=4),
    ),
    (
        "a command exiting 3 without stderr",
        RunEnd(status=exited(3), execd=True),
        ended(FAILED, "exit code 3", code=3),
    ),
    (
        "a command exiting 1 (as a program that could not be exec'd would) without saying so",
        RunEnd(status=exited(1), execd=True),
        ended(FAILED, "exit code 1", code=1),
    ),
    (
        "a command killed by a signal crashed",
        RunEnd(status=killed(SIGSEGV), execd=True, stderr_tail=("oops",)),
        ended(CRASHED, "killed by signal SIGSEGV (11)\nlast stderr lines:\noops", signal=SIGSEGV),
    ),
    (
        "a command that dumped core crashed",
        RunEnd(status=killed(SIGABRT) | CORE_DUMPED, execd=True),
        ended(CRASHED, "killed by signal SIGABRT (6) (core dumped)", signal=SIGABRT),
    ),
    (
        "a command exiting 1 after the OOM killer ended one of its processes crashed",
        RunEnd(status=exited(1), execd=True, oom_killed=True),
        ended(CRASHED, f"exited with code 1; {OOM_ENDED}", code=1),
    ),
    (
        "a command exiting 3 when stopped was cancelled",
        RunEnd(status=exited(3), execd=True, reason="stop"),
        ended(CANCELLED, "cancelled: the run was stopped", code=3, cancel="stop"),
    ),
    (
        "command could not be exec'd",
        RunEnd(status=exited(1), execd=True, result=CANNOT_EXEC),
        ended(FAILED, "cannot execute 'x': No such file", code=1),
    ),
    (
        "os._exit(3)",
        RunEnd(status=exited(3), stderr_tail=TAIL),
        ended(CRASHED, "exited with code 3\nlast stderr lines:\none\ntwo", code=3),
    ),
    (
        "segfault",
        RunEnd(status=killed(SIGSEGV)),
        ended(CRASHED, "killed by signal SIGSEGV (11)", signal=SIGSEGV),
    ),
    (
        "SIGKILL from outside, no cgroup: the OOM killer is not named",
        RunEnd(status=killed(SIGKILL)),
        ended(CRASHED, "killed by signal SIGKILL (9)", signal=SIGKILL),
    ),
    (
        "SIGKILL by the OOM killer, as the cgroup says",
        RunEnd(status=killed(SIGKILL), oom_killed=True),
        ended(CRASHED, "killed by signal SIGKILL (9) by the out-of-memory killer", signal=SIGKILL),
    ),
    (
        "SIGTERM from outside is never the OOM killer",
        RunEnd(status=killed(SIGTERM)),
        ended(CRASHED, "killed by signal SIGTERM (15)", signal=SIGTERM),
    ),
    (
        "a child of the run was OOM-killed, the run exited 1 without a result",
        RunEnd(status=exited(1), oom_killed=True),
        ended(CRASHED, f"exited with code 1; {OOM_ENDED}", code=1),
    ),
    (
        "a command exited 0 although one of its processes was OOM-killed",
        RunEnd(status=exited(0), execd=True, oom_killed=True),
        ended(CRASHED, f"exited with code 0; {OOM_ENDED}", code=0),
    ),
    (
        "reported success, then exited 3",
        RunEnd(status=exited(3), result=OK),
        ended(CRASHED, "exited with code 3 after its runner ended succeeded", code=3),
    ),
    (
        "status lost",
        RunEnd(status=None, status_problem="the run's exit status was lost: x", stderr_tail=TAIL),
        ended(CRASHED, "the run's exit status was lost: x\nlast stderr lines:\none\ntwo"),
    ),
    (
        "timed out, ended when asked",
        RunEnd(status=exited(1), result=RAISED, reason="timeout", timeout=0.3),
        ended(TIMED_OUT, "timed out after 0.3s", code=1, cancel="timeout"),
    ),
    (
        "timed out, had to be killed",
        RunEnd(status=killed(SIGKILL), reason="timeout", timeout=5, escalated=True),
        ended(
            TIMED_OUT,
            "timed out after 5s; it did not end when asked and was killed by signal SIGKILL (9)",
            signal=SIGKILL,
            cancel="timeout",
        ),
    ),
    (
        "stopped",
        RunEnd(status=exited(1), reason="stop"),
        ended(CANCELLED, "cancelled: the run was stopped", code=1, cancel="stop"),
    ),
    (
        "shut down, then it exited by itself after SIGTERM",
        RunEnd(status=exited(0), reason="shutdown", escalated=True),
        ended(
            CANCELLED,
            "cancelled: the supervisor is shutting down; it did not end when asked and "
            "was exited with code 0",
            code=0,
            cancel="shutdown",
        ),
    ),
    (
        "stopped, and the cgroup saw an OOM kill",
        RunEnd(status=killed(SIGKILL), reason="stop", oom_killed=True),
        ended(
            CANCELLED, f"cancelled: the run was stopped; {OOM_ENDED}", signal=SIGKILL, cancel="stop"
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
