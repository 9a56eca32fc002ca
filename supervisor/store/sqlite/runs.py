"""Runs in SQLite (``store.protocols.RunHistory``), with retention of the newest N.

May import ``core``, ``store.codec``, ``store.protocols``, ``store.sqlite.database``,
``store.sqlite.logs`` (retention deletes a run's records) and the stdlib.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from supervisor.core.errors import StoreError, UnknownRun
from supervisor.core.records import Outcome, RunRecord, Trigger
from supervisor.store.codec import parse_ts, parse_ts_or_none, ts, ts_or_none
from supervisor.store.protocols import UnfinishedRun
from supervisor.store.sqlite.database import Database
from supervisor.store.sqlite.logs import delete_run_logs

RUN_COLUMNS: Final = (
    "run_id, scheduler_id, trigger, triggered_by, started_at, ended_at, outcome,"
    " exit_code, signal, error, dropped_records, pid, pgid, create_time"
)
SELECT_RUNS: Final = f"SELECT {RUN_COLUMNS} FROM runs"  # noqa: S608
# One statement changes the row and gives it back.
FINISH_RUN: Final = (
    "UPDATE runs SET ended_at = ?, outcome = ?, exit_code = ?, signal = ?, error = ?"  # noqa: S608
    f" WHERE run_id = ? RETURNING {RUN_COLUMNS}"
)


class SqliteRuns:
    _db: Database
    _max_runs: int

    def insert_run(self, run: RunRecord) -> None:
        row = (
            run.run_id,
            run.scheduler_id,
            run.trigger.value,
            run.triggered_by,
            ts(run.started_at),
            ts_or_none(run.ended_at),
            None if run.outcome is None else run.outcome.value,
            run.exit_code,
            run.signal,
            run.error,
        )
        with self._db.write() as conn:
            try:
                conn.execute(
                    "INSERT INTO runs (run_id, scheduler_id, trigger, triggered_by, started_at,"
                    " ended_at, outcome, exit_code, signal, error)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError:
                raise StoreError(f"run {run.run_id!r} is already stored") from None

    def set_run_process(self, run_id: str, *, pid: int, pgid: int, create_time: float) -> None:
        with self._db.write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET pid = ?, pgid = ?, create_time = ? WHERE run_id = ?",
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
        if not isinstance(outcome, Outcome):
            raise ValueError(f"outcome must be an Outcome, got {outcome!r}")
        ended = ts(ended_at)
        with self._db.write() as conn:
            rows = conn.execute(
                FINISH_RUN,
                (ended, outcome.value, exit_code, signal, error, run_id),
            ).fetchall()
            if not rows:
                raise UnknownRun(f"no run with id {run_id!r}")
            row = rows[0]
            self._apply_retention(conn, row[1])
        return run_from_row(row)

    def mark_interrupted(self, run_id: str, *, ended_at: datetime, error: str | None) -> None:
        with self._db.write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET ended_at = ?, outcome = ?, exit_code = NULL, signal = NULL,"
                " error = ? WHERE run_id = ? AND ended_at IS NULL",
                (ts(ended_at), Outcome.INTERRUPTED.value, error, run_id),
            )
            found = conn.execute(
                "SELECT scheduler_id FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if found is None:
                raise UnknownRun(f"no run with id {run_id!r}")
            if cursor.rowcount:  # a real end is never overwritten
                self._apply_retention(conn, found[0])

    def _apply_retention(self, conn: sqlite3.Connection, scheduler_id: str) -> None:
        """Delete the finished runs (and their logs) beyond the newest ``max_runs``."""
        old = conn.execute(
            "SELECT seq, ended_at, first_log_id, last_log_id FROM runs WHERE scheduler_id = ?"
            " ORDER BY started_at DESC, seq DESC LIMIT -1 OFFSET ?",
            (scheduler_id, self._max_runs),
        ).fetchall()
        doomed = [row for row in old if row[1] is not None]
        for seq, _, first_log_id, last_log_id in doomed:
            if first_log_id is not None:
                delete_run_logs(conn, scheduler_id, seq, first_log_id, last_log_id)
        conn.executemany("DELETE FROM runs WHERE seq = ?", [(row[0],) for row in doomed])

    def get_run(self, run_id: str) -> RunRecord:
        with self._db.read() as conn:
            rows = conn.execute(SELECT_RUNS + " WHERE run_id = ?", (run_id,)).fetchall()
        if not rows:
            raise UnknownRun(f"no run with id {run_id!r}")
        return run_from_row(rows[0])

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        if limit <= 0:
            return []
        with self._db.read() as conn:
            rows = conn.execute(
                SELECT_RUNS + " WHERE scheduler_id = ? ORDER BY started_at DESC, seq DESC LIMIT ?",
                (scheduler_id, limit),
            ).fetchall()
        return [run_from_row(row) for row in rows]

    def recent_runs(
        self, scheduler_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RunRecord]]:
        if limit <= 0 or not scheduler_ids:
            return {}
        with self._db.read() as conn:
            rows = conn.execute(
                # the window reads only the index; the rows chosen are then fetched by seq
                "SELECT r.run_id, r.scheduler_id, r.trigger, r.triggered_by, r.started_at,"
                " r.ended_at, r.outcome, r.exit_code, r.signal, r.error, r.dropped_records"
                " FROM (SELECT seq, scheduler_id, row_number() OVER (PARTITION BY scheduler_id"
                " ORDER BY started_at DESC, seq DESC) AS place FROM runs"
                " WHERE scheduler_id IN (SELECT value FROM json_each(?))) AS w"
                " JOIN runs AS r ON r.seq = w.seq WHERE w.place <= ?"
                " ORDER BY w.scheduler_id, w.place",
                (json.dumps(list(scheduler_ids)), limit),
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
            rows = conn.execute(
                SELECT_RUNS + " WHERE scheduler_id = ? AND ended_at IS NOT NULL"
                " ORDER BY ended_at DESC, seq DESC LIMIT 1",
                (scheduler_id,),
            ).fetchall()
        return run_from_row(rows[0]) if rows else None

    def last_trigger_time(self, scheduler_id: str, trigger: Trigger) -> datetime | None:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT max(started_at) FROM runs WHERE scheduler_id = ? AND trigger = ?",
                (scheduler_id, trigger.value),
            ).fetchall()
        return parse_ts_or_none(rows[0][0])

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
        started_at=parse_ts(row[4]),
        ended_at=parse_ts_or_none(row[5]),
        outcome=None if row[6] is None else Outcome(row[6]),
        exit_code=row[7],
        signal=row[8],
        error=row[9],
        log_truncated=row[10] > 0,
        dropped_log_records=row[10],
    )
