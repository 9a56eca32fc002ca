"""Watching one started run to its end: pipes, escalation and the exit, in one loop.

``RunProcess.supervise`` polls the run's pipes (``capture``), the fd that says its main
process ended, and the cancel request; it acts on ``escalation``'s steps and, at the end,
kills what is left (the process group, then the run's cgroup), and tells the outcome with
``classify_exit``. How the main process is watched, reaped and signalled differs by
launcher: subclasses provide ``_exit_fd``, ``_on_exit_fd``, ``_signal_group`` and
``_release``.

May import ``capture``, ``escalation``, ``exits``, ``job``, ``records`` and ``errors``
(and the cgroup handle's type from ``cgroups``).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from supervisor.core.errors import BackendError
from supervisor.runs.capture import Capture, Sink
from supervisor.runs.escalation import Action, Escalation
from supervisor.runs.exits import Exit, RunEnd, classify_exit
from supervisor.runs.job import Job

if TYPE_CHECKING:
    from supervisor.runs.cgroups import RunCgroup

# How often an idle loop looks at the cancel event.
CANCEL_POLL_SECONDS: Final = 0.05
# After the main process ended and its group was killed, how long to wait for the pipes
# to reach end-of-file (something unmarked may still hold them).
DRAIN_SECONDS: Final = 2.0
# How long killing a run's cgroup may take at the end of a run.
CGROUP_KILL_SECONDS: Final = 5.0

# ``supervise``'s ``still_running``: after how many seconds, and what to call then.
StillRunning = tuple[float, Callable[[], None]]


@dataclass(slots=True)
class RunPipes:
    """The manager's ends (read records/stdout/stderr, write cancel) and the run's ends."""

    records_r: int
    records_w: int
    stdout_r: int
    stdout_w: int
    stderr_r: int
    stderr_w: int
    cancel_r: int
    cancel_w: int

    @classmethod
    def create(cls) -> RunPipes:
        """Raises ``BackendError`` if the pipes cannot be made."""
        made: list[int] = []
        try:
            for _ in range(4):
                made.extend(os.pipe())
        except OSError as error:
            close_quietly(made)
            raise BackendError(f"cannot create the run's pipes: {error}") from error
        pipes = cls(*made)
        os.set_blocking(pipes.cancel_w, False)
        return pipes

    def run_ends(self) -> list[int]:
        return [self.records_w, self.stdout_w, self.stderr_w, self.cancel_r]

    def our_ends(self) -> list[int]:
        return [self.records_r, self.stdout_r, self.stderr_r, self.cancel_w]


def close_quietly(fds: Sequence[int]) -> None:
    for fd in fds:
        try:  # (not contextlib.suppress: this runs for a dozen fds per run)
            os.close(fd)
        except OSError:
            continue


class RunProcess:
    """A started run: its main process's ``pid`` and ``create_time``, and ``supervise``."""

    def __init__(
        self,
        *,
        job: Job,
        pid: int,
        create_time: float,
        pipes: RunPipes,
        cgroup: RunCgroup | None = None,
        release_cgroup: Callable[[RunCgroup], None] | None = None,
    ) -> None:
        self.job = job
        self.run_id = job.run_id
        self.pid = pid
        self.create_time = create_time
        self.cgroup = cgroup
        self._release_cgroup = release_cgroup
        self._pipes = pipes
        self._status: int | None = None
        self._status_problem: str | None = None
        self._supervised = False

    # Implementations: an fd that becomes readable when the main process ends (it may
    # change after a readiness that did not settle it); a handler that returns True once
    # the wait status (or its absence) is known; a way to signal the whole process group;
    # and cleanup.

    def _exit_fd(self) -> int:
        raise NotImplementedError

    def _on_exit_fd(self) -> bool:
        raise NotImplementedError

    def _signal_group(self, signum: int) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Called once when supervision ends."""

    def _close_exit_fds(self) -> None:
        """Close the fds ``_exit_fd`` gave out."""

    def supervise(
        self,
        *,
        sink: Sink,
        timeout: float | None,
        cancel: threading.Event,
        grace: float = 5.0,
        still_running: StillRunning | None = None,
        ended: Callable[[Exit], None] | None = None,
    ) -> Exit:
        """Watch the run to its end; return how it ended. Call once, from one thread.

        ``sink`` receives batches of records (up to ``BATCH_RECORDS``, at least every
        ``BATCH_SECONDS`` while output flows, at once when it pauses); a slow sink slows
        the run down rather than filling memory. ``timeout`` (seconds, monotonic) and
        ``cancel`` end the run: cancel message, ``CANCEL_HEAD_START`` (at most ``grace``),
        SIGTERM to the process group, ``grace``, SIGKILL. If ``sink`` raises, the run is
        killed and the error propagates; ``RuntimeError`` on a second call.
        ``still_running`` (seconds, callback): the callback is called once, from this
        thread, if the main process still runs that long after supervision began (what
        only a longer run needs, such as a row that only crash recovery reads).
        ``ended`` is called with the outcome once nothing of the run is left and before
        what it held is given back (its fds, its cgroup, the launcher's bookkeeping), so
        the caller can store the end first; what it raises propagates after that.
        """
        if self._supervised:
            raise RuntimeError("supervise() may be called once per run")
        self._supervised = True
        try:
            end = self._supervise(sink, timeout, cancel, max(0.0, grace), still_running)
            if self._contain_after_end():
                end = replace(end, oom_killed=True)
            exit_ = classify_exit(end)
        except BaseException:
            self._kill_now()
            self._give_back()
            raise
        try:
            if ended is not None:
                ended(exit_)
        finally:
            self._give_back()
        return exit_

    def _give_back(self) -> None:
        """Close our ends of the pipes and the exit fds, remove the cgroup, release."""
        close_quietly(self._pipes.our_ends())
        self._close_exit_fds()
        self._remove_cgroup()
        self._release()

    def _supervise(
        self,
        sink: Sink,
        timeout: float | None,
        cancel: threading.Event,
        grace: float,
        still_running: StillRunning | None,
    ) -> RunEnd:
        pipes = self._pipes
        capture = Capture(
            self.run_id,
            records_fd=pipes.records_r,
            stdout_fd=pipes.stdout_r,
            stderr_fd=pipes.stderr_r,
            sink=sink,
        )
        escalation = Escalation(timeout=timeout, grace=grace)
        exit_fd = self._exit_fd()
        poller = select.poll()
        for fd in (*capture.open_fds, exit_fd):
            poller.register(fd, select.POLLIN)
        ended = False
        drain_until = math.inf
        remind_at = math.inf
        if still_running is not None:
            remind_at = time.monotonic() + still_running[0]
        while True:
            now = time.monotonic()
            if not ended:
                requested = getattr(cancel, "reason", "stop") if cancel.is_set() else None
                action = escalation.step(cancel=requested, execd=capture.records.exec is not None)
                if action is not None:
                    self._act(action, escalation.reason or "stop")
                if now >= remind_at and still_running is not None:
                    remind_at = math.inf
                    still_running[1]()
            elif not capture.open_fds or now >= drain_until:
                break
            if capture.pending:
                wait_ms = 0  # deliver as soon as the output pauses
            else:
                wait = drain_until - now
                if not ended:
                    wait = min(wait, escalation.wait(), remind_at - now)
                    if escalation.reason is None:
                        wait = min(wait, CANCEL_POLL_SECONDS)
                wait_ms = -1 if wait == math.inf else max(0, math.ceil(wait * 1000))
            events = poller.poll(wait_ms)
            if not events:
                capture.deliver()
                continue
            stamp = datetime.now(UTC)
            for fd, revents in events:
                if fd == exit_fd and not ended:
                    if self._on_exit_fd():
                        ended = True
                        drain_until = time.monotonic() + DRAIN_SECONDS
                        poller.unregister(exit_fd)
                    elif (fresh := self._exit_fd()) != exit_fd:
                        poller.unregister(exit_fd)
                        exit_fd = fresh
                        poller.register(exit_fd, select.POLLIN)
                elif fd == exit_fd:
                    continue
                elif not revents & select.POLLIN:
                    # Hung up (or closed) with nothing left: no read to find end-of-file.
                    capture.hung_up(fd, now=now, stamp=stamp)
                    poller.unregister(fd)
                elif not capture.read(fd, now=now, stamp=stamp):
                    poller.unregister(fd)
            capture.deliver_if_due(now)
        capture.finish()
        return RunEnd(
            status=self._status,
            status_problem=self._status_problem,
            result=capture.records.result,
            execd=capture.records.exec is not None,
            reason=escalation.reason,
            escalated=escalation.escalated,
            timeout=timeout,
            stderr_tail=capture.stderr_tail,
        )

    def _act(self, action: Action, reason: str) -> None:
        if action is Action.SEND_CANCEL:
            self._send_cancel(reason)
        elif action is Action.TERMINATE:
            self._signal_group(signal.SIGTERM)
        else:
            self._signal_group(signal.SIGKILL)
            if self.cgroup is not None:
                self.cgroup.kill(timeout=CGROUP_KILL_SECONDS)

    def _send_cancel(self, reason: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self._pipes.cancel_w, reason.encode() + b"\n")

    def _contain_after_end(self) -> bool:
        """Kill what is left in the run's cgroup; True if it saw an OOM kill."""
        cgroup = self.cgroup
        if cgroup is None:
            return False
        if cgroup.pids():
            cgroup.kill(timeout=CGROUP_KILL_SECONDS)
        return cgroup.oom_killed()

    def _remove_cgroup(self) -> None:
        cgroup = self.cgroup
        if cgroup is None:
            return
        if self._release_cgroup is not None:
            try:
                # Nearly always empty by now (killed above): one rmdir here costs less
                # than a hand-off to the launcher's remover thread (a wake-up, the GIL).
                cgroup.remove()
            except OSError:  # still busy: the remover kills what is left, then removes it
                self._release_cgroup(cgroup)
            return
        with contextlib.suppress(OSError):
            cgroup.kill(timeout=CGROUP_KILL_SECONDS)
            cgroup.remove()

    def _kill_now(self) -> None:
        """After a failure of ours: SIGKILL the group and collect the status briefly."""
        with contextlib.suppress(Exception):
            self._signal_group(signal.SIGKILL)
            if self.cgroup is not None:
                self.cgroup.kill(timeout=CGROUP_KILL_SECONDS)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                poller = select.poll()
                poller.register(self._exit_fd(), select.POLLIN)
                if poller.poll(100) and self._on_exit_fd():
                    break
