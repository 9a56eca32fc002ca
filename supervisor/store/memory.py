"""``MemoryStore``: every aggregate of ``store.protocols.Store`` in memory, nothing on disk.

Complete, not a stub: the same caps, markers, retention, cursors, errors and encodings
as the SQLite store (it shares ``store.codec`` and ``store.budget`` with it), checked by
the same conformance suite. For tests and for trying things out; it forgets everything
on ``close``.
May import ``core``, ``store.protocols``, ``store.codec``, ``store.budget`` and the stdlib.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from supervisor.core.errors import DefinitionError, StoreError, UnknownRun
from supervisor.core.records import (
    AuditEntry,
    Decision,
    Level,
    LogQuery,
    LogRecord,
    LogsFound,
    Outcome,
    RunRecord,
    Source,
    Trigger,
)
from supervisor.store.budget import LogBudget, LogRow, admit, admit_loss
from supervisor.store.codec import (
    check_new_user,
    decode_decision,
    decode_fields,
    decode_values,
    encode_decision,
    encode_overrides,
    encode_values,
    from_microseconds,
    require_aware,
)
from supervisor.store.protocols import (
    Changed,
    KeepOne,
    LogStats,
    LostLogs,
    Store,
    StoredUser,
    UnfinishedRun,
    UserChange,
)


@dataclass(slots=True, kw_only=True)
class _Run:
    record: RunRecord
    budget: LogBudget
    pid: int | None = None
    pgid: int | None = None
    create_time: float | None = None


@dataclass(frozen=True, slots=True)
class _Audit:
    id: int
    time: datetime
    actor: str
    action: str
    scheduler_id: str | None
    detail: str | None
    before: str | None
    after: str | None


class MemoryStore:
    """A ``store.protocols.Store`` in memory; the limits as ``SqliteStore.open`` takes them."""

    def __init__(
        self, *, max_runs_per_scheduler: int = 100, max_log_bytes_per_run: int = 1 << 20
    ) -> None:
        if max_runs_per_scheduler < 1:
            raise ValueError("max_runs_per_scheduler must be at least 1")
        if max_log_bytes_per_run < 1:
            raise ValueError("max_log_bytes_per_run must be at least 1")
        self._max_runs = max_runs_per_scheduler
        self._max_log_bytes = max_log_bytes_per_run
        self._lock = threading.Lock()
        self._closed = False
        self._overrides: dict[str, str] = {}
        self._decisions: dict[str, str] = {}
        self._runs: dict[str, _Run] = {}
        self._run_seq = 0
        self._logs: dict[str, list[LogRow]] = {}  # per scheduler, ascending cursor
        self._log_id = 0
        self._audit: list[_Audit] = []
        self._users: dict[str, StoredUser] = {}
        self._meta: dict[str, str] = {}

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> None:
        """Lock held: ``StoreError`` after ``close``."""
        if self._closed:
            raise StoreError("the in-memory store is closed")

    # -- settings overrides ---------------------------------------------------------------

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        with self._lock:
            self._open()
            text = self._overrides.get(scheduler_id)
        return {} if text is None else decode_values(text)

    def all_overrides(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._open()
            items = list(self._overrides.items())
        return {scheduler_id: decode_values(text) for scheduler_id, text in items}

    def set_overrides(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        encoded = encode_overrides(overrides)
        with self._lock:
            self._open()
            if overrides:
                self._overrides[scheduler_id] = encoded
            else:
                self._overrides.pop(scheduler_id, None)

    def delete_overrides(self, scheduler_id: str) -> bool:
        with self._lock:
            self._open()
            return self._overrides.pop(scheduler_id, None) is not None

    def decision(self, scheduler_id: str) -> Decision | None:
        with self._lock:
            self._open()
            text = self._decisions.get(scheduler_id)
        return None if text is None else decode_decision(text)

    def all_decisions(self) -> dict[str, Decision]:
        with self._lock:
            self._open()
            items = list(self._decisions.items())
        return {scheduler_id: decode_decision(text) for scheduler_id, text in items}

    def set_decision(self, scheduler_id: str, decision: Decision | None) -> None:
        encoded = None if decision is None else encode_decision(decision)
        with self._lock:
            self._open()
            if encoded is None:
                self._decisions.pop(scheduler_id, None)
            else:
                self._decisions[scheduler_id] = encoded

    # -- runs -----------------------------------------------------------------------------

    def insert_run(self, run: RunRecord) -> None:
        run = dataclasses.replace(
            run,
            started_at=require_aware(run.started_at),
            ended_at=None if run.ended_at is None else require_aware(run.ended_at),
            log_truncated=False,
            dropped_log_records=0,
        )
        with self._lock:
            self._open()
            if run.run_id in self._runs:
                raise StoreError(f"run {run.run_id!r} is already stored")
            self._run_seq += 1
            budget = LogBudget(seq=self._run_seq, scheduler_id=run.scheduler_id)
            self._runs[run.run_id] = _Run(record=run, budget=budget)

    def set_run_process(self, run_id: str, *, pid: int, pgid: int, create_time: float) -> None:
        with self._lock:
            self._open()
            stored = self._run(run_id)
            stored.pid, stored.pgid, stored.create_time = pid, pgid, create_time

    def finish_run(
        self,
        run_id: str,
        *,
        ended_at: datetime,
        outcome: Outcome,
        exit_code: int | None,
        signal: int | None,
        error: str | None,
    ) -> RunRecord:
        if not isinstance(outcome, Outcome):
            raise ValueError(f"outcome must be an Outcome, got {outcome!r}")
        ended = require_aware(ended_at)
        with self._lock:
            self._open()
            stored = self._run(run_id)
            stored.record = dataclasses.replace(
                stored.record,
                ended_at=ended,
                outcome=outcome,
                exit_code=exit_code,
                signal=signal,
                error=error,
            )
            finished = self._record(stored)
            self._apply_retention(stored.record.scheduler_id)
        return finished

    def mark_interrupted(self, run_id: str, *, ended_at: datetime, error: str | None) -> None:
        with self._lock:
            self._open()
            if self._run(run_id).record.ended_at is not None:
                return  # a real end is never overwritten
        self.finish_run(
            run_id,
            ended_at=ended_at,
            outcome=Outcome.INTERRUPTED,
            exit_code=None,
            signal=None,
            error=error,
        )

    def get_run(self, run_id: str) -> RunRecord:
        with self._lock:
            self._open()
            return self._record(self._run(run_id))

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        if limit <= 0:
            return []
        with self._lock:
            self._open()
            return [self._record(run) for run in self._newest_first(scheduler_id)[:limit]]

    def recent_runs(
        self, scheduler_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RunRecord]]:
        if limit <= 0:
            return {}
        with self._lock:
            self._open()
            found = {
                sid: [self._record(run) for run in self._newest_first(sid)[:limit]]
                for sid in dict.fromkeys(scheduler_ids)
            }
            return {sid: runs for sid, runs in found.items() if runs}

    def last_run(self, scheduler_id: str) -> RunRecord | None:
        runs = self.runs(scheduler_id, limit=1)
        return runs[0] if runs else None

    def last_finished_run(self, scheduler_id: str) -> RunRecord | None:
        with self._lock:
            self._open()
            finished = [
                run
                for run in self._runs.values()
                if run.record.scheduler_id == scheduler_id and run.record.ended_at is not None
            ]
            if not finished:
                return None
            last = max(finished, key=lambda run: (run.record.ended_at, run.budget.seq))
            return self._record(last)

    def last_trigger_time(self, scheduler_id: str, trigger: Trigger) -> datetime | None:
        with self._lock:
            self._open()
            times = [
                run.record.started_at
                for run in self._runs.values()
                if run.record.scheduler_id == scheduler_id and run.record.trigger is trigger
            ]
        return max(times) if times else None

    def unfinished_runs(self) -> list[UnfinishedRun]:
        with self._lock:
            self._open()
            unfinished = sorted(
                (run for run in self._runs.values() if run.record.ended_at is None),
                key=lambda run: (run.record.started_at, run.budget.seq),
            )
            return [
                UnfinishedRun(
                    run=self._record(run),
                    pid=run.pid,
                    pgid=run.pgid,
                    create_time=run.create_time,
                )
                for run in unfinished
            ]

    def _run(self, run_id: str) -> _Run:
        stored = self._runs.get(run_id)
        if stored is None:
            raise UnknownRun(f"no run with id {run_id!r}")
        return stored

    @staticmethod
    def _record(run: _Run) -> RunRecord:
        return dataclasses.replace(
            run.record,
            log_truncated=run.budget.dropped_records > 0,
            dropped_log_records=run.budget.dropped_records,
        )

    def _newest_first(self, scheduler_id: str) -> list[_Run]:
        runs = [run for run in self._runs.values() if run.record.scheduler_id == scheduler_id]
        runs.sort(key=lambda run: (run.record.started_at, run.budget.seq), reverse=True)
        return runs

    def _apply_retention(self, scheduler_id: str) -> None:
        doomed = [
            run
            for run in self._newest_first(scheduler_id)[self._max_runs :]
            if run.record.ended_at is not None
        ]
        if not doomed:
            return
        seqs = {run.budget.seq for run in doomed}
        rows = self._logs.get(scheduler_id, [])
        self._logs[scheduler_id] = [row for row in rows if row[2] not in seqs]
        for run in doomed:
            del self._runs[run.record.run_id]

    # -- logs -----------------------------------------------------------------------------

    def append_logs(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        by_run: dict[str, LogBudget] = {}

        def budget_for(run_id: str) -> LogBudget | None:
            stored = self._runs.get(run_id)
            if stored is None:
                return None
            by_run[run_id] = dataclasses.replace(stored.budget)  # applied only on success
            return by_run[run_id]

        with self._lock:
            self._open()
            rows, _ = admit(
                records, cap=self._max_log_bytes, next_id=self._log_id + 1, budget_for=budget_for
            )
            self._commit(rows, by_run)

    def add_lost_logs(self, lost: LostLogs) -> None:
        with self._lock:
            self._open()
            stored = self._run(lost.run_id)
            budget = dataclasses.replace(stored.budget)
            row = admit_loss(budget, lost, next_id=self._log_id + 1)
            self._commit([row], {lost.run_id: budget})

    def _commit(self, rows: list[LogRow], budgets: Mapping[str, LogBudget]) -> None:
        for row in rows:
            self._logs.setdefault(row[1], []).append(row)
        if rows:
            self._log_id = rows[-1][0]
        for run_id, budget in budgets.items():
            self._runs[run_id].budget = budget

    def log_stats(self, run_id: str) -> LogStats:
        with self._lock:
            self._open()
            budget = self._run(run_id).budget
            return LogStats(
                stored_records=budget.stored_records,
                dropped_records=budget.dropped_records,
                stored_bytes=budget.stored_bytes,
                dropped_bytes=budget.dropped_bytes,
            )

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        if query.limit <= 0:
            return []
        with self._lock:
            self._open()
            scheduler_id, seq = query.scheduler_id, None
            if query.run_id is not None:
                stored = self._runs.get(query.run_id)
                if stored is None or scheduler_id not in (None, stored.record.scheduler_id):
                    return []
                scheduler_id, seq = stored.record.scheduler_id, stored.budget.seq
            if scheduler_id is not None:
                rows = self._logs.get(scheduler_id, [])
            else:
                rows = list(heapq.merge(*self._logs.values(), key=_id))
            low, high = 0, len(rows)
            if query.after is not None:
                low = bisect.bisect_right(rows, query.after, key=_id)
            if query.before is not None:
                high = bisect.bisect_left(rows, query.before, key=_id)
            min_level = 0 if query.min_level is None else query.min_level.value
            run_ids = {run.budget.seq: run.record.run_id for run in self._runs.values()}
            window = (
                row
                for row in (rows[low:high] if query.after is not None else reversed(rows[low:high]))
                if row[4] >= min_level and (seq is None or row[2] == seq)
            )
            chosen: list[tuple[int, LogRecord]] = []
            for row in window:
                found = _record(row, run_ids.get(row[2], ""))
                if query.searches and not query.matches(found):
                    continue
                chosen.append((row[0], found))
                if len(chosen) == query.limit:
                    break
            highest = self._log_id
        chosen.sort(key=lambda item: item[0])
        return LogsFound(chosen, scanned_to=query.scanned_to(chosen, highest))

    def count_logs(self, run_id: str) -> int:
        with self._lock:
            self._open()
            stored = self._runs.get(run_id)
            return 0 if stored is None else stored.budget.stored_records

    # -- audit ----------------------------------------------------------------------------

    def add_audit(self, entry: AuditEntry) -> None:
        time = require_aware(entry.time)
        before = None if entry.before is None else encode_values(entry.before)
        after = None if entry.after is None else encode_values(entry.after)
        with self._lock:
            self._open()
            cursor = self._audit[-1].id + 1 if self._audit else 1
            self._audit.append(
                _Audit(
                    cursor,
                    time,
                    entry.actor,
                    entry.action,
                    entry.scheduler_id,
                    entry.detail,
                    before,
                    after,
                )
            )

    def audit(
        self,
        *,
        scheduler_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[tuple[int, AuditEntry]]:
        if limit <= 0:
            return []
        since = None if since is None else require_aware(since)
        until = None if until is None else require_aware(until)
        with self._lock:
            self._open()
            chosen: list[_Audit] = []
            for item in reversed(self._audit):
                if before is not None and item.id >= before:
                    continue
                if scheduler_id is not None and item.scheduler_id != scheduler_id:
                    continue
                if (actor is not None and item.actor != actor) or (
                    action is not None and item.action != action
                ):
                    continue
                if (since is not None and item.time < since) or (
                    until is not None and item.time >= until
                ):
                    continue
                chosen.append(item)
                if len(chosen) == limit:
                    break
        return [
            (
                item.id,
                AuditEntry(
                    time=item.time,
                    actor=item.actor,
                    action=item.action,
                    scheduler_id=item.scheduler_id,
                    detail=item.detail,
                    before=None if item.before is None else decode_values(item.before),
                    after=None if item.after is None else decode_values(item.after),
                ),
            )
            for item in chosen
        ]

    def last_actor(self, scheduler_id: str) -> str | None:
        entries = self.audit(scheduler_id=scheduler_id, limit=1)
        return entries[0][1].actor if entries else None

    # -- users ----------------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        *,
        role: str,
        password_hash: str,
        created_at: datetime | None = None,
    ) -> None:
        check_new_user(name, role)
        created = require_aware(created_at if created_at is not None else datetime.now(UTC))
        with self._lock:
            self._open()
            if name in self._users:
                raise DefinitionError("name", f"user {name!r} already exists")
            self._users[name] = StoredUser(
                name=name, role=role, password_hash=password_hash, created_at=created
            )

    def get_user(self, name: str) -> StoredUser | None:
        with self._lock:
            self._open()
            return self._users.get(name)

    def list_users(self) -> list[StoredUser]:
        with self._lock:
            self._open()
            return [self._users[name] for name in sorted(self._users)]

    def change_user(self, name: str, change: UserChange, *, keep: KeepOne | None = None) -> Changed:
        if change.role is not None:
            check_new_user(name, change.role)
        with self._lock:
            self._open()
            before = self._users.get(name)
            if before is None or change.stale(before):
                return Changed.STALE
            after = change.applied(before)
            if keep is not None:
                count = sum(keep.holds_for(u) for n, u in self._users.items() if n != name)
                if keep.refuses(before, after, count):
                    return Changed.REFUSED
            if after is None:
                del self._users[name]
            else:
                self._users[name] = after
            return Changed.DONE

    # -- small internal state -------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            self._open()
            return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._open()
            self._meta[key] = value


def _id(row: LogRow) -> int:
    return row[0]


def _record(row: LogRow, run_id: str) -> LogRecord:
    return LogRecord(
        time=from_microseconds(row[3]),
        level=Level(row[4]),
        message=row[6],
        fields=decode_fields(row[7]),
        run_id=run_id,
        source=Source(row[5]),
    )


def _conforms(store: MemoryStore) -> Store:
    """Checked by mypy: ``MemoryStore`` is a ``Store``."""
    return store
