"""How a run is asked to end, and then made to: a state machine over a monotonic clock.

A run is ended by its timeout or a cancel request (``stop``, ``shutdown``): first the
cancel message on its cancel pipe and a short head start to end by itself (at most the
grace), then SIGTERM to its process group and the grace, then SIGKILL. A run that became
an external program (``exec``) cannot read the cancel pipe, so SIGTERM is the first
request; a run that execs after it was asked gets SIGTERM at once.

``Escalation.step`` says what to do now (one ``Action`` or None) given what the
supervision loop sees; ``wait`` says how long the loop may sleep before it needs to
step again. No processes, no signals: the loop acts. May import the stdlib only.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from typing import Final

# How long a cancelled run may take to end by itself before SIGTERM (at most the grace).
CANCEL_HEAD_START: Final = 1.0
TIMEOUT_REASON: Final = "timeout"


class Stage(enum.IntEnum):
    RUNNING = 0  # nobody asked it to end
    ASKED = 1  # the cancel message was sent; its head start runs
    TERMINATED = 2  # SIGTERM was sent to the group; the grace runs
    KILLED = 3  # SIGKILL was sent to the group (and its cgroup)


class Action(enum.Enum):
    SEND_CANCEL = "send the cancel message"
    TERMINATE = "SIGTERM the group"
    KILL = "SIGKILL the group and the run's cgroup"


class Escalation:
    """The ending of one run. ``timeout`` and ``grace`` in seconds; ``monotonic`` is the
    clock (``time.monotonic`` unless a test injects one)."""

    def __init__(
        self,
        *,
        timeout: float | None,
        grace: float,
        head_start: float = CANCEL_HEAD_START,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = monotonic
        self._grace = max(0.0, grace)
        self._head_start = min(self._grace, max(0.0, head_start))
        started = monotonic()
        self._timeout_at = math.inf if timeout is None else started + timeout
        self._next = math.inf
        self._first = Stage.RUNNING
        self.stage = Stage.RUNNING
        self.reason: str | None = None  # why it is being ended: timeout, stop, shutdown

    @property
    def escalated(self) -> bool:
        """Did it take more than the first request (it did not end when asked)?"""
        return self.stage > self._first

    def step(self, *, cancel: str | None, execd: bool) -> Action | None:
        """What to do now. ``cancel``: the reason of a cancel request, if one was made;
        ``execd``: the run became an external program."""
        now = self._clock()
        if self.stage is Stage.RUNNING:
            if now >= self._timeout_at:
                self.reason = TIMEOUT_REASON
            elif cancel is not None:
                self.reason = cancel
            else:
                return None
            if execd:
                return self._move(Stage.TERMINATED, now, first=True)
            return self._move(Stage.ASKED, now, first=True)
        if self.stage is Stage.ASKED and execd:
            # It became a program after it was asked: the program cannot read the cancel
            # pipe, so SIGTERM asks now.
            return self._move(Stage.TERMINATED, now, first=True)
        if now < self._next:
            return None
        if self.stage is Stage.ASKED:
            return self._move(Stage.TERMINATED, now, first=False)
        if self.stage is Stage.TERMINATED:
            return self._move(Stage.KILLED, now, first=False)
        return None

    def wait(self) -> float:
        """Seconds until ``step`` may have something to do (``inf``: only a cancel)."""
        now = self._clock()
        if self.stage is Stage.RUNNING:
            return max(0.0, self._timeout_at - now)
        return max(0.0, self._next - now)

    def _move(self, stage: Stage, now: float, *, first: bool) -> Action:
        self.stage = stage
        if first:
            self._first = stage
        if stage is Stage.ASKED:
            self._next = now + self._head_start
            return Action.SEND_CANCEL
        if stage is Stage.TERMINATED:
            self._next = now + self._grace
            return Action.TERMINATE
        self._next = math.inf
        return Action.KILL
