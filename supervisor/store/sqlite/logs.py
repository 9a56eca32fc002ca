"""Log records in SQLite (``store.protocols.LogArchive``): capped per run, read by index.

Appends go through ``store.budget`` (the cap, its marker, the counters) and one
``executemany``; reads read one ordered index range per level and merge them (see
``schema.MIGRATIONS``). Searches add their filters (time, text, fields) to those ranges;
across every scheduler they read each scheduler's ranges (the schedulers found through
the index) for WARNING and above, and walk the table newest first otherwise. No index
serves text or time: each would slow every insert, and bench/bench_log_search.py shows
the searches within a few milliseconds, or about one pass over the table for a text
found nowhere.
May import ``core``, ``store.budget``, ``store.codec``, ``store.protocols``,
``store.sqlite.database`` and the stdlib.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from supervisor.core.errors import UnknownRun
from supervisor.core.records import Level, LogQuery, LogRecord, LogsFound, Source, fold
from supervisor.store.budget import LogBudget, LogRow, admit, admit_loss
from supervisor.store.codec import decode_fields, from_microseconds, microseconds
from supervisor.store.protocols import LogStats, LostLogs
from supervisor.store.sqlite.database import Database

_SELECT_LOGS: Final = (
    "SELECT l.id, r.run_id, l.time, l.level, l.source, l.message, l.fields"
    " FROM logs AS l LEFT JOIN runs AS r ON r.seq = l.run_seq"
)
# The records of one run (scheduler, every level, id range, run): through the index.
_DELETE_RUN_LOGS: Final = (
    "DELETE FROM logs WHERE scheduler_id = ? AND level IN (10, 20, 30, 40, 50)"
    " AND id BETWEEN ? AND ? AND run_seq = ?"
)
_INSERT_LOGS: Final = (
    "INSERT INTO logs (id, scheduler_id, run_seq, time, level, source, message, fields)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# Rows go in fifty to a statement (of one flat list of values): 0.64x the CPU of one
# statement per row, 0.9x of ten to a statement (fewer steps through the sqlite3
# module; more rows gain nothing), measured in bench/bench_log_flood.py.
ROWS_PER_INSERT: Final = 50
_COLUMNS: Final = 8
_INSERT_LOGS_MANY: Final = _INSERT_LOGS + ", (?, ?, ?, ?, ?, ?, ?, ?)" * (ROWS_PER_INSERT - 1)
_UPDATE_BUDGET: Final = (
    "UPDATE runs SET log_records = ?, log_bytes = ?, dropped_records = ?, dropped_bytes = ?,"
    " log_truncated = ?, first_log_id = ?, last_log_id = ? WHERE seq = ?"
)


class SqliteLogs:
    _db: Database
    _max_log_bytes: int

    def append_logs(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        with self._db.write() as conn:
            rows, budgets = admit(
                records,
                cap=self._max_log_bytes,
                next_id=_highest_log_id(conn) + 1,
                budget_for=lambda run_id: _load_budget(conn, run_id),
            )
            _store(conn, rows, budgets)

    def add_lost_logs(self, lost: LostLogs) -> None:
        with self._db.write() as conn:
            budget = _load_budget(conn, lost.run_id)
            if budget is None:
                raise UnknownRun(f"no run with id {lost.run_id!r}")
            row = admit_loss(budget, lost, next_id=_highest_log_id(conn) + 1)
            _store(conn, [row], [budget])

    def log_stats(self, run_id: str) -> LogStats:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT log_records, dropped_records, log_bytes, dropped_bytes FROM runs"
                " WHERE run_id = ?",
                (run_id,),
            ).fetchall()
        if not rows:
            raise UnknownRun(f"no run with id {run_id!r}")
        stored, dropped, stored_bytes, dropped_bytes = rows[0]
        return LogStats(
            stored_records=stored,
            dropped_records=dropped,
            stored_bytes=stored_bytes,
            dropped_bytes=dropped_bytes,
        )

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        if query.limit <= 0:
            return []
        with self._db.read(snapshot=True) as conn:
            scheduler_id = query.scheduler_id
            run_range = None
            if query.run_id is not None:
                run_range = _run_log_range(conn, scheduler_id, query.run_id)
                if run_range is None:
                    return []
                scheduler_id = run_range.scheduler_id
            if query.searches:
                found = _search(conn, query, scheduler_id, run_range)
            else:
                rows = _read(conn, query, scheduler_id, run_range)
                found = [(row[0], _log_from_row(row)) for row in rows]
            highest = _highest_log_id(conn)
        return LogsFound(found, scanned_to=query.scanned_to(found, highest))

    def count_logs(self, run_id: str) -> int:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT log_records FROM runs WHERE run_id = ?", (run_id,)
            ).fetchall()
        return int(rows[0][0]) if rows else 0


def delete_run_logs(
    conn: sqlite3.Connection, scheduler_id: str, seq: int, first_log_id: int, last_log_id: int
) -> None:
    """Delete the records of one run (inside the caller's transaction)."""
    conn.execute(_DELETE_RUN_LOGS, (scheduler_id, first_log_id, last_log_id, seq))


def _store(conn: sqlite3.Connection, rows: list[LogRow], budgets: list[LogBudget]) -> None:
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    if whole:
        flat = list(itertools.chain.from_iterable(rows[:whole]))
        step = ROWS_PER_INSERT * _COLUMNS
        conn.executemany(_INSERT_LOGS_MANY, [flat[i : i + step] for i in range(0, len(flat), step)])
    conn.executemany(_INSERT_LOGS, rows[whole:])
    if rows:
        conn.execute(
            "INSERT OR REPLACE INTO counters (name, value) VALUES ('log_id', ?)", (rows[-1][0],)
        )
    conn.executemany(
        _UPDATE_BUDGET,
        [
            (
                b.stored_records,
                b.stored_bytes,
                b.dropped_records,
                b.dropped_bytes,
                int(b.truncated),
                b.first_log_id,
                b.last_log_id,
                b.seq,
            )
            for b in budgets
        ],
    )


def _load_budget(conn: sqlite3.Connection, run_id: str) -> LogBudget | None:
    rows = conn.execute(
        "SELECT seq, scheduler_id, log_records, log_bytes, dropped_records, dropped_bytes,"
        " log_truncated, first_log_id, last_log_id FROM runs WHERE run_id = ?",
        (run_id,),
    ).fetchall()
    if not rows:
        return None
    seq, scheduler_id, records, size, dropped, dropped_bytes, truncated, first, last = rows[0]
    return LogBudget(
        seq=seq,
        scheduler_id=scheduler_id,
        stored_records=records,
        stored_bytes=size,
        dropped_records=dropped,
        dropped_bytes=dropped_bytes,
        truncated=bool(truncated),
        first_log_id=first,
        last_log_id=last,
    )


def _read(
    conn: sqlite3.Connection, query: LogQuery, scheduler_id: str | None, run_range: RunRange | None
) -> list[Any]:
    """The rows SQL picks for ``query`` (its text and fields as prefilters), ascending."""
    if scheduler_id is not None:
        statements = [log_query(query, scheduler_ids=[scheduler_id], run_range=run_range)]
    elif _levels(query)[0] <= Level.INFO:
        statements = [scan_query(query)]
    else:  # few levels: their index ranges, scheduler by scheduler
        every = [row[0] for row in conn.execute(SCHEDULERS_WITH_LOGS)]
        step = max(1, _MAX_RANGES // len(_levels(query)))
        statements = [
            log_query(query, scheduler_ids=every[i : i + step], run_range=None)
            for i in range(0, len(every), step)
        ]
    rows = [row for sql, params in statements for row in conn.execute(sql, params)]
    if len(statements) > 1:
        rows.sort(key=lambda row: int(row[0]))
        rows = rows[: query.limit] if query.after is not None else rows[-query.limit :]
    return rows


def _search(
    conn: sqlite3.Connection, query: LogQuery, scheduler_id: str | None, run_range: RunRange | None
) -> list[tuple[int, LogRecord]]:
    """Text, field and time filters: the rows the SQL prefilters leave, a chunk at a time
    in cursor order, kept where ``LogQuery.matches`` (the one definition of a match)."""
    ascending = query.after is not None
    page = dataclasses.replace(query, limit=max(query.limit, SEARCH_CHUNK))
    found: list[tuple[int, LogRecord]] = []
    while True:
        rows = _read(conn, page, scheduler_id, run_range)
        for row in rows if ascending else reversed(rows):
            record = _log_from_row(row)
            if query.matches(record):
                found.append((row[0], record))
                if len(found) == query.limit:
                    break
        if len(found) >= query.limit or len(rows) < page.limit:
            break
        if ascending:
            page = dataclasses.replace(page, after=rows[-1][0])
        else:
            page = dataclasses.replace(page, before=rows[0][0])
    found.sort(key=lambda item: item[0])
    return found


def _highest_log_id(conn: sqlite3.Connection) -> int:
    rows = conn.execute(
        "SELECT max(coalesce((SELECT value FROM counters WHERE name = 'log_id'), 0),"
        " coalesce((SELECT max(id) FROM logs), 0))"
    ).fetchall()
    return int(rows[0][0])


@dataclass(frozen=True, slots=True)
class RunRange:
    seq: int
    first_log_id: int
    last_log_id: int
    scheduler_id: str = ""


def _run_log_range(
    conn: sqlite3.Connection, scheduler_id: str | None, run_id: str
) -> RunRange | None:
    """Where a run's records lie, or None if it has none (or belongs to another scheduler
    than ``scheduler_id``; None: any)."""
    rows = conn.execute(
        "SELECT seq, first_log_id, last_log_id, scheduler_id FROM runs WHERE run_id = ?",
        (run_id,),
    ).fetchall()
    if not rows or rows[0][1] is None:
        return None
    if scheduler_id is not None and rows[0][3] != scheduler_id:
        return None
    return RunRange(*rows[0])


# Every scheduler with records, one index seek each (the index leads with scheduler_id).
SCHEDULERS_WITH_LOGS: Final = (
    "WITH RECURSIVE s(id) AS (SELECT min(scheduler_id) FROM logs UNION ALL"
    " SELECT (SELECT min(scheduler_id) FROM logs WHERE scheduler_id > s.id) FROM s"
    " WHERE s.id IS NOT NULL) SELECT id FROM s WHERE id IS NOT NULL"
)
# Index ranges per statement, below SQLite's 500 terms of one compound SELECT.
_MAX_RANGES: Final = 400
# Prefilters only (``LogQuery.matches`` decides on the rows they leave); each keeps every
# true match. The needle has no quote, backslash or control character, so where a field's
# name or value (as ``field_text`` spells it) holds it, the fields' JSON holds it escaped.
_TEXT_PREFILTER: Final = "(instr(lower(message), ?) > 0 OR instr(lower(fields), ?) > 0)"
# Any other needle: in the message (SQLite's lower folds as ``fold`` does), or some fields.
_TEXT_PREFILTER_WIDE: Final = "(instr(lower(message), ?) > 0 OR fields IS NOT NULL)"
_HAS_TEXT: Final = "instr(fields, ?) > 0"
# Rows read per round of a search (its prefilter may let through rows it then drops).
SEARCH_CHUNK: Final = 1000


def _unescaped(text: str) -> bool:
    """Whether JSON (as ``store.codec`` writes it, ASCII only) spells ``text`` as it is."""
    return all(" " <= char <= "~" and char not in '"\\' for char in text)


def _levels(query: LogQuery) -> list[Level]:
    return [level for level in Level if query.min_level is None or level >= query.min_level]


def _search_terms(query: LogQuery) -> tuple[list[str], list[object]]:
    """Conditions on a logs row for cursors, time, text and fields, with their values."""
    where: list[str] = []
    params: list[object] = []
    if query.after is not None:
        where.append("id > ?")
        params.append(query.after)
    if query.before is not None:
        where.append("id < ?")
        params.append(query.before)
    if query.since is not None:
        where.append("time >= ?")
        params.append(microseconds(query.since))
    if query.until is not None:
        where.append("time < ?")
        params.append(microseconds(query.until))
    for name, value in query.fields:
        if _unescaped(name):
            where.append(_HAS_TEXT)
            params.append(f'"{name}":')
        if _unescaped(value):
            where.append(_HAS_TEXT)
            params.append(value)
    if query.text is not None:
        needle = fold(query.text)
        if all(char >= " " and char not in '"\\' for char in needle):
            # as ``store.codec`` spells it in the fields' ASCII JSON, character by character
            where.append(_TEXT_PREFILTER)
            params.extend([needle, json.dumps(needle)[1:-1]])
        else:
            where.append(_TEXT_PREFILTER_WIDE)
            params.append(needle)
    return where, params


def scan_query(query: LogQuery) -> tuple[str, list[object]]:
    """``logs`` over every scheduler at (nearly) every level: one walk of the table in
    cursor order, filtered, up to ``limit``."""
    order = "ASC" if query.after is not None else "DESC"
    where, params = _search_terms(query)
    if query.min_level is not None:
        where.insert(0, "level >= ?")
        params.insert(0, query.min_level.value)
    conditions = " AND ".join(where) or "1"
    # Built from the constants above only; every value is a bound parameter.
    newest = f"SELECT id FROM logs WHERE {conditions} ORDER BY id {order} LIMIT ?"  # noqa: S608
    return f"{_SELECT_LOGS} WHERE l.id IN ({newest}) ORDER BY l.id", [*params, query.limit]


def log_query(
    query: LogQuery, *, scheduler_ids: Sequence[str], run_range: RunRange | None
) -> tuple[str, list[object]]:
    """The SQL and parameters of ``logs`` for ``scheduler_ids``: one index range per
    scheduler and level, each read in cursor order up to ``limit``, merged, cut to
    ``limit``, returned ascending."""
    levels = _levels(query)
    order = "ASC" if query.after is not None else "DESC"
    where, params = _search_terms(query)
    where[:0] = ["scheduler_id = ?", "level = ?"]
    if run_range is not None:
        where.extend(["id BETWEEN ? AND ?", "run_seq = ?"])
        params.extend([run_range.first_log_id, run_range.last_log_id, run_range.seq])
    conditions = " AND ".join(where)
    one_level = f"SELECT id FROM logs WHERE {conditions} ORDER BY id {order} LIMIT ?"  # noqa: S608
    ranges = len(levels) * len(scheduler_ids)
    union = " UNION ALL ".join([f"SELECT id FROM ({one_level})"] * ranges)  # noqa: S608
    all_params: list[object] = []
    for scheduler_id in scheduler_ids:
        for level in levels:
            all_params.extend([scheduler_id, level.value, *params, query.limit])
    all_params.append(query.limit)
    # Built from the constants above only; every value is a bound parameter.
    newest = f"SELECT id FROM ({union}) ORDER BY id {order} LIMIT ?"  # noqa: S608
    sql = f"{_SELECT_LOGS} WHERE l.id IN ({newest}) ORDER BY l.id"
    return sql, all_params


def _log_from_row(row: Sequence[Any]) -> LogRecord:
    return LogRecord(
        time=from_microseconds(row[2]),
        level=Level(row[3]),
        message=row[5],
        fields=decode_fields(row[6]),
        run_id=row[1] or "",
        source=Source(row[4]),
    )
