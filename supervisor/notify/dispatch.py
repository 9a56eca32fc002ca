"""Delivering notifications on a thread of their own, with retries and back-off.

``Dispatcher.submit`` never blocks and never raises: the manager must not wait for a slow
webhook. A delivery that fails is retried with doubling waits; one that still fails is
reported on stderr once, and counted. May import ``core``, ``notify`` and the stdlib.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from supervisor.core.errors import NotifyError
from supervisor.notify.events import Notification
from supervisor.notify.targets import DeliveryError, Target


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    attempts: int = 5
    first_wait_seconds: float = 1.0
    max_wait_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.first_wait_seconds < 0 or self.max_wait_seconds < self.first_wait_seconds:
            raise ValueError("waits must be non-negative, the first no longer than the max")

    def waits(self) -> list[float]:
        """The waits before the 2nd, 3rd, ... attempts."""
        waits, wait = [], self.first_wait_seconds
        for _ in range(self.attempts - 1):
            waits.append(wait)
            wait = min(wait * 2, self.max_wait_seconds)
        return waits


@dataclass(frozen=True, slots=True)
class Delivered:
    target: str
    notification: Notification
    attempts: int
    error: str | None  # None when delivered


class Dispatcher:
    """One thread delivering queued notifications to their targets."""

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        err: IO[str] | None = None,
        on_result: Callable[[Delivered], None] | None = None,
    ) -> None:
        self._retry = retry or RetryPolicy()
        self._err = err if err is not None else sys.stderr
        self._on_result = on_result
        self._queue: queue.Queue[tuple[Notification, tuple[Target, ...]] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self.failed = 0
        self.delivered = 0
        self._thread.start()

    def submit(self, notification: Notification, targets: tuple[Target, ...]) -> None:
        if targets and not self._stopping.is_set():
            self._queue.put((notification, targets))

    def close(self, *, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout``, then stop (retries are cut short)."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._stopping.set()
        self._thread.join(1.0)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            notification, targets = item
            for target in targets:
                self._deliver(target, notification)

    def _deliver(self, target: Target, notification: Notification) -> None:
        waits = self._retry.waits()
        attempt = 0
        while True:
            attempt += 1
            try:
                target.send(notification)
            except NotifyError as error:
                retry = isinstance(error, DeliveryError) and error.retry
                if retry and waits and not self._stopping.wait(waits.pop(0)):
                    continue
                self.failed += 1
                print(
                    f"supervisor: could not notify {target.name} of {notification.subject} "
                    f"after {attempt} attempt(s): {error}",
                    file=self._err,
                    flush=True,
                )
                self._report(Delivered(target.name, notification, attempt, str(error)))
                return
            except Exception as error:  # a bug in a target must not end the thread
                self.failed += 1
                print(f"supervisor: notifying {target.name} failed: {error!r}", file=self._err)
                self._report(Delivered(target.name, notification, attempt, repr(error)))
                return
            self.delivered += 1
            self._report(Delivered(target.name, notification, attempt, None))
            return

    def _report(self, result: Delivered) -> None:
        if self._on_result is not None:
            self._on_result(result)
