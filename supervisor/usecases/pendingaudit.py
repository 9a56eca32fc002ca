"""Audit entries kept in memory while the store cannot take them, written once it can.

A stop must be possible while the store is down (an operator stopping a scheduler that
misbehaves during a disk-full or corrupt-store outage), yet no action may go unaudited.
So a stop whose entry cannot be written is carried out, and its entry is kept here, told
on the ``supervisor.audit`` logger at once (that line is its record should the manager
stop before the store recovers), and written, oldest first, when the store recovers or
before the next entry that is written. Past ``MAX_KEPT`` entries the oldest is dropped,
logged as an error with all it said (never the one being written at that moment).

An entry about something already done (``write_after``: Execute Now's, a failed act's)
is kept the same way, behind the kept ones or when its own write fails, where a manager
is left to write it.

Every audit write goes through here (``write_first``, ``write_after``), so the order
holds: an entry is written only after the kept ones are. One queue per trail
(``pending_for``): the use cases and the account use cases over one store share it.
Thread-safe. May import ``core`` and the stdlib.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from typing import Final, Protocol

from supervisor.core.errors import StoreError
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
        self._in_flight: AuditEntry | None = None  # the head, while ``write`` writes it
        self._catching_up = False  # a background catch-up is going on

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._entries)

    def kept(self) -> list[AuditEntry]:
        """The entries kept, oldest first."""
        with self._lock:
            return list(self._entries)

    def keep(self, entry: AuditEntry, why: BaseException | str) -> None:
        """Keep ``entry``, which could not be written because of ``why``."""
        with self._lock:
            # The entry being written is not counted, nor dropped: it may be stored now.
            busy = 0 if self._in_flight is None else 1
            dropped = None
            if len(self._entries) - busy >= self._max_kept:
                dropped = self._entries[busy]
                del self._entries[busy]
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
        with self._writing:
            return self._flush()[0]

    def write_first(self, entry: AuditEntry) -> None:
        """Write ``entry`` after the kept ones; ``StoreError`` (and ``entry`` neither
        written nor kept) when they or it cannot be written."""
        with self._writing:
            _, error = self._flush()
            if error is not None:
                raise StoreError(
                    f"the audit entries kept before it cannot be written yet ({error})"
                ) from error
            self._trail.add_audit(entry)

    def write_after(self, entry: AuditEntry, *, keep_own: bool = False) -> None:
        """Write ``entry`` after the kept ones; when they cannot be written, ``entry`` is
        kept behind them. Raises what writing ``entry`` itself raises, but with
        ``keep_own`` (someone is left to write it later: a manager) a ``StoreError`` of
        its own write keeps it too, for the recovery to write in its place."""
        with self._writing:
            _, error = self._flush()
            if error is not None:
                self.keep(entry, error)
                return
            try:
                self._trail.add_audit(entry)
            except StoreError as own:
                if not keep_own:
                    raise
                self.keep(entry, own)

    def _flush(self) -> tuple[int, Exception | None]:
        """Write the kept entries (``_writing`` held): how many, and the error that
        stopped it (None: none are left)."""
        written = 0
        failure: Exception | None = None
        while True:
            with self._lock:
                if not self._entries:
                    break
                entry = self._entries[0]
                self._in_flight = entry
            try:
                self._trail.add_audit(entry)
            except Exception as error:
                failure = error
                break
            finally:
                with self._lock:
                    self._in_flight = None
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
        return written, failure

    def write_in_background(self) -> None:
        """``write`` from a thread of its own (the caller may be a store's writer); none
        started while one is going on."""
        with self._lock:
            if not self._entries or self._catching_up:
                return
            self._catching_up = True
        threading.Thread(target=self._catch_up, name="audit-catch-up", daemon=True).start()

    def _catch_up(self) -> None:
        try:
            self.write()
        finally:
            with self._lock:
                self._catching_up = False


_QUEUES: weakref.WeakKeyDictionary[object, PendingAudit] = weakref.WeakKeyDictionary()
_QUEUES_LOCK = threading.Lock()


def pending_for(trail: _Trail, log: logging.Logger) -> PendingAudit:
    """The one queue of ``trail``'s kept entries (made on first use), so every writer of
    that trail keeps one order."""
    with _QUEUES_LOCK:
        try:
            queue = _QUEUES.get(trail)
        except TypeError:  # a trail that cannot be referred to weakly: a queue of its own
            return PendingAudit(trail, log)
        if queue is None:
            queue = _QUEUES[trail] = PendingAudit(trail, log)
        return queue
