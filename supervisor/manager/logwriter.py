"""Batches log records from every run into few, large store transactions, and keeps
count of what the store could not take until it can.

Watcher threads ``submit`` batches; one writer thread drains the queue and appends
everything it finds in one call, so a chatty run costs one transaction per drain rather
than one per line. ``flush`` returns once everything submitted before it is stored or
counted as lost; ``flush_through(ticket)`` once the batches up to the one ``submit``
numbered ``ticket`` are, so a run's end waits for its own records only (and not at all
when they were stored already, or when it had none).

When the store fails (disk full, I/O error) a batch cannot wait: runs keep writing and
memory is bounded. So its records are dropped but counted per run, and once the store
works again each such run gets the count added to its dropped records and one visible
marker record (``LogArchive.add_lost_logs``), retried every ``retry_seconds``. Failures
are reported on stderr once per streak (when storing first fails, and when it works
again), never once per line. (End rows are the manager's: ``manager.endrows`` retries
them with ``RunHistory.finish_run``, which is safe to repeat.)

May import ``records``, ``errors``, ``store.protocols``, ``store.codec`` and the stdlib.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from supervisor.core.errors import UnknownRun
from supervisor.core.records import LogRecord
from supervisor.store.codec import encode_fields, valid_text
from supervisor.store.protocols import LogArchive, LostLogs

# Bounded so a run that floods its pipes is slowed down instead of filling memory.
MAX_PENDING_BATCHES: Final = 16
MAX_RECORDS_PER_WRITE: Final = 5000
# While lost-record markers are owed to the store, try this often.
RETRY_SECONDS: Final = 5.0


class WriterStore(LogArchive, Protocol):
    """What the log writer needs of a store."""


@dataclass(slots=True)
class _Loss:
    records: int
    size: int
    first_time: datetime
    last_time: datetime
    reason: str


# A batch with its ticket, a flush barrier, or the end.
_Item = tuple[int, Sequence[LogRecord]] | threading.Event | None


def _report_on_stderr(message: str) -> None:
    print(f"supervisor: {message}", file=sys.stderr, flush=True)


class LogWriter:
    def __init__(
        self,
        store: WriterStore,
        *,
        retry_seconds: float = RETRY_SECONDS,
        report: Callable[[str], None] = _report_on_stderr,
    ) -> None:
        self._store = store
        self._retry_seconds = retry_seconds
        self._report = report
        self._queue: queue.Queue[_Item] = queue.Queue(MAX_PENDING_BATCHES)
        self._thread: threading.Thread | None = None
        # Batches are numbered in queue order (a ticket); the writer tells the highest it
        # has stored or counted as lost.
        self._submit_lock = threading.Lock()
        self._submitted = 0
        self._written = 0
        self._progress = threading.Condition(threading.Lock())
        # Only the writer thread changes these; readers take the lock for a snapshot.
        self._lock = threading.Lock()
        self._losses: dict[str, _Loss] = {}
        self._failing = False
        self._lost_in_streak = 0
        self.failures = 0  # store calls that failed
        self.lost_records = 0  # records that never reached the store (all counted, marked)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="log-writer", daemon=True)
        self._thread.start()

    def submit(self, records: Sequence[LogRecord]) -> int:
        """Queue ``records`` (waits while the queue is full); their ticket for
        ``flush_through``, or 0 when there were none."""
        if not records:
            return 0
        with self._submit_lock:  # tickets in queue order
            self._submitted += 1
            ticket = self._submitted
            self._queue.put((ticket, records))
        return ticket

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every record submitted so far is stored or counted as lost."""
        if self._thread is None or not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def flush_through(self, ticket: int, timeout: float | None = 30.0) -> bool:
        """Wait until the batches up to ``ticket`` (from ``submit``) are stored or counted
        as lost; at once for ticket 0. False if that did not happen within ``timeout``
        seconds or the writer is not running."""
        with self._progress:
            if self._written >= ticket:
                return True
        thread = self._thread
        if thread is None or not thread.is_alive():
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress:
            while self._written < ticket:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # Bounded: a writer that died leaves nobody to notify.
                self._progress.wait(1.0 if remaining is None else min(remaining, 1.0))
                if not thread.is_alive() and self._written < ticket:
                    return False
            return True

    @property
    def healthy(self) -> bool:
        """False while storing fails or lost-record markers are owed to the store."""
        with self._lock:
            return not (self._failing or self._losses)

    def close(self, timeout: float | None = None) -> bool:
        """Store what is queued, try once more to mark losses, report what remains.

        Within ``timeout`` seconds (None: as long as it takes): a store that hangs must
        not hold shutdown past its deadline. False when the writer did not finish in time
        (what it still held is lost; it is a daemon thread).
        """
        if self._thread is None or not self._thread.is_alive():
            return True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the writer thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            timeout = self._retry_seconds if self._owes() else None
            try:
                item: _Item | None = self._queue.get(timeout=timeout)
                got = True
            except queue.Empty:
                item, got = None, False
            pending: list[LogRecord] = []
            waiters: list[threading.Event] = []
            stop = False
            last_ticket = 0
            while got:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    last_ticket, batch = item
                    pending.extend(batch)
                if stop or len(pending) >= MAX_RECORDS_PER_WRITE:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._write(pending)
            if last_ticket:
                with self._progress:
                    self._written = last_ticket
                    self._progress.notify_all()
            for waiter in waiters:
                waiter.set()
            if stop:
                if self._owes():
                    self._report(self._owed_text("at shutdown, still not stored"))
                return

    def _owes(self) -> bool:
        return bool(self._losses)

    def _write(self, pending: list[LogRecord]) -> None:
        # Markers first: they tell of records older than the ones now pending.
        self._store_losses()
        if pending:
            try:
                self._store.append_logs(pending)
            except Exception as error:
                self._count_lost(pending, error)
            else:
                self._store_losses()  # the store works again: mark the losses at once
        if self._failing and not self._owes():
            self._failing = False
            self._report(
                f"storing logs works again; {self._lost_in_streak} log record(s) could not be"
                " stored and are counted and marked in their runs' logs"
            )
            self._lost_in_streak = 0

    def _failed(self, what: str, error: Exception) -> None:
        self.failures += 1
        if not self._failing:
            self._failing = True
            self._report(
                f"cannot store {what}: {error}; counting lost log records and retrying every"
                f" {self._retry_seconds:g}s until the store works again (reported once)"
            )

    def _count_lost(self, records: Sequence[LogRecord], error: Exception) -> None:
        reason = " ".join(str(error).split()) or type(error).__name__
        with self._lock:
            for record in records:
                _, size = valid_text(record.message)
                if record.fields:
                    size += len(encode_fields(record.fields))
                loss = self._losses.get(record.run_id)
                if loss is None:
                    self._losses[record.run_id] = _Loss(1, size, record.time, record.time, reason)
                else:
                    loss.records += 1
                    loss.size += size
                    loss.last_time = record.time
        self.lost_records += len(records)
        self._lost_in_streak += len(records)
        self._failed(f"{len(records)} log record(s)", error)

    def _store_losses(self) -> None:
        with self._lock:
            owed = list(self._losses.items())
        for run_id, loss in owed:
            lost = LostLogs(
                run_id=run_id,
                records=loss.records,
                bytes=loss.size,
                first_time=loss.first_time,
                last_time=loss.last_time,
                reason=loss.reason,
            )
            try:
                self._store.add_lost_logs(lost)
            except UnknownRun:
                pass  # the run is gone (retention): nothing left to mark
            except Exception as error:
                self._failed("the marker of lost log records", error)
                return
            with self._lock:
                del self._losses[run_id]

    def _owed_text(self, prefix: str) -> str:
        with self._lock:
            lost = sum(loss.records for loss in self._losses.values())
            runs = sorted(self._losses)
        return f"{prefix}: the markers of {lost} lost log record(s) of runs {runs}"
