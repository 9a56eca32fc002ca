"""Batches log records from every run into few, large store transactions, and keeps
count of what the store could not take until it can.

Watcher threads ``submit`` batches; one writer thread drains the queue and appends
everything it finds in one call, so a chatty run costs one transaction per drain rather
than one per line. ``flush`` returns once everything submitted before it is stored or
counted as lost; ``flush_through(ticket)`` once the batches up to the one ``submit``
numbered ``ticket`` are, so a run's end waits for its own records only (and not at all
when they were stored already, or when it had none).

When the store cannot be written (a full disk, a read-only or locked or corrupt file: an
error ``core.storeproblems.classify`` names), runs keep writing and memory is bounded:
records are kept in memory, in order, up to ``MAX_KEPT_RECORDS`` records and
``MAX_KEPT_BYTES`` of text, and written (oldest first) once the store takes writes again;
while it does not, the store is tried every ``retry_seconds`` (not once per batch: a
locked database makes each try wait for its busy timeout). Past the bound the oldest kept
records are dropped, and so are the records of a batch that fails for any other reason
(bad input would fail every try): dropped records are counted per run, and once the store
works again each such run gets the count added to its dropped records and one visible
marker record (``LogArchive.add_lost_logs``). What is kept and dropped is told to a store
that listens (``BacklogSink``: the operator's ``store`` line says it). Failures are
reported on stderr once per streak (when storing first fails, and when it works again),
never once per line. At shutdown what is still kept is tried once more, then counted.
(End rows are the manager's: ``manager.endrows`` retries them with
``RunHistory.finish_run``, which is safe to repeat.)

May import ``core``, ``store.protocols``, ``store.codec`` and the stdlib.
"""

from __future__ import annotations

import collections
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol, runtime_checkable

from supervisor.core.errors import UnknownRun
from supervisor.core.records import LogRecord
from supervisor.core.storeproblems import Backlog, classify
from supervisor.store.codec import encode_fields, valid_text
from supervisor.store.protocols import LogArchive, LostLogs

# Bounded so a run that floods its pipes is slowed down instead of filling memory.
MAX_PENDING_BATCHES: Final = 16
MAX_RECORDS_PER_WRITE: Final = 5000
# While records or lost-record markers are owed to the store, try this often.
RETRY_SECONDS: Final = 5.0
# What is kept in memory while the store cannot be written (past it, the oldest go).
MAX_KEPT_RECORDS: Final = 50_000
MAX_KEPT_BYTES: Final = 16 << 20


class WriterStore(LogArchive, Protocol):
    """What the log writer needs of a store."""


