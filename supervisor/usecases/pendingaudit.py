"""Audit entries kept in memory while the store cannot take them, written once it can.

A stop must be possible while the store is down (an operator stopping a scheduler that
misbehaves during a disk-full or corrupt-store outage), yet no action may go unaudited.
So a stop whose entry cannot be written is carried out, and its entry is kept here, told
on the ``supervisor.audit`` logger at once (that line is its record should the manager
stop before the store recovers), and written, oldest first, when the store recovers or
before the next entry that is written. Past ``MAX_KEPT`` entries the oldest is dropped,
logged as an error with all it said. Thread-safe. May import ``core`` and the stdlib.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Final, Protocol

from supervisor.core.records import AuditEntry

MAX_KEPT: Final = 1000


class _Trail(Protocol):
    def add_audit(self, entry: AuditEntry) -> None: ...


def describe(entry: AuditEntry) -> str:
    """``stop by alice on m.job at 2026-…: ERP maintenance`` (what the log line says)."""
    detail = f": {entry.detail}" if entry.detail else ""
    return (
        f"{entry.action} by {entry.actor} on {entry.scheduler_id or '-'}"
        f" at {entry.time.isoformat()}{detail}"
    )


class PendingAudit:
    """The entries not written yet, in the order they were made."""

    def __init__(self, trail: _Trail, log: logging.Logger, *, max_kept: int = MAX_KEPT) -> None:
        if max_kept < 1:
            raise ValueError("max_kept must be at least 1")
        self._trail = trail
        self._log = log
        self._max_kept = max_kept
        self._lock = threading.Lock()  # guards the entries
        self._writing = threading.Lock()  # one catch-up at a time, in order
        self._entries: deque[AuditEntry] = deque()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._entries)

    def keep(self, entry: AuditEntry, why: BaseException) -> None:
        """Keep ``entry``, which could not be written because of ``why``."""
        with self._lock:
            dropped = self._entries.popleft() if len(self._entries) >= self._max_kept else None
            self._entries.append(entry)
        self._log.warning(
            "audit entry kept in memory until the store takes writes again (not written: %s): %s",
            why,
            describe(entry),
        )
        if dropped is not None:
            self._log.error(
                "audit entry dropped (more than %d kept while the store cannot be written): %s",
                self._max_kept,
                describe(dropped),
            )

    def write(self) -> int:
        """Write the kept entries, oldest first, until one fails (it and the rest stay
        kept); how many were written. Raises nothing."""
        written = 0
        with self._writing:
            while True:
                with self._lock:
                    if not self._entries:
                        break
                    entry = self._entries[0]
                try:
                    self._trail.add_audit(entry)
                except Exception:
                    break
                with self._lock:
                    if self._entries and self._entries[0] is entry:
                        self._entries.popleft()
                written += 1
        if written:
            self._log.warning(
                "%d audit entr%s kept in memory written to the store now",
                written,
                "y" if written == 1 else "ies",
            )
        return written

    def write_in_background(self) -> None:
        """``write`` from a thread of its own (the caller may be a store's writer)."""
        if self.count:
            threading.Thread(target=self.write, name="audit-catch-up", daemon=True).start()
