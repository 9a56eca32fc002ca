"""How a run ended, told from what its supervision saw: ``classify_exit(RunEnd) -> Exit``.

A pure function, so every combination is table-tested without processes: the wait
status of the run's main process, the result its runner reported on the records pipe,
whether it became a program (``exec``), why it was asked to end and whether it had to be
forced, its last stderr lines, and whether its cgroup saw an out-of-memory kill. The OOM
killer is named only when the cgroup says so; without a cgroup it never is.

May import ``records``, ``wire``, ``context``, ``escalation``, ``child`` (its exit codes)
and the stdlib.
"""

from __future__ import annotations

import collections
import os
import re
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from supervisor.core.records import Outcome
from supervisor.runs.child import EXIT_FAILED, EXIT_SUCCEEDED, hidden_frames_line, is_own_file
from supervisor.runs.context import CANCEL_MESSAGES
from supervisor.runs.escalation import TIMEOUT_REASON
from supervisor.runs.wire import RunResult

STDERR_TAIL_LINES: Final = 20
_TAIL_LINE: Final = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class Exit:
    """How a run ended. ``cancel_reason``: ``stop``/``shutdown``/``timeout`` or None.

    - SUCCEEDED: the runner returned (exit 0), or a command exited 0; ``result`` is a
      custom action's return value as text.
    - FAILED: the runner raised; ``error`` is ``"Type: message"``, a newline and the
      traceback (just the message for ``RunError``); or a command could not be exec'd;
      or a command exited non-zero: ``"exit code 3"`` and its last stderr lines.
    - CRASHED: any other end: ``"killed by signal SIGSEGV (11)"`` (``" (core dumped)"``
      added when the wait status says so), a Python runner's process ``"exited with
      code 3"`` (``os._exit``), ``"the run's exit status was lost"``, followed by
      ``"\\nlast stderr lines:\\n..."`` (up to 20, with the supervisor's own frames of
      a fault's stack dump left out).
    - TIMED_OUT: ``"timed out after 5s"``; CANCELLED: ``"cancelled: the run was
      stopped"`` (or ``... the supervisor is shutting down``); either followed by ``";
      it did not end when asked and was killed by signal SIGKILL (9)"`` if it had to be.
    """

    outcome: Outcome
    exit_code: int | None
    signal: int | None
    error: str | None
    result: str | None
    cancel_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnd:
    """What the supervision of one run saw, up to its end."""

    status: int | None  # the main process's raw wait status; None if it was lost
    status_problem: str | None = None  # why it was lost
    result: RunResult | None = None  # the runner's own report
    execd: bool = False  # it became an external program
    reason: str | None = None  # why it was asked to end (timeout, stop, shutdown)
    escalated: bool = False  # it did not end when asked (signals were needed)
    timeout: float | None = None
    stderr_tail: tuple[str, ...] = ()
    oom_killed: bool = False  # its cgroup says the OOM killer ended one of its processes


def classify_exit(end: RunEnd) -> Exit:
    """The ``Exit`` of a run that ended as ``end`` says."""
    code, signum = describe_status(end.status)
    result = end.result
    if end.reason is not None:
        if end.reason == TIMEOUT_REASON:
            error = f"timed out after {end.timeout:g}s"
            outcome = Outcome.TIMED_OUT
        else:
            error = f"cancelled: {CANCEL_MESSAGES.get(end.reason, end.reason)}"
            outcome = Outcome.CANCELLED
        if end.escalated:
            error += f"; it did not end when asked and was {_ending(code, signum, False)}"
        if end.oom_killed:
            error += f"; {_OOM_SOMEWHERE}"
        return Exit(
            outcome=outcome,
            exit_code=code,
            signal=signum,
            error=error,
            result=None,
            cancel_reason=end.reason,
        )
    if end.status is None:
        problem = end.status_problem or "the run's exit status was lost"
        if end.oom_killed:
            problem += f"; {_OOM_SOMEWHERE}"
        return _crash(None, None, problem, end)
    if not end.execd and result is not None:
        if result.outcome is Outcome.SUCCEEDED and code == EXIT_SUCCEEDED:
            return Exit(
                outcome=Outcome.SUCCEEDED,
                exit_code=code,
                signal=None,
                error=None,
                result=result.value,
            )
        if result.outcome is Outcome.FAILED and code == result.status:
            error = result.error or "failed"
            if result.traceback:
                error += "\n" + result.traceback.rstrip("\n")
            return Exit(
                outcome=Outcome.FAILED, exit_code=code, signal=None, error=error, result=None
            )
    elif end.execd and result is not None and code == EXIT_FAILED:
        # The program could not be exec'd.
        return Exit(
            outcome=Outcome.FAILED, exit_code=code, signal=None, error=result.error, result=None
        )
    if end.execd and code is not None and code != 0 and not end.oom_killed:
        # A program saying it failed, the way programs do.
        return Exit(
            outcome=Outcome.FAILED,
            exit_code=code,
            signal=None,
            error=command_failure(code) + _tail(end.stderr_tail),
            result=None,
        )
    if code == 0 and (end.execd or result is None) and not end.oom_killed:
        return Exit(outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None, result=None)
    error = _ending(code, signum, end.oom_killed)
    if signum is not None and end.status is not None and os.WCOREDUMP(end.status):
        error += " (core dumped)"
    if result is not None and not end.execd:
        error += f" after its runner ended {result.outcome.value}"
    return _crash(code, signum, error, end)


