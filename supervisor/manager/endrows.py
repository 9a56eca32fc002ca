"""Storing how runs ended, also while the store fails for a while (e.g. a full disk).

A run's end row must land once the store takes writes again: ``store_until_stored``
retries with a bounded back-off, and the operator is told once per failure streak (and
once when it ends), not per attempt. May import ``records``, ``store`` and the stdlib.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from supervisor.core.records import RunRecord
from supervisor.store.protocols import Store


class EndRows:
    """Writes end rows for the manager; thread-safe."""

    def __init__(
        self,
        store: Store,
        *,
        report: Callable[[str], None],
        retry_seconds: float,
        retry_max_seconds: float,
    ) -> None:
        self._store = store
        self._report = report
        self._retry = retry_seconds
        self._retry_max = retry_max_seconds
        self._lock = threading.Lock()
        self._failures = 0  # writes that failed in a row, over all runs

    def try_store(self, run: RunRecord) -> RunRecord | None:
        """Store ``run``'s end once: the stored run, or None if the store failed."""
        assert run.ended_at is not None and run.outcome is not None
        try:
            stored = self._store.finish_run(
                run.run_id,
                ended_at=run.ended_at,
                outcome=run.outcome,
                exit_code=run.exit_code,
                signal=run.signal,
                error=run.error,
            )
        except Exception as error:
            with self._lock:
                self._failures += 1
                first = self._failures == 1
            if first:
                self._report(
                    f"could not record the end of run {run.run_id}: {error};"
                    " retrying until the store takes it"
                )
            return None
        with self._lock:
            recovered, self._failures = self._failures, 0
        if recovered:
            self._report(f"the store records the ends of runs again (after {recovered} failure(s))")
        return stored

    def store_until_stored(self, run: RunRecord, *, stopping: threading.Event) -> bool:
        """Retry storing ``run``'s end until it is stored (True); once ``stopping`` is set,
        one last try (False if that fails too: the next start marks it interrupted)."""
        delay = self._retry
        while True:
            if self.try_store(run) is not None:
                return True
            if stopping.is_set():
                self._report(
                    f"the end of run {run.run_id} was not stored before the manager stopped"
                )
                return False
            stopping.wait(delay)
            delay = min(delay * 2, self._retry_max)
