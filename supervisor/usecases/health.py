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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from supervisor.core.storeproblems import Backlog, StoreProblem

NO_BACKLOG: Final = Backlog()

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


class StoreHealth:
    """The cell a composition root sets; every method may be called from any thread.

    Two findings are kept apart: the PostgreSQL manager lock's (``unreachable`` /
    ``reachable``) and the store's writes (``write_failed`` / ``write_succeeded``); the
    outage shown is the lock's while there is one, else the writes'. A write outage ends
    at the first write that succeeds once nothing is kept in memory for the store any
    more (``note_backlog``): it is shown while what it kept is still owed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outage: StoreOutage | None = None
        self._writes: StoreOutage | None = None
        self._backlog = Backlog()
        self._write_ok_since_backlog = False

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
            self._outage = None

    def write_failed(self, *, at: datetime, problem: StoreProblem, reason: str) -> None:
        """A write failed at ``at``: the outage of the writes starts then (unless one goes
        on: its start stays, its problem and reason become these)."""
        reason = " ".join(reason.split())
        with self._lock:
            since = at if self._writes is None else self._writes.since
            self._writes = StoreOutage(since=since, reason=reason, problem=problem)
            self._write_ok_since_backlog = False

    def write_succeeded(self) -> None:
        """A write went through: the writes' outage ends, unless the store is still owed
        what was kept meanwhile (then it ends once that is stored)."""
        with self._lock:
            if self._backlog.empty:
                self._writes = None
            self._write_ok_since_backlog = True

    def note_backlog(self, backlog: Backlog) -> None:
        """What the manager holds for the store now (and dropped since the outage began)."""
        with self._lock:
            self._backlog = backlog
            if backlog.empty and self._write_ok_since_backlog:
                self._writes = None

    @property
    def writes_failing(self) -> bool:
        """Whether the writes' outage goes on (a probe is worth making)."""
        with self._lock:
            return self._writes is not None
