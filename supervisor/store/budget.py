"""A run's log budget: which records a store keeps, which it drops, and its markers.

Pure bookkeeping shared by every store, so each caps, counts and marks alike: a batch of
records becomes the rows to insert (cursor, scheduler, run key, time, level, source,
message, fields) and the updated counters of each run it touched.
May import ``core.records``, ``store.codec``, ``store.protocols`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from supervisor.core.records import Level, LogRecord, Source
from supervisor.store.codec import (
    encode_fields,
    loss_marker,
    microseconds,
    truncation_marker,
    valid_text,
)
from supervisor.store.protocols import LostLogs

# (cursor, scheduler_id, run key, time in µs since the epoch, level, source, message, fields)
LogRow = tuple[int, str, int, int, int, str, str, str | None]


@dataclass(slots=True, kw_only=True)
class LogBudget:
    """A run's log counters (``seq``: the store's key of the run)."""

    seq: int
    scheduler_id: str
    stored_records: int = 0
    stored_bytes: int = 0
    dropped_records: int = 0
    dropped_bytes: int = 0
    truncated: bool = False  # the cap was reached: every later record is dropped
    first_log_id: int | None = None
    last_log_id: int | None = None


_UNKNOWN: Final = LogBudget(seq=-1, scheduler_id="")


def admit(
    records: Sequence[LogRecord],
    *,
    cap: int,
    next_id: int,
    budget_for: Callable[[str], LogBudget | None],
) -> tuple[list[LogRow], list[LogBudget]]:
    """The rows to store for ``records`` (cursors from ``next_id`` on) and the budgets of
    the runs they belong to, updated. ``budget_for`` loads a run's budget (None: unknown
    run, its records are dropped). See ``LogArchive.append_logs`` for the rules."""
    budgets: dict[str, LogBudget | None] = {}
    rows: list[LogRow] = []
    append = rows.append
    last_time: datetime | None = None
    stamp_us = 0
    for record in records:
        budget = budgets.get(record.run_id, _UNKNOWN)
        if budget is _UNKNOWN:
            budget = budgets[record.run_id] = budget_for(record.run_id)
        if budget is None:
            continue
        message = record.message
        try:
            size = len(message.encode())
        except UnicodeEncodeError:  # lone surrogates: stored as U+FFFD (valid UTF-8 only)
            message, size = valid_text(message)
        fields = encode_fields(record.fields) if record.fields else None
        if fields is not None:
            size += len(fields)  # ASCII: non-ASCII text is escaped
        if budget.truncated:
            budget.dropped_records += 1
            budget.dropped_bytes += size
            continue
        level = record.level._value_
        source = record.source._value_
        if record.time is not last_time:  # one read's records share a time
            last_time = record.time
            stamp_us = microseconds(last_time)
        if budget.stored_bytes + size > cap:
            budget.truncated = True
            budget.dropped_records += 1
            budget.dropped_bytes += size
            message, fields = truncation_marker(cap)
            size = len(message) + len(fields)
            level, source = Level.WARNING.value, Source.LOGGER.value
        budget.stored_records += 1
        budget.stored_bytes += size
        if budget.first_log_id is None:
            budget.first_log_id = next_id
        budget.last_log_id = next_id
        append((next_id, budget.scheduler_id, budget.seq, stamp_us, level, source, message, fields))
        next_id += 1
    return rows, [b for b in budgets.values() if b is not None]


def admit_loss(budget: LogBudget, lost: LostLogs, *, next_id: int) -> LogRow:
    """The marker row telling of ``lost`` records (stored whatever the cap), ``budget``
    updated: the lost records count as dropped."""
    message, fields = loss_marker(records=lost.records, size=lost.bytes, reason=lost.reason)
    budget.dropped_records += lost.records
    budget.dropped_bytes += lost.bytes
    budget.stored_records += 1
    budget.stored_bytes += len(message.encode()) + len(fields)
    if budget.first_log_id is None:
        budget.first_log_id = next_id
    budget.last_log_id = next_id
    return (
        next_id,
        budget.scheduler_id,
        budget.seq,
        microseconds(lost.last_time),
        Level.WARNING.value,
        Source.LOGGER.value,
        message,
        fields,
    )
