"""Log records in PostgreSQL (``store.protocols.LogArchive``): capped per run, read by index.

Appends go through ``store.budget`` (the cap, its marker, the counters), then one insert
of the rows (as arrays) and one update of the runs' counters, all in one transaction.
The counter row ``log_id`` is locked first: appends from several threads or hosts take
their cursors one after the other and commit in that order, so a reader asking for
records after a cursor never misses one committed later with a smaller cursor. Reads read
one ordered index range per level and merge them in one statement (one snapshot), as the
SQLite store does. Searches (every scheduler; text, fields) read the rows the other
filters leave in cursor order and keep those ``LogQuery.matches``.
May import ``core``, ``store.budget``, ``store.codec``, ``store.protocols``,
``store.postgres.database`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from supervisor.core.errors import UnknownRun
from supervisor.core.records import Level, LogQuery, LogRecord, LogsFound, Source
from supervisor.store.budget import LogBudget, LogRow, admit, admit_loss
from supervisor.store.codec import decode_fields, from_microseconds, microseconds
from supervisor.store.postgres.database import Connection, Database
from supervisor.store.protocols import LogStats, LostLogs

# A batch in one statement of nine arrays (as fast as COPY here, and pipeline-safe).
_INSERT_LOGS: Final = (
    "INSERT INTO sst_logs (id, scheduler_id, run_seq, time, level, source, message,"
    " message_bytes, fields) SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[],"
    " %s::bigint[], %s::smallint[], %s::text[], %s::text[], %s::bytea[], %s::text[])"
)
LOCK_COUNTER: Final = "SELECT value FROM sst_counters WHERE name = 'log_id' FOR UPDATE"
# The counter lock and the budgets of the runs a batch names, in one round trip.
_LOCK_AND_BUDGETS: Final = (
    "WITH counter AS (SELECT value FROM sst_counters WHERE name = 'log_id' FOR UPDATE)"
    " SELECT counter.value, r.run_id, r.seq, r.scheduler_id, r.log_records, r.log_bytes,"
    " r.dropped_records, r.dropped_bytes, r.log_truncated, r.first_log_id, r.last_log_id"
    " FROM counter LEFT JOIN sst_runs AS r ON r.run_id = ANY(%s)"
)
# The runs' counters and the cursor counter, in one statement.
_UPDATE_BUDGETS: Final = (
    "WITH cursor_counter AS (UPDATE sst_counters SET value = greatest(value, %s)"
    " WHERE name = 'log_id')"
    " UPDATE sst_runs AS r SET log_records = b.records, log_bytes = b.bytes,"
    " dropped_records = b.dropped, dropped_bytes = b.dropped_bytes,"
    " log_truncated = b.truncated, first_log_id = b.first_id, last_log_id = b.last_id"
    " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],"
    " %s::boolean[], %s::bigint[], %s::bigint[])"
    " AS b(seq, records, bytes, dropped, dropped_bytes, truncated, first_id, last_id)"
    " WHERE r.seq = b.seq"
)
_DELETE_RUN_LOGS: Final = (
    "DELETE FROM sst_logs WHERE scheduler_id = %s AND id BETWEEN %s AND %s AND run_seq = %s"
)


class PostgresLogs:
    _db: Database
    _max_log_bytes: int

    def append_logs(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        with self._db.write() as conn:
            highest, budgets = _lock_and_load(conn, {record.run_id for record in records})
            rows, touched = admit(
                records, cap=self._max_log_bytes, next_id=highest + 1, budget_for=budgets.get
            )
            _store(conn, rows, touched)

    def add_lost_logs(self, lost: LostLogs) -> None:
        with self._db.write() as conn:
            highest, budgets = _lock_and_load(conn, {lost.run_id})
            budget = budgets.get(lost.run_id)
            if budget is None:
                raise UnknownRun(f"no run with id {lost.run_id!r}")
            row = admit_loss(budget, lost, next_id=highest + 1)
            _store(conn, [row], [budget])

    def log_stats(self, run_id: str) -> LogStats:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT log_records, dropped_records, log_bytes, dropped_bytes FROM sst_runs"
                " WHERE run_id = %s",
                (run_id,),
            ).fetchone()
        if row is None:
            raise UnknownRun(f"no run with id {run_id!r}")
        stored, dropped, stored_bytes, dropped_bytes = row
        return LogStats(
            stored_records=stored,
            dropped_records=dropped,
            stored_bytes=stored_bytes,
            dropped_bytes=dropped_bytes,
        )

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        if query.limit <= 0:
            return []
        if query.scheduler_id is None or query.searches:
            return self._search(query)
        sql, params = log_query(query)
        with self._db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [(row[0], _log_from_row(row)) for row in rows]

    def _search(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        """Every scheduler, or text and field filters: the rows the other filters leave,
        read in cursor order a chunk at a time, kept where ``LogQuery.matches``."""
        ascending = query.after is not None
        after, before = query.after, query.before
        found: list[tuple[int, LogRecord]] = []
        examined = query.after or 0
        with self._db.read(search=True) as conn:
            while len(found) < query.limit:
                sql, params = search_query(query, after=after, before=before)
                rows = conn.execute(sql, params).fetchall()
                for row in rows:
                    examined = max(examined, row[0])
                    record = _log_from_row(row)
                    if query.matches(record):
                        found.append((row[0], record))
                        if len(found) == query.limit:
                            break
                if len(rows) < SEARCH_CHUNK:
                    break
                if ascending:
                    after = rows[-1][0]
                else:
                    before = rows[-1][0]
        found.sort(key=lambda item: item[0])
        # the highest cursor of the rows read: every row below it (in range) was read too
        return LogsFound(found, scanned_to=examined)

    def count_logs(self, run_id: str) -> int:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT log_records FROM sst_runs WHERE run_id = %s", (run_id,)
            ).fetchone()
        return int(row[0]) if row else 0


def delete_run_logs(
    conn: Connection, scheduler_id: str, seq: int, first_log_id: int, last_log_id: int
) -> None:
    """Delete the records of one run (inside the caller's transaction)."""
    conn.execute(_DELETE_RUN_LOGS, (scheduler_id, first_log_id, last_log_id, seq))


def _lock_and_load(conn: Connection, run_ids: set[str]) -> tuple[int, dict[str, LogBudget]]:
    """Lock the cursor counter; the highest cursor given out and the budgets of the runs
    among ``run_ids`` that exist."""
    rows = conn.execute(_LOCK_AND_BUDGETS, (sorted(run_ids),)).fetchall()
    highest = int(rows[0][0]) if rows else 0
    return highest, {
        row[1]: LogBudget(
            seq=row[2],
            scheduler_id=row[3],
            stored_records=row[4],
            stored_bytes=row[5],
            dropped_records=row[6],
            dropped_bytes=row[7],
            truncated=row[8],
            first_log_id=row[9],
            last_log_id=row[10],
        )
        for row in rows
        if row[1] is not None
    }


def _store(conn: Connection, rows: list[LogRow], budgets: list[LogBudget]) -> None:
    """Insert ``rows`` and update the runs' counters (and the cursor counter): two
    statements."""
    if rows:
        columns: tuple[list[object], ...] = tuple([] for _ in range(9))
        ids, schedulers, seqs, times, levels, sources, texts, raw, fields = columns
        for log_id, scheduler_id, seq, time, level, source, message, field_json in rows:
            ids.append(log_id)
            schedulers.append(scheduler_id)
            seqs.append(seq)
            times.append(time)
            levels.append(level)
            sources.append(source)
            if "\x00" in message:  # PostgreSQL text cannot hold NUL: keep the bytes
                texts.append(None)
                raw.append(message.encode())
            else:
                texts.append(message)
                raw.append(None)
            fields.append(field_json)
        conn.execute(_INSERT_LOGS, columns)
    if budgets:
        conn.execute(
            _UPDATE_BUDGETS,
            (
                rows[-1][0] if rows else 0,
                [b.seq for b in budgets],
                [b.stored_records for b in budgets],
                [b.stored_bytes for b in budgets],
                [b.dropped_records for b in budgets],
                [b.dropped_bytes for b in budgets],
                [b.truncated for b in budgets],
                [b.first_log_id for b in budgets],
                [b.last_log_id for b in budgets],
            ),
        )


def log_query(query: LogQuery) -> tuple[str, dict[str, object]]:
    """The SQL and parameters of ``logs``: one index range per level, each read in cursor
    order up to ``limit``, merged, cut to ``limit``, returned ascending; one statement."""
    levels = [level for level in Level if query.min_level is None or level >= query.min_level]
    order = "ASC" if query.after is not None else "DESC"
    params: dict[str, object] = {"sid": query.scheduler_id, "limit": query.limit}
    where = ["scheduler_id = %(sid)s"]
    if query.after is not None:
        where.append("id > %(after)s")
        params["after"] = query.after
    if query.before is not None:
        where.append("id < %(before)s")
        params["before"] = query.before
    prefix = ""
    if query.run_id is not None:
        params["run"] = query.run_id
        prefix = (
            "WITH run AS (SELECT seq, first_log_id, last_log_id FROM sst_runs"
            " WHERE run_id = %(run)s AND scheduler_id = %(sid)s) "
        )
        where.append(
            "id BETWEEN (SELECT first_log_id FROM run) AND (SELECT last_log_id FROM run)"
            " AND run_seq = (SELECT seq FROM run)"
        )
    conditions = " AND ".join(where)
    # Built from the constants above only; every value is a bound parameter.
    one_level = (
        f"(SELECT id FROM sst_logs WHERE {conditions} AND level = {{level}}"  # noqa: S608
        f" ORDER BY id {order} LIMIT %(limit)s)"
    )
    union = " UNION ALL ".join(one_level.format(level=int(level.value)) for level in levels)
    newest = f"SELECT id FROM ({union}) AS u ORDER BY id {order} LIMIT %(limit)s"  # noqa: S608
    sql = (
        f"{prefix}SELECT l.id, r.run_id, l.time, l.level, l.source, l.message,"  # noqa: S608
        " l.message_bytes, l.fields FROM sst_logs AS l LEFT JOIN sst_runs AS r"
        f" ON r.seq = l.run_seq WHERE l.id IN ({newest}) ORDER BY l.id"
    )
    return sql, params


# Rows a search reads per statement.
SEARCH_CHUNK: Final = 2000


def search_query(
    query: LogQuery, *, after: int | None, before: int | None
) -> tuple[str, dict[str, object]]:
    """One chunk of a search: the rows after ``after`` (ascending) or before ``before``
    (descending) that scheduler, run, level and time leave; text and fields are the
    caller's (``LogQuery.matches``)."""
    params: dict[str, object] = {"chunk": SEARCH_CHUNK}
    where = ["TRUE"]
    if query.scheduler_id is not None:
        where.append("l.scheduler_id = %(sid)s")
        params["sid"] = query.scheduler_id
    if query.run_id is not None:
        where.append("r.run_id = %(run)s")
        params["run"] = query.run_id
    if query.min_level is not None:
        where.append("l.level >= %(level)s")
        params["level"] = query.min_level.value
    if after is not None:
        where.append("l.id > %(after)s")
        params["after"] = after
    if before is not None:
        where.append("l.id < %(before)s")
        params["before"] = before
    if query.since is not None:
        where.append("l.time >= %(since)s")
        params["since"] = microseconds(query.since)
    if query.until is not None:
        where.append("l.time < %(until)s")
        params["until"] = microseconds(query.until)
    order = "ASC" if query.after is not None else "DESC"
    # Built from the constants above only; every value is a bound parameter.
    sql = (
        "SELECT l.id, r.run_id, l.time, l.level, l.source, l.message, l.message_bytes,"  # noqa: S608
        " l.fields FROM sst_logs AS l LEFT JOIN sst_runs AS r ON r.seq = l.run_seq"
        f" WHERE {' AND '.join(where)} ORDER BY l.id {order} LIMIT %(chunk)s"
    )
    return sql, params


def _log_from_row(row: Sequence[Any]) -> LogRecord:
    message = row[5] if row[5] is not None else bytes(row[6]).decode()
    return LogRecord(
        time=from_microseconds(row[2]),
        level=Level(row[3]),
        message=message,
        fields=decode_fields(row[7]),
        run_id=row[1] or "",
        source=Source(row[4]),
    )
