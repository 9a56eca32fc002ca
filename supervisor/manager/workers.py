"""Threads kept for reuse, one job at a time each: a run's watcher is handed to an idle
thread instead of a new one (starting a thread costs a clone, a stack and a hand-shake
with the new thread on every run).

``run`` never waits: with no idle thread it starts one. A job that raises is reported
as a thread's failure would be (``threading.excepthook``), and its thread goes on. A thread idle for
``idle_seconds`` exits, so a burst leaves no crowd behind. ``wait_idle`` waits until no job
is running (``close`` of the manager). Threads are daemons: a job that hangs past its
owner's deadline does not keep the process alive.

May import the stdlib only.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

IDLE_SECONDS: Final = 30.0

Job = Callable[[], None]


class Workers:
    """Runs jobs on reused daemon threads named ``name``; thread-safe."""

    def __init__(self, name: str, *, idle_seconds: float = IDLE_SECONDS) -> None:
        self._name = name
        self._idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._idle = 0  # threads waiting for a job, not yet promised one
        self._busy = 0  # jobs handed out and not finished
        self._threads = 0

    def run(self, job: Job) -> None:
        """Carry ``job`` out on an idle thread, else on a new one; returns at once.
        Raises ``RuntimeError`` if no thread can be started (as ``Thread.start``)."""
        with self._lock:
            self._busy += 1
            if self._idle:
                self._idle -= 1  # promised: that thread takes this job
                self._jobs.put(job)
                return
            self._threads += 1
        thread = threading.Thread(target=self._loop, args=(job,), name=self._name, daemon=True)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._busy -= 1
                self._threads -= 1
                self._done.notify_all()
            raise

    @property
    def threads(self) -> int:
        """How many threads exist (busy or idle)."""
        with self._lock:
            return self._threads

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no job runs; True if none does."""
        deadline = time.monotonic() + timeout
        with self._done:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._done.wait(remaining)
            return True

    def _loop(self, job: Job) -> None:
        while True:
            try:
                job()
            except Exception:  # the job's own failure: told as a thread's, and go on
                kind, value, trace = sys.exc_info()
                threading.excepthook(
                    threading.ExceptHookArgs((kind, value, trace, threading.current_thread()))
                )
            finally:
                with self._lock:
                    self._busy -= 1
                    self._idle += 1
                    if not self._busy:
                        self._done.notify_all()
            next_job = self._next()
            if next_job is None:
                return
            job = next_job

    def _next(self) -> Job | None:
        """The next job promised to this thread; None once idle too long (it exits)."""
        try:
            return self._jobs.get(timeout=self._idle_seconds)
        except queue.Empty:
            pass
        with self._lock:
            try:
                # ``run`` promised a job just as the wait ended: take it.
                return self._jobs.get_nowait()
            except queue.Empty:
                self._idle -= 1
                self._threads -= 1
                return None
