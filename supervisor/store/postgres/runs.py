"""Runs in PostgreSQL (``store.protocols.RunHistory``), with retention of the newest N.

Retention runs in the transaction that finishes a run, after taking the ``log_id`` counter
lock that appends take first (``logs``): records arriving for a run that retention removes
are then dropped, never left behind without their run, and the two never deadlock.
May import ``core``, ``store.codec``, ``store.protocols``, ``store.postgres.database``,
``store.postgres.logs``, ``store.postgres.text`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from supervisor.core.errors import StoreError, UnknownRun
from supervisor.core.records import Outcome, RunRecord, Trigger
from supervisor.store.codec import require_aware
from supervisor.store.postgres.database import Connection, Database
from supervisor.store.postgres.logs import LOCK_COUNTER
from supervisor.store.postgres.text import storable, storable_or_none
from supervisor.store.protocols import UnfinishedRun

COLUMNS: Final = (
    "run_id, scheduler_id, trigger, triggered_by, started_at, ended_at, outcome,"
    " exit_code, signal, error, dropped_records, pid, pgid, create_time, host"
)
SELECT_RUNS: Final = f"SELECT {COLUMNS} FROM sst_runs"  # noqa: S608
# Deletes the finished runs of a scheduler beyond the newest %(keep)s, and their records.
RETENTION: Final = """
WITH doomed AS (
    SELECT seq, first_log_id, last_log_id FROM (
        SELECT seq, ended_at, first_log_id, last_log_id FROM sst_runs
         WHERE scheduler_id = %(sid)s ORDER BY started_at DESC, seq DESC OFFSET %(keep)s
    ) AS old WHERE ended_at IS NOT NULL
), gone AS (
    DELETE FROM sst_logs AS l USING doomed AS d
     WHERE l.scheduler_id = %(sid)s AND l.id BETWEEN d.first_log_id AND d.last_log_id
       AND l.run_seq = d.seq
)
DELETE FROM sst_runs AS r USING doomed AS d WHERE r.seq = d.seq
"""
INSERT_RUN: Final = (
    "INSERT INTO sst_runs (run_id, scheduler_id, trigger, triggered_by, started_at,"
    " ended_at, outcome, exit_code, signal, error, host)"
    " VALUES (%(run)s, %(sid)s, %(trigger)s, %(by)s, %(started)s, %(ended)s, %(outcome)s,"
    " %(exit)s, %(signal)s, %(error)s, %(host)s) ON CONFLICT (run_id) DO NOTHING RETURNING seq"
)
# The counter lock (see the module docstring) is taken by the same statement, before the
# run's row: the uncorrelated EXISTS is a one-time filter, evaluated before the scan.
FINISH_RUN: Final = f"""
WITH counter AS ({LOCK_COUNTER})
UPDATE sst_runs SET ended_at = %(ended)s, outcome = %(outcome)s, exit_code = %(exit)s,
       signal = %(signal)s, error = %(error)s
 WHERE run_id = %(run)s AND EXISTS (SELECT 1 FROM counter)
   AND (ended_at IS NULL OR outcome <> 'interrupted' OR host IS NULL) RETURNING {COLUMNS}