@runtime_checkable
class BacklogSink(Protocol):
    """A store that wants to know what the writer keeps for it (``service.storewatch``)."""

    def note_backlog(self, backlog: Backlog) -> None:
        """What is kept in memory now, and dropped in the failure streak; never raises."""
        ...


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
        max_kept_records: int = MAX_KEPT_RECORDS,
        max_kept_bytes: int = MAX_KEPT_BYTES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._sink = store if isinstance(store, BacklogSink) else None
        self._max_kept_records = max_kept_records
        self._max_kept_bytes = max_kept_bytes
        self._monotonic = monotonic
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
        # Records the store could not take yet, oldest first, with their sizes.
        self._kept: collections.deque[tuple[LogRecord, int]] = collections.deque()
        self._kept_bytes = 0
        self._next_try = 0.0  # monotonic: no store call before it while failing
        self._reason = ""  # why the store failed last
        self._keeping = False  # the store cannot be written: keep, try when due
        self._failing = False
        self._lost_in_streak = 0
        self.failures = 0  # store calls that failed
        self.lost_records = 0  # records that never reached the store (all counted, marked)
        self.kept_records = 0  # records kept in memory for the store (0 while it works)

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
        """Wait until every record submitted so far is stored, kept for the store or
        counted as lost."""
        if self._thread is None or not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def flush_through(self, ticket: int, timeout: float | None = 30.0) -> bool:
        """Wait until the batches up to ``ticket`` (from ``submit``) are stored, kept for
        the store or counted as lost; at once for ticket 0. False if that did not happen
        within ``timeout`` seconds or the writer is not running."""
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
        """False while storing fails or records or lost-record markers are owed to the
        store."""
        with self._lock:
            return not (self._failing or self._losses or self._kept)

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
            timeout = None
            if self._owes():
                timeout = max(0.01, min(self._retry_seconds, self._next_try - self._monotonic()))
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
            self._write(pending, final=stop)
            if last_ticket:
                with self._progress:
                    self._written = last_ticket
                    self._progress.notify_all()
            for waiter in waiters:
                waiter.set()
            if stop:
                if self._kept:  # tried once more above: lost now, counted
                    kept = [record for record, _ in self._kept]
                    self._drop_kept(len(kept))
                    self._report(f"at shutdown, {len(kept)} kept log record(s) could not be stored")
                if self._owes():
                    self._report(self._owed_text("at shutdown, still not stored"))
                self._note_backlog()
                return

    def _owes(self) -> bool:
        return bool(self._losses or self._kept)

    def _write(self, pending: list[LogRecord], *, final: bool = False) -> None:
        if self._kept or self._keeping:
            # The store failed: after what is kept, in order; tried when due (or last).
            self._keep(pending)
            if final or self._monotonic() >= self._next_try:
                self._drain()
        elif pending:
            self._store_losses()  # markers first: they tell of older records
            try:
                self._store.append_logs(pending)
            except Exception as error:
                self._store_failed(pending, error)
            else:
                self._store_losses()  # the store works again: mark the losses at once
        elif self._losses and self._monotonic() >= self._next_try:
            self._store_losses()
        if self._failing and not self._owes():
            self._failing = False
            self._report(
                f"storing logs works again; {self._lost_in_streak} log record(s) could not be"
                " stored and are counted and marked in their runs' logs"
            )
            self._lost_in_streak = 0
        self._note_backlog()

    def _store_failed(self, records: Sequence[LogRecord], error: Exception) -> None:
        """``records`` could not be stored: kept for a store that cannot be written, else
        (the input's fault, which every try would meet) counted as lost."""
        self._next_try = self._monotonic() + self._retry_seconds
        self._reason = " ".join(str(error).split()) or type(error).__name__
        if classify(error) is None:
            self._count_lost(records, error)
            return
        self._failed(f"{len(records)} log record(s)", error)
        self._keeping = True
        self._keep(records)

    def _keep(self, records: Sequence[LogRecord]) -> None:
        for record in records:
            self._kept.append((record, _size(record)))
            self._kept_bytes += self._kept[-1][1]
        over, count, size = 0, len(self._kept), self._kept_bytes
        while over < count and (
            count - over > self._max_kept_records or size > self._max_kept_bytes
        ):
            size -= self._kept[over][1]
            over += 1
        if over:
            self._drop_kept(over)
        self.kept_records = len(self._kept)

    def _drop_kept(self, count: int) -> None:
        """Drop the ``count`` oldest kept records, counted as lost."""
        dropped = [self._kept.popleft() for _ in range(count)]
        self._kept_bytes -= sum(size for _, size in dropped)
        self._count_lost([record for record, _ in dropped], None, reason=self._reason, report=False)
        self.kept_records = len(self._kept)

    def _drain(self) -> None:
        """Markers, then the kept records oldest first, until the store fails again."""
        if not self._store_losses():
            self._next_try = self._monotonic() + self._retry_seconds
            return
        while self._kept:
            chunk = [record for record, _ in list(self._kept)[:MAX_RECORDS_PER_WRITE]]
            try:
                self._store.append_logs(chunk)
            except Exception as error:
                self._next_try = self._monotonic() + self._retry_seconds
                self._reason = " ".join(str(error).split()) or type(error).__name__
                if classify(error) is not None:
                    self._failed(f"{len(self._kept)} kept log record(s)", error)
                    return
                self._drop_kept(len(chunk))  # this chunk would fail every time
                continue
            for _ in chunk:
                self._kept_bytes -= self._kept.popleft()[1]
            self.kept_records = len(self._kept)
        self._keeping = False
        self._store_losses()

    def _note_backlog(self) -> None:
        if self._sink is None:
            return
        if self._failing or self._kept:
            backlog = Backlog(kept_records=len(self._kept), dropped_records=self._lost_in_streak)
        else:
            backlog = Backlog()
        try:
            self._sink.note_backlog(backlog)
        except Exception as error:  # a listener's fault must not stop the writer
            self._report(f"cannot tell what the log writer keeps: {error}")

    def _failed(self, what: str, error: Exception) -> None:
        self.failures += 1
        if not self._failing:
            self._failing = True
            kept = classify(error) is not None
            then = (
                f"keeping log records in memory (at most {self._max_kept_records}, the"
                " oldest dropped and counted past that)"
                if kept
                else "counting lost log records"
            )
            self._report(
                f"cannot store {what}: {error}; {then} and retrying every"
                f" {self._retry_seconds:g}s until the store works again (reported once)"
            )

    def _count_lost(
        self,
        records: Sequence[LogRecord],
        error: Exception | None,
        *,
        reason: str = "",
        report: bool = True,
    ) -> None:
        if error is not None:
            reason = " ".join(str(error).split()) or type(error).__name__
        with self._lock:
            for record in records:
                size = _size(record)
                loss = self._losses.get(record.run_id)
                if loss is None:
                    self._losses[record.run_id] = _Loss(1, size, record.time, record.time, reason)
                else:
                    loss.records += 1
                    loss.size += size
                    loss.first_time = min(loss.first_time, record.time)
                    loss.last_time = max(loss.last_time, record.time)
        self.lost_records += len(records)
        self._lost_in_streak += len(records)
        if report and error is not None:
            self._failed(f"{len(records)} log record(s)", error)

    def _store_losses(self) -> bool:
        """Store the markers owed; False when the store failed (the rest stay owed)."""
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
                self._next_try = self._monotonic() + self._retry_seconds
                return False
            with self._lock:
                del self._losses[run_id]
        return True

    def _owed_text(self, prefix: str) -> str:
        with self._lock:
            lost = sum(loss.records for loss in self._losses.values())
            runs = sorted(self._losses)
        return f"{prefix}: the markers of {lost} lost log record(s) of runs {runs}"


def _size(record: LogRecord) -> int:
    """The bytes ``record`` takes in the store (its message and fields)."""
    _, size = valid_text(record.message)
    if record.fields:
        size += len(encode_fields(record.fields))
    return size
