"""The store's health as operators see it: whether the store the manager keeps its runs,
logs and settings in answers, and since when it does not.

``StoreHealth`` is a small thread-safe cell the composition root (``service.manager_mode``)
owns and sets from what it learns of its store (a PostgreSQL store's manager lock says
since when it cannot reach its database); the use cases read it (``UseCases.store_health``)
and the control socket and the Admin Center show what they read. ``StoreTrouble`` is the
value read: frozen, with the seconds it has lasted worked out when read. The systemd mode
has no shared store and no cell: there is never a trouble to show.
May import ``core`` and the stdlib.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreOutage:
    """The store does not answer: since when (aware) and why (no password in it)."""

    since: datetime
    reason: str

    def __post_init__(self) -> None:
        if self.since.tzinfo is None:
            raise ValueError("since must be an aware datetime")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreTrouble:
    """An outage as read at one moment: its start, how long it has lasted, its reason."""

    since: datetime
    seconds: int
    reason: str

    @classmethod
    def of(cls, outage: StoreOutage, now: datetime) -> StoreTrouble:
        seconds = max(0, int((now - outage.since).total_seconds()))
        return cls(since=outage.since, seconds=seconds, reason=outage.reason)

    @property
    def text(self) -> str:
        """``unreachable since 12:03:04 UTC (17 s): <reason>`` (the words after ``store:``)."""
        at = self.since.astimezone(UTC).strftime("%H:%M:%S UTC")
        return f"unreachable since {at} ({self.seconds} s): {self.reason}"


class StoreHealthSource(Protocol):
    """Where the use cases read the store's health from; never raises."""

    def outage(self) -> StoreOutage | None:
        """The outage going on, or None while the store answers."""
        ...


class StoreHealth:
    """The cell a composition root sets; every method may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outage: StoreOutage | None = None

    def outage(self) -> StoreOutage | None:
        with self._lock:
            return self._outage

    def unreachable(self, *, since: datetime, reason: str) -> None:
        """The store does not answer, since ``since``, because of ``reason`` (one line)."""
        with self._lock:
            self._outage = StoreOutage(since=since, reason=" ".join(reason.split()))

    def reachable(self) -> None:
        with self._lock:
            self._outage = None
