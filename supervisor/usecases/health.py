"""The store's health as operators see it: whether the store the manager keeps its runs,
logs and settings in answers and takes writes, and since when it does not.

``StoreHealth`` is a small thread-safe cell the composition root (``service.manager_mode``)
owns and sets from what it learns of its store: a PostgreSQL store's manager lock says
since when it cannot reach its database; a SQLite store's writes say why they fail (a full
disk, a read-only file, a lock another process holds too long, a corrupt file), each as a
``StoreProblem`` (structured, never read back out of a message). The use cases read it
(``UseCases.store_health``) and the control socket and the Admin Center show what they
read. ``StoreTrouble`` is the value read: frozen, with the seconds it has lasted worked out
when read. The systemd mode has no shared store and no cell: there is never a trouble to
show.
May import ``core`` and the stdlib.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from supervisor.core.storeproblems import Backlog, StoreProblem

NO_BACKLOG: Final = Backlog()
# A write outage ends once writes have held: two or more in a row succeeded, the first and
# the last this far apart (the store probe writes every 2 s), none failing between.
SETTLE_SECONDS: Final = 1.5
# An outage that begins this soon after the last one ended is a flap: the next end needs
# twice the settling time (up to ``MAX_SETTLE_SECONDS``), so a store that keeps failing
# and working again is told as fewer, longer outages, not a stream of starts and ends.
FLAP_WINDOW_SECONDS: Final = 300.0
MAX_SETTLE_SECONDS: Final = 120.0

__all__ = [
    "Backlog",
    "StoreHealth",
    "StoreHealthSource",
    "StoreOutage",
    "StoreProblem",
    "StoreTrouble",
    "trouble_json",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreOutage:
    """The store does not answer or take writes: since when (aware), what is wrong and why
    (one line, no password in it)."""

    since: datetime
    reason: str
    problem: StoreProblem = StoreProblem.UNREACHABLE
    backlog: Backlog = NO_BACKLOG

    def __post_init__(self) -> None:
        if self.since.tzinfo is None:
            raise ValueError("since must be an aware datetime")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreTrouble:
    """An outage as read at one moment: its start, how long it has lasted, its reason."""

    since: datetime
    seconds: int
    reason: str
    problem: StoreProblem = StoreProblem.UNREACHABLE
    backlog: Backlog = NO_BACKLOG

    @classmethod
    def of(cls, outage: StoreOutage, now: datetime) -> StoreTrouble:
        seconds = max(0, int((now - outage.since).total_seconds()))
        return cls(
            since=outage.since,
            seconds=seconds,
            reason=outage.reason,
            problem=outage.problem,
            backlog=outage.backlog,
        )

    @property
    def text(self) -> str:
        """``unreachable since 12:03:04 UTC (17 s): <reason>`` (the words after ``store:``);
        ``disk full since …: <reason>; 120 log record(s) kept to store, 0 dropped …``."""
        at = self.since.astimezone(UTC).strftime("%H:%M:%S UTC")
        return (
            f"{self.problem.words} since {at} ({self.seconds} s): {self.reason}" + self.backlog.text
        )


def trouble_json(trouble: StoreTrouble) -> dict[str, Any]:
    """A trouble as ``list`` and ``status`` carry it in their ``store`` field while it
    lasts (absent while the store works): ``state`` is the ``StoreProblem``."""
    return {
        "state": trouble.problem.value,
        "since": trouble.since.isoformat(),
        "seconds": trouble.seconds,
        "reason": trouble.reason,
        "kept_log_records": trouble.backlog.kept_records,
        "dropped_log_records": trouble.backlog.dropped_records,
        "text": trouble.text,
    }


class StoreHealthSource(Protocol):
    """Where the use cases read the store's health from; never raises."""

    def outage(self) -> StoreOutage | None:
        """The outage going on, or None while the store answers."""
        ...

    def when_recovered(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the thread that finds it out, no lock held) each time
        an outage ends."""
        ...


class StoreHealth:
    """The cell a composition root sets; every method may be called from any thread.

    Two findings are kept apart: the PostgreSQL manager lock's (``unreachable`` /
    ``reachable``) and the store's writes (``write_failed`` / ``write_succeeded``); the
    outage shown is the lock's while there is one, else the writes'. A write outage ends
    once the writes have held (two in a row succeeded, ``settle_seconds`` apart, longer
    after each flap: see ``SETTLE_SECONDS``) and nothing is kept in memory for the store
    any more (``note_backlog``): one write that goes through between failures ends
    nothing, and the outage is shown while what it kept is still owed. ``monotonic``
    measures the settling (a test's fake clock)."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        if settle_seconds < 0:
            raise ValueError("settle_seconds must not be negative")
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._settle_seconds = settle_seconds
        self._outage: StoreOutage | None = None
        self._writes: StoreOutage | None = None
        self._backlog = Backlog()
        self._held_since: float | None = None  # the first success since the last failure
        self._held_writes = 0  # successes since the last failure
        self._ended_at: float | None = None  # when the last write outage ended
        self._flaps = 0  # outages begun soon after the one before, in a row
        self._recovered: list[Callable[[], None]] = []

    def when_recovered(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._recovered.append(callback)

    def _tell_recovered(self, was_out: bool) -> None:
        """Call the callbacks if an outage that went on (``was_out``) has ended now."""
        with self._lock:
            ended = was_out and self._outage is None and self._writes is None
            callbacks = list(self._recovered) if ended else []
        for callback in callbacks:
            callback()

    def _out_locked(self) -> bool:
        return self._outage is not None or self._writes is not None

    def outage(self) -> StoreOutage | None:
        with self._lock:
            if self._outage is not None:
                return self._outage
            if self._writes is None:
                return None
            return StoreOutage(
                since=self._writes.since,
                reason=self._writes.reason,
                problem=self._writes.problem,
                backlog=self._backlog,
            )

    def unreachable(
        self,
        *,
        since: datetime,
        reason: str,
        problem: StoreProblem = StoreProblem.UNREACHABLE,
    ) -> None:
        """The store does not answer, since ``since``, because of ``reason`` (one line)."""
        with self._lock:
            self._outage = StoreOutage(
                since=since, reason=" ".join(reason.split()), problem=problem
            )

    def reachable(self) -> None:
        with self._lock:
            was_out = self._out_locked()
            self._outage = None
        self._tell_recovered(was_out)

    def write_failed(self, *, at: datetime, problem: StoreProblem, reason: str) -> None:
        """A write failed at ``at``: the outage of the writes starts then (unless one goes
        on: its start stays, its problem and reason become these)."""
        reason = " ".join(reason.split())
        with self._lock:
            if self._writes is None:
                since = at
                recent = self._ended_at is not None and (
                    self._monotonic() - self._ended_at < FLAP_WINDOW_SECONDS
                )
                self._flaps = self._flaps + 1 if recent else 0
            else:
                since = self._writes.since
            self._writes = StoreOutage(since=since, reason=reason, problem=problem)
            self._held_since, self._held_writes = None, 0

    def write_succeeded(self) -> None:
        """A write went through: the writes' outage ends once they have held (and the
        store is no longer owed what was kept meanwhile)."""
        with self._lock:
            was_out = self._out_locked()
            now = self._monotonic()
            if self._held_since is None:
                self._held_since = now
            self._held_writes += 1
            self._end_if_held_locked(now)
        self._tell_recovered(was_out)

    def note_backlog(self, backlog: Backlog) -> None:
        """What the manager holds for the store now (and dropped since the outage began)."""
        with self._lock:
            was_out = self._out_locked()
            self._backlog = backlog
            self._end_if_held_locked(self._monotonic())
        self._tell_recovered(was_out)

    @property
    def settle_seconds(self) -> float:
        """How long the writes must hold for the outage going on (or the next) to end."""
        with self._lock:
            return self._settling_locked()

    def _settling_locked(self) -> float:
        doubled: float = self._settle_seconds * (1 << min(self._flaps, 16))
        return min(doubled, max(MAX_SETTLE_SECONDS, self._settle_seconds))

    def _end_if_held_locked(self, now: float) -> None:
        if self._writes is None or not self._backlog.empty or self._held_since is None:
            return
        if self._held_writes >= 2 and now - self._held_since >= self._settling_locked():
            self._writes = None
            self._ended_at = now

    @property
    def writes_failing(self) -> bool:
        """Whether the writes' outage goes on (a probe is worth making)."""
        with self._lock:
            return self._writes is not None