_OOM_SOMEWHERE: Final = "the out-of-memory killer ended one of its processes"


def command_failure(code: int) -> str:
    """The error of a command that exited with ``code`` (not 0): ``"exit code 3"``.

    The systemd mode names a command's failure with it too, so both modes agree."""
    return f"exit code {code}"


def _crash(code: int | None, signum: int | None, error: str, end: RunEnd) -> Exit:
    return Exit(
        outcome=Outcome.CRASHED,
        exit_code=code,
        signal=signum,
        error=error + _tail(end.stderr_tail),
        result=None,
    )


def _ending(code: int | None, signum: int | None, oom_killed: bool) -> str:
    if signum is not None:
        try:
            text = f"killed by signal {signal.Signals(signum).name} ({signum})"
        except ValueError:
            text = f"killed by signal {signum}"
        if oom_killed and signum == signal.SIGKILL:
            return text + " by the out-of-memory killer"
    else:
        text = f"exited with code {code}"
    if oom_killed:
        text += f"; {_OOM_SOMEWHERE}"
    return text


def _tail(lines: tuple[str, ...]) -> str:
    if not lines:
        return ""
    shown = without_own_frames(lines)
    return "\nlast stderr lines:\n" + "\n".join(line[:_TAIL_LINE] for line in shown)


# A frame of a stack dump: faulthandler's ``  File "x.py", line 3 in f`` or the
# traceback module's ``  File "x.py", line 3, in f`` (then its source lines, indented).
_FRAME_LINE: Final = re.compile(r'  File "(?P<file>.*)", line \d+,? in (?P<function>\S+)$')


_FILE_LINE: Final = '  File "'


class StderrTail:
    """The last ``size`` lines of a run's stderr (all if None), with the supervisor's own
    frames of stack dumps left out as they arrive, so they never push the runner's lines
    (a fault's header, its innermost frames) out of the tail.

    Each stretch of our frames becomes one line saying how many (``hidden_frames_line``);
    the ``python -c`` entry frame (``"<string>"``, ``<module>``) right after our frames
    counts as ours, and so do the indented source lines of a hidden frame (the traceback
    module's format). Every other line is kept as it is.
    """

    def __init__(self, size: int | None) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=size)
        self._hidden = 0  # our frames in the stretch at the end of the tail
        self._in_hidden_frame = False

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines)

    def extend(self, lines: Sequence[str]) -> None:
        if not self._hidden and _FILE_LINE not in "\n".join(lines):
            # The common case, at C speed: no frame line in the batch, none hidden before.
            self._lines.extend(lines)
            return
        for line in lines:
            self.append(line)

    def append(self, line: str) -> None:
        match = _FRAME_LINE.match(line) if line.startswith(_FILE_LINE) else None
        if match is not None:
            own = is_own_file(match["file"]) or (
                self._hidden > 0 and match["file"] == "<string>" and match["function"] == "<module>"
            )
            self._in_hidden_frame = own
            if own:
                if self._hidden:
                    self._lines.pop()  # this stretch's line, counted again below
                self._hidden += 1
                self._lines.append(hidden_frames_line(self._hidden))
                return
        elif self._in_hidden_frame and line.startswith("    "):
            return  # the source line (and carets) of a hidden frame
        self._in_hidden_frame = False
        self._hidden = 0
        self._lines.append(line)


def without_own_frames(lines: Sequence[str]) -> list[str]:
    """``lines`` of stderr with the supervisor's own frames left out (see ``StderrTail``)."""
    tail = StderrTail(None)
    tail.extend(lines)
    return list(tail.lines())


def describe_status(status: int | None) -> tuple[int | None, int | None]:
    """(exit code, signal number) of a raw wait status."""
    if status is None:
        return None, None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None
