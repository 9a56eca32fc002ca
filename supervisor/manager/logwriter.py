"""Batches log records from every run into few, large store transactions.

Watcher threads ``submit`` batches; one writer thread drains the queue and appends
everything it finds in one call, so a chatty run costs one transaction per drain rather
than one per line. ``flush`` returns once everything submitted before it is stored.
May import ``records`` and ``store``.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Sequence

from supervisor.core.records import LogRecord
from supervisor.store.sqlite import SqliteStore

# Bounded so a run that floods its pipes is slowed down instead of filling memory.
MAX_PENDING_BATCHES = 16
MAX_RECORDS_PER_WRITE = 5000

_Item = Sequence[LogRecord] | threading.Event | None


class LogWriter:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._queue: queue.Queue[_Item] = queue.Queue(MAX_PENDING_BATCHES)
        self._thread: threading.Thread | None = None
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="log-writer", daemon=True)
        self._thread.start()

    def submit(self, records: Sequence[LogRecord]) -> None:
        if records:
            self._queue.put(records)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every record submitted so far is stored."""
        if self._thread is None or not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            pending: list[LogRecord] = []
            waiters: list[threading.Event] = []
            stop = False
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    pending.extend(item)
                if stop or len(pending) >= MAX_RECORDS_PER_WRITE:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if pending:
                try:
                    self._store.append_logs(pending)
                except Exception as error:
                    # A store failure loses this batch only; the runs go on, loudly.
                    self.failures += 1
                    print(
                        f"supervisor: could not store {len(pending)} log record(s): {error}",
                        file=sys.stderr,
                        flush=True,
                    )
            for waiter in waiters:
                waiter.set()
            if stop:
                return