"""  # noqa: S608 (composed of constants only)
# A cluster run (one with a host) already marked interrupted, by the heir of its lease or
# the host's own restart, keeps that mark: a late end of a fenced host never overwrites it.
KEPT_RUN: Final = f"SELECT {COLUMNS} FROM sst_runs WHERE run_id = %(run)s"  # noqa: S608


def insert_params(run: RunRecord) -> dict[str, object]:
    return {
        "run": storable(run.run_id),
        "sid": storable(run.scheduler_id),
        "trigger": run.trigger.value,
        "by": storable_or_none(run.triggered_by),
        "started": require_aware(run.started_at),
        "ended": None if run.ended_at is None else require_aware(run.ended_at),
        "outcome": None if run.outcome is None else run.outcome.value,
        "exit": run.exit_code,
        "signal": run.signal,
        "error": storable_or_none(run.error),
        "host": storable_or_none(run.host),
    }


def finish_params(
    run_id: str,
    *,
    ended_at: datetime,
    outcome: Outcome,
    exit_code: int | None,
    signal: int | None,
    error: str | None,
) -> dict[str, object]:
    if not isinstance(outcome, Outcome):
        raise ValueError(f"outcome must be an Outcome, got {outcome!r}")
    return {
        "run": run_id,
        "ended": require_aware(ended_at),
        "outcome": outcome.value,
        "exit": exit_code,
        "signal": signal,
        "error": storable_or_none(error),
    }


def apply_retention(conn: Connection, scheduler_id: str, *, keep: int) -> None:
    """Delete the finished runs (and their logs) of ``scheduler_id`` beyond the newest
    ``keep`` (inside the caller's transaction, after it took the counter lock)."""
    conn.execute(RETENTION, {"sid": scheduler_id, "keep": keep})


class PostgresRuns:
    _db: Database
    _max_runs: int

    def insert_run(self, run: RunRecord) -> None:
        params = insert_params(run)
        with self._db.single() as conn:
            if conn.execute(INSERT_RUN, params).fetchone() is None:
                raise StoreError(f"run {run.run_id!r} is already stored")

    def set_run_process(self, run_id: str, *, pid: int, pgid: int, create_time: float) -> None:
        with self._db.single() as conn:
            cursor = conn.execute(
                "UPDATE sst_runs SET pid = %s, pgid = %s, create_time = %s WHERE run_id = %s",
                (pid, pgid, create_time, run_id),
            )
            if cursor.rowcount == 0:
                raise UnknownRun(f"no run with id {run_id!r}")

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
        params = finish_params(
            run_id,
            ended_at=ended_at,
            outcome=outcome,
            exit_code=exit_code,
            signal=signal,
            error=error,
        )
        with self._db.write() as conn:
            row = conn.execute(FINISH_RUN, params).fetchone()
            if row is None:
                row = conn.execute(KEPT_RUN, params).fetchone()
                if row is None:
                    raise UnknownRun(f"no run with id {run_id!r}")
                return run_from_row(row)
            apply_retention(conn, row[1], keep=self._max_runs)
        return run_from_row(row)

    def mark_interrupted(self, run_id: str, *, ended_at: datetime, error: str | None) -> None:
        ended = require_aware(ended_at)
        with self._db.write() as conn:
            conn.execute(LOCK_COUNTER)
            row = conn.execute(
                "WITH done AS (UPDATE sst_runs SET ended_at = %(ended)s, outcome = %(outcome)s,"
                " exit_code = NULL, signal = NULL, error = %(error)s"
                " WHERE run_id = %(run)s AND ended_at IS NULL RETURNING 1)"
                " SELECT scheduler_id, (SELECT count(*) FROM done) FROM sst_runs"
                " WHERE run_id = %(run)s",
                {
                    "ended": ended,
                    "outcome": Outcome.INTERRUPTED.value,
                    "error": storable_or_none(error),
                    "run": run_id,
                },
            ).fetchone()
            if row is None:
                raise UnknownRun(f"no run with id {run_id!r}")
            if row[1]:  # a real end is never overwritten
                apply_retention(conn, row[0], keep=self._max_runs)

    def get_run(self, run_id: str) -> RunRecord:
        with self._db.read() as conn:
            row = conn.execute(SELECT_RUNS + " WHERE run_id = %s", (run_id,)).fetchone()
        if row is None:
            raise UnknownRun(f"no run with id {run_id!r}")
        return run_from_row(row)

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        if limit <= 0:
            return []
        with self._db.read() as conn:
            rows = conn.execute(
                SELECT_RUNS + " WHERE scheduler_id = %s ORDER BY started_at DESC, seq DESC"
                " LIMIT %s",
                (scheduler_id, limit),
            ).fetchall()
        return [run_from_row(row) for row in rows]

    def recent_runs(
        self, scheduler_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RunRecord]]:
        if limit <= 0 or not scheduler_ids:
            return {}
        with self._db.read() as conn:
            # One index range per scheduler (LATERAL), newest first.
            rows = conn.execute(
                f"SELECT {', '.join('r.' + c.strip() for c in COLUMNS.split(','))}"  # noqa: S608
                " FROM (SELECT DISTINCT unnest(%s::text[]) AS sid) AS ids"
                " CROSS JOIN LATERAL (SELECT * FROM sst_runs WHERE scheduler_id = ids.sid"
                " ORDER BY started_at DESC, seq DESC LIMIT %s) AS r"
                " ORDER BY r.scheduler_id, r.started_at DESC, r.seq DESC",
                (list(scheduler_ids), limit),
            ).fetchall()
        out: dict[str, list[RunRecord]] = {}
        for row in rows:
            out.setdefault(row[1], []).append(run_from_row(row))
        return out

    def last_run(self, scheduler_id: str) -> RunRecord | None:
        runs = self.runs(scheduler_id, limit=1)
        return runs[0] if runs else None

    def last_finished_run(self, scheduler_id: str) -> RunRecord | None:
        with self._db.read() as conn:
            row = conn.execute(
                SELECT_RUNS + " WHERE scheduler_id = %s AND ended_at IS NOT NULL"
                " ORDER BY ended_at DESC, seq DESC LIMIT 1",
                (scheduler_id,),
            ).fetchone()
        return run_from_row(row) if row else None

    def last_trigger_time(self, scheduler_id: str, trigger: Trigger) -> datetime | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT max(started_at) FROM sst_runs WHERE scheduler_id = %s AND trigger = %s",
                (scheduler_id, trigger.value),
            ).fetchone()
        return None if row is None or row[0] is None else row[0].astimezone(UTC)

    def unfinished_runs(self) -> list[UnfinishedRun]:
        with self._db.read() as conn:
            rows = conn.execute(
                SELECT_RUNS + " WHERE ended_at IS NULL ORDER BY started_at, seq"
            ).fetchall()
        return [
            UnfinishedRun(run=run_from_row(row), pid=row[11], pgid=row[12], create_time=row[13])
            for row in rows
        ]


def run_from_row(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        scheduler_id=row[1],
        trigger=Trigger(row[2]),
        triggered_by=row[3],
        started_at=row[4].astimezone(UTC),
        ended_at=None if row[5] is None else row[5].astimezone(UTC),
        outcome=None if row[6] is None else Outcome(row[6]),
        exit_code=row[7],
        signal=row[8],
        error=row[9],
        log_truncated=row[10] > 0,  # records were cut or lost
        dropped_log_records=row[10],
        host=row[14],
    )
