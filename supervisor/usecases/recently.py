"""A bounded memory of what was noted recently, so a repeated event is noted once per
window (a proxy's header login per user and client address, not per request).

May import the stdlib only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable


class Recently:
    """Which keys were noted within the last ``window`` seconds (by ``monotonic``), at most
    ``max_keys`` of them (beyond that the oldest is forgotten, so it may be noted again
    early: memory stays bounded whatever the keys). Thread-safe."""

    def __init__(
        self, *, window: float, monotonic: Callable[[], float], max_keys: int = 10_000
    ) -> None:
        self._window = window
        self._now = monotonic
        self._max = max_keys
        self._lock = threading.Lock()
        self._noted: OrderedDict[Hashable, float] = OrderedDict()

    def due(self, key: Hashable) -> bool:
        """Whether ``key`` was not noted within the window (``note`` it once done)."""
        now = self._now()
        with self._lock:
            when = self._noted.get(key)
            return when is None or now - when >= self._window

    def note(self, key: Hashable) -> None:
        now = self._now()
        with self._lock:
            self._noted.pop(key, None)
            self._noted[key] = now
            while self._noted:
                oldest = next(iter(self._noted.values()))
                if now - oldest < self._window and len(self._noted) <= self._max:
                    break
                self._noted.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._noted)
