"""Time as an injected dependency: wall time for people, monotonic time for delays.

May import the stdlib only.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall-clock time, aware UTC (what people read and what cron follows)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (start delays, pauses and timeouts)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock tests move by hand; wall and monotonic time advance together unless told."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self._now = start.astimezone(UTC)
        self._monotonic = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._monotonic += seconds

    def jump_wall(self, seconds: float) -> None:
        """Move only the wall clock (an NTP step or an operator changing the date)."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
